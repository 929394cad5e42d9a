import t from 'tap'
import { converse } from '../helpers/lmtp.js'
import { routesFile, webhook } from '../helpers/app.js'
import { until } from '../admin/helpers.js'
import { afterData, countingHook, message, twoReplicas } from '../helpers/replicas.js'

t.test('concurrency holds as a sum across two replicas (defer mode): every recipient is delivered', async (t) => {
  const hook = await countingHook(t, 200, 150)
  const file = routesFile(t, `routes:\n  - { id: limited, match: "*@example.com", url: "${hook.url}", concurrency: 3 }\n`)
  const [a, b] = await twoReplicas(t, { ROUTES_FILE: file, REPLY_TIMEOUT: '20s', WORKER_CONCURRENCY: '16' })
  // 4 sessions of 6 recipients on each replica: 48 deliveries that could all run at once
  const sessions = Array.from({ length: 8 }, (_, s) =>
    converse((s % 2 === 0 ? a : b).lmtpPort!, message(Array.from({ length: 6 }, (_, i) => `r${s}-${i}@example.com`)), { timeoutMs: 30_000 }),
  )
  const outputs = await Promise.all(sessions)
  const replies = outputs.flatMap(afterData)
  t.equal(replies.length, 48)
  t.ok(
    replies.every((r) => /^250 2\.0\.0 /.test(r)),
    'every recipient delivered: waiting for a slot is not a failure',
  )
  t.equal(hook.requests.length, 48, 'one request each')
  t.comment(`highest concurrency the receiver saw under concurrency: 3 (two replicas, 32 worker slots): ${hook.highest()}`)
  t.ok(hook.highest() <= 3, `the receiver never had more than 3 requests at once (saw ${hook.highest()})`)
  t.equal(hook.highest(), 3, 'and the limit was used')
})

t.test('concurrency in accept mode: jobs wait for a slot without spending an attempt', async (t) => {
  const hook = await countingHook(t, 200, 100)
  const file = routesFile(t, `routes:\n  - { id: acc, match: "*@example.com", url: "${hook.url}", mode: accept, concurrency: 2, retry: { attempts: 1 } }\n`)
  const [a, b] = await twoReplicas(t, { ROUTES_FILE: file, REPLY_TIMEOUT: '200ms', WORKER_CONCURRENCY: '8', ALLOW_ACCEPT_WITHOUT_AOF: 'true' })
  const outputs = await Promise.all([
    converse(a.lmtpPort!, message(Array.from({ length: 10 }, (_, i) => `a${i}@example.com`))),
    converse(b.lmtpPort!, message(Array.from({ length: 10 }, (_, i) => `b${i}@example.com`))),
  ])
  t.ok(
    outputs.flatMap(afterData).every((r) => /^250 2\.0\.0 /.test(r)),
    'every recipient accepted (delivered or queued)',
  )
  // With a single attempt allowed, a wait that spent one would leave a dead letter.
  await until('all 20 deliveries', () => hook.requests.length >= 20)
  await until('the queue to drain', async () => (await a.app.queues.getJobCounts('active', 'waiting', 'delayed')).delayed === 0)
  t.equal((await a.app.queues.getFailed()).length, 0, 'no dead letter: waiting spent no attempt')
  t.equal(hook.requests.length, 20)
  t.ok(hook.highest() <= 2, `at most 2 at once (saw ${hook.highest()})`)
})

t.test('defer mode over the limit until the reply deadline: 451 4.7.0, and the MTA keeps the mail', async (t) => {
  const hook = await countingHook(t, 200, 2500)
  const file = routesFile(t, `routes:\n  - { id: one, match: "*@example.com", url: "${hook.url}", concurrency: 1 }\n`)
  const [a, b] = await twoReplicas(t, { ROUTES_FILE: file, REPLY_TIMEOUT: '1s' })
  const first = converse(a.lmtpPort!, message(['first@example.com']))
  await until('the first attempt to hold the slot', () => hook.inFlight() === 1)
  const started = Date.now()
  const second = await converse(b.lmtpPort!, message(['second@example.com']))
  const elapsed = Date.now() - started
  t.match(afterData(second), [/^451 4\.7\.0 <second@example\.com> webhook at its delivery limit/])
  t.ok(elapsed < 3000, `answered by the reply deadline (${elapsed} ms), not when the slot came free`)
  t.match(afterData(await first), [/^451 4\.3\.0 /], 'the first one timed out waiting for its slow webhook')
  t.equal(hook.requests.length, 1, 'the second delivery was never attempted')
})

t.test('rateLimit holds across two replicas: at most max attempts in any interval', async (t) => {
  const hook = await webhook(t, 200)
  const file = routesFile(t, `routes:\n  - { id: rated, match: "*@example.com", url: "${hook.url}", rateLimit: { max: 4, per: 1s } }\n`)
  const [a, b] = await twoReplicas(t, { ROUTES_FILE: file, REPLY_TIMEOUT: '20s' })
  const outputs = await Promise.all([
    converse(a.lmtpPort!, message(Array.from({ length: 6 }, (_, i) => `a${i}@example.com`)), { timeoutMs: 30_000 }),
    converse(b.lmtpPort!, message(Array.from({ length: 6 }, (_, i) => `b${i}@example.com`)), { timeoutMs: 30_000 }),
  ])
  t.ok(
    outputs.flatMap(afterData).every((r) => /^250 /.test(r)),
    'all 12 delivered',
  )
  const times = hook.requests.map((r) => r.at).sort((x, y) => x - y)
  t.equal(times.length, 12)
  // A few ms of skew between the limiter's clock (Redis) and the receiver's is allowed for.
  let most = 0
  for (let i = 0; i < times.length; i++) most = Math.max(most, times.filter((x) => x >= times[i]! && x < times[i]! + 950).length)
  t.ok(most <= 4, `at most 4 requests in any 950 ms (saw ${most})`)
  t.ok(times[11]! - times[0]! >= 1900, `12 requests at 4 per second take at least two intervals (${times[11]! - times[0]!} ms)`)
})
