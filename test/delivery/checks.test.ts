import t from 'tap'
import { randomBytes } from 'node:crypto'
import { Webhook, WebhookVerificationError } from 'standardwebhooks'
import { capturedLogs } from '../helpers/logs.js'
import { loadConfig } from '../../src/config.js'
import { buildApp } from '../../src/app.js'
import { cleanRedis, prefix, REDIS_URL, routesFile, startApp } from '../helpers/app.js'
import { codes, converse } from '../helpers/lmtp-client.js'
import { webhook } from '../helpers/webhook.js'

t.test('the sender check at MAIL FROM: 2xx accepts, 4xx/5xx rejects, unavailable defers', async (t) => {
  const senders: string[] = []
  const check = await webhook(t, (_req, body, res) => {
    const { mailFrom } = JSON.parse(body.toString()) as { mailFrom: string }
    senders.push(mailFrom)
    res.statusCode = mailFrom.startsWith('ok') || mailFrom === '' ? 200 : mailFrom.startsWith('spam') ? 403 : 503
    res.end()
  })
  const hook = await webhook(t, 200)
  const file = routesFile(t, `routes:\n  - { id: all, match: "*@example.com", url: "${hook.url}" }\n`)
  const { lmtpPort } = await startApp(t, { ROUTES_FILE: file, SENDER_CHECK_URL: check.url })
  const out = await converse(
    lmtpPort!,
    'LHLO c.test\r\nMAIL FROM:<spam@x.test>\r\nMAIL FROM:<down@x.test>\r\nMAIL FROM:<ok@x.test>\r\nRSET\r\nMAIL FROM:<>\r\nQUIT\r\n',
  )
  t.strictSame(codes(out), ['250', '550 5.7.1', '451 4.3.0', '250 2.1.0', '250 2.0.0', '250 2.1.0', '221 2.0.0'])
  t.strictSame(senders, ['spam@x.test', 'down@x.test', 'ok@x.test', ''], 'the null sender is checked as empty')
})

t.test("a route's recipient check at RCPT: 2xx accepts, 404 is 550 5.1.1, 5xx or no answer is 451", async (t) => {
  const check = await webhook(t, (_req, body, res) => {
    const { rcptTo } = JSON.parse(body.toString()) as { rcptTo: string }
    res.statusCode = rcptTo.startsWith('known') ? 204 : rcptTo.startsWith('unknown') ? 404 : 500
    res.end()
  })
  const hook = await webhook(t, 200)
  const file = routesFile(t, `routes:\n  - { id: all, match: "*@example.com", url: "${hook.url}", recipientCheckUrl: "${check.url}" }\n`)
  const { lmtpPort } = await startApp(t, { ROUTES_FILE: file })
  const out = await converse(
    lmtpPort!,
    'LHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<known@example.com>\r\nRCPT TO:<unknown@example.com>\r\nRCPT TO:<flaky@example.com>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n',
  )
  t.strictSame(codes(out), ['250', '250 2.1.0', '250 2.1.5', '550 5.1.1', '451 4.3.0', '354', '250 2.0.0', '221 2.0.0'])
  t.equal(hook.requests.length, 1, 'only the accepted recipient is delivered')
})

t.test('secrets and credentials never reach the logs', async (t) => {
  const secret = 'whsec_' + Buffer.alloc(32, 9).toString('base64')
  const token = 'Bearer very-secret-credential-0123456789'
  const hook = await webhook(t, (_req, _body, res, n) => {
    res.statusCode = n === 1 ? 503 : 200 // a failed attempt logs too
    res.end()
  })
  const file = routesFile(
    t,
    `routes:\n  - { id: all, match: "*@example.com", url: "${hook.url}", secret: "${secret}", headers: { Authorization: "${token}" } }\n`,
  )
  const p = prefix()
  t.teardown(() => cleanRedis(p))
  const { log, text } = capturedLogs('trace')
  const config = loadConfig({
    REDIS_URL,
    REDIS_PREFIX: p,
    LMTP_HOST: '127.0.0.1',
    LMTP_PORT: '0',
    ADMIN_PORT: 'off',
    ROUTES_FILE: file,
    LMTP_DOMAINS: 'example.com',
    SHUTDOWN_DELAY: '0',
  })
  const app = await buildApp(config, log)
  const { lmtpPort } = await app.start()
  t.teardown(() => app.close())
  for (const rcpt of ['a@example.com', 'b@example.com']) {
    await converse(lmtpPort!, `LHLO c.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<${rcpt}>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n`)
  }
  t.equal(hook.requests.length, 2)
  t.match(text(), /webhook attempt/, 'attempts are logged')
  t.notOk(text().includes(secret.slice(6)), 'the signing secret is not in the logs')
  t.notOk(text().includes('very-secret-credential'), 'the Authorization header is not in the logs')
  t.notOk(text().includes(String(hook.requests[0]!.headers['webhook-signature']).slice(3, 30)), 'no signature is in the logs')
})

