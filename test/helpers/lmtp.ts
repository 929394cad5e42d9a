/** Test helpers: a real LMTP server (src/lmtp only) on an ephemeral port. The client is in lmtp-client.ts. */
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

/** Older names, kept for tests written against them: the client lives in lmtp-client.ts. */
export { converse, codes, type ConverseOptions } from './lmtp-client.js'
