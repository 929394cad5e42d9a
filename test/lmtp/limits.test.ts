/**
 * Limits, timeouts, graceful close and handler misbehaviour, over real sockets. Every transcript the
 * tests collect is also checked line by line: CRLF endings, at most 512 octets, and an enhanced
 * status code of the reply's class on every 2xx/4xx/5xx reply (except the greeting and LHLO).
 */
import t from 'tap'
import net from 'node:net'
import { once } from 'node:events'
import type { Readable } from 'node:stream'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { readAll, startServer, type Received } from '../helpers/lmtp.js'
import { reply, type Reply } from '../../src/lmtp/reply.js'
import type { Envelope, LmtpHandler } from '../../src/lmtp/types.js'
import { isAppError } from '../../src/errors.js'
import { Metrics } from '../../src/metrics.js'
import { blocks, converse, LmtpClient as Client, summary } from '../helpers/lmtp-client.js'
import { until } from '../helpers/until.js'

const HOST = 'lmtp.test'

/** What the checks need of a tap test. */
interface Test {
  strictSame(found: unknown, wanted: unknown, message: string): boolean
}

/**
 * The wire rules for a whole transcript: every line ends CRLF and holds no other CR or LF, is at
 * most 512 octets with its CRLF, starts with a code; every reply but the greeting, the LHLO reply
 * and 354 has on each line an enhanced code whose class is the reply's class.
 */
function checkTranscript(t: Test, raw: string, what: string): void {
  const problems: string[] = []
  if (raw.length > 0 && !raw.endsWith('\r\n')) problems.push('output does not end with CRLF')
  const lines = raw.split('\r\n').slice(0, -1)
  lines.forEach((line, i) => {
    if (/[\r\n]/.test(line)) problems.push(`line ${i} holds a bare CR or LF: ${JSON.stringify(line)}`)
    if (Buffer.byteLength(line) + 2 > 512) problems.push(`line ${i} is ${Buffer.byteLength(line) + 2} octets`)
    if (!/^[2-5]\d\d[ -]/.test(line)) problems.push(`line ${i} does not start with a reply code: ${JSON.stringify(line)}`)
  })
  blocks(raw).forEach((block, i) => {
    const code = block[0]!.slice(0, 3)
    const isGreeting = i === 0 && code === '220'
    const isLhlo = code === '250' && block[0]!.slice(4) === HOST
    if (isGreeting || isLhlo || code[0] === '3') return
    for (const line of block) {
      if (line.slice(0, 3) !== code) problems.push(`reply ${i} mixes codes: ${JSON.stringify(block)}`)
      const m = /^\d{3}[ -]([245])\.\d{1,3}\.\d{1,3}( |$)/.exec(line)
      if (!m) problems.push(`reply ${i} line without enhanced code: ${JSON.stringify(line)}`)
      else if (m[1] !== code[0]) problems.push(`reply ${i} enhanced class ${m[1]} differs from ${code}: ${JSON.stringify(line)}`)
    }
  })
  t.strictSame(problems, [], `${what}: every reply line is well formed`)
}

/** A handler that records what it receives; `settled` resolves when a data() call ends. */
function recording(): { handler: (received: Received[]) => LmtpHandler; settled: () => Promise<Received> } {
  let waiting: ((r: Received) => void) | null = null
  const queue: Received[] = []
  const deliver = (r: Received): void => {
    if (waiting) {
      const w = waiting
      waiting = null
      w(r)
    } else queue.push(r)
  }
  return {
    handler: (received) => ({
      async data(envelope: Envelope, message: Readable) {
        try {
          const body = await readAll(message)
          const r = { envelope, body }
          received.push(r)
          deliver(r)
          return envelope.recipients.map((x): Reply => reply(250, '2.0.0', `<${x.address}> delivered`))
        } catch (err) {
          const r = { envelope, body: Buffer.alloc(0), error: err as Error }
          received.push(r)
          deliver(r)
          throw err
        }
      },
    }),
    settled: () => (queue.length > 0 ? Promise.resolve(queue.shift()!) : new Promise((resolve) => (waiting = resolve))),
  }
}

const LHLO = 'LHLO client.test\r\n'
const TXN = 'MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\n'

