/**
 * The webhook request body. `parseMessage` parses the raw message once per transaction (the
 * caller keeps the result for every recipient); `buildJsonBody` serialises the JSON body for one
 * recipient; `rawRequestHeaders` gives the headers of the `raw` format.
 *
 * Cheap for many recipients: the JSON body of a recipient is
 *
 *   {"id":<webhook id>,"envelope":{"mailFrom":…,"rcptTo":<recipient>,<rest of envelope>},"message":<message>,"size":<n>[,"raw":<base64>]}
 *
 * and only the id and `rcptTo` differ between the recipients of a transaction. The `message`
 * JSON (per attachment cap), the rest of the envelope (per EnvelopeInfo object) and the base64 of
 * the raw message (per Buffer) are serialised once, kept as UTF-8 Buffers in WeakMaps keyed on
 * the objects the caller passes, and spliced around the small per-recipient parts with a single
 * Buffer.concat. Pass the same ParsedMessage, EnvelopeInfo and raw Buffer objects for every
 * recipient of a transaction to benefit.
 */
import { createHash } from 'node:crypto'
import { simpleParser, type AddressObject, type EmailAddress } from 'mailparser'
import type { Envelope, TlsInfo, XForward } from '../lmtp/types.js'

export type RouteFormat = 'json' | 'json+raw' | 'raw'

export interface MailAddress {
  readonly name: string
  readonly address: string
}

export interface HeaderField {
  /** Field name as written. */
  readonly name: string
  /** Raw value: unfolded, not MIME-decoded, surrounding white space removed. */
  readonly value: string
}

export interface ParsedAttachment {
  readonly filename: string | null
  readonly contentType: string
  /** Decoded size in bytes. */
  readonly size: number
  /** Content-ID without angle brackets (what `cid:` URLs name). */
  readonly contentId: string | null
  readonly disposition: string | null
  /** Hex SHA-256 of the decoded content. */
  readonly sha256: string
  /** Decoded content; serialised as base64 only when within the route's cap. */
  readonly content: Buffer
}

export interface ParsedMessage {
  /** Message-ID with its angle brackets, as in the header. */
  readonly messageId: string | null
  /**
   * Set only when the MIME parser gave up on the message (`unparsedMessage`): why. The message is
   * delivered all the same, with `headers` from the raw header section, no body or attachments,
   * and the raw message always in the payload.
   */
  readonly parseError?: string
  /** Date header as ISO 8601 (UTC); `null` when absent or unreadable. */
  readonly date: string | null
  readonly subject: string | null
  readonly from: readonly MailAddress[]
  readonly to: readonly MailAddress[]
  readonly cc: readonly MailAddress[]
  readonly bcc: readonly MailAddress[]
  readonly replyTo: readonly MailAddress[]
  readonly inReplyTo: string | null
  readonly references: readonly string[]
  /** Every header field in message order, repeated fields included. */
  readonly headers: readonly HeaderField[]
  /** Plain-text body; `null` when the message has none (for example HTML only). */
  readonly text: string | null
  readonly html: string | null
  readonly attachments: readonly ParsedAttachment[]
  /** Size of the raw message in bytes. */
  readonly size: number
  /** Hex SHA-256 of the raw message (the base of stable webhook ids). */
  readonly sha256: string
}

/** Transaction data shared by every recipient of a message. */
export interface EnvelopeInfo {
  /** Reverse path without brackets; `''` for the null sender. */
  readonly mailFrom: string
  /** All accepted recipients of the transaction, in RCPT order. */
  readonly recipients: readonly string[]
  /** Name the client gave in LHLO. */
  readonly lhlo: string
  /** Address of the LMTP client (the MTA). */
  readonly clientAddress: string
  /** XFORWARD attributes (the original SMTP client), `null` when the MTA sent none. */
  readonly xforward: Readonly<XForward> | null
  /** What STARTTLS negotiated (with the verified client certificate's subject); `null` in cleartext. Absent in envelopes stored before it existed. */
  readonly tls?: TlsInfo | null
  /** Identity the MTA authenticated as (AUTH); `null` when it did not. */
  readonly authUser?: string | null
}

export interface PayloadRecipient {
  /** This recipient's forward path, as sent in RCPT TO. */
  readonly address: string
  /** The `webhook-id` of this delivery, repeated in the body as `id`. */
  readonly webhookId: string
}

