import t, { type Test } from 'tap'
import { Redis } from 'ioredis'
import { converse } from '../helpers/lmtp.js'
import { REDIS_URL, routesFile, webhook } from '../helpers/app.js'
import { afterData, message, rcptReply } from '../helpers/replicas.js'
import { startAdmin, until } from './helpers.js'

t.test('pause and resume through the API, for a file route too; the route view shows its health', async (t) => {
  let status = 200
  const hook = await webhook(t, (_req, _body, res) => {
    res.statusCode = status
    res.end()
  })
  const file = routesFile(t, `routes:\n  - { id: filed, match: "*@example.com", url: "${hook.url}" }\n`)
  const { api, base, lmtpPort } = await startAdmin(t, { ROUTES_FILE: file })

  t.equal((await fetch(`${base}/v1/routes/filed/pause`, { method: 'POST' })).status, 401, 'behind the token')
  const missing = await api({ method: 'POST', url: '/v1/routes/nope/pause' })
  t.equal(missing.statusCode, 404)
  t.equal(missing.json().error.code, 'ADMIN_ERR_NOT_FOUND')
  const bad = await api({ method: 'POST', url: '/v1/routes/filed/pause', payload: { reason: 'x'.repeat(201) } })
  t.equal(bad.statusCode, 400)
  t.match(bad.json().error.message, /reason/)

  t.match(afterData(await converse(lmtpPort!, message(['one@example.com']))), [/^250 /])
  status = 503
  t.match(afterData(await converse(lmtpPort!, message(['two@example.com']))), [/^451 /])
  const view = await until('the statistics', async () => {
    const r = (await api({ method: 'GET', url: '/v1/routes/filed' })).json()
    return r.health.lastHour.attempts === 2 ? r : null
  })
  t.match(view.health, {
    paused: false,
    circuit: 'closed',
    consecutiveFailures: 1,
    lastStatus: 503,
    lastError: null,
    lastHour: { attempts: 2, delivered: 1, successRate: 0.5 },
  })
  t.ok(Date.parse(view.health.lastAttemptAt) > Date.now() - 60_000)
  t.same(view.circuitBreaker, { failures: 5, windowMs: 60_000, coolDownMs: 30_000 }, 'the breaker is on by default')

  const paused = await api({ method: 'POST', url: '/v1/routes/filed/pause', payload: { reason: 'webhook migration' } })
  t.equal(paused.statusCode, 200)
  t.match(paused.json(), { id: 'filed', source: 'file', health: { paused: true, pauseReason: 'webhook migration' } })
  t.match(await rcptReply(lmtpPort!, 'three@example.com'), /^451 4\.3\.2 /, 'a file route is paused too: the state lives in Redis')
  const listed = (await api({ method: 'GET', url: '/v1/routes' })).json().routes[0]
  t.equal(listed.health.paused, true, 'the list shows it')
  t.ok(Date.parse(listed.health.pausedAt) > Date.now() - 60_000)

  const resumed = await api({ method: 'POST', url: '/v1/routes/filed/resume' })
  t.equal(resumed.statusCode, 200)
  t.match(resumed.json().health, { paused: false, pausedAt: null, pauseReason: null })
  t.match(await rcptReply(lmtpPort!, 'three@example.com'), /^250 /)
})

t.test('a circuit opened by failures shows in the route view until a delivery closes it', async (t) => {
  const hook = await webhook(t, 503)
  const { api, lmtpPort } = await startAdmin(t)
  await api({
    method: 'POST',
    url: '/v1/routes',
    payload: { id: 'br', match: '*@example.com', url: hook.url, circuitBreaker: { failures: 2, coolDown: '1m' } },
  })
  for (const r of ['a@example.com', 'b@example.com']) await converse(lmtpPort!, message([r]))
  const view = await until('the circuit to open', async () => {
    const r = (await api({ method: 'GET', url: '/v1/routes/br' })).json()
    return r.health.circuit === 'open' && r.health.lastHour.attempts === 2 ? r : null
  })
  t.match(view.health, { consecutiveFailures: 2, lastStatus: 503 })
  const until_ = Date.parse(view.health.circuitOpenUntil) - Date.parse(view.health.circuitOpenedAt)
  t.equal(until_, 60_000, 'open for its cool-down')
  t.match(await rcptReply(lmtpPort!, 'c@example.com'), /^451 4\.3\.2 /)
})

