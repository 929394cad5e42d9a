/**
 * The LMTP listener: TCP and/or unix socket, connection limit, client allowlist, PROXY protocol,
 * graceful close. Knows nothing of HTTP or Redis: it drives `LmtpSession`s against an
 * `LmtpHandler`.
 */
import net from 'node:net'
import { existsSync, unlinkSync, statSync } from 'node:fs'
import type { Logger } from 'pino'
import { formatReply } from './reply.js'
import * as R from './replies.js'
import { LmtpSession, type Peer, type SessionObserver, type SessionOptions } from './session.js'
import type { LmtpHandler } from './types.js'
import { TlsCredentials, type TlsOptions } from './tls.js'
import { FailureLimiter, UserStore, type AuthOptions } from './auth.js'
import { AddressSet } from './access.js'
import { parseProxyHeader, V2_MAX, type ProxiedClient } from './proxy.js'
import { guardObserver } from '../observers.js'

export interface LmtpServerOptions {
  readonly hostname: string
  /** Accepted recipient domains; `*` accepts all. */
  readonly domains: readonly string[]
  readonly maxMessageSize: number
  readonly maxRecipients: number
  readonly maxConnections: number
  readonly idleTimeoutMs: number
  readonly dataTimeoutMs: number
  readonly maxLineLength?: number
  /** Octets of one over-long command line dropped before the connection is closed (default 64 KiB). */
  readonly maxLineDiscard?: number
  readonly maxErrors?: number
  /** STARTTLS; null or absent: cleartext only. */
  readonly tls?: TlsOptions | null
  /** AUTH PLAIN/LOGIN after STARTTLS; needs `tls`. */
  readonly auth?: AuthOptions | null
  /** Clients (after PROXY) outside these get 554 5.7.1 instead of the greeting; empty: everyone. */
  readonly allowCidrs?: readonly string[]
  /** The PROXY protocol (v1 and v2), honoured from these peers only. */
  readonly proxy?: { readonly trustedCidrs: readonly string[] } | null
}

export type ConnectionEvent = 'open' | 'close' | 'refused' | 'denied'

export interface ServerObserver extends SessionObserver {
  /**
   * `refused`: over the connection limit or shutting down; `denied`: outside LMTP_ALLOW_CIDRS, or a
   * missing or invalid PROXY header from a trusted proxy.
   */
  connection?(event: ConnectionEvent): void
}

export type ListenTarget = { host: string; port: number } | { path: string }

/** How long a trusted proxy has to send its header. */
const PROXY_HEADER_TIMEOUT_MS = 10_000

/** An IPv4 client on a dual-stack socket, `::ffff:a.b.c.d`, as the IPv4 address it is. */
function plainAddress(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address
}

export class LmtpServer {
  private readonly servers: net.Server[] = []
  private readonly sessions = new Set<LmtpSession>()
  private readonly sessionOptions: SessionOptions
  private readonly allow: AddressSet | null
  private readonly trustedProxies: AddressSet | null
  /** Connections still sending their PROXY header (counted against the connection limit). */
  private preambles = 0
  private closing = false
  private readonly observer: ServerObserver

  constructor(
    private readonly options: LmtpServerOptions,
    private readonly handler: LmtpHandler,
    private readonly log: Logger,
    observer: ServerObserver = {},
  ) {
    // Guarded once here, so every session's calls are too: an observer never changes a reply.
    this.observer = guardObserver('lmtp', observer, log)
    const tls = options.tls ?? null
    const auth = options.auth ?? null
    if (auth !== null && tls === null) throw new TypeError('auth needs tls: AUTH is only offered inside TLS')
    this.sessionOptions = {
      hostname: options.hostname,
      domains: new Set(options.domains.map((d) => d.toLowerCase())),
      maxMessageSize: options.maxMessageSize,
      maxRecipients: options.maxRecipients,
      idleTimeoutMs: options.idleTimeoutMs,
      dataTimeoutMs: options.dataTimeoutMs,
      maxLineLength: options.maxLineLength ?? 4096,
      maxLineDiscard: options.maxLineDiscard ?? 64 * 1024,
      maxErrors: options.maxErrors ?? 20,
      tls: tls === null ? null : { credentials: new TlsCredentials(tls, log.child({ part: 'tls' })), required: tls.required, clientCert: tls.clientCert },
      auth:
        auth === null
          ? null
          : {
              users: new UserStore(auth.usersFile, log.child({ part: 'auth' })),
              limiter: new FailureLimiter(auth.maxFailures, auth.failureWindowMs),
              required: auth.required,
            },
    }
    this.allow = options.allowCidrs && options.allowCidrs.length > 0 ? new AddressSet(options.allowCidrs) : null
    this.trustedProxies = options.proxy ? new AddressSet(options.proxy.trustedCidrs) : null
  }

  /** Number of open sessions. */
  get connections(): number {
    return this.sessions.size
  }

  /** True while at least one listener accepts connections. */
  get listening(): boolean {
    return !this.closing && this.servers.some((s) => s.listening)
  }

