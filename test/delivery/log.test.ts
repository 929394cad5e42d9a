import t from 'tap'
import { Redis } from 'ioredis'
import { pino } from 'pino'
import { DeliveryLog, MAX_ATTEMPTS } from '../../src/delivery/log.js'
import { KeyLayout } from '../../src/redis/keys.js'
import type { AttemptRecord } from '../../src/delivery/worker.js'
import { REDIS_URL, cleanRedis, prefix as newPrefix } from '../helpers/app.js'

const silent = pino({ level: 'silent' })

function attempt(jobId: string, over: Partial<AttemptRecord> = {}): AttemptRecord {
  return {
    jobId,
    txn: `txn-${jobId}`,
    rcpt: `${jobId}@example.com`,
    route: 'r1',
    mode: 'accept',
    sender: 'sender@x.test',
    messageId: `<${jobId}@x.test>`,
    attempt: 1,
    status: 200,
    error: undefined,
    durationMs: 12.5,
    outcome: 'delivered',
    reply: '250 2.0.0',
    responseSnippet: 'ok',
    final: true,
    ...over,
  }
}

async function setup(t: { teardown: (fn: () => unknown) => void }, options: { max: number; ttlMs?: number }) {
  const p = newPrefix()
  const redis = new Redis(REDIS_URL)
  t.teardown(async () => {
    await cleanRedis(p)
    await redis.quit()
  })
  const shard = new KeyLayout(p, 1).shards[0]!
  const log = new DeliveryLog(redis, [shard], { max: options.max, ttlMs: options.ttlMs ?? 60_000, log: silent })
  return { redis, p, shard, log, writes: log.in(shard) }
}

t.test('states follow the attempts: retrying, then dead or delivered', async (t) => {
  const { log, writes } = await setup(t, { max: 100 })
  await writes.record(attempt('a', { attempt: 1, status: 503, outcome: 'temporary', reply: '451 4.3.0', final: false, responseSnippet: 'busy' }))
  t.equal((await log.get('a'))!.state, 'retrying')
  await writes.record(
    attempt('a', { attempt: 2, status: undefined, error: 'HOOK_ERR_TIMEOUT', outcome: 'temporary', reply: '451 4.3.0', final: true, responseSnippet: '' }),
  )
  const dead = (await log.get('a'))!
  t.equal(dead.state, 'dead', 'accept mode out of attempts')
  t.equal(dead.attempts, 2)
  t.equal(dead.lastStatus, null)
  t.equal(dead.lastError, 'HOOK_ERR_TIMEOUT')
  t.equal(dead.reason, 'webhook answered HOOK_ERR_TIMEOUT', 'shown dead with its reason at once, before the queue reports the failure')
  t.same(
    dead.attemptLog.map((a) => [a.attempt, a.status, a.error, a.response]),
    [
      [1, 503, null, 'busy'],
      [2, null, 'HOOK_ERR_TIMEOUT', ''],
    ],
  )

  await writes.record(attempt('a', { attempt: 1, status: 200, outcome: 'delivered', final: true }))
  t.match(await log.get('a'), { state: 'delivered', reason: null, attempts: 3 }, 'a replay that got through no longer shows why it had died')

  await writes.record(attempt('d', { mode: 'defer', status: 500, outcome: 'temporary', final: true }))
  t.equal((await log.get('d'))!.state, 'deferred')
  await writes.record(attempt('r', { mode: 'defer', status: 404, outcome: 'rejected', reply: '550 5.1.1' }))
  t.equal((await log.get('r'))!.state, 'rejected')
  await writes.setState({ id: 'r', txn: 'txn-r', rcpt: 'r@example.com', route: 'r1', mode: 'defer' }, 'dead', 'webhook rejected with 404')
  const r = (await log.get('r'))!
  t.equal(r.state, 'dead')
  t.equal(r.reason, 'webhook rejected with 404')
  t.equal(r.attempts, 1, 'a state change is not an attempt')
})