/** An accept-mode route whose webhook fails at once: every recipient becomes a dead letter. */
async function deadLetters(t: Test, env: Record<string, string> = {}) {
  let healthy = false
  const hook = await webhook(t, (_req, _body, res) => {
    res.statusCode = healthy ? 200 : 503
    res.end()
  })
  const admin = await startAdmin(t, { ALLOW_ACCEPT_WITHOUT_AOF: 'true', REPLY_TIMEOUT: '500ms', LMTP_DOMAINS: 'a.example.com,b.example.com', ...env })
  for (const id of ['a', 'b']) {
    const res = await admin.api({
      method: 'POST',
      url: '/v1/routes',
      payload: { id, match: `*@${id}.example.com`, url: hook.url, mode: 'accept', retry: { attempts: 1 }, circuitBreaker: false },
    })
    t.equal(res.statusCode, 201, res.body)
  }
  return { ...admin, hook, heal: () => (healthy = true) }
}

t.test('bulk retry replays the matching dead letters, in bounded calls that follow a cursor', async (t) => {
  const { api, app, lmtpPort, hook, heal } = await deadLetters(t)
  await converse(lmtpPort!, message(Array.from({ length: 4 }, (_, i) => `early${i}@a.example.com`)))
  const between = Date.now()
  await new Promise((r) => setTimeout(r, 20))
  await converse(lmtpPort!, message([...Array.from({ length: 3 }, (_, i) => `late${i}@a.example.com`), 'x@b.example.com', 'y@b.example.com']))
  await until('nine dead letters', async () => (await app.queues.getFailed()).length === 9)
  heal()

  const calls: any[] = []
  let cursor: string | undefined
  do {
    const res = await api({ method: 'POST', url: '/v1/deliveries/retry', payload: { route: 'a', limit: 3, ...(cursor ? { cursor } : {}) } })
    t.equal(res.statusCode, 200, res.body)
    calls.push(res.json())
    cursor = res.json().nextCursor ?? undefined
  } while (cursor !== undefined && calls.length < 10)
  t.same(
    calls.map((c) => [c.matched, c.retried]),
    [
      [3, 3],
      [3, 3],
      [1, 1],
    ],
    'three calls of at most 3, then the cursor is null',
  )
  await until('the seven replays', () => hook.requests.length === 16)
  const failed = await app.queues.getFailed()
  t.same(failed.map((j) => j.data.route).sort(), ['b', 'b'], "route b's dead letters are untouched")
  const again = await api({ method: 'POST', url: '/v1/deliveries/retry', payload: { route: 'a' } })
  t.same(again.json(), { matched: 0, retried: 0, skipped: [], nextCursor: null }, 'repeating the call is safe: nothing is dead any more')

  // The time window and the recipient filter
  const bRetry = await api({ method: 'POST', url: '/v1/deliveries/retry', payload: { until: new Date(between).toISOString() } })
  t.same(bRetry.json().matched, 0, "b's dead letters were received after `until`")
  const one = await api({ method: 'POST', url: '/v1/deliveries/retry', payload: { recipient: 'X@b.example.com', since: new Date(between).toISOString() } })
  t.match(one.json(), { matched: 1, retried: 1 })
  await until('its replay', async () => (await app.queues.getFailed()).length === 1)
  const delivered = await until('the log to show it delivered', async () => {
    const d = (await api({ method: 'GET', url: '/v1/deliveries?recipient=x@b.example.com' })).json().deliveries[0]
    return d?.state === 'delivered' ? d : null
  })
  t.equal(delivered.attempts, 2)
})

