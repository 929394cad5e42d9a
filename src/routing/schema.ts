/**
 * The route: its definition as a user writes it (a TypeBox schema, reused by the admin API for
 * validation and OpenAPI) and its normalised form (`Route`) that the rest of the service uses.
 *
 * `parseRoute` runs the schema first (shape, types, enums, syntax) and then the checks JSON Schema
 * cannot express (URL parsing, a host written as a denied address, secret lengths, reserved
 * header names, pattern syntax, reply codes). Every error is one ROUTE_ERR_INVALID whose message
 * names the route and the field.
 */
import { createHash } from 'node:crypto'
import Type, { type Static } from 'typebox'
import { Compile } from 'typebox/compile'
import type { TLocalizedValidationError } from 'typebox/error'
import { parseDuration, parseSize } from '../config.js'
import { AppError } from '../errors.js'
import { DestinationGuard } from '../delivery/guard.js'
import { enhancedMatches, isReplyCode, sanitizeText } from '../lmtp/reply.js'
import { parsePattern, PATTERN_FORMS } from './pattern.js'

export const ROUTE_ID = '^[a-z0-9][a-z0-9_-]{0,63}$'
const HTTP_URL = '^[hH][tT][tT][pP][sS]?://\\S+$'
const SECRET = '^whsec_[A-Za-z0-9+/]+={0,2}$'
const DURATION = '^\\d+(\\.\\d+)?\\s*(ms|s|m|h|d)?$'
const SIZE = '^\\d+\\s*([kKmMgG]i?[bB]?|[bB])?$'
// RFC 9110 token
const HEADER_NAME = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
const HEADER_VALUE = '^[^\\r\\n\\u0000]*$'
const REPLY_KEY = '^([2-5][0-9][0-9]|[2-5][xX][xX]|timeout|error)$'

export const LIMITS = {
  timeoutMs: { min: 10, max: 15 * 60_000 },
  attempts: { min: 1, max: 100 },
  backoffMs: { min: 10, max: 86_400_000 },
  maxDelayMs: { min: 10, max: 7 * 86_400_000 },
  maxInlineAttachmentBytes: { max: 1024 ** 3 },
  secretBytes: { min: 24, max: 64 },
  headers: 64,
  headerValue: 8192,
  replyMessage: 400,
  url: 2048,
  concurrency: { min: 1, max: 10_000 },
  rateMax: { min: 1, max: 100_000 },
  ratePerMs: { min: 10, max: 86_400_000 },
  failures: { min: 1, max: 1000 },
  windowMs: { min: 100, max: 86_400_000 },
  coolDownMs: { min: 100, max: 86_400_000 },
} as const

/** A duration: a number of seconds, or a string with a unit (`500ms`, `10s`, `2m`; without one, seconds), as in the environment. */
const Duration = (description: string, defaultValue?: string) =>
  Type.Union([Type.Number({ minimum: 0 }), Type.String({ pattern: DURATION })], {
    description,
    ...(defaultValue === undefined ? {} : { default: defaultValue }),
  })

const Secret = Type.String({ pattern: SECRET, maxLength: 100, description: 'Standard Webhooks signing secret: "whsec_" and base64 of 24 to 64 random bytes.' })

const HttpUrl = (description: string) => Type.String({ pattern: HTTP_URL, maxLength: LIMITS.url, description })

export const RouteReplySchema = Type.Object(
  {
    code: Type.Integer({ minimum: 200, maximum: 599, description: 'LMTP reply code, 2xx, 4xx or 5xx.' }),
    enhanced: Type.Optional(
      Type.String({ pattern: '^[245]\\.\\d{1,3}\\.\\d{1,3}$', description: 'Enhanced status code (RFC 3463) of the same class, such as 5.1.1.' }),
    ),
    message: Type.Optional(Type.String({ maxLength: LIMITS.replyMessage, description: 'Reply text.' })),
  },
  { additionalProperties: false },
)

