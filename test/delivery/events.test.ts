import t from 'tap'
import { Webhook } from 'standardwebhooks'
import { converse } from '../helpers/lmtp.js'
import { Redis } from 'ioredis'
import { REDIS_URL, routesFile, startApp, webhook } from '../helpers/app.js'
import { afterData, message } from '../helpers/replicas.js'
import { until } from '../admin/helpers.js'
import { loadConfig } from '../../src/config.js'
import { eventId } from '../../src/delivery/events.js'

const EVENTS_SECRET = 'whsec_' + Buffer.alloc(32, 3).toString('base64')

t.test('a dead letter sends delivery.dead, signed, and a failing events endpoint gets it again later', async (t) => {
  const hook = await webhook(t, 503)
  const sink = await webhook(t, (_req, _body, res, n) => {
    // the alerting endpoint itself is down for its first two calls
    res.statusCode = n <= 2 ? 503 : 200
    res.end()
  })
  const file = routesFile(
    t,
    `routes:\n  - { id: acc, match: "*@example.com", url: "${hook.url}", mode: accept, retry: { attempts: 2, backoff: 50ms, maxDelay: 100ms }, circuitBreaker: false }\n`,
  )
  const { lmtpPort, app, prefix } = await startApp(t, { ROUTES_FILE: file, ALLOW_ACCEPT_WITHOUT_AOF: 'true', EVENTS_URL: sink.url, EVENTS_SECRET })
  t.match(afterData(await converse(lmtpPort!, message(['dead@example.com']))), [/^250 2\.0\.0 .*queued/])
  const [job] = await until('the dead letter', async () => {
    const failed = await app.queues.getFailed()
    return failed.length === 1 ? failed : null
  })
  await until('the event to get through', () => sink.requests.length === 3, 15_000)
  const ids = new Set(sink.requests.map((r) => r.headers['webhook-id']))
  t.equal(ids.size, 1, 'the retries carry the same webhook-id')
  t.ok(sink.requests[2]!.at - sink.requests[1]!.at >= 1000, 'retried with backoff (1 s, then 2 s)')
  const last = sink.requests[2]!
  const event = new Webhook(EVENTS_SECRET).verify(last.body.toString('utf8'), last.headers as Record<string, string>) as Record<string, any>
  t.match(event, {
    type: 'delivery.dead',
    data: { delivery: job!.id, route: 'acc', recipient: 'dead@example.com', attempts: 2, reason: 'webhook answered 503' },
  })
  t.equal(last.headers['content-type'], 'application/json')
  t.equal(Date.parse(event.timestamp), job!.finishedOn, 'timed when the delivery died')

  // Emitting the same occurrence again (a second replica, a retried call) queues nothing new.
  await app.events.emit('delivery.dead', {}, `${job!.id}:${job!.finishedOn}`, job!.finishedOn)
  await new Promise((r) => setTimeout(r, 300))
  t.equal(sink.requests.length, 3)
  t.equal(String(last.headers['webhook-id']), eventId('delivery.dead', `${job!.id}:${job!.finishedOn}`))

  // The events queue lives under its own hash tag (one cluster slot for BullMQ's scripts).
  const redis = new Redis(REDIS_URL)
  t.teardown(() => redis.quit())
  const keys = await redis.keys(`${prefix}:*events:*`)
  t.ok(keys.length > 0, 'the events queue is in Redis')
  t.same(
    keys.filter((k) => !k.startsWith(`${app.keys.eventsPrefix}:events:`)),
    [],
    `every key of it under ${app.keys.eventsPrefix}:events:`,
  )
})

t.test('no EVENTS_URL: nothing is queued', async (t) => {
  const { app, prefix } = await startApp(t, {})
  t.equal(app.events.enabled, false)
  await app.events.emit('route.paused', { route: 'x' }, 'x:1')
  const redis = new Redis(REDIS_URL)
  t.teardown(() => redis.quit())
  t.same(await redis.keys(`${prefix}:*events:*`), [], 'no events queue in Redis')
})

t.test('EVENTS_URL and EVENTS_SECRET are checked at start, naming the variable', async (t) => {
  t.throws(() => loadConfig({ ADMIN_PORT: 'off', EVENTS_URL: 'ftp://x' }), { code: 'CONFIG_ERR_INVALID', message: /^EVENTS_URL: expected an http\(s\) URL/ })
  t.throws(() => loadConfig({ ADMIN_PORT: 'off', EVENTS_URL: 'http://127.0.0.1/e', EVENTS_SECRET: 'hunter2' }), {
    code: 'CONFIG_ERR_INVALID',
    message: /^EVENTS_SECRET: expected a secret "whsec_" followed by base64 of 24 to 64 random bytes, got "<redacted>"$/,
  })
  t.throws(() => loadConfig({ ADMIN_PORT: 'off', EVENTS_SECRET: 'whsec_' + Buffer.alloc(8).toString('base64') }), { message: /^EVENTS_SECRET: / })
  const config = loadConfig({ ADMIN_PORT: 'off', EVENTS_URL: 'https://alerts.example.net/hook', EVENTS_SECRET })
  t.same(config.events, { url: 'https://alerts.example.net/hook', secret: EVENTS_SECRET })
})
