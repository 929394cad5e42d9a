import t from 'tap'
import { readFileSync } from 'node:fs'
import { parse } from 'yaml'
import { validate } from '@readme/openapi-parser'
import { startAdmin } from './helpers.js'

const committedPath = new URL('../../openapi/openapi.yaml', import.meta.url)
const payloadPath = new URL('../../openapi/webhook-payload.schema.json', import.meta.url)

t.test('the served OpenAPI document is the committed openapi/openapi.yaml', async (t) => {
  const { base } = await startAdmin(t)
  const res = await fetch(`${base}/openapi.json`)
  t.equal(res.status, 200)
  const served = await res.json()
  const committed = parse(readFileSync(committedPath, 'utf8'))
  t.strictSame(served, committed, 'they differ: run `npm run openapi` and commit openapi/openapi.yaml')
})

t.test('the committed document is valid OpenAPI 3.1 and resolves the webhook payload schema', async (t) => {
  const result = await validate(committedPath.pathname)
  t.same(result, { valid: true, warnings: [], specification: 'OpenAPI' }, JSON.stringify(result))
  const doc = parse(readFileSync(committedPath, 'utf8'))
  t.equal(doc.openapi, '3.1.0')
  t.equal(doc.webhooks.delivery.post.requestBody.content['application/json'].schema.$ref, './webhook-payload.schema.json')
})

t.test('the document covers every endpoint, with errors in the one shape and /v1 behind the token', async (t) => {
  const doc = parse(readFileSync(committedPath, 'utf8'))
  const operations = Object.entries(doc.paths as Record<string, Record<string, any>>).flatMap(([path, ops]) =>
    Object.entries(ops).map(([method, op]) => ({ key: `${method.toUpperCase()} ${path}`, path, op })),
  )
  t.same(operations.map((o) => o.key).sort(), [
    'DELETE /v1/deliveries/{id}',
    'DELETE /v1/routes/{id}',
    'GET /healthz',
    'GET /metrics',
    'GET /readyz',
    'GET /v1/deliveries',
    'GET /v1/deliveries/{id}',
    'GET /v1/routes',
    'GET /v1/routes/{id}',
    'POST /v1/deliveries/delete',
    'POST /v1/deliveries/retry',
    'POST /v1/deliveries/{id}/retry',
    'POST /v1/routes',
    'POST /v1/routes/{id}/pause',
    'POST /v1/routes/{id}/resume',
    'POST /v1/routes/{id}/test',
    'PUT /v1/routes/{id}',
  ])
  for (const { key, path, op } of operations) {
    if (!path.startsWith('/v1')) continue
    t.same(op.security, [{ bearer: [] }], `${key} needs the token`)
    t.same(op.responses['401']?.content['application/json'].schema, { $ref: '#/components/schemas/Error' }, `${key} documents 401`)
  }
})

t.test('the payload schema the document points at is served next to it', async (t) => {
  const { base } = await startAdmin(t)
  const res = await fetch(`${base}/webhook-payload.schema.json`)
  t.equal(res.status, 200)
  t.same(await res.json(), JSON.parse(readFileSync(payloadPath, 'utf8')))
})
