/**
 * LMTP replies: one type, one formatter, one sanitiser. Every reply line the server writes goes
 * through `formatReply`, which guarantees CRLF endings, no control characters from foreign text,
 * at most 512 octets per line, and an enhanced status code of the same class as the reply code.
 */

export interface Reply {
  /** Three-digit reply code (RFC 5321 section 4.2). */
  readonly code: number
  /** Enhanced status code (RFC 3463), `class.subject.detail`; omitted only for 220/354/LHLO. */
  readonly enhanced?: string | undefined
  /** Reply text; several lines give a multi-line reply. */
  readonly text: string | readonly string[]
}

/** RFC 5321 section 4.5.3.1.5: a reply line is at most 512 octets including CRLF. */
export const MAX_REPLY_LINE = 512

const ENHANCED = /^([245])\.(\d{1,3})\.(\d{1,3})$/

export function reply(code: number, enhanced: string | undefined, text: string | readonly string[]): Reply {
  return { code, enhanced, text }
}

/**
 * Removes what must never reach the wire from foreign text: CR, LF and every other control
 * character (C0, DEL, C1) become a space, runs of spaces fold to one.
 */
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]| {2}|^ | $/

export function sanitizeText(text: string): string {
  // Most text is already clean (the engine's own replies): test once before rewriting.
  if (!UNSAFE.test(text)) return text
  return text
    .replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]+/g, ' ')
    .replace(/ {2,}/g, ' ')
    .trim()
}

/** Cuts a string so its UTF-8 encoding fits `maxBytes`, never splitting a character. */
export function truncateUtf8(text: string, maxBytes: number): string {
  // A UTF-16 code unit never takes more than 3 octets in UTF-8.
  if (text.length * 3 <= maxBytes || Buffer.byteLength(text) <= maxBytes) return text
  const buf = Buffer.from(text).subarray(0, maxBytes)
  let end = buf.length
  // step back over a partial multi-byte sequence
  let i = end - 1
  while (i >= 0 && (buf[i]! & 0xc0) === 0x80) i--
  if (i >= 0) {
    const lead = buf[i]!
    const need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1
    if (end - i < need) end = i
  }
  return buf.subarray(0, end).toString()
}

/** True when `code` is a valid final reply code of the given classes. */
export function isReplyCode(code: unknown, classes: readonly number[] = [2, 4, 5]): code is number {
  return typeof code === 'number' && Number.isInteger(code) && code >= 200 && code <= 599 && classes.includes(Math.floor(code / 100))
}

/**
 * True when a value a handler returned is a usable final reply: a 2xx/4xx/5xx code and a text that
 * is a string or an array of strings. (Its text is sanitised when formatted; its enhanced code, if
 * wrong, is replaced.)
 */
export function isFinalReply(r: unknown): r is Reply {
  if (typeof r !== 'object' || r === null) return false
  const { code, text } = r as { code?: unknown; text?: unknown }
  return isReplyCode(code) && (typeof text === 'string' || (Array.isArray(text) && text.every((l) => typeof l === 'string')))
}

/** True when `enhanced` is a syntactically valid enhanced status code whose class matches `code`. */
export function enhancedMatches(code: number, enhanced: string): boolean {
  const m = ENHANCED.exec(enhanced)
  return m !== null && Number(m[1]) === Math.floor(code / 100)
}

/** Default enhanced code for a reply class (RFC 3463 x.0.0). */
export function defaultEnhanced(code: number): string {
  return `${Math.floor(code / 100)}.0.0`
}

/**
 * Formats a reply for the wire. Text is sanitised and cut so each line fits 512 octets; an
 * enhanced code that is missing (where one is required) or of the wrong class is replaced by the
 * class default.
 */
export function formatReply(r: Reply, withEnhanced = true): string {
  const code = isReplyCode(r.code, [2, 3, 4, 5]) ? r.code : 451
  let enhanced = ''
  if (withEnhanced && code >= 200 && !(code >= 300 && code < 400)) {
    const e = r.enhanced !== undefined && enhancedMatches(code, r.enhanced) ? r.enhanced : defaultEnhanced(code)
    enhanced = e + ' '
  }
  const lines = (typeof r.text === 'string' ? [r.text] : r.text.length > 0 ? r.text : ['']).map(sanitizeText)
  const budget = MAX_REPLY_LINE - 4 - 2 - Buffer.byteLength(enhanced)
  let out = ''
  for (let i = 0; i < lines.length; i++) {
    const sep = i === lines.length - 1 ? ' ' : '-'
    out += `${code}${sep}${enhanced}${truncateUtf8(lines[i]!, budget)}\r\n`
  }
  return out
}
