/**
 * Replay and removal of deliveries by filter (POST /v1/deliveries/retry, /delete), and the replay
 * of one dead letter that both the single and the bulk endpoint use.
 *
 * The candidates are read from the queues themselves, not from the delivery log: the log keeps the
 * newest DELIVERY_LOG_MAX deliveries, while every dead letter stays in its queue until replayed
 * or deleted, and after a long outage those are exactly the ones to replay. `dead` walks the
 * failed set of every queue shard (scored by the time the job failed), `retrying` their delayed
 * sets, merged oldest first. One call examines at most SCAN_MAX entries and acts on at most
 * `limit` of them, then answers a cursor: the position (score and id) of the last entry examined,
 * which holds for every shard. A repeated call is safe: what it replayed or deleted is no longer
 * in the set, what it left is looked at again.
 */
import type { RedisClient } from '../redis/connections.js'
import { AppError } from '../errors.js'
import { freshData, type DeliveryJob, type DeliveryShard, type FoundJob } from '../delivery/queue.js'
import type { AdminContext } from './context.js'
import { adminError } from './errors.js'

/** Queue entries one call examines at most. */
export const SCAN_MAX = 1000

export type BulkState = 'dead' | 'retrying'

export interface BulkFilter {
  readonly route?: string | undefined
  readonly state: BulkState
  readonly recipient?: string | undefined
  /** Received at or after (epoch ms). */
  readonly since?: number | undefined
  readonly until?: number | undefined
  readonly limit: number
  readonly cursor?: string | undefined
}

export interface Skipped {
  readonly id: string
  readonly code: string
  readonly message: string
}

function encodeCursor(score: string, id: string): string {
  return Buffer.from(`${score}:${id}`).toString('base64url')
}

/** Null when the cursor is not one a bulk call made. */
export function decodeBulkCursor(cursor: string): { score: string; id: string } | null {
  const m = /^(\d+(?:\.\d+)?):(.+)$/s.exec(Buffer.from(cursor, 'base64url').toString('utf8'))
  return m ? { score: m[1]!, id: m[2]! } : null
}

/**
 * Replays one dead letter: checks its route and its stored message (in the job's shard), marks it
 * retrying in the log, and moves the job back to its queue with the route's full retry schedule.
 * Throws the admin error the single endpoint answers (ADMIN_ERR_NOT_DEAD, _CONFLICT, _MESSAGE_GONE).
 */
export async function replay(ctx: AdminContext, { job, shard }: FoundJob): Promise<void> {
  const id = job.id!
  const state = await job.getState()
  if (state !== 'failed') throw adminError('ADMIN_ERR_NOT_DEAD', `delivery "${id}" is not dead-lettered (its job is ${state})`, { id, state })
  if (!ctx.routes.get(job.data.route)) {
    throw adminError('ADMIN_ERR_CONFLICT', `delivery "${id}": its route "${job.data.route}" no longer exists; create it again to replay`, {
      id,
      route: job.data.route,
    })
  }
  if (!(await shard.store.touch(job.data.txn, ctx.config.delivery.messageTtlMs))) {
    throw adminError('ADMIN_ERR_MESSAGE_GONE', `delivery "${id}": its stored message has expired (MESSAGE_TTL) or was removed; it cannot be replayed`, {
      id,
      txn: job.data.txn,
    })
  }
  const ref = { id, txn: job.data.txn, rcpt: job.data.rcpt, route: job.data.route, mode: job.data.mode }
  // Logged first, so an attempt that follows at once is not overwritten by this state.
  const log = ctx.deliveries.in(shard.keys)
  await log.setState(ref, 'retrying')
  try {
    if (job.data.made !== undefined || job.data.deadLetter !== undefined) await job.updateData(freshData(job.data))
    await job.retry('failed', { resetAttemptsMade: true })
  } catch (err) {
    await log.setState(ref, 'dead')
    throw err
  }
}

