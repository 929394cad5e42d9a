import t from 'tap'
import { Webhook } from 'standardwebhooks'
import { routesFile, startApp } from '../helpers/app.js'
import { ajv, validatePayload } from '../helpers/schema.js'
import { codes, converse } from '../helpers/lmtp-client.js'
import { webhook } from '../helpers/webhook.js'

const SECRET = 'whsec_' + Buffer.alloc(32, 7).toString('base64')

const LHLO = 'LHLO mta.test\r\n'

function transaction(rcpts: string[], body = 'Subject: test\r\nMessage-ID: <1@x.test>\r\n\r\nhello\r\n'): string {
  return LHLO + 'MAIL FROM:<sender@x.test>\r\n' + rcpts.map((r) => `RCPT TO:<${r}>\r\n`).join('') + 'DATA\r\n' + body + '.\r\nQUIT\r\n'
}

/** The final reply lines after the data (one per recipient), before 221. */
function dataReplies(output: string): string[] {
  const lines = output.split('\r\n').filter((l) => l !== '')
  const start = lines.findIndex((l) => l.startsWith('354'))
  return lines.slice(start + 1, -1)
}

t.test('each recipient gets its own reply from its own webhook, in RCPT order', async (t) => {
  const ok = await webhook(t, 200)
  const unavailable = await webhook(t, 503)
  const missing = await webhook(t, 404)
  const tooLarge = await webhook(t, 413)
  const hang = await webhook(t, () => {
    /* never answers */
  })
  const file = routesFile(
    t,
    `routes:
  - { id: ok, match: "ok@example.com", url: "${ok.url}", secret: "${SECRET}" }
  - { id: unavailable, match: "unavailable@example.com", url: "${unavailable.url}" }
  - { id: missing, match: "missing@example.com", url: "${missing.url}" }
  - { id: toolarge, match: "big@example.com", url: "${tooLarge.url}" }
  - { id: hang, match: "hang@example.com", url: "${hang.url}", timeout: 10s }
`,
  )
  const { lmtpPort } = await startApp(t, { ROUTES_FILE: file, REPLY_TIMEOUT: '1500ms' })
  const out = await converse(
    lmtpPort!,
    transaction([
      'ok@example.com',
      'unavailable@example.com',
      'missing@example.com',
      'big@example.com',
      'hang@example.com',
      'ok@example.com',
      'nobody@example.com',
    ]),
  )
  t.strictSame(codes(out).slice(0, 9), ['250', '250 2.1.0', '250 2.1.5', '250 2.1.5', '250 2.1.5', '250 2.1.5', '250 2.1.5', '250 2.1.5', '550 5.1.1'], out)
  const replies = dataReplies(out)
  t.equal(replies.length, 6, 'one reply per accepted recipient, the duplicate included')
  t.match(replies[0], /^250 2\.0\.0 .*ok@example\.com/)
  t.match(replies[1], /^451 4\.3\.0/)
  t.match(replies[2], /^550 5\.1\.1/)
  t.match(replies[3], /^552 5\.3\.4/)
  t.match(replies[4], /^451 4\.3\.0/, 'a webhook that does not answer in time defers')
  t.match(replies[5], /^250 2\.0\.0 .*ok@example\.com/, 'the duplicate gets its own reply')
  t.equal(ok.requests.length, 1, 'the duplicate recipient is delivered once (same webhook id)')

  const req = ok.requests[0]!
  const wh = new Webhook(SECRET)
  const payload = wh.verify(req.body.toString('utf8'), {
    'webhook-id': req.headers['webhook-id'] as string,
    'webhook-timestamp': req.headers['webhook-timestamp'] as string,
    'webhook-signature': req.headers['webhook-signature'] as string,
  }) as Record<string, any>
  t.ok(validatePayload(payload), `the delivered body matches openapi/webhook-payload.schema.json: ${ajv.errorsText(validatePayload.errors)}`)
  t.equal(payload.envelope.rcptTo, 'ok@example.com')
  t.equal(payload.envelope.mailFrom, 'sender@x.test')
  t.strictSame(payload.envelope.recipients, [
    'ok@example.com',
    'unavailable@example.com',
    'missing@example.com',
    'big@example.com',
    'hang@example.com',
    'ok@example.com',
  ])
  t.equal(payload.message.subject, 'test')
  t.equal(payload.id, req.headers['webhook-id'])
  t.match(req.headers['user-agent'], /^lmtp-webhook\//)
})

t.test('the webhook chooses its own reply; injected text is neutralised and the class clamped', async (t) => {
  const custom = await webhook(t, (_req, _body, res) => {
    res.setHeader('content-type', 'application/json')
    res.statusCode = 403
    res.end(JSON.stringify({ smtp: { code: 250, enhanced: '2.0.0', message: 'fine\r\n250 2.0.0 injected\u0000' } }))
  })
  const polite = await webhook(t, (_req, _body, res) => {
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({ smtp: { code: 250, enhanced: '2.6.0', message: 'stored as ticket #42' } }))
  })
  const file = routesFile(
    t,
    `routes:
  - { id: custom, match: "custom@example.com", url: "${custom.url}" }
  - { id: polite, match: "polite@example.com", url: "${polite.url}" }
`,
  )
  const { lmtpPort } = await startApp(t, { ROUTES_FILE: file })
  const out = await converse(lmtpPort!, transaction(['custom@example.com', 'polite@example.com']))
  const replies = dataReplies(out)
  t.equal(replies.length, 2, out)
  t.match(replies[0], /^5\d\d 5\./, 'a 403 cannot be turned into a 250')
  t.notMatch(out, /\r\n250 2\.0\.0 injected/, 'no injected reply line')
  t.notMatch(out, /\u0000/)
  t.match(replies[1], /^250 2\.6\.0 stored as ticket #42$/)
})

t.test('mail for a recipient without a route is refused at RCPT; other domains get 550 5.1.2', async (t) => {
  const ok = await webhook(t, 200)
  const file = routesFile(t, `routes:\n  - { id: sales, match: "*@example.com", url: "${ok.url}" }\n`)
  const { lmtpPort } = await startApp(t, { ROUTES_FILE: file, LMTP_DOMAINS: 'example.com,example.org' })
  const out = await converse(
    lmtpPort!,
    LHLO + 'MAIL FROM:<>\r\nRCPT TO:<a@example.org>\r\nRCPT TO:<a@elsewhere.test>\r\nRCPT TO:<anyone@example.com>\r\nQUIT\r\n',
  )
  t.strictSame(codes(out), ['250', '250 2.1.0', '550 5.1.1', '550 5.1.2', '250 2.1.5', '221 2.0.0'])
})
