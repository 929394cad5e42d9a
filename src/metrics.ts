/**
 * Prometheus metrics. One registry per app (two apps in one process, as in tests, do not share
 * counters). Metrics are fed through the observers and hooks the parts already expose
 * (ServerObserver, PipelineObserver, the worker's onAttempt) and the Redis clients' error events;
 * queue depth is read from BullMQ on each scrape.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { JobType } from 'bullmq'
import type { ServerObserver } from './lmtp/server.js'
import type { Envelope } from './lmtp/types.js'
import type { Reply } from './lmtp/reply.js'
import type { PipelineObserver } from './delivery/pipeline.js'
import type { AttemptRecord } from './delivery/worker.js'

export const METRIC_PREFIX = 'lmtp_webhook_'

/** The job states reported by the queue depth gauge. */
export const QUEUE_STATES = ['waiting', 'active', 'delayed', 'failed', 'prioritized', 'waiting-children'] as const

/** `2xx`, `4xx`, `5xx` for a reply or HTTP status; `error` when an attempt got no status. */
export function statusClass(code: number | undefined): string {
  return code === undefined ? 'error' : `${Math.floor(code / 100)}xx`
}

/** Where queue depth is read: job counts of each queue shard (src/delivery/queue.ts DeliveryQueues). */
export interface QueueDepthSource {
  countsByShard(...states: JobType[]): Promise<{ shard: string; counts: Record<string, number> }[]>
}

export class Metrics {
  readonly registry = new Registry()
  private queue: QueueDepthSource | null = null
  /** The scrape's read of the shards, shared by the two queue gauges. */
  private depth: Promise<{ shard: string; counts: Record<string, number> }[] | null> | null = null

  readonly connections = new Counter({
    name: `${METRIC_PREFIX}lmtp_connections_total`,
    help: 'LMTP connections by event: open (accepted), close, refused (over LMTP_MAX_CONNECTIONS).',
    labelNames: ['event'] as const,
    registers: [this.registry],
  })

  readonly openConnections = new Gauge({
    name: `${METRIC_PREFIX}lmtp_connections_open`,
    help: 'LMTP connections open now.',
    registers: [this.registry],
  })

  readonly transactions = new Counter({
    name: `${METRIC_PREFIX}lmtp_transactions_total`,
    help: 'LMTP transactions that reached the end of their data.',
    registers: [this.registry],
  })

  readonly messageBytes = new Histogram({
    name: `${METRIC_PREFIX}lmtp_message_bytes`,
    help: 'Size of received messages in bytes.',
    buckets: [1024, 10_240, 102_400, 1_048_576, 10_485_760, 52_428_800],
    registers: [this.registry],
  })

  readonly recipientReplies = new Counter({
    name: `${METRIC_PREFIX}lmtp_recipient_replies_total`,
    help: 'Final replies sent to the MTA for recipients after the data, by reply class (2xx, 4xx, 5xx).',
    labelNames: ['class'] as const,
    registers: [this.registry],
  })

  readonly replyTimeouts = new Counter({
    name: `${METRIC_PREFIX}reply_timeouts_total`,
    help: 'Recipients whose first webhook attempt did not finish within REPLY_TIMEOUT, by route mode.',
    labelNames: ['mode'] as const,
    registers: [this.registry],
  })

  readonly attempts = new Counter({
    name: `${METRIC_PREFIX}webhook_attempts_total`,
    help: 'Webhook delivery attempts by HTTP status class (error: no status) and outcome.',
    labelNames: ['status_class', 'outcome'] as const,
    registers: [this.registry],
  })

