/**
 * Redis Cluster: three primaries made by `redis-cli --cluster create` (test/helpers/redis.ts), an
 * ACL user for the service, started once for the file. The key layout's slots, QUEUE_SHARDS=3 on
 * three primaries, the end-to-end path, results across processes over sharded pub/sub, and a
 * mixed load delivered completely.
 */
import t from 'tap'
import { Redis } from 'ioredis'
import { DURABLE_ARGS, clusterOwner, redisCluster } from '../helpers/redis.js'
import { until } from '../helpers/until.js'
import { endToEnd } from '../helpers/topology.js'
import { prefix, routesFile, startApp, webhook } from '../helpers/app.js'
import { converse } from '../helpers/lmtp.js'
import { dataReplies, startAdmin, transaction } from '../admin/helpers.js'
import { afterData, message, rcptReply } from '../helpers/replicas.js'
import { KeyLayout, MAX_QUEUE_SHARDS, QUEUE_NAME, SHARD_TAGS } from '../../src/redis/keys.js'
import { isAppError } from '../../src/errors.js'
import { loadConfig } from '../../src/config.js'
import { RedisConnections } from '../../src/redis/connections.js'
import { PubSub } from '../../src/redis/pubsub.js'
import { RouteStore } from '../../src/routing/store.js'
import { silent } from '../helpers/lmtp.js'

const cluster = await redisCluster(t, 'cluster-secret-0123', 3, DURABLE_ARGS)

/** The slot ranges `redis-cli --cluster create` gives `masters` primaries (its own arithmetic). */
function evenSplit(masters: number): [number, number][] {
  const per = 16384 / masters
  const out: [number, number][] = []
  let first = 0
  let cursor = 0
  for (let i = 0; i < masters; i++) {
    const last = i === masters - 1 ? 16383 : Math.round(cursor + per - 1)
    out.push([first, last])
    first = last + 1
    cursor += per
  }
  return out
}

t.test('shard tags: their slots are what CLUSTER KEYSLOT says, and the first N fall in N different N-ths for every N', async (t) => {
  const node = cluster.nodes[0]!
  for (const { tag, slot } of SHARD_TAGS) t.equal(Number(node.cli('cluster', 'keyslot', `x:{${tag}}:y`)), slot, `{${tag}} is slot ${slot}`)
  const ranges = evenSplit(3)
  t.same(
    ranges,
    node
      .cli('cluster', 'nodes')
      .split('\n')
      .map((l) => l.split(' ')[8]!.split('-').map(Number))
      .sort((a, b) => a[0]! - b[0]!),
    'this cluster has the split the test computes',
  )
  for (let n = 1; n <= MAX_QUEUE_SHARDS; n++) {
    const split = evenSplit(n)
    const owners = SHARD_TAGS.slice(0, n).map(({ slot }) => split.findIndex(([a, b]) => slot >= a && slot <= b))
    t.equal(new Set(owners).size, n, `${n} shards on ${n} evenly split primaries: one each`)
  }
})

t.test('QUEUE_SHARDS=3: the three queues, their transactions and delivery logs sit on three different primaries', async (t) => {
  const hook = await webhook(t, 200)
  const file = routesFile(t, `routes:\n  - { id: all, match: "*@example.com", url: "${hook.url}" }\n`)
  const { app } = await startApp(t, { ...cluster.env, ROUTES_FILE: file, QUEUE_SHARDS: '3' })
  const shards = app.keys.shards
  t.equal(shards.length, 3)
  const owners = shards.map((s) => clusterOwner(cluster, `${s.queuePrefix}:${QUEUE_NAME}:wait`).port)
  t.equal(new Set(owners).size, 3, `queues on ${owners.join(', ')}`)
  for (const [i, s] of shards.entries()) {
    for (const key of [`${s.queuePrefix}:${QUEUE_NAME}:meta`, s.txn('some-txn'), `${s.dlogPrefix}d:some-id`, s.dlogIndex])
      t.equal(clusterOwner(cluster, key).port, owners[i], `${key} is with its queue`)
  }
  const routes = app.keys.routes
  t.equal(
    new Set([routes.defs, routes.patterns, routes.version, routes.changed].map((k) => clusterOwner(cluster, k).slot)).size,
    1,
    'the route keys share a slot',
  )
})

