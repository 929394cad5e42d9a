/**
 * The delivery log: what operators see of each delivery (one per job id)
 * and of its attempts, kept in Redis with bounded retention.
 *
 * Redis keys, in the queue shard of the delivery's job (src/redis/keys.ts), so a delivery's record
 * is in the slot of its job and its stored message:
 *   <prefix>:{<shard>}:dlog:d:<id>    hash  the delivery: recipient, route, txn, mode, sender,
 *                                           message-id, state, last attempt
 *   <prefix>:{<shard>}:dlog:a:<id>    list  its attempts as JSON, oldest first (the newest MAX_ATTEMPTS kept)
 *   <prefix>:{<shard>}:dlog:index     zset  id scored by the time the delivery was first logged (ms)
 *
 * Every write is one Lua script (one round trip, no read-modify-write race between replicas): it
 * sets the fields, appends the attempt, refreshes the TTL of both keys (`ttlMs` after the last
 * change), indexes the delivery and trims the index to the newest `max` deliveries, deleting the
 * keys of what it trims. Each shard keeps `max / shards` (rounded up), so memory is bounded by about
 * `max` deliveries of at most MAX_ATTEMPTS attempts each, whatever the load. An index entry whose
 * keys expired is skipped (and removed) by readers; there are never more than `max` of them.
 * Readers merge the shards' indexes, newest first.
 */
import type { Logger } from 'pino'
import type { RedisClient } from '../redis/connections.js'
import type { ShardKeys } from '../redis/keys.js'
import { defineScript, runScript } from '../redis/scripts.js'
import { truncateUtf8 } from '../lmtp/reply.js'
import { failureReason, type AttemptRecord } from './worker.js'

export const DELIVERY_STATES = ['delivered', 'deferred', 'rejected', 'retrying', 'dead'] as const
export type DeliveryState = (typeof DELIVERY_STATES)[number]

/** Attempts kept per delivery (the oldest are dropped past it). */
export const MAX_ATTEMPTS = 100
/** Bytes of the webhook's response body kept per attempt. */
export const RESPONSE_BYTES = 256
/** Index entries a single listing examines at most; the page then ends with a cursor. */
const MAX_SCAN = 5000

export interface DeliveryAttempt {
  readonly attempt: number
  /** ISO 8601 time the attempt ended. */
  readonly at: string
  readonly status: number | null
  /** HOOK_ERR_* code when the attempt got no usable answer. */
  readonly error: string | null
  readonly durationMs: number
  readonly outcome: string
  /** `code enhanced` of the reply the attempt decided. */
  readonly reply: string
  /** First bytes of the response body. */
  readonly response: string
}

export interface Delivery {
  /** The job id (accept mode: the webhook id; defer mode: `<webhook id>.<txn>`). */
  readonly id: string
  readonly recipient: string
  readonly route: string
  readonly txn: string
  readonly mode: string
  /** Reverse path ('' for the null sender); null until the first attempt is logged. */
  readonly sender: string | null
  /** Message-ID with its angle brackets; null when unknown or absent. */
  readonly messageId: string | null
  readonly state: DeliveryState
  readonly attempts: number
  readonly createdAt: string
  readonly updatedAt: string
  readonly lastStatus: number | null
  readonly lastError: string | null
  readonly reply: string | null
  /** Why the delivery was dead-lettered. */
  readonly reason: string | null
}

export interface DeliveryWithAttempts extends Delivery {
  readonly attemptLog: readonly DeliveryAttempt[]
}

export interface DeliveryFilter {
  readonly recipient?: string | undefined
  readonly route?: string | undefined
  readonly state?: DeliveryState | undefined
  /** Created at or after (epoch ms). */
  readonly since?: number | undefined
  /** Created at or before (epoch ms). */
  readonly until?: number | undefined
  /** Exact reverse path, case-insensitive ('' for the null sender). */
  readonly sender?: string | undefined
  /** Exact Message-ID, with or without its angle brackets. */
  readonly messageId?: string | undefined
  readonly txn?: string | undefined
  readonly limit: number
  readonly cursor?: string | undefined
}

