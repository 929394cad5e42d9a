import t from 'tap'
import { cleanRedis, prefix, REDIS_URL, routesFile } from '../helpers/app.js'
import { startService } from '../helpers/process.js'
import { converse, LmtpClient } from '../helpers/lmtp-client.js'
import { until } from '../helpers/until.js'
import { webhook } from '../helpers/webhook.js'
import { privateRedis } from '../helpers/redis.js'

const TXN =
  'LHLO mta.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nSubject: crash\r\nMessage-ID: <crash@x.test>\r\n\r\nbody\r\n.\r\nQUIT\r\n'

t.test('killing the process while a webhook call is in flight never leaves a 250 behind (defer mode)', async (t) => {
  const p = prefix()
  t.teardown(() => cleanRedis(p))
  let answer = false
  const hook = await webhook(t, (_req, _body, res) => {
    if (answer) res.end()
    // otherwise: hang, as a slow consumer would
  })
  const file = routesFile(t, `routes:\n  - { id: all, match: "*@example.com", url: "${hook.url}" }\n`)
  const env = { REDIS_URL, REDIS_PREFIX: p, ROUTES_FILE: file, LMTP_DOMAINS: 'example.com', REPLY_TIMEOUT: '20s' }
  const first = await startService(t, env)

  // The MTA's side of the first attempt: read everything until the connection drops.
  const mta = await LmtpClient.connect(first.lmtpPort)
  await mta.write(TXN)
  await until('both webhook calls in flight', () => hook.requests.length >= 2)
  t.equal(hook.requests.length, 2, 'both webhook calls are in flight')
  first.child.kill('SIGKILL')
  await first.exited
  await mta.closed
  const received = mta.output
  const afterData = received.split('\r\n').slice(received.split('\r\n').findIndex((l) => l.startsWith('354')) + 1)
  t.notOk(
    afterData.some((l) => l.startsWith('250')),
    `no recipient got a 250: ${JSON.stringify(afterData)}`,
  )

  // The MTA tries again once the service is back and the webhook answers.
  answer = true
  const idsBefore = hook.requests.map((r) => r.headers['webhook-id'])
  const second = await startService(t, env)
  const out = await converse(second.lmtpPort, TXN)
  t.match(out, /250 2\.0\.0 <a@example\.com> delivered\r\n250 2\.0\.0 <b@example\.com> delivered\r\n221/)
  const redelivered = hook.requests.slice(2).map((r) => r.headers['webhook-id'])
  t.ok(redelivered.length >= 2)
  t.ok(
    idsBefore.every((id) => redelivered.includes(id)),
    'the redelivery carries the same webhook ids, so the consumer can tell',
  )
  second.child.kill('SIGTERM')
  t.equal(await second.exited, 0, 'SIGTERM ends the process cleanly')
})

t.test('accept mode: the job of a process killed mid-attempt runs again within the stall bound (15 s), not a minute later', async (t) => {
  const redis = await privateRedis(t, ['--appendonly', 'yes', '--appendfsync', 'always'])
  const hook = await webhook(t, (_req, _body, res, n) => {
    if (n > 1) res.end()
    // the first call hangs, as a slow consumer would
  })
  const file = routesFile(t, `routes:\n  - { id: durable, match: "*@example.com", url: "${hook.url}", mode: accept }\n`)
  const env = { REDIS_URL: redis.url, REDIS_PREFIX: prefix(), ROUTES_FILE: file, LMTP_DOMAINS: 'example.com', REPLY_TIMEOUT: '1s', WEBHOOK_TIMEOUT: '5m' }
  const first = await startService(t, env)
  const out = await converse(
    first.lmtpPort,
    'LHLO mta.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<a@example.com>\r\nDATA\r\nSubject: stall\r\n\r\nbody\r\n.\r\nQUIT\r\n',
  )
  t.match(out, /250 2\.0\.0 <a@example\.com> queued/, 'the MTA was told queued')
  t.equal(hook.requests.length, 1, 'the first attempt is in flight')
  first.child.kill('SIGKILL')
  const killedAt = Date.now()
  await first.exited
  const second = await startService(t, env)
  const retry = await until('the attempt after the crash', () => hook.requests[1], 40_000, 100)
  const afterMs = retry.at - killedAt
  t.ok(afterMs < 20_000, `delivered ${afterMs} ms after the crash (bound 15 s, margin 5 s)`)
  t.equal(retry.headers['webhook-id'], hook.requests[0]!.headers['webhook-id'], 'the same delivery')
  second.child.kill('SIGTERM')
  t.equal(await second.exited, 0)
})
