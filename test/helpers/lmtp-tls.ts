/**
 * A raw LMTP client that can turn its connection into TLS after STARTTLS, for the tests of the
 * listener's security: it writes what it is told, collects replies (complete, multi-line ones
 * counted once), and can bind to another loopback address to play a client from elsewhere.
 */
import net from 'node:net'
import tls from 'node:tls'
import { once } from 'node:events'

export interface ConnectOptions {
  /** Local address to connect from, such as 127.0.0.2. */
  readonly localAddress?: string
  /** Octets sent before anything is read (a PROXY header). */
  readonly preamble?: Buffer | string
  /** Do not wait for a greeting (the server may send nothing, or close). */
  readonly noGreeting?: boolean
}

export class RawClient {
  private raw = ''
  private waiters: { count: number; resolve: () => void }[] = []
  closed: Promise<void>
  isClosed = false

  private constructor(public socket: net.Socket) {
    this.closed = this.watch(socket)
  }

  static async connect(port: number, options: ConnectOptions = {}): Promise<RawClient> {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress: options.localAddress })
    await once(socket, 'connect')
    if (options.preamble !== undefined) socket.write(options.preamble)
    const c = new RawClient(socket)
    if (!options.noGreeting) await c.until(1)
    return c
  }

  private watch(socket: net.Socket): Promise<void> {
    socket.on('data', (chunk: Buffer) => {
      this.raw += chunk.toString('latin1')
      const n = this.replies().length
      this.waiters = this.waiters.filter((w) => {
        if (n < w.count) return true
        w.resolve()
        return false
      })
    })
    socket.on('error', () => {})
    return new Promise((resolve) =>
      socket.on('close', () => {
        this.isClosed = true
        for (const w of this.waiters.splice(0)) w.resolve()
        resolve()
      }),
    )
  }

  /** Everything received, as text. */
  get output(): string {
    return this.raw
  }

  /** Complete replies received so far, each as its lines. */
  replies(): string[][] {
    const out: string[][] = []
    let current: string[] = []
    for (const line of this.raw.split('\r\n').slice(0, -1)) {
      current.push(line)
      if (line[3] !== '-') {
        out.push(current)
        current = []
      }
    }
    return out
  }

  /** `code enhanced` (or the code alone) of each reply's last line. */
  codes(from = 0): string[] {
    return this.replies()
      .slice(from)
      .map((b) => {
        const last = b[b.length - 1]!
        return /^\d{3} [245]\.\d+\.\d+( |$)/.test(last) ? last.split(' ').slice(0, 2).join(' ') : last.slice(0, 3)
      })
  }

  /** Resolves once `count` replies in all have arrived, or the connection closed. */
  until(count: number): Promise<void> {
    if (this.replies().length >= count || this.isClosed) return Promise.resolve()
    return new Promise((resolve) => this.waiters.push({ count, resolve }))
  }

  /** Sends, waits for `more` further replies, and returns their codes. */
  async send(data: string | Buffer, more: number): Promise<string[]> {
    const before = this.replies().length
    this.socket.write(data)
    await this.until(before + more)
    return this.codes(before)
  }

  /** Starts TLS on the connection (after the server's 220 to STARTTLS). */
  async upgrade(options: tls.ConnectionOptions = {}): Promise<tls.TLSSocket> {
    const plain = this.socket
    plain.removeAllListeners('data')
    plain.removeAllListeners('close')
    const secure = tls.connect({ socket: plain, rejectUnauthorized: false, ...options })
    this.socket = secure
    this.closed = this.watch(secure)
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', () => resolve())
      secure.once('error', reject)
    })
    return secure
  }

  destroy(): void {
    this.socket.destroy()
  }
}
