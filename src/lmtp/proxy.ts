/**
 * The PROXY protocol header (HAProxy's proxy-protocol.txt, versions 1 and 2) that a load balancer
 * sends before the client's own bytes, naming the client it accepted. Only TCP over IPv4 and IPv6
 * carries an address; `UNKNOWN` (v1) and `LOCAL` or an unspecified family (v2, a health check)
 * carry none, and the connection is then taken as the proxy's own. TLVs (v2) are skipped.
 */
import { isIP } from 'node:net'

/** The 12-octet signature that starts a version 2 header. */
export const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a])
const V1_PREFIX = Buffer.from('PROXY ', 'latin1')
/** A version 1 header is at most 107 octets with its CRLF. */
const V1_MAX = 107
/** Longest version 2 header accepted (16 octets + addresses + TLVs); cloud load balancers send far less. */
export const V2_MAX = 4096

export interface ProxiedClient {
  readonly address: string
  readonly port: number
}

export type ProxyParse =
  | { readonly status: 'incomplete' }
  | { readonly status: 'invalid'; readonly reason: string }
  /** `client` is null for a header without an address (UNKNOWN, LOCAL). `length` octets were the header. */
  | { readonly status: 'ok'; readonly length: number; readonly client: ProxiedClient | null; readonly version: 1 | 2 }

function isPrefix(buf: Buffer, of: Buffer): boolean {
  const n = Math.min(buf.length, of.length)
  return buf.subarray(0, n).equals(of.subarray(0, n))
}

/**
 * Whether the input starts with a PROXY header: `yes`, `no`, or `maybe` while it is still a prefix
 * of one (more input needed to tell).
 */
export function proxyHeaderStart(buf: Buffer): 'yes' | 'no' | 'maybe' {
  for (const sig of [V1_PREFIX, V2_SIGNATURE]) {
    if (isPrefix(buf, sig)) return buf.length >= sig.length ? 'yes' : 'maybe'
  }
  return 'no'
}

const PORT = /^(0|[1-9]\d{0,4})$/

function port(text: string): number | null {
  if (!PORT.test(text)) return null
  const n = Number(text)
  return n <= 65535 ? n : null
}

function parseV1(buf: Buffer): ProxyParse {
  const lf = buf.indexOf(0x0a)
  if (lf === -1) return buf.length >= V1_MAX ? { status: 'invalid', reason: 'v1 header without CRLF in 107 octets' } : { status: 'incomplete' }
  if (lf + 1 > V1_MAX || buf[lf - 1] !== 0x0d) return { status: 'invalid', reason: 'v1 header not ended by CRLF within 107 octets' }
  const line = buf.subarray(0, lf - 1).toString('latin1')
  const parts = line.split(' ')
  const length = lf + 1
  if (parts[1] === 'UNKNOWN') return { status: 'ok', length, client: null, version: 1 }
  if (parts.length !== 6 || (parts[1] !== 'TCP4' && parts[1] !== 'TCP6'))
    return { status: 'invalid', reason: `v1 header not understood: ${JSON.stringify(line.slice(0, 60))}` }
  const family = parts[1] === 'TCP4' ? 4 : 6
  const [, , src = '', dst = '', sport = '', dport = ''] = parts
  if (isIP(src) !== family || isIP(dst) !== family) return { status: 'invalid', reason: 'v1 header with an address of the wrong family' }
  const sp = port(sport)
  if (sp === null || port(dport) === null) return { status: 'invalid', reason: 'v1 header with an invalid port' }
  return { status: 'ok', length, client: { address: src, port: sp }, version: 1 }
}

function ipv6(buf: Buffer): string {
  const groups: string[] = []
  for (let i = 0; i < 16; i += 2) groups.push(buf.readUInt16BE(i).toString(16))
  // Let the platform produce the canonical (compressed) form.
  return new URL(`http://[${groups.join(':')}]/`).hostname.slice(1, -1)
}

function parseV2(buf: Buffer): ProxyParse {
  if (buf.length < 16) return { status: 'incomplete' }
  const verCmd = buf[12]!
  const family = buf[13]!
  const length = 16 + buf.readUInt16BE(14)
  if (verCmd >> 4 !== 2) return { status: 'invalid', reason: `v2 header of version ${verCmd >> 4}` }
  const command = verCmd & 0x0f
  if (command > 1) return { status: 'invalid', reason: `v2 header with unknown command ${command}` }
  if (length > V2_MAX) return { status: 'invalid', reason: `v2 header of ${length} octets (at most ${V2_MAX})` }
  if (buf.length < length) return { status: 'incomplete' }
  // LOCAL (a health check of the proxy itself), or a family without addresses we use.
  if (command === 0) return { status: 'ok', length, client: null, version: 2 }
  const body = buf.subarray(16, length)
  if (family === 0x11) {
    if (body.length < 12) return { status: 'invalid', reason: 'v2 TCP4 header too short' }
    return { status: 'ok', length, client: { address: [...body.subarray(0, 4)].join('.'), port: body.readUInt16BE(8) }, version: 2 }
  }
  if (family === 0x21) {
    if (body.length < 36) return { status: 'invalid', reason: 'v2 TCP6 header too short' }
    return { status: 'ok', length, client: { address: ipv6(body.subarray(0, 16)), port: body.readUInt16BE(32) }, version: 2 }
  }
  if (family === 0x00) return { status: 'ok', length, client: null, version: 2 }
  return { status: 'invalid', reason: `v2 header for transport family 0x${family.toString(16)} (only TCP over IPv4 and IPv6)` }
}

/** Parses a PROXY header at the start of `buf`. */
export function parseProxyHeader(buf: Buffer): ProxyParse {
  const start = proxyHeaderStart(buf)
  if (start === 'maybe') return { status: 'incomplete' }
  if (start === 'no') return { status: 'invalid', reason: 'the connection does not start with a PROXY header' }
  return buf[0] === 0x50 ? parseV1(buf) : parseV2(buf)
}