t.test('the sender and recipient checks are signed like deliveries, and unsigned without a secret', async (t) => {
  const senderSecret = `whsec_${randomBytes(32).toString('base64')}`
  const routeSecret = `whsec_${randomBytes(32).toString('base64')}`
  const seen: { path: string; body: Buffer; headers: Record<string, string> }[] = []
  const check = await webhook(t, (req, body, res) => {
    seen.push({ path: req.url ?? '', body, headers: req.headers as Record<string, string> })
    res.statusCode = 200
    res.end()
  })
  const hook = await webhook(t, 200)
  const file = routesFile(
    t,
    `routes:\n` +
      `  - { id: signed, match: "s@example.com", url: "${hook.url}", secrets: ["${routeSecret}"], recipientCheckUrl: "${check.origin}/rcpt-signed" }\n` +
      `  - { id: plain, match: "p@example.com", url: "${hook.url}", recipientCheckUrl: "${check.origin}/rcpt-plain" }\n`,
  )
  const { lmtpPort } = await startApp(t, { ROUTES_FILE: file, SENDER_CHECK_URL: `${check.origin}/sender`, SENDER_CHECK_SECRET: senderSecret })
  const out = await converse(lmtpPort!, 'LHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<s@example.com>\r\nRCPT TO:<p@example.com>\r\nRSET\r\nQUIT\r\n')
  t.strictSame(codes(out), ['250', '250 2.1.0', '250 2.1.5', '250 2.1.5', '250 2.0.0', '221 2.0.0'])
  const byPath = new Map(seen.map((s) => [s.path, s]))
  const sender = byPath.get('/sender')!
  const verified = new Webhook(senderSecret).verify(sender.body, sender.headers) as { type: string; mailFrom: string }
  t.match(verified, { type: 'sender-check', mailFrom: 'a@x.test' }, 'the sender check verifies with SENDER_CHECK_SECRET')
  const rcpt = byPath.get('/rcpt-signed')!
  t.ok(new Webhook(routeSecret).verify(rcpt.body, rcpt.headers), 'the recipient check verifies with the route secret')
  t.throws(() => new Webhook(senderSecret).verify(rcpt.body, rcpt.headers), WebhookVerificationError, 'and with no other')
  const plain = byPath.get('/rcpt-plain')!
  t.equal(plain.headers['webhook-signature'], undefined, 'a route without secrets: no signature')
  t.match(plain.headers['webhook-id'], /^chk_[A-Za-z0-9_-]{22}$/, 'but an id and a timestamp, as its deliveries')
  t.ok(Number(plain.headers['webhook-timestamp']) > 0)
  t.not(rcpt.headers['webhook-id'], sender.headers['webhook-id'], 'a new id per check')
})

t.test('the sender check without SENDER_CHECK_SECRET is unsigned', async (t) => {
  const check = await webhook(t, 200)
  const hook = await webhook(t, 200)
  const file = routesFile(t, `routes:\n  - { id: all, match: "*@example.com", url: "${hook.url}" }\n`)
  const { lmtpPort } = await startApp(t, { ROUTES_FILE: file, SENDER_CHECK_URL: check.url })
  t.strictSame(codes(await converse(lmtpPort!, 'LHLO c.test\r\nMAIL FROM:<a@x.test>\r\nQUIT\r\n')), ['250', '250 2.1.0', '221 2.0.0'])
  t.equal(check.requests[0]!.headers['webhook-signature'], undefined)
  t.ok(check.requests[0]!.headers['webhook-id'])
})
