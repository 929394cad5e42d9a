/**
 * The route store: file routes (read-only) plus routes created through the admin API (kept in
 * Redis), compiled into one in-memory RouteTable. Lookups never touch Redis.
 *
 * Redis keys (src/redis/keys.ts; one hash tag, so one cluster slot):
 *   <prefix>:{routes}:defs       hash  id → route definition JSON (secrets included: needed to sign);
 *                                      durations with their unit ("30000ms"). Definitions written
 *                                      before bare numbers meant seconds have numbers of
 *                                      milliseconds there, and are read as such (`storedDefinition`).
 *   <prefix>:{routes}:patterns   hash  normalised pattern → id (pattern uniqueness)
 *   <prefix>:{routes}:version    counter, bumped by every change
 *   <prefix>:{routes}:changed    pub/sub channel (sharded on a cluster); the message is the new version
 *
 * Every change is one Lua script (check and write in one step, so two replicas cannot both take
 * an id or a pattern). Replicas learn of a change through the channel, and as a safety net by a
 * periodic version check and a reload whenever the subscriber connection becomes ready again.
 */
import { AppError, isAppError } from '../errors.js'
import type { RedisClient } from '../redis/connections.js'
import { routeKeys, type RouteKeys } from '../redis/keys.js'
import { PubSub, publishCommand } from '../redis/pubsub.js'
import { defineScript, runScript } from '../redis/scripts.js'
import type { Logger } from '../logger.js'
import { parseRoute, routeToDefinition, type Route } from './schema.js'
import type { DestinationGuard } from '../delivery/guard.js'
import { RouteTable } from './table.js'

export interface RouteStoreOptions {
  /** Client for commands; the store never closes it. */
  readonly redis: RedisClient
  /** Subscriptions; by default one over a duplicate of `redis`, which the store closes. */
  readonly pubsub?: PubSub
  /** Key prefix (REDIS_PREFIX). */
  readonly prefix: string
  /** Routes of the routes file; they must not conflict with each other. */
  readonly fileRoutes?: readonly Route[]
  readonly logger: Logger
  /** Period of the safety-net version check, ms (default 5000). */
  readonly reloadIntervalMs?: number
  /**
   * Destination rules for routes created or replaced here (a URL host written as a denied address
   * is refused); default: the default deny list. Routes already stored are not checked again.
   */
  readonly guard?: DestinationGuard
}

export type RouteChangeListener = (table: RouteTable) => void

/**
 * KEYS[1] routes hash, KEYS[2] patterns hash, KEYS[3] version counter
 * ARGV[1] id, ARGV[2] normalised pattern, ARGV[3] route JSON, ARGV[4] channel, ARGV[5] PUBLISH or SPUBLISH
 * Returns {'ok', version} | {'id', id} (id taken) | {'match', owner id} (pattern taken)
 */
const CREATE = defineScript(
  'route-create',
  `
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return {'id', ARGV[1]} end
local owner = redis.call('HGET', KEYS[2], ARGV[2])
if owner then return {'match', owner} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
local version = redis.call('INCR', KEYS[3])
redis.call(ARGV[5], ARGV[4], version)
return {'ok', tostring(version)}
`,
)

/**
 * KEYS and ARGV as CREATE.
 * Returns {'ok', version} | {'missing', id} | {'match', owner id} (pattern taken by another route)
 */
const REPLACE = defineScript(
  'route-replace',
  `
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return {'missing', ARGV[1]} end
local owner = redis.call('HGET', KEYS[2], ARGV[2])
if owner and owner ~= ARGV[1] then return {'match', owner} end
local old = cjson.decode(current)['match']
if old ~= ARGV[2] and redis.call('HGET', KEYS[2], old) == ARGV[1] then redis.call('HDEL', KEYS[2], old) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
local version = redis.call('INCR', KEYS[3])
redis.call(ARGV[5], ARGV[4], version)
return {'ok', tostring(version)}
`,
)

