/**
 * The key layout: every Redis key and channel name the service uses, and nowhere else.
 *
 * Each group of keys that one Lua script or one multi-key command touches shares a hash tag (the
 * part in braces), so on Redis Cluster the group lives in one slot:
 *
 *   <prefix>:{routes}:defs              hash     route id → definition JSON (API routes)
 *   <prefix>:{routes}:patterns          hash     normalised pattern → route id
 *   <prefix>:{routes}:version           counter  bumped by every change
 *   <prefix>:{routes}:changed           channel  the new version, after each change
 *   <prefix>:{<shard>}:deliveries:*     BullMQ   the shard's delivery queue
 *   <prefix>:{<shard>}:txn:<id>         hash     a stored transaction whose jobs are in that shard
 *   <prefix>:{<shard>}:dlog:d:<id>      hash     delivery log record of a job of that shard
 *   <prefix>:{<shard>}:dlog:a:<id>      list     its attempts
 *   <prefix>:{<shard>}:dlog:index       zset     the shard's delivery log index
 *   <prefix>:results:<process>          channel  results for the sessions waiting in one process
 *   <prefix>:route-state:{<id>}         hash     a route's health (pause, circuit, streak, last attempt)
 *   <prefix>:route-state:{<id>}:slots   zset     its concurrency slots; also :rate, :stats, :held
 *   <prefix>:route-state:{<id>}:changed channel  its new condition, after each change
 *   <prefix>:{events}:events:*          BullMQ   the operational events queue
 *
 * A transaction, its jobs and their delivery log records live in one shard (one slot, so one
 * primary): they are written on one connection in order, and WAIT/WAITAOF on that connection covers
 * them all. The result channels need no tag: each is one channel, published to with one command.
 * A route's state keys and its change channel share the route id as tag: each script of
 * src/routing/state.ts and src/delivery/limits.ts touches one route and publishes its change from
 * the same slot (a cluster refuses a script's SPUBLISH to a channel of another slot), and the load
 * of many routes spreads over the primaries.
 *
 * Shard tags are fixed forever (they are key names). They were chosen so that, for every number of
 * shards N from 1 to MAX_QUEUE_SHARDS, the first N tags hash into N different N-ths of the slot
 * space: on a cluster whose slots are split evenly over M primaries (what `redis-cli --cluster
 * create` and managed services do), QUEUE_SHARDS=M puts one queue on each primary, and any multiple
 * of M puts the same number on each. Every tag is at least 48 slots away from the edges of those
 * splits. test/redis/cluster.test.ts checks the slots with CLUSTER KEYSLOT.
 *
 * Versions before this layout used untagged names (LegacyKeys); they are read to migrate routes and
 * to drain the jobs an older version queued (see docs/deployment.md, upgrading).
 */

/** Hash tag and slot of each queue shard, in shard order. */
export const SHARD_TAGS: readonly { readonly tag: string; readonly slot: number }[] = [
  { tag: 's0-60', slot: 586 },
  { tag: 's1-50', slot: 8621 },
  { tag: 's2-32', slot: 12437 },
  { tag: 's3-15', slot: 4260 },
  { tag: 's4-67', slot: 14428 },
  { tag: 's5-103', slot: 6973 },
  { tag: 's6-0', slot: 10309 },
  { tag: 's7-128', slot: 2231 },
  { tag: 's8-12', slot: 15964 },
  { tag: 's9-48', slot: 5719 },
  { tag: 's10-8', slot: 11085 },
  { tag: 's11-244', slot: 2811 },
]

export const MAX_QUEUE_SHARDS = SHARD_TAGS.length

/** The BullMQ queue name inside each shard's prefix. */
export const QUEUE_NAME = 'deliveries'

