/**
 * What a worker sends for one recipient, from what the listener stored: the envelope, the message
 * serialised once per attachment cap (`json:<cap>`) and/or the raw message. The per-recipient body
 * is spliced around the stored message JSON, never re-serialised.
 */
import type { Route } from '../routing/schema.js'
import { parseSecret, webhookHeaders } from './signing.js'
import { messageJson, parseMessage, rawRequestHeaders, spliceJsonBody, type EnvelopeInfo } from './payload.js'
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

/** Parses the message once and serialises it once per attachment cap the routes use. */
export async function messageParts(raw: Buffer, routes: readonly Route[], sha256?: string): Promise<Map<string, Buffer>> {
  const parts = new Map<string, Buffer>()
  const caps = new Set(routes.filter((r) => r.format !== 'raw').map((r) => r.maxInlineAttachmentBytes))
  if (caps.size === 0) return parts
  const parsed = await parseMessage(raw, sha256)
  for (const cap of caps) parts.set(jsonPart(cap), messageJson(parsed, cap))
  return parts
}

const secretCache = new WeakMap<Route, Buffer[]>()
function secretKeys(route: Route): Buffer[] {
  let keys = secretCache.get(route)
  if (!keys) secretCache.set(route, (keys = route.secrets.map((s) => parseSecret(s))))
  return keys
}

/**
 * The signed request for one recipient. `fields` are the values of `requiredFields(route)`, in
 * that order; the caller has checked none is missing.
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
    body = spliceJsonBody(fields[1]!, envelope.size, envelope, { address: rcpt, webhookId }, route.format, fields[2] ?? undefined)
    contentHeaders = { 'content-type': 'application/json' }
  }
  const signed = webhookHeaders(secretKeys(route), webhookId, body)
  return { headers: { ...route.headers, ...contentHeaders, ...signed }, body }
}
