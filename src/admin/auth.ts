/**
 * Bearer-token authentication of `/v1`. Each configured token and each presented token are run
 * through HMAC-SHA256 with a key drawn at start, and the digests compared with timingSafeEqual:
 * the comparison takes the same time whatever the presented token (its length included) and
 * however many leading characters it shares with a valid one. Every configured token is compared,
 * with no early exit.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'

export type TokenCheck = (authorization: string | undefined) => boolean

export function tokenCheck(tokens: readonly string[]): TokenCheck {
  const key = randomBytes(32)
  const digest = (value: string): Buffer => createHmac('sha256', key).update(value).digest()
  const valid = tokens.map(digest)
  return (authorization) => {
    const m = authorization === undefined ? null : /^Bearer +(\S+) *$/i.exec(authorization)
    // A missing or malformed header is still hashed and compared, so it costs the same.
    const presented = digest(m?.[1] ?? '')
    let ok = false
    for (const d of valid) ok = timingSafeEqual(d, presented) || ok
    return ok && m !== null
  }
}
