/**
 * Guard jobs: while this process makes a recipient's first attempt itself, the recipient's BullMQ
 * job waits in the queue's delayed set, due only after the longest the attempt can take. If the
 * process dies, any worker takes it when it falls due (accept, async: it is attempted; defer: its
 * session is gone and the MTA has been told 451 or nothing, so the worker skips it). If the attempt
 * ends here, the job is removed (delivered, or defer mode), rescheduled as a retry (accept mode,
 * temporary failure) or turned into a dead letter (accept mode, refused).
 *
 * A guard is a BullMQ job in every respect — the hash BullMQ's own `addDelayedJob` writes (built by
 * BullMQ's Job class), the same delayed-set score — added for all of a transaction's recipients in
 * one script call, and removed the same way for all the attempts that ended in one event-loop turn.
 * What the script leaves out: the events stream entry (nothing here reads the stream), and the
 * marker write that wakes idle workers, unless the guard is the earliest delayed job (a worker asleep
 * until the earliest one wakes in time for any later one).
 *
 * A job whose first attempt a worker makes (mode async, a listener-only process) goes through the
 * same call with no delay: straight to the wait list, as BullMQ's addStandardJob puts it.
 *
 * The add also answers what a resend needs to know: whether a job of that id is already there
 * (waiting or retrying: `pending`; a dead letter: `dead`) or was delivered (`delivered`, from the
 * delivery log, since delivered jobs are removed).
 */
import { Job } from 'bullmq'
import type { RedisClient } from '../redis/connections.js'
import { defineScript, runScript } from '../redis/scripts.js'
import type { ShardKeys } from '../redis/keys.js'
import type { DeliveryJobData, DeliveryJobReturn, DeliveryShard } from './queue.js'
import type { Queue, JobsOptions } from 'bullmq'

export type GuardState = 'new' | 'pending' | 'dead' | 'delivered'

/**
 * KEYS[1] delayed zset, KEYS[2] marker, KEYS[3] wait list, KEYS[4] meta, KEYS[5] active list, then
 * per job: its hash, its delivery log record.
 * ARGV[1] now (ms), then per job: id, name, data, opts, delay (ms; 0: waiting at once, as
 * addStandardJob adds it), check the log ('1'/'0').
 */
const ADD = defineScript(
  'guard-add',
  `local now = tonumber(ARGV[1])
local out = {}
local first = nil
local waiting = false
local least = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]
least = least and tonumber(least) or nil
for i = 0, (#KEYS - 5) / 2 - 1 do
  local jobKey, logKey = KEYS[6 + i * 2], KEYS[7 + i * 2]
  local a = 2 + i * 6
  local id, delay = ARGV[a], tonumber(ARGV[a + 4])
  if redis.call('EXISTS', jobKey) == 1 then
    local f = redis.call('HMGET', jobKey, 'finishedOn', 'failedReason')
    if f[1] and f[2] then out[#out + 1] = 'dead'
    elseif f[1] then out[#out + 1] = 'delivered'
    else out[#out + 1] = 'pending' end
  elseif ARGV[a + 5] == '1' and redis.call('HGET', logKey, 'state') == 'delivered' then
    out[#out + 1] = 'delivered'
  else
    redis.call('HSET', jobKey, 'name', ARGV[a + 1], 'data', ARGV[a + 2], 'opts', ARGV[a + 3], 'timestamp', now, 'delay', delay, 'priority', 0)
    if delay == 0 then
      redis.call('LPUSH', KEYS[3], id)
      waiting = true
    else
      local at = now + delay
      local min, max = at * 0x1000, (at + 1) * 0x1000 - 1
      local top = redis.call('ZREVRANGEBYSCORE', KEYS[1], max, min, 'WITHSCORES', 'LIMIT', 0, 1)[2]
      local score = min
      if top then score = math.min(max, tonumber(top) + 1) end
      redis.call('ZADD', KEYS[1], score, id)
      if not first or score < first then first = score end
    end
    out[#out + 1] = 'new'
  end
end
if first and (not least or first < least) then redis.call('ZADD', KEYS[2], math.floor(first / 0x1000), '1') end
if waiting then
  -- as BullMQ's isQueuePausedOrMaxed: a paused or maxed queue gets no marker
  local meta = redis.call('HMGET', KEYS[4], 'paused', 'concurrency')
  if not meta[1] and not (meta[2] and redis.call('LLEN', KEYS[5]) >= tonumber(meta[2])) then redis.call('ZADD', KEYS[2], 0, '0') end
end
return out`,
)

/**
 * KEYS[1] delayed zset; ARGV[1] the new due time (ms), then the ids. Moves the due time of the
 * guards still delayed (a worker may have taken one already: it is left alone).
 */
const RENEW = defineScript(
  'guard-renew',
  `local at = tonumber(ARGV[1]) * 0x1000
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', at + (i % 0x1000), ARGV[i])
end
return 1`,
)

/** KEYS[1] delayed zset, then the jobs' hashes; ARGV the jobs' ids. Only a job still delayed goes. */
const REMOVE = defineScript(
  'guard-remove',
  `local n = 0
for i = 1, #ARGV do
  if redis.call('ZREM', KEYS[1], ARGV[i]) == 1 then
    redis.call('DEL', KEYS[i + 1])
    n = n + 1
  end
end
return n`,
)