t.test('the end-to-end path on a cluster with QUEUE_SHARDS=3 and an ACL user', async (t) => {
  await endToEnd(t, { ...cluster.env, QUEUE_SHARDS: '3' })
})

t.test('a route change reaches another store over sharded pub/sub alone (no periodic check)', async (t) => {
  const config = loadConfig({ ...cluster.env, ADMIN_PORT: 'off' })
  const connections = new RedisConnections(config.redis, { log: silent })
  t.teardown(() => connections.disconnectAll())
  const p = prefix()
  const open = async (): Promise<RouteStore> => {
    const redis = connections.open('app')
    await redis.connect()
    const subscriber = connections.open('subscriber')
    await subscriber.connect()
    const store = await RouteStore.open({ redis, pubsub: new PubSub(subscriber), prefix: p, logger: silent, reloadIntervalMs: 3_600_000 })
    t.teardown(() => store.close())
    return store
  }
  const [a, b] = [await open(), await open()]
  await a.create({ id: 'noticed', match: 'noticed@example.com', url: 'http://127.0.0.1:1/x' })
  await until('b to hear of the change', () => b.get('noticed') !== undefined)
  t.equal(b.lookup('noticed@example.com')?.id, 'noticed')
  await b.delete('noticed')
  await until('a to hear of the deletion', () => a.get('noticed') === undefined)
  t.pass('and back')
})

t.test('results cross processes over sharded pub/sub: a listener-only and a worker-only instance', async (t) => {
  const p = prefix()
  const ok = await webhook(t, 200)
  const rejecting = await webhook(t, 410)
  const file = routesFile(
    t,
    `routes:\n  - { id: ok, match: "ok@example.com", url: "${ok.url}" }\n  - { id: gone, match: "gone@example.com", url: "${rejecting.url}" }\n`,
  )
  await startApp(t, { ...cluster.env, ROUTES_FILE: file, ROLE: 'worker', LMTP_PORT: 'off', QUEUE_SHARDS: '3' }, {}, { prefix: p })
  let attemptsOnListener = 0
  const listener = await startApp(
    t,
    { ...cluster.env, ROUTES_FILE: file, ROLE: 'listener', QUEUE_SHARDS: '3' },
    { attempt: () => attemptsOnListener++ },
    { prefix: p },
  )
  for (let i = 0; i < 6; i++) {
    const out = await converse(listener.lmtpPort!, transaction(['ok@example.com', 'gone@example.com'], `crossing ${i}`))
    t.match(dataReplies(out), [/^250 2\.0\.0 <ok@example\.com> delivered/, /^550 /], `transaction ${i}: the webhooks' answers, from the other process`)
  }
  t.equal(attemptsOnListener, 0, 'the listener made no webhook call itself')
})

t.test('an MTA resending the same message lands on the same shard, where its accept-mode job dedups', async (t) => {
  const hook = await webhook(t, 503)
  const file = routesFile(
    t,
    `routes:\n  - { id: slow, match: "*@example.com", url: "${hook.url}", mode: accept, retry: { attempts: 5, backoff: 1h, maxDelay: 2h } }\n`,
  )
  const { lmtpPort, app } = await startApp(t, { ...cluster.env, ROUTES_FILE: file, QUEUE_SHARDS: '3' })
  const message =
    'LHLO mta.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<a@example.com>\r\nDATA\r\nSubject: same\r\nMessage-ID: <same@x.test>\r\n\r\nbody\r\n.\r\nQUIT\r\n'
  for (let i = 0; i < 3; i++) t.match(dataReplies(await converse(lmtpPort!, message)), [/^250 2\.0\.0 .*queued/], `attempt ${i + 1} of the MTA: queued`)
  const jobs = await until('the job to wait for its retry', async () => {
    const delayed = await app.queues.getJobs(['delayed'])
    return delayed.length > 0 ? delayed : null
  })
  t.equal(jobs.length, 1, 'one job for three deliveries of the same message')
  t.equal(hook.requests.length, 1, 'one webhook attempt')
})

