/**
 * /v1/routes: list, read, create, replace and delete routes, send a test delivery, and pause or
 * resume a route. Every route view carries its health (pause, circuit, last attempt, last hour),
 * read from Redis so every replica answers the same.
 *
 * File routes are listed (with `source: "file"`) but read-only: changing or deleting one answers
 * 409 ADMIN_ERR_READ_ONLY (the conflict is with where the route lives, not with who asks).
 * Bodies are validated by the route store with the same TypeBox schema the OpenAPI document
 * shows, plus the checks JSON Schema cannot express; every message names the field.
 */
import type { Route } from '../routing/schema.js'
import { RouteDefinitionSchema, parseRoute, publicView } from '../routing/schema.js'
import type { RouteHealth } from '../routing/state.js'
import type { AdminContext, AdminFastify } from './context.js'
import { adminError } from './errors.js'
import {
  PauseBodySchema,
  RouteIdParams,
  RouteListSchema,
  RouteReplacementSchema,
  RouteSchema,
  TestDeliveryBodySchema,
  TestDeliveryResultSchema,
  errors,
  ref,
} from './schemas.js'
import { sendTestDelivery } from './test-delivery.js'
import { keepsMail } from '../delivery/outcome.js'

const TAGS = ['routes']

/** The public view of a route with its health, as the response schema types it. */
function shown(route: Route, health: RouteHealth) {
  const view = publicView(route)
  return { ...view, secretIds: [...view.secretIds], health: { ...health, lastHour: { ...health.lastHour } } }
}

