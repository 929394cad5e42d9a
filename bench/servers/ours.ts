/**
 * Benchmark server: our LmtpServer with a handler that reads every message to its end and
 * discards it. Runs in its own process; prints `{"port":N,"pid":N}` once listening and closes
 * cleanly on SIGTERM (so `--cpu-prof` can write its profile).
 *
 * Usage: node node_modules/.cache/lmtp-bench/build/bench/servers/ours.js [maxMessageSize] (compiled by bench/lmtp.ts)
 */
import { finished } from 'node:stream/promises'
import { LmtpServer } from '../../src/lmtp/server.js'
import { reply, type Reply } from '../../src/lmtp/reply.js'
import type { LmtpHandler } from '../../src/lmtp/types.js'
import { createLogger } from '../../src/logger.js'

const maxMessageSize = Number(process.argv[2] ?? 64 * 1024 * 1024)
const delivered: Reply = reply(250, '2.0.0', 'delivered')

const discard: LmtpHandler = {
  async data(envelope, message) {
    message.resume()
    await finished(message)
    return envelope.recipients.map(() => delivered)
  },
}

const server = new LmtpServer(
  {
    hostname: 'bench.test',
    domains: ['*'],
    maxMessageSize,
    maxRecipients: 1000,
    maxConnections: 10_000,
    idleTimeoutMs: 120_000,
    dataTimeoutMs: 120_000,
  },
  discard,
  createLogger('silent'),
)

const port = await server.listen({ host: '127.0.0.1', port: 0 })
process.stdout.write(JSON.stringify({ port, pid: process.pid }) + '\n')
process.on('SIGTERM', () => {
  void server.close(1000).then(() => process.exit(0))
})
