/**
 * The one place that builds the service's Redis connections, for each topology:
 *
 * - standalone: `REDIS_URL` (redis://, rediss://, a unix socket);
 * - sentinel: the sentinels are asked for the current master of `REDIS_SENTINEL_NAME`, and asked
 *   again on every reconnect (a failover is a reconnect to another address);
 * - cluster: `REDIS_CLUSTER_NODES` are seeds; every command is routed to the primary of its slot.
 *
 * Credentials and TLS apply to every data connection (Sentinel has its own credentials and uses the
 * same TLS settings). Every connection except the subscriber and BullMQ's blocking duplicates
 * coalesces its writes per event-loop turn (coalesce.ts); on a cluster that is done on each node
 * connection, as nodes come and go.
 *
 * Roles (src/app.ts wires them): `app` and `queue` fail a command after two retries or
 * COMMAND_TIMEOUT_MS, so an LMTP session gives the safe reply instead of waiting on a Redis that is
 * away; `worker` waits for Redis forever, as BullMQ's worker requires.
 */
import type { Socket } from 'node:net'
import type { ConnectionOptions } from 'node:tls'
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis'
import type { Logger } from 'pino'
import type { Config } from '../config.js'
import { AppError } from '../errors.js'
import { coalesceWrites } from './coalesce.js'
import { SentinelFailoverConnector } from './sentinel.js'

export type RedisClient = Redis | Cluster
export type ConnectionRole = 'app' | 'queue' | 'worker' | 'subscriber'

/** Commands of the LMTP path fail after this long rather than wait (the session then answers 451). */
export const COMMAND_TIMEOUT_MS = 5_000

export type RedisSettings = Config['redis']

export function isCluster(client: RedisClient): client is Cluster {
  return (client as Cluster).isCluster === true
}

function tlsOptions(settings: RedisSettings): ConnectionOptions | undefined {
  const tls = settings.tls
  if (tls === null) return undefined
  const options: ConnectionOptions = {}
  if (tls.ca !== null) options.ca = tls.ca
  if (tls.cert !== null) options.cert = tls.cert
  if (tls.key !== null) options.key = tls.key
  if (tls.servername !== null) options.servername = tls.servername
  return options
}

/** Options every data connection of `role` shares, whatever the topology. */
function roleOptions(settings: RedisSettings, role: ConnectionRole): RedisOptions {
  const options: RedisOptions = {
    maxRetriesPerRequest: role === 'worker' ? null : 2,
    // A Redis that stops answering (not refusing) must not hold an LMTP session until the MTA's
    // own timeout: its commands fail, and the session gives the safe reply for the mode.
    commandTimeout: role === 'worker' || role === 'subscriber' ? undefined : COMMAND_TIMEOUT_MS,
    connectionName: `lmtp-webhook:${role}`,
    lazyConnect: true,
    // A primary demoted to a replica (manual failover) answers writes with READONLY: reconnect,
    // which in sentinel mode asks the sentinels for the new primary.
    reconnectOnError: (err) => (err.message.startsWith('READONLY') ? 2 : false),
  }
  if (settings.username !== null) options.username = settings.username
  if (settings.password !== null) options.password = settings.password
  const tls = tlsOptions(settings)
  if (tls) options.tls = tls
  return options
}

export interface RedisConnectionsOptions {
  readonly log: Logger
  /** Called for every error a connection reports (metrics). */
  readonly onError?: () => void
}

export class RedisConnections {
  private readonly opened = new Map<RedisClient, ConnectionRole>()
  private closing = false

  constructor(
    readonly settings: RedisSettings,
    private readonly options: RedisConnectionsOptions,
  ) {}

  get mode(): RedisSettings['mode'] {
    return this.settings.mode
  }

