/**
 * The delivery log: what operators see of each delivery (one per job id)
 * and of its attempts, kept in Redis with bounded retention.
 *
 * Redis keys (all under the service prefix):
 *   <prefix>:dlog:d:<id>    hash  the delivery: recipient, route, txn, mode, sender, message-id,
 *                                 state, last attempt
 *   <prefix>:dlog:a:<id>    list  its attempts as JSON, oldest first (the newest MAX_ATTEMPTS kept)
 *   <prefix>:dlog:index     zset  id scored by the time the delivery was first logged (ms)
 *
 * Every write is one Lua script (one round trip, no read-modify-write race between replicas): it
 * sets the fields, appends the attempt, refreshes the TTL of both keys (`ttlMs` after the last
 * change), indexes the delivery and trims the index to the newest `max` deliveries, deleting the
 * keys of what it trims. Memory is therefore bounded by `max` deliveries of at most MAX_ATTEMPTS
 * attempts each, whatever the load. An index entry whose keys expired is skipped (and removed)
 * by readers; there are never more than `max` of them.
 */
import { createHash } from 'node:crypto'
import type { Redis } from 'ioredis'
import type { Logger } from 'pino'
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
 * KEYS[1] delivery hash, KEYS[2] attempts list, KEYS[3] index
 * ARGV[1] id, ARGV[2] now (ms), ARGV[3] ttl (ms), ARGV[4] max deliveries, ARGV[5] max attempts,
 * ARGV[6] key prefix of deliveries (`<prefix>:dlog:`), ARGV[7] attempt JSON or '',
 * ARGV[8..] field, value pairs to set
 * Returns the number of deliveries trimmed.
 */
const WRITE = `
local ttl = tonumber(ARGV[3])
local max = tonumber(ARGV[4])
if #ARGV > 7 then redis.call('HSET', KEYS[1], unpack(ARGV, 8)) end
redis.call('HSET', KEYS[1], 'updatedAt', ARGV[2])
redis.call('HSETNX', KEYS[1], 'createdAt', ARGV[2])
if ARGV[7] ~= '' then
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  redis.call('RPUSH', KEYS[2], ARGV[7])
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[5]), -1)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[3], 'NX', ARGV[2], ARGV[1])
local trimmed = 0
local function drop(ids)
  for _, id in ipairs(ids) do
    redis.call('DEL', ARGV[6] .. 'd:' .. id, ARGV[6] .. 'a:' .. id)
    redis.call('ZREM', KEYS[3], id)
    trimmed = trimmed + 1
  end
end
local extra = redis.call('ZCARD', KEYS[3]) - max
if extra > 0 then drop(redis.call('ZRANGE', KEYS[3], 0, math.min(extra, 100) - 1)) end
redis.call('PEXPIRE', KEYS[3], ttl)
return trimmed
`
const WRITE_SHA = createHash('sha1').update(WRITE).digest('hex')

