/**
 * The Redis connections one process opens, per role, counted with CLIENT LIST on a Redis of its
 * own: what docs/architecture.md ("Redis", "Connections") says.
 */
import t from 'tap'
import { Redis } from 'ioredis'
import { startApp } from '../helpers/app.js'
import { privateRedis } from '../helpers/redis.js'
import { until } from '../helpers/until.js'

/** Connection names of everyone but the probe; BullMQ names its blocking connection `<prefix>:<base64 queue name>`. */
async function clients(probe: Redis, keyPrefix: string): Promise<string[]> {
  const list = (await probe.client('LIST')) as string
  return list
    .split('\n')
    .filter((l) => l.trim() !== '' && !/ name=probe /.test(l))
    .map((l) => /name=(\S*)/.exec(l)?.[1] ?? '')
    .map((name) => (name.startsWith(`${keyPrefix}:`) ? 'bullmq-blocking' : name))
    .sort()
}

const B = 'bullmq-blocking'
const [APP, SUB, QUEUE, WORKER] = ['lmtp-webhook:app', 'lmtp-webhook:subscriber', 'lmtp-webhook:queue', 'lmtp-webhook:worker']

const cases: { name: string; env: Record<string, string>; names: string[] }[] = [
  { name: 'ROLE=all', env: { ROLE: 'all' }, names: [B, APP, QUEUE, SUB, WORKER] },
  // the worker connection is connected but idle; no blocking wait
  { name: 'ROLE=listener', env: { ROLE: 'listener' }, names: [APP, QUEUE, SUB, WORKER] },
  // the subscriber carries the route store's and the route state's channels (no result channel)
  { name: 'ROLE=worker', env: { ROLE: 'worker', LMTP_PORT: 'off' }, names: [B, APP, QUEUE, SUB, WORKER] },
  // one BullMQ worker, so one blocking connection, per queue shard
  { name: 'ROLE=all, QUEUE_SHARDS=3', env: { ROLE: 'all', QUEUE_SHARDS: '3' }, names: [B, B, B, APP, QUEUE, SUB, WORKER] },
  // the events worker's blocking wait
  { name: 'ROLE=all, EVENTS_URL', env: { ROLE: 'all', EVENTS_URL: 'http://127.0.0.1:9/events' }, names: [B, B, APP, QUEUE, SUB, WORKER] },
]

for (const { name, env, names } of cases) {
  t.test(`${name}: ${names.length} connections`, async (t) => {
    const redis = await privateRedis(t, ['--appendonly', 'no'])
    const probe = new Redis(redis.url.slice('unix://'.length), { connectionName: 'probe' })
    t.teardown(() => probe.quit())
    const { prefix } = await startApp(t, { REDIS_URL: redis.url, ...env }, {}, { clean: false })
    let seen: string[] = []
    await until(`${names.length} connections`, async () => {
      seen = await clients(probe, prefix)
      return JSON.stringify(seen) === JSON.stringify(names)
    }).catch(() => undefined) // the assertion below shows what there is

    t.same(seen, names, `the connections of ${name}`)
  })
}