t.test('size limit while the DATA streams: 552 5.3.4 for every recipient, nothing delivered', async (t) => {
  const rec = recording()
  const { port, received } = await startServer(t, rec.handler, { maxMessageSize: 64 * 1024 })
  const c = await Client.connect(port)
  t.strictSame(await c.send(LHLO + TXN + 'DATA\r\n', 5), ['250', '250 2.1.0', '250 2.1.5', '250 2.1.5', '354'])
  const line = 'x'.repeat(998) + '\r\n'
  await c.write(line.repeat(100)) // 100 000 octets, no end marker yet
  const r = await rec.settled()
  t.ok(isAppError(r.error, 'LMTP_ERR_SIZE'), `the handler's stream errors before the end of the data (${String(r.error)})`)
  await c.write(line.repeat(50))
  t.strictSame(await c.send('.\r\nNOOP\r\n', 3), ['552 5.3.4', '552 5.3.4', '250 2.0.0'], 'the session is still in step')
  t.strictSame(await c.send(TXN + 'DATA\r\nsmall\r\n.\r\nQUIT\r\n', 7), ['250 2.1.0', '250 2.1.5', '250 2.1.5', '354', '250 2.0.0', '250 2.0.0', '221 2.0.0'])
  await c.closed
  t.strictSame(
    received.map((x) => (x.error ? 'error' : x.body.toString())),
    ['error', 'small\r\n'],
    'only the small message is delivered',
  )
  checkTranscript(t, c.output, 'size limit, DATA')
})

t.test('size limit with BDAT: one chunk over the limit, and several chunks adding up', async (t) => {
  const rec = recording()
  const { port, received } = await startServer(t, rec.handler, { maxMessageSize: 64 * 1024 })
  const c = await Client.connect(port)
  await c.send(LHLO + TXN, 4)
  await c.write(`BDAT 100000 LAST\r\n` + 'y'.repeat(70_000))
  const r = await rec.settled()
  t.ok(isAppError(r.error, 'LMTP_ERR_SIZE'), 'the stream errors while the chunk is still arriving')
  t.strictSame(await c.send('y'.repeat(30_000) + 'NOOP\r\n', 3), ['552 5.3.4', '552 5.3.4', '250 2.0.0'])

  t.strictSame(await c.send(TXN + 'BDAT 40000\r\n' + 'z'.repeat(40_000), 4), ['250 2.1.0', '250 2.1.5', '250 2.1.5', '250 2.0.0'])
  t.strictSame(await c.send('BDAT 40000\r\n' + 'z'.repeat(40_000), 1), ['552 5.3.4'], 'the chunk that passes the limit is refused')
  t.ok(isAppError((await rec.settled()).error, 'LMTP_ERR_SIZE'))
  t.strictSame(await c.send('BDAT 10 LAST\r\n0123456789', 2), ['552 5.3.4', '552 5.3.4'])
  t.strictSame(await c.send('QUIT\r\n', 1), ['221 2.0.0'])
  await c.closed
  t.equal(received.filter((x) => !x.error).length, 0, 'nothing delivered')
  checkTranscript(t, c.output, 'size limit, BDAT')
})

t.test('a client that disconnects mid-data delivers nothing', async (t) => {
  for (const mode of ['DATA', 'BDAT']) {
    await t.test(mode, async (t) => {
      const rec = recording()
      const { port, server, received } = await startServer(t, rec.handler)
      const c = await Client.connect(port)
      await c.send(LHLO + TXN + (mode === 'DATA' ? 'DATA\r\n' : ''), mode === 'DATA' ? 5 : 4)
      await c.write(mode === 'DATA' ? 'Subject: cut\r\n\r\npartial line' : 'BDAT 5000 LAST\r\npartial')
      c.destroy()
      const r = await rec.settled()
      t.ok(isAppError(r.error, 'LMTP_ERR_ABORTED'), `stream error LMTP_ERR_ABORTED (${String(r.error)})`)
      await until('the server to drop the connection', () => server.connections === 0)
      t.equal(received.filter((x) => !x.error).length, 0, 'nothing delivered')
    })
  }
})

