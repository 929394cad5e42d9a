/**
 * Accept mode makes this service the party responsible for the mail: a 250 may only be sent once
 * the queued job is on disk. With Redis >= 7.2 that is `WAITAOF 1 0 <timeout>` on the connection that
 * wrote the job; on older Redis only `appendfsync always` gives the same guarantee. With
 * REDIS_MIN_REPLICAS_ACK=N, `WAIT N <timeout>` on that connection then confirms that N replicas
 * have the writes too, so a failover to one of them keeps the job.
 *
 * On a cluster every primary is probed, and accept mode needs all of them durable.
 */
import { AppError } from '../errors.js'
import { primaries, type RedisClient, type WriteSession } from '../redis/connections.js'

export interface Durability {
  readonly aof: boolean
  readonly version: string
  /** WAITAOF is available (Redis >= 7.2). */
  readonly waitaof: boolean
  /** Every write is fsynced before the reply (appendfsync always). */
  readonly fsyncAlways: boolean
  /** Accept mode can be honoured. */
  readonly durable: boolean
  /** Replicas connected to the primary at start-up (on a cluster: the fewest of any primary). */
  readonly replicas: number
}

function versionAtLeast(version: string, major: number, minor: number): boolean {
  const [a = 0, b = 0] = version.split('.').map(Number)
  return a > major || (a === major && b >= minor)
}

type NodeDurability = Durability

async function probeNode(redis: Pick<RedisClient, 'info' | 'config'>): Promise<NodeDurability> {
  const info = await redis.info('persistence')
  const server = await redis.info('server')
  const replication = await redis.info('replication')
  const aof = /aof_enabled:1/.test(info)
  const version = /redis_version:([\d.]+)/.exec(server)?.[1] ?? '0.0.0'
  const replicas = Number(/connected_slaves:(\d+)/.exec(replication)?.[1] ?? 0)
  const waitaof = versionAtLeast(version, 7, 2)
  let fsyncAlways = false
  try {
    const reply = (await redis.config('GET', 'appendfsync')) as string[]
    fsyncAlways = reply[1] === 'always'
  } catch {
    // CONFIG may be disabled (managed Redis): rely on WAITAOF alone.
  }
  return { aof, version, waitaof, fsyncAlways, durable: aof && (waitaof || fsyncAlways), replicas }
}

/** What the Redis behind `client` can guarantee: the weakest of its primaries. */
export async function probeDurability(client: RedisClient): Promise<Durability> {
  const nodes = await Promise.all(primaries(client).map((node) => probeNode(node)))
  if (nodes.length === 0) throw new AppError('QUEUE_ERR_NOT_DURABLE', 'no Redis primary to probe')
  const older = (a: string, b: string): number => {
    const [x, y] = [a.split('.').map(Number), b.split('.').map(Number)]
    for (let i = 0; i < 3; i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) - (y[i] ?? 0)
    return 0
  }
  return {
    aof: nodes.every((n) => n.aof),
    version: nodes.map((n) => n.version).sort(older)[0]!,
    waitaof: nodes.every((n) => n.waitaof),
    fsyncAlways: nodes.every((n) => n.fsyncAlways),
    durable: nodes.every((n) => n.durable),
    replicas: Math.min(...nodes.map((n) => n.replicas)),
  }
}

/**
 * Waits until the writes of `session` are fsynced to the primary's AOF and, with `minReplicas`,
 * acknowledged by that many replicas; throws QUEUE_ERR_NOT_DURABLE otherwise, within `timeoutMs`.
 * If the session's connection changed since the writes (ioredis reconnected and resent them, or a
 * cluster slot moved), WAITAOF/WAIT would answer for a client that wrote nothing: not confirmed.
 */
export async function waitDurable(session: WriteSession, durability: Durability, timeoutMs: number, minReplicas = 0): Promise<void> {
  const deadline = Date.now() + timeoutMs
  const sameClient = (): NonNullable<WriteSession['connection']> => {
    if (session.connection === null || !session.unchanged())
      throw new AppError('QUEUE_ERR_NOT_DURABLE', 'the Redis connection was re-established after the writes; WAITAOF/WAIT cannot cover them')
    return session.connection
  }
  if (durability.waitaof) {
    const reply = (await sameClient().call('WAITAOF', '1', '0', String(timeoutMs))) as [number, number]
    sameClient()
    if (!Array.isArray(reply) || reply[0] < 1) throw new AppError('QUEUE_ERR_NOT_DURABLE', 'WAITAOF timed out before the local fsync')
  } else if (!durability.fsyncAlways) {
    // With appendfsync always each write was fsynced before its reply, on whichever connection
    // it was (re)sent; without it nothing can confirm it.
    throw new AppError('QUEUE_ERR_NOT_DURABLE', 'Redis has no WAITAOF and appendfsync is not always')
  }
  if (minReplicas > 0) {
    const connection = sameClient()
    const acked = (await connection.call('WAIT', String(minReplicas), String(Math.max(1, deadline - Date.now())))) as number
    sameClient()
    if (typeof acked !== 'number' || acked < minReplicas)
      throw new AppError('QUEUE_ERR_NOT_DURABLE', `${acked} of the ${minReplicas} replicas required (REDIS_MIN_REPLICAS_ACK) acknowledged the writes in time`)
  }
}