t.test('QUEUE_SHARDS=3: a mixed load (1 to 5 recipients, defer and accept) is delivered completely, over every shard', async (t) => {
  let n = 0
  let okAnswers = 0
  const delivered = new Map<string, Set<string>>() // subject → recipients answered 2xx
  const hook = await webhook(t, (_req, body, res) => {
    res.statusCode = ++n % 7 === 0 ? 503 : 200 // now and then a retry
    if (res.statusCode === 200) {
      okAnswers++
      const payload = JSON.parse(body.toString()) as { message: { subject: string }; envelope: { rcptTo: string } }
      delivered.set(payload.message.subject, (delivered.get(payload.message.subject) ?? new Set()).add(payload.envelope.rcptTo))
    }
    res.end()
  })
  const file = routesFile(
    t,
    `routes:\n  - { id: defer, match: "*@defer.example.com", url: "${hook.url}" }\n` +
      `  - { id: accept, match: "*@accept.example.com", url: "${hook.url}", mode: accept, retry: { attempts: 5, backoff: 50ms, maxDelay: 100ms } }\n`,
  )
  const env = {
    ...cluster.env,
    ROUTES_FILE: file,
    QUEUE_SHARDS: '3',
    LMTP_DOMAINS: 'defer.example.com,accept.example.com',
    ADMIN_PORT: '0',
    ADMIN_HOST: '127.0.0.1',
    ADMIN_ALLOW_NO_AUTH: 'true',
  }
  const a = await startApp(t, env)
  const b = await startApp(t, env, {}, { prefix: a.prefix })
  const expected = new Map<string, number>() // subject → recipients that must be delivered
  const deferred: string[] = []
  const sessions = Array.from({ length: 4 }, async (_, s) => {
    for (let i = 0; i < 15; i++) {
      const subject = `load ${s}.${i}`
      const count = 1 + ((s + i) % 5)
      const rcpts = Array.from({ length: count }, (_, k) => `r${k}@${(s + i + k) % 2 === 0 ? 'accept' : 'defer'}.example.com`)
      const out = await converse((s % 2 === 0 ? a : b).lmtpPort!, transaction(rcpts, subject))
      const replies = dataReplies(out)
      t.equal(replies.length, count, `${subject}: one reply per recipient`)
      replies.forEach((r, k) => {
        if (/^451 /.test(r) && rcpts[k]!.includes('defer')) deferred.push(`${subject} ${rcpts[k]}`)
        else t.match(r, /^250 /, `${subject} ${rcpts[k]}: ${r}`)
      })
      expected.set(subject, count)
    }
  })
  await Promise.all(sessions)
  const accepted = [...expected.entries()].reduce((sum, [, c]) => sum + c, 0) - deferred.length
  const count = (): number => [...delivered.values()].reduce((sum, s) => sum + s.size, 0)
  await until('every accepted recipient to be delivered', () => count() >= accepted, 60_000)
  t.equal(count(), accepted, `${accepted} recipients delivered (${deferred.length} deferred to the MTA, which retries them)`)
  t.equal(okAnswers, accepted, 'each of them once')
  t.ok(hook.requests.length > accepted, 'some deliveries needed a retry')
  // The last webhook answer arrives before its job is marked completed: wait for the queues to settle.
  const counts = async () => a.app.queues.getJobCounts('waiting', 'active', 'delayed', 'failed')
  await until('the jobs to finish', async () => Object.values(await counts()).every((n) => n === 0), 30_000).catch(() => undefined)
  t.same(await counts(), { waiting: 0, active: 0, delayed: 0, failed: 0 }, 'nothing left in any shard')

  // Every shard took part, and the admin API and metrics see all of them.
  const perShard = await Promise.all(
    a.app.keys.shards.map(async (s) => {
      const owner = clusterOwner(cluster, s.dlogIndex)
      const redis = new Redis({ host: '127.0.0.1', port: owner.port, username: 'lmtp', password: 'cluster-secret-0123' })
      try {
        return await redis.zcard(s.dlogIndex)
      } finally {
        redis.disconnect()
      }
    }),
  )
  t.ok(
    perShard.every((c) => c > 0),
    `deliveries logged in every shard: ${perShard.join(', ')}`,
  )
  const total = perShard.reduce((x, y) => x + y, 0)
  const admin = a.app.admin!.fastify
  let listed = 0
  let cursor: string | null = null
  do {
    const page: { deliveries: unknown[]; nextCursor: string | null } = (
      await admin.inject({ method: 'GET', url: `/v1/deliveries?limit=25${cursor ? `&cursor=${cursor}` : ''}` })
    ).json()
    listed += page.deliveries.length
    cursor = page.nextCursor
  } while (cursor)
  t.equal(listed, total, 'the admin API lists the deliveries of every shard, page by page')
  const metrics = await (await fetch(`http://127.0.0.1:${a.adminPort}/metrics`)).text()
  for (const shard of ['0', '1', '2'])
    t.match(metrics, new RegExp(`lmtp_webhook_queue_shard_jobs\\{shard="${shard}",state="failed"\\} 0`), `metrics for shard ${shard}`)
})