t.test('retention: only the newest DELIVERY_LOG_MAX deliveries stay, and their keys expire', async (t) => {
  const { log, writes, redis, shard } = await setup(t, { max: 3, ttlMs: 60_000 })
  for (let i = 1; i <= 5; i++) await writes.record(attempt(`j${i}`), 1_000_000 + i)
  const page = await log.list({ limit: 10 })
  t.same(
    page.deliveries.map((d) => d.id),
    ['j5', 'j4', 'j3'],
    'newest first, oldest trimmed',
  )
  t.equal(await log.get('j1'), null)
  t.equal(
    await redis.exists(`${shard.dlogPrefix}d:j1`, `${shard.dlogPrefix}a:j1`, `${shard.dlogPrefix}d:j2`, `${shard.dlogPrefix}a:j2`),
    0,
    'trimmed keys are deleted',
  )
  t.equal(await redis.zcard(shard.dlogIndex), 3)
  const ttl = await redis.pttl(`${shard.dlogPrefix}d:j5`)
  t.ok(ttl > 0 && ttl <= 60_000, 'each delivery expires DELIVERY_LOG_TTL after its last change')
  t.ok((await redis.pttl(`${shard.dlogPrefix}a:j5`)) > 0)
})

t.test('attempts kept per delivery are capped', async (t) => {
  const { log, writes } = await setup(t, { max: 10 })
  for (let i = 1; i <= MAX_ATTEMPTS + 5; i++)
    await writes.record(attempt('many', { attempt: i, outcome: 'temporary', final: false, responseSnippet: 'x'.repeat(5000) }))
  const d = (await log.get('many'))!
  t.equal(d.attempts, MAX_ATTEMPTS + 5, 'the count is exact')
  t.equal(d.attemptLog.length, MAX_ATTEMPTS, 'the list keeps the newest')
  t.equal(d.attemptLog[0]!.attempt, 6)
  t.ok(
    d.attemptLog.every((a) => Buffer.byteLength(a.response) <= 256),
    'response snippets are cut',
  )
})

t.test('an expired delivery disappears from listings and its index entry is removed', async (t) => {
  const { log, writes, redis, shard } = await setup(t, { max: 10 })
  await writes.record(attempt('keep'), 1000)
  await writes.record(attempt('lapse'), 2000)
  await redis.del(`${shard.dlogPrefix}d:lapse`, `${shard.dlogPrefix}a:lapse`) // as when its TTL runs out
  t.same(
    (await log.list({ limit: 10 })).deliveries.map((d) => d.id),
    ['keep'],
  )
  t.same(await redis.zrange(shard.dlogIndex, '0', '-1'), ['keep'])
})

t.test('pages follow the cursor without gaps or repeats, filters included', async (t) => {
  const { log, writes } = await setup(t, { max: 1000 })
  const ids: string[] = []
  for (let i = 0; i < 30; i++) {
    const id = `p${String(i).padStart(2, '0')}`
    ids.push(id)
    // pairs share a millisecond, to exercise ties
    await writes.record(
      attempt(id, { route: i % 3 === 0 ? 'three' : 'other', outcome: i % 2 === 0 ? 'delivered' : 'rejected', status: i % 2 === 0 ? 200 : 404 }),
      5000 + Math.floor(i / 2),
    )
  }
  const seen: string[] = []
  let cursor: string | undefined
  let pages = 0
  do {
    const page = await log.list({ limit: 7, cursor })
    seen.push(...page.deliveries.map((d) => d.id))
    cursor = page.nextCursor ?? undefined
    pages++
  } while (cursor !== undefined && pages < 20)
  t.equal(seen.length, 30)
  t.equal(new Set(seen).size, 30, 'no repeats')
  t.same([...seen].sort(), [...ids].sort(), 'no gaps')

  const filtered: string[] = []
  cursor = undefined
  do {
    const page = await log.list({ limit: 2, route: 'three', state: 'delivered', cursor })
    filtered.push(...page.deliveries.map((d) => d.id))
    cursor = page.nextCursor ?? undefined
  } while (cursor !== undefined)
  t.same(filtered.sort(), ids.filter((_, i) => i % 3 === 0 && i % 2 === 0).sort())
})

t.test('DELIVERY_LOG_MAX=0 turns the log off', async (t) => {
  const { log, writes, redis, p } = await setup(t, { max: 0 })
  await writes.record(attempt('x'))
  t.equal(await log.get('x'), null)
  t.equal((await redis.keys(`${p}:*`)).length, 0)
})
