import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'
import { isAppError, type ErrorCode } from '../../src/errors.js'
import { createLogger } from '../../src/logger.js'
import { parseRoute, publicView, type Route } from '../../src/routing/schema.js'
import { RouteStore, type RouteStoreOptions } from '../../src/routing/store.js'
import { routeKeys } from '../../src/redis/keys.js'
import { PubSub } from '../../src/redis/pubsub.js'
import type { RouteTable } from '../../src/routing/table.js'
import { until } from '../helpers/until.js'

const REDIS_URL = 'redis://127.0.0.1:6379'
const logger = createLogger('silent')
const secret = `whsec_${randomBytes(32).toString('base64')}`

const fileRoutes: Route[] = [
  parseRoute({ id: 'file-support', match: 'support@example.com', url: 'http://127.0.0.1:1/support' }, 'routes[0]'),
  parseRoute({ id: 'file-all', match: '*@files.example.com', url: 'http://127.0.0.1:1/files' }, 'routes[1]'),
]

/** A fresh prefix and a command connection; everything is removed at the end of the test. */
async function setup(t: Test): Promise<{ prefix: string; redis: Redis; open: (options?: Partial<RouteStoreOptions>) => Promise<RouteStore> }> {
  const prefix = `test-${randomBytes(6).toString('hex')}`
  const redis = new Redis(REDIS_URL)
  const stores: RouteStore[] = []
  t.teardown(async () => {
    for (const store of stores) await store.close()
    const keys = await redis.keys(`${prefix}:*`)
    if (keys.length > 0) await redis.del(...keys)
    redis.disconnect()
  })
  const open = async (options: Partial<RouteStoreOptions> = {}): Promise<RouteStore> => {
    const store = await RouteStore.open({ redis, prefix, fileRoutes, logger, reloadIntervalMs: 3_600_000, ...options })
    stores.push(store)
    return store
  }
  return { prefix, redis, open }
}

async function rejection(promise: Promise<unknown>, code: ErrorCode): Promise<AppErrorLike> {
  try {
    await promise
  } catch (err) {
    if (isAppError(err, code)) return { message: err.message, details: err.details ?? {} }
    throw err
  }
  throw new Error(`expected ${code}, but it succeeded`)
}
interface AppErrorLike {
  message: string
  details: Record<string, unknown>
}

const def = (id: string, match: string, extra: Record<string, unknown> = {}) => ({ id, match, url: `http://127.0.0.1:1/${id}`, ...extra })

t.test('create, replace and delete API routes', async (t) => {
  const { open } = await setup(t)
  const store = await open()
  t.same(
    store.list().map((r) => [r.id, r.source]),
    [
      ['file-support', 'file'],
      ['file-all', 'file'],
    ],
    'file routes are there from the start',
  )

  const created = await store.create(def('sales', 'Sales+*@Example.com', { secret }))
  t.equal(created.source, 'api')
  t.equal(created.match, 'sales+*@example.com')
  t.equal(store.lookup('sales+eu@example.com')?.id, 'sales', 'the new route serves at once')
  t.equal(store.get('sales')?.secrets[0], secret, 'the route keeps its secret for signing')
  t.same(
    store.list().map((r) => r.id),
    ['file-support', 'file-all', 'sales'],
  )

  const replaced = await store.replace('sales', { match: '*@sales.example.com', url: 'http://127.0.0.1:1/v2' })
  t.equal(replaced.url, 'http://127.0.0.1:1/v2')
  t.equal(store.lookup('sales+eu@example.com'), undefined, 'the old pattern no longer matches')
  t.equal(store.lookup('anyone@sales.example.com')?.id, 'sales')
  t.same(store.get('sales')?.secrets, [], 'a replacement is whole: the secret it left out is gone')
  await store.create(def('sales-old', 'sales+*@example.com'))
  t.equal(store.lookup('sales@example.com')?.id, 'sales-old', 'the freed pattern can be taken by another route')

  await store.delete('sales')
  t.equal(store.get('sales'), undefined)
  t.equal(store.lookup('anyone@sales.example.com'), undefined)
  await store.create(def('sales-2', '*@sales.example.com'))
  t.equal(store.lookup('anyone@sales.example.com')?.id, 'sales-2', 'a deleted route frees its pattern')

  const missing = await rejection(store.delete('sales'), 'ROUTE_ERR_NOT_FOUND')
  t.equal(missing.message, 'route "sales" not found')
  await rejection(store.replace('nobody', def('nobody', 'nobody@example.com')), 'ROUTE_ERR_NOT_FOUND')
})

