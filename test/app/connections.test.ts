/**
 * The Redis connections one process opens, per role, counted with CLIENT LIST on a Redis of its
 * own: what docs/architecture.md ("Redis connections") says.
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

const expected: Record<string, string[]> = {
  all: ['bullmq-blocking', 'lmtp-webhook:app', 'lmtp-webhook:app', 'lmtp-webhook:app', 'lmtp-webhook:app', 'lmtp-webhook:queue', 'lmtp-webhook:worker'],
  listener: ['lmtp-webhook:app', 'lmtp-webhook:app', 'lmtp-webhook:app', 'lmtp-webhook:app', 'lmtp-webhook:queue', 'lmtp-webhook:worker'],
  worker: ['bullmq-blocking', 'lmtp-webhook:app', 'lmtp-webhook:app', 'lmtp-webhook:app', 'lmtp-webhook:queue', 'lmtp-webhook:worker'],
}

for (const [role, names] of Object.entries(expected)) {
  t.test(`ROLE=${role}: ${names.length} connections`, async (t) => {
    const redis = await privateRedis(t, ['--appendonly', 'no'])
    const probe = new Redis(redis.url.slice('unix://'.length), { connectionName: 'probe' })
    t.teardown(() => probe.quit())
    const { prefix } = await startApp(t, { REDIS_URL: redis.url, ROLE: role, ...(role === 'worker' ? { LMTP_PORT: 'off' } : {}) }, {}, { clean: false })
    let seen: string[] = []
    await until(`${names.length} connections`, async () => {
      seen = await clients(probe, prefix)
      return JSON.stringify(seen) === JSON.stringify(names)
    }).catch(() => undefined) // the assertion below shows what there is

    t.same(seen, names, `the connections of ROLE=${role}`)
  })
}
