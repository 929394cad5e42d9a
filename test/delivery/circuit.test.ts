import t from 'tap'
import { Webhook } from 'standardwebhooks'
import { converse } from '../helpers/lmtp.js'
import { Redis } from 'ioredis'
import { REDIS_URL, routesFile, webhook, type Hook } from '../helpers/app.js'
import { until } from '../admin/helpers.js'
import { afterData, countingHook, message, rcptReply, twoReplicas } from '../helpers/replicas.js'

const TOKEN = 'admin-token-0123456789abcdef'
const EVENTS_SECRET = 'whsec_' + Buffer.alloc(32, 5).toString('base64')

/** The events a receiver got, verified as Standard Webhooks messages signed with EVENTS_SECRET. */
function events(hook: Hook): { type: string; timestamp: string; data: Record<string, unknown>; id: string }[] {
  const wh = new Webhook(EVENTS_SECRET)
  return hook.requests.map((r) => {
    const payload = wh.verify(r.body.toString('utf8'), r.headers as Record<string, string>) as {
      type: string
      timestamp: string
      data: Record<string, unknown>
    }
    return { ...payload, id: String(r.headers['webhook-id']) }
  })
}

const count = (hook: Hook, type: string): number => events(hook).filter((e) => e.type === type).length

t.test('defer mode: failures on one replica open the circuit on both, RCPT gets 451 4.3.2; a probe closes it', async (t) => {
  const hook = await countingHook(t, 503)
  const sink = await webhook(t, 204)
  const file = routesFile(
    t,
    `routes:\n  - { id: flaky, match: "*@example.com", url: "${hook.url}", circuitBreaker: { failures: 3, window: 10s, coolDown: 1500ms } }\n`,
  )
  const [a, b] = await twoReplicas(t, { ROUTES_FILE: file, EVENTS_URL: sink.url, EVENTS_SECRET })
  for (let i = 0; i < 3; i++) {
    t.equal(await rcptReply(b.lmtpPort!, `x${i}@example.com`), `250 2.1.5 Recipient <x${i}@example.com> OK`, 'closed: recipients are taken')
    const out = await converse(a.lmtpPort!, message([`m${i}@example.com`]))
    t.match(afterData(out), [/^451 4\.3\.0 .*HTTP 503/], `failure ${i + 1} is answered after the data`)
  }
  const firstFailure = hook.requests[0]!.at
  const refused = await until('a 451 at RCPT on the other replica', async () => {
    const r = await rcptReply(b.lmtpPort!, 'next@example.com')
    return r.startsWith('451') ? { reply: r, at: Date.now() } : null
  })
  t.match(refused.reply, /^451 4\.3\.2 <next@example\.com> webhook failing/)
  t.comment(`from the first failure to RCPT-time 451 on the other replica: ${refused.at - firstFailure} ms (3 failures, sequential sessions)`)
  t.match(await rcptReply(a.lmtpPort!, 'next@example.com'), /^451 4\.3\.2 /, 'and on the replica that saw the failures')
  t.equal(b.app.state.get('flaky').circuit, 'open')
  const metrics = (await b.app.metrics.render()).body
  t.match(metrics, /lmtp_webhook_route_circuit_state\{route="flaky",state="open"\} 1/, 'the metric shows it open')
  t.match(metrics, /lmtp_webhook_route_rcpt_refusals_total\{route="flaky",reason="circuit_open"\} [1-9]/)
  t.equal(hook.requests.length, 3, 'no delivery reached the failing webhook while open')

  hook.answer(200)
  const probeAt = await until('the cool-down to end', async () => ((await rcptReply(b.lmtpPort!, 'probe@example.com')).startsWith('250') ? Date.now() : null))
  t.ok(probeAt - refused.at >= 1000, 'the circuit stayed open for about its cool-down')
  t.match(afterData(await converse(b.lmtpPort!, message(['probe@example.com']))), [/^250 2\.0\.0 <probe@example\.com> delivered/], 'the probe goes through')
  await until('both replicas to see it closed', () => a.app.state.get('flaky').circuit === 'closed' && b.app.state.get('flaky').circuit === 'closed')
  t.match(afterData(await converse(a.lmtpPort!, message(['after@example.com']))), [/^250 /])

  await until('the closed event', () => count(sink, 'route.circuit_closed') === 1)
  await new Promise((r) => setTimeout(r, 300))
  t.equal(count(sink, 'route.circuit_opened'), 1, 'circuit_opened sent once across both replicas')
  t.equal(count(sink, 'route.circuit_closed'), 1, 'circuit_closed sent once')
  const opened = events(sink).find((e) => e.type === 'route.circuit_opened')!
  t.match(opened, { data: { route: 'flaky', failures: 3, coolDownMs: 1500 } })
  t.match(opened.id, /^evt_/)
  t.ok(Date.parse(opened.timestamp) >= firstFailure, 'the event is timed when the circuit opened')
})

