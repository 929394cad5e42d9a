/**
 * Benchmark server: our LmtpServer with a handler that reads every message to its end and
 * discards it. Runs in its own process; prints `{"port":N,"pid":N}` once listening and closes
 * cleanly on SIGTERM (so `--cpu-prof` can write its profile). With `--tls cert key` it offers
 * STARTTLS with that certificate.
 *
 * Usage: node node_modules/.cache/lmtp-bench/build/bench/servers/ours.js [maxMessageSize] [--tls cert key] (compiled by bench/lmtp.ts)
 */
import { finished } from 'node:stream/promises'
import { LmtpServer } from '../../src/lmtp/server.js'
import { reply, type Reply } from '../../src/lmtp/reply.js'
import type { LmtpHandler } from '../../src/lmtp/types.js'
import { createLogger } from '../../src/logger.js'

const args = process.argv.slice(2)
const tlsAt = args.indexOf('--tls')
const tls = tlsAt === -1 ? null : { certFile: args[tlsAt + 1]!, keyFile: args[tlsAt + 2]!, clientCaFile: null, clientCert: 'off' as const, required: false }
const positional = tlsAt === -1 ? args : args.slice(0, tlsAt)
const maxMessageSize = Number(positional[0] ?? 64 * 1024 * 1024)
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
    tls,
  },
  discard,
  createLogger('silent'),
)

const port = await server.listen({ host: '127.0.0.1', port: 0 })
process.stdout.write(JSON.stringify({ port, pid: process.pid }) + '\n')
process.on('SIGTERM', () => {
  void server.close(1000).then(() => process.exit(0))
})