t.test('too many connections: 421 4.7.0, then room again once a session ends', async (t) => {
  const { port, server } = await startServer(t, undefined, { maxConnections: 2 })
  const a = await Client.connect(port)
  const b = await Client.connect(port)
  const refused = await Client.connect(port)
  await refused.closed
  t.strictSame(summary(refused.output), ['421 4.7.0'])
  checkTranscript(t, refused.output, 'refused connection')
  await a.send('QUIT\r\n', 1)
  await a.closed
  await until('room for a connection', () => server.connections < 2)
  const d = await Client.connect(port)
  t.strictSame(summary(d.output), ['220'], 'a new connection is served')
  t.strictSame(await d.send(LHLO + 'QUIT\r\n', 2), ['250', '221 2.0.0'])
  b.destroy()
})

t.test('idle session: 421 4.4.2 and the connection closes', async (t) => {
  const { port } = await startServer(t, undefined, { idleTimeoutMs: 150 })
  const c = await Client.connect(port)
  await c.send(LHLO + 'MAIL FROM:<a@example.org>\r\n', 2)
  await c.closed
  t.strictSame(summary(c.output), ['220', '250', '250 2.1.0', '421 4.4.2'])
  checkTranscript(t, c.output, 'idle timeout')
})

t.test('a data stream that stops: 421 4.4.2 and the handler sees LMTP_ERR_ABORTED', async (t) => {
  const rec = recording()
  const { port, received } = await startServer(t, rec.handler, { dataTimeoutMs: 150 })
  const c = await Client.connect(port)
  await c.send(LHLO + TXN + 'DATA\r\n', 5)
  await c.write('Subject: stalled\r\n\r\nand then nothing')
  await c.closed
  t.strictSame(summary(c.output).slice(-1), ['421 4.4.2'])
  t.ok(isAppError((await rec.settled()).error, 'LMTP_ERR_ABORTED'))
  t.equal(received.filter((x) => !x.error).length, 0)
  checkTranscript(t, c.output, 'data timeout')
})

t.test('a slow but steady data stream is not cut off by the data timeout', async (t) => {
  const rec = recording()
  const dataTimeoutMs = 300
  const { port } = await startServer(t, rec.handler, { dataTimeoutMs, idleTimeoutMs: 300 })
  const c = await Client.connect(port)
  await c.send(LHLO + TXN + 'DATA\r\n', 5)
  const pieces = 30 // 30 x 50 ms: five times the data timeout in total
  let sent = ''
  for (let i = 0; i < pieces; i++) {
    const piece = `line ${i}\r\n`
    sent += piece
    await c.write(piece)
    await new Promise((r) => setTimeout(r, 50))
  }
  t.strictSame(await c.send('.\r\n', 2), ['250 2.0.0', '250 2.0.0'])
  const r = await rec.settled()
  t.equal(r.body.toString(), sent, 'the whole slow message is delivered')
  t.strictSame(await c.send('QUIT\r\n', 1), ['221 2.0.0'])
  checkTranscript(t, c.output, 'slow data')
})

t.test('a 100 MiB command line without CRLF does not grow memory, then 500 5.5.2 and the session goes on (under LMTP_MAX_LINE_DISCARD)', async (t) => {
  const { port } = await startServer(t, undefined, { maxLineDiscard: 200 * 1024 * 1024 })
  const c = await Client.connect(port)
  await c.send(LHLO, 1)
  const chunk = Buffer.alloc(1024 * 1024, 0x61)
  chunk.write('NOOP ')
  // Collect garbage as we go so that what is measured is what the server keeps, not what the
  // collector has not reached yet.
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc') as () => void
  gc()
  const base = process.memoryUsage()
  let peakRss = base.rss
  let peakBuffers = base.arrayBuffers
  for (let i = 0; i < 100; i++) {
    await c.write(i === 0 ? chunk : chunk.fill(0x61))
    if (i % 8 === 7) gc()
    const m = process.memoryUsage()
    peakRss = Math.max(peakRss, m.rss)
    peakBuffers = Math.max(peakBuffers, m.arrayBuffers)
  }
  const MiB = 1024 * 1024
  t.ok(peakRss - base.rss < 64 * MiB, `RSS grew by ${((peakRss - base.rss) / MiB).toFixed(1)} MiB (bound 64 MiB)`)
  t.ok(peakBuffers - base.arrayBuffers < 64 * MiB, `array buffers grew by ${((peakBuffers - base.arrayBuffers) / MiB).toFixed(1)} MiB (bound 64 MiB)`)
  t.strictSame(await c.send('\r\nNOOP\r\nQUIT\r\n', 3), ['500 5.5.2', '250 2.0.0', '221 2.0.0'])
  await c.closed
  checkTranscript(t, c.output, 'long line')
})

