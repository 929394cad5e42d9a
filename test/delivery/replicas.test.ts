import t from 'tap'
import { cleanRedis, prefix, routesFile, startApp } from '../helpers/app.js'
import { converse } from '../helpers/lmtp-client.js'
import { webhook } from '../helpers/webhook.js'

t.test('a listener-only and a worker-only replica on one Redis: the result crosses processes', async (t) => {
  const p = prefix()
  t.teardown(() => cleanRedis(p))
  const ok = await webhook(t, 200)
  const rejecting = await webhook(t, 410)
  const file = routesFile(
    t,
    `routes:\n  - { id: ok, match: "ok@example.com", url: "${ok.url}" }\n  - { id: gone, match: "gone@example.com", url: "${rejecting.url}" }\n`,
  )
  const worker = await startApp(t, { ROUTES_FILE: file, ROLE: 'worker', LMTP_PORT: 'off' }, {}, { prefix: p, clean: false })
  t.equal(worker.lmtpPort, null, 'the worker replica does not listen for LMTP')
  let attemptsOnListener = 0
  const listener = await startApp(t, { ROUTES_FILE: file, ROLE: 'listener' }, { attempt: () => attemptsOnListener++ }, { prefix: p, clean: false })
  const out = await converse(
    listener.lmtpPort!,
    'LHLO mta.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<ok@example.com>\r\nRCPT TO:<gone@example.com>\r\nDATA\r\nSubject: replicas\r\n\r\nhi\r\n.\r\nQUIT\r\n',
  )
  t.match(out, /\r\n250 2\.0\.0 <ok@example\.com> delivered\r\n550 5\.1\.1 <gone@example\.com>[^\r\n]*\r\n221 /)
  t.equal(ok.requests.length, 1)
  t.equal(attemptsOnListener, 0, 'the listener replica made no webhook call itself')
})
