/**
 * The admin HTTP server (Fastify): health, readiness, metrics, the OpenAPI document and, under
 * /v1, the operator API behind bearer tokens.
 *
 * TypeBox schemas are the one source of request validation, response serialisation and the
 * OpenAPI document (see openapi.ts). Every error, Fastify's own included, answers
 * `{ "error": { code, message, details? } }` (see errors.ts).
 */
import { readFileSync } from 'node:fs'
import Fastify, { LogController, type FastifyBaseLogger, type FastifySchemaCompiler } from 'fastify'
import swagger from '@fastify/swagger'
import type { TSchema } from 'typebox'
import { Compile } from 'typebox/compile'
import { Value } from 'typebox/value'
import type { AdminContext, AdminFastify } from './context.js'
import { tokenCheck } from './auth.js'
import { adminError, mapError } from './errors.js'
import { routesApi } from './routes.js'
import { deliveriesApi } from './deliveries.js'
import { HealthSchema, ReadinessSchema, SHARED_SCHEMAS, ref } from './schemas.js'
import { OPENAPI_OPTIONS, PAYLOAD_SCHEMA_PATH } from './openapi.js'
import { UI_PATHS, registerUi } from './ui.js'

export type { AdminContext } from './context.js'

/** Request bodies larger than this are refused with 413. */
export const BODY_LIMIT = 256 * 1024

export interface AdminServer {
  readonly fastify: AdminFastify
  listen(host: string, port: number): Promise<number>
  close(): Promise<void>
}

/** Routes that need no token (the dashboard's files hold no data; the page sends the token itself). */
const PUBLIC_ROUTES = new Set(['/healthz', '/readyz', '/metrics', '/openapi.json', '/webhook-payload.schema.json', ...UI_PATHS])

/** Bodies the route store validates itself (same TypeBox schema, plus semantic checks). */
const STORE_VALIDATED = new Set(['RouteDefinition', 'RouteReplacement'])

/**
 * Request validation with TypeBox. Query strings and path parameters are converted first
 * (`?limit=10` is the integer 10); an absent body is validated as `{}`.
 */
const validatorCompiler: FastifySchemaCompiler<TSchema> = ({ schema, httpPart }) => {
  const target = (schema as { $ref?: string }).$ref
  if (httpPart === 'body' && target !== undefined && STORE_VALIDATED.has(target)) return (value: unknown) => ({ value })
  const check = Compile(schema)
  return (value: unknown) => {
    const input = httpPart === 'body' ? (value ?? {}) : Value.Convert(schema, value)
    if (check.Check(input)) return { value: input }
    return { error: [...check.Errors(input)] as never }
  }
}

function loadPayloadSchema(): string | null {
  try {
    return readFileSync(PAYLOAD_SCHEMA_PATH, 'utf8')
  } catch {
    return null
  }
}