/** The value of a counter in a Metrics registry. */
async function counter(metrics: Metrics, name: string, labels: Record<string, string> = {}): Promise<number> {
  const metric = (await metrics.registry.getMetricsAsJSON()).find((m) => m.name === name)
  const value = metric?.values.find((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x))
  return Number(value?.value ?? NaN)
}

t.test('a command line that never ends: past LMTP_MAX_LINE_DISCARD, 500 5.5.2 and 421 4.7.0 without waiting for an LF, counted in the metrics', async (t) => {
  const metrics = new Metrics({ processMetrics: false })
  const { port, server } = await startServer(t, undefined, { maxLineDiscard: 64 * 1024 }, metrics.lmtpObserver())
  const c = await Client.connect(port)
  await c.send(LHLO, 1)
  const chunk = Buffer.alloc(16 * 1024, 0x61)
  let written = 0
  let closed = false
  void c.closed.then(() => (closed = true))
  // No LF is ever sent: the server must end the session on its own once the cap is passed.
  while (!closed && written < 64 * 1024 * 1024) {
    await c.write(chunk).catch(() => {})
    written += chunk.length
    await new Promise((r) => setImmediate(r))
  }
  t.ok(closed, `the server closed the connection with no LF sent (${written} octets written)`)
  t.strictSame(summary(c.output), ['220', '250', '500 5.5.2', '421 4.7.0'])
  t.match(blocks(c.output)[3]![0], /^421 4\.7\.0 lmtp\.test command line too long, closing connection$/)
  checkTranscript(t, c.output, 'abandoned line')
  await until('the server to react', () => server.connections === 0)
  t.equal(await counter(metrics, 'lmtp_webhook_lmtp_lines_abandoned_total'), 1, 'lmtp_webhook_lmtp_lines_abandoned_total counts it')

  const ok = await converse(port, LHLO + 'NOOP ' + 'b'.repeat(10_000) + '\r\nNOOP\r\nQUIT\r\n')
  t.strictSame(summary(ok).slice(1), ['250', '500 5.5.2', '250 2.0.0', '221 2.0.0'], 'a long line under the cap: 500 5.5.2, and the session goes on')
  t.equal(await counter(metrics, 'lmtp_webhook_lmtp_lines_abandoned_total'), 1, 'and is not counted')
})

t.test('a client trickling an endless command line does not keep the connection past the idle timeout', async (t) => {
  const idleTimeoutMs = 400
  const { port, server } = await startServer(t, undefined, { idleTimeoutMs })
  const c = await Client.connect(port)
  await c.send(LHLO, 1)
  const started = Date.now()
  // One octet every 20 ms: never silent for long enough to hit the inactivity timer, never
  // enough octets to reach the discard cap. Without a deadline for the line, this goes on forever.
  let sent = 0
  let closed = false
  void c.closed.then(() => (closed = true))
  while (!closed && Date.now() - started < 20 * idleTimeoutMs) {
    await c.write(sent === 0 ? 'N' : 'x').catch(() => {})
    sent++
    await new Promise((r) => setTimeout(r, 20))
  }
  t.ok(closed, `the server closed the connection (after ${Date.now() - started} ms, ${sent} octets)`)
  t.strictSame(summary(c.output), ['220', '250', '421 4.4.2'], 'with the idle timeout reply')
  checkTranscript(t, c.output, 'trickled line')
  await until('the server to react', () => server.connections === 0)
  t.equal(server.connections, 0, 'the connection slot is free again')

  // A command split over several writes, within the timeout, is served as usual.
  const d = await Client.connect(port)
  await d.write('NO')
  await new Promise((r) => setTimeout(r, idleTimeoutMs / 4))
  t.strictSame(await d.send('OP\r\nQUIT\r\n', 2), ['250 2.0.0', '221 2.0.0'])
})