export interface DeliveryPage {
  readonly deliveries: Delivery[]
  /** Pass back as `cursor` for the next page; null at the end. */
  readonly nextCursor: string | null
}

/** What a delivery that has no attempt record yet is known by (a job). */
export interface DeliveryRef {
  readonly id: string
  readonly txn: string
  readonly rcpt: string
  readonly route: string
  readonly mode: string
}

/**
 * The writes of one event-loop turn to one shard's log, in order.
 * KEYS[1] the shard's index, then per write: the delivery hash, its attempts list.
 * ARGV[1] now (ms), ARGV[2] ttl (ms), ARGV[3] max deliveries, ARGV[4] max attempts,
 * ARGV[5] key prefix of deliveries (`<prefix>:dlog:`), then per write: id, attempt JSON or '',
 * the number of field/value items n, then n items.
 * Returns the number of deliveries trimmed.
 */
const WRITE = defineScript(
  'delivery-log-write',
  `
local now, ttl, max, maxAttempts, prefix = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local a = 6
for k = 2, #KEYS, 2 do
  local hash, list = KEYS[k], KEYS[k + 1]
  local id, attempt, n = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  if n > 0 then redis.call('HSET', hash, unpack(ARGV, a + 3, a + 2 + n)) end
  a = a + 3 + n
  redis.call('HSET', hash, 'updatedAt', now)
  redis.call('HSETNX', hash, 'createdAt', now)
  if attempt ~= '' then
    redis.call('HINCRBY', hash, 'attempts', 1)
    redis.call('RPUSH', list, attempt)
    redis.call('LTRIM', list, -maxAttempts, -1)
    redis.call('PEXPIRE', list, ttl)
  end
  redis.call('PEXPIRE', hash, ttl)
  redis.call('ZADD', KEYS[1], 'NX', now, id)
end
local trimmed = 0
local function drop(ids)
  for _, id in ipairs(ids) do
    redis.call('DEL', prefix .. 'd:' .. id, prefix .. 'a:' .. id)
    redis.call('ZREM', KEYS[1], id)
    trimmed = trimmed + 1
  end
end
local extra = redis.call('ZCARD', KEYS[1]) - max
if extra > 0 then drop(redis.call('ZRANGE', KEYS[1], 0, math.min(extra, 100) - 1)) end
redis.call('PEXPIRE', KEYS[1], ttl)
return trimmed
`,
)

/** The writes waiting for the end of the event-loop turn, for one shard. */
interface Batch {
  readonly keys: string[]
  readonly args: string[]
  readonly ids: string[]
  readonly done: Promise<void>
}

function stateOf(record: AttemptRecord): DeliveryState {
  if (record.outcome === 'delivered') return 'delivered'
  if (record.outcome === 'rejected') return 'rejected'
  if (!record.final) return 'retrying'
  return record.mode === 'defer' ? 'deferred' : 'dead'
}

/** A Message-ID as the log keeps it: with its angle brackets. */
function bracketed(id: string): string {
  return id.startsWith('<') && id.endsWith('>') ? id : `<${id.replace(/^<|>$/g, '')}>`
}

function encodeCursor(score: number, id: string): string {
  return Buffer.from(`${score}:${id}`).toString('base64url')
}

/** Null when the cursor is not one this log made. */
export function decodeCursor(cursor: string): { score: number; id: string } | null {
  const text = Buffer.from(cursor, 'base64url').toString('utf8')
  const m = /^(\d+):(.+)$/s.exec(text)
  return m ? { score: Number(m[1]), id: m[2]! } : null
}

function toDelivery(h: Record<string, string>): Delivery {
  const iso = (ms: string | undefined): string => new Date(Number(ms ?? 0)).toISOString()
  return {
    id: h.id ?? '',
    recipient: h.rcpt ?? '',
    route: h.route ?? '',
    txn: h.txn ?? '',
    mode: h.mode ?? '',
    sender: h.sender ?? null,
    messageId: h.messageId || null,
    state: (DELIVERY_STATES as readonly string[]).includes(h.state ?? '') ? (h.state as DeliveryState) : 'retrying',
    attempts: Number(h.attempts ?? 0),
    createdAt: iso(h.createdAt),
    updatedAt: iso(h.updatedAt),
    lastStatus: h.lastStatus ? Number(h.lastStatus) : null,
    lastError: h.lastError || null,
    reply: h.reply || null,
    reason: h.reason || null,
  }
}

