/**
 * The delivery queues on BullMQ. One job per accepted recipient; job data is references plus small
 * metadata, never the message.
 *
 * QUEUE_SHARDS=N gives N queues, each under its own hash tag (src/redis/keys.ts), so a cluster
 * places them on different primaries. `DeliveryQueues` is the one object the rest of the code asks:
 * the shard of a transaction (chosen from the message's sha256, so an MTA's resend of the same
 * message lands on the same shard, where an accept-mode job id dedups it), every shard for the
 * workers, metrics and the admin API, and a job by id across shards. A shard is also where the
 * transaction is stored (its TransactionStore) and where its jobs' delivery log lives: everything
 * of one transaction is in one slot.
 *
 * Job ids: in accept mode the job id is the webhook id (message + recipient + route), so an MTA
 * redelivery of mail already queued here cannot queue it twice. In defer mode the job belongs to
 * one LMTP transaction (`<webhook id>.<transaction id>`): a job left behind by a crashed process, or
 * still running after its session answered 451, must not swallow the MTA's next attempt. The
 * webhook id sent to the consumer is the deterministic one in both modes.
 */
import { Queue, Worker, type Job, type JobsOptions, type JobType, type Processor } from 'bullmq'
import type { Logger } from 'pino'
import type { Route } from '../routing/schema.js'
import { isCluster, type RedisClient } from '../redis/connections.js'
import { QUEUE_NAME, type KeyLayout, type ShardKeys } from '../redis/keys.js'
import { TransactionStore } from './messages.js'

export { QUEUE_NAME }

export interface DeliveryJobData {
  /** The webhook id: the same for the same message, recipient and route. */
  readonly webhookId: string
  /** Transaction id: the key of the stored message and envelope. */
  readonly txn: string
  /** Recipient address as accepted at RCPT. */
  readonly rcpt: string
  readonly route: string
  readonly mode: Route['mode']
  /** Result channel address of the waiting LMTP session's process. */
  readonly replyTo: string
  /** Epoch ms until which a session waits for the first attempt. */
  readonly replyBy: number
  /** A guard (guards.ts): its first attempt is made by the listener; a worker takes it only if that process died. */
  readonly guard?: boolean
  /** Attempts the listener made itself before a worker took the job (guards.ts). */
  readonly made?: number
  /** Set when the listener's attempt was refused for good: the worker fails the job with it. */
  readonly deadLetter?: string
}

export type DeliveryJob = Job<DeliveryJobData, DeliveryJobReturn>

export interface DeliveryJobReturn {
  readonly outcome: 'delivered' | 'rejected' | 'temporary' | 'skipped'
  readonly status?: number | undefined
}

/** Error a processor throws to ask for a retry no sooner than `retryAfterMs`. */
export class RetryableDeliveryError extends Error {
  constructor(
    message: string,
    readonly retryAfterMs: number | undefined,
  ) {
    super(message)
    this.name = 'RetryableDeliveryError'
  }
}

/**
 * Webhook attempts made for a job: BullMQ's count plus the listener's own first attempt, less the
 * worker's pass that only turned a refused guard into a dead letter.
 */
export function attemptsOf(job: { readonly attemptsMade: number; readonly data: DeliveryJobData }): number {
  return job.attemptsMade + (job.data.made ?? 0) - (job.data.deadLetter !== undefined && job.attemptsMade > 0 ? 1 : 0)
}

/** A job's data for a replay with the route's full retry schedule: no attempt made, no refusal. */
export function freshData(data: DeliveryJobData): DeliveryJobData {
  const { made: _made, deadLetter: _deadLetter, ...rest } = data
  return rest
}

export function jobId(webhookId: string, txnId: string, mode: Route['mode']): string {
  return mode === 'defer' ? `${webhookId}.${txnId}` : webhookId
}

export function jobOptions(jobId: string, route: Route): JobsOptions {
  if (route.mode !== 'defer') {
    return {
      jobId,
      attempts: route.retry.attempts,
      backoff: { type: 'webhook', delay: route.retry.backoffMs },
      removeOnComplete: true,
      // Dead letters stay until an operator retries or deletes them.
      removeOnFail: false,
    }
  }
  return { jobId, attempts: 1, removeOnComplete: true, removeOnFail: true }
}

