/**
 * The listener's own first attempt (local.ts) with its guard job (guards.ts), the resend rules of
 * accept mode, and mode async — over real LMTP sessions, real webhooks and a real Redis.
 */
import t from 'tap'
import { Redis } from 'ioredis'
import { setTimeout as sleep } from 'node:timers/promises'
import { routesFile, startApp, REDIS_URL } from '../helpers/app.js'
import { privateRedis } from '../helpers/redis.js'
import { converse, dataReplies } from '../helpers/lmtp-client.js'
import { until } from '../helpers/until.js'
import { webhook } from '../helpers/webhook.js'
import { attemptsOf } from '../../src/delivery/queue.js'
import { GUARD_LEASE_MS } from '../../src/delivery/guards.js'

const LHLO = 'LHLO mta.test\r\n'
const mail = (rcpts: string[], subject: string): string =>
  LHLO +
  'MAIL FROM:<s@x.test>\r\n' +
  rcpts.map((r) => `RCPT TO:<${r}>\r\n`).join('') +
  `DATA\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@x.test>\r\n\r\nbody\r\n.\r\nQUIT\r\n`

const durableRedis = (t: Parameters<typeof privateRedis>[0]) => privateRedis(t, ['--appendonly', 'yes', '--appendfsync', 'always'])

t.test('defer mode: the listener attempts at once; the guard job and the message leave nothing behind', async (t) => {
  const hook = await webhook(t, 200)
  const file = routesFile(t, `routes:\n  - { id: d, match: "*@example.com", url: "${hook.url}" }\n`)
  const { lmtpPort, app, prefix } = await startApp(t, { ROUTES_FILE: file })
  const redis = new Redis(REDIS_URL)
  t.teardown(() => redis.quit())
  const out = await converse(lmtpPort!, mail(['a@example.com', 'b@example.com'], 'local defer'))
  t.same(
    dataReplies(out).map((l) => l.slice(0, 3)),
    ['250', '250'],
    'each recipient gets its webhook answer',
  )
  t.equal(hook.requests.length, 2, 'one attempt per recipient')
  await until('the guards removed', async () => {
    const counts = await app.queues.getJobCounts('delayed', 'waiting', 'active', 'completed', 'failed')
    return Object.values(counts).every((n) => n === 0)
  })
  t.same(await redis.keys(`${prefix}:*txn:*`), [], 'a defer-only transaction answered here is not kept in Redis')
})

t.test('accept mode: while a slow first attempt runs, its job waits in the queue and no worker takes it', async (t) => {
  const redis = await durableRedis(t)
  const hook = await webhook(t, (_req, _body, res) => {
    setTimeout(() => res.end(), GUARD_LEASE_MS + 2_000)
  })
  const file = routesFile(t, `routes:\n  - { id: a, match: "*@example.com", url: "${hook.url}", mode: accept, timeout: 30s }\n`)
  const { lmtpPort, app } = await startApp(t, { ROUTES_FILE: file, REDIS_URL: redis.url, REPLY_TIMEOUT: '20s' })
  const session = converse(lmtpPort!, mail(['a@example.com'], 'guarded'), { timeoutMs: 30_000 })
  await until('the attempt', () => hook.requests.length === 1)
  const delayed = await app.queues.getJobs(['delayed'])
  t.equal(delayed.length, 1, 'the recipient is its own BullMQ job')
  t.equal(delayed[0]!.data.rcpt, 'a@example.com')
  t.match(dataReplies(await session)[0], /^250 2\.0\.0 <a@example\.com> delivered/, 'answered by the slow attempt')
  t.equal(hook.requests.length, 1, 'past the guard lease, still one attempt: the lease was renewed')
  await until('the guard removed', async () => (await app.queues.getJobCounts('delayed', 'waiting', 'active')).delayed === 0)
})

t.test('accept mode: a resend of a dead letter delivers it anew and answers from that attempt', async (t) => {
  const redis = await durableRedis(t)
  let status = 404
  const hook = await webhook(t, (_req, _body, res) => {
    res.statusCode = status
    res.end()
  })
  const file = routesFile(t, `routes:\n  - { id: a, match: "*@example.com", url: "${hook.url}", mode: accept }\n`)
  const { lmtpPort, app } = await startApp(t, { ROUTES_FILE: file, REDIS_URL: redis.url })
  const first = await converse(lmtpPort!, mail(['a@example.com'], 'resent dead'))
  t.match(dataReplies(first)[0], /^550 5\.1\.1/, 'the refusal reaches the MTA')
  const dead = await until('the dead letter', async () => {
    const failed = await app.queues.getFailed()
    return failed.length === 1 ? failed[0] : undefined
  })
  t.equal(attemptsOf(dead), 1, 'one attempt, the listener’s')
  status = 200
  const started = Date.now()
  const again = await converse(lmtpPort!, mail(['a@example.com'], 'resent dead'))
  t.match(dataReplies(again)[0], /^250 2\.0\.0 <a@example\.com> delivered/, 'the resend is attempted and answered from the attempt')
  t.ok(Date.now() - started < 2000, 'without waiting for the reply timeout')
  t.equal(hook.requests.length, 2)
  t.equal(hook.requests[1]!.headers['webhook-id'], hook.requests[0]!.headers['webhook-id'], 'the same webhook id: the consumer can tell')
  await until('the dead letter gone', async () => (await app.queues.getFailed()).length === 0)
})