export const RouteDefinitionSchema = Type.Object(
  {
    id: Type.String({ pattern: ROUTE_ID, description: 'Route id: 1 to 64 of a-z, 0-9, "_", "-"; starts with a letter or digit.' }),
    match: Type.String({ minLength: 1, maxLength: 320, description: `Recipient pattern: ${PATTERN_FORMS}.` }),
    url: HttpUrl('Delivery webhook: http(s) URL with a host and no credentials.'),
    format: Type.Optional(Type.Enum(['json', 'json+raw', 'raw'], { default: 'json', description: 'Request body format.' })),
    secret: Type.Optional(Secret),
    secrets: Type.Optional(
      Type.Array(Secret, { minItems: 1, maxItems: 10, description: 'Signing secrets, newest first (key rotation): every one signs each request.' }),
    ),
    headers: Type.Optional(
      Type.Record(Type.String({ pattern: HEADER_NAME }), Type.String({ pattern: HEADER_VALUE, maxLength: LIMITS.headerValue }), {
        additionalProperties: false,
        maxProperties: LIMITS.headers,
        description: 'Extra request headers, such as Authorization.',
      }),
    ),
    timeout: Type.Optional(Duration('Deadline of one webhook attempt: seconds, or a string such as "10s" or "500ms".')),
    mode: Type.Optional(
      Type.Enum(['defer', 'accept', 'async'], {
        default: 'defer',
        description:
          "defer: the webhook's answer is the MTA's reply, a failure a 4xx for the MTA to retry; accept: the webhook's answer, or 250 and retried here when it fails; async: 250 once queued, delivered afterwards with retries.",
      }),
    ),
    retry: Type.Optional(
      Type.Object(
        {
          attempts: Type.Optional(
            Type.Integer({ minimum: LIMITS.attempts.min, maximum: LIMITS.attempts.max, default: 10, description: 'Attempts in all (accept mode).' }),
          ),
          backoff: Type.Optional(Duration('Delay before the first retry (seconds, or a string such as "30s"); doubles each retry.', '30s')),
          maxDelay: Type.Optional(Duration('Longest delay between two retries (seconds, or a string such as "1h").', '1h')),
        },
        { additionalProperties: false },
      ),
    ),
    maxInlineAttachmentBytes: Type.Optional(
      Type.Union([Type.Integer({ minimum: 0 }), Type.String({ pattern: SIZE })], {
        default: 10 * 1024 * 1024,
        description: 'Largest attachment whose content is carried inline (base64); 0 sends metadata only.',
      }),
    ),
    recipientCheckUrl: Type.Optional(HttpUrl('Called at RCPT time: 2xx accepts the recipient.')),
    replies: Type.Optional(
      Type.Record(Type.String({ pattern: REPLY_KEY }), RouteReplySchema, {
        additionalProperties: false,
        description: 'Overrides of the webhook result → LMTP reply table; keys: an HTTP status ("404"), a class ("4xx"), "timeout" or "error".',
      }),
    ),
    concurrency: Type.Optional(
      Type.Integer({
        minimum: LIMITS.concurrency.min,
        maximum: LIMITS.concurrency.max,
        description: 'Attempts in flight for this route across all replicas; more wait for a slot.',
      }),
    ),
    rateLimit: Type.Optional(
      Type.Object(
        {
          max: Type.Integer({ minimum: LIMITS.rateMax.min, maximum: LIMITS.rateMax.max, description: 'Attempts allowed in any interval of length `per`.' }),
          per: Duration('The interval: seconds, or a string such as "1s", "1m".'),
        },
        { additionalProperties: false, description: 'Attempts per interval across all replicas; more wait for their turn.' },
      ),
    ),
    circuitBreaker: Type.Optional(
      Type.Union(
        [
          Type.Literal(false),
          Type.Object(
            {
              failures: Type.Optional(
                Type.Integer({
                  minimum: LIMITS.failures.min,
                  maximum: LIMITS.failures.max,
                  default: 5,
                  description: 'Consecutive temporary failures that open the circuit.',
                }),
              ),
              window: Type.Optional(Duration('The failures must fall within this interval.', '1m')),
              coolDown: Type.Optional(Duration('How long the circuit stays open before one delivery probes the webhook.', '30s')),
            },
            { additionalProperties: false },
          ),
        ],
        {
          description:
            'After `failures` consecutive temporary failures within `window`, deliveries stop for `coolDown` (defer mode: 451 4.3.2 at RCPT; accept mode: held); then one delivery probes, and success closes it. `false` turns it off. On by default.',
        },
      ),
    ),
  },
  { additionalProperties: false, $id: 'RouteDefinition' },
)

