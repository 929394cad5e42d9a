/**
 * What a worker sends for one recipient, from what the listener stored: the envelope, the message
 * serialised once per attachment cap (`json:<cap>`) and/or the raw message. The per-recipient body
 * is spliced around the stored message JSON, never re-serialised.
 */
import type { Route } from '../routing/schema.js'
import { parseSecret, webhookHeaders } from './signing.js'
import { isUnparsedJson, messageJson, parseOrDescribe, rawRequestHeaders, spliceJsonBody, type EnvelopeInfo } from './payload.js'
import { AppError } from '../errors.js'

export interface StoredEnvelope extends EnvelopeInfo {
  readonly size: number
  readonly receivedAt: string
  /** Hex SHA-256 of the raw message. */
  readonly sha256: string
}

const jsonPart = (cap: number): string => `json:${cap}`

/** Fields of the stored transaction a route's request needs, `env` first. */
export function requiredFields(route: Route): string[] {
  if (route.format === 'raw') return ['env', 'raw']
  if (route.format === 'json+raw') return ['env', jsonPart(route.maxInlineAttachmentBytes), 'raw']
  return ['env', jsonPart(route.maxInlineAttachmentBytes)]
}

/**
 * Fields beyond `requiredFields(route)` the request needs, judged from those loaded (in that
 * order): `raw` for a `json` route whose message could not be parsed, which always carries it.
 */
export function extraFields(route: Route, fields: readonly (Buffer | null)[]): string[] {
  return route.format === 'json' && fields[1] && isUnparsedJson(fields[1]) ? ['raw'] : []
}

/**
 * Parses the message once and serialises it once per attachment cap the routes use. A message the
 * parser gives up on is serialised as its `unparsedMessage` (with `parseError`): it is delivered,
 * never refused for it.
 */
export async function messageParts(raw: Buffer, routes: readonly Route[], sha256?: string): Promise<Map<string, Buffer>> {
  const parts = new Map<string, Buffer>()
  const caps = new Set(routes.filter((r) => r.format !== 'raw').map((r) => r.maxInlineAttachmentBytes))
  if (caps.size === 0) return parts
  const parsed = await parseOrDescribe(raw, sha256)
  for (const cap of caps) parts.set(jsonPart(cap), messageJson(parsed, cap))
  return parts
}

const secretCache = new WeakMap<Route, Buffer[]>()
/** The route's signing keys (parsed once per route object); empty when it has no secrets. */
export function routeSecretKeys(route: Route): Buffer[] {
  let keys = secretCache.get(route)
  if (!keys) secretCache.set(route, (keys = route.secrets.map((s) => parseSecret(s))))
  return keys
}

/**
 * The signed request for one recipient. `fields` are the values of `requiredFields(route)` and then
 * of `extraFields(route, …)`, in that order; the caller has checked none is missing.
 */
export function buildRequest(
  route: Route,
  fields: readonly (Buffer | null)[],
  rcpt: string,
  webhookId: string,
): { headers: Record<string, string>; body: Buffer } {
  const envBuf = fields[0]
  if (!envBuf || fields.some((f) => f === null)) throw new AppError('QUEUE_ERR_MESSAGE_GONE')
  const envelope = JSON.parse(envBuf.toString('utf8')) as StoredEnvelope
  let body: Buffer
  let contentHeaders: Record<string, string>
  if (route.format === 'raw') {
    body = fields[1]!
    contentHeaders = rawRequestHeaders(envelope, { address: rcpt, webhookId })
  } else {
    // `raw` is there for json+raw, and for json when the message could not be parsed
    const raw = fields[2] ?? undefined
    body = spliceJsonBody(fields[1]!, envelope.size, envelope, { address: rcpt, webhookId }, raw ? 'json+raw' : route.format, raw)
    contentHeaders = { 'content-type': 'application/json' }
  }
  const signed = webhookHeaders(routeSecretKeys(route), webhookId, body)
  return { headers: { ...route.headers, ...contentHeaders, ...signed }, body }
}