/**
 * Exponential backoff with full jitter between 50 % and 100 % of the step, capped by the route's
 * `maxDelay`, and never sooner than the webhook's Retry-After.
 */
export function backoffDelay(attemptsMade: number, baseMs: number, maxDelayMs: number, retryAfterMs: number | undefined, random = Math.random): number {
  const step = Math.min(maxDelayMs, baseMs * 2 ** Math.max(0, attemptsMade - 1))
  const jittered = Math.round(step * (0.5 + random() * 0.5))
  return Math.min(maxDelayMs, Math.max(jittered, retryAfterMs ?? 0))
}

/** One queue shard: its queue, its stored transactions, its keys. */
export interface DeliveryShard {
  readonly keys: ShardKeys
  /** `0`..`N-1`, or `legacy` (metrics label, logs). */
  readonly label: string
  readonly queue: Queue<DeliveryJobData, DeliveryJobReturn>
  readonly store: TransactionStore
  /** The untagged queue of an older version: its jobs are worked, no job is added to it. */
  readonly drainOnly: boolean
}

export interface FoundJob {
  readonly job: DeliveryJob
  readonly shard: DeliveryShard
}

export interface DeliveryQueuesOptions {
  /** BullMQ's queue and the transaction writes (a transaction and its jobs go out on it in order). */
  readonly queueConnection: RedisClient
  /** Reads and deletes of stored transactions. */
  readonly appConnection: RedisClient
  readonly layout: KeyLayout
  readonly log: Logger
}

export class DeliveryQueues {
  /** The shards new jobs go to. */
  readonly shards: readonly DeliveryShard[]
  /** `shards` and, when an older version left jobs, its queue (drained). */
  readonly all: readonly DeliveryShard[]

  private constructor(shards: DeliveryShard[], legacy: DeliveryShard | null) {
    this.shards = shards
    this.all = legacy ? [...shards, legacy] : shards
  }

  /**
   * Opens one queue per shard. Outside a cluster, also the queue of a version before the tagged
   * key layout when its keys exist (BullMQ's `meta` is written by every worker, so it is there
   * while such a version runs, during a rolling upgrade included): it is drained, not added to.
   */
  static async open(options: DeliveryQueuesOptions): Promise<DeliveryQueues> {
    const { queueConnection, appConnection, layout } = options
    const shard = (keys: ShardKeys, label: string, drainOnly: boolean): DeliveryShard => {
      const queue = new Queue<DeliveryJobData, DeliveryJobReturn>(QUEUE_NAME, { connection: queueConnection, prefix: keys.queuePrefix })
      queue.on('error', (err) => options.log.warn({ err: err.message, shard: label }, 'queue error'))
      return { keys, label, queue, store: new TransactionStore(queueConnection, appConnection, keys.txn), drainOnly }
    }
    const shards = layout.shards.map((keys) => shard(keys, String(keys.id), false))
    let legacy: DeliveryShard | null = null
    if (!isCluster(appConnection) && (await appConnection.exists(...layout.legacy.queueMarkers)) > 0) {
      legacy = shard(layout.legacy.shard, 'legacy', true)
      options.log.warn(
        { keys: `${layout.prefix}:${QUEUE_NAME}:*` },
        'jobs queued by an older version of the key layout are being drained; delete those keys once the legacy queue is empty (docs/deployment.md)',
      )
    }
    return new DeliveryQueues(shards, legacy)
  }

  /** The shard of a transaction: from its message's sha256 (hex), the same for every resend. */
  shardFor(sha256: string): DeliveryShard {
    return this.shards[Number.parseInt(sha256.slice(0, 8), 16) % this.shards.length]!
  }

  /** A job by id, in whichever shard holds it. */
  async findJob(id: string): Promise<FoundJob | null> {
    const jobs = await Promise.all(this.all.map((s) => s.queue.getJob(id)))
    const i = jobs.findIndex((j) => j !== undefined)
    return i === -1 ? null : { job: jobs[i]!, shard: this.all[i]! }
  }

  async getJob(id: string): Promise<DeliveryJob | undefined> {
    return (await this.findJob(id))?.job
  }

