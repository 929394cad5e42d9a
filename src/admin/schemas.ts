/**
 * TypeBox schemas of the admin API: what requests are validated against, what responses are
 * serialised with, and what the OpenAPI document is generated from. Shared schemas carry an `$id`
 * and are registered once (`SHARED_SCHEMAS`); routes point at them with `ref()`, which keeps the
 * static type for handlers.
 */
import Type, { type Static, type TSchema } from 'typebox'
import { RouteDefinitionSchema } from '../routing/schema.js'
import { DELIVERY_STATES } from '../delivery/log.js'

/** A `$ref` to a shared schema that still types as that schema. */
export function ref<T extends TSchema>(schema: T): T {
  const id = (schema as { $id?: string }).$id
  if (id === undefined) throw new Error('ref(): the schema has no $id')
  return Type.Unsafe<Static<T>>(Type.Ref(id)) as unknown as T
}

export const ErrorSchema = Type.Object(
  {
    error: Type.Object(
      {
        code: Type.String({ description: 'Stable error code (ADMIN_ERR_*); branch on it, not on the message.', examples: ['ADMIN_ERR_VALIDATION'] }),
        message: Type.String({ description: 'What went wrong, naming the field when a field is wrong.' }),
        details: Type.Optional(
          Type.Object({}, { additionalProperties: true, description: 'Structured context, such as `problems` (one line per field) or `field`.' }),
        ),
      },
      { additionalProperties: false },
    ),
  },
  { $id: 'Error', additionalProperties: false, description: 'The one shape of every error response.' },
)

export const RouteHealthSchema = Type.Object(
  {
    paused: Type.Boolean({ description: 'Paused by an operator: defer mode answers 451 4.3.2 at RCPT, accept mode queues and holds.' }),
    pausedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
    pauseReason: Type.Union([Type.String(), Type.Null()]),
    circuit: Type.Enum(['closed', 'open', 'half-open'], {
      description: 'Circuit breaker: open refuses deliveries until circuitOpenUntil; half-open lets one delivery probe the webhook.',
    }),
    circuitOpenedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
    circuitOpenUntil: Type.Union([Type.String({ format: 'date-time' }), Type.Null()], { description: 'End of the cool-down of an open circuit.' }),
    consecutiveFailures: Type.Integer({ description: 'Temporary failures in a row (the breaker counts them).' }),
    lastStatus: Type.Union([Type.Integer(), Type.Null()], { description: 'HTTP status of the last attempt; null when it got none.' }),
    lastError: Type.Union([Type.String(), Type.Null()], { description: 'HOOK_ERR_* code of the last attempt when it got no usable answer.' }),
    lastAttemptAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
    inFlight: Type.Integer({ description: 'Attempts holding a concurrency slot now (routes with `concurrency`).' }),
    lastHour: Type.Object(
      {
        attempts: Type.Integer(),
        delivered: Type.Integer(),
        successRate: Type.Union([Type.Number(), Type.Null()], { description: 'delivered / attempts; null without attempts.' }),
      },
      { additionalProperties: false, description: 'Attempts of the last 60 minutes, across replicas.' },
    ),
  },
  { $id: 'RouteHealth', additionalProperties: false, description: 'Health shared by all replicas.' },
)

