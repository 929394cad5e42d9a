import t from 'tap'
import { startAdmin, TOKEN } from './helpers.js'

/**
 * Every endpoint answers the same over a real socket as through fastify.inject(): the other
 * tests use whichever is handier, this one guards that the choice does not matter.
 */
t.test('every endpoint answers alike through inject and over a socket', async (t) => {
  const { fastify, base, app } = await startAdmin(t, { ALLOW_ACCEPT_WITHOUT_AOF: 'true' })
  const auth = { authorization: `Bearer ${TOKEN}` }
  const json = { ...auth, 'content-type': 'application/json' }
  const route = (id: string) => JSON.stringify({ id, match: `${id}@example.com`, url: 'http://127.0.0.1:9/hook', mode: 'accept' })

  // Each step runs twice, on two routes (one per transport), so both see the same state.
  const steps: {
    name: string
    method: string
    url: (id: string) => string
    headers?: Record<string, string>
    body?: (id: string) => string
    status: number
    check?: (body: any, id: string) => void
  }[] = [
    { name: 'health', method: 'GET', url: () => '/healthz', status: 200, check: (b) => t.same(b, { status: 'ok' }) },
    { name: 'readiness', method: 'GET', url: () => '/readyz', status: 200, check: (b) => t.equal(b.status, 'ready') },
    { name: 'create', method: 'POST', url: () => '/v1/routes', headers: json, body: route, status: 201, check: (b, id) => t.equal(b.id, id) },
    { name: 'read', method: 'GET', url: (id) => `/v1/routes/${id}`, headers: auth, status: 200, check: (b) => t.equal(b.mode, 'accept') },
    {
      name: 'replace',
      method: 'PUT',
      url: (id) => `/v1/routes/${id}`,
      headers: json,
      body: (id) => JSON.stringify({ match: `${id}@example.org`, url: 'http://127.0.0.1:9/v2' }),
      status: 200,
      check: (b, id) => t.equal(b.match, `${id}@example.org`),
    },
    { name: 'list', method: 'GET', url: () => '/v1/routes', headers: auth, status: 200, check: (b) => t.ok(b.routes.length >= 1) },
    {
      name: 'deliveries',
      method: 'GET',
      url: () => '/v1/deliveries?limit=5',
      headers: auth,
      status: 200,
      check: (b) => t.same(b, { deliveries: [], nextCursor: null }),
    },
    {
      name: 'one delivery',
      method: 'GET',
      url: () => '/v1/deliveries/msg_none',
      headers: auth,
      status: 404,
      check: (b) => t.equal(b.error.code, 'ADMIN_ERR_NOT_FOUND'),
    },
    {
      name: 'retry',
      method: 'POST',
      url: () => '/v1/deliveries/msg_none/retry',
      headers: auth,
      status: 404,
      check: (b) => t.equal(b.error.code, 'ADMIN_ERR_NOT_FOUND'),
    },
    { name: 'delete delivery', method: 'DELETE', url: () => '/v1/deliveries/msg_none', headers: auth, status: 404 },
    {
      name: 'test delivery',
      method: 'POST',
      url: (id) => `/v1/routes/${id}/test`,
      headers: auth,
      status: 200,
      check: (b) => t.equal(b.outcome, 'temporary', 'nothing listens on port 9'),
    },
    { name: 'delete', method: 'DELETE', url: (id) => `/v1/routes/${id}`, headers: auth, status: 204 },
    { name: 'metrics', method: 'GET', url: () => '/metrics', status: 200 },
    { name: 'openapi', method: 'GET', url: () => '/openapi.json', status: 200, check: (b) => t.equal(b.openapi, '3.1.0') },
    { name: 'payload schema', method: 'GET', url: () => '/webhook-payload.schema.json', status: 200, check: (b) => t.equal(b.type, 'object') },
    { name: 'unknown', method: 'GET', url: () => '/nothing', headers: auth, status: 404, check: (b) => t.equal(b.error.code, 'ADMIN_ERR_NOT_FOUND') },
  ]
  for (const step of steps) {
    const injected = await fastify.inject({
      method: step.method as 'GET',
      url: step.url('viainject'),
      headers: step.headers,
      payload: step.body?.('viainject'),
    })
    const fetched = await fetch(base + step.url('viasocket'), { method: step.method, headers: step.headers, body: step.body?.('viasocket') })
    const text = await fetched.text()
    t.equal(injected.statusCode, step.status, `${step.name} through inject: ${injected.body.slice(0, 200)}`)
    t.equal(fetched.status, step.status, `${step.name} over a socket: ${text.slice(0, 200)}`)
    t.equal(fetched.headers.get('content-type')?.split(';')[0], injected.headers['content-type']?.toString().split(';')[0], `${step.name}: same content type`)
    if (step.check && step.status !== 204) {
      step.check(injected.json(), 'viainject')
      step.check(JSON.parse(text), 'viasocket')
    }
  }
  t.equal(app.routes.list().length, 0, 'both routes were deleted')
})
