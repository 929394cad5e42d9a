/**
 * Benchmark peer: nodemailer's smtp-server in LMTP mode, discarding every message (the stream is
 * read to its end, then every recipient is accepted). Runs in its own process; prints
 * `{"port":N,"pid":N}` once listening and closes on SIGTERM.
 *
 * Usage: node node_modules/.cache/lmtp-bench/build/bench/servers/smtp-server.js [maxMessageSize] (compiled by bench/lmtp.ts)
 */
import { SMTPServer } from 'smtp-server'

const size = Number(process.argv[2] ?? 64 * 1024 * 1024)

const server = new SMTPServer({
  lmtp: true,
  name: 'bench.test',
  size,
  authOptional: true,
  disabledCommands: ['AUTH', 'STARTTLS'],
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
