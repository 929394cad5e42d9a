/**
 * Operational events sent to EVENTS_URL: `delivery.dead`, `route.circuit_opened`,
 * `route.circuit_closed`, `route.paused`, `route.resumed`. Each is a Standard Webhooks message
 * (`{ type, timestamp, data }`, signed with EVENTS_SECRET like deliveries are with a route's
 * secret) sent by the same WebhookClient, destination guard included.
 *
 * Events go through their own BullMQ queue (`events`), so a send that fails is retried with
 * exponential backoff and survives a restart: an operator's alert about a dead letter or an
 * opened circuit must not be lost because the alerting endpoint (or this process) was briefly
 * away. The queue has its own hash tag (`<prefix>:{events}`, src/redis/keys.ts), so on a cluster
 * each of BullMQ's scripts over it touches one slot. The job id is derived from the event (type + what it is about + when it happened), so an
 * event emitted twice (two replicas, a retried call) is queued once; the scripts that change a
 * route's state decide which single caller emits it in the first place.
 */
import { createHash } from 'node:crypto'
import { Queue, Worker } from 'bullmq'
import type { Logger } from 'pino'
import type { RedisClient } from '../redis/connections.js'
import type { WebhookClient } from './http.js'
import { parseSecret, webhookHeaders } from './signing.js'
import { RetryableDeliveryError, backoffDelay } from './queue.js'

export const EVENT_TYPES = ['delivery.dead', 'route.circuit_opened', 'route.circuit_closed', 'route.paused', 'route.resumed'] as const
export type EventType = (typeof EVENT_TYPES)[number]

export const EVENTS_QUEUE = 'events'
/** Sends in all: about 1.5 hours of retries (1 s doubling, at most 15 min apart). */
export const EVENT_ATTEMPTS = 15
const EVENT_BACKOFF_MS = 1000
const EVENT_MAX_DELAY_MS = 15 * 60_000

export interface EventJobData {
  readonly id: string
  readonly type: EventType
  /** ISO 8601 time of what happened. */
  readonly timestamp: string
  readonly data: Record<string, unknown>
}

export interface EventsOptions {
  /** EVENTS_URL; null turns events off. */
  readonly url: string | null
  /** EVENTS_SECRET (`whsec_...`); null sends unsigned events. */
  readonly secret: string | null
  readonly client: WebhookClient
  readonly timeoutMs: number
  readonly log: Logger
}

/** The event's id: the same for the same event, whoever emits it. */
export function eventId(type: EventType, key: string): string {
  return `evt_${createHash('sha256').update(type).update('\0').update(key).digest('base64url').slice(0, 32)}`
}

export class OperationalEvents {
  private readonly queue: Queue<EventJobData> | null
  private worker: Worker<EventJobData> | null = null
  private readonly keys: Buffer[]

  /** `prefix`: the queue's BullMQ prefix (KeyLayout `eventsPrefix`). */
  constructor(
    connection: RedisClient,
    private readonly prefix: string,
    private readonly options: EventsOptions,
  ) {
    this.queue = options.url === null ? null : new Queue<EventJobData>(EVENTS_QUEUE, { connection, prefix })
    this.queue?.on('error', (err) => options.log.warn({ err: err.message }, 'events queue error'))
    this.keys = options.secret === null ? [] : [parseSecret(options.secret, 'EVENTS_SECRET')]
  }

  get enabled(): boolean {
    return this.queue !== null
  }

  /**
   * Queues an event. `key` names the occurrence (route and time of the transition, job id and time
   * of its failure) so a second emit of the same occurrence is ignored. Never rejects: an event
   * that cannot be queued is logged.
   */
  async emit(type: EventType, data: Record<string, unknown>, key: string, at = Date.now()): Promise<void> {
    if (!this.queue) return
    const id = eventId(type, key)
    const job: EventJobData = { id, type, timestamp: new Date(at).toISOString(), data }
    try {
      await this.queue.add(type, job, {
        jobId: id,
        attempts: EVENT_ATTEMPTS,
        backoff: { type: 'event', delay: EVENT_BACKOFF_MS },
        // kept a day after success, so a late duplicate is still recognised
        removeOnComplete: { age: 86_400, count: 10_000 },
        removeOnFail: { age: 7 * 86_400, count: 1000 },
      })
    } catch (err) {
      this.options.log.error({ err, event: type, id }, 'could not queue an operational event')
    }
  }

  /** Starts sending queued events (processes that run workers). */
  startWorker(connection: RedisClient): void {
    if (!this.queue || this.worker) return
    const url = this.options.url!
    this.worker = new Worker<EventJobData>(
      EVENTS_QUEUE,
      async (job) => {
        const e = job.data
        const body = Buffer.from(JSON.stringify({ type: e.type, timestamp: e.timestamp, data: e.data }))
        const signed = webhookHeaders(this.keys, e.id, body)
        const result = await this.options.client.attempt({
          url,
          headers: { 'content-type': 'application/json', ...signed },
          body,
          deadlineMs: this.options.timeoutMs,
        })
        const ok = result.status !== undefined && result.status >= 200 && result.status < 300
        this.options.log[ok ? 'debug' : 'warn'](
          { event: e.type, id: e.id, attempt: job.attemptsMade + 1, status: result.status, error: result.error?.code },
          'operational event sent',
        )
        if (!ok) throw new RetryableDeliveryError(`events endpoint answered ${result.status ?? result.error?.code}`, result.retryAfterMs)
      },
      {
        connection,
        prefix: this.prefix,
        concurrency: 4,
        settings: {
          backoffStrategy: (attemptsMade, _type, err) =>
            backoffDelay(attemptsMade, EVENT_BACKOFF_MS, EVENT_MAX_DELAY_MS, err instanceof RetryableDeliveryError ? err.retryAfterMs : undefined),
        },
      },
    )
    this.worker.on('error', (err) => this.options.log.warn({ err }, 'events worker error'))
    this.worker.on('failed', (job, err) => {
      if (job && job.attemptsMade >= EVENT_ATTEMPTS)
        this.options.log.error({ event: job.data.type, id: job.data.id, err: err.message }, 'operational event dropped after its last attempt')
    })
  }

  async close(): Promise<void> {
    await this.worker?.close()
    await this.queue?.close()
  }
}
