import t from 'tap'
import { Webhook } from 'standardwebhooks'
import { routesFile } from '../helpers/app.js'
import { SECRET, TOKEN, startAdmin } from './helpers.js'
import { converse, dataReplies, transaction } from '../helpers/lmtp-client.js'
import { until } from '../helpers/until.js'
import { webhook } from '../helpers/webhook.js'

t.test('create, read, list, replace and delete a route; secrets are write-only', async (t) => {
  const { api, base } = await startAdmin(t)
  const created = await api({
    method: 'POST',
    url: '/v1/routes',
    payload: {
      id: 'sales',
      match: 'Sales@Example.com',
      url: 'https://hooks.example.net/sales',
      secret: SECRET,
      headers: { Authorization: 'Bearer abc', 'X-Team': 'sales' },
    },
  })
  t.equal(created.statusCode, 201, created.body)
  t.equal(created.headers.location, '/v1/routes/sales')
  const route = created.json()
  t.equal(route.match, 'sales@example.com', 'the pattern is normalised')
  t.equal(route.source, 'api')
  t.equal(route.hasSecret, true)
  t.equal(route.secretIds.length, 1)
  t.same(route.headers, { authorization: '[redacted]', 'x-team': 'sales' })
  t.notOk(created.body.includes(SECRET.slice(6)), 'the secret never appears in a response')
  t.notOk('secret' in route || 'secrets' in route)

  const one = await api({ method: 'GET', url: '/v1/routes/sales' })
  t.equal(one.statusCode, 200)
  t.same(one.json(), route)

  const list = await fetch(`${base}/v1/routes`, { headers: { authorization: `Bearer ${TOKEN}` } })
  t.same(
    ((await list.json()) as any).routes.map((r: any) => r.id),
    ['sales'],
  )

  const replaced = await api({
    method: 'PUT',
    url: '/v1/routes/sales',
    payload: { match: '*@sales.example.com', url: 'https://hooks.example.net/v2', mode: 'defer' },
  })
  t.equal(replaced.statusCode, 200, replaced.body)
  t.equal(replaced.json().match, '*@sales.example.com')
  t.equal(replaced.json().hasSecret, false, 'a replacement without a secret drops it')

  const wrongId = await api({ method: 'PUT', url: '/v1/routes/sales', payload: { id: 'other', match: 'x@example.com', url: 'https://h.example.net/' } })
  t.equal(wrongId.statusCode, 400)
  t.match(wrongId.json().error.message, /id: expected "sales"/)

  const missing = await api({ method: 'PUT', url: '/v1/routes/nope', payload: { match: 'nope@example.com', url: 'https://h.example.net/' } })
  t.equal(missing.statusCode, 404)
  t.equal(missing.json().error.code, 'ADMIN_ERR_NOT_FOUND')

  const deleted = await fetch(`${base}/v1/routes/sales`, { method: 'DELETE', headers: { authorization: `Bearer ${TOKEN}` } })
  t.equal(deleted.status, 204)
  t.equal(await deleted.text(), '')
  const gone = await api({ method: 'GET', url: '/v1/routes/sales' })
  t.equal(gone.statusCode, 404)
  t.same(gone.json(), { error: { code: 'ADMIN_ERR_NOT_FOUND', message: 'route "sales" not found', details: { id: 'sales' } } })
  const again = await api({ method: 'DELETE', url: '/v1/routes/sales' })
  t.equal(again.statusCode, 404)
})

