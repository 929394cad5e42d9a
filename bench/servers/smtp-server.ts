/**
 * Benchmark peer: nodemailer's smtp-server in LMTP mode, discarding every message (the stream is
 * read to its end, then every recipient is accepted). Runs in its own process; prints
 * `{"port":N,"pid":N}` once listening and closes on SIGTERM. With `--tls cert key` it offers
 * STARTTLS with that certificate.
 *
 * Usage: node node_modules/.cache/lmtp-bench/build/bench/servers/smtp-server.js [maxMessageSize] [--tls cert key] (compiled by bench/lmtp.ts)
 */
import { readFileSync } from 'node:fs'
import { SMTPServer } from 'smtp-server'

const args = process.argv.slice(2)
const tlsAt = args.indexOf('--tls')
const positional = tlsAt === -1 ? args : args.slice(0, tlsAt)
const size = Number(positional[0] ?? 64 * 1024 * 1024)
const tls = tlsAt === -1 ? null : { cert: readFileSync(args[tlsAt + 1]!), key: readFileSync(args[tlsAt + 2]!) }

const server = new SMTPServer({
  lmtp: true,
  name: 'bench.test',
  size,
  authOptional: true,
  disabledCommands: tls === null ? ['AUTH', 'STARTTLS'] : ['AUTH'],
  ...(tls ?? {}),
  // No DNS: the benchmark only ever talks to loopback.
  disableReverseLookup: true,
  maxClients: 10_000,
  logger: false,
  onData(stream, _session, callback) {
    stream.on('end', () => callback())
    stream.resume()
  },
})

server.listen(0, '127.0.0.1', () => {
  const address = server.server.address()
  const port = typeof address === 'object' && address !== null ? address.port : 0
  process.stdout.write(JSON.stringify({ port, pid: process.pid }) + '\n')
})
process.on('SIGTERM', () => server.close(() => process.exit(0)))
