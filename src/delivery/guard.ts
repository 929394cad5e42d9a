/**
 * Destination guard: decides which IP addresses a webhook may connect to, and enforces it at
 * connect time, after DNS resolution, so a hostname that resolves (or re-resolves) to a forbidden
 * address is refused just like a literal IP. The same rules refuse a route URL whose host is
 * written as a denied address when the route is created (`checkUrl`, used by the route parser), so
 * a mistyped route fails at once instead of as endless 451s; names are left to connect time.
 *
 * Rules, first match wins:
 * 1. An address inside an extra deny entry (`WEBHOOK_DENY_CIDRS`) is refused.
 * 2. When an allow list (`WEBHOOK_ALLOW_CIDRS`) is set, an address outside every allow entry is refused.
 * 3. An address inside a default deny entry is refused, unless an allow entry that lies inside that
 *    default entry contains it: `169.254.169.254/32` opens that one address, `0.0.0.0/0` opens nothing
 *    of the default deny list. Opening a denied range takes naming it.
 * 4. Everything else is allowed (loopback and private ranges included: deny them explicitly).
 *
 * Every address is compared in one 128-bit space where IPv4 `a.b.c.d` is `::ffff:a.b.c.d`, so an
 * IPv4 entry also covers the IPv4-mapped IPv6 form of the same addresses, and the other way round.
 */
import { lookup as dnsLookup, type LookupAddress, type LookupAllOptions, type LookupOneOptions } from 'node:dns'
import { isIP, isIPv4 } from 'node:net'
import { buildConnector } from 'undici'
import { AppError } from '../errors.js'

/**
 * Denied unless explicitly allowed: link-local IPv4 (cloud metadata at 169.254.169.254), link-local
 * IPv6, the AWS IPv6 metadata address, and the "this network" addresses (`0.0.0.0/8`, `::`), which
 * Linux connects to the local host and would otherwise slip past a loopback deny entry.
 */
export const DEFAULT_DENY_CIDRS: readonly string[] = Object.freeze(['169.254.0.0/16', 'fe80::/10', 'fd00:ec2::254/128', '0.0.0.0/8', '::/128'])

export interface Cidr {
  /** The entry as written. */
  readonly text: string
  /** Network address in the 128-bit space (IPv4 mapped to `::ffff:0:0/96`). */
  readonly network: bigint
  /** Prefix length in the 128-bit space (an IPv4 `/16` is `/112`). */
  readonly bits: number
}

const MAPPED_V4 = 0xffffn << 32n
const ALL_ONES = (1n << 128n) - 1n

function v4ToBigInt(address: string): bigint {
  let n = 0n
  for (const part of address.split('.')) n = (n << 8n) | BigInt(Number(part))
  return n
}

/**
 * An IP address as a 128-bit integer, IPv4 mapped into `::ffff:0:0/96`; `null` when `address` is
 * not an IP address. A zone suffix (`fe80::1%eth0`) is ignored.
 */
export function addressToBigInt(address: string): bigint | null {
  const bare = address.replace(/%[^%]*$/, '')
  const family = isIP(bare)
  if (family === 4) return MAPPED_V4 | v4ToBigInt(bare)
  if (family !== 6) return null
  let text = bare
  const lastColon = text.lastIndexOf(':')
  if (isIPv4(text.slice(lastColon + 1))) {
    // an embedded IPv4 tail (`::ffff:1.2.3.4`) is the last two 16-bit groups
    const v4 = v4ToBigInt(text.slice(lastColon + 1))
    text = `${text.slice(0, lastColon + 1)}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`
  }
  const parse = (s: string): bigint[] => (s === '' ? [] : s.split(':').map((g) => BigInt(parseInt(g, 16))))
  const [head = '', rest] = text.split('::')
  const left = parse(head)
  const right = rest === undefined ? [] : parse(rest)
  const groups = left.concat(Array<bigint>(8 - left.length - right.length).fill(0n), right)
  let n = 0n
  for (const g of groups) n = (n << 16n) | g
  return n
}

function mask(bits: number): bigint {
  return bits === 0 ? 0n : (ALL_ONES << BigInt(128 - bits)) & ALL_ONES
}

/**
 * Parses `address/prefix` (IPv4 or IPv6; a bare address is a single host). Host bits are ignored
 * (`10.1.2.3/8` is `10.0.0.0/8`). Throws CONFIG_ERR_INVALID naming `field` on bad input.
 */
export function parseCidr(value: string, field = 'cidr'): Cidr {
  const fail = (): never => {
    throw new AppError('CONFIG_ERR_INVALID', `${field}: expected a CIDR such as 10.0.0.0/8 or fd00::/8, got ${JSON.stringify(value)}`, { field })
  }
  if (typeof value !== 'string') fail()
  const text = value.trim()
  const [address = '', prefix, extra] = text.split('/')
  const family = isIP(address)
  if (family === 0 || extra !== undefined || address.includes('%')) fail()
  const width = family === 4 ? 32 : 128
  let bits = width
  if (prefix !== undefined) {
    if (!/^\d{1,3}$/.test(prefix) || Number(prefix) > width) fail()
    bits = Number(prefix)
  }
  const bits128 = family === 4 ? 96 + bits : bits
  const network = (addressToBigInt(address) ?? 0n) & mask(bits128)
  return { text, network, bits: bits128 }
}

function contains(cidr: Cidr, address: bigint): boolean {
  return (address & mask(cidr.bits)) === cidr.network
}

