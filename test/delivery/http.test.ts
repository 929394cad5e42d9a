import t, { type Test } from 'tap'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { MAX_RESPONSE_BYTES, SNIPPET_BYTES, USER_AGENT, WebhookClient, parseRetryAfter } from '../../src/delivery/http.js'
import { freePort } from '../helpers/net.js'
import { until } from '../helpers/until.js'
import { webhook } from '../helpers/webhook.js'

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }

function client(t: Test, options: ConstructorParameters<typeof WebhookClient>[0] = {}): WebhookClient {
  const c = new WebhookClient(options)
  t.teardown(() => c.destroy())
  return c
}

t.test('200 with a JSON body: status, parsed JSON, request as sent', async (t) => {
  const srv = await webhook(t, (_req, _body, res) => {
    res.setHeader('content-type', 'application/json; charset=utf-8')
    res.end(JSON.stringify({ smtp: { code: 250, message: 'thanks' } }))
  })
  const c = client(t)
  const body = Buffer.from('{"hello":"world"}')
  const result = await c.attempt({ url: `${srv.origin}/hook?x=1`, headers: { 'content-type': 'application/json', 'x-extra': 'yes' }, body, deadlineMs: 10_000 })
  t.equal(result.status, 200)
  t.same(result.json, { smtp: { code: 250, message: 'thanks' } })
  t.equal(result.error, undefined)
  t.equal(result.bodySnippet, '{"smtp":{"code":250,"message":"thanks"}}')
  t.ok(result.durationMs >= 0)
  const got = srv.requests[0]!
  t.equal(got.method, 'POST')
  t.equal(got.url, '/hook?x=1')
  t.equal(got.headers['user-agent'], `lmtp-webhook/${pkg.version}`)
  t.equal(USER_AGENT, `lmtp-webhook/${pkg.version}`)
  t.equal(got.headers['x-extra'], 'yes')
  t.equal(got.headers['content-length'], String(body.length))
  t.same(got.body, body)
})

t.test('a JSON body under a non-JSON content type is not parsed; broken JSON is not an error', async (t) => {
  const srv = await webhook(t, (req, _body, res) => {
    res.setHeader('content-type', req.url === '/text' ? 'text/plain' : 'application/problem+json')
    res.end(req.url === '/text' ? '{"a":1}' : '{"broken"')
  })
  const c = client(t)
  const text = await c.attempt({ url: `${srv.origin}/text`, headers: {}, body: '', deadlineMs: 10_000 })
  t.equal(text.json, undefined)
  t.equal(text.bodySnippet, '{"a":1}')
  const broken = await c.attempt({ url: `${srv.origin}/problem`, headers: {}, body: '', deadlineMs: 10_000 })
  t.equal(broken.status, 200)
  t.equal(broken.json, undefined)
  t.equal(broken.error, undefined)
})

t.test('404 is a status, not an error', async (t) => {
  const srv = await webhook(t, (_req, _body, res) => {
    res.statusCode = 404
    res.end('no such mailbox')
  })
  const result = await client(t).attempt({ url: srv.origin, headers: {}, body: 'x', deadlineMs: 10_000 })
  t.equal(result.status, 404)
  t.equal(result.bodySnippet, 'no such mailbox')
  t.equal(result.error, undefined)
})

t.test('a server that never answers hits the deadline', async (t) => {
  const srv = await webhook(t, () => {
    // never respond
  })
  const result = await client(t).attempt({ url: srv.origin, headers: {}, body: 'x', deadlineMs: 200 })
  t.equal(result.status, undefined)
  t.equal(result.error?.code, 'HOOK_ERR_TIMEOUT')
  t.match(result.error?.message, /200 ms deadline/)
})

t.test('the deadline covers the body too: headers then a body that never ends', async (t) => {
  const srv = await webhook(t, (_req, _body, res) => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.write('{"smtp":')
  })
  const result = await client(t).attempt({ url: srv.origin, headers: {}, body: 'x', deadlineMs: 300 })
  t.equal(result.status, 200, 'the status that arrived is kept')
  t.equal(result.error?.code, 'HOOK_ERR_TIMEOUT')
  t.equal(result.json, undefined)
})

