/** What the admin API needs of the app. app.ts builds it; handlers use it at request time only. */
import type { FastifyInstance, FastifyBaseLogger, RawServerDefault, RawRequestDefaultExpression, RawReplyDefaultExpression } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { Logger } from 'pino'
import type { Config } from '../config.js'
import type { RouteStore } from '../routing/store.js'
import type { DeliveryQueues } from '../delivery/queue.js'
import type { Durability } from '../delivery/durability.js'
import type { DeliveryLog } from '../delivery/log.js'
import type { WebhookClient } from '../delivery/http.js'
import type { Metrics } from '../metrics.js'
import type { RouteState } from '../routing/state.js'
import type { OperationalEvents } from '../delivery/events.js'

export interface AdminContext {
  readonly config: Config
  readonly log: Logger
  readonly routes: RouteStore
  /** Every delivery queue shard (a job by id, its stored transaction). */
  readonly queues: DeliveryQueues
  /** What the Redis in use can guarantee (accept-mode routes need `durable`). */
  readonly durability: Durability
  readonly deliveries: DeliveryLog
  /** The client real deliveries use (for POST /v1/routes/{id}/test). */
  readonly client: WebhookClient
  readonly metrics: Metrics
  /** Pause flags, circuit state and statistics of the routes. */
  readonly state: RouteState
  readonly events: OperationalEvents
  readonly health: {
    /** Started and not shutting down. */
    ready(): boolean
    redis(): boolean
    lmtp(): boolean
  }
}

export type AdminFastify = FastifyInstance<RawServerDefault, RawRequestDefaultExpression, RawReplyDefaultExpression, FastifyBaseLogger, TypeBoxTypeProvider>