export interface PayloadRoute {
  readonly format: RouteFormat
  /** Attachments larger than this are sent without `content` (and with `truncated: true`). */
  readonly maxInlineAttachmentBytes: number
}

const XFORWARD_KEYS = ['name', 'addr', 'port', 'proto', 'helo', 'ident', 'source'] as const

/** The EnvelopeInfo of an LMTP transaction. */
export function envelopeInfo(envelope: Envelope): EnvelopeInfo {
  const xforward: Record<string, string> = {}
  for (const key of XFORWARD_KEYS) {
    const value = envelope.xforward[key]
    if (value !== undefined) xforward[key] = value
  }
  return {
    mailFrom: envelope.sender.address,
    recipients: envelope.recipients.map((r) => r.address),
    lhlo: envelope.session.lhlo,
    clientAddress: envelope.session.remoteAddress,
    xforward: Object.keys(xforward).length === 0 ? null : xforward,
    tls: envelope.session.tls,
    authUser: envelope.session.authUser,
  }
}

/**
 * The header section of a raw message as fields in order. Folded lines are unfolded (the line
 * break goes, the white space stays); values are not MIME-decoded; bytes are read as UTF-8.
 * Lines without a colon (such as an mbox `From ` line) are skipped.
 */
export function parseHeaderFields(raw: Buffer): HeaderField[] {
  let end = raw.length
  for (let i = 0; i < raw.length; i++) {
    if (raw[i] !== 0x0a) continue
    // a line break followed by an empty line ends the header section
    const next = raw[i + 1]
    if (next === 0x0a) {
      end = i
      break
    }
    if (next === 0x0d && raw[i + 2] === 0x0a) {
      end = i
      break
    }
  }
  if (raw[0] === 0x0a || (raw[0] === 0x0d && raw[1] === 0x0a)) end = 0
  const fields: HeaderField[] = []
  let current: string | null = null
  const flush = (): void => {
    if (current === null) return
    const colon = current.indexOf(':')
    if (colon > 0) fields.push({ name: current.slice(0, colon).trim(), value: current.slice(colon + 1).trim() })
    current = null
  }
  for (const line of raw.subarray(0, end).toString('utf8').split(/\r?\n/)) {
    if ((line.startsWith(' ') || line.startsWith('\t')) && current !== null) {
      current += line
    } else {
      flush()
      current = line
    }
  }
  flush()
  return fields
}

function addresses(value: AddressObject | AddressObject[] | undefined): MailAddress[] {
  if (value === undefined) return []
  const out: MailAddress[] = []
  const add = (a: EmailAddress): void => {
    // a group contributes its members; an empty group contributes nothing
    if (a.group) a.group.forEach(add)
    else if (a.address) out.push({ name: a.name ?? '', address: a.address })
  }
  for (const object of Array.isArray(value) ? value : [value]) object.value.forEach(add)
  return out
}

/**
 * Parses a raw message (mailparser's simpleParser). Call it once per transaction: it decodes
 * every part. Attachment contents stay Buffers so each route's cap applies at serialisation.
 * `sha256` is the hex SHA-256 of `raw` when the caller has it already (computed otherwise).
 */
export async function parseMessage(raw: Buffer, sha256?: string): Promise<ParsedMessage> {
  const mail = await simpleParser(raw, {
    skipHtmlToText: true,
    skipTextToHtml: true,
    skipTextLinks: true,
    skipImageLinks: true,
    checksumAlgo: 'sha256',
  })
  const html = typeof mail.html === 'string' ? mail.html : null
  // mailparser reports "" for a message whose only body is HTML
  const text = mail.text === undefined || (mail.text === '' && html !== null) ? null : mail.text
  const references = mail.references === undefined ? [] : Array.isArray(mail.references) ? mail.references : [mail.references]
  const date = mail.date && !Number.isNaN(mail.date.getTime()) ? mail.date.toISOString() : null
  return {
    messageId: mail.messageId ?? null,
    date,
    subject: mail.subject ?? null,
    from: addresses(mail.from),
    to: addresses(mail.to),
    cc: addresses(mail.cc),
    bcc: addresses(mail.bcc),
    replyTo: addresses(mail.replyTo),
    inReplyTo: mail.inReplyTo ?? null,
    references,
    headers: parseHeaderFields(raw),
    text,
    html,
    attachments: mail.attachments.map((a) => ({
      filename: a.filename ?? null,
      contentType: a.contentType,
      size: a.content.length,
      contentId: a.cid ?? (a.contentId ? a.contentId.replace(/^<|>$/g, '') : null),
      disposition: a.contentDisposition ?? null,
      sha256: a.checksum,
      content: a.content,
    })),
    size: raw.length,
    sha256: sha256 ?? createHash('sha256').update(raw).digest('hex'),
  }
}