/** A route as a user writes it (file or API). */
export type RouteDefinition = Static<typeof RouteDefinitionSchema>

export type RouteFormat = 'json' | 'json+raw' | 'raw'
export type RouteMode = 'defer' | 'accept' | 'async'
export type RouteSource = 'file' | 'api'

export interface RouteReply {
  readonly code: number
  readonly enhanced: string | undefined
  readonly message: string | undefined
}

/** A validated route: defaults filled, durations in ms, secrets always an array. */
export interface Route {
  readonly id: string
  /** Normalised recipient pattern. */
  readonly match: string
  readonly url: string
  readonly format: RouteFormat
  /** Newest first; empty when the route is unsigned. */
  readonly secrets: readonly string[]
  /** Extra request headers, names lower-cased. */
  readonly headers: Readonly<Record<string, string>>
  /** Deadline of one attempt; `undefined` uses the service default (WEBHOOK_TIMEOUT). */
  readonly timeoutMs: number | undefined
  readonly mode: RouteMode
  readonly retry: { readonly attempts: number; readonly backoffMs: number; readonly maxDelayMs: number }
  readonly maxInlineAttachmentBytes: number
  readonly recipientCheckUrl: string | undefined
  /** Keys: `"404"`, `"4xx"`, `"timeout"`, `"error"` (lower-case). */
  readonly replies: Readonly<Record<string, RouteReply>>
  /** Attempts in flight across all replicas; `undefined`: no limit. */
  readonly concurrency: number | undefined
  /** At most `max` attempts started in any interval of `perMs`; `undefined`: no limit. */
  readonly rateLimit: RouteRateLimit | undefined
  /** `null` when turned off (`circuitBreaker: false`). */
  readonly circuitBreaker: RouteCircuitBreaker | null
  readonly source: RouteSource
}

export interface RouteRateLimit {
  readonly max: number
  readonly perMs: number
}

export interface RouteCircuitBreaker {
  /** Consecutive temporary failures that open the circuit. */
  readonly failures: number
  /** The failures count only while each follows the first of the streak within this interval. */
  readonly windowMs: number
  /** Time open before one delivery probes the webhook (half-open). */
  readonly coolDownMs: number
}

export const DEFAULTS = {
  format: 'json' as RouteFormat,
  mode: 'defer' as RouteMode,
  attempts: 10,
  backoffMs: 30_000,
  maxDelayMs: 3_600_000,
  maxInlineAttachmentBytes: 10 * 1024 * 1024,
  circuitBreaker: { failures: 5, windowMs: 60_000, coolDownMs: 30_000 } as RouteCircuitBreaker,
}

// Hop-by-hop (RFC 9110 section 7.6.1) and the ones the service sets itself.
const RESERVED_HEADERS = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'expect',
  'host',
  'content-type',
  'content-length',
  'user-agent',
])

const validator = Compile(RouteDefinitionSchema)

