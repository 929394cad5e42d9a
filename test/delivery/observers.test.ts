import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { routesFile, startApp } from '../helpers/app.js'
import { privateRedis } from '../helpers/redis.js'
import { converse, dataReplies } from '../helpers/lmtp-client.js'
import { until } from '../helpers/until.js'
import { webhook } from '../helpers/webhook.js'

const message = (subject: string): string =>
  `MAIL FROM:<s@x.test>\r\nRCPT TO:<a@example.com>\r\nDATA\r\nSubject: ${subject}\r\nMessage-ID: <${subject}@x.test>\r\n\r\nbody\r\n.\r\n`

const boom = (): never => {
  throw new Error('metrics hook is broken')
}

t.test('hooks that throw change no outcome: delivered once, the job completed, both transactions answered', async (t) => {
  const redis = await privateRedis(t, ['--appendonly', 'yes', '--appendfsync', 'always'])
  const hook = await webhook(t, 200)
  const file = routesFile(
    t,
    `routes:\n  - { id: durable, match: "*@example.com", url: "${hook.url}", mode: accept, retry: { attempts: 3, backoff: 100ms, maxDelay: 200ms } }\n`,
  )
  const { lmtpPort, app } = await startApp(
    t,
    { ROUTES_FILE: file, REDIS_URL: redis.url },
    { attempt: boom, lmtp: { connection: boom, transaction: boom }, pipeline: {} },
  )
  // Two transactions on one connection: the second must still be taken after the observer threw.
  const out = await converse(lmtpPort!, `LHLO mta.test\r\n${message('one')}${message('two')}QUIT\r\n`)
  t.same(
    dataReplies(out).filter((l) => !l.startsWith('250 2.1') && !l.startsWith('354')),
    ['250 2.0.0 <a@example.com> delivered', '250 2.0.0 <a@example.com> delivered'],
  )
  // Long enough for the 100 ms backoff to have sent a retry, had the job failed.
  await sleep(1_000)
  t.equal(hook.requests.length, 2, 'one webhook call per message')
  const counts = await until('no job in flight', async () => {
    const c = await app.queues.getJobCounts('active', 'wait', 'delayed', 'failed', 'completed')
    return c.active === 0 && c.wait === 0 ? c : null
  })
  t.same({ delayed: counts.delayed, failed: counts.failed }, { delayed: 0, failed: 0 }, 'no retry scheduled, no dead letter')
  const deliveries = await Promise.all(hook.requests.map((r) => app.deliveries.get(r.headers['webhook-id'] as string)))
  t.same(
    deliveries.map((d) => d?.state),
    ['delivered', 'delivered'],
    'the delivery log says delivered',
  )
})
