/**
 * One LMTP connection: the input pump, the reply batching and the message data path. Commands live
 * in `commands/`, one file per command (or per family), and dispatch through the table in
 * `commands/index.ts`; they read and change the session state kept here. Every reply goes through
 * `formatReply`; input is parsed by `LmtpParser` and replies are batched and flushed whenever the
 * parser has no complete input left (RFC 2920), so pipelined groups are answered in order and
 * nothing buffered is lost.
 */
import type { Socket } from 'node:net'
import { TLSSocket, type SecureContext } from 'node:tls'
import { Readable } from 'node:stream'
import type { Logger } from 'pino'
import { AppError } from '../errors.js'
import { LmtpParser, type ParserEvent } from './parser.js'
import { formatReply, isFinalReply, type Reply } from './reply.js'
import type { Envelope, LmtpHandler, Recipient, Sender, SessionInfo, TlsInfo, XForward } from './types.js'
import { COMMANDS } from './commands/index.js'
import { newId } from './ids.js'
import { distinguishedName, peerVerified, type ClientCertMode, type TlsCredentials } from './tls.js'
import type { FailureLimiter, UserStore } from './auth.js'
import { proxyHeaderStart } from './proxy.js'
import * as R from './replies.js'

export interface SessionOptions {
  readonly hostname: string
  /** Lower-cased accepted domains; contains '*' to accept all. */
  readonly domains: ReadonlySet<string>
  readonly maxMessageSize: number
  readonly maxRecipients: number
  readonly idleTimeoutMs: number
  readonly dataTimeoutMs: number
  /** Longest command line accepted, CRLF included. */
  readonly maxLineLength: number
  /** Protocol errors tolerated before the connection is closed. */
  readonly maxErrors: number
  /** Octets of one over-long command line dropped before the connection is closed. */
  readonly maxLineDiscard: number
  /** STARTTLS, when configured. */
  readonly tls: {
    readonly credentials: TlsCredentials
    readonly required: boolean
    readonly clientCert: ClientCertMode
  } | null
  /** AUTH PLAIN and LOGIN (after STARTTLS), when configured. */
  readonly auth: {
    readonly users: UserStore
    readonly limiter: FailureLimiter
    readonly required: boolean
  } | null
}

/** Who is at the other end of the connection. */
export interface Peer {
  /** The client's address: the socket's peer, or the client a trusted proxy named. */
  readonly remoteAddress: string
  readonly remotePort: number
  /** The socket's peer. */
  readonly peerAddress: string
  /** Refuse a connection that starts with a PROXY header (from a peer not trusted to send one). */
  readonly refuseProxyHeader: boolean
}

export type StartTlsResult = 'ok' | 'failed' | 'no-client-certificate'
export type AuthResult = 'ok' | 'failed' | 'limited'

export interface SessionObserver {
  transaction?(envelope: Envelope, replies: readonly Reply[], size: number): void
  /** A command line passed LMTP_MAX_LINE_DISCARD and the connection was closed. */
  lineAbandoned?(): void
  /** A STARTTLS handshake ended. */
  starttls?(result: StartTlsResult): void
  /** An AUTH exchange ended (`limited`: refused because of earlier failures from the address). */
  auth?(result: AuthResult): void
}

export interface Transaction {
  readonly sender: Sender
  readonly recipients: Recipient[]
  readonly startedAt: number
  readonly id: string
  /** Set once the message has started (DATA 354 or the first BDAT). */
  message: Readable | null
  pending: Promise<readonly Reply[]> | null
  /** Octets of message content received so far. */
  size: number
  /** Reply that every recipient gets instead of the handler's (size exceeded, ...). */
  failure: Reply | null
  /** The handler's promise settled before the data ended: stop feeding the stream. */
  settled: boolean
  usedBdat: boolean
}

/** A BDAT chunk being read: the reply to send at its end, or null to stream it into the transaction. */
export interface BdatChunk {
  readonly last: boolean
  readonly size: number
  readonly reject: Reply | null
}

/** Input queued beyond this pauses the socket until the session catches up. */
const INPUT_HIGH_WATER = 256 * 1024
/** How long a closed session waits for the client to close its side. */
const CLOSE_LINGER_MS = 5_000
const MESSAGE_HIGH_WATER = 64 * 1024

/** A line the session waits for in place of a command (an AUTH response after 334). */
export type Continuation = (line: string) => void | Promise<void>