interface Candidate {
  readonly id: string
  readonly score: string
  readonly shard: DeliveryShard
}

/** `a` comes before `b` in the walk: lower score, then lower id. */
const before = (a: Candidate, b: Candidate): boolean => {
  const [x, y] = [Number(a.score), Number(b.score)]
  return x < y || (x === y && a.id < b.id)
}

/** One shard's failed or delayed set after the cursor, oldest first, read in batches. */
class SetReader {
  private buffer: Candidate[] = []
  private offset = 0
  private exhausted = false

  constructor(
    private readonly redis: RedisClient,
    private readonly key: string,
    readonly shard: DeliveryShard,
    private readonly from: { score: string; id: string } | null,
  ) {}

  async peek(batch: number): Promise<Candidate | null> {
    while (this.buffer.length === 0 && !this.exhausted) {
      const entries = await this.redis.zrangebyscore(this.key, this.from?.score ?? '-inf', '+inf', 'WITHSCORES', 'LIMIT', this.offset, batch)
      this.offset += entries.length / 2
      if (entries.length / 2 < batch) this.exhausted = true
      for (let i = 0; i < entries.length; i += 2) {
        const c: Candidate = { id: entries[i]!, score: entries[i + 1]!, shard: this.shard }
        // Entries of the cursor's own score come in id order: skip those up to the cursor's.
        if (this.from !== null && Number(c.score) === Number(this.from.score) && c.id <= this.from.id) continue
        this.buffer.push(c)
      }
    }
    return this.buffer[0] ?? null
  }

  take(): Candidate {
    return this.buffer.shift()!
  }
}

/** The next matching jobs of the sets, at most `limit`, and where the next call goes on. */
async function scan(ctx: AdminContext, filter: BulkFilter): Promise<{ matches: Candidate[]; nextCursor: string | null }> {
  const from = filter.cursor === undefined ? null : decodeBulkCursor(filter.cursor)
  // each shard's own queue connection (its sets are read, never written, here)
  const readers = await Promise.all(
    ctx.queues.all.map(async (shard) => {
      const redis = (await shard.queue.getBackend().client) as unknown as RedisClient
      const key = filter.state === 'dead' ? shard.queue.keys.failed! : shard.queue.keys.delayed!
      return new SetReader(redis, key, shard, from)
    }),
  )
  const next = async (batch: number): Promise<SetReader | null> => {
    let best: SetReader | null = null
    let head: Candidate | null = null
    for (const reader of readers) {
      const c = await reader.peek(batch)
      if (c !== null && (head === null || before(c, head))) {
        best = reader
        head = c
      }
    }
    return best
  }
  const recipient = filter.recipient?.toLowerCase()
  const matches: Candidate[] = []
  let examined = 0
  let last: Candidate | null = null
  while (examined < SCAN_MAX) {
    const batch = Math.min(500, SCAN_MAX - examined)
    // The next entries of the merged sets, oldest first.
    const page: Candidate[] = []
    while (page.length < batch) {
      const reader = await next(batch)
      if (reader === null) break
      page.push(reader.take())
    }
    if (page.length === 0) return { matches, nextCursor: null }
    const fields = await jobFields(page)
    for (let i = 0; i < page.length; i++) {
      const c = page[i]!
      examined++
      last = c
      const [raw, timestamp, atm] = fields[i]!
      if (raw === null || raw === undefined) continue
      let data: DeliveryJob['data']
      try {
        data = JSON.parse(raw) as DeliveryJob['data']
      } catch {
        continue
      }
      // Not retrying: a guard whose first attempt is under way in its listener (local.ts), or a
      // job that has made no attempt yet (held by a pause or an open circuit).
      if (filter.state === 'retrying' && Number(atm ?? 0) === 0 && (data.made ?? 0) === 0) continue
      const received = Number(timestamp ?? 0)
      if (filter.route !== undefined && data.route !== filter.route) continue
      if (recipient !== undefined && data.rcpt.toLowerCase() !== recipient) continue
      if (filter.since !== undefined && received < filter.since) continue
      if (filter.until !== undefined && received > filter.until) continue
      matches.push(c)
      if (matches.length === filter.limit) {
        const more = i < page.length - 1 || (await next(1)) !== null
        return { matches, nextCursor: more ? encodeCursor(c.score, c.id) : null }
      }
    }
    if (page.length < batch) return { matches, nextCursor: null }
  }
  return { matches, nextCursor: last === null ? null : encodeCursor(last.score, last.id) }
}