/** Builds the Fastify instance with every route; touches `ctx` only when requests arrive. */
export async function createAdminApp(ctx: AdminContext): Promise<AdminFastify> {
  const fastify = Fastify({
    loggerInstance: ctx.log as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: BODY_LIMIT,
  }) as unknown as AdminFastify
  fastify.setValidatorCompiler(validatorCompiler)
  // JSON only: any other body is 415 ADMIN_ERR_UNSUPPORTED_MEDIA_TYPE.
  fastify.removeContentTypeParser('text/plain')

  fastify.setErrorHandler((err, req, res) => {
    const mapped = mapError(err)
    if (mapped.internal) req.log.error({ err, url: req.url, method: req.method }, 'admin API error')
    return res.code(mapped.status).send(mapped.body)
  })
  fastify.setNotFoundHandler((req, res) => {
    const mapped = mapError(adminError('ADMIN_ERR_NOT_FOUND', `${req.method} ${req.url.split('?')[0]}: no such endpoint`))
    return res.code(mapped.status).send(mapped.body)
  })

  // Deny by default: everything but these routes needs a token, unknown paths included. The
  // decision rests on the route the router matched, never on the raw URL (`/%761/routes` is
  // routed to /v1/routes).
  let check: ((authorization: string | undefined) => boolean) | null = null
  fastify.addHook('onRequest', async (req, res) => {
    if (PUBLIC_ROUTES.has(req.routeOptions.url ?? '')) return
    const tokens = ctx.config.admin.tokens
    if (tokens.length === 0 && ctx.config.admin.allowNoAuth) return
    check ??= tokenCheck(tokens)
    if (check(req.headers.authorization)) return
    res.header('www-authenticate', 'Bearer realm="lmtp-webhook"')
    throw adminError(
      'ADMIN_ERR_UNAUTHORIZED',
      req.headers.authorization === undefined
        ? 'authorization: expected "Bearer <token>", got nothing'
        : 'authorization: expected "Bearer <token>" with a valid token',
    )
  })

  for (const schema of SHARED_SCHEMAS) fastify.addSchema(schema)
  await fastify.register(swagger, OPENAPI_OPTIONS)

  fastify.get(
    '/healthz',
    {
      schema: { tags: ['operations'], summary: 'Liveness', description: 'The process is up.', response: { 200: HealthSchema } },
    },
    async () => ({ status: 'ok' as const }),
  )

  fastify.get(
    '/readyz',
    {
      schema: {
        tags: ['operations'],
        summary: 'Readiness',
        description: '200 when started, Redis is reachable and LMTP is listening; 503 otherwise, and from the moment shutdown begins.',
        response: {
          200: ref(ReadinessSchema),
          503: ref(ReadinessSchema),
        },
      },
    },
    async (_req, res) => {
      const checks = { started: ctx.health.ready(), redis: ctx.health.redis(), lmtp: ctx.health.lmtp() }
      const ok = checks.started && checks.redis && checks.lmtp
      return res.code(ok ? 200 : 503).send({ status: ok ? 'ready' : 'not ready', checks })
    },
  )

  fastify.get(
    '/metrics',
    {
      schema: {
        tags: ['operations'],
        summary: 'Prometheus metrics',
        description: 'Text exposition format. Not behind the bearer token: restrict it at the network level.',
        produces: ['text/plain'],
        response: { 200: { description: 'Prometheus text format', content: { 'text/plain': { schema: { type: 'string' } } } } },
      },
    },
    async (_req, res) => {
      const { contentType, body } = await ctx.metrics.render()
      return res.header('content-type', contentType).send(body)
    },
  )

  fastify.get('/openapi.json', { schema: { hide: true } }, async () => fastify.swagger())
  const payloadSchema = loadPayloadSchema()
  fastify.get('/webhook-payload.schema.json', { schema: { hide: true } }, async (_req, res) => {
    if (payloadSchema === null) throw adminError('ADMIN_ERR_NOT_FOUND', 'the webhook payload schema is not shipped with this build')
    return res.header('content-type', 'application/schema+json').send(payloadSchema)
  })

  registerUi(fastify)
  await fastify.register(routesApi(ctx))
  await fastify.register(deliveriesApi(ctx))
  await fastify.ready()
  return fastify
}

export async function buildAdminServer(ctx: AdminContext): Promise<AdminServer> {
  const fastify = await createAdminApp(ctx)
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

/** The OpenAPI document, from an app that is built but never started (scripts/openapi.ts). */
export async function openapiDocument(): Promise<Record<string, unknown>> {
  const { pino } = await import('pino')
  const log = pino({ level: 'silent' })
  const documentationOnly = new Proxy({} as AdminContext, {
    get: (_target, key) => {
      if (key === 'log') return log
      throw new Error(`the documentation-only admin context has no ${String(key)}`)
    },
  })
  const app = await createAdminApp(documentationOnly)
  try {
    return app.swagger() as unknown as Record<string, unknown>
  } finally {
    await app.close()
  }
}