/**
 * How long a guard stays ahead of the workers. While its first attempt runs here, the guard's due
 * time is moved on every GUARD_RENEW_MS, so a slow webhook never finds a worker attempting it too;
 * if this process dies, the guard falls due within GUARD_LEASE_MS and any worker takes it.
 */
export const GUARD_LEASE_MS = 10_000
export const GUARD_RENEW_MS = 3_000

export interface GuardEntry {
  readonly id: string
  readonly name: string
  readonly data: DeliveryJobData
  readonly opts: JobsOptions
  readonly delayMs: number
  /** The first attempt is made here: renewed until it ends (its delay is then GUARD_LEASE_MS). */
  readonly leased: boolean
  /** Ask the delivery log whether a job of this id was delivered (accept, async). */
  readonly checkLog: boolean
}

/** The guard jobs of one queue shard. */
export class GuardJobs {
  private readonly toRemove: string[] = []
  private scheduled = false
  /** Guards whose first attempt is under way here. */
  private readonly leased = new Set<string>()
  private renewer: NodeJS.Timeout | undefined

  constructor(
    private readonly redis: RedisClient,
    readonly shard: DeliveryShard,
    private readonly onError: (err: unknown) => void,
  ) {
    this.queue = shard.queue
    this.keys = shard.keys
  }

  private readonly queue: Queue<DeliveryJobData, DeliveryJobReturn>
  private readonly keys: ShardKeys

  /** Adds the guards of one transaction in one call; per entry, what was there already. */
  async add(entries: readonly GuardEntry[], now = Date.now()): Promise<GuardState[]> {
    const k = this.queue.keys
    const keys = [k.delayed!, k.marker!, k.wait!, k.meta!, k.active!]
    const args: (string | number)[] = [now]
    for (const e of entries) {
      // The job's data and options as Queue.add stores them: JSON, the options as given (ours always
      // set `attempts` and give `backoff` as an object, which is what BullMQ's Job normalises to,
      // and none of them has a short stored name); test/delivery/guards.test.ts compares the two.
      keys.push(this.queue.toKey(e.id), `${this.keys.dlogPrefix}d:${e.id}`)
      args.push(e.id, e.name, JSON.stringify(e.data), JSON.stringify({ ...e.opts, delay: e.delayMs, jobId: e.id }), e.delayMs, e.checkLog ? '1' : '0')
    }
    const states = await runScript<GuardState[]>(this.redis, ADD, keys, args)
    entries.forEach((e, i) => e.leased && states[i] === 'new' && this.lease(e.id))
    return states
  }

  private lease(id: string): void {
    this.leased.add(id)
    this.renewer ??= setInterval(() => {
      if (this.leased.size === 0) {
        clearInterval(this.renewer)
        this.renewer = undefined
        return
      }
      runScript(this.redis, RENEW, [this.queue.keys.delayed!], [Date.now() + GUARD_LEASE_MS, ...this.leased]).catch(this.onError)
    }, GUARD_RENEW_MS).unref()
  }

  /** The first attempt here has ended: the guard is no longer renewed. */
  private release(id: string): void {
    this.leased.delete(id)
  }

  /** Stops renewing (shutdown): guards still leased fall due for the workers. */
  close(): void {
    clearInterval(this.renewer)
    this.renewer = undefined
    this.leased.clear()
  }

  /** Removes a guard whose attempt ended here; batched with the others of the same turn. */
  remove(id: string): void {
    this.release(id)
    this.toRemove.push(id)
    if (this.scheduled) return
    this.scheduled = true
    setImmediate(() => {
      this.scheduled = false
      const ids = this.toRemove.splice(0)
      runScript(this.redis, REMOVE, [this.queue.keys.delayed!, ...ids.map((id) => this.queue.toKey(id))], ids).catch(this.onError)
    })
  }

  /** Removes now (a dead letter a resend revives). */
  async removeNow(id: string): Promise<void> {
    await this.queue.remove(id)
  }

  /** Due now: a worker takes it (the gate held the first attempt back, or no slot was free). */
  async promote(id: string, entry: GuardEntry): Promise<void> {
    this.release(id)
    const job = this.job(id, entry, entry.data)
    // A worker skips a defer-mode guard (its session is gone); this one it must attempt.
    if (entry.data.guard === true) await job.updateData({ ...entry.data, guard: false })
    await job.promote()
  }

  /** Accept mode, temporary failure: the guard becomes the retry, due after the backoff. */
  async reschedule(id: string, entry: GuardEntry, data: DeliveryJobData, delayMs: number): Promise<void> {
    this.release(id)
    const job = this.job(id, entry, data)
    await job.updateData(data)
    await job.changeDelay(delayMs)
  }

  /**
   * Accept mode, refused: the guard goes to a worker now with the refusal in its data, and the
   * worker fails it without an attempt, so it becomes a dead letter the way every other does.
   */
  async deadLetter(id: string, entry: GuardEntry, data: DeliveryJobData): Promise<void> {
    this.release(id)
    const job = this.job(id, entry, data)
    await job.updateData(data)
    await job.promote()
  }

  private job(id: string, entry: GuardEntry, data: DeliveryJobData): Job<DeliveryJobData, DeliveryJobReturn> {
    return new Job<DeliveryJobData, DeliveryJobReturn>(this.queue, entry.name, data, { ...entry.opts, delay: entry.delayMs, jobId: id }, id)
  }
}