/**
 * KEYS as CREATE; ARGV[1] id, ARGV[2] channel, ARGV[3] PUBLISH or SPUBLISH
 * Returns {'ok', version} | {'missing', id}
 */
const DELETE = defineScript(
  'route-delete',
  `
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return {'missing', ARGV[1]} end
local old = cjson.decode(current)['match']
if redis.call('HGET', KEYS[2], old) == ARGV[1] then redis.call('HDEL', KEYS[2], old) end
redis.call('HDEL', KEYS[1], ARGV[1])
local version = redis.call('INCR', KEYS[3])
redis.call(ARGV[3], ARGV[2], version)
return {'ok', tostring(version)}
`,
)

function duplicateError(route: Route, field: 'id' | 'match', owner: string, inFile: boolean): AppError {
  const where = inFile ? ' of the routes file' : ''
  const message =
    field === 'id'
      ? `route (id "${route.id}"): id: "${route.id}" is already the id of a route${where}`
      : `route (id "${route.id}"): match: "${route.match}" is already the pattern of route "${owner}"${where}`
  return new AppError('ROUTE_ERR_DUPLICATE', message, { field, id: route.id, conflictingId: owner })
}

/**
 * A stored definition as `parseRoute` reads it today. The store used to write the durations
 * (`timeout`, `retry.backoff`, `retry.maxDelay`) as numbers of milliseconds; it writes strings with
 * a unit now, and a bare number in a route means seconds, so a number found here is one of those
 * older definitions and becomes `"<n>ms"`, keeping its meaning.
 */
export function storedDefinition(value: unknown): unknown {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return value
  const def = { ...(value as Record<string, unknown>) }
  const ms = (v: unknown): unknown => (typeof v === 'number' ? `${v}ms` : v)
  if ('timeout' in def) def.timeout = ms(def.timeout)
  const retry = def.retry
  if (retry !== null && typeof retry === 'object' && !Array.isArray(retry)) {
    const r = { ...(retry as Record<string, unknown>) }
    if ('backoff' in r) r.backoff = ms(r.backoff)
    if ('maxDelay' in r) r.maxDelay = ms(r.maxDelay)
    def.retry = r
  }
  return def
}

export class RouteStore {
  private readonly redis: RedisClient
  private readonly pubsub: PubSub
  private readonly ownPubsub: boolean
  private readonly log: Logger
  private readonly guard: DestinationGuard | undefined
  private readonly fileRoutes: readonly Route[]
  private readonly fileTable: RouteTable
  private readonly keys: RouteKeys
  private readonly listeners = new Set<RouteChangeListener>()
  private current: RouteTable
  private timer: NodeJS.Timeout | undefined
  private pending: Promise<boolean> | undefined
  private again = false
  private closed = false
  private stopReconnect: (() => void) | undefined
  private readonly onMessage = (): void => this.reloadInBackground('change notice')

  private constructor(options: RouteStoreOptions) {
    // Validate before opening a connection, so a bad routes file leaves nothing open.
    this.fileRoutes = options.fileRoutes ?? []
    this.fileTable = RouteTable.build(this.fileRoutes)
    this.redis = options.redis
    this.ownPubsub = options.pubsub === undefined
    this.pubsub = options.pubsub ?? PubSub.over(options.redis)
    this.log = options.logger.child({ component: 'routes' })
    this.guard = options.guard
    if (this.ownPubsub) this.pubsub.subscriber.on('error', (err: Error) => this.log.warn({ err: err.message }, 'route subscriber error'))
    this.current = this.fileTable
    this.keys = routeKeys(options.prefix)
  }

  /**
   * Builds the table from the file routes and the routes in Redis, and starts following changes.
   * Throws ROUTE_ERR_DUPLICATE when file routes conflict, and Redis errors as they come.
   */
  static async open(options: RouteStoreOptions): Promise<RouteStore> {
    const store = new RouteStore(options)
    try {
      // Subscribe first, so a change made while loading is not missed.
      await store.pubsub.subscribe(store.keys.changed, store.onMessage)
      store.stopReconnect = store.pubsub.onReconnect(() => store.reloadInBackground('reconnect'))
      await store.reload()
    } catch (err) {
      await store.close()
      throw err
    }
    const interval = options.reloadIntervalMs ?? 5000
    store.timer = setInterval(() => store.reloadInBackground('periodic check'), interval)
    store.timer.unref()
    return store
  }

