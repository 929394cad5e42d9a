/**
 * Path and parameter syntax of MAIL FROM / RCPT TO (RFC 5321 section 4.1.2, RFC 6531 for UTF-8).
 */

export interface ParsedPath {
  /** Mailbox without brackets and without a source route; '' for `<>`. */
  readonly address: string
  /** Lower-cased domain ('' for the null path or `<Postmaster>`). */
  readonly domain: string
  readonly ascii: boolean
}

export type PathError = 'syntax' | 'address'

// atext of RFC 5322 plus, for SMTPUTF8, any non-ASCII character (RFC 6531 section 3.3).
const ATOM = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~\\-\\u0080-\\uffff]+"
const DOT_STRING = new RegExp(`^${ATOM}(?:\\.${ATOM})*$`)
const QUOTED = /^"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\uffff]|\\[\x20-\x7e])*"$/
const LABEL = '[A-Za-z0-9\\u0080-\\uffff](?:[A-Za-z0-9\\u0080-\\uffff-]{0,61}[A-Za-z0-9\\u0080-\\uffff])?'
const DOMAIN = new RegExp(`^${LABEL}(?:\\.${LABEL})*$`)
const ADDRESS_LITERAL = /^\[(?:\d{1,3}(?:\.\d{1,3}){3}|IPv6:[0-9A-Fa-f:.]+|[A-Za-z0-9-]*[A-Za-z0-9]:[\x21-\x5a\x5e-\x7e]+)\]$/
const SOURCE_ROUTE = /^@[^:,]+(?:,@[^:,]+)*:/
const NON_ASCII = /[^\x00-\x7f]/

/**
 * Splits `<path> params...` (what follows `FROM:` or `TO:`). Returns null when the path is not
 * enclosed in angle brackets.
 */
export function splitPathAndParams(rest: string): { path: string; params: string[] } | null {
  const s = rest.replace(/^ +/, '')
  if (!s.startsWith('<')) return null
  // A quoted local part may contain '>', so find the closing bracket outside quotes.
  let inQuote = false
  let close = -1
  for (let i = 1; i < s.length; i++) {
    const c = s[i]
    if (inQuote) {
      if (c === '\\') i++
      else if (c === '"') inQuote = false
    } else if (c === '"') inQuote = true
    else if (c === '>') {
      close = i
      break
    }
  }
  if (close === -1) return null
  const after = s.slice(close + 1)
  if (after !== '' && !after.startsWith(' ')) return null
  return { path: s.slice(1, close), params: after.split(' ').filter((p) => p !== '') }
}

export function parseMailbox(inner: string, allowNull: boolean): ParsedPath | PathError {
  if (inner === '') return allowNull ? { address: '', domain: '', ascii: true } : 'address'
  const mailbox = inner.replace(SOURCE_ROUTE, '')
  if (!allowNull && mailbox.toLowerCase() === 'postmaster') return { address: mailbox, domain: '', ascii: true }
  const at = mailbox.lastIndexOf('@')
  if (at <= 0 || at === mailbox.length - 1) return 'address'
  const local = mailbox.slice(0, at)
  const domain = mailbox.slice(at + 1)
  if (Buffer.byteLength(local) > 64 || Buffer.byteLength(domain) > 255) return 'address'
  if (!DOT_STRING.test(local) && !QUOTED.test(local)) return 'address'
  if (!DOMAIN.test(domain) && !ADDRESS_LITERAL.test(domain)) return 'address'
  return { address: mailbox, domain: domain.toLowerCase(), ascii: !NON_ASCII.test(mailbox) }
}

export interface Param {
  readonly key: string
  readonly value: string | undefined
}

/** `KEY=VALUE` / `KEY`; returns null on malformed syntax. Keys are upper-cased. */
export function parseParams(tokens: readonly string[]): Param[] | null {
  const out: Param[] = []
  for (const t of tokens) {
    const eq = t.indexOf('=')
    const key = (eq === -1 ? t : t.slice(0, eq)).toUpperCase()
    if (!/^[A-Z0-9][A-Z0-9-]*$/.test(key)) return null
    const value = eq === -1 ? undefined : t.slice(eq + 1)
    if (value !== undefined && !/^[\x21-\x3c\x3e-\x7e\u0080-\uffff]+$/.test(value)) return null
    out.push({ key, value })
  }
  return out
}

/** RFC 3461 xtext decoding (`+XX` hex escapes), as XFORWARD values use. Returns null if malformed. */
export function decodeXtext(value: string): string | null {
  if (!/^(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*$/.test(value)) return null
  return value.replace(/\+([0-9A-F]{2})/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)))
}