export interface GuardOptions {
  /** If non-empty, only these ranges may be reached (minus the deny entries). */
  readonly allowCidrs?: readonly string[]
  /** Extra ranges to refuse, on top of the default deny list. */
  readonly denyCidrs?: readonly string[]
  /** Replaces DEFAULT_DENY_CIDRS (tests and special deployments only). */
  readonly defaultDenyCidrs?: readonly string[]
}

export type GuardVerdict = { readonly allowed: true } | { readonly allowed: false; readonly reason: string }

/**
 * The IP address a URL host is written as, or `null` for a name. `hostname` is what the WHATWG
 * URL parser left (`new URL(u).hostname`): it has already turned every other spelling of an IPv4
 * address (`0xA9FEA9FE`, `2852039166`, `0251.0376.0251.0376`, `169.254.43518`, percent-encoded or
 * full-width digits, a trailing dot) into dotted decimal, and IPv6 into its compressed form in
 * brackets (`[::ffff:a9fe:a9fe]`), which is what undici connects to.
 */
export function hostAddress(hostname: string): string | null {
  const bare = hostname.startsWith('[') && hostname.endsWith(']') ? hostname.slice(1, -1) : hostname
  return isIP(bare) === 0 ? null : bare
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void
type LookupAllFn = (hostname: string, options: LookupAllOptions, callback: (err: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void) => void

export class DestinationGuard {
  readonly allow: readonly Cidr[]
  readonly deny: readonly Cidr[]
  readonly defaultDeny: readonly Cidr[]
  readonly #resolve: LookupAllFn

  constructor(options: GuardOptions = {}, resolve: LookupAllFn = dnsLookup) {
    this.allow = (options.allowCidrs ?? []).map((c) => parseCidr(c, 'allowCidrs'))
    this.deny = (options.denyCidrs ?? []).map((c) => parseCidr(c, 'denyCidrs'))
    this.defaultDeny = (options.defaultDenyCidrs ?? DEFAULT_DENY_CIDRS).map((c) => parseCidr(c, 'defaultDenyCidrs'))
    this.#resolve = resolve
  }

  /** Whether a connection to `address` (an IP address) is allowed, and why not. */
  check(address: string): GuardVerdict {
    const n = addressToBigInt(address)
    if (n === null) return { allowed: false, reason: 'not an IP address' }
    const denied = this.deny.find((c) => contains(c, n))
    if (denied) return { allowed: false, reason: `inside denied range ${denied.text}` }
    const allowedBy = this.allow.filter((c) => contains(c, n))
    if (this.allow.length > 0 && allowedBy.length === 0) return { allowed: false, reason: 'outside every allowed range' }
    for (const d of this.defaultDeny) {
      if (!contains(d, n)) continue
      const opened = allowedBy.some((a) => a.bits >= d.bits && contains(d, a.network))
      if (!opened) return { allowed: false, reason: `inside default-denied range ${d.text}` }
    }
    return { allowed: true }
  }

  /**
   * For a URL whose host is an IP address: the verdict on that address. `null` for a host that is
   * a name (checked after resolution, at connect time) or a URL that does not parse.
   */
  checkUrl(url: string): (GuardVerdict & { readonly address: string }) | null {
    let hostname: string
    try {
      hostname = new URL(url).hostname
    } catch {
      return null
    }
    const address = hostAddress(hostname)
    return address === null ? null : { ...this.check(address), address }
  }

  /** The HOOK_ERR_DESTINATION_DENIED error for `host` resolving to a refused `address`, or `null`. */
  refusal(host: string, address: string): AppError | null {
    const verdict = this.check(address)
    if (verdict.allowed) return null
    const shown = host === address ? address : `${host} (${address})`
    return new AppError('HOOK_ERR_DESTINATION_DENIED', `webhook destination ${shown} is not allowed: ${verdict.reason}`, { host, address })
  }

  /**
   * A `lookup` for `net.connect`/`tls.connect`: resolves every address of the name and refuses the
   * connection if any one of them is not allowed, so a name cannot smuggle a forbidden address in
   * next to an allowed one. Handles both `all: true` (happy eyeballs) and single-address calls.
   */
  readonly lookup = (hostname: string, options: LookupOneOptions | LookupAllOptions, callback: LookupCallback): void => {
    this.#resolve(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, [])
      if (addresses.length === 0) return callback(Object.assign(new Error(`no address for ${hostname}`), { code: 'ENOTFOUND' }), [])
      for (const a of addresses) {
        const refused = this.refusal(hostname, a.address)
        if (refused) return callback(refused as unknown as NodeJS.ErrnoException, [])
      }
      if (options.all) return callback(null, addresses)
      const first = addresses[0]!
      callback(null, first.address, first.family)
    })
  }

  /**
   * An undici connector with this guard applied: literal IP hosts are checked before any socket is
   * opened (Node skips `lookup` for them), names are checked through `lookup` after resolution.
   */
  connector(options: buildConnector.BuildOptions = {}): buildConnector.connector {
    const connect = buildConnector({ ...options, lookup: this.lookup } as buildConnector.BuildOptions)
    return (opts, callback) => {
      const literal = hostAddress(opts.hostname)
      if (literal !== null) {
        const refused = this.refusal(opts.hostname, literal)
        if (refused) {
          callback(refused, null)
          return
        }
      }
      connect(opts, callback)
    }
  }
}