t.test('taken ids and patterns are conflicts, against API and file routes', async (t) => {
  const { open } = await setup(t)
  const store = await open()
  await store.create(def('sales', 'sales@example.com'))
  await store.create(def('other', 'other@example.com'))

  let err = await rejection(store.create(def('sales', 'new@example.com')), 'ROUTE_ERR_DUPLICATE')
  t.equal(err.message, 'route (id "sales"): id: "sales" is already the id of a route')
  t.same(err.details, { field: 'id', id: 'sales', conflictingId: 'sales' })

  err = await rejection(store.create(def('sales-2', 'SALES@example.com.')), 'ROUTE_ERR_DUPLICATE')
  t.equal(err.message, 'route (id "sales-2"): match: "sales@example.com" is already the pattern of route "sales"')
  t.same(err.details, { field: 'match', id: 'sales-2', conflictingId: 'sales' })

  err = await rejection(store.replace('other', { match: 'sales@example.com', url: 'http://127.0.0.1:1/' }), 'ROUTE_ERR_DUPLICATE')
  t.match(err.message, 'is already the pattern of route "sales"', "replace cannot take another route's pattern")
  t.equal(store.get('other')?.match, 'other@example.com', 'and the route is unchanged')

  err = await rejection(store.create(def('file-support', 'x@example.com')), 'ROUTE_ERR_DUPLICATE')
  t.equal(err.message, 'route (id "file-support"): id: "file-support" is already the id of a route of the routes file')
  err = await rejection(store.create(def('mine', '*@FILES.example.com')), 'ROUTE_ERR_DUPLICATE')
  t.equal(err.message, 'route (id "mine"): match: "*@files.example.com" is already the pattern of route "file-all" of the routes file')
  err = await rejection(store.replace('other', { match: 'support@example.com', url: 'http://127.0.0.1:1/' }), 'ROUTE_ERR_DUPLICATE')
  t.match(err.message, 'of the routes file')

  t.same(
    store.list().map((r) => r.id),
    ['file-support', 'file-all', 'other', 'sales'],
    'no conflict left a trace',
  )
})

t.test('file routes are read-only', async (t) => {
  const { open } = await setup(t)
  const store = await open()
  const err = await rejection(store.delete('file-support'), 'ROUTE_ERR_READ_ONLY')
  t.equal(err.message, 'route "file-support" comes from the routes file and is read-only')
  await rejection(store.replace('file-all', def('file-all', '*@files.example.com')), 'ROUTE_ERR_READ_ONLY')
  t.equal(store.get('file-support')?.source, 'file')
  t.equal(store.lookup('support@example.com')?.id, 'file-support')
})

t.test('bad definitions are refused before anything is written', async (t) => {
  const { open, redis, prefix } = await setup(t)
  const store = await open()
  let err = await rejection(store.create(def('bad', 'bad@example.com', { url: 'ftp://x' })), 'ROUTE_ERR_INVALID')
  t.equal(err.message, 'route (id "bad"): url: expected an http(s) URL, got "ftp://x"')
  await store.create(def('good', 'good@example.com'))
  err = await rejection(store.replace('good', def('other-id', 'good@example.com')), 'ROUTE_ERR_INVALID')
  t.equal(err.message, 'route (id "good"): id: expected "good" (the id of the route being replaced), got "other-id"')
  t.same(await redis.hkeys(routeKeys(prefix).defs), ['good'])
})

t.test('routes outlive the store: a new store loads them from Redis', async (t) => {
  const { open } = await setup(t)
  const first = await open()
  await first.create(def('kept', 'kept@example.com', { secret, headers: { Authorization: 'Bearer x' }, timeout: '3s' }))
  await first.close()
  const second = await open()
  const kept = second.get('kept')
  t.equal(kept?.source, 'api')
  t.same(kept?.secrets, [secret], 'with its secret')
  t.same(kept?.headers, { authorization: 'Bearer x' })
  t.equal(kept?.timeoutMs, 3000)
  t.equal(second.lookup('kept@example.com')?.id, 'kept')
  t.same(publicView(kept!).secretIds.length, 1)
})

t.test("two stores on one Redis see each other's changes", async (t) => {
  const { open } = await setup(t)
  const a = await open()
  const b = await open()
  const seenByB: number[] = []
  b.onChange((table: RouteTable) => seenByB.push(table.version))

  await a.create(def('from-a', 'a@example.com'))
  await until('b sees the route a created', () => b.lookup('a@example.com')?.id === 'from-a')
  t.ok(seenByB.length >= 1, "b's change listener was called")
  t.equal(b.version, a.version, 'both are at the same version')

  await b.replace('from-a', { match: 'a2@example.com', url: 'http://127.0.0.1:1/x' })
  await until('a sees the replacement b made', () => a.lookup('a2@example.com')?.id === 'from-a' && a.lookup('a@example.com') === undefined)

  await b.delete('from-a')
  await until('a sees the deletion b made', () => a.get('from-a') === undefined)

  await rejection(
    b.create(def('from-a', 'a2@example.com')).then(() => a.create(def('again', 'A2@example.com'))),
    'ROUTE_ERR_DUPLICATE',
  )
})