  /** A new, not yet connected, connection for `role`; `connect()` it. */
  open(role: ConnectionRole): RedisClient {
    const client = this.build(role)
    this.opened.set(client, role)
    // ioredis ends a connection for good when a connect is cancelled or its retries give up; it
    // never comes back by itself, so the process is not ready any more (readiness reads this).
    client.on('end', () => {
      if (!this.closing && this.opened.has(client)) this.options.log.error({ role }, 'a Redis connection closed for good: not ready; restart the process')
    })
    const report = (err: Error): void => {
      this.options.onError?.()
      this.options.log.warn({ err: err.message, role }, 'redis error')
    }
    client.on('error', report)
    if (isCluster(client)) {
      client.on('node error', (err: Error, node: string) => {
        this.options.onError?.()
        this.options.log.warn({ err: err.message, role, node }, 'redis cluster node error')
      })
    }
    if (role !== 'subscriber') installCoalescing(client)
    return client
  }

  private build(role: ConnectionRole): RedisClient {
    const s = this.settings
    const base = roleOptions(s, role)
    if (s.mode === 'cluster') {
      const clusterOptions: ClusterOptions = {
        lazyConnect: true,
        redisOptions: base,
        // Sharded pub/sub (SSUBSCRIBE): one subscriber connection per primary, each channel on the
        // primary of its slot; resubscribed when slots move.
        shardedSubscribers: role === 'subscriber',
      }
      // With TLS, keep host names as given: certificates name hosts, not the addresses they resolve to.
      if (s.tls !== null) clusterOptions.dnsLookup = (address, callback) => callback(null, address)
      return new Cluster(
        s.clusterNodes.map((n) => ({ host: n.host, port: n.port })),
        clusterOptions,
      )
    }
    if (s.mode === 'sentinel') {
      const tls = tlsOptions(s)
      const options: RedisOptions = {
        ...base,
        sentinels: s.sentinels.map((n) => ({ host: n.host, port: n.port })),
        name: s.sentinelName,
        // Follow +switch-master at once instead of waiting for the old primary's socket to fail,
        // with a detector that lives only as long as the connection it watches (sentinel.ts).
        failoverDetector: true,
        Connector: SentinelFailoverConnector,
      }
      if (s.sentinelUsername !== null) options.sentinelUsername = s.sentinelUsername
      if (s.sentinelPassword !== null) options.sentinelPassword = s.sentinelPassword
      if (tls) {
        options.enableTLSForSentinelMode = true
        options.sentinelTLS = tls
      }
      return new Redis(options)
    }
    return new Redis(s.url, base)
  }

  /** The roles of the connections that have closed for good (status `end`) while the app runs. */
  closedForGood(): ConnectionRole[] {
    if (this.closing) return []
    return [...this.opened].filter(([client]) => client.status === 'end').map(([, role]) => role)
  }

  /** The connections of one role (tests, diagnostics). */
  ofRole(role: ConnectionRole): RedisClient[] {
    return [...this.opened].filter(([, r]) => r === role).map(([client]) => client)
  }

  /** From now on, connections closing is the shutdown's doing, not a failure. */
  shutDown(): void {
    this.closing = true
  }

  /** Closes every connection opened here that is still open, without waiting on a Redis that is gone. */
  disconnectAll(): void {
    this.closing = true
    for (const client of this.opened.keys()) client.disconnect()
    this.opened.clear()
  }
}

/**
 * Coalesces the writes of `client`: on every new socket (ioredis makes one per (re)connect) and, on
 * a cluster, on every node connection as it is added.
 */
export function installCoalescing(client: RedisClient): void {
  const onNode = (node: Redis): void => {
    node.on('connect', () => coalesceWrites(node.stream as Socket))
    if (node.stream) coalesceWrites(node.stream as Socket)
  }
  if (isCluster(client)) {
    client.on('+node', onNode)
    for (const node of client.nodes()) onNode(node)
  } else onNode(client)
}

/** The primaries behind `client`: itself, or every primary of a cluster. */
export function primaries(client: RedisClient): Redis[] {
  return isCluster(client) ? client.nodes('master') : [client]
}

/** The node connection that carries commands for `slot` now, and its socket. */
export interface SlotConnection {
  readonly connection: Redis
  readonly socket: unknown
}