export const RouteSchema = Type.Object(
  {
    id: Type.String(),
    match: Type.String({ description: 'Normalised recipient pattern.' }),
    url: Type.String(),
    format: Type.Enum(['json', 'json+raw', 'raw']),
    headers: Type.Record(Type.String(), Type.String(), {
      description: 'Extra request headers (names lower-cased); values of credential-like headers are shown as "[redacted]".',
    }),
    timeoutMs: Type.Optional(Type.Integer({ description: 'Deadline of one attempt; absent: the service default (WEBHOOK_TIMEOUT).' })),
    mode: Type.Enum(['defer', 'accept', 'async']),
    retry: Type.Object({ attempts: Type.Integer(), backoffMs: Type.Integer(), maxDelayMs: Type.Integer() }, { additionalProperties: false }),
    maxInlineAttachmentBytes: Type.Integer(),
    recipientCheckUrl: Type.Optional(Type.String()),
    replies: Type.Record(
      Type.String(),
      Type.Object({ code: Type.Integer(), enhanced: Type.Optional(Type.String()), message: Type.Optional(Type.String()) }, { additionalProperties: false }),
    ),
    concurrency: Type.Optional(Type.Integer({ description: 'Attempts in flight across all replicas; absent: no limit.' })),
    rateLimit: Type.Optional(
      Type.Object({ max: Type.Integer(), perMs: Type.Integer() }, { additionalProperties: false, description: 'At most max attempts in any perMs.' }),
    ),
    circuitBreaker: Type.Union(
      [Type.Object({ failures: Type.Integer(), windowMs: Type.Integer(), coolDownMs: Type.Integer() }, { additionalProperties: false }), Type.Null()],
      { description: 'null when turned off.' },
    ),
    health: ref(RouteHealthSchema),
    source: Type.Enum(['file', 'api'], { description: 'file: from ROUTES_FILE, read-only here; api: created through this API.' }),
    hasSecret: Type.Boolean({ description: 'Requests are signed. Secrets are write-only and never shown.' }),
    secretIds: Type.Array(Type.String(), { description: 'First 8 hex characters of the SHA-256 of each secret, newest first, to tell them apart.' }),
  },
  { $id: 'Route', additionalProperties: false, description: 'A route as the API shows it: normalised, without secrets.' },
)

export const RouteListSchema = Type.Object({ routes: Type.Array(ref(RouteSchema)) }, { additionalProperties: false })

/** PUT body: the definition, where `id` may be left out (it is the one in the path). */
export const RouteReplacementSchema = Type.Object(
  { ...RouteDefinitionSchema.properties, id: Type.Optional(RouteDefinitionSchema.properties.id) },
  { $id: 'RouteReplacement', additionalProperties: false, description: 'A route definition for PUT; `id`, when given, must be the id in the path.' },
)

export const RouteIdParams = Type.Object({ id: Type.String({ description: 'Route id.' }) })

export const PauseBodySchema = Type.Object(
  { reason: Type.Optional(Type.String({ maxLength: 200, description: 'Why, for the dashboard, the route view and the route.paused event.' })) },
  { additionalProperties: false },
)

export const TestDeliveryBodySchema = Type.Object(
  {
    rcpt: Type.Optional(
      Type.String({
        minLength: 3,
        maxLength: 320,
        pattern: '^[^\\s@<>]+@[^\\s@<>]+$',
        description: 'Recipient address to put in the envelope; by default one derived from the route pattern.',
      }),
    ),
  },
  { additionalProperties: false },
)

const replyObject = (description?: string) =>
  Type.Object(
    { code: Type.Integer(), enhanced: Type.Union([Type.String(), Type.Null()]), text: Type.String() },
    { additionalProperties: false, ...(description === undefined ? {} : { description }) },
  )

export const ReplySchema = replyObject()

export const TestDeliveryResultSchema = Type.Object(
  {
    status: Type.Union([Type.Integer(), Type.Null()], { description: 'HTTP status the webhook answered; null when it did not.' }),
    durationMs: Type.Number(),
    reply: replyObject(
      "What the MTA would have been told for this recipient, by the same decision a session makes: in accept mode a temporary failure is 250 queued, in async mode every answer is (the test attempt is made anyway, to show the webhook's answer).",
    ),
    webhookReply: replyObject("The reply the webhook's answer maps to, before the route's mode applies."),
    outcome: Type.Enum(['delivered', 'rejected', 'temporary'], { description: "The webhook's answer: delivered, rejected or temporary." }),
    error: Type.Optional(Type.Object({ code: Type.String(), message: Type.String() }, { additionalProperties: false })),
    webhookId: Type.String({ description: 'The webhook-id the test request carried (prefixed test_).' }),
    recipient: Type.String(),
  },
  { $id: 'TestDeliveryResult', additionalProperties: false },
)

