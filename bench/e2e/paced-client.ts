/**
 * Latency probe for the end-to-end benchmark: S LMTP sessions send 10 KB messages at a fixed total
 * rate and measure, per message, the time from writing the end of the data to reading the last
 * recipient's reply. Prints one JSON line: { sent, failed, latenciesMs: number[] }.
 *
 * argv: port rate sessions recipients seconds
 */
import net from 'node:net'

const [port, rate, sessions, recipients, seconds] = process.argv.slice(2).map(Number) as [number, number, number, number, number]
const body = 'Subject: bench\r\n\r\n' + ('x'.repeat(78) + '\r\n').repeat(126) // ~10 KB
const rcptLines = Array.from({ length: recipients }, (_, i) => `RCPT TO:<r${i}@example.com>\r\n`).join('')

interface Waiter {
  lines: number
  resolve: (lines: string[]) => void
}

async function session(index: number, start: number, interval: number, count: number, latencies: number[], failures: { n: number }): Promise<void> {
  const socket = net.connect({ port, host: '127.0.0.1', noDelay: true })
  let buffer = ''
  const received: string[] = []
  let waiter: Waiter | null = null
  const check = (): void => {
    if (waiter && received.length >= waiter.lines) {
      const w = waiter
      waiter = null
      w.resolve(received.splice(0, w.lines))
    }
  }
  socket.on('data', (c: Buffer) => {
    buffer += c.toString('latin1')
    let i: number
    while ((i = buffer.indexOf('\r\n')) !== -1) {
      const line = buffer.slice(0, i)
      buffer = buffer.slice(i + 2)
      if (line[3] !== '-') received.push(line)
    }
    check()
  })
  const replies = (lines: number): Promise<string[]> =>
    new Promise((resolve) => {
      waiter = { lines, resolve }
      check()
    })
  await replies(1)
  socket.write('LHLO bench.test\r\n')
  await replies(1)
  for (let k = 0; k < count; k++) {
    const due = start + index * (interval / sessions) + k * interval
    const wait = due - performance.now()
    if (wait > 0) await new Promise((r) => setTimeout(r, wait))
    socket.write(`MAIL FROM:<s@bench.test>\r\n${rcptLines}DATA\r\n`)
    const pre = await replies(2 + recipients)
    if (!pre[pre.length - 1]!.startsWith('354')) {
      failures.n++
      socket.write('RSET\r\n')
      await replies(1)
      continue
    }
    socket.write(body + '.\r\n')
    const t0 = performance.now()
    const finals = await replies(recipients)
    latencies.push(performance.now() - t0)
    if (!finals.every((l) => l.startsWith('250'))) failures.n++
  }
  socket.end('QUIT\r\n')
}

const perSession = Math.max(1, Math.round((rate * seconds) / sessions))
const interval = (1000 * sessions) / rate // ms between messages of one session
const latencies: number[] = []
const failures = { n: 0 }
const start = performance.now() + 100
await Promise.all(Array.from({ length: sessions }, (_, i) => session(i, start, interval, perSession, latencies, failures)))
process.stdout.write(JSON.stringify({ sent: latencies.length, failed: failures.n, latenciesMs: latencies }) + '\n')
