/**
 * The LMTP listener: TCP and/or unix socket, connection limit, graceful close. Knows nothing of
 * HTTP or Redis: it drives `LmtpSession`s against an `LmtpHandler`.
 */
import net from 'node:net'
import { existsSync, unlinkSync, statSync } from 'node:fs'
import type { Logger } from 'pino'
import { formatReply } from './reply.js'
import * as R from './replies.js'
import { LmtpSession, type SessionObserver, type SessionOptions } from './session.js'
import type { LmtpHandler } from './types.js'

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
  readonly maxErrors?: number
}

export interface ServerObserver extends SessionObserver {
  connection?(event: 'open' | 'close' | 'refused'): void
}

export type ListenTarget = { host: string; port: number } | { path: string }

export class LmtpServer {
  private readonly servers: net.Server[] = []
  private readonly sessions = new Set<LmtpSession>()
  private readonly sessionOptions: SessionOptions
  private closing = false

  constructor(
    private readonly options: LmtpServerOptions,
    private readonly handler: LmtpHandler,
    private readonly log: Logger,
    private readonly observer: ServerObserver = {},
  ) {
    this.sessionOptions = {
      hostname: options.hostname,
      domains: new Set(options.domains.map((d) => d.toLowerCase())),
      maxMessageSize: options.maxMessageSize,
      maxRecipients: options.maxRecipients,
      idleTimeoutMs: options.idleTimeoutMs,
      dataTimeoutMs: options.dataTimeoutMs,
      maxLineLength: options.maxLineLength ?? 4096,
      maxErrors: options.maxErrors ?? 20,
    }
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

  private accept(socket: net.Socket): void {
    if (this.closing || this.sessions.size >= this.options.maxConnections) {
      this.observer.connection?.('refused')
      socket.on('error', () => {})
      socket.end(formatReply(this.closing ? R.shuttingDown(this.options.hostname) : R.tooManyConnections(this.options.hostname)))
      // allowHalfOpen: a refused client that never closes must not keep the descriptor.
      socket.setTimeout(1000, () => socket.destroy())
      return
    }
    const session = new LmtpSession(socket, this.sessionOptions, this.handler, this.log, this.observer)
    this.sessions.add(session)
    this.observer.connection?.('open')
    void session.closedPromise.then(() => {
      this.sessions.delete(session)
      try {
        this.observer.connection?.('close')
      } catch (err) {
        this.log.error({ err }, 'connection observer failed')
      }
    })
    session.start()
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
