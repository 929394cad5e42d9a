/**
 * Sentinel: a connection that is reconnecting when the sentinels announce the new primary still
 * reaches it. The announcement (+switch-master) used to abort a reconnect that was asking a
 * sentinel where the primary is, which left the connection closed for good (src/redis/sentinel.ts).
 * Made deterministic: the sentinel every reconnect asks first is frozen, so the reconnect is
 * still asking when the other two promote the replica and announce it.
 */
import t from 'tap'
import type { Socket } from 'node:net'
import type { Redis } from 'ioredis'
import { pino } from 'pino'
import { sentinelSet } from '../helpers/redis.js'
import { until } from '../helpers/until.js'
import { loadConfig } from '../../src/config.js'
import { RedisConnections } from '../../src/redis/connections.js'

const set = await sentinelSet(t, { password: 'data-secret-0123', sentinelPassword: 'sentinel-secret-0123' })

t.test('a connection reconnecting while the sentinels announce the new primary reaches it', async (t) => {
  const config = loadConfig({ ...set.env, LMTP_DOMAINS: 'example.com', ADMIN_PORT: 'off', LOG_LEVEL: 'silent' })
  const connections = new RedisConnections(config.redis, { log: pino({ level: 'silent' }) })
  t.teardown(() => connections.disconnectAll())
  // Sentinel connections are never a Cluster.
  const worker = connections.open('worker') as Redis
  const queue = connections.open('queue') as Redis
  await Promise.all([worker.connect(), queue.connect()])
  // What BullMQ does for its blocking wait: a duplicate, with the same options.
  const blocking = worker.duplicate()
  t.teardown(() => blocking.disconnect())
  const clients = { worker, queue, blocking } as const
  for (const c of Object.values(clients)) await c.ping()

  // Every client resolved the primary through the first sentinel, and asks it first again.
  const [first, ...others] = set.sentinels
  process.kill(first!.pid, 'SIGSTOP')
  try {
    await set.primary.kill()
    const announced = (): boolean => others.every((s) => s.log().includes('+switch-master'))
    await until('the other sentinels to promote the replica and announce it', announced, 30_000)
    // The announcement has reached the clients' failover detectors; their reconnects still wait
    // on the frozen sentinel.
    await new Promise((resolve) => setTimeout(resolve, 500))
  } finally {
    process.kill(first!.pid, 'SIGCONT')
  }

  for (const [role, client] of Object.entries(clients)) {
    await until(
      `the ${role} connection on the promoted primary`,
      async () => {
        if (client.status === 'end') throw new Error(`the ${role} connection was closed for good`)
        if (client.status !== 'ready') return false
        return (await client.ping()) === 'PONG' && (client.stream as Socket).remotePort === set.replica.port
      },
      30_000,
    )
    t.pass(`${role}: connected to the promoted primary`)
  }
})