/** Field path pattern (array items and record keys as `*`) → what the field expects. */
const EXPECTED: Record<string, string> = {
  '': 'an object with id, match and url',
  id: 'an id of 1 to 64 characters a-z, 0-9, "_" or "-", starting with a letter or digit',
  match: `a recipient pattern: ${PATTERN_FORMS}`,
  url: 'an http(s) URL',
  format: 'one of "json", "json+raw", "raw"',
  secret: 'a secret "whsec_" followed by base64 of 24 to 64 bytes',
  secrets: 'a list of 1 to 10 secrets, newest first',
  'secrets.*': 'a secret "whsec_" followed by base64 of 24 to 64 bytes',
  headers: `a map of header name to value (at most ${LIMITS.headers})`,
  'headers.*': `a header value of at most ${LIMITS.headerValue} characters without line breaks`,
  timeout: 'a duration: seconds or a string such as "10s", "500ms", "2m"',
  mode: 'one of "defer", "accept", "async"',
  retry: 'a map with attempts, backoff and maxDelay',
  'retry.attempts': `an integer from ${LIMITS.attempts.min} to ${LIMITS.attempts.max}`,
  'retry.backoff': 'a duration: seconds or a string such as "30s", "5m"',
  'retry.maxDelay': 'a duration: seconds or a string such as "1h", "30m"',
  maxInlineAttachmentBytes: 'a size in bytes or a string such as "10MiB", "512KiB" (0 = metadata only)',
  recipientCheckUrl: 'an http(s) URL',
  replies: 'a map whose keys are an HTTP status ("404"), a class ("4xx"), "timeout" or "error"',
  'replies.*': 'a reply {code, enhanced?, message?}',
  'replies.*.code': 'a reply code of class 2, 4 or 5 (such as 250, 451, 550)',
  'replies.*.enhanced': 'an enhanced status code of the same class as the code, such as 5.1.1',
  'replies.*.message': `a reply text of at most ${LIMITS.replyMessage} characters`,
  concurrency: `an integer from ${LIMITS.concurrency.min} to ${LIMITS.concurrency.max}`,
  rateLimit: 'a map with max and per, such as { max: 10, per: "1s" }',
  'rateLimit.max': `an integer from ${LIMITS.rateMax.min} to ${LIMITS.rateMax.max}`,
  'rateLimit.per': 'a duration: seconds or a string such as "1s", "1m"',
  circuitBreaker: 'false, or a map with failures, window and coolDown',
  'circuitBreaker.failures': `an integer from ${LIMITS.failures.min} to ${LIMITS.failures.max}`,
  'circuitBreaker.window': 'a duration: seconds or a string such as "1m", "30s"',
  'circuitBreaker.coolDown': 'a duration: seconds or a string such as "30s", "5m"',
}

const SECRET_FIELD = /^(secret|secrets(\.\*)?|headers\.\*)$/
const MAP_FIELDS = new Set(['secrets', 'headers', 'replies'])
/** What the keys of a map field may be. */
const KEY_EXPECTED: Record<string, string> = {
  headers: "a header name (letters, digits and !#$%&'*+.^_`|~-)",
  replies: 'a key that is an HTTP status from 200 to 599 ("404"), a class ("4xx"), "timeout" or "error"',
}

/** The context prefix of every message: `routes[2] (id "sales")`. */
function routeLabel(where: string, input: unknown): string {
  const id = input !== null && typeof input === 'object' ? (input as Record<string, unknown>).id : undefined
  return typeof id === 'string' && id.length <= 64 && /^[\w.-]+$/.test(id) ? `${where} (id "${id}")` : where
}

function shown(value: unknown): string {
  if (value === undefined) return 'nothing'
  const text = JSON.stringify(value) ?? String(value)
  return text.length > 80 ? `${text.slice(0, 77)}...` : text
}

interface FieldPath {
  /** As shown to users: `retry.attempts`, `secrets[1]`, `headers.Authorization`. */
  readonly display: string
  /** Key of `EXPECTED`: `secrets.*`, `headers.*`. */
  readonly pattern: string
  readonly segments: readonly string[]
}

function fieldPath(segments: readonly string[]): FieldPath {
  let display = ''
  const pattern: string[] = []
  segments.forEach((s, i) => {
    const inMap = i === 1 && MAP_FIELDS.has(segments[0]!)
    pattern.push(inMap ? '*' : s)
    display += /^\d+$/.test(s) && segments[0] === 'secrets' ? `[${s}]` : display === '' ? s : `.${s}`
  })
  return { display, pattern: pattern.join('.'), segments }
}