  /** Starts a listener; resolves with the bound port (TCP) or path (unix socket). */
  async listen(target: ListenTarget): Promise<number | string> {
    const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => this.accept(socket))
    if ('path' in target && existsSync(target.path)) {
      // A stale socket from an earlier run would make listen fail; never remove anything else.
      if (statSync(target.path).isSocket()) unlinkSync(target.path)
    }
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      if ('path' in target) server.listen(target.path, () => resolve())
      else server.listen(target.port, target.host, () => resolve())
    })
    server.on('error', (err) => this.log.error({ err }, 'listener error'))
    this.servers.push(server)
    const address = server.address()
    const bound = typeof address === 'string' ? address : (address?.port ?? 0)
    this.log.info({ address: bound }, 'LMTP listening')
    return bound
  }

  private event(event: ConnectionEvent): void {
    this.observer.connection?.(event)
  }

  /** Writes a last reply to a connection that gets no session, and lets go of it. */
  private turnAway(socket: net.Socket, text: string): void {
    socket.on('error', () => {})
    socket.end(text)
    // allowHalfOpen: a client that never closes must not keep the descriptor.
    socket.setTimeout(1000, () => socket.destroy())
  }

  private accept(socket: net.Socket): void {
    if (this.closing || this.sessions.size + this.preambles >= this.options.maxConnections) {
      this.event('refused')
      this.turnAway(socket, formatReply(this.closing ? R.shuttingDown(this.options.hostname) : R.tooManyConnections(this.options.hostname)))
      return
    }
    const peer = socket.remoteAddress
    // A unix socket has no address: neither the allowlist nor the PROXY protocol applies there.
    if (peer === undefined) return this.admit(socket, { remoteAddress: 'unix', remotePort: 0, peerAddress: 'unix', refuseProxyHeader: false })
    const port = socket.remotePort ?? 0
    if (this.trustedProxies === null) return this.admit(socket, { remoteAddress: peer, remotePort: port, peerAddress: peer, refuseProxyHeader: false })
    if (!this.trustedProxies.has(plainAddress(peer))) {
      // Served as a direct client; a PROXY header from it is refused, never believed.
      return this.admit(socket, { remoteAddress: peer, remotePort: port, peerAddress: peer, refuseProxyHeader: true })
    }
    this.readProxyHeader(socket, peer, port)
  }

  /** Reads the PROXY header a trusted proxy sends first, then admits the client it names. */
  private readProxyHeader(socket: net.Socket, peer: string, port: number): void {
    this.preambles++
    let input: Buffer = Buffer.alloc(0)
    let done = false
    const finish = (): void => {
      done = true
      this.preambles--
      socket.removeListener('data', onData)
      socket.removeListener('close', onClose)
      socket.setTimeout(0)
    }
    const deny = (reason: string): void => {
      finish()
      this.log.warn({ peer, reason }, 'PROXY header missing or invalid: connection closed')
      this.event('denied')
      socket.destroy()
    }
    const onData = (chunk: Buffer): void => {
      input = input.length === 0 ? chunk : Buffer.concat([input, chunk])
      const parsed = parseProxyHeader(input)
      if (parsed.status === 'incomplete') {
        if (input.length > V2_MAX) deny('header too long')
        return
      }
      if (parsed.status === 'invalid') return deny(parsed.reason)
      finish()
      const client: ProxiedClient = parsed.client ?? { address: peer, port }
      this.admit(socket, { remoteAddress: client.address, remotePort: client.port, peerAddress: peer, refuseProxyHeader: false }, input.subarray(parsed.length))
    }
    const onClose = (): void => {
      if (!done) finish()
    }
    socket.on('data', onData)
    socket.on('close', onClose)
    socket.on('error', () => {})
    socket.setTimeout(Math.min(PROXY_HEADER_TIMEOUT_MS, this.options.idleTimeoutMs), () => {
      if (!done) deny('no header within the timeout')
    })
  }

  private admit(socket: net.Socket, peer: Peer, input?: Buffer): void {
    if (this.closing) {
      this.event('refused')
      return this.turnAway(socket, formatReply(R.shuttingDown(this.options.hostname)))
    }
    if (this.allow !== null && peer.remoteAddress !== 'unix' && !this.allow.has(plainAddress(peer.remoteAddress))) {
      this.log.info({ remote: peer.remoteAddress, peer: peer.peerAddress }, 'client outside LMTP_ALLOW_CIDRS: connection refused')
      this.event('denied')
      return this.turnAway(socket, formatReply(R.accessDenied(this.options.hostname)))
    }
    const session = new LmtpSession(socket, this.sessionOptions, this.handler, this.log, this.observer, peer)
    this.sessions.add(session)
    this.event('open')
    void session.closedPromise.then(() => {
      this.sessions.delete(session)
      this.event('close')
    })
    session.start(input)
  }

  /**
   * Graceful close: stop accepting, let transactions in flight finish until `deadlineMs`, then
   * end every remaining session with `421 4.3.2`.
   */
  async close(deadlineMs: number): Promise<void> {
    this.closing = true
    const closed = Promise.all(this.servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))))
    for (const s of this.sessions) s.drain()
    const all = Promise.all([...this.sessions].map((s) => s.closedPromise))
    let timer: NodeJS.Timeout | undefined
    const deadline = new Promise<'deadline'>((resolve) => (timer = setTimeout(() => resolve('deadline'), deadlineMs)))
    const result = await Promise.race([all.then(() => 'done' as const), deadline])
    clearTimeout(timer)
    if (result === 'deadline') {
      this.log.warn({ sessions: this.sessions.size }, 'shutdown deadline reached, closing remaining sessions')
      for (const s of this.sessions) s.forceClose()
      await Promise.race([Promise.all([...this.sessions].map((s) => s.closedPromise)), new Promise((r) => setTimeout(r, 1000))])
    }
    // Refused connections still closing must not hold the shutdown.
    await Promise.race([closed, new Promise((r) => setTimeout(r, 1000).unref())])
  }
}