t.test('bulk retry skips what cannot be replayed and says why; bulk delete removes the rest', async (t) => {
  const { api, app, lmtpPort } = await deadLetters(t)
  await converse(lmtpPort!, message(['gone@a.example.com']))
  await converse(lmtpPort!, message(['m1@b.example.com', 'm2@b.example.com']))
  await until('three dead letters', async () => (await app.queues.getFailed()).length === 3)
  const gone = (await app.queues.getFailed()).find((j) => j.data.route === 'a')!
  const redis = new Redis(REDIS_URL)
  t.teardown(() => redis.quit())
  const { shard } = (await app.queues.findJob(gone.id!))!
  t.equal(await redis.del(shard.keys.txn(gone.data.txn)), 1)
  const res = (await api({ method: 'POST', url: '/v1/deliveries/retry', payload: { route: 'a' } })).json()
  t.match(res, { matched: 1, retried: 0, skipped: [{ id: gone.id, code: 'ADMIN_ERR_MESSAGE_GONE' }] })

  const deleted = await api({ method: 'POST', url: '/v1/deliveries/delete', payload: { route: 'b' } })
  t.same(deleted.json(), { matched: 2, deleted: 2, skipped: [], nextCursor: null })
  t.same(
    (await app.queues.getFailed()).map((j) => j.id),
    [gone.id],
  )
  t.same((await api({ method: 'GET', url: '/v1/deliveries?route=b' })).json().deliveries, [], 'their log records are gone too')

  for (const [payload, field] of [
    [{ cursor: 'nope' }, /^cursor: /],
    [{ since: 'yesterday' }, /since/],
    [{ since: '2024-05-02T00:00:00Z', until: '2024-05-01T00:00:00Z' }, /^until: expected a time at or after since/],
    [{ state: 'delivered' }, /state/],
    [{ limit: 0 }, /limit/],
    [{ everything: true }, /everything/],
  ] as const) {
    const r = await api({ method: 'POST', url: '/v1/deliveries/delete', payload })
    t.equal(r.statusCode, 400, JSON.stringify(payload))
    t.equal(r.json().error.code, 'ADMIN_ERR_VALIDATION')
    t.match(r.json().error.message, field)
  }
  t.equal((await app.queues.getFailed()).length, 1, 'a refused call removed nothing')
})

t.test('bulk retry and delete walk the dead letters of every queue shard with one cursor', async (t) => {
  const { api, app, lmtpPort, hook, heal } = await deadLetters(t, { QUEUE_SHARDS: '3' })
  // One message each: each transaction goes to the shard of its own sha256.
  for (let i = 0; i < 8; i++) await converse(lmtpPort!, message([`s${i}@a.example.com`]))
  for (let i = 0; i < 6; i++) await converse(lmtpPort!, message([`d${i}@b.example.com`]))
  await until('fourteen dead letters', async () => (await app.queues.getFailed()).length === 14)
  const shardsOf = async (route: string): Promise<Set<string>> => {
    const found = await Promise.all((await app.queues.getFailed()).filter((j) => j.data.route === route).map((j) => app.queues.findJob(j.id!)))
    return new Set(found.map((f) => f!.shard.label))
  }
  t.ok((await shardsOf('a')).size >= 2, "route a's dead letters are in more than one shard")
  t.ok((await shardsOf('b')).size >= 2, "so are route b's")
  heal()

  const follow = async (path: string, route: string): Promise<number[][]> => {
    const calls: number[][] = []
    let cursor: string | undefined
    do {
      const res = await api({ method: 'POST', url: path, payload: { route, limit: 3, ...(cursor ? { cursor } : {}) } })
      t.equal(res.statusCode, 200, res.body)
      const body = res.json()
      calls.push([body.matched, body.retried ?? body.deleted])
      cursor = body.nextCursor ?? undefined
    } while (cursor !== undefined && calls.length < 10)
    return calls
  }
  t.same(
    await follow('/v1/deliveries/retry', 'a'),
    [
      [3, 3],
      [3, 3],
      [2, 2],
    ],
    'every dead letter of every shard, at most 3 a call, then the cursor is null',
  )
  await until('the eight replays', () => hook.requests.length === 22)
  t.same(
    await follow('/v1/deliveries/delete', 'b'),
    [
      [3, 3],
      [3, 3],
    ],
    'bulk delete reaches every shard too',
  )
  t.same((await app.queues.getFailed()).length, 0, 'nothing is left dead in any shard')
  await until('the replays to be logged delivered', async () => {
    const list = (await api({ method: 'GET', url: '/v1/deliveries?route=a&state=delivered' })).json().deliveries
    return list.length === 8
  })
  t.equal(hook.requests.length, 22, 'each replayed once: 14 first attempts and 8 replays')
})