export const DeliveryStateSchema = Type.Enum([...DELIVERY_STATES], {
  description:
    'delivered; deferred (defer mode: the MTA was told 4xx and retries); rejected (permanent failure the MTA was told); retrying (accept mode, or replayed); dead (accept mode: out of attempts or rejected after "queued": replay with POST .../retry).',
})

const nullableInt = Type.Union([Type.Integer(), Type.Null()])
const nullableString = Type.Union([Type.String(), Type.Null()])

const deliveryProperties = {
  id: Type.String({ description: 'The job id: the webhook-id in accept mode, `<webhook-id>.<transaction id>` in defer mode.' }),
  recipient: Type.String(),
  route: Type.String(),
  txn: Type.String({ description: 'LMTP transaction id.' }),
  mode: Type.String(),
  sender: Type.Union([Type.String(), Type.Null()], { description: 'Reverse path ("" for the null sender); null until an attempt is logged.' }),
  messageId: Type.Union([Type.String(), Type.Null()], { description: 'Message-ID header, with its angle brackets.' }),
  state: DeliveryStateSchema,
  attempts: Type.Integer({ description: 'Attempts made so far.' }),
  createdAt: Type.String({ format: 'date-time' }),
  updatedAt: Type.String({ format: 'date-time' }),
  lastStatus: nullableInt,
  lastError: nullableString,
  reply: Type.Union([Type.String(), Type.Null()], { description: '`code enhanced` of the reply the last attempt decided.' }),
  reason: Type.Union([Type.String(), Type.Null()], { description: 'Why the delivery was dead-lettered.' }),
}

export const DeliverySchema = Type.Object(deliveryProperties, { $id: 'Delivery', additionalProperties: false })

export const AttemptSchema = Type.Object(
  {
    attempt: Type.Integer(),
    at: Type.String({ format: 'date-time' }),
    status: nullableInt,
    error: nullableString,
    durationMs: Type.Number(),
    outcome: Type.String(),
    reply: Type.String(),
    response: Type.String({ description: 'First bytes of the response body.' }),
  },
  { $id: 'Attempt', additionalProperties: false },
)

export const DeliveryDetailSchema = Type.Object(
  {
    ...deliveryProperties,
    attemptLog: Type.Array(ref(AttemptSchema), { description: 'Attempts, oldest first.' }),
    queueState: Type.Union([Type.String(), Type.Null()], {
      description: 'State of the job in the queue now (failed = dead letter), null when it is no longer queued.',
    }),
  },
  { $id: 'DeliveryDetail', additionalProperties: false },
)

export const DeliveryListQuery = Type.Object(
  {
    recipient: Type.Optional(Type.String({ maxLength: 320, description: 'Exact recipient address (case-insensitive).' })),
    route: Type.Optional(Type.String({ maxLength: 64, description: 'Route id.' })),
    state: Type.Optional(DeliveryStateSchema),
    since: Type.Optional(Type.String({ format: 'date-time', description: 'Created at or after this time (RFC 3339).' })),
    until: Type.Optional(Type.String({ format: 'date-time', description: 'Created at or before this time (RFC 3339).' })),
    sender: Type.Optional(Type.String({ maxLength: 320, description: 'Exact sender (reverse path, case-insensitive); "<>" for the null sender.' })),
    messageId: Type.Optional(Type.String({ maxLength: 998, description: 'Exact Message-ID, with or without its angle brackets.' })),
    txn: Type.Optional(Type.String({ maxLength: 100, description: 'LMTP transaction id.' })),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 500, default: 50, description: 'Deliveries per page.' })),
    cursor: Type.Optional(Type.String({ maxLength: 512, description: 'nextCursor of the previous page.' })),
  },
  { additionalProperties: false },
)

