import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'
import { REDIS_URL, routesFile, startApp } from '../helpers/app.js'
import { converse } from '../helpers/lmtp-client.js'
import { webhook } from '../helpers/webhook.js'

const LHLO = 'LHLO mta.test\r\n'

function mimeWithAttachments(files: { name: string; content: Buffer }[]): string {
  const boundary = 'b-' + randomBytes(8).toString('hex')
  let out = `From: a@x.test\r\nTo: big@example.com\r\nSubject: big\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="${boundary}"\r\n\r\n`
  out += `--${boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nsee attached\r\n`
  for (const f of files) {
    const b64 = f.content.toString('base64').replace(/.{76}/g, '$&\r\n')
    out += `--${boundary}\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="${f.name}"\r\nContent-Transfer-Encoding: base64\r\n\r\n${b64}\r\n`
  }
  return out + `--${boundary}--\r\n`
}

t.test('a 20 MB message with attachments arrives intact', async (t) => {
  const files = [
    { name: 'one.bin', content: randomBytes(7 * 1024 * 1024) },
    { name: 'two.bin', content: randomBytes(7 * 1024 * 1024) },
  ]
  const mime = mimeWithAttachments(files)
  t.ok(mime.length > 19 * 1024 * 1024, `message is ${(mime.length / 1048576).toFixed(1)} MiB`)
  const hook = await webhook(t, 200)
  const file = routesFile(t, `routes:\n  - { id: big, match: "big@example.com", url: "${hook.url}", maxInlineAttachmentBytes: 16MiB, timeout: 60s }\n`)
  const { lmtpPort } = await startApp(t, { ROUTES_FILE: file, LMTP_MAX_MESSAGE_SIZE: '30MiB', REPLY_TIMEOUT: '60s' })
  const out = await converse(lmtpPort!, LHLO + 'MAIL FROM:<a@x.test>\r\nRCPT TO:<big@example.com>\r\nDATA\r\n' + mime + '.\r\nQUIT\r\n', { timeoutMs: 60_000 })
  t.match(out, /\r\n250 2\.0\.0 <big@example\.com> delivered/)
  t.equal(hook.requests.length, 1)
  const payload = JSON.parse(hook.requests[0]!.body.toString('utf8'))
  t.equal(payload.message.attachments.length, 2)
  for (const [i, f] of files.entries()) {
    const a = payload.message.attachments[i]
    const expected = createHash('sha256').update(f.content).digest('hex')
    t.equal(a.filename, f.name)
    t.equal(a.size, f.content.length)
    t.equal(a.sha256, expected, `${f.name}: sha256 in the payload`)
    t.equal(createHash('sha256').update(Buffer.from(a.content, 'base64')).digest('hex'), expected, `${f.name}: content intact`)
  }
})

t.test('a message to 1,000 recipients is stored once', async (t) => {
  const body = 'Subject: many\r\n\r\n' + 'x'.repeat(76).concat('\r\n').repeat(2000) // ~156 KB
  let measured = 0
  let release: () => void = () => {}
  const released = new Promise<void>((r) => (release = r))
  let prefixOf = ''
  const redis = new Redis(REDIS_URL)
  t.teardown(() => redis.quit())
  const hook = await webhook(t, (_req, _b, res, n) => {
    if (n === 1) {
      // While the first delivery is in flight every job exists: measure what the transaction costs.
      void (async () => {
        let cursor = '0'
        do {
          const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefixOf}:*`, 'COUNT', 1000)
          cursor = next
          for (const k of keys) measured += Number(await redis.memory('USAGE', k))
        } while (cursor !== '0')
        release()
      })()
      void released.then(() => res.end())
    } else void released.then(() => res.end())
  })
  const file = routesFile(t, `routes:\n  - { id: all, match: "*@example.com", url: "${hook.url}" }\n`)
  const started = await startApp(t, { ROUTES_FILE: file, LMTP_MAX_RECIPIENTS: '1000', REPLY_TIMEOUT: '60s', WORKER_CONCURRENCY: '16' })
  prefixOf = started.prefix
  const rcpts = Array.from({ length: 1000 }, (_, i) => `user${i}@example.com`)
  const out = await converse(
    started.lmtpPort!,
    LHLO + 'MAIL FROM:<a@x.test>\r\n' + rcpts.map((r) => `RCPT TO:<${r}>\r\n`).join('') + 'DATA\r\n' + body + '.\r\nQUIT\r\n',
    { timeoutMs: 60_000 },
  )
  const delivered = out.split('\r\n').filter((l) => /^250 2\.0\.0 <user\d+@example\.com> delivered$/.test(l))
  t.equal(delivered.length, 1000, 'every recipient delivered, each with its own reply')
  t.equal(hook.requests.length, 1000)
  t.ok(measured > body.length, `the message is in Redis (${measured} bytes in all)`)
  t.ok(
    measured < body.length * 3 + 1000 * 2048,
    `Redis holds ${measured} bytes for a ${body.length}-byte message to 1000 recipients: the message is not copied per recipient`,
  )
})