t.test('after the server has closed its side, a client that keeps sending and never closes is cut off', async (t) => {
  const { port, server } = await startServer(t)
  // allowHalfOpen: this client does not close when the server does, and goes on writing.
  const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true })
  let output = ''
  socket.setEncoding('latin1').on('data', (s: string) => (output += s))
  socket.on('error', () => {})
  const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()))
  await once(socket, 'connect')
  await until('the server to react', () => output.includes('\r\n'))
  socket.write('QUIT\r\n')
  await until('the server to react', () => output.includes('221 '))
  const started = Date.now()
  let done = false
  void closed.then(() => (done = true))
  // Never silent for long: an inactivity timer alone would never fire.
  while (!done && Date.now() - started < 15_000) {
    socket.write('x')
    await new Promise((r) => setTimeout(r, 100))
  }
  t.ok(done, `the server let go of the connection (after ${Date.now() - started} ms)`)
  t.ok(Date.now() - started < 10_000, 'within the linger time (5 s) and some slack')
  await until('the server to react', () => server.connections === 0)
  t.equal(server.connections, 0)
})

t.test('graceful close', async (t) => {
  const rec = recording()
  const { port, server, received } = await startServer(t, rec.handler)
  const idle = await Client.connect(port)
  await idle.send(LHLO, 1)
  const inData = await Client.connect(port)
  await inData.send(LHLO + TXN + 'DATA\r\n', 5)
  await inData.write('Subject: in flight\r\n\r\nfirst half\r\n')
  const beforeData = await Client.connect(port)
  await beforeData.send(LHLO + TXN, 4)

  const closing = server.close(30_000)
  await idle.closed
  t.strictSame(summary(idle.output), ['220', '250', '421 4.3.2'], 'an idle session gets 421 4.3.2 at once')

  // New connections are refused: either the listener is gone or they get 421.
  const late = await Client.open(port)
  t.ok(
    late === null || late.greeting?.[0]?.startsWith('421 4.3.2'),
    `a new connection is refused (${late === null ? 'ECONNREFUSED' : JSON.stringify(late.output)})`,
  )
  late?.destroy()

  t.strictSame(await inData.send('second half\r\n.\r\n', 3), ['250 2.0.0', '250 2.0.0', '421 4.3.2'], 'the transaction in DATA finishes, then 421')
  t.strictSame(
    await beforeData.send('DATA\r\nlate body\r\n.\r\n', 4),
    ['354', '250 2.0.0', '250 2.0.0', '421 4.3.2'],
    'the transaction before DATA finishes, then 421',
  )
  await Promise.all([inData.closed, beforeData.closed])
  await closing
  t.strictSame(received.map((r) => r.body.toString()).sort(), ['Subject: in flight\r\n\r\nfirst half\r\nsecond half\r\n', 'late body\r\n'])
  for (const [name, c] of [
    ['idle', idle],
    ['in DATA', inData],
    ['before DATA', beforeData],
  ] as const)
    checkTranscript(t, c.output, name)
})

t.test('graceful close: the deadline ends a stalled transaction with 421 4.3.2 and aborts its stream', async (t) => {
  const rec = recording()
  const { port, server, received } = await startServer(t, rec.handler)
  const c = await Client.connect(port)
  await c.send(LHLO + TXN + 'DATA\r\n', 5)
  await c.write('Subject: stalled\r\n\r\n')
  await server.close(100)
  await c.closed
  t.strictSame(summary(c.output).slice(-1), ['421 4.3.2'])
  t.ok(isAppError((await rec.settled()).error, 'LMTP_ERR_ABORTED'))
  t.equal(received.filter((x) => !x.error).length, 0)
})

