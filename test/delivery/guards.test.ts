/**
 * Guard jobs are BullMQ jobs in every respect: the hash and the delayed-set entry the guard script
 * writes are what Queue.add writes, and a Worker takes and runs one when it falls due.
 */
import t from 'tap'
import { Redis } from 'ioredis'
import { Queue, Worker, UnrecoverableError } from 'bullmq'
import { setTimeout as sleep } from 'node:timers/promises'
import { cleanRedis, prefix, REDIS_URL } from '../helpers/app.js'
import { until } from '../helpers/until.js'
import { KeyLayout, QUEUE_NAME } from '../../src/redis/keys.js'
import { GuardJobs, type GuardEntry } from '../../src/delivery/guards.js'
import { jobOptions, type DeliveryJobData, type DeliveryShard } from '../../src/delivery/queue.js'
import { parseRoute } from '../../src/routing/schema.js'

async function setUp(t: { teardown: (fn: () => unknown) => void }) {
  const p = prefix()
  const redis = new Redis(REDIS_URL)
  const keys = new KeyLayout(p, 1).shards[0]!
  const queue = new Queue<DeliveryJobData>(QUEUE_NAME, { connection: redis, prefix: keys.queuePrefix })
  const errors: unknown[] = []
  const guards = new GuardJobs(redis, { queue, keys } as unknown as DeliveryShard, (err) => errors.push(err))
  t.teardown(async () => {
    guards.close()
    await queue.close()
    await cleanRedis(p)
    await redis.quit()
  })
  return { redis, queue, guards, keys, errors }
}

const route = parseRoute({ id: 'r', match: '*@example.com', url: 'http://127.0.0.1:9/hook', mode: 'accept', retry: { attempts: 4, backoff: '2s' } }, 'route')
const data = (rcpt: string): DeliveryJobData => ({ webhookId: `msg_${rcpt}`, txn: 't1', rcpt, route: 'r', mode: 'accept', replyTo: 'x', replyBy: 1 })
const entry = (id: string, delayMs: number, leased = false): GuardEntry => ({
  id,
  name: 'r',
  data: data(`${id}@example.com`),
  opts: jobOptions(id, route),
  delayMs,
  leased,
  checkLog: true,
})

t.test('a guard is stored as Queue.add stores the same delayed job', async (t) => {
  const { redis, queue, guards } = await setUp(t)
  const before = Date.now()
  t.same(await guards.add([entry('g1', 60_000), entry('g2', 60_000)]), ['new', 'new'])
  const e = entry('ref', 60_000)
  await queue.add(e.name, e.data, { ...e.opts, delay: e.delayMs })
  const mine = await redis.hgetall(queue.toKey('g1'))
  const theirs = await redis.hgetall(queue.toKey('ref'))
  t.same(Object.keys(mine).sort(), Object.keys(theirs).sort(), 'the same fields')
  t.same(JSON.parse(mine.opts!), { ...JSON.parse(theirs.opts!), jobId: 'g1' }, 'the same options')
  t.same(JSON.parse(mine.data!), data('g1@example.com'))
  t.equal(mine.delay, theirs.delay)
  t.equal(mine.priority, theirs.priority)
  const score = Number(await redis.zscore(queue.keys.delayed!, 'g1'))
  t.ok(Math.floor(score / 0x1000) >= before + 60_000 && Math.floor(score / 0x1000) <= Date.now() + 60_000, 'due after its delay')
  const job = await queue.getJob('g1')
  t.equal(await job!.getState(), 'delayed')
  t.equal(job!.opts.attempts, 4)
  t.same(await queue.getJobCounts('delayed'), { delayed: 3 })
})

t.test('a Worker takes a guard that falls due; the add reports what is there already', async (t) => {
  const { redis, queue, guards, keys } = await setUp(t)
  const seen: string[] = []
  const blocking = new Redis(REDIS_URL, { maxRetriesPerRequest: null })
  const worker = new Worker<DeliveryJobData>(
    QUEUE_NAME,
    async (job) => {
      seen.push(job.id!)
      if (job.id === 'dies') throw new UnrecoverableError('refused')
    },
    { connection: blocking, prefix: keys.queuePrefix },
  )
  t.teardown(async () => {
    await worker.close()
    blocking.disconnect()
  })
  t.same(await guards.add([entry('due', 200), entry('dies', 200), entry('later', 60_000), entry('now', 0)]), ['new', 'new', 'new', 'new'])
  await until('the job without delay runs', () => seen.includes('now'), 5_000)
  await until('both due guards run', () => seen.length === 3, 10_000)
  t.same(seen.sort(), ['dies', 'due', 'now'])
  await until('the refusal is a dead letter', async () => (await queue.getJobState('dies')) === 'failed')
  await redis.hset(`${keys.dlogPrefix}d:due`, 'state', 'delivered')
  t.same(await guards.add([entry('due', 60_000), entry('dies', 60_000), entry('later', 60_000)]), ['delivered', 'dead', 'pending'])
  t.equal(await queue.getJobState('later'), 'delayed')
})

t.test('remove takes only guards still delayed, the removals of one turn in one call', async (t) => {
  const { queue, guards, errors } = await setUp(t)
  await guards.add([entry('a', 60_000), entry('b', 60_000), entry('c', 60_000)])
  await queue.getJob('c').then((j) => j!.promote()) // as if a worker had taken it
  guards.remove('a')
  guards.remove('b')
  guards.remove('c')
  await until('removed', async () => (await queue.getJobCounts('delayed')).delayed === 0)
  await sleep(50)
  t.equal(await queue.getJob('a'), undefined)
  t.equal(await queue.getJob('b'), undefined)
  t.equal(await queue.getJobState('c'), 'waiting', 'a guard a worker may hold is left alone')
  t.same(errors, [])
})