t.test('two stores racing for one pattern: exactly one wins', async (t) => {
  const { open } = await setup(t)
  const a = await open()
  const b = await open()
  for (let round = 0; round < 10; round++) {
    const results = await Promise.allSettled([a.create(def(`a${round}`, `race${round}@example.com`)), b.create(def(`b${round}`, `RACE${round}@example.com`))])
    const won = results.filter((r) => r.status === 'fulfilled')
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected')
    t.equal(won.length, 1, `round ${round}: one create succeeded`)
    t.ok(lost.length === 1 && isAppError(lost[0]!.reason, 'ROUTE_ERR_DUPLICATE'), `round ${round}: the other got ROUTE_ERR_DUPLICATE`)
  }
  await until(
    'both stores agree on every route',
    () =>
      a
        .list()
        .map((r) => r.id)
        .join() ===
      b
        .list()
        .map((r) => r.id)
        .join(),
  )
  t.equal(a.list().filter((r) => r.source === 'api').length, 10)
})

t.test('a store that missed change notices catches up on reconnect', async (t) => {
  const { open } = await setup(t)
  const a = await open()
  const subscriber = new Redis(REDIS_URL)
  t.teardown(() => subscriber.disconnect())
  const b = await open({ pubsub: new PubSub(subscriber, false) })

  subscriber.disconnect()
  await until("b's subscriber is disconnected", () => subscriber.status === 'end')
  await a.create(def('while-away', 'away@example.com'))
  t.equal(b.get('while-away'), undefined, 'b cannot have seen it: no notice, no periodic check yet')

  await subscriber.connect()
  await until('b reloads when its subscriber is ready again', () => b.get('while-away') !== undefined)
  await a.create(def('after', 'after@example.com'))
  await until('and it is subscribed again', () => b.get('after') !== undefined)
})

t.test('the periodic check picks up a change whose notice was lost', async (t) => {
  const { open, redis, prefix } = await setup(t)
  const store = await open({ reloadIntervalMs: 100 })
  const route = def('written', 'written@example.com')
  // a write without PUBLISH, as if the notice had been lost
  await redis.hset(routeKeys(prefix).defs, 'written', JSON.stringify(route))
  await redis.hset(routeKeys(prefix).defs, 'broken', '{"id":"broken","match":"nope"}')
  await redis.incr(routeKeys(prefix).version)
  await until('the store finds the route', () => store.get('written') !== undefined)
  t.equal(store.get('broken'), undefined, 'a stored route that does not parse is left out')
  t.equal(store.lookup('written@example.com')?.id, 'written')
})

t.test('conflicting file routes are refused at open', async (t) => {
  const { open } = await setup(t)
  const twice = [...fileRoutes, parseRoute(def('copy', 'SUPPORT@example.com'), 'routes[2]')]
  await rejection(open({ fileRoutes: twice }), 'ROUTE_ERR_DUPLICATE')
})

t.test('durations: written with their unit; definitions stored with numbers of milliseconds keep their meaning', async (t) => {
  const { prefix, redis, open } = await setup(t)
  const store = await open()
  await store.create({ id: 'new', match: 'new@example.com', url: 'http://127.0.0.1:1/new', timeout: 30, retry: { backoff: 2, maxDelay: '1h' } })
  const written = JSON.parse((await redis.hget(routeKeys(prefix).defs, 'new'))!) as Record<string, any>
  t.equal(written.timeout, '30000ms', 'timeout is stored with its unit')
  t.same([written.retry.backoff, written.retry.maxDelay], ['2000ms', '3600000ms'], 'so are the retry delays')
  t.equal(store.get('new')?.timeoutMs, 30_000, 'timeout: 30 in the API is 30 s')

  // A definition the store wrote before a bare number meant seconds.
  const older = {
    id: 'older',
    match: 'older@example.com',
    url: 'http://127.0.0.1:1/older',
    timeout: 1500,
    retry: { attempts: 3, backoff: 100, maxDelay: 2000 },
  }
  await redis
    .multi()
    .hset(routeKeys(prefix).defs, 'older', JSON.stringify(older))
    .hset(routeKeys(prefix).patterns, 'older@example.com', 'older')
    .incr(routeKeys(prefix).version)
    .exec()
  const reopened = await open()
  const route = reopened.get('older')
  t.equal(route?.timeoutMs, 1500, 'its timeout is still 1500 ms')
  t.same(route?.retry, { attempts: 3, backoffMs: 100, maxDelayMs: 2000 }, 'its retry delays are still milliseconds')
  t.equal(reopened.get('new')?.timeoutMs, 30_000, 'and the new one is still 30 s')
})