export interface DeliveryLogOptions {
  /** Deliveries kept (DELIVERY_LOG_MAX); 0 turns the log off. */
  readonly max: number
  /** Retention of each delivery after its last change (DELIVERY_LOG_TTL). */
  readonly ttlMs: number
  readonly log: Logger
  /** Called when a write fails (metrics). */
  readonly onError?: (err: unknown) => void
}

interface IndexEntry {
  readonly id: string
  readonly score: number
  readonly shard: ShardKeys
}

/** Newest-first entries of one shard's index below a cursor, fetched in batches. */
class IndexReader {
  private buffer: IndexEntry[] = []
  private offset = 0
  private exhausted = false

  /** `range`: the scores to read (the cursor's and the time window's bounds), `max` first. */
  constructor(
    private readonly redis: RedisClient,
    readonly shard: ShardKeys,
    private readonly from: { score: number; id: string } | null,
    private readonly range: { readonly max: string; readonly min: string },
    private readonly batch: number,
  ) {}

  async peek(): Promise<IndexEntry | null> {
    while (this.buffer.length === 0 && !this.exhausted) {
      const { max, min } = this.range
      const entries = await this.redis.zrevrangebyscore(this.shard.dlogIndex, max, min, 'WITHSCORES', 'LIMIT', this.offset, this.batch)
      this.offset += entries.length / 2
      if (entries.length / 2 < this.batch) this.exhausted = true
      for (let i = 0; i < entries.length; i += 2) {
        const id = entries[i]!
        const score = Number(entries[i + 1])
        // Same-score entries come in reverse lexical order: skip those up to the cursor's.
        if (this.from !== null && score === this.from.score && id >= this.from.id) continue
        this.buffer.push({ id, score, shard: this.shard })
      }
    }
    return this.buffer[0] ?? null
  }

  take(): IndexEntry {
    return this.buffer.shift()!
  }
}

const newer = (a: IndexEntry, b: IndexEntry): boolean => a.score > b.score || (a.score === b.score && a.id > b.id)

/** Writes of one shard's part of the log (the deliveries of that shard's jobs). */
export interface ShardDeliveryLog {
  /** Records one webhook attempt (the worker's onAttempt hook). Never throws; failures are logged. */
  record(r: AttemptRecord, now?: number): Promise<void>
  /** Sets the state of a delivery (dead-lettered, replayed), creating its record if needed. */
  setState(ref: DeliveryRef, state: DeliveryState, reason?: string, now?: number): Promise<void>
}

export class DeliveryLog {
  private readonly perShard: number
  private readonly batches = new Map<ShardKeys, Batch>()

  /** `shards`: every shard whose deliveries are logged (the queue shards, and a drained legacy one). */
  constructor(
    private readonly redis: RedisClient,
    private readonly shards: readonly ShardKeys[],
    private readonly options: DeliveryLogOptions,
  ) {
    this.perShard = Math.ceil(options.max / Math.max(1, shards.length))
  }

  get enabled(): boolean {
    return this.options.max > 0
  }

  /** The writes for the deliveries of `shard`. */
  in(shard: ShardKeys): ShardDeliveryLog {
    return {
      record: (r, now = Date.now()) => this.recordIn(shard, r, now),
      setState: (ref, state, reason, now = Date.now()) => this.setStateIn(shard, ref, state, reason, now),
    }
  }