function pointerSegments(pointer: string): string[] {
  if (pointer === '') return []
  return pointer
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
}

function valueAt(input: unknown, segments: readonly string[]): unknown {
  let value = input
  for (const s of segments) {
    if (value === null || typeof value !== 'object') return undefined
    value = (value as Record<string, unknown>)[s]
  }
  return value
}

function describeGot(path: FieldPath, value: unknown): string {
  if (value !== undefined && SECRET_FIELD.test(path.pattern))
    return `a value of ${typeof value === 'string' ? `${value.length} characters` : typeof value} (not shown)`
  return shown(value)
}

/** Turns schema errors into one line per field: `url: expected an http(s) URL, got "ftp://x"`. */
function schemaMessages(input: unknown, errors: readonly TLocalizedValidationError[]): string[] {
  const byPath = new Map<string, TLocalizedValidationError[]>()
  for (const e of errors) {
    const list = byPath.get(e.instancePath)
    if (list) list.push(e)
    else byPath.set(e.instancePath, [e])
  }
  const lines: string[] = []
  for (const [pointer, list] of byPath) {
    const path = fieldPath(pointerSegments(pointer))
    if (list.some((e) => e.keyword === 'boolean')) {
      const keyExpected = path.segments.length === 2 ? KEY_EXPECTED[path.segments[0]!] : undefined
      if (keyExpected !== undefined) {
        lines.push(`${path.display}: expected ${keyExpected}, got ${shown(path.segments[1])}`)
        continue
      }
      const parent = path.segments.length > 1 ? ` in ${fieldPath(path.segments.slice(0, -1)).display}` : ''
      const allowed = path.segments.length === 1 ? ` (known fields: ${Object.keys(RouteDefinitionSchema.properties).join(', ')})` : ''
      lines.push(`${path.display}: unknown field${parent}${allowed}`)
      continue
    }
    const required = list.find((e) => e.keyword === 'required')
    if (required && required.keyword === 'required') {
      for (const name of required.params.requiredProperties) {
        const child = fieldPath([...path.segments, name])
        lines.push(`${child.display}: required, expected ${EXPECTED[child.pattern] ?? 'a value'}`)
      }
      continue
    }
    if (list.every((e) => e.keyword === 'additionalProperties')) continue // reported at the child
    // A union (`false` or a map) whose map branch has a bad field: the field says what is wrong.
    if (list.some((e) => e.keyword === 'anyOf') && [...byPath.keys()].some((k) => k.startsWith(`${pointer}/`))) continue
    const expected = EXPECTED[path.pattern] ?? list[0]!.message
    lines.push(`${path.display === '' ? 'route' : path.display}: expected ${expected}, got ${describeGot(path, valueAt(input, path.segments))}`)
  }
  return lines
}

class Problems {
  readonly lines: string[] = []
  add(field: string, expected: string, got: string): void {
    this.lines.push(`${field}: expected ${expected}, got ${got}`)
  }
}

function httpUrl(problems: Problems, field: string, raw: string, guard: DestinationGuard | null): string {
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    problems.add(field, 'an http(s) URL', shown(raw))
    return raw
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') problems.add(field, 'an http(s) URL', shown(raw))
  else if (url.hostname === '') problems.add(field, 'an http(s) URL with a host', shown(raw))
  else if (url.username !== '' || url.password !== '')
    problems.add(field, 'an http(s) URL without credentials (put them in headers, such as Authorization)', `a URL with user info for ${url.host}`)
  else {
    const verdict = guard?.checkUrl(url.href)
    if (verdict && !verdict.allowed) {
      problems.add(
        field,
        'an http(s) URL whose host is not a denied address (see WEBHOOK_ALLOW_CIDRS and WEBHOOK_DENY_CIDRS)',
        `${shown(raw)}, whose host is the address ${verdict.address} (${verdict.reason})`,
      )
    }
  }
  return url.href
}

