/**
 * Wires the parts together and returns something that starts and closes. Tests build this; the
 * process entry point (main.ts) only adds the environment, the logger and signals.
 */
import { setMaxListeners } from 'node:events'
import type { Worker } from 'bullmq'
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
import { DeliveryQueues, attemptsOf, type DeliveryJobData, type DeliveryJobReturn, type DeliveryShard } from './delivery/queue.js'
import { LocalAttempts } from './delivery/local.js'
import { DeliveryPipeline, type PipelineObserver } from './delivery/pipeline.js'
import { createProcessor, type AttemptRecord } from './delivery/worker.js'
import { probeDurability, type Durability } from './delivery/durability.js'
import { buildAdminServer, type AdminServer } from './admin/server.js'
import { DeliveryLog } from './delivery/log.js'
import { Metrics } from './metrics.js'
import { RedisConnections, closeClient, connectClient, type RedisClient } from './redis/connections.js'
import { KeyLayout } from './redis/keys.js'
import { PubSub } from './redis/pubsub.js'
import { migrateRoutes } from './redis/migrate.js'
import { RouteState } from './routing/state.js'
import { DeliveryGate } from './delivery/limits.js'
import { OperationalEvents } from './delivery/events.js'
import { RedisProbe } from './health.js'
import { keepsMail } from './delivery/outcome.js'

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
  /** Every delivery queue shard. */
  readonly queues: DeliveryQueues
  /** The name of every Redis key the app uses. */
  readonly keys: KeyLayout
  /** Every Redis connection of the app, by role. */
  readonly connections: RedisConnections
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

/**
 * Three connections, because their roles differ (src/redis/connections.ts builds them for the
 * topology in use; docs/architecture.md, "Connections", counts them):
 * - `app` (routes, route state, result channel, delivery log, admin, readiness PING).
 * - `queue` (the BullMQ queues, the events queue and the transaction stores). A transaction and its
 *   jobs go out on this one connection in order, so Redis has stored the message before any job
 *   for it exists.
 * - `worker` (BullMQ's workers, the events worker too, which also duplicate it for their blocking
 *   wait): waits forever for Redis instead of failing commands, as BullMQ requires.
 * Each of the three coalesces its writes per event-loop turn (`redis/coalesce.ts`; not the
 * subscriber, nor the duplicates made for BullMQ's blocking wait, which write little): on this
 * machine class the system call, not Redis, is the cost. ioredis's auto-pipelining would do it per
 * tick, but it builds a pipeline object each time and copies every script defined on the connection
 * into it (BullMQ defines 64, ~50 us).
 * A fourth, `subscriber`, carries the subscriptions of the route store, the route state and the
 * result channel.
 * Commands of the LMTP path fail after two retries or a command timeout (the session then gives
 * the safe reply for the mode) rather than wait.
 */
/** How long one part may take to close at shutdown before it is left behind. */
const CLOSE_STEP_MS = 3_000

const delay = <T>(ms: number, value: T): Promise<T> => new Promise((resolve) => setTimeout(() => resolve(value), ms).unref())