/**
 * Where commands for keys of `slot` go now (a standalone or sentinel client: itself). WAIT and
 * WAITAOF only cover the writes of the connection they are sent on, so durability is checked there;
 * null when a cluster does not know the slot's primary.
 */
export function connectionForSlot(client: RedisClient, slot: number | null): SlotConnection | null {
  if (!isCluster(client)) return { connection: client, socket: client.stream }
  if (slot === null) return null
  const nodeKey = client.slots[slot]?.[0]
  if (nodeKey === undefined) return null
  const node = client.nodes('master').find((n) => `${n.options.host}:${n.options.port}` === nodeKey)
  return node ? { connection: node, socket: node.stream } : null
}

/** Where the settings point, for messages (never credentials). */
export function describeTarget(settings: RedisSettings): string {
  if (settings.mode === 'sentinel')
    return `Sentinel master "${settings.sentinelName}" via ${settings.sentinels.map((n) => `${n.host}:${n.port}`).join(',')} (REDIS_SENTINELS, REDIS_SENTINEL_NAME, REDIS_SENTINEL_PASSWORD, REDIS_PASSWORD)`
  if (settings.mode === 'cluster')
    return `Redis Cluster via ${settings.clusterNodes.map((n) => `${n.host}:${n.port}`).join(',')} (REDIS_CLUSTER_NODES, REDIS_PASSWORD)`
  return `Redis at ${settings.url.replace(/\/\/[^@/]*@/, '//<credentials>@')} (REDIS_URL, REDIS_PASSWORD)`
}

/**
 * Connects `client` at start-up, or throws QUEUE_ERR_REDIS_UNREACHABLE with the last error seen
 * (refused, WRONGPASS, a TLS failure, "all sentinels are unreachable") once `timeoutMs` has passed:
 * ioredis would otherwise keep retrying, and a process that can never start must say why.
 */
export async function connectClient(client: RedisClient, settings: RedisSettings, timeoutMs: number): Promise<void> {
  let last: Error | null = null
  const onError = (err: Error): void => {
    last = err
  }
  client.on('error', onError)
  let timer: NodeJS.Timeout | undefined
  try {
    await Promise.race([
      client.connect(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs)
      }),
    ])
  } catch (err) {
    client.disconnect()
    const reason = (last as Error | null)?.message ?? (err as Error).message
    throw new AppError('QUEUE_ERR_REDIS_UNREACHABLE', `cannot connect to ${describeTarget(settings)}: ${reason}`, { mode: settings.mode }, { cause: err })
  } finally {
    clearTimeout(timer)
    client.off('error', onError)
  }
}

/**
 * Closes a connection: QUIT when it is up (bounded by `ms`), a plain disconnect otherwise (QUIT on a
 * connection that is not up would wait in the offline queue for a reconnect).
 */
export async function closeClient(client: RedisClient, ms: number): Promise<void> {
  if (client.status !== 'ready') return client.disconnect()
  await Promise.race([client.quit().catch(() => undefined), new Promise((r) => setTimeout(r, ms).unref())])
  client.disconnect()
}

/**
 * The connection a group of writes to one slot goes out on, captured when they are issued. WAIT and
 * WAITAOF count only the writes of the connection they are sent on: if ioredis reconnected (and
 * resent them) or a cluster moved the slot in between, they cannot vouch for the writes.
 */
export interface WriteSession {
  /** Where the writes go (null when a cluster does not know the slot's primary). */
  readonly connection: Redis | null
  /** True while commands for the slot still go over the socket they went over at the start. */
  unchanged(): boolean
}

export function writeSession(client: RedisClient, slot: number | null): WriteSession {
  const before = connectionForSlot(client, slot)
  return {
    connection: before?.connection ?? null,
    unchanged: () => {
      if (before === null) return false
      const now = connectionForSlot(client, slot)
      return now !== null && now.connection === before.connection && now.connection.stream === before.socket
    },
  }
}