/** The guard of the default deny list only: what a route is checked against when the caller gives none. */
const DEFAULT_GUARD = new DestinationGuard()

export interface ParseRouteOptions {
  /**
   * The destination rules a URL host written as an IP address must pass (the service's connect-time
   * guard, with WEBHOOK_ALLOW_CIDRS / WEBHOOK_DENY_CIDRS); default: the default deny list. `null`
   * skips the check: routes already stored, which were checked when they were created, keep
   * loading after the rules change (the connect-time guard still refuses them).
   */
  readonly guard?: DestinationGuard | null
}

function durationMs(problems: Problems, field: string, value: number | string | undefined, fallback: number, limits: { min: number; max: number }): number {
  if (value === undefined) return fallback
  // A bare number is seconds, as in the environment (parseDuration reads "30" the same way).
  const ms = typeof value === 'number' ? Math.round(value * 1000) : parseDuration(value)
  if (ms === null || ms < limits.min || ms > limits.max) {
    problems.add(field, `a duration from ${limits.min} ms to ${limits.max} ms (such as "10s", "500ms", "2m")`, shown(value))
    return fallback
  }
  return ms
}

function secretProblem(secret: string): string | null {
  const base64 = secret.slice('whsec_'.length)
  if (base64.length % 4 !== 0) return 'base64 of a length that is a multiple of 4'
  const bytes = Buffer.from(base64, 'base64').length
  if (bytes < LIMITS.secretBytes.min || bytes > LIMITS.secretBytes.max) return `base64 of 24 to 64 bytes (it decodes to ${bytes})`
  return null
}

function checkSecrets(problems: Problems, def: RouteDefinition): string[] {
  if (def.secret !== undefined && def.secrets !== undefined) {
    problems.add('secret', 'either secret or secrets, not both', 'both')
    return []
  }
  const list = def.secrets ?? (def.secret === undefined ? [] : [def.secret])
  list.forEach((s, i) => {
    const problem = secretProblem(s)
    const field = def.secrets === undefined ? 'secret' : `secrets[${i}]`
    if (problem !== null) problems.add(field, `a secret "whsec_" followed by ${problem}`, `a value of ${s.length} characters (not shown)`)
  })
  if (new Set(list).size !== list.length) problems.add('secrets', 'different secrets', 'the same secret twice')
  return list
}

function checkHeaders(problems: Problems, headers: Record<string, string> | undefined): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [name, value] of Object.entries(headers ?? {})) {
    const lower = name.toLowerCase()
    const field = `headers.${name}`
    if (RESERVED_HEADERS.has(lower) || lower.startsWith('webhook-')) {
      problems.add(field, 'a header the service does not set itself (not hop-by-hop, webhook-*, content-type, content-length, host or user-agent)', shown(name))
    } else if (Object.hasOwn(out, lower)) {
      problems.add(field, 'each header name once (names are case-insensitive)', shown(name))
    } else {
      out[lower] = value
    }
  }
  return out
}

function checkReplies(problems: Problems, replies: RouteDefinition['replies']): Record<string, RouteReply> {
  const out: Record<string, RouteReply> = {}
  for (const [key, r] of Object.entries(replies ?? {})) {
    const normalKey = key.toLowerCase()
    const field = `replies.${key}`
    if (Object.hasOwn(out, normalKey)) {
      problems.add(field, 'each key once (classes are case-insensitive)', shown(key))
      continue
    }
    if (!isReplyCode(r.code)) {
      problems.add(`${field}.code`, EXPECTED['replies.*.code']!, shown(r.code))
      continue
    }
    if (r.enhanced !== undefined && !enhancedMatches(r.code, r.enhanced)) {
      problems.add(`${field}.enhanced`, `an enhanced status code of class ${Math.floor(r.code / 100)} (as the code ${r.code})`, shown(r.enhanced))
      continue
    }
    const message = r.message === undefined ? undefined : sanitizeText(r.message)
    out[normalKey] = { code: r.code, enhanced: r.enhanced, message: message === '' ? undefined : message }
  }
  return out
}

