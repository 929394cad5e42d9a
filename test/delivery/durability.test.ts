import t, { type Test } from 'tap'
import { once } from 'node:events'
import { Redis } from 'ioredis'
import { isAppError } from '../../src/errors.js'
import { waitDurable, type Durability } from '../../src/delivery/durability.js'

const withWaitaof: Durability = { aof: true, version: '7.2.0', waitaof: true, fsyncAlways: false, durable: true }
const fsyncAlways: Durability = { aof: true, version: '7.0.15', waitaof: false, fsyncAlways: true, durable: true }
const notDurable: Durability = { aof: false, version: '7.0.15', waitaof: false, fsyncAlways: false, durable: false }

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
  await redis.ping()
  await reconnect(redis)
  t.not(redis.stream, socket, 'ioredis made a new socket')
  const err = await waitDurable(redis, withWaitaof, 1000, socket).catch((e: unknown) => e)
  t.ok(isAppError(err, 'QUEUE_ERR_NOT_DURABLE'), 'QUEUE_ERR_NOT_DURABLE, not a Redis error from sending WAITAOF')
  t.match((err as Error).message, /re-established/)
})

t.test('with appendfsync always every acknowledged write is on disk, whichever socket carried it', async (t) => {
  const redis = await connected(t)
  const socket = redis.stream
  await reconnect(redis)
  await t.resolves(waitDurable(redis, fsyncAlways, 1000, socket))
})

t.test('a Redis that can neither WAITAOF nor fsync every write is never called durable', async (t) => {
  const redis = await connected(t)
  const err = await waitDurable(redis, notDurable, 1000, redis.stream).catch((e: unknown) => e)
  t.ok(isAppError(err, 'QUEUE_ERR_NOT_DURABLE'))
})