export class LmtpSession {
  readonly id = newId()
  readonly parser: LmtpParser
  readonly log: Logger
  private out: string[] = []
  private pumping = false
  private closed = false
  private paused = false
  private timerMs = -1
  private txnCount = 0
  private readResolve: (() => void) | null = null
  /** Started when a command line begins arriving: it must end within the idle timeout. */
  private lineTimer: NodeJS.Timeout | null = null
  private lingerTimer: NodeJS.Timeout | null = null
  /** While the first octets are screened for a PROXY header (see Peer.refuseProxyHeader). */
  private screening: Buffer | null
  private handshaking = false
  private ended = false
  readonly closedPromise: Promise<void>
  private resolveClosed!: () => void
  readonly remoteAddress: string
  readonly remotePort: number
  readonly peerAddress: string

  // State the command modules read and change.
  /** The client half-closed or sent QUIT: answer what is complete, then close. */
  quitting = false
  /** The server is closing: end the session once no transaction is open. */
  draining = false
  /** Protocol errors so far. */
  errors = 0
  /** Name given in LHLO; null until then. */
  lhlo: string | null = null
  xforward: XForward = {}
  txn: Transaction | null = null
  /** During a BDAT chunk the session is reading it. */
  bdat: BdatChunk | null = null
  /** Set once STARTTLS has completed. */
  tls: TlsInfo | null = null
  /** Set by a successful AUTH. */
  authUser: string | null = null
  /** The next line is the answer to a 334 challenge, not a command. */
  continuation: Continuation | null = null

  constructor(
    public socket: Socket,
    readonly options: SessionOptions,
    readonly handler: LmtpHandler,
    logger: Logger,
    private readonly observer: SessionObserver = {},
    peer?: Peer,
  ) {
    this.parser = new LmtpParser(options.maxLineLength, options.maxLineDiscard)
    this.remoteAddress = peer?.remoteAddress ?? socket.remoteAddress ?? 'unix'
    this.remotePort = peer?.remotePort ?? socket.remotePort ?? 0
    this.peerAddress = peer?.peerAddress ?? this.remoteAddress
    this.screening = peer?.refuseProxyHeader ? Buffer.alloc(0) : null
    // Every line of the session names the client (the MTA the PROXY header named, if any).
    this.log = logger.child({ session: this.id, remote: this.remoteAddress })
    this.closedPromise = new Promise((resolve) => (this.resolveClosed = resolve))
    socket.setNoDelay(true)
    this.setTimer(options.idleTimeoutMs)
    this.listen(socket)
  }

  private listen(socket: Socket): void {
    socket.on('data', (chunk: Buffer) => this.onData(chunk))
    socket.on('timeout', () => this.onTimeout())
    socket.on('error', (err) => this.log.debug({ err }, 'socket error'))
    socket.on('close', () => this.onClose())
    socket.on('end', () => {
      // Half-close from the client: answer what is complete, then close.
      this.quitting = true
      this.pump()
    })
  }

  get info(): SessionInfo {
    return {
      id: this.id,
      remoteAddress: this.remoteAddress,
      remotePort: this.remotePort,
      peerAddress: this.peerAddress,
      lhlo: this.lhlo ?? '',
      tls: this.tls,
      authUser: this.authUser,
    }
  }

  /** True while a mail transaction is open (between MAIL FROM and its final replies). */
  get inTransaction(): boolean {
    return this.txn !== null
  }

  /** Greets the client; `input` is what arrived before (after a PROXY header). */
  start(input?: Buffer): void {
    this.log.debug({ peer: this.peerAddress === this.remoteAddress ? undefined : this.peerAddress }, 'connection opened')
    this.socket.write(formatReply(R.greeting(this.options.hostname), false))
    if (input !== undefined && input.length > 0) this.onData(input)
  }

  /**
   * Graceful close: an idle session gets 421 now; a session inside a transaction gets it once the
   * transaction has ended.
   */
  drain(): void {
    this.draining = true
    if (!this.txn && !this.pumping && this.bdat === null) this.closeWith(R.shuttingDown(this.options.hostname))
  }

  /** Ends the session at once with a 421 (deadline passed). */
  forceClose(r: Reply = R.shuttingDown(this.options.hostname)): void {
    this.closeWith(r)
    // The reply is small enough for the socket buffer; a client that stopped reading must not
    // keep the process from exiting.
    this.socket.destroy()
  }

  // ---------------------------------------------------------------- input