/**
 * Validates a route definition and returns it normalised. `where` names it in messages
 * (`routes[2]`, `route`); a ROUTE_ERR_INVALID lists every problem found, each naming its field.
 */
export function parseRoute(input: unknown, where: string, source: RouteSource = 'file', options: ParseRouteOptions = {}): Route {
  const guard = options.guard === undefined ? DEFAULT_GUARD : options.guard
  const label = routeLabel(where, input)
  const fail = (lines: readonly string[]): never => {
    const message = lines.length === 1 ? `${label}: ${lines[0]}` : `${label}: ${lines.length} problems: ${lines.join('; ')}`
    throw new AppError('ROUTE_ERR_INVALID', message, { route: where, problems: lines })
  }
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    fail([`expected a route (a map with id, match, url), got ${shown(input)}`])
  }
  if (!validator.Check(input)) fail(schemaMessages(input, validator.Errors(input)))
  const def = input as RouteDefinition
  const problems = new Problems()

  let match = def.match
  try {
    match = parsePattern(def.match).text
  } catch (err) {
    problems.lines.push((err as Error).message)
  }
  const url = httpUrl(problems, 'url', def.url, guard)
  const recipientCheckUrl = def.recipientCheckUrl === undefined ? undefined : httpUrl(problems, 'recipientCheckUrl', def.recipientCheckUrl, guard)
  const secrets = checkSecrets(problems, def)
  const headers = checkHeaders(problems, def.headers)
  const timeoutMs = def.timeout === undefined ? undefined : durationMs(problems, 'timeout', def.timeout, 0, LIMITS.timeoutMs)
  const attempts = def.retry?.attempts ?? DEFAULTS.attempts
  const backoffMs = durationMs(problems, 'retry.backoff', def.retry?.backoff, DEFAULTS.backoffMs, LIMITS.backoffMs)
  const maxDelayMs = durationMs(problems, 'retry.maxDelay', def.retry?.maxDelay, DEFAULTS.maxDelayMs, LIMITS.maxDelayMs)
  if (maxDelayMs < backoffMs) problems.add('retry.maxDelay', `a duration of at least retry.backoff (${backoffMs} ms)`, `${maxDelayMs} ms`)

  let maxInline = DEFAULTS.maxInlineAttachmentBytes
  if (def.maxInlineAttachmentBytes !== undefined) {
    const n = typeof def.maxInlineAttachmentBytes === 'number' ? def.maxInlineAttachmentBytes : parseSize(def.maxInlineAttachmentBytes)
    if (n === null || n > LIMITS.maxInlineAttachmentBytes.max)
      problems.add('maxInlineAttachmentBytes', `${EXPECTED.maxInlineAttachmentBytes}, at most 1GiB`, shown(def.maxInlineAttachmentBytes))
    else maxInline = n
  }
  const replies = checkReplies(problems, def.replies)
  const rateLimit =
    def.rateLimit === undefined
      ? undefined
      : { max: def.rateLimit.max, perMs: durationMs(problems, 'rateLimit.per', def.rateLimit.per, 1000, LIMITS.ratePerMs) }
  const circuitBreaker = checkBreaker(problems, def.circuitBreaker)
  if (problems.lines.length > 0) fail(problems.lines)

  return {
    id: def.id,
    match,
    url,
    format: def.format ?? DEFAULTS.format,
    secrets,
    headers,
    timeoutMs,
    mode: def.mode ?? DEFAULTS.mode,
    retry: { attempts, backoffMs, maxDelayMs },
    maxInlineAttachmentBytes: maxInline,
    recipientCheckUrl,
    replies,
    concurrency: def.concurrency,
    rateLimit,
    circuitBreaker,
    source,
  }
}

