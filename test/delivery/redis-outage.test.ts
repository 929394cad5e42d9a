import t from 'tap'
import { routesFile, startApp } from '../helpers/app.js'
import { privateRedis } from '../helpers/redis.js'
import { converse } from '../helpers/lmtp-client.js'
import { webhook } from '../helpers/webhook.js'

const TXN = 'LHLO mta.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<a@example.com>\r\nDATA\r\nSubject: outage\r\n\r\nbody\r\n.\r\nQUIT\r\n'
const finalReply = (out: string): string =>
  out
    .split('\r\n')
    .filter((l) => l !== '')
    .slice(-2)[0]!

t.test('Redis that stops answering: the session answers 451 instead of hanging, and nothing is delivered', async (t) => {
  const redis = await privateRedis(t, ['--appendonly', 'no'])
  const hook = await webhook(t, 200)
  const file = routesFile(t, `routes:\n  - { id: all, match: "*@example.com", url: "${hook.url}" }\n`)
  const { lmtpPort } = await startApp(t, { ROUTES_FILE: file, REDIS_URL: redis.url, REPLY_TIMEOUT: '60s' }, {}, { clean: false })
  t.match(finalReply(await converse(lmtpPort!, TXN)), /^250 2\.0\.0/, 'delivers while Redis answers')
  process.kill(redis.pid, 'SIGSTOP') // the process is frozen: connections stay open, nothing answers
  t.teardown(() => process.kill(redis.pid, 'SIGCONT'))
  const out = await converse(lmtpPort!, TXN, { timeoutMs: 30_000 })
  t.match(finalReply(out), /^451 4\.3\.0/, `a temporary failure, well before the 60 s reply timeout: ${finalReply(out)}`)
  t.equal(hook.requests.length, 1, 'the second message reached no webhook')
  process.kill(redis.pid, 'SIGCONT')
})

t.test('Redis that is gone: the session answers 451 and the MTA keeps the mail', async (t) => {
  const redis = await privateRedis(t, ['--appendonly', 'no'])
  const hook = await webhook(t, 200)
  const file = routesFile(t, `routes:\n  - { id: all, match: "*@example.com", url: "${hook.url}" }\n`)
  const { lmtpPort } = await startApp(t, { ROUTES_FILE: file, REDIS_URL: redis.url, REPLY_TIMEOUT: '60s' }, {}, { clean: false })
  process.kill(redis.pid, 'SIGKILL')
  const out = await converse(lmtpPort!, TXN, { timeoutMs: 30_000 })
  t.match(finalReply(out), /^451 4\.3\.0/)
  t.equal(hook.requests.length, 0)
  // Redis comes back before the app closes: a BullMQ worker whose Redis never returns cannot
  // finish closing (its connection waits between reconnect attempts with the worker's commands
  // pending), and its timers would keep this test process alive.
  await redis.restart()
})