t.test('accept mode: an open circuit holds new jobs without attempting them; recovery releases them', async (t) => {
  const hook = await countingHook(t, 503)
  const file = routesFile(
    t,
    `routes:\n  - { id: acc, match: "*@example.com", url: "${hook.url}", mode: accept, retry: { attempts: 10, backoff: 50ms, maxDelay: 100ms }, circuitBreaker: { failures: 2, coolDown: 1500ms } }\n`,
  )
  const [a, b] = await twoReplicas(t, { ROUTES_FILE: file, ALLOW_ACCEPT_WITHOUT_AOF: 'true', REPLY_TIMEOUT: '3s' })
  t.match(afterData(await converse(a.lmtpPort!, message(['first@example.com']))), [/^250 2\.0\.0 <first@example\.com> queued/])
  await until('the circuit to open', () => b.app.state.get('acc').circuit === 'open')
  t.equal(hook.requests.length, 2, 'two failures opened it')

  const started = Date.now()
  const held = await converse(b.lmtpPort!, message(['h1@example.com', 'h2@example.com', 'h3@example.com']))
  t.match(afterData(held), [/^250 2\.0\.0 .*queued/, /^250 2\.0\.0 .*queued/, /^250 2\.0\.0 .*queued/], 'the mail is taken')
  t.ok(Date.now() - started < 2000, 'answered at once, without waiting out REPLY_TIMEOUT for attempts that are held')
  await new Promise((r) => setTimeout(r, 500))
  t.equal(hook.requests.length, 2, 'held, not attempted, while the circuit is open')

  hook.answer(200)
  await until('every delivery', () => hook.requests.filter((r) => r.at > started).length >= 4, 10_000)
  await until('both replicas to see it closed', () => a.app.state.get('acc').circuit === 'closed' && b.app.state.get('acc').circuit === 'closed')
  const page = await until('the log to show four deliveries delivered', async () => {
    const p = await a.app.deliveries.list({ limit: 10, state: 'delivered' })
    return p.deliveries.length === 4 ? p : null
  })
  const attempts = Object.fromEntries(page.deliveries.map((d) => [d.recipient, d.attempts]))
  t.same(attempts, { 'first@example.com': 3, 'h1@example.com': 1, 'h2@example.com': 1, 'h3@example.com': 1 }, 'holding spent no attempt')
  t.equal((await a.app.queues.getFailed()).length, 0)
})