function checkBreaker(problems: Problems, def: RouteDefinition['circuitBreaker']): RouteCircuitBreaker | null {
  if (def === false) return null
  const d = DEFAULTS.circuitBreaker
  return {
    failures: def?.failures ?? d.failures,
    windowMs: durationMs(problems, 'circuitBreaker.window', def?.window, d.windowMs, LIMITS.windowMs),
    coolDownMs: durationMs(problems, 'circuitBreaker.coolDown', def?.coolDown, d.coolDownMs, LIMITS.coolDownMs),
  }
}

/**
 * The definition that `parseRoute` turns back into the same route (what the store keeps).
 * Durations are written with their unit (`"1500ms"`), never as bare numbers.
 */
export function routeToDefinition(route: Route): RouteDefinition {
  const def: RouteDefinition = {
    id: route.id,
    match: route.match,
    url: route.url,
    format: route.format,
    mode: route.mode,
    retry: { attempts: route.retry.attempts, backoff: `${route.retry.backoffMs}ms`, maxDelay: `${route.retry.maxDelayMs}ms` },
    maxInlineAttachmentBytes: route.maxInlineAttachmentBytes,
  }
  if (route.secrets.length > 0) def.secrets = [...route.secrets]
  if (Object.keys(route.headers).length > 0) def.headers = { ...route.headers }
  if (route.timeoutMs !== undefined) def.timeout = `${route.timeoutMs}ms`
  if (route.recipientCheckUrl !== undefined) def.recipientCheckUrl = route.recipientCheckUrl
  if (route.concurrency !== undefined) def.concurrency = route.concurrency
  if (route.rateLimit !== undefined) def.rateLimit = { max: route.rateLimit.max, per: `${route.rateLimit.perMs}ms` }
  const breaker = route.circuitBreaker
  def.circuitBreaker = breaker === null ? false : { failures: breaker.failures, window: `${breaker.windowMs}ms`, coolDown: `${breaker.coolDownMs}ms` }
  if (Object.keys(route.replies).length > 0) {
    def.replies = Object.fromEntries(
      Object.entries(route.replies).map(([k, r]) => [
        k,
        { code: r.code, ...(r.enhanced === undefined ? {} : { enhanced: r.enhanced }), ...(r.message === undefined ? {} : { message: r.message }) },
      ]),
    )
  }
  return def
}

/**
 * The route's reply override for a webhook result, most specific first: the exact status
 * (`"404"`), then its class (`"4xx"`); `"timeout"` and `"error"` (connection failures) stand alone.
 */
export function routeReplyFor(route: Route, result: number | 'timeout' | 'error'): RouteReply | undefined {
  if (typeof result !== 'number') return route.replies[result]
  return route.replies[String(result)] ?? route.replies[`${Math.floor(result / 100)}xx`]
}

/** Identifier of a secret that can be shown: the first 8 hex characters of its SHA-256. */
export function secretId(secret: string): string {
  return createHash('sha256').update(secret).digest('hex').slice(0, 8)
}

const SENSITIVE_HEADER = /auth|token|secret|key|cookie|password|signature|session/i

export type PublicRoute = Omit<Route, 'secrets' | 'headers'> & {
  readonly hasSecret: boolean
  readonly secretIds: readonly string[]
  /** Header values whose name suggests a credential are replaced by `"[redacted]"`. */
  readonly headers: Readonly<Record<string, string>>
}

/**
 * What the admin API may show of a route: the secrets replaced by their ids, and the values of
 * credential-like headers (Authorization, X-Api-Key, Cookie, ...) redacted.
 */
export function publicView(route: Route): PublicRoute {
  const { secrets, headers, ...rest } = route
  const shownHeaders: Record<string, string> = {}
  for (const [name, value] of Object.entries(headers)) shownHeaders[name] = SENSITIVE_HEADER.test(name) ? '[redacted]' : value
  return { ...rest, headers: shownHeaders, hasSecret: secrets.length > 0, secretIds: secrets.map(secretId) }
}
