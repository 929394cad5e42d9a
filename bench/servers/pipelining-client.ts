/**
 * Benchmark load generator that pipelines, as Postfix's own LMTP client does: MAIL FROM, every
 * RCPT TO and DATA go out in one write; once their replies are in, the message and its final dot
 * in one write; then one reply per recipient. (smtp-source cannot pipeline, so under it every
 * command costs a full round trip.) Runs in its own process; prints messages per second. With
 * `starttls` as the last argument each session does STARTTLS after its first LHLO, as Postfix with
 * `lmtp_tls_security_level = encrypt` does, and sends LHLO again inside TLS.
 *
 * Usage: node node_modules/.cache/lmtp-bench/build/bench/servers/pipelining-client.js port sessions messages recipients size [starttls]
 */
import net from 'node:net'
import tls from 'node:tls'

const starttls = process.argv[7] === 'starttls'
const [port, sessions, messages, recipients, size] = process.argv.slice(2, 7).map(Number) as [number, number, number, number, number]
for (const [name, v] of Object.entries({ port, sessions, messages, recipients, size })) {
  if (!Number.isInteger(v) || v < 1) throw new Error(`${name}: expected a positive integer, got ${v}`)
}

const line = 'x'.repeat(78) + '\r\n'
const message = Buffer.from('Subject: bench\r\n\r\n' + line.repeat(Math.ceil(size / line.length)) + '.\r\n')
let rcpts = ''
for (let i = 0; i < recipients; i++) rcpts += `RCPT TO:<${i}rcpt@example.com>\r\n`
const envelope = Buffer.from(`MAIL FROM:<sender@example.org>\r\n${rcpts}DATA\r\n`)

let left = messages

/** Counts the final lines of complete replies in `text`. */
function finalReplies(text: string): number {
  let n = 0
  for (let i = 0; ;) {
    const end = text.indexOf('\r\n', i)
    if (end === -1) return n
    if (text[i + 3] === ' ') n++
    i = end + 2
  }
}

function session(): Promise<void> {
  return new Promise((resolve, reject) => {
    let socket: net.Socket = net.connect({ port, host: '127.0.0.1', noDelay: true })
    let received = ''
    let expected = 1
    let step: 'greeting' | 'starttls' | 'lhlo' | 'envelope' | 'message' | 'quit' = 'greeting'
    const send = (data: string | Buffer, replies: number, next: typeof step): void => {
      received = ''
      expected = replies
      step = next
      socket.write(data)
    }
    const nextMessage = (): void => {
      if (left <= 0) return send('QUIT\r\n', 1, 'quit')
      left--
      send(envelope, recipients + 2, 'envelope')
    }
    const onData = (chunk: Buffer): void => {
      received += chunk.toString('latin1')
      if (finalReplies(received) < expected) return
      if (!/^[23]/.test(received) || /\r\n[45]/.test(received)) return reject(new Error(`unexpected reply: ${received}`))
      if (step === 'greeting') send(starttls ? 'LHLO bench.test\r\nSTARTTLS\r\n' : 'LHLO bench.test\r\n', starttls ? 2 : 1, starttls ? 'starttls' : 'lhlo')
      else if (step === 'starttls') {
        socket.removeListener('data', onData)
        socket = tls.connect({ socket, rejectUnauthorized: false }, () => send('LHLO bench.test\r\n', 1, 'lhlo'))
        socket.on('data', onData)
        socket.on('error', reject)
      } else if (step === 'lhlo' || step === 'message') nextMessage()
      else if (step === 'envelope') send(message, recipients, 'message')
      else socket.end()
    }
    socket.on('data', onData)
    socket.on('error', reject)
    socket.on('close', () => resolve())
  })
}

const started = process.hrtime.bigint()
await Promise.all(Array.from({ length: sessions }, () => session()))
const seconds = Number(process.hrtime.bigint() - started) / 1e9
process.stdout.write(`${messages / seconds}\n`)