t.test('validation errors are 400 with the field named', async (t) => {
  const { api } = await startAdmin(t)
  const base = { id: 'r1', match: 'a@example.com', url: 'https://h.example.net/' }
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ['pattern syntax', { ...base, match: 'a@@example.com' }, /match: /],
    ['url scheme', { ...base, url: 'ftp://h.example.net/' }, /url: expected an http\(s\) URL/],
    ['url with credentials', { ...base, url: 'https://u:p@h.example.net/' }, /url: expected an http\(s\) URL without credentials/],
    ['secret format', { ...base, secret: 'not-a-secret' }, /secret: expected a secret "whsec_"/],
    [
      'secret length',
      { ...base, secret: 'whsec_' + Buffer.alloc(8).toString('base64') },
      /secret: expected a secret "whsec_" followed by base64 of 24 to 64 bytes/,
    ],
    ['mode', { ...base, mode: 'later' }, /mode: expected one of "defer", "accept"/],
    ['unknown field', { ...base, colour: 'blue' }, /colour: unknown field/],
    ['missing url', { id: 'r1', match: 'a@example.com' }, /url: required/],
    ['id syntax', { ...base, id: 'Has Spaces' }, /id: expected an id/],
  ]
  for (const [name, payload, message] of cases) {
    const res = await api({ method: 'POST', url: '/v1/routes', payload })
    t.equal(res.statusCode, 400, `${name}: 400`)
    t.equal(res.json().error.code, 'ADMIN_ERR_VALIDATION', `${name}: code`)
    t.match(res.json().error.message, message, `${name}: message names the field`)
    t.ok(Array.isArray(res.json().error.details.problems), `${name}: problems listed`)
  }
  t.equal((await api({ method: 'GET', url: '/v1/routes' })).json().routes.length, 0, 'nothing was created')

  const notJson = await api({ method: 'POST', url: '/v1/routes', payload: '{"id": ', headers: { 'content-type': 'application/json' } })
  t.equal(notJson.statusCode, 400)
  t.equal(notJson.json().error.code, 'ADMIN_ERR_VALIDATION')
  t.match(notJson.json().error.message, /body: expected a JSON document/)

  const text = await api({ method: 'POST', url: '/v1/routes', payload: 'id=r1', headers: { 'content-type': 'text/plain' } })
  t.equal(text.statusCode, 415)
  t.equal(text.json().error.code, 'ADMIN_ERR_UNSUPPORTED_MEDIA_TYPE')

  const huge = await api({ method: 'POST', url: '/v1/routes', payload: { ...base, padding: 'x'.repeat(300 * 1024) } })
  t.equal(huge.statusCode, 413)
  t.equal(huge.json().error.code, 'ADMIN_ERR_PAYLOAD_TOO_LARGE')

  const badQuery = await api({ method: 'GET', url: '/v1/deliveries?limit=0&state=lost&colour=blue' })
  t.equal(badQuery.statusCode, 400)
  t.equal(badQuery.json().error.code, 'ADMIN_ERR_VALIDATION')
  t.match(badQuery.json().error.message, /^query: /)
  const problems: string[] = badQuery.json().error.details.problems
  t.equal(problems.length, 3, 'one problem per field')
  for (const expected of [
    /^limit: must be >= 1$/,
    /^state: expected one of delivered, deferred, rejected, retrying, dead$/,
    /^colour: unknown query parameter$/,
  ]) {
    t.ok(
      problems.some((p) => expected.test(p)),
      `problems include ${expected}`,
    )
  }

  const unknown = await api({ method: 'GET', url: '/v2/routes' })
  t.equal(unknown.statusCode, 404)
  t.same(unknown.json(), { error: { code: 'ADMIN_ERR_NOT_FOUND', message: 'GET /v2/routes: no such endpoint' } })
})