t.test('route protection, operational events, bulk replay and the log filters on a cluster with QUEUE_SHARDS=3', async (t) => {
  let failing = true
  const hook = await webhook(t, (_req, _body, res) => {
    res.statusCode = failing ? 503 : 200
    res.end()
  })
  const ok = await webhook(t, 200)
  const sink = await webhook(t, 200)
  const env = { ...cluster.env, QUEUE_SHARDS: '3', EVENTS_URL: sink.url, LMTP_DOMAINS: 'example.com,br.example.com,acc.example.com', REPLY_TIMEOUT: '1s' }
  const p = prefix()
  const a = await startAdmin(t, env, {}, { prefix: p })
  const b = await startAdmin(t, env, {}, { prefix: p })
  const routes = [
    { id: 'held', match: 'held@example.com', url: ok.url },
    { id: 'br', match: '*@br.example.com', url: hook.url, concurrency: 2, rateLimit: { max: 100, per: '1m' }, circuitBreaker: { failures: 2, coolDown: '1m' } },
    { id: 'acc', match: '*@acc.example.com', url: hook.url, mode: 'accept', retry: { attempts: 1 }, circuitBreaker: false },
  ]
  for (const r of routes) t.equal((await a.api({ method: 'POST', url: '/v1/routes', payload: r })).statusCode, 201, `route ${r.id} created`)
  await until('b to see the routes', () => routes.every((r) => b.app.routes.get(r.id) !== undefined))
  for (const { id } of routes) {
    const k = a.app.keys.routeState(id)
    const slots = new Set([k.state, k.slots, k.rate, k.stats, k.held, k.changed].map((key) => clusterOwner(cluster, key).slot))
    t.equal(slots.size, 1, `route ${id}: its state keys and its change channel share one slot`)
  }

  // A pause on one instance reaches the other over sharded pub/sub (its periodic reload is 30 s away).
  t.equal((await a.api({ method: 'POST', url: '/v1/routes/held/pause', payload: { reason: 'maintenance' } })).statusCode, 200)
  await until('b to hear of the pause', () => b.app.state.get('held').paused)
  t.match(await rcptReply(b.lmtpPort!, 'held@example.com'), /^451 4\.3\.2 /, 'the other instance refuses at RCPT')
  t.equal((await b.api({ method: 'POST', url: '/v1/routes/held/resume' })).statusCode, 200)
  await until('a to hear of the resume', () => !a.app.state.get('held').paused)
  t.match(await rcptReply(a.lmtpPort!, 'held@example.com'), /^250 /, 'and takes mail again once b resumed it')

  // Failures on both instances open one circuit (the limit and breaker scripts run in the route's slot).
  for (const [i, app] of [a, b].entries()) t.match(afterData(await converse(app.lmtpPort!, message([`f${i}@br.example.com`]))), [/^451 /])
  await until('both instances to see the circuit open', () => a.app.state.get('br').circuit === 'open' && b.app.state.get('br').circuit === 'open')
  t.match(await rcptReply(b.lmtpPort!, 'x@br.example.com'), /^451 4\.3\.2 /, 'an open circuit refuses at RCPT')
  // The statistics are written once a second.
  const health = await until('the route view to show both attempts', async () => {
    const h = (await b.api({ method: 'GET', url: '/v1/routes/br' })).json().health
    return h.lastHour.attempts === 2 ? h : null
  })
  t.match(health, { circuit: 'open', consecutiveFailures: 2, lastStatus: 503, lastHour: { attempts: 2, delivered: 0 } }, 'the route view reads its health')

  // Dead letters in several shards, replayed in one bulk call through the other instance.
  for (let i = 0; i < 8; i++) {
    const out = await converse(a.lmtpPort!, message([`d${i}@acc.example.com`], i === 0 ? '<first-dead@x.test>' : undefined, 'alice@x.test'))
    t.match(afterData(out), [/^250 2\.0\.0 .*queued/])
  }
  await until('eight dead letters', async () => (await a.app.queues.getFailed()).length === 8, 30_000)
  const found = await Promise.all((await a.app.queues.getFailed()).map((j) => a.app.queues.findJob(j.id!)))
  t.ok(new Set(found.map((f) => f!.shard.label)).size >= 2, 'the dead letters are in more than one shard')
  failing = false
  t.match((await b.api({ method: 'POST', url: '/v1/deliveries/retry', payload: { route: 'acc' } })).json(), { matched: 8, retried: 8, nextCursor: null })
  await until(
    'the replays to be logged delivered',
    async () => (await a.api({ method: 'GET', url: '/v1/deliveries?route=acc&state=delivered' })).json().deliveries.length === 8,
    30_000,
  )
  const bySender = (await a.api({ method: 'GET', url: '/v1/deliveries?sender=ALICE@x.test' })).json().deliveries
  t.equal(bySender.length, 8, 'the log filters on the sender over every shard')
  const byId = (await b.api({ method: 'GET', url: '/v1/deliveries?messageId=first-dead@x.test' })).json().deliveries
  t.match(byId, [{ recipient: 'd0@acc.example.com', messageId: '<first-dead@x.test>', state: 'delivered' }], 'and on the message-id')

  // The operational events went through the events queue, in its own slot.
  const wanted = ['route.paused', 'route.resumed', 'route.circuit_opened', 'delivery.dead']
  await until('the operational events', () => {
    const types = new Set(sink.requests.map((r) => (JSON.parse(r.body.toString()) as { type: string }).type))
    return wanted.every((w) => types.has(w))
  })
  t.pass(`events received: ${wanted.join(', ')}`)
  t.equal(
    new Set(['wait', 'meta', 'events', 'completed'].map((k) => clusterOwner(cluster, `${a.app.keys.eventsPrefix}:events:${k}`).slot)).size,
    1,
    'the events queue keys share a slot',
  )
})

