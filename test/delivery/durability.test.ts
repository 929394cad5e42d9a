import t, { type Test } from 'tap'
import { once } from 'node:events'
import { Redis } from 'ioredis'
import { isAppError } from '../../src/errors.js'
import { waitDurable, type Durability } from '../../src/delivery/durability.js'
import { writeSession } from '../../src/redis/connections.js'

const withWaitaof: Durability = { aof: true, version: '7.2.0', waitaof: true, fsyncAlways: false, durable: true, replicas: 0 }
const fsyncAlways: Durability = { aof: true, version: '7.0.15', waitaof: false, fsyncAlways: true, durable: true, replicas: 0 }
const notDurable: Durability = { aof: false, version: '7.0.15', waitaof: false, fsyncAlways: false, durable: false, replicas: 0 }

async function connected(t: Test): Promise<Redis> {
  const redis = new Redis('redis://127.0.0.1:6379', { lazyConnect: true, retryStrategy: () => 10 })
  await redis.connect()
  t.teardown(() => redis.disconnect())
  return redis
}

/** Drops the socket under ioredis and waits until it has connected again. */
async function reconnect(redis: Redis): Promise<void> {
  const ready = once(redis, 'ready')
  redis.stream.destroy()
  await ready
}

t.test('WAITAOF cannot vouch for writes made before a reconnect: not durable, and it is not sent', async (t) => {
  const redis = await connected(t)
  const socket = redis.stream
  const session = writeSession(redis, null)
  await redis.ping()
  await reconnect(redis)
  t.not(redis.stream, socket, 'ioredis made a new socket')
  const err = await waitDurable(session, withWaitaof, 1000).catch((e: unknown) => e)
  t.ok(isAppError(err, 'QUEUE_ERR_NOT_DURABLE'), 'QUEUE_ERR_NOT_DURABLE, not a Redis error from sending WAITAOF')
  t.match((err as Error).message, /re-established/)
})

t.test('with appendfsync always every acknowledged write is on disk, whichever socket carried it', async (t) => {
  const redis = await connected(t)
  const session = writeSession(redis, null)
  await reconnect(redis)
  await t.resolves(waitDurable(session, fsyncAlways, 1000))
})

t.test('a Redis that can neither WAITAOF nor fsync every write is never called durable', async (t) => {
  const redis = await connected(t)
  const err = await waitDurable(writeSession(redis, null), notDurable, 1000).catch((e: unknown) => e)
  t.ok(isAppError(err, 'QUEUE_ERR_NOT_DURABLE'))
})

t.test('REDIS_MIN_REPLICAS_ACK: a primary without that many replicas is not durable, within the timeout', async (t) => {
  const redis = await connected(t)
  const session = writeSession(redis, null)
  await redis.set(`test-durability-${process.pid}`, '1', 'PX', 1000)
  const err = await waitDurable(session, fsyncAlways, 300, 1).catch((e: unknown) => e)
  t.ok(isAppError(err, 'QUEUE_ERR_NOT_DURABLE'), 'not durable: no replica acknowledged')
  t.match((err as Error).message, /0 of the 1 replicas/)
})

t.test('REDIS_MIN_REPLICAS_ACK: after a reconnect WAIT is not sent for writes it cannot cover, even with appendfsync always', async (t) => {
  const redis = await connected(t)
  const session = writeSession(redis, null)
  await reconnect(redis)
  const err = await waitDurable(session, fsyncAlways, 300, 1).catch((e: unknown) => e)
  t.ok(isAppError(err, 'QUEUE_ERR_NOT_DURABLE'))
  t.match((err as Error).message, /re-established/)
})