t.test('an id or a pattern already taken is 409; file routes are listed and read-only', async (t) => {
  const file = routesFile(t, `routes:\n  - { id: filed, match: "filed@example.com", url: "https://h.example.net/f", secret: "${SECRET}" }\n`)
  const { api } = await startAdmin(t, { ROUTES_FILE: file })
  const list = await api({ method: 'GET', url: '/v1/routes' })
  t.same(
    list.json().routes.map((r: any) => [r.id, r.source, r.hasSecret]),
    [['filed', 'file', true]],
  )
  t.notOk(list.body.includes(SECRET.slice(6)))

  t.equal((await api({ method: 'POST', url: '/v1/routes', payload: { id: 'one', match: 'one@example.com', url: 'https://h.example.net/1' } })).statusCode, 201)
  const sameId = await api({ method: 'POST', url: '/v1/routes', payload: { id: 'one', match: 'other@example.com', url: 'https://h.example.net/1' } })
  t.equal(sameId.statusCode, 409)
  t.equal(sameId.json().error.code, 'ADMIN_ERR_CONFLICT')
  t.equal(sameId.json().error.details.field, 'id')
  const samePattern = await api({ method: 'POST', url: '/v1/routes', payload: { id: 'two', match: 'ONE@example.com', url: 'https://h.example.net/1' } })
  t.equal(samePattern.statusCode, 409)
  t.equal(samePattern.json().error.details.field, 'match')
  t.match(samePattern.json().error.message, /already the pattern of route "one"/)
  const fileId = await api({ method: 'POST', url: '/v1/routes', payload: { id: 'filed', match: 'x@example.com', url: 'https://h.example.net/1' } })
  t.equal(fileId.statusCode, 409)
  t.match(fileId.json().error.message, /routes file/)

  const put = await api({ method: 'PUT', url: '/v1/routes/filed', payload: { match: 'filed@example.com', url: 'https://h.example.net/g' } })
  t.equal(put.statusCode, 409)
  t.equal(put.json().error.code, 'ADMIN_ERR_READ_ONLY')
  const del = await api({ method: 'DELETE', url: '/v1/routes/filed' })
  t.equal(del.statusCode, 409)
  t.equal(del.json().error.code, 'ADMIN_ERR_READ_ONLY')
})

t.test('accept-mode routes are refused on a Redis without AOF unless ALLOW_ACCEPT_WITHOUT_AOF', async (t) => {
  const strict = await startAdmin(t)
  t.equal(strict.app.durability.durable, false, 'the shared test Redis has no AOF')
  const refused = await strict.api({
    method: 'POST',
    url: '/v1/routes',
    payload: { id: 'acc', match: 'acc@example.com', url: 'https://h.example.net/', mode: 'accept' },
  })
  t.equal(refused.statusCode, 409)
  t.equal(refused.json().error.code, 'ADMIN_ERR_NOT_DURABLE')
  t.match(refused.json().error.message, /^mode: .*ALLOW_ACCEPT_WITHOUT_AOF/)

  const lenient = await startAdmin(t, { ALLOW_ACCEPT_WITHOUT_AOF: 'true' })
  const created = await lenient.api({
    method: 'POST',
    url: '/v1/routes',
    payload: { id: 'acc', match: 'acc@example.com', url: 'https://h.example.net/', mode: 'accept' },
  })
  t.equal(created.statusCode, 201, created.body)
  t.equal(created.json().mode, 'accept')
})

t.test('a route created on one replica is used at RCPT time by another sharing the prefix', async (t) => {
  const hook = await webhook(t, 200)
  const a = await startAdmin(t)
  const b = await startAdmin(t, {}, {}, { prefix: a.prefix, clean: false })
  const before = await converse(b.lmtpPort!, transaction(['new@example.com']))
  t.match(before, /550 5\.1\.1/, 'unknown before the route exists')

  const created = await a.api({ method: 'POST', url: '/v1/routes', payload: { id: 'new', match: 'new@example.com', url: hook.url } })
  t.equal(created.statusCode, 201)
  // The other replica learns of the change through Redis; poll rather than assume a delay.
  await until('the route on the other replica', () => b.app.routes.get('new'), 1000)
  const out = await converse(b.lmtpPort!, transaction(['new@example.com']))
  t.match(dataReplies(out)[0], /^250 2\.0\.0 .*new@example\.com/)
  t.equal(hook.requests.length, 1)
  t.same(((await b.api({ method: 'GET', url: '/v1/routes/new' })).json() as any).url, hook.url)
})