t.test('pause on one replica is seen by the other within a second; accept-mode jobs wait for the resume', async (t) => {
  const deferHook = await countingHook(t, 200)
  const acceptHook = await countingHook(t, 200)
  const sink = await webhook(t, 200)
  const file = routesFile(
    t,
    `routes:\n  - { id: d, match: "d@example.com", url: "${deferHook.url}" }\n  - { id: acc, match: "acc@example.com", url: "${acceptHook.url}", mode: accept }\n`,
  )
  const [a, b] = await twoReplicas(t, {
    ROUTES_FILE: file,
    ALLOW_ACCEPT_WITHOUT_AOF: 'true',
    EVENTS_URL: sink.url,
    EVENTS_SECRET,
    ADMIN_PORT: '0',
    ADMIN_HOST: '127.0.0.1',
    ADMIN_TOKENS: TOKEN,
  })
  const api = (app: typeof a, url: string, payload?: object) =>
    app.app.admin!.fastify.inject({ method: 'POST', url, headers: { authorization: `Bearer ${TOKEN}` }, ...(payload ? { payload } : {}) })
  t.match(await rcptReply(b.lmtpPort!, 'd@example.com'), /^250 /)

  const pausedAt = Date.now()
  const paused = await api(a, '/v1/routes/d/pause', { reason: 'maintenance' })
  t.equal(paused.statusCode, 200)
  t.match(paused.json().health, { paused: true, pauseReason: 'maintenance' })
  const known = await until('the other replica to know', () => (b.app.state.get('d').paused ? Date.now() : null), 1000)
  t.comment(`pause on one replica in the other's memory after ${known - pausedAt} ms`)
  const seen = await until(
    'the other replica to refuse at RCPT',
    async () => ((await rcptReply(b.lmtpPort!, 'd@example.com')).startsWith('451') ? Date.now() : null),
    1000,
  )
  t.comment(`pause on one replica seen at RCPT on the other after ${seen - pausedAt} ms`)
  t.match(await rcptReply(b.lmtpPort!, 'd@example.com'), /^451 4\.3\.2 <d@example\.com> delivery to this address is paused/)
  t.equal((await api(b, '/v1/routes/d/pause', { reason: 'again' })).json().health.pauseReason, 'maintenance', 'pausing a paused route changes nothing')

  t.equal((await api(a, '/v1/routes/acc/pause')).statusCode, 200)
  await until('the other replica to know', () => b.app.state.get('acc').paused)
  const queued = await converse(b.lmtpPort!, message(['acc@example.com']))
  t.match(afterData(queued), [/^250 2\.0\.0 <acc@example\.com> queued/], 'accept mode takes the mail')
  await new Promise((r) => setTimeout(r, 500))
  t.equal(acceptHook.requests.length, 0, 'and holds its delivery while paused')

  const resumed = Date.now()
  t.equal((await api(b, '/v1/routes/acc/resume')).json().health.paused, false)
  await until('the held delivery', () => acceptHook.requests.length === 1, 5000)
  t.ok(Date.now() - resumed < 5000, 'released by the resume, not by the end of its hold')
  await api(a, '/v1/routes/d/resume')
  t.equal((await api(a, '/v1/routes/d/resume')).statusCode, 200, 'resuming a running route changes nothing')
  await until('RCPT to be taken again', async () => (await rcptReply(a.lmtpPort!, 'd@example.com')).startsWith('250'))

  await until('four events', () => sink.requests.length >= 4)
  await new Promise((r) => setTimeout(r, 300))
  t.same(
    events(sink)
      .map((e) => `${e.type} ${e.data.route}`)
      .sort(),
    ['route.paused acc', 'route.paused d', 'route.resumed acc', 'route.resumed d'],
  )
  t.match(
    events(sink).find((e) => e.type === 'route.paused' && e.data.route === 'd'),
    { data: { reason: 'maintenance' } },
  )
})

t.test('half-open: one delivery probes while the others wait for it; a failed probe opens the circuit again', async (t) => {
  const hook = await countingHook(t, 503, 300)
  const file = routesFile(t, `routes:\n  - { id: probe, match: "*@example.com", url: "${hook.url}", circuitBreaker: { failures: 2, coolDown: 1s } }\n`)
  const [a, b] = await twoReplicas(t, { ROUTES_FILE: file, REPLY_TIMEOUT: '3s' })
  for (const r of ['f1@example.com', 'f2@example.com']) await converse(a.lmtpPort!, message([r]))
  await until('the circuit to open', () => b.app.state.get('probe').circuit === 'open')
  await until('the cool-down to end', async () => (await rcptReply(b.lmtpPort!, 'x@example.com')).startsWith('250'), 5000)
  // Three sessions on two replicas reach the data in the half-open state at about the same time.
  const outputs = await Promise.all([
    converse(a.lmtpPort!, message(['p1@example.com'])),
    converse(b.lmtpPort!, message(['p2@example.com'])),
    converse(b.lmtpPort!, message(['p3@example.com'])),
  ])
  const replies = outputs.flatMap(afterData).sort()
  t.equal(hook.requests.length, 3, 'one probe reached the webhook, not three')
  t.equal(replies.filter((r) => r.startsWith('451 4.3.0')).length, 1, 'the probe got the webhook failure')
  t.equal(replies.filter((r) => r.startsWith('451 4.3.2')).length, 2, 'the others waited for it, then heard the circuit is open')
  await until('both replicas to see it open again', () => a.app.state.get('probe').circuit === 'open' && b.app.state.get('probe').circuit === 'open')
  t.match(await rcptReply(a.lmtpPort!, 'y@example.com'), /^451 4\.3\.2 /)

  // Every key of the route state carries the route's hash tag (one cluster slot per script).
  const redis = new Redis(REDIS_URL)
  t.teardown(() => redis.quit())
  const keys = await redis.keys(`${a.prefix}:route-state:*`)
  t.ok(keys.length > 0)
  t.same(
    keys.filter((k) => !k.startsWith(`${a.prefix}:route-state:{probe}`)),
    [],
    'under the prefix, with the route id as hash tag',
  )
})
