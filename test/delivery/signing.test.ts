import t from 'tap'
import { createHmac } from 'node:crypto'
import { Webhook, WebhookVerificationError } from 'standardwebhooks'
import { isAppError } from '../../src/errors.js'
import { WebhookClient } from '../../src/delivery/http.js'
import { deriveWebhookId, generateSecret, parseSecret, signatureHeader, webhookHeaders } from '../../src/delivery/signing.js'
import { webhook } from '../helpers/webhook.js'

// The Standard Webhooks reference library's published vector (libraries/javascript, "sign function works").
const VECTOR = {
  secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
  msgId: 'msg_p5jXN8AQM9LWM0D4loKWxJek',
  timestamp: 1614265330,
  payload: '{"test": 2432232314}',
  signature: 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=',
}

t.test('the published test vector', async (t) => {
  const key = parseSecret(VECTOR.secret)
  t.equal(signatureHeader([key], VECTOR.msgId, VECTOR.timestamp, VECTOR.payload), VECTOR.signature)
  t.equal(signatureHeader([key], VECTOR.msgId, VECTOR.timestamp, Buffer.from(VECTOR.payload)), VECTOR.signature, 'Buffer and string bodies sign alike')
})

t.test('one signature per secret, in the order given', async (t) => {
  const newest = parseSecret(generateSecret())
  const old = parseSecret(VECTOR.secret)
  const header = signatureHeader([newest, old], VECTOR.msgId, VECTOR.timestamp, VECTOR.payload)
  const parts = header.split(' ')
  t.equal(parts.length, 2)
  t.equal(parts[1], VECTOR.signature)
  t.match(parts[0], /^v1,[A-Za-z0-9+/]{43}=$/)
  t.not(parts[0], parts[1])
})

t.test('a non-ASCII body is signed as its UTF-8 bytes', async (t) => {
  const key = parseSecret(VECTOR.secret)
  const body = '{"subject":"Grüße ✉"}'
  const expected = createHmac('sha256', key)
    .update(Buffer.concat([Buffer.from(`${VECTOR.msgId}.${VECTOR.timestamp}.`), Buffer.from(body, 'utf8')]))
    .digest('base64')
  t.equal(signatureHeader([key], VECTOR.msgId, VECTOR.timestamp, body), `v1,${expected}`)
})

t.test('parseSecret refuses bad secrets with an error naming the field', async (t) => {
  const cases: Array<[string, RegExp]> = [
    ['MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', /starting with "whsec_"/],
    ['whsec_', /base64/],
    ['whsec_not base64!', /base64/],
    ['whsec_abcde', /base64/],
    ['whsec_' + Buffer.alloc(16, 1).toString('base64'), /24 to 64 bytes.*got 16/],
    ['whsec_' + Buffer.alloc(65, 1).toString('base64'), /24 to 64 bytes.*got 65/],
  ]
  for (const [secret, message] of cases) {
    try {
      parseSecret(secret, 'routes[0].secrets[1]')
      t.fail(`accepted ${secret}`)
    } catch (err) {
      t.ok(isAppError(err, 'ROUTE_ERR_INVALID'), secret)
      t.match((err as Error).message, /^routes\[0\]\.secrets\[1\]: expected /)
      t.match((err as Error).message, message)
      if (secret.length > 8) t.notOk((err as Error).message.includes(secret.slice(6)), 'the secret is not echoed')
    }
  }
  t.equal(parseSecret('whsec_' + Buffer.alloc(24, 7).toString('base64')).length, 24)
  t.equal(parseSecret(generateSecret()).length, 32)
})

t.test('ids and timestamps that would make the signed content ambiguous are refused', async (t) => {
  const key = parseSecret(VECTOR.secret)
  t.throws(() => signatureHeader([key], 'msg.1', 1, ''), /webhook id/)
  t.throws(() => signatureHeader([key], '', 1, ''), /webhook id/)
  t.throws(() => signatureHeader([key], 'msg_1', 1.5, ''), /webhook timestamp/)
  t.throws(() => signatureHeader([], 'msg_1', 1, ''), /secrets/)
})

t.test('deriveWebhookId is stable per message, recipient and route', async (t) => {
  const sha = 'a'.repeat(64)
  const id = deriveWebhookId(sha, 'user@example.com', 'route-1')
  t.match(id, /^msg_[A-Za-z0-9_-]{43}$/)
  t.equal(deriveWebhookId(sha, 'user@example.com', 'route-1'), id)
  t.not(deriveWebhookId(sha, 'other@example.com', 'route-1'), id)
  t.not(deriveWebhookId(sha, 'user@example.com', 'route-2'), id)
  t.not(deriveWebhookId('b'.repeat(64), 'user@example.com', 'route-1'), id)
})

t.test('a signed request verifies with the standardwebhooks package, as a consumer would', async (t) => {
  const current = generateSecret()
  const retired = generateSecret()
  let verified: unknown
  let verifyError: unknown
  const srv = await webhook(t, (req, body, res) => {
    // each consumer knows only one of the secrets
    const which = req.url === '/retired' ? retired : current
    try {
      verified = new Webhook(which).verify(body, req.headers as Record<string, string>)
      res.statusCode = 204
    } catch (err) {
      verifyError = err
      res.statusCode = 401
    }
    res.end()
  })
  const client = new WebhookClient()
  t.teardown(() => client.close())
  const secrets = [parseSecret(current), parseSecret(retired)]
  const body = Buffer.from(JSON.stringify({ id: 'msg_x', message: { subject: 'Grüße' } }))
  const id = deriveWebhookId('c'.repeat(64), 'rcpt@example.com', 'r1')

  for (const path of ['/current', '/retired']) {
    verified = undefined
    const headers = { 'content-type': 'application/json', ...webhookHeaders(secrets, id, body) }
    const result = await client.attempt({ url: srv.origin + path, headers, body, deadlineMs: 10_000 })
    t.equal(result.status, 204, `${path} verified`)
    t.same(verified, { id: 'msg_x', message: { subject: 'Grüße' } })
  }

  const tampered = { 'content-type': 'application/json', ...webhookHeaders(secrets, id, body) }
  const result = await client.attempt({
    url: srv.origin + '/current',
    headers: tampered,
    body: Buffer.from(body.toString().replace('msg_x', 'msg_y')),
    deadlineMs: 10_000,
  })
  t.equal(result.status, 401, 'a changed body fails verification')
  t.ok(verifyError instanceof WebhookVerificationError)
})

t.test('webhookHeaders without secrets sends id and timestamp only', async (t) => {
  const h = webhookHeaders([], 'msg_1', 'x', 1700000000)
  t.same(h, { 'webhook-id': 'msg_1', 'webhook-timestamp': '1700000000' })
})