t.test('POST /v1/routes/{id}/test sends a signed synthetic delivery and answers the reply', async (t) => {
  const ok = await webhook(t, 200)
  const down = await webhook(t, 503)
  const { api, base } = await startAdmin(t)
  await api({ method: 'POST', url: '/v1/routes', payload: { id: 'ok', match: '*@example.com', url: ok.url, secret: SECRET } })
  await api({ method: 'POST', url: '/v1/routes', payload: { id: 'down', match: 'down@example.org', url: down.url } })

  const res = await fetch(`${base}/v1/routes/ok/test`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` } })
  t.equal(res.status, 200)
  const result = (await res.json()) as any
  t.equal(result.status, 200)
  t.equal(result.outcome, 'delivered')
  t.same(result.reply, { code: 250, enhanced: '2.0.0', text: '<test@example.com> delivered' })
  t.equal(result.recipient, 'test@example.com')
  t.type(result.durationMs, 'number')
  t.equal(ok.requests.length, 1)
  const req = ok.requests[0]!
  const payload = new Webhook(SECRET).verify(req.body.toString('utf8'), {
    'webhook-id': req.headers['webhook-id'] as string,
    'webhook-timestamp': req.headers['webhook-timestamp'] as string,
    'webhook-signature': req.headers['webhook-signature'] as string,
  }) as any
  t.equal(payload.id, result.webhookId)
  t.match(payload.id, /^test_/)
  t.equal(payload.envelope.rcptTo, 'test@example.com')
  t.equal(payload.message.subject, 'Test delivery for route ok')

  const chosen = await api({ method: 'POST', url: '/v1/routes/ok/test', payload: { rcpt: 'someone@example.com' } })
  t.equal(chosen.json().recipient, 'someone@example.com')

  const failing = await api({ method: 'POST', url: '/v1/routes/down/test', payload: {} })
  t.equal(failing.statusCode, 200)
  t.equal(failing.json().status, 503)
  t.equal(failing.json().outcome, 'temporary')
  t.equal(failing.json().reply.code, 451)

  const missing = await api({ method: 'POST', url: '/v1/routes/none/test' })
  t.equal(missing.statusCode, 404)
  const badRcpt = await api({ method: 'POST', url: '/v1/routes/ok/test', payload: { rcpt: 'no spaces allowed' } })
  t.equal(badRcpt.statusCode, 400)
  t.match(badRcpt.json().error.message, /rcpt: /)
})

t.test('POST /v1/routes/{id}/test answers what the MTA would be told under the route mode', async (t) => {
  const down = await webhook(t, 503)
  const gone = await webhook(t, 410)
  const { api } = await startAdmin(t, { ALLOW_ACCEPT_WITHOUT_AOF: 'true' })
  for (const [id, mode, url] of [
    ['defer-down', 'defer', down.url],
    ['accept-down', 'accept', down.url],
    ['accept-gone', 'accept', gone.url],
    ['async-gone', 'async', gone.url],
  ] as const) {
    const created = await api({ method: 'POST', url: '/v1/routes', payload: { id, match: `${id}@example.org`, url, mode } })
    t.equal(created.statusCode, 201, `route ${id}`)
  }
  const told = async (id: string) => {
    const res = await api({ method: 'POST', url: `/v1/routes/${id}/test`, payload: {} })
    t.equal(res.statusCode, 200)
    const body = res.json()
    return `${body.reply.code} ${body.reply.enhanced} / webhook ${body.webhookReply.code} ${body.outcome}`
  }
  t.equal(await told('defer-down'), '451 4.3.0 / webhook 451 temporary', 'defer: the webhook answer is the reply')
  t.equal(await told('accept-down'), '250 2.0.0 / webhook 451 temporary', 'accept: a temporary failure is queued, as a session says')
  t.equal(await told('accept-gone'), '550 5.1.1 / webhook 550 rejected', 'accept: a refusal reaches the MTA')
  t.equal(await told('async-gone'), '250 2.0.0 / webhook 550 rejected', 'async: always queued; the refusal becomes a dead letter later')
})
