/**
 * The recipient check at RCPT, as docs/routes.md and docs/mta.md describe it: the check's answer
 * is mapped like a delivery's (the status table, then the route's `replies`, then the check's own
 * `smtp` object); 2xx accepts, an answer mapped to 5xx refuses with that reply, one mapped to 4xx
 * (or no answer) defers with 451 4.3.0. A real check webhook and a real LMTP session.
 */
import t, { type Test } from 'tap'
import { routesFile, startApp } from '../helpers/app.js'
import { codes, converse } from '../helpers/lmtp-client.js'
import { webhook } from '../helpers/webhook.js'

/** The check answers the status in the local part (`s404@...`); `hang@` never answers, `smtp@` brings its own reply. */
async function checkHook(t: Test) {
  return webhook(t, (_req, body, res) => {
    const { rcptTo } = JSON.parse(body.toString()) as { rcptTo: string }
    const local = rcptTo.split('@')[0]!
    if (local === 'hang') return
    if (local === 'smtp') {
      res.statusCode = 404
      res.setHeader('content-type', 'application/json')
      return res.end(JSON.stringify({ smtp: { code: 551, enhanced: '5.1.6', message: 'moved to elsewhere.example' } }))
    }
    res.statusCode = Number(local.slice(1))
    res.end()
  })
}

t.test('the default mapping: 2xx accepts; 404/410, 403, 413 and other 4xx refuse; 5xx, 408, 429, 3xx and no answer defer', async (t) => {
  const check = await checkHook(t)
  const hook = await webhook(t, 200)
  const file = routesFile(t, `routes:\n  - { id: all, match: "*@example.com", url: "${hook.url}", recipientCheckUrl: "${check.url}" }\n`)
  // WEBHOOK_TIMEOUT also bounds the check (capped at 10 s): a short one makes `hang` quick.
  const { lmtpPort } = await startApp(t, { ROUTES_FILE: file, WEBHOOK_TIMEOUT: '500ms' })
  const expected: [string, string][] = [
    ['s200', '250 2.1.5'],
    ['s204', '250 2.1.5'],
    ['s404', '550 5.1.1'],
    ['s410', '550 5.1.1'],
    ['s403', '550 5.7.1'],
    ['s413', '552 5.3.4'],
    ['s400', '554 5.6.0'],
    ['s401', '554 5.6.0'],
    ['s422', '554 5.6.0'],
    ['s408', '451 4.3.0'],
    ['s429', '451 4.3.0'],
    ['s500', '451 4.3.0'],
    ['s503', '451 4.3.0'],
    ['s302', '451 4.3.0'],
    ['hang', '451 4.3.0'],
    ['smtp', '551 5.1.6'],
  ]
  const rcpts = expected.map(([local]) => `RCPT TO:<${local}@example.com>\r\n`).join('')
  const out = await converse(lmtpPort!, `LHLO c.test\r\nMAIL FROM:<a@x.test>\r\n${rcpts}DATA\r\nx\r\n.\r\nQUIT\r\n`)
  const got = codes(out)
  t.strictSame(got.slice(0, 2), ['250', '250 2.1.0'])
  for (const [i, [local, reply]] of expected.entries()) t.equal(got[2 + i], reply, `${local}: ${reply}`)
  t.strictSame(got.slice(2 + expected.length), ['354', '250 2.0.0', '250 2.0.0', '221 2.0.0'], 'the two accepted recipients get a reply after the data')
  t.match(out, /551 5\.1\.6 moved to elsewhere\.example\r\n/, "the check's smtp object gives the text")
  t.match(out, /451 4\.3\.0 Recipient check unavailable, try again later\r\n/)
  t.equal(hook.requests.length, 2, 'only the accepted recipients are delivered')
})

t.test("the route's replies apply to the check's answer", async (t) => {
  const check = await checkHook(t)
  const hook = await webhook(t, 200)
  const replies = '{ "404": { code: 550, enhanced: 5.1.1, message: "No such mailbox" }, "503": { code: 550, enhanced: 5.7.1 }, "403": { code: 451 } }'
  const file = routesFile(t, `routes:\n  - { id: all, match: "*@example.com", url: "${hook.url}", recipientCheckUrl: "${check.url}", replies: ${replies} }\n`)
  const { lmtpPort } = await startApp(t, { ROUTES_FILE: file })
  const out = await converse(
    lmtpPort!,
    'LHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<s404@example.com>\r\nRCPT TO:<s503@example.com>\r\nRCPT TO:<s403@example.com>\r\nQUIT\r\n',
  )
  t.strictSame(codes(out), ['250', '250 2.1.0', '550 5.1.1', '550 5.7.1', '451 4.3.0', '221 2.0.0'])
  t.match(out, /550 5\.1\.1 No such mailbox\r\n/, 'the override text')
  t.equal(check.requests.length, 3)
})