t.test('a wrong ACL password stops start-up with the reason', async (t) => {
  const err = await startApp(t, { ...cluster.env, REDIS_PASSWORD: 'not-the-password', REDIS_CONNECT_TIMEOUT: '2s' }).then(
    () => null,
    (e: unknown) => e,
  )
  t.ok(isAppError(err, 'QUEUE_ERR_REDIS_UNREACHABLE'))
  t.match((err as Error).message, /Redis Cluster via 127\.0\.0\.1:\d+/)
})

t.test('KeyLayout refuses a shard count it has no tags for', async (t) => {
  t.throws(() => new KeyLayout('p', MAX_QUEUE_SHARDS + 1), RangeError)
})

// Last: it freezes a primary, which the cluster notices.
t.test('readiness: a frozen primary turns /readyz 503, and 200 once it answers again', async (t) => {
  const { base } = await startAdmin(t, { ...cluster.env, ROLE: 'listener' })
  const readyz = async (): Promise<{ status: number; body: { checks: { redis: boolean } } }> => {
    const res = await fetch(`${base}/readyz`)
    return { status: res.status, body: (await res.json()) as { checks: { redis: boolean } } }
  }
  t.equal((await readyz()).status, 200, 'ready while every primary answers')
  const node = cluster.nodes[1]!
  let frozen = true
  const thaw = (): void => {
    if (frozen) process.kill(node.pid, 'SIGCONT')
    frozen = false
  }
  process.kill(node.pid, 'SIGSTOP')
  t.teardown(thaw)
  const down = await until('/readyz to answer 503', async () => {
    const r = await readyz()
    return r.status === 503 ? r : null
  })
  t.equal(down.body.checks.redis, false, 'one primary of three does not answer: not ready')
  thaw()
  await until('/readyz to answer 200 again', async () => (await readyz()).status === 200, 30_000)
  t.pass('ready again once it answers')
  for (const n of cluster.nodes) await until(`cluster node ${n.port} to be ok again`, () => /cluster_state:ok/.test(n.cli('cluster', 'info')), 30_000)
})
