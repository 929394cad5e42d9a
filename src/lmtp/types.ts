/**
 * The small async interface between the LMTP layer and the rest of the product: the seed's three
 * callbacks. The layer validates what they return and never writes a malformed reply because of it.
 */
import type { Readable } from 'node:stream'
import type { Reply } from './reply.js'

/** XFORWARD attributes sent by Postfix (original client); `undefined` when not sent or unavailable. */
export interface XForward {
  name?: string
  addr?: string
  port?: string
  proto?: string
  helo?: string
  ident?: string
  source?: string
}

export interface SessionInfo {
  /** Short unique id of the connection, used in logs. */
  readonly id: string
  readonly remoteAddress: string
  readonly remotePort: number
  /** Name the client gave in LHLO. */
  readonly lhlo: string
}

export type BodyType = '7BIT' | '8BITMIME' | 'BINARYMIME'

export interface Sender {
  /** Reverse path without angle brackets; `''` is the null sender `<>`. */
  readonly address: string
  readonly size: number | undefined
  readonly body: BodyType | undefined
  readonly smtputf8: boolean
}

export interface Recipient {
  /** Forward path without angle brackets, as the client sent it (case preserved). */
  readonly address: string
  /** Lower-cased domain, `''` for `<Postmaster>`. */
  readonly domain: string
  /** Position among the accepted recipients of the transaction, from 0. */
  readonly index: number
  /** Anything a `recipient` callback attached (for example the matched route). */
  readonly context?: unknown
}

export interface Envelope {
  /** Unique id of the transaction. */
  readonly id: string
  readonly session: SessionInfo
  readonly sender: Sender
  /** Accepted recipients in RCPT order; duplicates are kept. */
  readonly recipients: readonly Recipient[]
  readonly xforward: Readonly<XForward>
  /** Time the transaction started (MAIL FROM). */
  readonly startedAt: number
}

/** A callback's verdict: `undefined` (or void) accepts with the default reply. */
export type Verdict = Reply | undefined | void

export interface RecipientVerdict {
  readonly reply?: Reply
  /** Attached to the accepted recipient and handed back in the envelope. */
  readonly context?: unknown
}

export interface LmtpHandler {
  /** MAIL FROM: return a 4xx/5xx reply to reject, nothing to accept. */
  sender?(sender: Sender, session: SessionInfo, xforward: Readonly<XForward>): Promise<Verdict> | Verdict
  /**
   * RCPT TO, after the domain check: return a 4xx/5xx reply to reject; a 2xx reply or nothing to
   * accept, optionally with a context kept with the recipient.
   */
  recipient?(
    recipient: { address: string; domain: string },
    sender: Sender,
    session: SessionInfo,
  ): Promise<RecipientVerdict | undefined | void> | RecipientVerdict | undefined | void
  /**
   * End of DATA / BDAT LAST. `message` streams the unstuffed message with backpressure; it errors
   * (code LMTP_ERR_ABORTED or LMTP_ERR_SIZE) if the client disconnects or the size limit is passed,
   * in which case nothing may be delivered. Returns one reply per accepted recipient, in order.
   */
  data(envelope: Envelope, message: Readable): Promise<readonly Reply[]>
}