  private recordIn(shard: ShardKeys, r: AttemptRecord, now: number): Promise<void> {
    const attempt: DeliveryAttempt = {
      attempt: r.attempt,
      at: new Date(now).toISOString(),
      status: r.status ?? null,
      error: r.error ?? null,
      durationMs: r.durationMs,
      outcome: r.outcome,
      reply: r.reply,
      response: truncateUtf8(r.responseSnippet, RESPONSE_BYTES),
    }
    const state = stateOf(r)
    const fields = [
      ...this.refFields({ id: r.jobId, txn: r.txn, rcpt: r.rcpt, route: r.route, mode: r.mode }),
      'state',
      state,
      'lastStatus',
      r.status === undefined ? '' : String(r.status),
      'lastError',
      r.error ?? '',
      'reply',
      r.reply,
      'sender',
      truncateUtf8(r.sender, 512),
      'messageId',
      truncateUtf8(r.messageId ?? '', 512),
    ]
    // A delivery is never shown dead without its reason (the queue's failure event comes later),
    // and a replayed one that got through no longer shows why it had died.
    fields.push('reason', state === 'dead' ? failureReason(r.status, r.error) : '')
    return this.write(shard, r.jobId, now, JSON.stringify(attempt), fields)
  }

  private setStateIn(shard: ShardKeys, ref: DeliveryRef, state: DeliveryState, reason: string | undefined, now: number): Promise<void> {
    const fields = [...this.refFields(ref), 'state', state]
    if (reason !== undefined) fields.push('reason', truncateUtf8(reason, 512))
    return this.write(shard, ref.id, now, '', fields)
  }

  async get(id: string): Promise<DeliveryWithAttempts | null> {
    const found = await Promise.all(this.shards.map((shard) => this.getIn(shard, id)))
    return found.find((d) => d !== null) ?? null
  }

  private async getIn(shard: ShardKeys, id: string): Promise<DeliveryWithAttempts | null> {
    const results = await this.redis
      .multi()
      .hgetall(key(shard, 'd', id))
      .lrange(key(shard, 'a', id), 0, -1)
      .exec()
    if (!results) throw new Error('delivery log read was aborted')
    const [[hashErr, hash], [listErr, list]] = results as [[Error | null, Record<string, string>], [Error | null, string[]]]
    if (hashErr) throw hashErr
    if (listErr) throw listErr
    if (!hash || Object.keys(hash).length === 0) return null
    return { ...toDelivery(hash), attemptLog: list.map((a) => JSON.parse(a) as DeliveryAttempt) }
  }

  /** Removes a delivery's record; false when there was none. */
  async delete(id: string): Promise<boolean> {
    const removed = await Promise.all(
      this.shards.map(async (shard) => {
        const results = await this.redis
          .multi()
          .del(key(shard, 'd', id), key(shard, 'a', id))
          .zrem(shard.dlogIndex, id)
          .exec()
        const [[, deleted], [, unindexed]] = (results ?? [
          [null, 0],
          [null, 0],
        ]) as [[unknown, number], [unknown, number]]
        return deleted > 0 || unindexed > 0
      }),
    )
    return removed.some(Boolean)
  }

  /**
   * Deliveries newest first, filtered, over every shard. A page holds up to `limit` deliveries; it
   * may hold fewer and still have a `nextCursor` when many entries were examined without a match.
   */
  async list(filter: DeliveryFilter): Promise<DeliveryPage> {
    const from = filter.cursor === undefined ? null : decodeCursor(filter.cursor)
    const recipient = filter.recipient?.toLowerCase()
    const sender = filter.sender?.toLowerCase()
    const messageId = filter.messageId === undefined ? undefined : bracketed(filter.messageId.trim())
    // The index is scored by creation time: the time window is a score range, not a scan.
    const upper = Math.min(from?.score ?? Infinity, filter.until ?? Infinity)
    const lower = filter.since === undefined ? '-inf' : String(filter.since)
    const out: Delivery[] = []
    const batch = Math.min(500, Math.max(50, filter.limit * 2))
    const range = { max: upper === Infinity ? '+inf' : String(upper), min: lower }
    const readers = this.shards.map((shard) => new IndexReader(this.redis, shard, from, range, batch))
    let scanned = 0
    let last: IndexEntry | null = null
    for (;;) {
      // The next `batch` entries of the merged indexes, newest first.
      const page: IndexEntry[] = []
      while (page.length < batch) {
        let best: IndexReader | null = null
        let bestEntry: IndexEntry | null = null
        for (const reader of readers) {
          const head = await reader.peek()
          if (head !== null && (bestEntry === null || newer(head, bestEntry))) {
            best = reader
            bestEntry = head
          }
        }
        if (best === null) break
        page.push(best.take())
      }
      if (page.length === 0) return { deliveries: out, nextCursor: null }
      const hashes = await this.hashes(page)
      const stale: IndexEntry[] = []
      for (let i = 0; i < page.length; i++) {
        const entry = page[i]!
        const hash = hashes[i]!
        scanned++
        last = entry
        if (Object.keys(hash).length === 0) {
          stale.push(entry)
          continue
        }
        const d = toDelivery(hash)
        if (recipient !== undefined && d.recipient.toLowerCase() !== recipient) continue
        if (filter.route !== undefined && d.route !== filter.route) continue
        if (filter.state !== undefined && d.state !== filter.state) continue
        if (sender !== undefined && (d.sender ?? '').toLowerCase() !== sender) continue
        if (messageId !== undefined && d.messageId !== messageId) continue
        if (filter.txn !== undefined && d.txn !== filter.txn) continue
        out.push(d)
        if (out.length === filter.limit) {
          await this.unindex(stale)
          return { deliveries: out, nextCursor: encodeCursor(entry.score, entry.id) }
        }
      }
      await this.unindex(stale)
      if (page.length < batch) return { deliveries: out, nextCursor: null }
      if (scanned >= MAX_SCAN && last !== null) return { deliveries: out, nextCursor: encodeCursor(last.score, last.id) }
    }
  }