/** Longest `parseError` kept (mailparser's messages are short; a cause chain might not be). */
const PARSE_ERROR_CHARS = 200

/**
 * The message of a raw message the MIME parser could not handle (mailparser refuses more than
 * 1,000 MIME parts and more than 1 MiB of header in one part, for example): every header field
 * from the raw header section (this parser is linear and never gives up), the Message-ID from
 * it, nothing decoded. Serialised with `parseError` right after `messageId`; `isUnparsedJson`
 * recognises it.
 */
export function unparsedMessage(raw: Buffer, reason: string, sha256?: string): ParsedMessage {
  const headers = parseHeaderFields(raw)
  const id = headers.find((h) => h.name.toLowerCase() === 'message-id')?.value
  return {
    messageId: id !== undefined && id !== '' && id.length <= 512 ? id : null,
    parseError: reason.length > PARSE_ERROR_CHARS ? `${reason.slice(0, PARSE_ERROR_CHARS - 1)}…` : reason,
    date: null,
    subject: null,
    from: [],
    to: [],
    cc: [],
    bcc: [],
    replyTo: [],
    inReplyTo: null,
    references: [],
    headers,
    text: null,
    html: null,
    attachments: [],
    size: raw.length,
    sha256: sha256 ?? createHash('sha256').update(raw).digest('hex'),
  }
}

/** Parses the message, or, when the parser gives up, gives its `unparsedMessage`: never throws. */
export async function parseOrDescribe(raw: Buffer, sha256?: string): Promise<ParsedMessage> {
  try {
    return await parseMessage(raw, sha256)
  } catch (err) {
    return unparsedMessage(raw, err instanceof Error ? err.message : String(err), sha256)
  }
}

const UNPARSED_JSON = /^\{"messageId":(?:"(?:[^"\\]|\\.)*"|null),"parseError":/

/** Whether a serialised `message` object (`messageJson`) is that of an unparsed message. */
export function isUnparsedJson(message: Buffer): boolean {
  // messageId is at most 512 characters there, 6 bytes each at worst once escaped
  return UNPARSED_JSON.test(message.subarray(0, 3200).toString('utf8'))
}

const messageCache = new WeakMap<ParsedMessage, Map<number, Buffer>>()
const envelopeCache = new WeakMap<EnvelopeInfo, Buffer>()
const rawCache = new WeakMap<Buffer, Buffer>()

/** The `message` object of the JSON body, serialised once per attachment cap. */
export function messageJson(parsed: ParsedMessage, maxInlineAttachmentBytes: number): Buffer {
  let perCap = messageCache.get(parsed)
  if (!perCap) messageCache.set(parsed, (perCap = new Map()))
  let json = perCap.get(maxInlineAttachmentBytes)
  if (!json) {
    const { size: _size, sha256: _sha256, attachments, ...rest } = parsed
    const message = {
      ...rest,
      attachments: attachments.map((a) => {
        const inline = a.size <= maxInlineAttachmentBytes
        return {
          filename: a.filename,
          contentType: a.contentType,
          size: a.size,
          contentId: a.contentId,
          disposition: a.disposition,
          sha256: a.sha256,
          truncated: !inline,
          ...(inline ? { content: a.content.toString('base64') } : {}),
        }
      }),
    }
    json = Buffer.from(JSON.stringify(message))
    perCap.set(maxInlineAttachmentBytes, json)
  }
  return json
}

function envelopeRest(envelope: EnvelopeInfo): Buffer {
  let json = envelopeCache.get(envelope)
  if (!json) {
    const rest = JSON.stringify({
      recipients: envelope.recipients,
      lhlo: envelope.lhlo,
      clientAddress: envelope.clientAddress,
      xforward: envelope.xforward,
      tls: envelope.tls ?? null,
      authUser: envelope.authUser ?? null,
    })
    json = Buffer.from(rest.slice(1, -1))
    envelopeCache.set(envelope, json)
  }
  return json
}