export const DeliveryListSchema = Type.Object(
  {
    deliveries: Type.Array(ref(DeliverySchema)),
    nextCursor: Type.Union([Type.String(), Type.Null()], { description: 'Cursor of the next page; null at the end. A page may be short and still have one.' }),
  },
  { additionalProperties: false },
)

export const DeliveryIdParams = Type.Object({ id: Type.String({ maxLength: 200, description: 'Delivery id (the `id` of a listed delivery).' }) })

export const RetryResultSchema = Type.Object({ id: Type.String(), state: Type.Literal('retrying') }, { additionalProperties: false })

export const BulkFilterSchema = Type.Object(
  {
    route: Type.Optional(Type.String({ maxLength: 64, description: 'Route id.' })),
    state: Type.Optional(
      Type.Enum(['dead', 'retrying'], {
        default: 'dead',
        description:
          'dead: dead letters (retry replays them); retrying: accept- and async-mode deliveries waiting for their next attempt (retry attempts them now).',
      }),
    ),
    recipient: Type.Optional(Type.String({ maxLength: 320, description: 'Exact recipient address (case-insensitive).' })),
    since: Type.Optional(Type.String({ format: 'date-time', description: 'Received at or after this time (RFC 3339).' })),
    until: Type.Optional(Type.String({ format: 'date-time', description: 'Received at or before this time (RFC 3339).' })),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100, description: 'Most deliveries acted on in this call.' })),
    cursor: Type.Optional(Type.String({ maxLength: 512, description: 'nextCursor of the previous call, to go on past what it examined.' })),
  },
  { additionalProperties: false },
)

const bulkSkipped = Type.Array(
  Type.Object(
    { id: Type.String(), code: Type.String({ description: 'ADMIN_ERR_* code of why it was left as it was.' }), message: Type.String() },
    { additionalProperties: false },
  ),
  { description: 'Matches left as they were, and why (message expired, route deleted, changed meanwhile).' },
)
const bulkCursor = Type.Union([Type.String(), Type.Null()], {
  description: 'Pass back as cursor to go on; null when everything that matched has been examined. Calls are bounded, so a large set takes several.',
})

export const BulkRetryResultSchema = Type.Object(
  { matched: Type.Integer(), retried: Type.Integer(), skipped: bulkSkipped, nextCursor: bulkCursor },
  { $id: 'BulkRetryResult', additionalProperties: false },
)

export const BulkDeleteResultSchema = Type.Object(
  { matched: Type.Integer(), deleted: Type.Integer(), skipped: bulkSkipped, nextCursor: bulkCursor },
  { $id: 'BulkDeleteResult', additionalProperties: false },
)

export const HealthSchema = Type.Object({ status: Type.Literal('ok') }, { additionalProperties: false })

export const ReadinessSchema = Type.Object(
  {
    status: Type.Enum(['ready', 'not ready']),
    checks: Type.Object(
      {
        started: Type.Boolean({ description: 'Started and not shutting down.' }),
        redis: Type.Boolean({ description: 'The last background PING to Redis (one per second) was answered within 1 s.' }),
        lmtp: Type.Boolean({ description: 'The LMTP listener is listening (always true for ROLE=worker).' }),
      },
      { additionalProperties: false },
    ),
  },
  { $id: 'Readiness', additionalProperties: false },
)

/** Schemas registered with `addSchema` (and listed under components.schemas). */
export const SHARED_SCHEMAS: readonly TSchema[] = [
  ErrorSchema,
  RouteDefinitionSchema,
  RouteReplacementSchema,
  RouteHealthSchema,
  RouteSchema,
  TestDeliveryResultSchema,
  DeliverySchema,
  AttemptSchema,
  DeliveryDetailSchema,
  BulkRetryResultSchema,
  BulkDeleteResultSchema,
  ReadinessSchema,
]

/** Error responses by status, for route schemas. */
export function errors(...statuses: number[]): Record<number, TSchema> {
  return Object.fromEntries(statuses.map((s) => [s, ref(ErrorSchema)]))
}