export async function buildApp(config: Config, log: Logger, hooks: AppHooks = {}): Promise<App> {
  // One set of destination rules: route URLs written as a denied address are refused when the
  // route is read or created, every connection is checked when it is made.
  const guard = new DestinationGuard({ allowCidrs: config.delivery.allowCidrs, denyCidrs: config.delivery.denyCidrs })
  const fileRoutes: Route[] = config.delivery.routesFile ? loadRoutesFile(config.delivery.routesFile, { guard }) : []
  const metrics = new Metrics()
  const keys = new KeyLayout(config.redis.prefix, config.redis.queueShards)
  const connections = new RedisConnections(config.redis, { log, onError: () => metrics.redisError() })
  const redis = connections.open('app')
  const queueRedis = connections.open('queue')
  const workerRedis = connections.open('worker')
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
    connections.disconnectAll()
  }
  const connect = async (client: RedisClient): Promise<void> => {
    await connectClient(client, config.redis, config.redis.connectTimeoutMs)
    closers.push(() => closeClient(client, CLOSE_STEP_MS))
  }
  try {
    await connect(redis)
    await connect(queueRedis)
    await connect(workerRedis)

    const durability = await probeDurability(redis)
    // Readiness: a Redis that is connected but does not answer (frozen) is not ready.
    const redisProbe = new RedisProbe(redis)
    closers.push(async () => redisProbe.stop())
    const checkAccept = (route: Route): void => {
      if (keepsMail(route.mode) && !durability.durable && !config.redis.allowAcceptWithoutAof) {
        throw new AppError(
          'CONFIG_ERR_INVALID',
          `route "${route.id}": mode ${route.mode} needs Redis with AOF and WAITAOF (Redis >= 7.2) or appendfsync always; this Redis ${durability.version} has ${durability.aof ? 'AOF without either' : 'no AOF'}. Set ALLOW_ACCEPT_WITHOUT_AOF=true to accept mail anyway.`,
          { route: route.id, variable: 'ALLOW_ACCEPT_WITHOUT_AOF' },
        )
      }
    }
    for (const r of fileRoutes) checkAccept(r)

    await migrateRoutes(redis, keys, log.child({ part: 'routes' }))
    const subscriber = connections.open('subscriber')
    const pubsub = new PubSub(subscriber)
    closers.push(() => pubsub.close())
    await connectClient(subscriber, config.redis, config.redis.connectTimeoutMs)
    const routes = await RouteStore.open({ redis, pubsub, prefix: config.redis.prefix, fileRoutes, logger: log.child({ part: 'routes' }), guard })
    closers.push(() => routes.close())
    for (const r of routes.list())
      if (r.source === 'api' && keepsMail(r.mode) && !durability.durable && !config.redis.allowAcceptWithoutAof) {
        log.warn({ route: r.id }, 'accept-mode route on a Redis that is not durable')
      }
    const acceptRoutes = routes
      .list()
      .filter((r) => keepsMail(r.mode))
      .map((r) => r.id)
    const minReplicas = config.redis.minReplicasAck
    if (acceptRoutes.length > 0 && durability.replicas > 0 && minReplicas === 0) {
      log.warn(
        { routes: acceptRoutes, replicas: durability.replicas, variable: 'REDIS_MIN_REPLICAS_ACK' },
        'accept-mode routes on a Redis primary with replicas, and no replica has to acknowledge a job before its 250: a failover can lose mail already answered 250; set REDIS_MIN_REPLICAS_ACK',
      )
    }
    if (minReplicas > durability.replicas) {
      log.warn(
        { replicas: durability.replicas, required: minReplicas, variable: 'REDIS_MIN_REPLICAS_ACK' },
        'fewer replicas are connected than REDIS_MIN_REPLICAS_ACK requires: accept-mode recipients get 451 until enough are',
      )
    }

    const hasListener = config.role !== 'worker'
    const hasWorker = config.role !== 'listener'
    const channel = await ResultChannel.open(redis, hasListener ? pubsub : null, keys, log.child({ part: 'results' }))
    closers.push(() => channel.close())
    const client = new WebhookClient({
      guard,
      connectTimeoutMs: config.delivery.connectTimeoutMs,
    })
    closers.push(() => client.close())
    const queues = await DeliveryQueues.open({ queueConnection: queueRedis, appConnection: redis, layout: keys, log: log.child({ part: 'queue' }) })
    closers.push(() => queues.close())
    metrics.trackQueue(queues)
    const deliveries = new DeliveryLog(
      redis,
      queues.all.map((s) => s.keys),
      {
        max: config.delivery.logRetention,
        ttlMs: config.delivery.logTtlMs,
        log: log.child({ part: 'delivery-log' }),
        onError: () => metrics.redisError(),
      },
    )

    // Route protection: pause, circuit breaker, limits (routing/state.ts, delivery/limits.ts), and
    // the operational events they and the dead letters emit (delivery/events.ts).
    const state = await RouteState.open({
      redis,
      pubsub,
      prefix: config.redis.prefix,
      log: log.child({ part: 'route-state' }),
      routeIds: () => routes.list().map((r) => r.id),
    })
    closers.push(() => state.close())
    routes.onChange(() => void state.reload().catch((err: unknown) => log.warn({ err }, 'could not load the state of changed routes')))
    const events = new OperationalEvents(queueRedis, keys.eventsPrefix, {
      url: config.events.url,
      secret: config.events.secret,
      client,
      timeoutMs: config.delivery.webhookTimeoutMs,
      log: log.child({ part: 'events' }),
    })
    closers.push(() => events.close())
    metrics.trackRoutes(() => routes.list().map((r) => ({ id: r.id, breaker: r.circuitBreaker !== null, condition: state.get(r.id) })))

    let workers: Worker<DeliveryJobData, DeliveryJobReturn>[] = []
    // First attempts made by the listener itself, in a process that has both roles.
    let local: LocalAttempts | null = null
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
              state.releaseHeld(route.id, queues)
            }
          },
          waited: (route, reason) => metrics.waited(route.id, reason),
        },
      })
      closers.push(() => gate.close())
      // Every attempt, a worker's or the listener's own, is counted and logged the same way.
      const onAttemptIn = (shard: DeliveryShard): ((record: AttemptRecord) => void) => {
        const shardLog = deliveries.in(shard.keys)
        return (record) => {
          metrics.attempt(record)
          void shardLog.record(record)
          hooks.attempt?.(record)
        }
      }
      if (hasListener) {
        local = new LocalAttempts(
          {
            client,
            webhookTimeoutMs: config.delivery.webhookTimeoutMs,
            log: log.child({ part: 'local' }),
            onAttempt: (record, shard) => onAttemptIn(shard)(record),
            signal: abortJobs.signal,
            gate,
          },
          config.delivery.workerConcurrency,
        )
      }
      const started = queues.createWorkers(
        workerRedis,
        config.delivery.workerConcurrency,
        (shard) =>
          createProcessor({
            routes,
            store: shard.store,
            client,
            channel,
            webhookTimeoutMs: config.delivery.webhookTimeoutMs,
            log: log.child({ part: 'worker', shard: shard.label }),
            onAttempt: onAttemptIn(shard),
            signal: abortJobs.signal,
            gate,
          }),
        (job) => routes.get(job.data.route)?.retry.maxDelayMs ?? 3_600_000,
      )
      for (const { shard, worker } of started) {
        const shardLog = deliveries.in(shard.keys)
        worker.on('error', (err) => log.warn({ err, shard: shard.label }, 'worker error'))
        // A job that failed for good (not one that will be retried) is a dead letter.
        worker.on('failed', (job, err) => {
          if (!job?.id || !job.finishedOn || job.opts.removeOnFail !== false) return
          const d = job.data
          void shardLog.setState({ id: job.id, txn: d.txn, rcpt: d.rcpt, route: d.route, mode: d.mode }, 'dead', err.message)
          void events.emit(
            'delivery.dead',
            { delivery: job.id, route: d.route, recipient: d.rcpt, txn: d.txn, attempts: attemptsOf(job), reason: err.message },
            `${job.id}:${job.finishedOn}`,
            job.finishedOn,
          )
        })
      }
      workers = started.map((w) => w.worker)
      events.startWorker(workerRedis)
    }

    let lmtp: LmtpServer | null = null
    if (hasListener) {
      const pipeline = new DeliveryPipeline({
        routes: {
          lookup: (address) => routes.lookup(address),
          refusal: (route, rcpt) => {
            const refused = state.refusal(route, rcpt)
            if (refused) metrics.refused(route.id, state.get(route.id).paused ? 'paused' : 'circuit_open')
            return refused
          },
        },
        queues,
        redis: queueRedis,
        channel,
        client,
        durability,
        options: {
          replyTimeoutMs: config.delivery.replyTimeoutMs,
          messageTtlMs: config.delivery.messageTtlMs,
          senderCheckUrl: config.delivery.senderCheckUrl,
          senderCheckSecret: config.delivery.senderCheckSecret,
          checkTimeoutMs: Math.min(config.delivery.webhookTimeoutMs, 10_000),
          allowAcceptWithoutAof: config.redis.allowAcceptWithoutAof,
          minReplicasAck: minReplicas,
          webhookTimeoutMs: config.delivery.webhookTimeoutMs,
        },
        log: log.child({ part: 'pipeline' }),
        observer: metrics.pipelineObserver(hooks.pipeline),
        local,
      })
      closers.push(async () => pipeline.close())
      lmtp = new LmtpServer(config.lmtp, pipeline, log.child({ part: 'lmtp' }), metrics.lmtpObserver(hooks.lmtp))
    }

    let ready = false
    let admin: AdminServer | null = null
    const app: App = {
      routes,
      queues,
      keys,
      connections,
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
        for (const worker of workers) void worker.run().catch((err: unknown) => log.error({ err }, 'worker stopped'))
        let adminPort: number | null = null
        if (config.admin.port !== null) {
          admin = await buildAdminServer({
            config,
            log: log.child({ part: 'admin' }),
            routes,
            queues,
            durability,
            deliveries,
            client,
            metrics,
            state,
            events,
            health: {
              ready: () => ready,
              // Redis answers, and none of this process's connections has closed for good.
              redis: () => redisProbe.up && connections.closedForGood().length === 0,
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
        connections.shutDown()
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
        if (workers.length > 0) {
          const closing = Promise.all(workers.map((w) => w.close()))
          const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), Math.max(1000, deadline)).unref())
          if ((await Promise.race([closing.then(() => 'done' as const), timer])) === 'timeout') {
            log.warn('jobs still running at the shutdown deadline: aborting their attempts')
            abortJobs.abort()
            // Aborted attempts end at once; only a Redis that does not answer can hold this.
            const settled = await Promise.race([closing.then(() => true), delay(2000, false)])
            if (!settled) {
              log.warn('the worker could not hand its jobs back (Redis?): closing it without waiting')
              await Promise.race([Promise.all(workers.map((w) => w.close(true).catch(() => {}))), delay(CLOSE_STEP_MS, null)])
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
