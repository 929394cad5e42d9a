/**
 * Recipient patterns: which recipient addresses a route serves.
 *
 * | pattern                 | kind         | matches                                              |
 * | ----------------------- | ------------ | ---------------------------------------------------- |
 * | `support@example.com`   | `exact`      | that address only                                    |
 * | `user+*@example.com`    | `subaddress` | `user@example.com` and `user+<anything>@example.com` |
 * | `*@example.com`         | `domain`     | every address at `example.com` (not its subdomains)  |
 * | `*@*.example.com`       | `subdomain`  | every address at any subdomain, not the domain itself |
 * | `*`                     | `any`        | every address (catch-all)                            |
 *
 * Domains and local parts both match case-insensitively: RFC 5321 lets a server treat local
 * parts as case-sensitive, but mail systems practically never do and a route that silently
 * missed `Support@` would lose mail. Patterns and addresses are lower-cased once, so two
 * spellings of one pattern are the same pattern (and a conflict in a route table).
 */
import { AppError } from '../errors.js'

export type PatternKind = 'exact' | 'subaddress' | 'domain' | 'subdomain' | 'any'

export interface Pattern {
  readonly kind: PatternKind
  /** Normalised pattern text (lower-cased, no trailing dot); equal texts are the same pattern. */
  readonly text: string
  /**
   * Lookup key within its kind: the address (`exact`), the address without the `+*` (`subaddress`),
   * the domain (`domain`), the parent domain (`subdomain`), `''` (`any`).
   */
  readonly key: string
}

/** What a pattern may be, for error messages and documentation. */
export const PATTERN_FORMS = 'an address (user@example.com), user+*@example.com, *@example.com, *@*.example.com or *'

const LABEL = /^[\p{L}\p{N}](?:[\p{L}\p{N}-]{0,61}[\p{L}\p{N}])?$/u
// Local part: printable, no whitespace, no "@" (a quoted "@" is not supported in patterns).
const LOCAL = /^[^\s@\u0000-\u001f\u007f]{1,64}$/u

function isDomain(domain: string): boolean {
  if (domain.length === 0 || domain.length > 253) return false
  return domain.split('.').every((label) => LABEL.test(label))
}

function invalid(field: string, expected: string, input: unknown): never {
  throw new AppError('ROUTE_ERR_INVALID', `${field}: expected ${expected}, got ${JSON.stringify(input)}`, { field })
}

function stripDot(domain: string): string {
  return domain.endsWith('.') ? domain.slice(0, -1) : domain
}

/**
 * Parses and normalises a recipient pattern. Throws ROUTE_ERR_INVALID with a message that starts
 * with `field` (default `match`) and says what was expected.
 */
export function parsePattern(input: unknown, field = 'match'): Pattern {
  if (typeof input !== 'string') invalid(field, `a recipient pattern: ${PATTERN_FORMS}`, input)
  const text = input.trim().toLowerCase()
  if (text === '*' || text === '*@*') return { kind: 'any', text: '*', key: '' }
  const at = text.lastIndexOf('@')
  if (text === '' || at < 0) invalid(field, `a recipient pattern: ${PATTERN_FORMS}`, input)
  const local = text.slice(0, at)
  const rawDomain = text.slice(at + 1)
  const subdomains = rawDomain.startsWith('*.')
  const domain = stripDot(subdomains ? rawDomain.slice(2) : rawDomain)
  if (!isDomain(domain)) {
    invalid(field, 'a domain name after "@" (letters, digits and "-" in dot-separated labels; "*." only as the first label of *@*.domain)', input)
  }
  if (subdomains) {
    if (local !== '*') invalid(field, '"*" before "@*." (only *@*.domain is supported for subdomains)', input)
    return { kind: 'subdomain', text: `*@*.${domain}`, key: domain }
  }
  if (local === '*') return { kind: 'domain', text: `*@${domain}`, key: domain }
  if (local.endsWith('+*')) {
    const base = local.slice(0, -2)
    if (!LOCAL.test(base) || base.includes('*') || base.includes('+')) {
      invalid(field, 'a local part without "*" or "+" before "+*" (as in user+*@example.com)', input)
    }
    return { kind: 'subaddress', text: `${base}+*@${domain}`, key: `${base}@${domain}` }
  }
  if (!LOCAL.test(local) || local.includes('*')) {
    invalid(field, `a local part of 1 to 64 characters without spaces, or "*" alone (${PATTERN_FORMS})`, input)
  }
  return { kind: 'exact', text: `${local}@${domain}`, key: `${local}@${domain}` }
}

/** The normalised text of a pattern (throws like `parsePattern`). */
export function normalizePattern(input: string): string {
  return parsePattern(input).text
}

export interface AddressParts {
  /** Lower-cased address with no trailing dot on the domain. */
  readonly address: string
  /** Lower-cased local part; the whole address when it has no "@" (`postmaster`). */
  readonly local: string
  /** Lower-cased domain; `''` when the address has no "@". */
  readonly domain: string
}

/** Splits and normalises a recipient address the way patterns are matched against it. */
export function addressParts(address: string): AddressParts {
  const lower = address.toLowerCase()
  const at = lower.lastIndexOf('@')
  if (at < 0) return { address: lower, local: lower, domain: '' }
  const local = lower.slice(0, at)
  const domain = stripDot(lower.slice(at + 1))
  return { address: `${local}@${domain}`, local, domain }
}

/** The local part without its `+detail` (`user+tag` → `user`). */
export function baseLocal(local: string): string {
  const plus = local.indexOf('+')
  return plus < 0 ? local : local.slice(0, plus)
}

/**
 * True when the pattern matches the address. A reference implementation, one pattern at a
 * time; the route table does the same with maps.
 */
export function matchesPattern(pattern: Pattern, address: string): boolean {
  const parts = addressParts(address)
  switch (pattern.kind) {
    case 'any':
      return true
    case 'exact':
      return parts.address === pattern.key
    case 'subaddress':
      return parts.domain !== '' && `${baseLocal(parts.local)}@${parts.domain}` === pattern.key
    case 'domain':
      return parts.domain !== '' && parts.domain === pattern.key
    case 'subdomain':
      return parts.domain.endsWith(`.${pattern.key}`)
  }
}
