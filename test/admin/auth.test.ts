import t from 'tap'
import { startAdmin, TOKEN } from './helpers.js'

t.test('/v1 and unknown paths need a valid bearer token; health endpoints do not', async (t) => {
  const { fastify, base } = await startAdmin(t)

  const cases: [string, Record<string, string>, string][] = [
    ['missing', {}, 'got nothing'],
    ['wrong token', { authorization: 'Bearer wrong-token-0123456789abcdef' }, 'valid token'],
    ['prefix of the token', { authorization: `Bearer ${TOKEN.slice(0, -1)}` }, 'valid token'],
    ['token plus a character', { authorization: `Bearer ${TOKEN}x` }, 'valid token'],
    ['wrong scheme', { authorization: `Basic ${Buffer.from(`admin:${TOKEN}`).toString('base64')}` }, 'valid token'],
    ['token without scheme', { authorization: TOKEN }, 'valid token'],
    ['empty bearer', { authorization: 'Bearer ' }, 'valid token'],
  ]
  for (const [name, headers, message] of cases) {
    const res = await fastify.inject({ method: 'GET', url: '/v1/routes', headers })
    t.equal(res.statusCode, 401, `${name}: 401`)
    t.equal(res.json().error.code, 'ADMIN_ERR_UNAUTHORIZED', `${name}: error code`)
    t.match(res.json().error.message, message, `${name}: message`)
    t.equal(res.headers['www-authenticate'], 'Bearer realm="lmtp-webhook"', `${name}: challenge`)
  }

  for (const url of ['/v1/no-such-thing', '/nothing', '/%761/routes', '/v1/route%73', '/./v1/routes', '/v1/../v1/routes']) {
    const res = await fastify.inject({ method: 'GET', url })
    t.equal(res.statusCode, 401, `${url}: 401 without a token, whatever the path`)
  }
  const encoded = await fastify.inject({ method: 'GET', url: '/%761/routes', headers: { authorization: `Bearer ${TOKEN}` } })
  t.equal(encoded.statusCode, 200, 'an encoded path reaches the route it names, with the token only')

  const ok = await fastify.inject({ method: 'GET', url: '/v1/routes', headers: { authorization: `Bearer ${TOKEN}` } })
  t.equal(ok.statusCode, 200)
  const lower = await fastify.inject({ method: 'GET', url: '/v1/routes', headers: { authorization: `bearer ${TOKEN}` } })
  t.equal(lower.statusCode, 200, 'the scheme is case-insensitive')

  // over a real socket
  const denied = await fetch(`${base}/v1/routes`)
  t.equal(denied.status, 401)
  t.same(Object.keys(((await denied.json()) as any).error).sort(), ['code', 'message'])
  const allowed = await fetch(`${base}/v1/routes`, { headers: { authorization: `Bearer ${TOKEN}` } })
  t.equal(allowed.status, 200)
  t.same(await allowed.json(), { routes: [] })
  const health = await fetch(`${base}/healthz`)
  t.equal(health.status, 200)
  t.same(await health.json(), { status: 'ok' })
})

t.test('any of several tokens is accepted', async (t) => {
  const second = 'second-token-abcdefghijklmnop'
  const { fastify } = await startAdmin(t, { ADMIN_TOKENS: `${TOKEN},${second}` })
  for (const token of [TOKEN, second]) {
    const res = await fastify.inject({ method: 'GET', url: '/v1/routes', headers: { authorization: `Bearer ${token}` } })
    t.equal(res.statusCode, 200)
  }
})

t.test('ADMIN_ALLOW_NO_AUTH without tokens opens /v1', async (t) => {
  const { fastify } = await startAdmin(t, { ADMIN_TOKENS: '', ADMIN_ALLOW_NO_AUTH: 'true' })
  const res = await fastify.inject({ method: 'GET', url: '/v1/routes' })
  t.equal(res.statusCode, 200)
})

t.test('readiness: ready once started, not ready as soon as shutdown begins', async (t) => {
  const { fastify, base, app } = await startAdmin(t)
  const ready = await fetch(`${base}/readyz`)
  t.equal(ready.status, 200)
  t.same(await ready.json(), { status: 'ready', checks: { started: true, redis: true, lmtp: true } })
  const closing = app.close()
  const during = await fastify.inject({ method: 'GET', url: '/readyz' })
  t.equal(during.statusCode, 503)
  t.equal(during.json().checks.started, false)
  await closing
})