function stateOf(record: AttemptRecord): DeliveryState {
  if (record.outcome === 'delivered') return 'delivered'
  if (record.outcome === 'rejected') return 'rejected'
  if (!record.final) return 'retrying'
  return record.mode === 'accept' ? 'dead' : 'deferred'
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

export class DeliveryLog {
  private readonly keyPrefix: string
  private readonly index: string

  constructor(
    private readonly redis: Redis,
    prefix: string,
    private readonly options: DeliveryLogOptions,
  ) {
    this.keyPrefix = `${prefix}:dlog:`
    this.index = `${prefix}:dlog:index`
  }

  get enabled(): boolean {
    return this.options.max > 0
  }

  /** Records one webhook attempt (the worker's onAttempt hook). Never throws; failures are logged. */
  record(r: AttemptRecord, now = Date.now()): Promise<void> {
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
    return this.write(r.jobId, now, JSON.stringify(attempt), fields)
  }

  /** Sets the state of a delivery (dead-lettered, replayed), creating its record if needed. */
  setState(ref: DeliveryRef, state: DeliveryState, reason?: string, now = Date.now()): Promise<void> {
    const fields = [...this.refFields(ref), 'state', state]
    if (reason !== undefined) fields.push('reason', truncateUtf8(reason, 512))
    return this.write(ref.id, now, '', fields)
  }

  async get(id: string): Promise<DeliveryWithAttempts | null> {
    const results = await this.redis.multi().hgetall(this.key('d', id)).lrange(this.key('a', id), 0, -1).exec()
    if (!results) throw new Error('delivery log read was aborted')
    const [[hashErr, hash], [listErr, list]] = results as [[Error | null, Record<string, string>], [Error | null, string[]]]
    if (hashErr) throw hashErr
    if (listErr) throw listErr
    if (!hash || Object.keys(hash).length === 0) return null
    return { ...toDelivery(hash), attemptLog: list.map((a) => JSON.parse(a) as DeliveryAttempt) }
  }

  /** Removes a delivery's record; false when there was none. */
  async delete(id: string): Promise<boolean> {
    const results = await this.redis.multi().del(this.key('d', id), this.key('a', id)).zrem(this.index, id).exec()
    const [[, deleted], [, unindexed]] = (results ?? [
      [null, 0],
      [null, 0],
    ]) as [[unknown, number], [unknown, number]]
    return deleted > 0 || unindexed > 0
  }

  /**
   * Deliveries newest first, filtered. A page holds up to `limit` deliveries; it may hold fewer
   * and still have a `nextCursor` when many entries were examined without a match.
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
    let offset = 0
    let scanned = 0
    let last: { score: number; id: string } | null = null
    for (;;) {
      const max = upper === Infinity ? '+inf' : String(upper)
      const entries = await this.redis.zrevrangebyscore(this.index, max, lower, 'WITHSCORES', 'LIMIT', offset, batch)
      if (entries.length === 0) return { deliveries: out, nextCursor: null }
      offset += entries.length / 2
      const page: { id: string; score: number }[] = []
      for (let i = 0; i < entries.length; i += 2) {
        const id = entries[i]!
        const score = Number(entries[i + 1])
        // Same-score entries come in reverse lexical order: skip those up to the cursor's.
        if (from !== null && score === from.score && id >= from.id) continue
        page.push({ id, score })
      }
      const pipeline = this.redis.pipeline()
      for (const e of page) pipeline.hgetall(this.key('d', e.id))
      const hashes = page.length === 0 ? [] : ((await pipeline.exec()) ?? [])
      const stale: string[] = []
      for (let i = 0; i < page.length; i++) {
        const entry = page[i]!
        const [err, hash] = hashes[i] as [Error | null, Record<string, string>]
        if (err) throw err
        scanned++
        last = entry
        if (Object.keys(hash).length === 0) {
          stale.push(entry.id)
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
          if (stale.length > 0) await this.redis.zrem(this.index, ...stale)
          return { deliveries: out, nextCursor: encodeCursor(entry.score, entry.id) }
        }
      }
      if (stale.length > 0) await this.redis.zrem(this.index, ...stale)
      if (entries.length / 2 < batch) return { deliveries: out, nextCursor: null }
      if (scanned >= MAX_SCAN && last !== null) return { deliveries: out, nextCursor: encodeCursor(last.score, last.id) }
    }
  }

  private key(kind: 'd' | 'a', id: string): string {
    return `${this.keyPrefix}${kind}:${id}`
  }

  private refFields(ref: DeliveryRef): string[] {
    return ['id', ref.id, 'txn', ref.txn, 'rcpt', ref.rcpt, 'route', ref.route, 'mode', ref.mode]
  }

  private async write(id: string, now: number, attempt: string, fields: string[]): Promise<void> {
    if (!this.enabled) return
    const keys = [this.key('d', id), this.key('a', id), this.index]
    const args = [id, String(now), String(this.options.ttlMs), String(this.options.max), String(MAX_ATTEMPTS), this.keyPrefix, attempt, ...fields]
    try {
      try {
        await this.redis.evalsha(WRITE_SHA, keys.length, ...keys, ...args)
      } catch (err) {
        if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err
        await this.redis.eval(WRITE, keys.length, ...keys, ...args)
      }
    } catch (err) {
      this.options.onError?.(err)
      this.options.log.warn({ err, delivery: id }, 'could not write the delivery log')
    }
  }
}