export function routesApi(ctx: AdminContext) {
  const notFound = (id: string) => adminError('ADMIN_ERR_NOT_FOUND', `route "${id}" not found`, { id })
  const withHealth = async (route: Route) => shown(route, (await ctx.state.health([route.id])).get(route.id)!)

  /**
   * Validates a definition (400 naming the field) and refuses accept mode on a Redis that cannot
   * make it durable: accept mode makes this service the party responsible for the mail.
   */
  const checkDefinition = (definition: unknown, id?: string): void => {
    const input =
      id !== undefined && definition !== null && typeof definition === 'object' && !Array.isArray(definition) && !('id' in definition)
        ? { ...definition, id }
        : definition
    const route = parseRoute(input, 'route', 'api')
    if (!keepsMail(route.mode) || ctx.durability.durable || ctx.config.redis.allowAcceptWithoutAof) return
    throw adminError(
      'ADMIN_ERR_NOT_DURABLE',
      `mode: "${route.mode}" needs Redis with AOF and WAITAOF (Redis >= 7.2) or appendfsync always; this Redis ${ctx.durability.version} has ${ctx.durability.aof ? 'AOF without either' : 'no AOF'} (ALLOW_ACCEPT_WITHOUT_AOF=true overrides)`,
      { field: 'mode' },
    )
  }

  return async (app: AdminFastify): Promise<void> => {
    app.get(
      '/v1/routes',
      {
        schema: {
          tags: TAGS,
          summary: 'List routes',
          description: 'File routes first (file order), then API routes by id.',
          response: { 200: RouteListSchema, ...errors(401) },
        },
      },
      async () => {
        const routes = ctx.routes.list()
        const health = await ctx.state.health(routes.map((r) => r.id))
        return { routes: routes.map((r) => shown(r, health.get(r.id)!)) }
      },
    )

    app.get(
      '/v1/routes/:id',
      {
        schema: { tags: TAGS, summary: 'Read a route', params: RouteIdParams, response: { 200: ref(RouteSchema), ...errors(401, 404) } },
      },
      async (req) => {
        const route = ctx.routes.get(req.params.id)
        if (!route) throw notFound(req.params.id)
        return withHealth(route)
      },
    )

    app.post(
      '/v1/routes',
      {
        schema: {
          tags: TAGS,
          summary: 'Create a route',
          description:
            'Stored in Redis and used by every replica within a second. 409 when the id or the pattern is taken (by a file route too), or for mode "accept" or "async" on a Redis that is not durable.',
          body: ref(RouteDefinitionSchema),
          response: { 201: ref(RouteSchema), ...errors(400, 401, 409, 413, 415) },
        },
      },
      async (req, res) => {
        checkDefinition(req.body)
        const route: Route = await ctx.routes.create(req.body)
        return res
          .code(201)
          .header('location', `/v1/routes/${encodeURIComponent(route.id)}`)
          .send(await withHealth(route))
      },
    )

    app.put(
      '/v1/routes/:id',
      {
        schema: {
          tags: TAGS,
          summary: 'Replace a route',
          description: 'Replaces the whole definition (secrets included: send them again to keep them). File routes are read-only (409 ADMIN_ERR_READ_ONLY).',
          params: RouteIdParams,
          body: ref(RouteReplacementSchema),
          response: { 200: ref(RouteSchema), ...errors(400, 401, 404, 409, 413, 415) },
        },
      },
      async (req) => {
        checkDefinition(req.body, req.params.id)
        return withHealth(await ctx.routes.replace(req.params.id, req.body))
      },
    )

    app.delete(
      '/v1/routes/:id',
      {
        schema: {
          tags: TAGS,
          summary: 'Delete a route',
          description: 'Recipients it matched are refused (550 5.1.1) from then on; queued deliveries through it fail. File routes are read-only (409).',
          params: RouteIdParams,
          response: { 204: { type: 'null', description: 'Deleted.' }, ...errors(401, 404, 409) },
        },
      },
      async (req, res) => {
        await ctx.routes.delete(req.params.id)
        return res.code(204).send(null)
      },
    )

    app.post(
      '/v1/routes/:id/pause',
      {
        schema: {
          tags: TAGS,
          summary: 'Pause a route',
          description:
            'Stops deliveries through the route on every replica within a second; file routes too (the pause lives in Redis). Defer mode: new recipients get 451 4.3.2 at RCPT and the MTA keeps the mail. Accept mode: mail is still taken (250 queued) and its deliveries are held until resumed. Pausing a paused route changes nothing. Emits route.paused.',
          params: RouteIdParams,
          body: PauseBodySchema,
          response: { 200: ref(RouteSchema), ...errors(400, 401, 404) },
        },
      },
      async (req) => {
        const route = ctx.routes.get(req.params.id)
        if (!route) throw notFound(req.params.id)
        const reason = req.body?.reason ?? ''
        const { changed, at } = await ctx.state.pause(route.id, reason)
        if (changed) {
          req.log.info({ route: route.id, reason }, 'route paused')
          await ctx.events.emit('route.paused', { route: route.id, reason: reason === '' ? null : reason }, `${route.id}:${at}`, at)
        }
        return withHealth(route)
      },
    )

    app.post(
      '/v1/routes/:id/resume',
      {
        schema: {
          tags: TAGS,
          summary: 'Resume a route',
          description:
            'Lets deliveries through the route again on every replica, and releases the accept- and async-mode deliveries the pause held. Resuming a route that is not paused changes nothing. Emits route.resumed.',
          params: RouteIdParams,
          response: { 200: ref(RouteSchema), ...errors(401, 404) },
        },
      },
      async (req) => {
        const route = ctx.routes.get(req.params.id)
        if (!route) throw notFound(req.params.id)
        const { changed, at } = await ctx.state.resume(route.id, ctx.queues)
        if (changed) {
          req.log.info({ route: route.id }, 'route resumed')
          await ctx.events.emit('route.resumed', { route: route.id }, `${route.id}:${at}`, at)
        }
        return withHealth(route)
      },
    )

    app.post(
      '/v1/routes/:id/test',
      {
        schema: {
          tags: TAGS,
          summary: 'Send a test delivery',
          description:
            'Sends a small generated message to the route\'s webhook now, built and signed as a real delivery (webhook-id prefixed "test_"), and answers what the MTA would have been told. Nothing is queued or stored.',
          params: RouteIdParams,
          body: TestDeliveryBodySchema,
          response: { 200: ref(TestDeliveryResultSchema), ...errors(400, 401, 404) },
        },
      },
      async (req) => {
        const route = ctx.routes.get(req.params.id)
        if (!route) throw notFound(req.params.id)
        return sendTestDelivery(route, {
          client: ctx.client,
          hostname: ctx.config.lmtp.hostname,
          webhookTimeoutMs: ctx.config.delivery.webhookTimeoutMs,
          rcpt: req.body?.rcpt,
        })
      },
    )
  }
}