  /** The table in use now. */
  get table(): RouteTable {
    return this.current
  }

  /** Version of the Redis routes the table reflects (0 before any change). */
  get version(): number {
    return this.current.version
  }

  lookup(address: string): Route | undefined {
    return this.current.lookup(address)
  }

  /** File routes first (file order), then API routes (by id). */
  list(): Route[] {
    return [...this.current.routes]
  }

  get(id: string): Route | undefined {
    return this.current.get(id)
  }

  /** Creates an API route. ROUTE_ERR_INVALID for a bad definition; ROUTE_ERR_DUPLICATE for a taken id or pattern. */
  async create(definition: unknown): Promise<Route> {
    const route = parseRoute(definition, 'route', 'api', { guard: this.guard })
    this.checkFileConflicts(route, undefined)
    const [status, detail] = await runScript<[string, string]>(this.redis, CREATE, this.keyList(), [
      route.id,
      route.match,
      JSON.stringify(routeToDefinition(route)),
      this.keys.changed,
      publishCommand(this.redis),
    ])
    if (status === 'id') throw duplicateError(route, 'id', detail, false)
    if (status === 'match') throw duplicateError(route, 'match', detail, false)
    await this.reloadUntil(Number(detail))
    return this.current.get(route.id) ?? route
  }

  /**
   * Replaces an API route. The definition's id may be left out; when given it must be `id`.
   * ROUTE_ERR_READ_ONLY for a file route, ROUTE_ERR_NOT_FOUND, ROUTE_ERR_DUPLICATE for a taken pattern.
   */
  async replace(id: string, definition: unknown): Promise<Route> {
    this.checkWritable(id)
    let input = definition
    if (input !== null && typeof input === 'object' && !Array.isArray(input)) {
      const given = (input as { id?: unknown }).id
      if (given === undefined) input = { ...input, id }
      else if (given !== id) {
        throw new AppError('ROUTE_ERR_INVALID', `route (id "${id}"): id: expected "${id}" (the id of the route being replaced), got ${JSON.stringify(given)}`, {
          route: id,
          field: 'id',
        })
      }
    }
    const route = parseRoute(input, 'route', 'api', { guard: this.guard })
    this.checkFileConflicts(route, id)
    const [status, detail] = await runScript<[string, string]>(this.redis, REPLACE, this.keyList(), [
      route.id,
      route.match,
      JSON.stringify(routeToDefinition(route)),
      this.keys.changed,
      publishCommand(this.redis),
    ])
    if (status === 'missing') throw new AppError('ROUTE_ERR_NOT_FOUND', `route "${id}" not found`, { id })
    if (status === 'match') throw duplicateError(route, 'match', detail, false)
    await this.reloadUntil(Number(detail))
    return this.current.get(route.id) ?? route
  }

  /** Deletes an API route. ROUTE_ERR_READ_ONLY for a file route, ROUTE_ERR_NOT_FOUND. */
  async delete(id: string): Promise<void> {
    this.checkWritable(id)
    const [status, detail] = await runScript<[string, string]>(this.redis, DELETE, this.keyList(), [id, this.keys.changed, publishCommand(this.redis)])
    if (status === 'missing') throw new AppError('ROUTE_ERR_NOT_FOUND', `route "${id}" not found`, { id })
    await this.reloadUntil(Number(detail))
  }

