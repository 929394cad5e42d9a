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

/** What STARTTLS negotiated. */
export interface TlsInfo {
  /** Protocol version, such as `TLSv1.3`. */
  readonly protocol: string
  /** Cipher suite (IANA name), such as `TLS_AES_256_GCM_SHA384`. */
  readonly cipher: string
  /**
   * Subject of the client certificate (RFC 4514 form, such as `CN=mx1.example.net,O=Example`) when
   * the client presented one that the client CA verifies; null otherwise.
   */
  readonly clientSubject: string | null
}

export interface SessionInfo {
  /** Short unique id of the connection, used in logs. */
  readonly id: string
  /**
   * Address of the client (the MTA): the peer's own address, or the one its PROXY protocol header
   * named when the peer is a trusted proxy; `unix` on a unix socket.
   */
  readonly remoteAddress: string
  readonly remotePort: number
  /** Address of the peer that opened the connection (the load balancer when PROXY named another client). */
  readonly peerAddress: string
  /** Name the client gave in LHLO. */
  readonly lhlo: string
  /** TLS parameters once STARTTLS has completed; null in cleartext. */
  readonly tls: TlsInfo | null
  /** Identity that authenticated with AUTH; null when the client did not. */
  readonly authUser: string | null
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