  /** The records of `entries`, in order: one pipeline per shard (one slot each), in parallel. */
  private async hashes(entries: readonly IndexEntry[]): Promise<Record<string, string>[]> {
    const out: Record<string, string>[] = new Array(entries.length)
    await Promise.all(
      this.shards.map(async (shard) => {
        const mine = entries.map((e, i) => [e, i] as const).filter(([e]) => e.shard === shard)
        if (mine.length === 0) return
        const pipeline = this.redis.pipeline()
        for (const [e] of mine) pipeline.hgetall(key(shard, 'd', e.id))
        const results = (await pipeline.exec()) ?? []
        mine.forEach(([, i], k) => {
          const [err, hash] = results[k] as [Error | null, Record<string, string>]
          if (err) throw err
          out[i] = hash
        })
      }),
    )
    return out
  }

  private async unindex(entries: readonly IndexEntry[]): Promise<void> {
    for (const shard of this.shards) {
      const ids = entries.filter((e) => e.shard === shard).map((e) => e.id)
      if (ids.length > 0) await this.redis.zrem(shard.dlogIndex, ...ids)
    }
  }

  private refFields(ref: DeliveryRef): string[] {
    return ['id', ref.id, 'txn', ref.txn, 'rcpt', ref.rcpt, 'route', ref.route, 'mode', ref.mode]
  }

  /**
   * Queues one write; every write to a shard in the same event-loop turn goes in one script call
   * (the attempts of many recipients and transactions end in the same turn under load).
   */
  private write(shard: ShardKeys, id: string, now: number, attempt: string, fields: string[]): Promise<void> {
    if (!this.enabled) return Promise.resolve()
    let batch = this.batches.get(shard)
    if (!batch) {
      const keys = [shard.dlogIndex]
      const args = [String(now), String(this.options.ttlMs), String(this.perShard), String(MAX_ATTEMPTS), shard.dlogPrefix]
      const ids: string[] = []
      const done = new Promise<void>((resolve) =>
        setImmediate(() => {
          this.batches.delete(shard)
          runScript(this.redis, WRITE, keys, args)
            .catch((err: unknown) => {
              this.options.onError?.(err)
              this.options.log.warn({ err, deliveries: ids }, 'could not write the delivery log')
            })
            .finally(resolve)
        }),
      )
      batch = { keys, args, ids, done }
      this.batches.set(shard, batch)
    }
    batch.keys.push(key(shard, 'd', id), key(shard, 'a', id))
    batch.args.push(id, attempt, String(fields.length), ...fields)
    batch.ids.push(id)
    return batch.done
  }
}

function key(shard: ShardKeys, kind: 'd' | 'a', id: string): string {
  return `${shard.dlogPrefix}${kind}:${id}`
}
