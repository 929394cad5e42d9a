/**
 * Wires the parts together and returns something that starts and closes. Tests build this; the
 * process entry point (main.ts) only adds the environment, the logger and signals.
 */
import { setMaxListeners } from 'node:events'
import type { Socket } from 'node:net'
import { Redis } from 'ioredis'
import type { Worker, Queue } from 'bullmq'
import type { Logger } from 'pino'
import type { Config } from './config.js'
import { AppError } from './errors.js'
import { LmtpServer, type ServerObserver } from './lmtp/server.js'
import { RouteStore } from './routing/store.js'
import { loadRoutesFile } from './routing/file.js'
import type { Route } from './routing/schema.js'
import { WebhookClient } from './delivery/http.js'
import { DestinationGuard } from './delivery/guard.js'
import { ResultChannel } from './delivery/results.js'
import { TransactionStore } from './delivery/messages.js'
import { createQueue, createWorker, type DeliveryJobData, type DeliveryJobReturn } from './delivery/queue.js'
import { DeliveryPipeline, type PipelineObserver } from './delivery/pipeline.js'
import { createProcessor, type AttemptRecord } from './delivery/worker.js'
import { probeDurability, type Durability } from './delivery/durability.js'
import { buildAdminServer, type AdminServer } from './admin/server.js'
import { DeliveryLog } from './delivery/log.js'
import { Metrics } from './metrics.js'
import { coalesceWrites } from './coalesce.js'
import { RouteState } from './routing/state.js'
import { DeliveryGate } from './delivery/limits.js'
import { OperationalEvents } from './delivery/events.js'
import { RedisProbe } from './health.js'

export interface AppHooks {
  /** Extra observers (metrics, tests). */
  readonly lmtp?: ServerObserver
  readonly pipeline?: PipelineObserver
  readonly attempt?: (record: AttemptRecord) => void
}

export interface StartedApp {
  readonly lmtpPort: number | null
  readonly lmtpSocket: string | null
  readonly adminPort: number | null
}

export interface App {
  start(): Promise<StartedApp>
  close(): Promise<void>
  readonly routes: RouteStore
  readonly queue: Queue<DeliveryJobData, DeliveryJobReturn>
  readonly durability: Durability
  readonly deliveries: DeliveryLog
  readonly metrics: Metrics
  /** Pause flags and circuit state of the routes (shared through Redis). */
  readonly state: RouteState
  readonly events: OperationalEvents
  /** The admin server once started (null when ADMIN_PORT=off). */
  readonly admin: AdminServer | null
  /** True from start() until close() begins. */
  readonly ready: boolean
}

type ConnectionRole = 'app' | 'queue' | 'worker'

/**
 * Three clients, because their roles differ, and three duplicates of them (six connections with
 * ROLE=all, five with listener or worker; docs/architecture.md, "Redis connections"):
 * - `app` (routes, result channel, delivery log, admin, readiness PING), duplicated by the route
 *   store and by the result channel (listener roles) to subscribe.
 * - `queue` (the BullMQ queue and the transaction store). The transaction and its jobs go out on
 *   this one connection in order, so Redis has stored the message before any job for it exists.
 * - `worker` (BullMQ's worker, which also duplicates it for its blocking wait, worker roles):
 *   waits forever for Redis instead of failing commands, as BullMQ requires.
 * Each of the three coalesces its writes per event-loop turn (`coalesce.ts`; not the duplicates
 * made for subscribing and for BullMQ's blocking wait, which write little): on this machine class the
 * system call, not Redis, is the cost. ioredis's auto-pipelining would do it per tick, but it
 * builds a pipeline object each time and copies every script defined on the connection into it
 * (BullMQ defines 64, ~50 us).
 * Commands of the LMTP path fail after two retries or `COMMAND_TIMEOUT_MS` (the session then gives
 * the safe reply for the mode) rather than wait.
 */
const COMMAND_TIMEOUT_MS = 5_000
/** How long one part may take to close at shutdown before it is left behind. */
const CLOSE_STEP_MS = 3_000

const delay = <T>(ms: number, value: T): Promise<T> => new Promise((resolve) => setTimeout(() => resolve(value), ms).unref())