  async getJobs(types: JobType[]): Promise<DeliveryJob[]> {
    return (await Promise.all(this.all.map((s) => s.queue.getJobs(types)))).flat()
  }

  getFailed(): Promise<DeliveryJob[]> {
    return this.getJobs(['failed'])
  }

  /** Job counts by state, summed over every shard. */
  async getJobCounts(...types: JobType[]): Promise<Record<string, number>> {
    const total: Record<string, number> = {}
    for (const { counts } of await this.countsByShard(...types)) for (const [k, v] of Object.entries(counts)) total[k] = (total[k] ?? 0) + v
    return total
  }

  async countsByShard(...types: JobType[]): Promise<{ shard: string; counts: Record<string, number> }[]> {
    return Promise.all(this.all.map(async (s) => ({ shard: s.label, counts: await s.queue.getJobCounts(...types) })))
  }

  /**
   * One BullMQ worker per shard (every process works every shard). With more than one shard the
   * workers share one limit of `concurrency` jobs in flight, which keeps WORKER_CONCURRENCY the
   * number of webhook calls per process however the load falls across shards.
   */
  createWorkers(
    connection: RedisClient,
    concurrency: number,
    processorFor: (shard: DeliveryShard) => Processor<DeliveryJobData, DeliveryJobReturn>,
    maxDelayFor: (job: DeliveryJob) => number,
  ): { shard: DeliveryShard; worker: Worker<DeliveryJobData, DeliveryJobReturn> }[] {
    const limit = this.all.length > 1 ? new Limit(concurrency) : null
    return this.all.map((shard) => {
      const processor = processorFor(shard)
      const limited: Processor<DeliveryJobData, DeliveryJobReturn> = limit ? (job, token, signal) => limit.run(() => processor(job, token, signal)) : processor
      return { shard, worker: createWorker(connection, shard.keys.queuePrefix, concurrency, limited, maxDelayFor) }
    })
  }

  async close(): Promise<void> {
    await Promise.all(this.all.map((s) => s.queue.close()))
  }
}

/** At most `max` calls run at once; the others wait in order. */
class Limit {
  private running = 0
  private readonly waiting: (() => void)[] = []

  constructor(private readonly max: number) {}

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.running >= this.max) await new Promise<void>((resolve) => this.waiting.push(resolve))
    else this.running++
    try {
      return await fn()
    } finally {
      const next = this.waiting.shift()
      if (next) next()
      else this.running--
    }
  }
}

/**
 * How soon the job of a process that died mid-attempt runs again. BullMQ's defaults (a 30 s lock,
 * a stall check every 30 s) left such a job `active` for up to a minute; with a 10 s lock renewed
 * every 5 s and a check every 5 s it goes back to the queue within 15 s of the crash (docs/
 * architecture.md, "Crash safety"). Each stall counts: past `maxStalledCount` the job fails (an
 * accept-mode dead letter), so a few crashes in a row, or an event loop blocked past the lock,
 * are tolerated before that.
 */
export const STALL_SETTINGS = { lockDuration: 10_000, stalledInterval: 5_000, maxStalledCount: 3 } as const

export function createWorker(
  connection: RedisClient,
  prefix: string,
  concurrency: number,
  processor: Processor<DeliveryJobData, DeliveryJobReturn>,
  maxDelayFor: (job: DeliveryJob) => number,
): Worker<DeliveryJobData, DeliveryJobReturn> {
  return new Worker<DeliveryJobData, DeliveryJobReturn>(QUEUE_NAME, processor, {
    connection,
    prefix,
    concurrency,
    autorun: false,
    ...STALL_SETTINGS,
    settings: {
      backoffStrategy: (attemptsMade, _type, err, job) => {
        const base = (job?.opts.backoff as { delay?: number } | undefined)?.delay ?? 30_000
        const retryAfter = err instanceof RetryableDeliveryError ? err.retryAfterMs : undefined
        return backoffDelay(
          attemptsMade + ((job?.data as DeliveryJobData | undefined)?.made ?? 0),
          base,
          job ? maxDelayFor(job as DeliveryJob) : 3_600_000,
          retryAfter,
        )
      },
    },
  })
}
