/**
 * The admin HTTP server (Fastify): health, readiness, metrics, the OpenAPI document and, under
 * /v1, the operator API behind bearer tokens.
 *
 * TypeBox schemas are the one source of request validation, response serialisation and the
 * OpenAPI document (see openapi.ts). Every error, Fastify's own included, answers
 * `{ "error": { code, message, details? } }` (see errors.ts).
 */
import { readFileSync } from 'node:fs'
import type { ServerOptions } from 'node:http'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyReply, type FastifyRequest, type FastifySchemaCompiler } from 'fastify'
import swagger from '@fastify/swagger'
import type { TSchema } from 'typebox'
import { Compile } from 'typebox/compile'
import { Value } from 'typebox/value'
import type { AdminContext, AdminFastify } from './context.js'
import { tokenCheck } from './auth.js'
import { adminError, mapClientError, mapError, rawResponse, MAX_PARAM_LENGTH } from './errors.js'
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

/** Methods a path may be told it allows (405 ADMIN_ERR_METHOD_NOT_ALLOWED lists them in `Allow`). */
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'] as const

export interface AdminHttpOptions {
  /** How long the request line and headers may take to arrive (Node's `headersTimeout`; tests shorten it). */
  readonly headersTimeoutMs?: number
}

/** Builds the Fastify instance with every route; touches `ctx` only when requests arrive. */
export async function createAdminApp(ctx: AdminContext, options: AdminHttpOptions = {}): Promise<AdminFastify> {
  // Deny by default: everything but the public routes needs a token, unknown paths included. The
  // decision rests on the route the router matched, never on the raw URL (`/%761/routes` is
  // routed to /v1/routes).
  let check: ((authorization: string | undefined) => boolean) | null = null
  const unauthorized = (req: FastifyRequest, res: FastifyReply): Error | null => {
    const tokens = ctx.config.admin.tokens
    if (tokens.length === 0 && ctx.config.admin.allowNoAuth) return null
    check ??= tokenCheck(tokens)
    if (check(req.headers.authorization)) return null
    res.header('www-authenticate', 'Bearer realm="lmtp-webhook"')
    return adminError(
      'ADMIN_ERR_UNAUTHORIZED',
      req.headers.authorization === undefined
        ? 'authorization: expected "Bearer <token>", got nothing'
        : 'authorization: expected "Bearer <token>" with a valid token',
    )
  }
  const send = (res: FastifyReply, err: unknown): FastifyReply => {
    const mapped = mapError(err)
    return res.code(mapped.status).send(mapped.body)
  }

  const http: ServerOptions = {
    // A request without Host gets the error shape from the onRequest hook, not Node's empty 400.
    requireHostHeader: false,
    ...(options.headersTimeoutMs === undefined
      ? {}
      : { headersTimeout: options.headersTimeoutMs, connectionsCheckingInterval: Math.max(10, Math.floor(options.headersTimeoutMs / 4)) }),
  }
  const fastify = Fastify({
    loggerInstance: ctx.log as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: BODY_LIMIT,
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    http,
    // Errors raised before routing (bad percent-encoding, an over-long path parameter) answer the
    // error shape too, and only to a caller with a token, like an unknown path.
    frameworkErrors: (err, req, res) => send(res, unauthorized(req, res) ?? err),
    // What Node's HTTP parser rejects (there is no request to answer through Fastify).
    clientErrorHandler: (err: NodeJS.ErrnoException, socket) => {
      if (err.code === 'ECONNRESET' || socket.destroyed) return
      if (socket.writable) socket.write(rawResponse(mapClientError(err)))
      socket.destroy()
    },
    // Fastify would answer requests that arrive while it closes with its own 503 body; they are
    // served instead (with `connection: close`): the admin server closes last, before Redis.
    return503OnClosing: false,
  }) as unknown as AdminFastify
  // An Expect other than 100-continue: Node would answer 417 with an empty body.
  fastify.server.on('checkExpectation', (_req, res) => {
    const mapped = mapError(adminError('ADMIN_ERR_EXPECTATION_FAILED', 'expect: only 100-continue is supported'))
    const json = JSON.stringify(mapped.body)
    res
      .writeHead(mapped.status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(json), connection: 'close' })
      .end(json)
  })
  fastify.setValidatorCompiler(validatorCompiler)
  // JSON only: any other body is 415 ADMIN_ERR_UNSUPPORTED_MEDIA_TYPE.
  fastify.removeContentTypeParser('text/plain')

  fastify.setErrorHandler((err, req, res) => {
    const mapped = mapError(err)
    if (mapped.internal) req.log.error({ err, url: req.url, method: req.method }, 'admin API error')
    return res.code(mapped.status).send(mapped.body)
  })
  fastify.setNotFoundHandler((req, res) => {
    const path = req.url.split('?')[0] ?? '/'
    const allowed = METHODS.filter((method) => fastify.findRoute({ method, url: path }) !== null)
    if (allowed.length === 0) return send(res, adminError('ADMIN_ERR_NOT_FOUND', `${req.method} ${path}: no such endpoint`))
    res.header('allow', allowed.join(', '))
    return send(res, adminError('ADMIN_ERR_METHOD_NOT_ALLOWED', `${req.method} ${path}: expected one of ${allowed.join(', ')}`, { allow: allowed }))
  })

  fastify.addHook('onRequest', async (req, res) => {
    if (req.headers.host === undefined && req.raw.httpVersion === '1.1') throw adminError('ADMIN_ERR_BAD_REQUEST', 'host: required in an HTTP/1.1 request')
    if (PUBLIC_ROUTES.has(req.routeOptions.url ?? '')) return
    const denied = unauthorized(req, res)
    if (denied) throw denied
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
        description:
          '200 when started, Redis answers and LMTP is listening; 503 otherwise, and from the moment shutdown begins. Redis answers while the last background PING (one per second) was answered within 1 s.',
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

export async function buildAdminServer(ctx: AdminContext, options: AdminHttpOptions = {}): Promise<AdminServer> {
  const fastify = await createAdminApp(ctx, options)
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
