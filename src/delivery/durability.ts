/**
 * Accept mode makes this service the party responsible for the mail: a 250 may only be sent once
 * the queued job is on disk. With Redis >= 7.2 that is `WAITAOF 1 0 <timeout>` on the connection that
 * wrote the job; on older Redis only `appendfsync always` gives the same guarantee.
 */
import type { Redis } from 'ioredis'
import { AppError } from '../errors.js'

export interface Durability {
  readonly aof: boolean
  readonly version: string
  /** WAITAOF is available (Redis >= 7.2). */
  readonly waitaof: boolean
  /** Every write is fsynced before the reply (appendfsync always). */
  readonly fsyncAlways: boolean
  /** Accept mode can be honoured. */
  readonly durable: boolean
}

function versionAtLeast(version: string, major: number, minor: number): boolean {
  const [a = 0, b = 0] = version.split('.').map(Number)
  return a > major || (a === major && b >= minor)
}

export async function probeDurability(redis: Redis): Promise<Durability> {
  const info = await redis.info('persistence')
  const server = await redis.info('server')
  const aof = /aof_enabled:1/.test(info)
  const version = /redis_version:([\d.]+)/.exec(server)?.[1] ?? '0.0.0'
  const waitaof = versionAtLeast(version, 7, 2)
  let fsyncAlways = false
  try {
    const reply = (await redis.config('GET', 'appendfsync')) as string[]
    fsyncAlways = reply[1] === 'always'
  } catch {
    // CONFIG may be disabled (managed Redis): rely on WAITAOF alone.
  }
  return { aof, version, waitaof, fsyncAlways, durable: aof && (waitaof || fsyncAlways) }
}

/**
 * Waits until the writes made on `connection` are fsynced to the local AOF. `socket` is the
 * connection's socket when those writes were issued (`connection.stream`): WAITAOF only covers the
 * writes of the Redis client it is sent on, so if ioredis has reconnected in between (and would
 * resend WAITAOF on a client that wrote nothing, which returns at once) durability is not confirmed.
 */
export async function waitDurable(connection: Redis, durability: Durability, timeoutMs: number, socket: unknown): Promise<void> {
  if (!durability.waitaof) {
    // Each write was fsynced before its reply, on whichever connection it was (re)sent.
    if (durability.fsyncAlways) return
    throw new AppError('QUEUE_ERR_NOT_DURABLE', 'Redis has no WAITAOF and appendfsync is not always')
  }
  const sameClient = (): void => {
    if (connection.stream !== socket)
      throw new AppError('QUEUE_ERR_NOT_DURABLE', 'the Redis connection was re-established after the writes; WAITAOF cannot cover them')
  }
  sameClient()
  const reply = (await connection.call('WAITAOF', '1', '0', String(timeoutMs))) as [number, number]
  sameClient()
  if (!Array.isArray(reply) || reply[0] < 1) throw new AppError('QUEUE_ERR_NOT_DURABLE', 'WAITAOF timed out before the local fsync')
}
