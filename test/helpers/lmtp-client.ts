/**
 * The one raw LMTP client of the tests: a real socket (TCP or unix) that reads whole replies, for
 * interactive sessions (`LmtpClient`) and one-shot transcripts (`converse`), and the functions that
 * summarise what a server wrote.
 */
import net from 'node:net'

/** A TCP port on 127.0.0.1, a host and port, or a unix socket path. */
export type LmtpTarget = number | { port: number; host?: string } | { path: string }

/** One reply: all its lines, without CRLF. */
export type Block = string[]

/** Splits raw server output into complete replies (a trailing partial line is left out). */
export function blocks(raw: string): Block[] {
  const out: Block[] = []
  let current: string[] = []
  for (const line of raw.split('\r\n').slice(0, -1)) {
    current.push(line)
    if (line[3] !== '-') {
      out.push(current)
      current = []
    }
  }
  return out
}

/** `code enhanced` of each reply's last line when it has an enhanced code, else the code alone. */
export function summary(raw: string): string[] {
  return blocks(raw).map((b) => {
    const last = b[b.length - 1]!
    return /^\d{3} [245]\.\d+\.\d+( |$)/.test(last) ? last.split(' ').slice(0, 2).join(' ') : last.slice(0, 3)
  })
}

/** Reply summaries without the greeting. */
export function codes(output: string): string[] {
  return summary(output).slice(1)
}

/** The last line of each reply after the 354 of the (first) DATA, QUIT's 221 left out: one per recipient. */
export function dataReplies(output: string): string[] {
  const lines = blocks(output).map((b) => b[b.length - 1]!)
  const start = lines.findIndex((l) => l.startsWith('354'))
  const end = lines.length > 0 && lines[lines.length - 1]!.startsWith('221') ? -1 : undefined
  return lines.slice(start + 1, end)
}

/** A whole session: LHLO, one transaction to `rcpts` with a unique Message-ID, QUIT. */
export const transaction = (rcpts: string[], subject = 'admin test'): string =>
  'LHLO mta.test\r\nMAIL FROM:<sender@x.test>\r\n' +
  rcpts.map((r) => `RCPT TO:<${r}>\r\n`).join('') +
  `DATA\r\nSubject: ${subject}\r\nMessage-ID: <${Math.random()}@x.test>\r\n\r\nhello\r\n.\r\nQUIT\r\n`

function options(target: LmtpTarget): net.NetConnectOpts {
  if (typeof target === 'number') return { port: target, host: '127.0.0.1', noDelay: true }
  if ('path' in target) return { path: target.path }
  return { port: target.port, host: target.host ?? '127.0.0.1', noDelay: true }
}

/**
 * An LMTP connection. `connect` waits for the first reply (the greeting, or a refusal such as
 * 421) and keeps it in `greeting`; `send` and `next` read the replies after it, in order, each once.
 */
export class LmtpClient {
  readonly socket: net.Socket
  /** The first reply, or null when the server closed without one. */
  greeting: Block | null = null
  /** Set once the socket has closed. */
  readonly closed: Promise<void>
  isClosed = false
  error: Error | null = null
  private raw = ''
  private complete: Block[] = []
  private cursor = 0
  private waiters: { count: number; resolve: () => void }[] = []

  private constructor(socket: net.Socket) {
    this.socket = socket
    socket.setEncoding('latin1')
    socket.on('data', (s: string) => {
      this.raw += s
      this.complete = blocks(this.raw)
      this.wake()
    })
    socket.on('error', (err) => (this.error = err))
    this.closed = new Promise((resolve) =>
      socket.on('close', () => {
        this.isClosed = true
        this.wake()
        resolve()
      }),
    )
  }

  /** Connects and waits for the greeting; throws when the connection is refused. */
  static async connect(target: LmtpTarget): Promise<LmtpClient> {
    const c = await LmtpClient.open(target)
    if (c === null) throw new Error(`cannot connect to ${JSON.stringify(target)}`)
    return c
  }

  /** Like `connect`, but null when the connection is refused (nothing listens). */
  static open(target: LmtpTarget): Promise<LmtpClient | null> {
    return new Promise((resolve) => {
      const socket = net.connect(options(target))
      socket.once('error', () => resolve(null))
      socket.once('connect', () => {
        const c = new LmtpClient(socket)
        void c.until(1).then(() => {
          c.greeting = c.complete[0] ?? null
          c.cursor = c.greeting ? 1 : 0
          resolve(c)
        })
      })
    })
  }

  /** Everything the server wrote so far. */
  get output(): string {
    return this.raw
  }

  /** Every complete reply so far, the greeting included. */
  get replies(): Block[] {
    return this.complete
  }

  write(data: string | Buffer): Promise<void> {
    if (this.socket.destroyed) return Promise.resolve()
    return new Promise((resolve) => this.socket.write(data, () => resolve()))
  }

  /** Waits until `count` complete replies in total (the greeting included) have arrived, or the close. */
  until(count: number): Promise<void> {
    if (this.complete.length >= count || this.isClosed) return Promise.resolve()
    return new Promise<void>((resolve) => this.waiters.push({ count, resolve }))
  }

  /** The next reply not read yet, or null once the server has closed without one. */
  async next(): Promise<Block | null> {
    await this.until(this.cursor + 1)
    return this.complete.length > this.cursor ? this.complete[this.cursor++]! : null
  }

  /**
   * Writes `data`, then waits for `more` replies after those already read and returns their
   * summaries (fewer when the server closed first).
   */
  async send(data: string | Buffer, more: number): Promise<string[]> {
    await this.write(data)
    const from = this.cursor
    await this.until(from + more)
    this.cursor = Math.min(this.complete.length, from + more)
    return summary(this.raw).slice(from, this.cursor)
  }

  end(): void {
    this.socket.end()
  }

  destroy(): void {
    this.socket.destroy()
  }

  private wake(): void {
    const ready = this.waiters.filter((w) => this.isClosed || this.complete.length >= w.count)
    this.waiters = this.waiters.filter((w) => !ready.includes(w))
    for (const w of ready) w.resolve()
  }
}

export interface ConverseOptions {
  /** Write the input in pieces of this many bytes, yielding between writes. */
  pieceSize?: number
  /** Give up after this long (the server should have closed by then). */
  timeoutMs?: number
}

/**
 * Connects, writes `input` after the greeting, and returns everything the server wrote until it
 * closed the connection (the greeting included).
 */
export async function converse(target: LmtpTarget, input: string | Buffer, opts: ConverseOptions = {}): Promise<string> {
  const data = typeof input === 'string' ? Buffer.from(input, 'utf8') : input
  const c = await LmtpClient.connect(target)
  const piece = Math.max(1, opts.pieceSize ?? data.length)
  for (let i = 0; i < data.length; i += piece) {
    void c.write(data.subarray(i, i + piece))
    if (piece < data.length) await new Promise((r) => setImmediate(r))
  }
  let timer: NodeJS.Timeout | undefined
  await Promise.race([
    c.closed,
    new Promise<void>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`server did not close; got: ${c.output}`)), opts.timeoutMs ?? 10_000)
    }),
  ]).finally(() => {
    clearTimeout(timer)
    c.destroy()
  })
  return Buffer.from(c.output, 'latin1').toString('utf8')
}
