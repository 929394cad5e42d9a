/**
 * The admin HTTP server (Fastify): health, readiness and, under /v1, the operator API.
 */
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import type { Queue } from 'bullmq'
import type { Logger } from 'pino'
import type { Config } from '../config.js'
import type { RouteStore } from '../routing/store.js'
import type { DeliveryJobData, DeliveryJobReturn } from '../delivery/queue.js'

export interface AdminContext {
  readonly config: Config
  readonly log: Logger
  readonly routes: RouteStore
  readonly queue: Queue<DeliveryJobData, DeliveryJobReturn>
  readonly health: {
    /** Started and not shutting down. */
    ready(): boolean
    redis(): boolean
    lmtp(): boolean
  }
}

export interface AdminServer {
  readonly fastify: FastifyInstance
  listen(host: string, port: number): Promise<number>
  close(): Promise<void>
}

export async function buildAdminServer(ctx: AdminContext): Promise<AdminServer> {
  const fastify = Fastify({ loggerInstance: ctx.log as FastifyBaseLogger, disableRequestLogging: true }) as unknown as FastifyInstance
  fastify.get('/healthz', async () => ({ status: 'ok' }))
  fastify.get('/readyz', async (_req, res) => {
    const checks = { started: ctx.health.ready(), redis: ctx.health.redis(), lmtp: ctx.health.lmtp() }
    const ok = checks.started && checks.redis && checks.lmtp
    return res.code(ok ? 200 : 503).send({ status: ok ? 'ready' : 'not ready', checks })
  })
  await fastify.ready()
  return {
    fastify,
    async listen(host, port) {
      await fastify.listen({ host, port })
      const address = fastify.server.address()
      return typeof address === 'object' && address ? address.port : port
    },
    async close() {
      await fastify.close()
    },
  }
}
