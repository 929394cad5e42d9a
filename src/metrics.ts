/**
 * Prometheus metrics. One registry per app (two apps in one process, as in tests, do not share
 * counters). Metrics are fed through the observers and hooks the parts already expose
 * (ServerObserver, PipelineObserver, the worker's onAttempt, the delivery gate) and the Redis
 * clients' error events; queue depth is read from every BullMQ queue shard and route health from
 * the in-memory route state on each scrape. The default process metrics keep their standard names
 * (`process_*`, `nodejs_*`), which the usual Node.js dashboards expect.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { JobType } from 'bullmq'
import type { ServerObserver } from './lmtp/server.js'
import type { Envelope } from './lmtp/types.js'
import type { Reply } from './lmtp/reply.js'
import type { PipelineObserver } from './delivery/pipeline.js'
import type { AttemptRecord } from './delivery/worker.js'
import type { RouteCondition } from './routing/state.js'

export const METRIC_PREFIX = 'lmtp_webhook_'

/** A route as the route health gauges see it. */
export interface RouteHealthSample {
  readonly id: string
  readonly breaker: boolean
  readonly condition: RouteCondition
}

const CIRCUIT_STATES = ['closed', 'open', 'half-open'] as const

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
  private routes: (() => readonly RouteHealthSample[]) | null = null

  readonly connections = new Counter({
    name: `${METRIC_PREFIX}lmtp_connections_total`,
    help: 'LMTP connections by event: open (accepted), close, refused (over LMTP_MAX_CONNECTIONS or shutting down), denied (outside LMTP_ALLOW_CIDRS, or a missing or invalid PROXY header from a trusted proxy).',
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

  readonly linesAbandoned = new Counter({
    name: `${METRIC_PREFIX}lmtp_lines_abandoned_total`,
    help: 'LMTP sessions closed because one command line passed LMTP_MAX_LINE_DISCARD octets.',
    registers: [this.registry],
  })

  readonly starttls = new Counter({
    name: `${METRIC_PREFIX}lmtp_starttls_total`,
    help: 'STARTTLS handshakes by result: ok, failed (handshake error), no_client_certificate (LMTP_TLS_CLIENT_CERT=require not met).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  })

  readonly auth = new Counter({
    name: `${METRIC_PREFIX}lmtp_auth_total`,
    help: 'AUTH attempts by result: ok, failed (bad credentials), limited (refused after LMTP_AUTH_MAX_FAILURES from the address).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  })

  readonly recipientReplies = new Counter({
    name: `${METRIC_PREFIX}lmtp_recipient_replies_total`,
    help: 'Final replies sent to the MTA for recipients after the data, by route and reply class (2xx, 4xx, 5xx).',
    labelNames: ['route', 'class'] as const,
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
    help: 'Webhook delivery attempts by route, HTTP status class (error: no status) and outcome.',
    labelNames: ['route', 'status_class', 'outcome'] as const,
    registers: [this.registry],
  })

  readonly attemptSeconds = new Histogram({
    name: `${METRIC_PREFIX}webhook_attempt_duration_seconds`,
    help: 'Duration of webhook delivery attempts, by route and HTTP status class.',
    labelNames: ['route', 'status_class'] as const,
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

  readonly circuitState = new Gauge({
    name: `${METRIC_PREFIX}route_circuit_state`,
    help: 'Circuit breaker state of each route: 1 for the state it is in (closed, open, half-open), 0 for the others. Routes without a breaker are always closed.',
    labelNames: ['route', 'state'] as const,
    registers: [this.registry],
    collect: () => this.collectCircuits(),
  })

  readonly paused = new Gauge({
    name: `${METRIC_PREFIX}route_paused`,
    help: 'Routes paused by an operator (1) or not (0).',
    labelNames: ['route'] as const,
    registers: [this.registry],
    collect: () => {
      this.paused.reset()
      for (const r of this.routes?.() ?? []) this.paused.set({ route: r.id }, r.condition.paused ? 1 : 0)
    },
  })

  readonly refusals = new Counter({
    name: `${METRIC_PREFIX}route_rcpt_refusals_total`,
    help: 'Recipients refused at RCPT with 451 4.3.2 because their defer-mode route is paused or its circuit is open.',
    labelNames: ['route', 'reason'] as const,
    registers: [this.registry],
  })

  readonly waits = new Counter({
    name: `${METRIC_PREFIX}route_waits_total`,
    help: 'Times a delivery could not be attempted when its turn came, by route and reason: busy (concurrency), rate, probing (half-open), paused, open (circuit).',
    labelNames: ['route', 'reason'] as const,
    registers: [this.registry],
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
    if (options.processMetrics !== false) collectDefaultMetrics({ register: this.registry })
    for (const event of ['open', 'close', 'refused', 'denied']) this.connections.inc({ event }, 0)
    this.linesAbandoned.inc(0)
    for (const result of ['ok', 'failed', 'no_client_certificate']) this.starttls.inc({ result }, 0)
    for (const result of ['ok', 'failed', 'limited']) this.auth.inc({ result }, 0)
    for (const mode of ['defer', 'accept', 'async']) this.replyTimeouts.inc({ mode }, 0)
    this.redisErrors.inc(0)
    this.transactions.inc(0)
  }

  /** Reads route health from this source on each scrape. */
  trackRoutes(routes: () => readonly RouteHealthSample[]): void {
    this.routes = routes
  }

  private collectCircuits(): void {
    if (!this.routes) return
    this.circuitState.reset()
    const now = Date.now()
    for (const r of this.routes()) {
      const c = r.condition
      // An open circuit whose cool-down is over lets the next delivery probe: half-open.
      const current = !r.breaker ? 'closed' : c.circuit === 'open' && now >= c.openUntil ? 'half-open' : c.circuit
      for (const state of CIRCUIT_STATES) this.circuitState.set({ route: r.id, state }, state === current ? 1 : 0)
    }
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
        replies.forEach((r, i) => {
          const route = (envelope.recipients[i]?.context as { id?: unknown } | undefined)?.id
          this.recipientReplies.inc({ route: typeof route === 'string' ? route : '', class: statusClass(r.code) })
        })
        next.transaction?.(envelope, replies, size)
      },
      lineAbandoned: () => {
        this.linesAbandoned.inc()
        next.lineAbandoned?.()
      },
      starttls: (result) => {
        this.starttls.inc({ result: result.replace(/-/g, '_') })
        next.starttls?.(result)
      },
      auth: (result) => {
        this.auth.inc({ result })
        next.auth?.(result)
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
    this.attempts.inc({ route: record.route, status_class: statusLabel, outcome: record.outcome })
    this.attemptSeconds.observe({ route: record.route, status_class: statusLabel }, record.durationMs / 1000)
  }

  refused(route: string, reason: 'paused' | 'circuit_open'): void {
    this.refusals.inc({ route, reason })
  }

  waited(route: string, reason: string): void {
    this.waits.inc({ route, reason })
  }

  redisError(): void {
    this.redisErrors.inc()
  }

  /** The exposition text and its content type. */
  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() }
  }
}