  private onData(chunk: Buffer): void {
    if (this.closed || this.quitting) return
    if (this.screening !== null) {
      const input = this.screening.length === 0 ? chunk : Buffer.concat([this.screening, chunk])
      const start = proxyHeaderStart(input)
      if (start === 'maybe') {
        this.screening = input
        return
      }
      this.screening = null
      if (start === 'yes') {
        this.log.warn({ peer: this.peerAddress }, 'PROXY header from an address not in LMTP_PROXY_TRUSTED_CIDRS: connection refused')
        this.closeWith(R.accessDenied(this.options.hostname))
        return
      }
      chunk = input
    }
    this.parser.push(chunk)
    if (this.parser.buffered > INPUT_HIGH_WATER && !this.paused) {
      this.paused = true
      this.socket.pause()
    }
    this.pump()
  }

  private onTimeout(): void {
    if (this.closed || this.handshaking) {
      // We ended our side and the client has not closed its own, or a TLS handshake stalled.
      this.socket.destroy()
      return
    }
    if (this.pumping) {
      // Waiting on our own handler, not on the client: arm the timer again when the pump ends.
      this.timerMs = -1
      return
    }
    this.log.info({ mode: this.parser.currentMode }, 'idle timeout')
    this.abortMessage('timeout')
    this.closeWith(R.idleTimeout(this.options.hostname))
    this.socket.destroySoon()
  }

  /** A command line did not end within the idle timeout of its first octets (a client trickling an endless line). */
  private onLineTimeout(): void {
    this.lineTimer = null
    if (this.closed || this.pumping || !this.parser.partialLine) return
    this.log.info('command line not ended within the idle timeout')
    this.closeWith(R.idleTimeout(this.options.hostname))
    this.socket.destroySoon()
  }

  private onClose(): void {
    if (this.lingerTimer) clearTimeout(this.lingerTimer)
    if (this.lineTimer) clearTimeout(this.lineTimer)
    this.lingerTimer = this.lineTimer = null
    // Once: after STARTTLS both the TLS socket and the socket under it may report the close.
    if (this.ended) return
    this.ended = true
    this.closed = true
    this.abortMessage('disconnect')
    this.parser.clear()
    this.log.debug({ transactions: this.txnCount }, 'connection closed')
    this.resolveClosed()
  }

  /**
   * Processes every complete event in the input. Runs synchronously while commands complete
   * synchronously (no promise per command); an asynchronous step (a handler call, stream
   * backpressure) suspends it, and it resumes when that step settles. While it runs, new input is
   * only queued, so events are handled strictly in order.
   */
  private pump(): void {
    if (this.pumping) return
    this.pumping = true
    try {
      for (;;) {
        if (this.closed) {
          this.pumping = false
          return
        }
        const event = this.parser.next()
        if (event === null) break
        const pending = this.dispatch(event)
        if (pending !== undefined) {
          this.flush()
          pending.then(
            () => this.resume(),
            (err: unknown) => this.fail(err),
          )
          return
        }
        this.resumeSocket()
      }
      this.resumeSocket()
      this.flush()
      this.pumping = false
      if (this.quitting && !this.closed) this.socket.end()
      else if (this.draining && !this.txn && this.bdat === null) this.closeWith(R.shuttingDown(this.options.hostname))
      else if (this.parser.currentMode === 'command') {
        this.setTimer(this.options.idleTimeoutMs)
        // Silence is not the only way to hold a connection: a line trickled one octet at a time
        // must end within the idle timeout too.
        if (this.parser.partialLine) {
          if (this.lineTimer === null) this.lineTimer = setTimeout(() => this.onLineTimeout(), this.options.idleTimeoutMs)
        } else if (this.lineTimer !== null) {
          clearTimeout(this.lineTimer)
          this.lineTimer = null
        }
      } else this.setTimer(this.options.dataTimeoutMs)
    } catch (err) {
      this.fail(err)
    }
  }

  private resume(): void {
    this.pumping = false
    this.resumeSocket()
    this.pump()
  }

  private resumeSocket(): void {
    if (this.paused && this.parser.buffered < INPUT_HIGH_WATER / 2) {
      this.paused = false
      this.socket.resume()
    }
  }

  private fail(err: unknown): void {
    this.pumping = false
    this.log.error({ err }, 'session failed')
    this.forceClose(R.localError())
  }