t.test('bulk retry of waiting deliveries attempts them now', async (t) => {
  let healthy = false
  const hook = await webhook(t, (_req, _body, res) => {
    res.statusCode = healthy ? 200 : 503
    res.end()
  })
  const { api, app, lmtpPort } = await startAdmin(t, { ALLOW_ACCEPT_WITHOUT_AOF: 'true', REPLY_TIMEOUT: '500ms' })
  await api({
    method: 'POST',
    url: '/v1/routes',
    payload: { id: 'slow', match: '*@example.com', url: hook.url, mode: 'accept', retry: { attempts: 5, backoff: '1h', maxDelay: '2h' } },
  })
  await converse(lmtpPort!, message(['w1@example.com', 'w2@example.com']))
  await until('both to wait for their retry', async () => (await app.queues.getJobCounts('delayed')).delayed === 2)
  healthy = true
  const res = await api({ method: 'POST', url: '/v1/deliveries/retry', payload: { state: 'retrying' } })
  t.match(res.json(), { matched: 2, retried: 2, nextCursor: null })
  await until('both delivered', () => hook.requests.length === 4)
})

t.test('the delivery log filters on a time window, sender, message-id and transaction id', async (t) => {
  const hook = await webhook(t, 200)
  const { api, lmtpPort } = await startAdmin(t)
  await api({ method: 'POST', url: '/v1/routes', payload: { id: 'all', match: '*@example.com', url: hook.url } })
  await converse(lmtpPort!, message(['a@example.com'], '<first@x.test>', 'alice@x.test'))
  await until('the first record', async () => (await api({ method: 'GET', url: '/v1/deliveries' })).json().deliveries.length === 1)
  const between = new Date().toISOString()
  await new Promise((r) => setTimeout(r, 20))
  await converse(lmtpPort!, message(['b@example.com'], '<second@x.test>', 'bob@x.test'))
  await converse(lmtpPort!, message(['c@example.com'], '<third@x.test>', ''))
  const all = await until('three records', async () => {
    const d = (await api({ method: 'GET', url: '/v1/deliveries' })).json().deliveries
    return d.length === 3 ? d : null
  })
  t.same(
    all.map((d: any) => [d.recipient, d.sender, d.messageId]),
    [
      ['c@example.com', '', '<third@x.test>'],
      ['b@example.com', 'bob@x.test', '<second@x.test>'],
      ['a@example.com', 'alice@x.test', '<first@x.test>'],
    ],
    'the log records the sender and the message-id',
  )
  const q = async (query: string) => (await api({ method: 'GET', url: `/v1/deliveries?${query}` })).json().deliveries.map((d: any) => d.recipient)
  t.same(await q(`until=${encodeURIComponent(between)}`), ['a@example.com'])
  t.same(await q(`since=${encodeURIComponent(between)}`), ['c@example.com', 'b@example.com'])
  t.same(await q('sender=BOB@x.test'), ['b@example.com'], 'sender: exact, case-insensitive')
  t.same(await q(`sender=${encodeURIComponent('<>')}`), ['c@example.com'], '<> is the null sender')
  t.same(await q('messageId=second@x.test'), ['b@example.com'], 'message-id with or without brackets')
  t.same(await q(`messageId=${encodeURIComponent('<first@x.test>')}`), ['a@example.com'])
  t.same(await q(`txn=${all[0].txn}`), ['c@example.com'])
  const bad = await api({ method: 'GET', url: '/v1/deliveries?since=tomorrow' })
  t.equal(bad.statusCode, 400)
  t.match(bad.json().error.message, /since/)
})