  /** Calls `listener` with the new table after every change; returns a function that stops it. */
  onChange(listener: RouteChangeListener): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  /**
   * Reloads the API routes from Redis when their version changed. Concurrent calls share one
   * load; a call made while a load is running gets a second load after it. Resolves true when
   * the table changed.
   */
  reload(): Promise<boolean> {
    if (this.pending) {
      this.again = true
      return this.pending
    }
    const run = async (): Promise<boolean> => {
      let changed = false
      do {
        this.again = false
        changed = (await this.loadOnce()) || changed
      } while (this.again && !this.closed)
      return changed
    }
    this.pending = run().finally(() => {
      this.pending = undefined
    })
    return this.pending
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    if (this.timer) clearInterval(this.timer)
    this.listeners.clear()
    this.stopReconnect?.()
    await this.pending?.catch(() => undefined)
    if (this.ownPubsub) await this.pubsub.close()
    else await this.pubsub.unsubscribe(this.keys.changed, this.onMessage)
  }

  private keyList(): string[] {
    return [this.keys.defs, this.keys.patterns, this.keys.version]
  }

  private checkWritable(id: string): void {
    if (this.fileTable.get(id)) throw new AppError('ROUTE_ERR_READ_ONLY', `route "${id}" comes from the routes file and is read-only`, { id })
  }

  private checkFileConflicts(route: Route, replacing: string | undefined): void {
    if (replacing === undefined && this.fileTable.get(route.id)) throw duplicateError(route, 'id', route.id, true)
    const owner = this.fileTable.byMatch(route.match)
    if (owner) throw duplicateError(route, 'match', owner.id, true)
  }

  /**
   * After a write: reload until the table shows it. The write itself has succeeded, so a failed
   * reload is logged, not thrown; the next notice or periodic check brings the table up to date.
   */
  private async reloadUntil(version: number): Promise<void> {
    try {
      for (let i = 0; i < 5 && this.current.version < version; i++) await this.reload()
    } catch (err) {
      this.log.warn({ err, version }, 'reloading routes after a change failed; keeping the current routes until the next check')
    }
  }

  private reloadInBackground(reason: string): void {
    if (this.closed) return
    this.reload().catch((err: unknown) => this.log.warn({ err, reason }, 'reloading routes from Redis failed; keeping the current routes'))
  }

  /** One load: the version first, the routes only when it moved. */
  private async loadOnce(): Promise<boolean> {
    const seen = Number((await this.redis.get(this.keys.version)) ?? 0)
    if (seen === this.current.version && this.current !== this.fileTable) return false
    const results = await this.redis.multi().get(this.keys.version).hgetall(this.keys.defs).exec()
    if (!results) throw new Error('routes transaction was aborted')
    const [[versionErr, versionRaw], [routesErr, stored]] = results as [[Error | null, string | null], [Error | null, Record<string, string>]]
    if (versionErr) throw versionErr
    if (routesErr) throw routesErr
    const version = Number(versionRaw ?? 0)
    if (this.closed || (version === this.current.version && this.current !== this.fileTable)) return false
    const table = this.compile(version, stored)
    this.current = table
    for (const listener of this.listeners) {
      try {
        listener(table)
      } catch (err) {
        this.log.error({ err }, 'route change listener failed')
      }
    }
    this.log.info({ version, routes: table.size }, 'routes loaded')
    return true
  }

  /** File routes plus every stored route that parses and does not clash with one already taken. */
  private compile(version: number, stored: Record<string, string>): RouteTable {
    const routes = [...this.fileRoutes]
    const ids = new Set(routes.map((r) => r.id))
    const patterns = new Set(routes.map((r) => r.match))
    for (const id of Object.keys(stored).sort()) {
      let route: Route
      try {
        route = parseRoute(storedDefinition(JSON.parse(stored[id]!)), `stored route "${id}"`, 'api', { guard: null })
      } catch (err) {
        this.log.error({ err: isAppError(err) ? err.message : err, id }, 'ignoring a stored route that does not parse')
        continue
      }
      if (ids.has(route.id) || patterns.has(route.match)) {
        this.log.error({ id, match: route.match }, 'ignoring a stored route whose id or pattern is taken by a file route')
        continue
      }
      ids.add(route.id)
      patterns.add(route.match)
      routes.push(route)
    }
    return RouteTable.build(routes, version)
  }
}