function redisClient(url: string, log: Logger, role: ConnectionRole, metrics: Metrics): Redis {
  const client = new Redis(url, {
    maxRetriesPerRequest: role === 'worker' ? null : 2,
    // A Redis that stops answering (not refusing) must not hold an LMTP session until the MTA's
    // own timeout: its commands fail, and the session gives the safe reply for the mode.
    commandTimeout: role === 'worker' ? undefined : COMMAND_TIMEOUT_MS,
    lazyConnect: true,
    connectionName: `lmtp-webhook:${role}`,
  })
  // ioredis makes a new socket on every (re)connect
  client.on('connect', () => coalesceWrites(client.stream as Socket))
  client.on('error', (err) => {
    metrics.redisError()
    log.warn({ err: err.message }, 'redis error')
  })
  return client
}

export async function buildApp(config: Config, log: Logger, hooks: AppHooks = {}): Promise<App> {
  // One set of destination rules: route URLs written as a denied address are refused when the
  // route is read or created, every connection is checked when it is made.
  const guard = new DestinationGuard({ allowCidrs: config.delivery.allowCidrs, denyCidrs: config.delivery.denyCidrs })
  const fileRoutes: Route[] = config.delivery.routesFile ? loadRoutesFile(config.delivery.routesFile, { guard }) : []
  const metrics = new Metrics()
  const redis = redisClient(config.redis.url, log, 'app', metrics)
  const queueRedis = redisClient(config.redis.url, log, 'queue', metrics)
  const workerRedis = redisClient(config.redis.url, log, 'worker', metrics)
  const closers: (() => Promise<unknown>)[] = []
  // Each part gets a bounded time to close: a Redis that is gone must not keep the process alive.
  const closeAll = async (): Promise<void> => {
    for (const close of closers.reverse()) {
      const done = close().then(
        () => true,
        (err: unknown) => {
          log.warn({ err }, 'error while closing')
          return true
        },
      )
      if (!(await Promise.race([done, delay(CLOSE_STEP_MS, false)]))) log.warn('a part did not close in time; going on')
    }
    closers.length = 0
  }
  const closeRedis = (client: Redis) => async (): Promise<void> => {
    // QUIT on a connection that is not up would wait in the offline queue for a reconnect.
    if (client.status !== 'ready') return client.disconnect()
    await Promise.race([client.quit(), delay(CLOSE_STEP_MS, null)])
    client.disconnect()
  }
  try {
    await redis.connect()
    closers.push(closeRedis(redis))
    await queueRedis.connect()
    closers.push(closeRedis(queueRedis))
    await workerRedis.connect()
    closers.push(closeRedis(workerRedis))

    const durability = await probeDurability(redis)
    // Readiness: a Redis that is connected but does not answer (frozen) is not ready.
    const redisProbe = new RedisProbe(redis)
    closers.push(async () => redisProbe.stop())
    const checkAccept = (route: Route): void => {
      if (route.mode === 'accept' && !durability.durable && !config.redis.allowAcceptWithoutAof) {
        throw new AppError(
          'CONFIG_ERR_INVALID',
          `route "${route.id}": mode accept needs Redis with AOF and WAITAOF (Redis >= 7.2) or appendfsync always; this Redis ${durability.version} has ${durability.aof ? 'AOF without either' : 'no AOF'}. Set ALLOW_ACCEPT_WITHOUT_AOF=true to accept mail anyway.`,
          { route: route.id, variable: 'ALLOW_ACCEPT_WITHOUT_AOF' },
        )
      }
    }
    for (const r of fileRoutes) checkAccept(r)

    const routes = await RouteStore.open({ redis, prefix: config.redis.prefix, fileRoutes, logger: log.child({ part: 'routes' }), guard })
    closers.push(() => routes.close())
    for (const r of routes.list())
      if (r.source === 'api' && r.mode === 'accept' && !durability.durable && !config.redis.allowAcceptWithoutAof) {
        log.warn({ route: r.id }, 'accept-mode route on a Redis that is not durable')
      }

    const hasListener = config.role !== 'worker'
    const hasWorker = config.role !== 'listener'
    const channel = await ResultChannel.open(redis, config.redis.prefix, log.child({ part: 'results' }), hasListener)
    closers.push(() => channel.close())
    const client = new WebhookClient({
      guard,
      connectTimeoutMs: config.delivery.connectTimeoutMs,
    })
    closers.push(() => client.close())
    const store = new TransactionStore(queueRedis, redis, config.redis.prefix)
    const queue = createQueue(queueRedis, config.redis.prefix)
    queue.on('error', (err) => log.warn({ err: err.message }, 'queue error'))
    closers.push(() => queue.close())
    metrics.trackQueue(queue)
    const deliveries = new DeliveryLog(redis, config.redis.prefix, {
      max: config.delivery.logRetention,
      ttlMs: config.delivery.logTtlMs,
      log: log.child({ part: 'delivery-log' }),
      onError: () => metrics.redisError(),
    })

    // Route protection: pause, circuit breaker, limits (routing/state.ts, delivery/limits.ts), and
    // the operational events they and the dead letters emit (delivery/events.ts).
    const state = await RouteState.open({
      redis,
      prefix: config.redis.prefix,
      log: log.child({ part: 'route-state' }),
      routeIds: () => routes.list().map((r) => r.id),
    })
    closers.push(() => state.close())
    routes.onChange(() => void state.reload().catch((err: unknown) => log.warn({ err }, 'could not load the state of changed routes')))
    const events = new OperationalEvents(queueRedis, config.redis.prefix, {
      url: config.events.url,
      secret: config.events.secret,
      client,
      timeoutMs: config.delivery.webhookTimeoutMs,
      log: log.child({ part: 'events' }),
    })
    closers.push(() => events.close())
    metrics.trackRoutes(() => routes.list().map((r) => ({ id: r.id, breaker: r.circuitBreaker !== null, condition: state.get(r.id) })))

    let worker: Worker<DeliveryJobData, DeliveryJobReturn> | null = null
    const abortJobs = new AbortController()
    // One listener per attempt in flight (up to WORKER_CONCURRENCY), not a leak.
    setMaxListeners(0, abortJobs.signal)
    if (hasWorker) {
      const gate = new DeliveryGate({
        redis,
        state,
        log: log.child({ part: 'limits' }),
        defaultTimeoutMs: config.delivery.webhookTimeoutMs,
        observer: {
          transition: (route, transition, at) => {
            if (transition === 'opened') {
              const breaker = route.circuitBreaker
              void events.emit(
                'route.circuit_opened',
                { route: route.id, failures: breaker?.failures, coolDownMs: breaker?.coolDownMs },
                `${route.id}:${at}`,
                at,
              )
            } else if (transition === 'closed') {
              void events.emit('route.circuit_closed', { route: route.id }, `${route.id}:${at}`, at)
              state.releaseHeld(route.id, queue)
            }
          },
          waited: (route, reason) => metrics.waited(route.id, reason),
        },
      })
      closers.push(() => gate.close())
      const processor = createProcessor({
        routes,
        store,
        client,
        channel,
        webhookTimeoutMs: config.delivery.webhookTimeoutMs,
        log: log.child({ part: 'worker' }),
        onAttempt: (record) => {
          metrics.attempt(record)
          void deliveries.record(record)
          hooks.attempt?.(record)
        },
        signal: abortJobs.signal,
        gate,
      })
      worker = createWorker(
        workerRedis,
        config.redis.prefix,
        config.delivery.workerConcurrency,
        processor,
        (job) => routes.get(job.data.route)?.retry.maxDelayMs ?? 3_600_000,
      )
      worker.on('error', (err) => log.warn({ err }, 'worker error'))
      // A job that failed for good (not one that will be retried) is a dead letter.
      worker.on('failed', (job, err) => {
        if (!job?.id || !job.finishedOn || job.opts.removeOnFail !== false) return
        const d = job.data
        void deliveries.setState({ id: job.id, txn: d.txn, rcpt: d.rcpt, route: d.route, mode: d.mode }, 'dead', err.message)
        void events.emit(
          'delivery.dead',
          { delivery: job.id, route: d.route, recipient: d.rcpt, txn: d.txn, attempts: job.attemptsMade, reason: err.message },
          `${job.id}:${job.finishedOn}`,
          job.finishedOn,
        )
      })
      events.startWorker(workerRedis)
    }

    let lmtp: LmtpServer | null = null
    if (hasListener) {
      const pipeline = new DeliveryPipeline(
        {
          lookup: (address) => routes.lookup(address),
          refusal: (route, rcpt) => {
            const refused = state.refusal(route, rcpt)
            if (refused) metrics.refused(route.id, state.get(route.id).paused ? 'paused' : 'circuit_open')
            return refused
          },
        },
        queue,
        queueRedis,
        store,
        channel,
        client,
        durability,
        {
          replyTimeoutMs: config.delivery.replyTimeoutMs,
          messageTtlMs: config.delivery.messageTtlMs,
          senderCheckUrl: config.delivery.senderCheckUrl,
          checkTimeoutMs: Math.min(config.delivery.webhookTimeoutMs, 10_000),
          allowAcceptWithoutAof: config.redis.allowAcceptWithoutAof,
        },
        log.child({ part: 'pipeline' }),
        metrics.pipelineObserver(hooks.pipeline),
      )
      lmtp = new LmtpServer(config.lmtp, pipeline, log.child({ part: 'lmtp' }), metrics.lmtpObserver(hooks.lmtp))
    }

    let ready = false
    let admin: AdminServer | null = null
    const app: App = {
      routes,
      queue,
      durability,
      deliveries,
      metrics,
      state,
      events,
      get admin() {
        return admin
      },
      get ready() {
        return ready
      },
      async start() {
        let lmtpPort: number | null = null
        let lmtpSocket: string | null = null
        if (lmtp) {
          if (config.lmtp.port !== null) lmtpPort = (await lmtp.listen({ host: config.lmtp.host, port: config.lmtp.port })) as number
          if (config.lmtp.socket !== null) lmtpSocket = (await lmtp.listen({ path: config.lmtp.socket })) as string
        }
        if (worker) void worker.run().catch((err: unknown) => log.error({ err }, 'worker stopped'))
        let adminPort: number | null = null
        if (config.admin.port !== null) {
          admin = await buildAdminServer({
            config,
            log: log.child({ part: 'admin' }),
            routes,
            queue,
            durability,
            deliveries,
            messages: store,
            client,
            metrics,
            state,
            events,
            health: {
              ready: () => ready,
              redis: () => redisProbe.up,
              lmtp: () => lmtp === null || lmtp.listening,
            },
          })
          adminPort = await admin.listen(config.admin.host, config.admin.port)
        }
        await redisProbe.start()
        ready = true
        return { lmtpPort, lmtpSocket, adminPort }
      },
      async close() {
        // Readiness first; the listener stays open for SHUTDOWN_DELAY while load balancers and
        // Services stop sending new connections, then closes.
        ready = false
        if (lmtp?.listening && config.lmtp.shutdownDelayMs > 0) {
          log.info({ delayMs: config.lmtp.shutdownDelayMs }, 'not ready; closing the LMTP listener after the shutdown delay')
          await delay(config.lmtp.shutdownDelayMs, null)
        }
        const deadline = config.lmtp.shutdownTimeoutMs
        // Sessions finish their transactions while the worker still runs their jobs.
        if (lmtp) await lmtp.close(deadline)
        if (worker) {
          const closing = worker.close()
          const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), Math.max(1000, deadline)).unref())
          if ((await Promise.race([closing.then(() => 'done' as const), timer])) === 'timeout') {
            log.warn('jobs still running at the shutdown deadline: aborting their attempts')
            abortJobs.abort()
            // Aborted attempts end at once; only a Redis that does not answer can hold this.
            const settled = await Promise.race([closing.then(() => true), delay(2000, false)])
            if (!settled) {
              log.warn('the worker could not hand its jobs back (Redis?): closing it without waiting')
              await Promise.race([worker.close(true).catch(() => {}), delay(CLOSE_STEP_MS, null)])
            }
          }
        }
        if (admin) await admin.close()
        await closeAll()
      },
    }
    return app
  } catch (err) {
    await closeAll()
    throw err
  }
}