  private dispatch(event: ParserEvent): void | Promise<void> {
    switch (event.type) {
      case 'line':
        return this.onLine(event.line, event.bareLf)
      case 'too-long':
        this.continuation = null
        return this.protocolError(R.lineTooLong())
      case 'abandoned':
        return this.abandonLine()
      case 'data':
        return this.onMessageChunk(event.chunk)
      case 'end':
        return this.onMessageEnd()
    }
  }

  private abandonLine(): void {
    this.log.warn({ limit: this.options.maxLineDiscard }, 'command line longer than LMTP_MAX_LINE_DISCARD: closing the connection')
    this.continuation = null
    this.send(R.lineTooLong())
    this.notify(() => this.observer.lineAbandoned?.())
    // Not destroyed at once: input still arriving is read and dropped until the client closes or
    // the linger deadline passes, so the replies are not lost to a reset.
    this.closeWith(R.lineAbandoned(this.options.hostname))
  }

  private onLine(raw: Buffer, bareLf: boolean): void | Promise<void> {
    const continuation = this.continuation
    if (continuation !== null) {
      // A response to a 334 (AUTH): never a command, whatever it holds.
      this.continuation = null
      return continuation(bareLf ? '\n' : raw.toString('latin1'))
    }
    if (bareLf) return this.protocolError(R.bareLf())
    // NUL, bare CR and other control characters are never valid in a command line.
    for (let i = 0; i < raw.length; i++) {
      const c = raw[i]!
      if ((c < 0x20 && c !== 0x09) || c === 0x7f) return this.protocolError(R.controlCharacters())
    }
    const line = raw.toString('utf8')
    if (line.includes('\ufffd')) return this.protocolError(R.invalidUtf8())
    const space = line.indexOf(' ')
    const verb = (space === -1 ? line : line.slice(0, space)).toUpperCase()
    const args = space === -1 ? '' : line.slice(space + 1)
    const command = COMMANDS[verb]
    if (command === undefined) return this.protocolError(verb === '' ? R.emptyCommand() : R.unknownCommand())
    return command(this, args)
  }

  // ---------------------------------------------------------------- output

  /** Sets the socket's inactivity timer (0 = off) only when it changes; Node refreshes it on I/O. */
  setTimer(ms: number): void {
    if (ms === this.timerMs) return
    this.timerMs = ms
    this.socket.setTimeout(ms)
  }

  /** Queues a reply; it is written with the others when the input runs dry. */
  send(r: Reply, withEnhanced = true): void {
    this.out.push(formatReply(r, withEnhanced))
  }

  /** Writes the queued replies now. */
  flush(): void {
    if (this.out.length === 0 || this.closed) return
    this.socket.write(this.out.length === 1 ? this.out[0]! : this.out.join(''))
    this.out = []
  }

  /** Sends a last reply and ends the connection. */
  closeWith(r: Reply): void {
    if (this.closed) return
    this.send(r)
    this.flush()
    this.endSocket()
  }

  /**
   * Ends our side; a client that does not close its own within the linger time is cut off (an
   * absolute deadline: a client that keeps sending must not hold the connection either).
   */
  endSocket(): void {
    this.closed = true
    this.parser.clear()
    this.socket.end()
    this.timerMs = -1
    this.setTimer(CLOSE_LINGER_MS)
    if (this.lingerTimer === null) {
      const socket = this.socket
      this.lingerTimer = setTimeout(() => socket.destroy(), CLOSE_LINGER_MS)
      this.lingerTimer.unref()
    }
  }

  /** Calls an observer; a throwing observer is logged and never disturbs the session. */
  notify(call: () => void): void {
    try {
      call()
    } catch (err) {
      this.log.warn({ err }, 'session observer failed; ignored')
    }
  }

  /** Reports an AUTH outcome to the observer. */
  authResult(result: AuthResult): void {
    this.notify(() => this.observer.auth?.(result))
  }

  // ---------------------------------------------------------------- STARTTLS