t.test('accept mode: a resend of a dead letter out of attempts is attempted again', async (t) => {
  const redis = await durableRedis(t)
  let status = 503
  const hook = await webhook(t, (_req, _body, res) => {
    res.statusCode = status
    res.end()
  })
  const file = routesFile(t, `routes:\n  - { id: a, match: "*@example.com", url: "${hook.url}", mode: accept, retry: { attempts: 1 } }\n`)
  const { lmtpPort, app } = await startApp(t, { ROUTES_FILE: file, REDIS_URL: redis.url })
  t.match(dataReplies(await converse(lmtpPort!, mail(['a@example.com'], 'out of attempts')))[0], /^250 .*queued/)
  await until('the dead letter', async () => (await app.queues.getFailed()).length === 1)
  status = 200
  const again = await converse(lmtpPort!, mail(['a@example.com'], 'out of attempts'))
  t.match(dataReplies(again)[0], /^250 2\.0\.0 <a@example\.com> delivered/)
  t.equal(hook.requests.length, 2)
})

t.test('accept mode: a resend of a job still retrying, or of one delivered, is answered at once', async (t) => {
  const redis = await durableRedis(t)
  // the retrying route's webhook answers 503 (by its query), the other 200
  const hook = await webhook(t, (req, _body, res) => {
    res.statusCode = req.url?.includes('r=503') ? 503 : 200
    res.end()
  })
  const file = routesFile(
    t,
    [
      'routes:',
      `  - { id: retrying, match: "retry@example.com", url: "${hook.url}?r=503", mode: accept, retry: { attempts: 5, backoff: 1h } }`,
      `  - { id: fine, match: "*@example.com", url: "${hook.url}", mode: accept }`,
      '',
    ].join('\n'),
  )
  const { lmtpPort, app } = await startApp(t, { ROUTES_FILE: file, REDIS_URL: redis.url, REPLY_TIMEOUT: '10s' })
  t.match(dataReplies(await converse(lmtpPort!, mail(['retry@example.com'], 'pending one')))[0], /^250 .*queued/)
  t.match(dataReplies(await converse(lmtpPort!, mail(['ok@example.com'], 'delivered one')))[0], /^250 .*delivered/)
  t.equal(hook.requests.length, 2)
  await until('the retry scheduled', async () => (await app.queues.getJobs(['delayed'])).some((j) => (j.data.made ?? 0) === 1))
  let started = Date.now()
  t.match(dataReplies(await converse(lmtpPort!, mail(['retry@example.com'], 'pending one')))[0], /^250 2\.0\.0 .*queued/, 'still queued here')
  t.ok(Date.now() - started < 2000, `answered at once (${Date.now() - started} ms), not after REPLY_TIMEOUT`)
  started = Date.now()
  t.match(dataReplies(await converse(lmtpPort!, mail(['ok@example.com'], 'delivered one')))[0], /^250 2\.0\.0 .*already delivered/)
  t.ok(Date.now() - started < 2000, 'answered at once')
  await sleep(200)
  t.equal(hook.requests.length, 2, 'neither resend reached the webhook')
  t.match(await app.metrics.registry.metrics(), /lmtp_webhook_reply_timeouts_total\{mode="accept"\} 0\n/, 'a resend answered at once is no reply timeout')
})

t.test('async mode: 250 once queued, delivered afterwards; a refusal becomes a dead letter', async (t) => {
  const redis = await durableRedis(t)
  let hold = true
  const waiting: (() => void)[] = []
  const hook = await webhook(t, (req, _body, res) => {
    const answer = (): void => {
      res.statusCode = req.url?.includes('gone') ? 410 : 200
      res.end()
    }
    if (hold) waiting.push(answer)
    else answer()
  })
  const file = routesFile(
    t,
    [
      'routes:',
      `  - { id: gone, match: "gone@example.com", url: "${hook.url}?gone", mode: async }`,
      `  - { id: later, match: "*@example.com", url: "${hook.url}", mode: async }`,
      '',
    ].join('\n'),
  )
  const { lmtpPort, app } = await startApp(t, { ROUTES_FILE: file, REDIS_URL: redis.url })
  const out = await converse(lmtpPort!, mail(['a@example.com', 'gone@example.com'], 'async'))
  t.same(
    dataReplies(out).map((l) => l.replace(/\r\n$/, '')),
    ['250 2.0.0 <a@example.com> queued for delivery', '250 2.0.0 <gone@example.com> queued for delivery'],
    'both answered before any webhook answered',
  )
  hold = false
  await until('both attempted', () => hook.requests.length >= 2)
  for (const answer of waiting.splice(0)) answer()
  const dead = await until('the dead letter', async () => {
    const failed = await app.queues.getFailed()
    return failed.length === 1 ? failed[0] : undefined
  })
  t.equal(dead.data.rcpt, 'gone@example.com', 'the refusal is kept: the MTA was told 250')
  const metrics = await app.metrics.registry.metrics()
  t.match(metrics, /state="failed"[^\n]* 1\b/, 'the dead letter is counted')
})