/** `data`, `timestamp` and attempts made (`atm`) of each candidate's job: one pipeline per shard (one slot each). */
async function jobFields(page: readonly Candidate[]): Promise<(string | null)[][]> {
  const out: (string | null)[][] = new Array(page.length)
  const byShard = new Map<DeliveryShard, number[]>()
  page.forEach((c, i) => byShard.set(c.shard, [...(byShard.get(c.shard) ?? []), i]))
  await Promise.all(
    [...byShard].map(async ([shard, indexes]) => {
      const redis = (await shard.queue.getBackend().client) as unknown as RedisClient
      const pipeline = redis.pipeline()
      for (const i of indexes) pipeline.hmget(shard.queue.toKey(page[i]!.id), 'data', 'timestamp', 'atm')
      const results = (await pipeline.exec()) ?? []
      indexes.forEach((i, k) => {
        const [err, values] = results[k] as [Error | null, (string | null)[]]
        if (err) throw err
        out[i] = values
      })
    }),
  )
  return out
}

function skippedOf(id: string, err: unknown): Skipped {
  if (err instanceof AppError) return { id, code: err.code, message: err.message }
  return { id, code: 'ADMIN_ERR_CONFLICT', message: `delivery "${id}" changed while it was being handled: ${(err as Error)?.message ?? String(err)}` }
}

/** POST /v1/deliveries/retry: dead letters replayed, or waiting deliveries attempted now. */
export async function bulkRetry(
  ctx: AdminContext,
  filter: BulkFilter,
): Promise<{ matched: number; retried: number; skipped: Skipped[]; nextCursor: string | null }> {
  const { matches, nextCursor } = await scan(ctx, filter)
  let retried = 0
  const skipped: Skipped[] = []
  for (const { id, shard } of matches) {
    const job = await shard.queue.getJob(id)
    try {
      if (!job) throw adminError('ADMIN_ERR_NOT_FOUND', `delivery "${id}" left the queue meanwhile`, { id })
      if (filter.state === 'dead') {
        await replay(ctx, { job, shard })
      } else {
        if (!(await job.isDelayed())) throw adminError('ADMIN_ERR_CONFLICT', `delivery "${id}" is no longer waiting`, { id })
        await job.promote()
      }
      retried++
    } catch (err) {
      skipped.push(skippedOf(id, err))
    }
  }
  return { matched: matches.length, retried, skipped, nextCursor }
}

/** POST /v1/deliveries/delete: jobs removed from the queue (never attempted again) with their log records. */
export async function bulkDelete(
  ctx: AdminContext,
  filter: BulkFilter,
): Promise<{ matched: number; deleted: number; skipped: Skipped[]; nextCursor: string | null }> {
  const { matches, nextCursor } = await scan(ctx, filter)
  let deleted = 0
  const skipped: Skipped[] = []
  for (const { id, shard } of matches) {
    const job = await shard.queue.getJob(id)
    try {
      if (job) {
        const state = await job.getState()
        if (state === 'active') throw adminError('ADMIN_ERR_CONFLICT', `delivery "${id}" is being attempted now`, { id, state })
        if (state !== 'unknown') await job.remove()
      }
      await ctx.deliveries.delete(id)
      deleted++
    } catch (err) {
      skipped.push(skippedOf(id, err))
    }
  }
  return { matched: matches.length, deleted, skipped, nextCursor }
}