  /**
   * Turns the connection into TLS (RFC 3207), after the 220 has been queued. Whatever the client
   * sent after STARTTLS in cleartext is dropped unread (the command injection of CVE-2011-0411),
   * and once the handshake completes the session starts over: no LHLO, XFORWARD, transaction or
   * authentication from before survives.
   */
  startTls(context: SecureContext, clientCert: ClientCertMode): void {
    this.flush()
    const raw = this.socket
    const dropped = this.parser.buffered + raw.readableLength
    this.parser.discardInput()
    this.screening = null
    while (raw.read() !== null);
    if (dropped > 0) this.log.warn({ octets: dropped }, 'input sent after STARTTLS in cleartext was discarded')
    raw.removeAllListeners('data')
    raw.removeAllListeners('end')
    raw.removeAllListeners('timeout')
    raw.setTimeout(0)
    if (this.paused) {
      this.paused = false
      raw.resume()
    }
    const secure = new TLSSocket(raw, {
      isServer: true,
      secureContext: context,
      requestCert: clientCert !== 'off',
      rejectUnauthorized: false,
    })
    this.socket = secure
    this.handshaking = true
    this.timerMs = -1
    this.setTimer(this.options.idleTimeoutMs)
    this.listen(secure)
    // A failed handshake ends in 'error' then 'close'; the raw socket's own 'close' may not come.
    secure.once('error', (err) => {
      if (!this.handshaking) return
      this.handshaking = false
      this.log.info({ err: err.message }, 'TLS handshake failed')
      this.notify(() => this.observer.starttls?.('failed'))
      secure.destroy()
    })
    // once: a TLS 1.2 renegotiation must not start the session over a second time.
    secure.once('secure', () => this.onSecure(secure, clientCert))
  }

  private onSecure(secure: TLSSocket, clientCert: ClientCertMode): void {
    this.handshaking = false
    if (this.closed) return
    let clientSubject: string | null = null
    if (clientCert !== 'off') {
      const { verified, reason } = peerVerified(secure)
      if (verified) clientSubject = distinguishedName(secure.getPeerCertificate().subject as unknown as Record<string, string>)
      else if (clientCert !== 'require') this.log.debug({ reason }, 'client certificate not verified: no subject recorded')
      else {
        this.log.warn({ reason }, 'client certificate missing or not verified: session refused')
        this.notify(() => this.observer.starttls?.('no-client-certificate'))
        this.closeWith(R.clientCertificateRequired(this.options.hostname))
        return
      }
    }
    const cipher = secure.getCipher()
    this.tls = { protocol: secure.getProtocol() ?? 'unknown', cipher: cipher.standardName ?? cipher.name, clientSubject }
    // RFC 3207 section 4.2: discard any knowledge obtained from the client before TLS.
    this.lhlo = null
    this.xforward = {}
    this.authUser = null
    this.resetTransaction()
    this.log.debug({ protocol: this.tls.protocol, cipher: this.tls.cipher, clientSubject }, 'TLS started')
    this.notify(() => this.observer.starttls?.('ok'))
    this.timerMs = -1
    this.setTimer(this.options.idleTimeoutMs)
    this.pump()
  }

  /** A refused command: its reply, and the connection closes once the client has made too many. */
  protocolError(r: Reply): void {
    this.send(r)
    if (++this.errors >= this.options.maxErrors) this.closeWith(R.tooManyErrors(this.options.hostname))
  }

  /**
   * Runs a callback that may be sync or async, checks its reply, and applies it. Anything invalid
   * (a throw, a non-reply, a 3xx) becomes a 451 for the client and an error in the log.
   */
  verdict<T>(
    call: () => T | Promise<T>,
    apply: (v: T | undefined) => void,
    pick: (v: T) => Reply | undefined = (v) => v as Reply | undefined,
  ): void | Promise<void> {
    const check = (v: T): void => {
      const r = v === undefined || v === null ? undefined : pick(v)
      if (r !== undefined && !isFinalReply(r)) {
        this.log.error({ code: (r as { code?: unknown } | null)?.code }, 'handler returned an invalid reply')
        this.send(R.localError())
        return
      }
      apply(v)
    }
    const fail = (err: unknown): void => {
      this.log.error({ err }, 'handler failed')
      this.send(R.localError())
    }
    let result: T | Promise<T>
    try {
      result = call()
    } catch (err) {
      return fail(err)
    }
    if (result instanceof Promise) return result.then(check, fail)
    check(result)
  }

  // ---------------------------------------------------------------- transaction

  /** Opens a transaction (MAIL FROM accepted). */
  openTransaction(sender: Sender): void {
    this.txn = {
      sender,
      recipients: [],
      startedAt: Date.now(),
      id: newId(),
      message: null,
      pending: null,
      size: 0,
      failure: null,
      settled: false,
      usedBdat: false,
    }
  }

  /** Drops the open transaction, if any; a message already streaming to the handler is aborted. */
  resetTransaction(): void {
    if (this.txn) this.abortMessage('reset')
    this.txn = null
  }