/** A handler whose data() misbehaves in the way the sender's local part names. */
const misbehaving: LmtpHandler = {
  recipient({ address }) {
    if (address.startsWith('throw@')) throw new Error('recipient check crashed')
    if (address.startsWith('three@')) return { reply: reply(354, undefined, 'go ahead') }
    if (address.startsWith('inject@')) return { reply: reply(550, '5.1.1', 'no\r\n250 2.1.5 smuggled') }
    if (address.startsWith('badtext@')) return { reply: reply(550, '5.1.1', ['no such user', 7 as unknown as string]) }
    return undefined
  },
  async data(envelope, message) {
    const mode = envelope.sender.address.split('@')[0]
    if (mode !== 'early') await readAll(message)
    const n = envelope.recipients.length
    const ok = (i: number): Reply => reply(250, '2.0.0', `<${envelope.recipients[i]!.address}> delivered`)
    switch (mode) {
      case 'few':
        return [ok(0)]
      case 'many':
        return Array.from({ length: n + 2 }, (_, i) => reply(250, '2.0.0', `reply ${i}`))
      case '3xx':
        return [reply(354, undefined, 'more please'), ok(1), reply(199, '2.0.0', 'nonsense')]
      case 'inject':
        return [
          reply(250, '2.0.0', 'ok\r\n250 2.0.0 injected\r\n'),
          reply(451, '4.3.0', 'line one\nline two\u0000\u0085end'),
          reply(550, '5.7.1', ['multi\r\nline', 'second']),
        ]
      case 'wrongclass':
        return [reply(550, '2.1.1', 'class mismatch'), reply(250, undefined, 'no enhanced code'), reply(451, '4.999.1', 'bad detail')]
      case 'long':
        return Array.from({ length: n }, () => reply(250, '2.0.0', 'é'.repeat(2000)))
      case 'throw':
        throw new Error('delivery crashed')
      case 'nonsense':
        return 'not a list' as unknown as Reply[]
      case 'badtext':
        return [reply(250, '2.0.0', ['ok', 42 as unknown as string]), ok(1), reply(250, '2.0.0', null as unknown as string)]
      case 'early':
        return Array.from({ length: n }, (_, i) => ok(i))
      default:
        return Array.from({ length: n }, (_, i) => ok(i))
    }
  },
}

t.test('handler misbehaviour: each recipient still gets exactly one well-formed reply', async (t) => {
  const { port } = await startServer(t, misbehaving)
  const three = 'RCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\nRCPT TO:<d@example.com>\r\n'
  // Larger than the message stream's buffer, so a handler that never reads meets backpressure.
  const body = 'DATA\r\nSubject: x\r\n\r\n' + 'body line\r\n'.repeat(20_000) + '.\r\n'
  const cases: [string, string[]][] = [
    ['few', ['250 2.0.0', '451 4.3.0', '451 4.3.0']],
    ['many', ['250 2.0.0', '250 2.0.0', '250 2.0.0']],
    ['3xx', ['451 4.3.0', '250 2.0.0', '451 4.3.0']],
    ['inject', ['250 2.0.0', '451 4.3.0', '550 5.7.1']],
    ['wrongclass', ['550 5.0.0', '250 2.0.0', '451 4.999.1']],
    ['long', ['250 2.0.0', '250 2.0.0', '250 2.0.0']],
    ['throw', ['451 4.3.0', '451 4.3.0', '451 4.3.0']],
    ['nonsense', ['451 4.3.0', '451 4.3.0', '451 4.3.0']],
    ['early', ['250 2.0.0', '250 2.0.0', '250 2.0.0']],
  ]
  for (const [mode, expect] of cases) {
    const out = await converse(port, `${LHLO}MAIL FROM:<${mode}@example.org>\r\n${three}${body}NOOP\r\nQUIT\r\n`)
    t.strictSame(summary(out).slice(7), [...expect, '250 2.0.0', '221 2.0.0'], `${mode}: ${out.slice(-600)}`)
    checkTranscript(t, out, mode)
    if (mode === 'inject') {
      const after = blocks(out).slice(7, 10)
      t.strictSame(
        after.map((b) => b.length),
        [1, 1, 2],
        'injected CR/LF never makes an extra reply line',
      )
      t.equal(after[0]![0], '250 2.0.0 ok 250 2.0.0 injected')
      t.equal(after[1]![0], '451 4.3.0 line one line two end')
    }
  }

  const rcpt = await converse(
    port,
    `${LHLO}MAIL FROM:<a@example.org>\r\nRCPT TO:<throw@example.com>\r\nRCPT TO:<three@example.com>\r\nRCPT TO:<inject@example.com>\r\nRCPT TO:<b@example.com>\r\n${body}QUIT\r\n`,
  )
  t.strictSame(
    summary(rcpt).slice(1),
    ['250', '250 2.1.0', '451 4.3.0', '451 4.3.0', '550 5.1.1', '250 2.1.5', '354', '250 2.0.0', '221 2.0.0'],
    'recipient callback: a throw and a 3xx become 451; only the accepted recipient gets a reply after the data',
  )
  t.match(blocks(rcpt)[5]![0], /^550 5\.1\.1 no 250 2\.1\.5 smuggled$/)
  checkTranscript(t, rcpt, 'recipient callback')
})