function rawBase64(raw: Buffer): Buffer {
  let b64 = rawCache.get(raw)
  if (!b64) {
    b64 = Buffer.from(`"${raw.toString('base64')}"`, 'latin1')
    rawCache.set(raw, b64)
  }
  return b64
}

/**
 * The JSON body for one recipient (formats `json` and `json+raw`; `raw` needs `raw`):
 * `{ id, envelope: { mailFrom, rcptTo, recipients, lhlo, clientAddress, xforward, tls, authUser }, message, size, raw? }`.
 */
export function buildJsonBody(parsed: ParsedMessage, envelope: EnvelopeInfo, recipient: PayloadRecipient, route: PayloadRoute, raw?: Buffer): Buffer {
  if (route.format === 'raw') throw new TypeError('format: the raw format has no JSON body; send the raw message with rawRequestHeaders()')
  return spliceJsonBody(messageJson(parsed, route.maxInlineAttachmentBytes), parsed.size, envelope, recipient, route.format, raw)
}

/**
 * The same body from the `message` object already serialised (`messageJson`), as stored for the
 * workers: only the recipient's own parts are written, the rest is spliced in.
 */
export function spliceJsonBody(
  message: Buffer,
  size: number,
  envelope: EnvelopeInfo,
  recipient: PayloadRecipient,
  format: 'json' | 'json+raw',
  raw?: Buffer,
): Buffer {
  if (format === 'json+raw' && raw === undefined) throw new TypeError('raw: required for the json+raw format')
  const head = `{"id":${JSON.stringify(recipient.webhookId)},"envelope":{"mailFrom":${JSON.stringify(envelope.mailFrom)},"rcptTo":${JSON.stringify(recipient.address)},`
  const parts = [Buffer.from(head), envelopeRest(envelope), Buffer.from('},"message":'), message, Buffer.from(`,"size":${size}`)]
  if (format === 'json+raw' && raw !== undefined) parts.push(Buffer.from(',"raw":'), rawBase64(raw))
  parts.push(Buffer.from('}'))
  return Buffer.concat(parts)
}

/**
 * Makes a value safe for an HTTP header and reversible with `decodeURIComponent`: every byte of
 * the UTF-8 form outside printable ASCII, and `%` and `,` (the list separator), is percent-encoded.
 */
export function headerSafe(value: string): string {
  return value.replace(/[^\x21-\x7e]+|[%,]/gu, encodeURIComponent)
}

/**
 * Headers of the `raw` format, whose body is the message itself: `content-type: message/rfc822`
 * and the envelope in `x-lmtp-*` headers, each value encoded with `headerSafe`. Recipients are
 * separated by `,` (which `headerSafe` never leaves in an address). XFORWARD attributes the MTA
 * sent appear as `x-lmtp-xforward-<name>`; a TLS session as `x-lmtp-tls` (protocol),
 * `x-lmtp-tls-cipher` and `x-lmtp-tls-client-subject` (when verified); AUTH as `x-lmtp-auth-user`.
 */
export function rawRequestHeaders(envelope: EnvelopeInfo, recipient: PayloadRecipient): Record<string, string> {
  const headers: Record<string, string> = {
    'content-type': 'message/rfc822',
    'x-lmtp-mail-from': headerSafe(envelope.mailFrom),
    'x-lmtp-rcpt-to': headerSafe(recipient.address),
    'x-lmtp-recipients': envelope.recipients.map(headerSafe).join(','),
    'x-lmtp-lhlo': headerSafe(envelope.lhlo),
    'x-lmtp-client-address': headerSafe(envelope.clientAddress),
  }
  for (const key of XFORWARD_KEYS) {
    const value = envelope.xforward?.[key]
    if (value !== undefined) headers[`x-lmtp-xforward-${key}`] = headerSafe(value)
  }
  const tls = envelope.tls
  if (tls) {
    headers['x-lmtp-tls'] = headerSafe(tls.protocol)
    headers['x-lmtp-tls-cipher'] = headerSafe(tls.cipher)
    if (tls.clientSubject !== null) headers['x-lmtp-tls-client-subject'] = headerSafe(tls.clientSubject)
  }
  if (envelope.authUser) headers['x-lmtp-auth-user'] = headerSafe(envelope.authUser)
  return headers
}
