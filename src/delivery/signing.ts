/**
 * Webhook signatures per the Standard Webhooks specification: HMAC-SHA256 over
 * `${webhook-id}.${webhook-timestamp}.${body}` with a `whsec_` secret, sent as `v1,<base64>` in
 * `webhook-signature`, one entry per secret so a route can rotate keys without downtime.
 *
 * The body is fed to the HMAC in parts, so a 25 MiB payload is never copied into a new string.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto'
import { AppError } from '../errors.js'

const SECRET_PREFIX = 'whsec_'
/** The specification asks for 24 to 64 random bytes. */
export const MIN_SECRET_BYTES = 24
export const MAX_SECRET_BYTES = 64

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/
/** A webhook id goes into a header and into the signed content, where a `.` would be ambiguous. */
const WEBHOOK_ID = /^[A-Za-z0-9_-]{1,128}$/

/**
 * Decodes a `whsec_<base64>` secret into its key bytes. Throws ROUTE_ERR_INVALID naming `field`
 * when the prefix is missing, the base64 is malformed, or the key is not 24 to 64 bytes long.
 * The error never contains the secret itself.
 */
export function parseSecret(secret: string, field = 'secrets'): Buffer {
  const fail = (expected: string): never => {
    throw new AppError('ROUTE_ERR_INVALID', `${field}: expected ${expected}`, { field })
  }
  if (typeof secret !== 'string' || !secret.startsWith(SECRET_PREFIX)) fail('a secret starting with "whsec_"')
  const encoded = secret.slice(SECRET_PREFIX.length)
  if (!BASE64.test(encoded) || encoded.length % 4 === 1) fail('base64 after "whsec_"')
  const key = Buffer.from(encoded, 'base64')
  // Buffer's decoder skips what it cannot read; a round trip proves nothing was skipped.
  if (key.toString('base64').replace(/=+$/, '') !== encoded.replace(/=+$/, '')) fail('base64 after "whsec_"')
  if (key.length < MIN_SECRET_BYTES || key.length > MAX_SECRET_BYTES) {
    fail(`a key of ${MIN_SECRET_BYTES} to ${MAX_SECRET_BYTES} bytes after "whsec_" (got ${key.length})`)
  }
  return key
}

/** Generates a new random secret in the `whsec_` format (32 bytes). */
export function generateSecret(): string {
  return SECRET_PREFIX + randomBytes(32).toString('base64')
}

function checkSignedFields(msgId: string, timestampSeconds: number): void {
  if (!WEBHOOK_ID.test(msgId)) throw new RangeError(`webhook id: expected 1 to 128 letters, digits, "_" or "-", got ${JSON.stringify(msgId)}`)
  if (!Number.isSafeInteger(timestampSeconds) || timestampSeconds < 0) {
    throw new RangeError(`webhook timestamp: expected whole seconds since the epoch, got ${timestampSeconds}`)
  }
}

/**
 * The `webhook-signature` value: `v1,<base64>` for each secret, space-separated, in the order
 * given (newest first by convention). `body` may be a Buffer or a string (hashed as UTF-8).
 */
export function signatureHeader(secrets: readonly Buffer[], msgId: string, timestampSeconds: number, body: Buffer | string): string {
  checkSignedFields(msgId, timestampSeconds)
  if (secrets.length === 0) throw new RangeError('secrets: expected at least one key')
  const prefix = `${msgId}.${timestampSeconds}.`
  const signatures: string[] = []
  for (const key of secrets) {
    const hmac = createHmac('sha256', key)
    hmac.update(prefix)
    hmac.update(body)
    signatures.push(`v1,${hmac.digest('base64')}`)
  }
  return signatures.join(' ')
}

export interface WebhookHeaders {
  'webhook-id': string
  'webhook-timestamp': string
  /** Absent only when the route has no secrets. */
  'webhook-signature'?: string
}

/**
 * The three Standard Webhooks headers for one attempt. The timestamp is the time of the attempt
 * (a retry gets a new one); the id stays the same across attempts. Without secrets there is no
 * `webhook-signature` to send, so only the id and the timestamp are returned.
 */
export function webhookHeaders(
  secrets: readonly Buffer[],
  msgId: string,
  body: Buffer | string,
  timestampSeconds: number = Math.floor(Date.now() / 1000),
): WebhookHeaders {
  checkSignedFields(msgId, timestampSeconds)
  const base: WebhookHeaders = { 'webhook-id': msgId, 'webhook-timestamp': String(timestampSeconds) }
  if (secrets.length === 0) return base
  return { ...base, 'webhook-signature': signatureHeader(secrets, msgId, timestampSeconds, body) }
}

/**
 * A webhook id that is the same whenever the same message is delivered to the same recipient
 * through the same route, so a redelivery by the MTA (a new LMTP transaction carrying the same
 * bytes) reaches the consumer with the id it has already seen. `messageSha256` is the hex SHA-256
 * of the raw message (`ParsedMessage.sha256`).
 */
export function deriveWebhookId(messageSha256: string, recipient: string, routeId: string): string {
  const digest = createHash('sha256').update(messageSha256).update('\0').update(recipient).update('\0').update(routeId).digest('base64url')
  return `msg_${digest}`
}
