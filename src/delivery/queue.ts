/**
 * The delivery queue on BullMQ. One job per accepted recipient; job data is references plus small
 * metadata, never the message.
 *
 * Job ids: in accept mode the job id is the webhook id (message + recipient + route), so an MTA
 * redelivery of mail already queued here cannot queue it twice. In defer mode the job belongs to
 * one LMTP transaction (`<webhook id>.<transaction id>`): a job left behind by a crashed process, or
 * still running after its session answered 451, must not swallow the MTA's next attempt. The
 * webhook id sent to the consumer is the deterministic one in both modes.
 */
import { Queue, Worker, type Job, type JobsOptions, type Processor } from 'bullmq'
import type { Redis } from 'ioredis'
import type { Route } from '../routing/schema.js'

export const QUEUE_NAME = 'deliveries'

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

export function jobId(webhookId: string, txnId: string, mode: Route['mode']): string {
  return mode === 'accept' ? webhookId : `${webhookId}.${txnId}`
}

export function jobOptions(jobId: string, route: Route): JobsOptions {
  if (route.mode === 'accept') {
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

export function createQueue(connection: Redis, prefix: string): Queue<DeliveryJobData, DeliveryJobReturn> {
  return new Queue<DeliveryJobData, DeliveryJobReturn>(QUEUE_NAME, { connection, prefix })
}

export function createWorker(
  connection: Redis,
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
    settings: {
      backoffStrategy: (attemptsMade, _type, err, job) => {
        const base = (job?.opts.backoff as { delay?: number } | undefined)?.delay ?? 30_000
        const retryAfter = err instanceof RetryableDeliveryError ? err.retryAfterMs : undefined
        return backoffDelay(attemptsMade, base, job ? maxDelayFor(job as DeliveryJob) : 3_600_000, retryAfter)
      },
    },
  })
}