/** The keys of one delivery shard: its queue, its transactions, its part of the delivery log. */
export interface ShardKeys {
  /** 0..N-1, or 'legacy' for the untagged layout of older versions (drained, never added to). */
  readonly id: number | 'legacy'
  /** Cluster slot of every key below (null for the legacy layout, which never runs on a cluster). */
  readonly slot: number | null
  /** BullMQ `prefix` option: the queue's keys are `<queuePrefix>:deliveries:*`. */
  readonly queuePrefix: string
  /** A key of this shard's slot, to find the node that holds it. */
  readonly anchor: string
  txn(txnId: string): string
  /** Delivery log: `<dlogPrefix>d:<id>` (record), `<dlogPrefix>a:<id>` (attempts), `dlogIndex`. */
  readonly dlogPrefix: string
  readonly dlogIndex: string
}

/** The keys of one route's state (src/routing/state.ts), all in the slot of the route id. */
export interface RouteStateKeys {
  readonly state: string
  readonly slots: string
  readonly rate: string
  readonly stats: string
  readonly held: string
  /** Channel: the route's condition after each change of it. */
  readonly changed: string
}

export interface RouteKeys {
  readonly defs: string
  readonly patterns: string
  readonly version: string
  readonly changed: string
}

/** Names an older version used, all untagged. */
export interface LegacyKeys {
  readonly routes: RouteKeys
  readonly shard: ShardKeys
  /** Keys whose presence means that version's queue was in use (a worker writes `meta` at start). */
  readonly queueMarkers: readonly string[]
}

export class KeyLayout {
  readonly routes: RouteKeys
  readonly shards: readonly ShardKeys[]
  readonly legacy: LegacyKeys
  /** BullMQ `prefix` of the operational events queue (src/delivery/events.ts). */
  readonly eventsPrefix: string

  constructor(
    readonly prefix: string,
    shardCount: number,
  ) {
    if (!Number.isInteger(shardCount) || shardCount < 1 || shardCount > MAX_QUEUE_SHARDS) {
      throw new RangeError(`shard count must be 1 to ${MAX_QUEUE_SHARDS}, got ${shardCount}`)
    }
    this.routes = routeKeys(prefix)
    this.eventsPrefix = `${prefix}:{events}`
    this.shards = SHARD_TAGS.slice(0, shardCount).map(({ tag, slot }, id) => shardKeys(id, slot, `${prefix}:{${tag}}`))
    const legacyShard = shardKeys('legacy', null, prefix)
    this.legacy = {
      routes: { defs: `${prefix}:routes`, patterns: `${prefix}:routes:patterns`, version: `${prefix}:routes:version`, changed: `${prefix}:routes:changed` },
      shard: legacyShard,
      queueMarkers: ['meta', 'wait', 'active', 'delayed', 'failed', 'prioritized', 'paused'].map((k) => `${prefix}:${QUEUE_NAME}:${k}`),
    }
  }

  /** The channel a process's waiting sessions receive their results on. */
  results(address: string): string {
    return `${this.prefix}:results:${address}`
  }

  routeState(routeId: string): RouteStateKeys {
    return routeStateKeys(this.prefix, routeId)
  }
}

/** Every key of a route's state, with the route id as hash tag. */
export function routeStateKeys(prefix: string, routeId: string): RouteStateKeys {
  const base = `${prefix}:route-state:{${routeId}}`
  return { state: base, slots: `${base}:slots`, rate: `${base}:rate`, stats: `${base}:stats`, held: `${base}:held`, changed: `${base}:changed` }
}

export function routeKeys(prefix: string): RouteKeys {
  const r = `${prefix}:{routes}`
  return { defs: `${r}:defs`, patterns: `${r}:patterns`, version: `${r}:version`, changed: `${r}:changed` }
}

function shardKeys(id: number | 'legacy', slot: number | null, base: string): ShardKeys {
  return {
    id,
    slot,
    queuePrefix: base,
    anchor: `${base}:${QUEUE_NAME}:meta`,
    txn: (txnId) => `${base}:txn:${txnId}`,
    dlogPrefix: `${base}:dlog:`,
    dlogIndex: `${base}:dlog:index`,
  }
}
