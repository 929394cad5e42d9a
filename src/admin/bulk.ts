/**
 * Replay and removal of deliveries by filter (POST /v1/deliveries/retry, /delete), and the replay
 * of one dead letter that both the single and the bulk endpoint use.
 *
 * The candidates are read from the queue itself, not from the delivery log: the log keeps the
 * newest DELIVERY_LOG_MAX deliveries, while every dead letter stays in the queue until replayed
 * or deleted, and after a long outage those are exactly the ones to replay. `dead` walks the
 * queue's failed set (scored by the time the job failed), `retrying` its delayed set, oldest
 * first. One call examines at most SCAN_MAX entries and acts on at most `limit` of them, then
 * answers a cursor: the position of the last entry examined. A repeated call is safe: what it
 * replayed or deleted is no longer in the set, what it left is looked at again.
 */
import type { Job } from 'bullmq'
import type { Redis } from 'ioredis'
import { AppError } from '../errors.js'
import type { DeliveryJobData, DeliveryJobReturn } from '../delivery/queue.js'
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

type DeliveryJob = Job<DeliveryJobData, DeliveryJobReturn>

function encodeCursor(score: string, id: string): string {
  return Buffer.from(`${score}:${id}`).toString('base64url')
}

/** Null when the cursor is not one a bulk call made. */
export function decodeBulkCursor(cursor: string): { score: string; id: string } | null {
  const m = /^(\d+(?:\.\d+)?):(.+)$/s.exec(Buffer.from(cursor, 'base64url').toString('utf8'))
  return m ? { score: m[1]!, id: m[2]! } : null
}

/**
 * Replays one dead letter: checks its route and its stored message, marks it retrying in the log,
 * and moves the job back to the queue with the route's full retry schedule. Throws the admin error
 * the single endpoint answers (ADMIN_ERR_NOT_DEAD, _CONFLICT, _MESSAGE_GONE).
 */
export async function replay(ctx: AdminContext, job: DeliveryJob): Promise<void> {
  const id = job.id!
  const state = await job.getState()
  if (state !== 'failed') throw adminError('ADMIN_ERR_NOT_DEAD', `delivery "${id}" is not dead-lettered (its job is ${state})`, { id, state })
  if (!ctx.routes.get(job.data.route)) {
    throw adminError('ADMIN_ERR_CONFLICT', `delivery "${id}": its route "${job.data.route}" no longer exists; create it again to replay`, {
      id,
      route: job.data.route,
    })
  }
  if (!(await ctx.messages.touch(job.data.txn, ctx.config.delivery.messageTtlMs))) {
    throw adminError('ADMIN_ERR_MESSAGE_GONE', `delivery "${id}": its stored message has expired (MESSAGE_TTL) or was removed; it cannot be replayed`, {
      id,
      txn: job.data.txn,
    })
  }
  const ref = { id, txn: job.data.txn, rcpt: job.data.rcpt, route: job.data.route, mode: job.data.mode }
  // Logged first, so an attempt that follows at once is not overwritten by this state.
  await ctx.deliveries.setState(ref, 'retrying')
  try {
    await job.retry('failed', { resetAttemptsMade: true })
  } catch (err) {
    await ctx.deliveries.setState(ref, 'dead')
    throw err
  }
}

interface Candidate {
  readonly id: string
  readonly score: string
}

/** The next matching jobs of the set, at most `limit`, and where the next call goes on. */
async function scan(ctx: AdminContext, filter: BulkFilter): Promise<{ matches: Candidate[]; nextCursor: string | null }> {
  // the queue's own ioredis connection (its sets are read, never written, here)
  const redis = (await ctx.queue.getBackend().client) as unknown as Redis
  const key = filter.state === 'dead' ? ctx.queue.keys.failed! : ctx.queue.keys.delayed!
  const from = filter.cursor === undefined ? null : decodeBulkCursor(filter.cursor)
  const recipient = filter.recipient?.toLowerCase()
  const matches: Candidate[] = []
  let examined = 0
  let offset = 0
  let last: Candidate | null = null
  while (examined < SCAN_MAX) {
    const batch = Math.min(500, SCAN_MAX - examined)
    const entries = await redis.zrangebyscore(key, from?.score ?? '-inf', '+inf', 'WITHSCORES', 'LIMIT', offset, batch)
    if (entries.length === 0) return { matches, nextCursor: null }
    offset += entries.length / 2
    const page: Candidate[] = []
    for (let i = 0; i < entries.length; i += 2) {
      const c: Candidate = { id: entries[i]!, score: entries[i + 1]! }
      // Entries of the cursor's own score come in id order: skip those up to the cursor's.
      if (from !== null && c.score === from.score && c.id <= from.id) continue
      page.push(c)
    }
    const pipeline = redis.pipeline()
    for (const c of page) pipeline.hmget(ctx.queue.toKey(c.id), 'data', 'timestamp')
    const fields = page.length === 0 ? [] : ((await pipeline.exec()) ?? [])
    for (let i = 0; i < page.length; i++) {
      const c = page[i]!
      examined++
      last = c
      const [err, values] = fields[i] as [Error | null, (string | null)[]]
      if (err) throw err
      const [raw, timestamp] = values
      if (raw === null || raw === undefined) continue
      let data: DeliveryJobData
      try {
        data = JSON.parse(raw) as DeliveryJobData
      } catch {
        continue
      }
      const received = Number(timestamp ?? 0)
      if (filter.route !== undefined && data.route !== filter.route) continue
      if (recipient !== undefined && data.rcpt.toLowerCase() !== recipient) continue
      if (filter.since !== undefined && received < filter.since) continue
      if (filter.until !== undefined && received > filter.until) continue
      matches.push(c)
      if (matches.length === filter.limit) {
        const more = i < page.length - 1 || entries.length / 2 === batch
        return { matches, nextCursor: more ? encodeCursor(c.score, c.id) : null }
      }
    }
    if (entries.length / 2 < batch) return { matches, nextCursor: null }
  }
  return { matches, nextCursor: last === null ? null : encodeCursor(last.score, last.id) }
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
  for (const { id } of matches) {
    const job = (await ctx.queue.getJob(id)) as DeliveryJob | undefined
    try {
      if (!job) throw adminError('ADMIN_ERR_NOT_FOUND', `delivery "${id}" left the queue meanwhile`, { id })
      if (filter.state === 'dead') {
        await replay(ctx, job)
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
  for (const { id } of matches) {
    const job = await ctx.queue.getJob(id)
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