  readonly attemptSeconds = new Histogram({
    name: `${METRIC_PREFIX}webhook_attempt_duration_seconds`,
    help: 'Duration of webhook delivery attempts, by HTTP status class.',
    labelNames: ['status_class'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  })

  readonly redisErrors = new Counter({
    name: `${METRIC_PREFIX}redis_errors_total`,
    help: 'Errors reported by Redis connections and failed delivery log writes.',
    registers: [this.registry],
  })

  readonly queueJobs = new Gauge({
    name: `${METRIC_PREFIX}queue_jobs`,
    help: 'Jobs in the delivery queues (all shards) by state (read from Redis on each scrape); failed = dead letters.',
    labelNames: ['state'] as const,
    registers: [this.registry],
    collect: async () => {
      const shards = await this.readDepth()
      if (shards === null) {
        // Redis unreachable (the connection's error events count it): no depth rather than a
        // stale one, and the rest of the scrape still answers.
        this.queueJobs.reset()
        return
      }
      for (const state of QUEUE_STATES)
        this.queueJobs.set(
          { state },
          shards.reduce((sum, s) => sum + (s.counts[state] ?? 0), 0),
        )
    },
  })

  readonly queueShardJobs = new Gauge({
    name: `${METRIC_PREFIX}queue_shard_jobs`,
    help: 'Jobs in each delivery queue shard (QUEUE_SHARDS; "legacy": the queue of an older key layout being drained) by state.',
    labelNames: ['shard', 'state'] as const,
    registers: [this.registry],
    collect: async () => {
      const shards = await this.readDepth()
      this.queueShardJobs.reset()
      if (shards === null) return
      for (const { shard, counts } of shards) for (const state of QUEUE_STATES) this.queueShardJobs.set({ shard, state }, counts[state] ?? 0)
    },
  })

  /** One read of every shard per scrape, whichever gauge asks first. */
  private readDepth(): Promise<{ shard: string; counts: Record<string, number> }[] | null> {
    if (!this.queue) return Promise.resolve(null)
    if (this.depth === null) {
      const queue = this.queue
      this.depth = queue.countsByShard(...QUEUE_STATES).catch(() => null)
      const clear = (): void => {
        this.depth = null
      }
      void this.depth.finally(() => setImmediate(clear))
    }
    return this.depth
  }

  constructor(options: { processMetrics?: boolean } = {}) {
    if (options.processMetrics !== false) collectDefaultMetrics({ register: this.registry, prefix: METRIC_PREFIX })
    for (const event of ['open', 'close', 'refused']) this.connections.inc({ event }, 0)
    for (const c of ['2xx', '4xx', '5xx']) this.recipientReplies.inc({ class: c }, 0)
    for (const mode of ['defer', 'accept']) this.replyTimeouts.inc({ mode }, 0)
    this.redisErrors.inc(0)
    this.transactions.inc(0)
  }

  /** Reads queue depth from these queues on each scrape. */
  trackQueue(queue: QueueDepthSource): void {
    this.queue = queue
  }

  /** The LMTP server observer, calling `next` too. */
  lmtpObserver(next: ServerObserver = {}): ServerObserver {
    return {
      connection: (event) => {
        this.connections.inc({ event })
        if (event === 'open') this.openConnections.inc()
        else if (event === 'close') this.openConnections.dec()
        next.connection?.(event)
      },
      transaction: (envelope: Envelope, replies: readonly Reply[], size: number) => {
        this.transactions.inc()
        this.messageBytes.observe(size)
        for (const r of replies) this.recipientReplies.inc({ class: statusClass(r.code) })
        next.transaction?.(envelope, replies, size)
      },
    }
  }

  /** The delivery pipeline observer, calling `next` too. */
  pipelineObserver(next: PipelineObserver = {}): PipelineObserver {
    return {
      recipientReply: (reply, mode, timedOut) => {
        if (timedOut) this.replyTimeouts.inc({ mode })
        next.recipientReply?.(reply, mode, timedOut)
      },
    }
  }

  attempt(record: AttemptRecord): void {
    const statusLabel = statusClass(record.status)
    this.attempts.inc({ status_class: statusLabel, outcome: record.outcome })
    this.attemptSeconds.observe({ status_class: statusLabel }, record.durationMs / 1000)
  }

  redisError(): void {
    this.redisErrors.inc()
  }

  /** The exposition text and its content type. */
  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() }
  }
}
