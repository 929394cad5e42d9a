/** Test helpers: a real LMTP server on an ephemeral port and a raw socket client. */
import net from 'node:net'
import { pino } from 'pino'
import type { Readable } from 'node:stream'
import { LmtpServer, type LmtpServerOptions, type ServerObserver } from '../../src/lmtp/server.js'
import type { Envelope, LmtpHandler } from '../../src/lmtp/types.js'
import { reply, type Reply } from '../../src/lmtp/reply.js'

export interface Received {
  envelope: Envelope
  body: Buffer
  error?: Error
}

export const silent = pino({ level: 'silent' })

export async function readAll(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const chunk of stream) parts.push(chunk as Buffer)
  return Buffer.concat(parts)
}

/** A handler that reads the whole message and accepts every recipient. */
export function acceptingHandler(received: Received[]): LmtpHandler {
  return {
    async data(envelope, message) {
      try {
        const body = await readAll(message)
        received.push({ envelope, body })
        return envelope.recipients.map((r): Reply => reply(250, '2.0.0', `<${r.address}> delivered`))
      } catch (err) {
        received.push({ envelope, body: Buffer.alloc(0), error: err as Error })
        throw err
      }
    },
  }
}

export interface TestServer {
  server: LmtpServer
  port: number
  received: Received[]
}

export const defaultOptions: LmtpServerOptions = {
  hostname: 'lmtp.test',
  domains: ['example.com', 'example.org'],
  maxMessageSize: 1024 * 1024,
  maxRecipients: 50,
  maxConnections: 100,
  idleTimeoutMs: 10_000,
  dataTimeoutMs: 10_000,
}

export async function startServer(
  t: { teardown: (fn: () => unknown) => void },
  handler?: LmtpHandler | ((received: Received[]) => LmtpHandler),
  options: Partial<LmtpServerOptions> = {},
  observer?: ServerObserver,
): Promise<TestServer> {
  const received: Received[] = []
  const h = typeof handler === 'function' ? handler(received) : (handler ?? acceptingHandler(received))
  const server = new LmtpServer({ ...defaultOptions, ...options }, h, silent, observer)
  const port = (await server.listen({ host: '127.0.0.1', port: 0 })) as number
  t.teardown(() => server.close(100))
  return { server, port, received }
}

export interface ConverseOptions {
  /** Write the input in pieces of this many bytes, yielding between writes. */
  pieceSize?: number
  /** Give up after this long (the server should have closed by then). */
  timeoutMs?: number
}

/**
 * Connects, writes `input` (after the greeting), and returns everything the server wrote until it
 * closed the connection.
 */
export async function converse(port: number, input: string | Buffer, opts: ConverseOptions = {}): Promise<string> {
  const data = typeof input === 'string' ? Buffer.from(input, 'utf8') : input
  const socket = net.connect({ port, host: '127.0.0.1', noDelay: true })
  const chunks: Buffer[] = []
  socket.on('data', (c: Buffer) => chunks.push(c))
  const closed = new Promise<void>((resolve, reject) => {
    socket.on('close', () => resolve())
    socket.on('error', reject)
  })
  await new Promise<void>((resolve) => socket.once('data', () => resolve()))
  const piece = opts.pieceSize ?? data.length
  for (let i = 0; i < data.length; i += Math.max(1, piece)) {
    socket.write(data.subarray(i, i + Math.max(1, piece)))
    if (piece < data.length) await new Promise((r) => setImmediate(r))
  }
  let timer: NodeJS.Timeout | undefined
  await Promise.race([
    closed,
    new Promise<void>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`server did not close; got: ${Buffer.concat(chunks).toString()}`)), opts.timeoutMs ?? 10_000)
    }),
  ]).finally(() => {
    clearTimeout(timer)
    socket.destroy()
  })
  return Buffer.concat(chunks).toString('utf8')
}

/** Reply lines without the greeting, as `code enhanced` prefixes (the first two words). */
export function codes(output: string): string[] {
  return output
    .split('\r\n')
    .filter((l) => l !== '')
    .slice(1)
    .filter((l) => l[3] !== '-')
    .map((l) =>
      l
        .split(' ')
        .slice(0, l.startsWith('354') || /^\d{3} \D/.test(l) ? 1 : 2)
        .join(' '),
    )
}