// Regression: a text array with a non-string line used to make formatReply throw, and the session
// was dropped after a single 451, leaving the other recipients without a reply.
t.test('handler misbehaviour: a reply text array holding a non-string', async (t) => {
  const { port } = await startServer(t, misbehaving)
  const out = await converse(
    port,
    `${LHLO}MAIL FROM:<badtext@example.org>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\nRCPT TO:<d@example.com>\r\nDATA\r\nx\r\n.\r\nNOOP\r\nQUIT\r\n`,
  )
  t.strictSame(summary(out).slice(7), ['451 4.3.0', '250 2.0.0', '451 4.3.0', '250 2.0.0', '221 2.0.0'], 'data(): one reply per recipient, session goes on')
  const rcpt = await converse(port, `${LHLO}MAIL FROM:<a@example.org>\r\nRCPT TO:<badtext@example.com>\r\nNOOP\r\nQUIT\r\n`)
  t.strictSame(summary(rcpt).slice(1), ['250', '250 2.1.0', '451 4.3.0', '250 2.0.0', '221 2.0.0'], 'recipient(): 451, session goes on')
})

t.test('too many protocol errors: 421 4.7.0 and the connection closes', async (t) => {
  const { port } = await startServer(t, undefined, { maxErrors: 5 })
  const out = await converse(port, LHLO + 'FOO\r\n'.repeat(10) + 'NOOP\r\n')
  t.strictSame(summary(out).slice(1), ['250', '500 5.5.1', '500 5.5.1', '500 5.5.1', '500 5.5.1', '500 5.5.1', '421 4.7.0'])
  checkTranscript(t, out, 'too many errors')
})

t.test('XFORWARD attributes reach the envelope, xtext-decoded, [UNAVAILABLE] dropped', async (t) => {
  const { port, received } = await startServer(t)
  const out = await converse(
    port,
    LHLO +
      'XFORWARD NAME=mx.example.net ADDR=192.0.2.10 PORT=2525\r\n' +
      'XFORWARD PROTO=ESMTP HELO=[UNAVAILABLE] IDENT=id+2Bone+3Dtwo SOURCE=REMOTE\r\n' +
      'MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\none\r\n.\r\n' +
      'MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\ntwo\r\n.\r\n' +
      'XFORWARD NAME=[TEMPUNAVAIL] ADDR=IPV6:2001:db8::1\r\n' +
      'MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nthree\r\n.\r\nQUIT\r\n',
  )
  t.strictSame(summary(out).slice(2, 4), ['250 2.0.0', '250 2.0.0'], 'both XFORWARD commands accepted')
  checkTranscript(t, out, 'xforward')
  const plain = (e: Envelope): object => JSON.parse(JSON.stringify(e.xforward)) as object
  t.equal(received.length, 3)
  t.strictSame(plain(received[0]!.envelope), {
    name: 'mx.example.net',
    addr: '192.0.2.10',
    port: '2525',
    proto: 'ESMTP',
    ident: 'id+one=two',
    source: 'REMOTE',
  })
  t.equal(received[0]!.envelope.xforward.helo, undefined)
  t.strictSame(plain(received[1]!.envelope), {}, 'attributes are reset after a transaction')
  t.strictSame(plain(received[2]!.envelope), { addr: 'IPV6:2001:db8::1' })
})