t.test('a huge response is cut at the cap and its connection closed', async (t) => {
  let responseClosed: Promise<unknown> = new Promise(() => undefined)
  const srv = await webhook(t, (_req, _body, res) => {
    responseClosed = once(res, 'close')
    res.writeHead(200, { 'content-type': 'application/json' })
    const chunk = Buffer.alloc(64 * 1024, 'a')
    // endless body: only the client closing the connection ends it
    const pump = (): void => {
      while (!res.destroyed && res.write(chunk));
      if (!res.destroyed) res.once('drain', pump)
    }
    pump()
  })
  const result = await client(t).attempt({ url: srv.origin, headers: {}, body: 'x', deadlineMs: 30_000 })
  t.equal(result.status, 200)
  t.equal(result.error?.code, 'HOOK_ERR_RESPONSE_TOO_LARGE')
  t.equal(result.json, undefined)
  t.equal(Buffer.byteLength(result.bodySnippet), SNIPPET_BYTES)
  t.equal(MAX_RESPONSE_BYTES, 64 * 1024)
  // the server only stops writing when the client closes the connection: were it left open, this would never resolve
  await responseClosed
  t.pass('the client closed the connection of the endless response')
})

t.test('a body of exactly the cap is read whole', async (t) => {
  const payload = JSON.stringify({ pad: 'x'.repeat(MAX_RESPONSE_BYTES - 10) })
  t.equal(Buffer.byteLength(payload), MAX_RESPONSE_BYTES)
  const srv = await webhook(t, (_req, _body, res) => {
    res.setHeader('content-type', 'application/json')
    res.end(payload)
  })
  const result = await client(t).attempt({ url: srv.origin, headers: {}, body: 'x', deadlineMs: 10_000 })
  t.equal(result.error, undefined)
  t.same(result.json, JSON.parse(payload))
})

t.test('302 is returned as a status and never followed', async (t) => {
  const srv = await webhook(t, (req, _body, res) => {
    if (req.url === '/moved') {
      res.statusCode = 302
      res.setHeader('location', '/elsewhere')
      res.end()
    } else {
      res.end('should not be reached')
    }
  })
  const result = await client(t).attempt({ url: `${srv.origin}/moved`, headers: {}, body: 'x', deadlineMs: 10_000 })
  t.equal(result.status, 302)
  t.same(
    srv.requests.map((r) => r.url),
    ['/moved'],
  )
})

t.test('Retry-After in seconds and as an HTTP date', async (t) => {
  const srv = await webhook(t, (req, _body, res) => {
    res.statusCode = 503
    res.setHeader('retry-after', req.url === '/seconds' ? '120' : new Date(Date.now() + 3_600_000).toUTCString())
    res.end()
  })
  const c = client(t)
  const seconds = await c.attempt({ url: `${srv.origin}/seconds`, headers: {}, body: 'x', deadlineMs: 10_000 })
  t.equal(seconds.status, 503)
  t.equal(seconds.retryAfterMs, 120_000)
  const date = await c.attempt({ url: `${srv.origin}/date`, headers: {}, body: 'x', deadlineMs: 10_000 })
  t.ok(date.retryAfterMs! > 3_500_000 && date.retryAfterMs! <= 3_600_000, `about an hour: ${date.retryAfterMs}`)
})

t.test('parseRetryAfter', async (t) => {
  const now = Date.parse('2025-01-01T00:00:00Z')
  t.equal(parseRetryAfter('0', now), 0)
  t.equal(parseRetryAfter(' 30 ', now), 30_000)
  t.equal(parseRetryAfter('Wed, 01 Jan 2025 00:01:00 GMT', now), 60_000)
  t.equal(parseRetryAfter('Tue, 31 Dec 2024 23:00:00 GMT', now), 0, 'a date in the past means now')
  t.equal(parseRetryAfter('-5', now), undefined)
  t.equal(parseRetryAfter('1.5', now), undefined)
  t.equal(parseRetryAfter('soon', now), undefined)
  t.equal(parseRetryAfter(undefined, now), undefined)
})

t.test('connection refused is a HOOK_ERR_CONNECT result, and it names no header value', async (t) => {
  const port = await freePort()
  const result = await client(t).attempt({
    url: `http://127.0.0.1:${port}/`,
    headers: { authorization: 'Bearer very-secret-token', 'webhook-signature': 'v1,c2VjcmV0' },
    body: 'x',
    deadlineMs: 10_000,
  })
  t.equal(result.status, undefined)
  t.equal(result.error?.code, 'HOOK_ERR_CONNECT')
  t.match(result.error?.message, /ECONNREFUSED/)
  const text = JSON.stringify(result)
  t.notOk(text.includes('very-secret-token'))
  t.notOk(text.includes('c2VjcmV0'))
})