  /** Starts streaming the message of `txn` to the handler (after 354, or at the first BDAT chunk). */
  beginMessage(txn: Transaction): void {
    const message = new Readable({
      highWaterMark: MESSAGE_HIGH_WATER,
      read: () => {
        const resolve = this.readResolve
        this.readResolve = null
        resolve?.()
      },
    })
    // The handler may stop listening early; an error on the stream must never crash the process.
    message.on('error', () => {})
    txn.message = message
    const envelope = this.envelope(txn)
    txn.pending = Promise.resolve()
      .then(() => this.handler.data(envelope, message))
      .finally(() => {
        txn.settled = true
        const resolve = this.readResolve
        this.readResolve = null
        resolve?.()
      })
    // Never an unhandled rejection: the outcome is read at the end of the data.
    txn.pending.catch(() => {})
  }

  private envelope(txn: Transaction): Envelope {
    return {
      id: txn.id,
      session: this.info,
      sender: txn.sender,
      recipients: txn.recipients,
      xforward: this.xforward,
      startedAt: txn.startedAt,
    }
  }

  private onMessageChunk(chunk: Buffer): void | Promise<void> {
    const txn = this.txn
    if (this.bdat?.reject || !txn) return // a rejected BDAT chunk: read and dropped
    txn.size += chunk.length
    if (txn.failure) return
    if (txn.size > this.options.maxMessageSize) {
      txn.failure = R.tooBig(this.options.maxMessageSize)
      txn.message?.destroy(new AppError('LMTP_ERR_SIZE'))
      return
    }
    const message = txn.message
    if (!message || txn.settled || message.destroyed) return
    if (!message.push(chunk)) {
      return new Promise<void>((resolve) => (this.readResolve = resolve))
    }
  }

  private async onMessageEnd(): Promise<void> {
    const bdat = this.bdat
    this.bdat = null
    const txn = this.txn
    if (bdat?.reject) {
      this.send(bdat.reject)
      if (this.errors >= this.options.maxErrors) this.closeWith(R.tooManyErrors(this.options.hostname))
      return
    }
    if (!txn) return
    if (bdat && !bdat.last) {
      this.send(txn.failure ?? R.chunkOk(bdat.size))
      return
    }
    this.setTimer(0)
    const message = txn.message
    if (message && !message.destroyed && !txn.failure) message.push(null)
    let replies: readonly Reply[]
    let outcome: readonly Reply[] | undefined
    try {
      outcome = await txn.pending!
    } catch (err) {
      if (!txn.failure) this.log.error({ err, txn: txn.id }, 'data handler failed')
    }
    if (txn.failure) {
      replies = txn.recipients.map(() => txn.failure!)
    } else {
      replies = this.checkReplies(outcome, txn.recipients.length, txn.id)
    }
    for (const r of replies) this.send(r)
    this.txnCount++
    this.notify(() => this.observer.transaction?.(this.envelope(txn), replies, txn.size))
    this.txn = null
    this.xforward = {}
    if (this.draining) this.closeWith(R.shuttingDown(this.options.hostname))
  }

  /** One valid final reply per recipient, whatever the handler returned. */
  private checkReplies(outcome: readonly Reply[] | undefined, count: number, txnId: string): Reply[] {
    if (outcome === undefined) return Array.from({ length: count }, () => R.localError())
    if (!Array.isArray(outcome) || outcome.length !== count) {
      this.log.error(
        { txn: txnId, expected: count, got: Array.isArray(outcome) ? outcome.length : typeof outcome },
        'data handler returned the wrong number of replies',
      )
    }
    const replies: Reply[] = []
    for (let i = 0; i < count; i++) {
      const r = Array.isArray(outcome) ? (outcome[i] as Reply | undefined) : undefined
      if (isFinalReply(r)) replies.push(r)
      else {
        if (r !== undefined) this.log.error({ txn: txnId, index: i }, 'data handler returned an invalid reply')
        replies.push(R.localError())
      }
    }
    return replies
  }

  /** Fails the message stream of the open transaction (the client went away, reset, timed out). */
  abortMessage(reason: string): void {
    const txn = this.txn
    const message = txn?.message
    if (message && !message.destroyed && !message.readableEnded) {
      message.destroy(new AppError('LMTP_ERR_ABORTED', `Transaction aborted: ${reason}`))
    }
    const resolve = this.readResolve
    this.readResolve = null
    resolve?.()
  }
}