t.test('a denied literal address is refused before any connection', async (t) => {
  const result = await client(t).attempt({ url: 'http://169.254.169.254/latest/meta-data/', headers: {}, body: 'x', deadlineMs: 10_000 })
  t.equal(result.error?.code, 'HOOK_ERR_DESTINATION_DENIED')
  t.match(result.error?.message, /169\.254\.169\.254.*169\.254\.0\.0\/16/)
  const mapped = await client(t).attempt({ url: 'http://[::ffff:169.254.169.254]/', headers: {}, body: 'x', deadlineMs: 10_000 })
  t.equal(mapped.error?.code, 'HOOK_ERR_DESTINATION_DENIED', 'the IPv4-mapped IPv6 form too')
})

t.test('loopback is reachable by default and refused once denied, by address and by name', async (t) => {
  const srv = await webhook(t, (_req, _body, res) => res.end('ok'))
  const open = await client(t).attempt({ url: srv.origin, headers: {}, body: 'x', deadlineMs: 10_000 })
  t.equal(open.status, 200)

  const guarded = client(t, { guard: { denyCidrs: ['127.0.0.0/8', '::1/128'] } })
  const literal = await guarded.attempt({ url: srv.origin, headers: {}, body: 'x', deadlineMs: 10_000 })
  t.equal(literal.error?.code, 'HOOK_ERR_DESTINATION_DENIED')
  const byName = await guarded.attempt({ url: `http://localhost:${srv.port}/`, headers: {}, body: 'x', deadlineMs: 10_000 })
  t.equal(byName.error?.code, 'HOOK_ERR_DESTINATION_DENIED', 'checked after DNS resolution')
  t.match(byName.error?.message, /localhost \((127\.0\.0\.1|::1)\)/)

  const narrowed = client(t, { guard: { allowCidrs: ['10.0.0.0/8'] } })
  const outside = await narrowed.attempt({ url: srv.origin, headers: {}, body: 'x', deadlineMs: 10_000 })
  t.equal(outside.error?.code, 'HOOK_ERR_DESTINATION_DENIED')
  t.equal(srv.requests.length, 1, 'only the first attempt reached the server')
})

t.test('keep-alive: consecutive attempts to one origin reuse connections', async (t) => {
  const srv = await webhook(t, (_req, _body, res) => res.end('ok'))
  const c = client(t)
  for (let i = 0; i < 6; i++) t.equal((await c.attempt({ url: srv.origin, headers: {}, body: `n${i}`, deadlineMs: 10_000 })).status, 200)
  // the pool may open a second socket while the first is being released; it never opens one per attempt
  t.ok(srv.connections() <= 2, `${srv.connections()} connections for 6 attempts`)
})

t.test('a caller abort ends the attempt as HOOK_ERR_ABORTED', async (t) => {
  const srv = await webhook(t, () => {
    // never respond
  })
  const controller = new AbortController()
  const pending = client(t).attempt({ url: srv.origin, headers: {}, body: 'x', deadlineMs: 60_000, signal: controller.signal })
  await until('the request to arrive', () => srv.requests.length > 0)
  controller.abort()
  const result = await pending
  t.equal(result.error?.code, 'HOOK_ERR_ABORTED')
})

t.test('a URL that is not http(s) is a result, not an exception', async (t) => {
  const result = await client(t).attempt({ url: 'ftp://127.0.0.1/', headers: {}, body: 'x', deadlineMs: 1000 })
  t.equal(result.error?.code, 'HOOK_ERR_CONNECT')
  t.match(result.error?.message, /ftp:/)
})

t.test('an already aborted signal sends nothing', async (t) => {
  const srv = await webhook(t, (_req, _body, res) => res.end())
  const result = await client(t).attempt({ url: srv.origin, headers: {}, body: 'x', deadlineMs: 10_000, signal: AbortSignal.abort() })
  t.equal(result.error?.code, 'HOOK_ERR_ABORTED')
  t.equal(srv.requests.length, 0)
})
