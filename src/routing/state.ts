/**
 * Route health shared by every replica: the pause flag, the circuit breaker's state and counters,
 * the concurrency slots and rate window of each route, and its attempt statistics, in Redis; plus
 * an in-memory copy of what the RCPT answer and the worker's first check need (paused? circuit
 * open until when? a failure streak under way?), kept fresh by pub/sub like the route table, so
 * neither costs a Redis round trip.
 *
 * Redis keys (src/redis/keys.ts `routeStateKeys`; one hash tag per route, so every script touches
 * one slot):
 *   <prefix>:route-state:{<id>}          hash  paused, pausedAt, pauseReason, circuit, openedAt,
 *                                              openUntil, closedAt, streak, streakStart, probe,
 *                                              probeUntil, lastStatus, lastError, lastAt
 *   <prefix>:route-state:{<id>}:slots    zset  concurrency slot holders scored by lease expiry
 *   <prefix>:route-state:{<id>}:rate     zset  attempt starts of the rate window, scored by time
 *   <prefix>:route-state:{<id>}:stats    hash  60 one-minute buckets "minute:attempts:delivered"
 *   <prefix>:route-state:{<id>}:held     zset  accept-mode jobs held by a pause or an open circuit
 *   <prefix>:route-state:{<id>}:changed  channel: "<id> <paused> <circuit> <openUntil> <failing>"
 *
 * Every change of the in-memory fields is made by a Lua script (src/redis/scripts.ts) that
 * publishes the route's new condition in the same step, on the route's own channel: in the
 * route's slot, so a cluster takes the SPUBLISH from the script (src/redis/pubsub.ts). Each
 * process subscribes to the channel of every route in force, on the process's one subscriber
 * connection, so a replica's copy follows within the pub/sub latency. The copy is reloaded whole
 * when the subscriber reconnects (a message may have been lost) and every 30 s as a safety net.
 * Times in Redis come from Redis's own clock (`TIME`).
 */
import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import { reply, type Reply } from '../lmtp/reply.js'
import type { RedisClient } from '../redis/connections.js'
import { routeStateKeys, type RouteStateKeys } from '../redis/keys.js'
import { publishCommand, type PubSub } from '../redis/pubsub.js'
import { defineScript, runScript } from '../redis/scripts.js'
import type { Route } from './schema.js'

export type CircuitState = 'closed' | 'open' | 'half-open'

/** What each process keeps in memory for a route. */
export interface RouteCondition {
  readonly paused: boolean
  readonly circuit: CircuitState
  /** Epoch ms until which an open circuit refuses deliveries (0 when not open). */
  readonly openUntil: number
  /** A failure streak is under way: the next success must reset it in Redis. */
  readonly failing: boolean
}

export const HEALTHY: RouteCondition = Object.freeze({ paused: false, circuit: 'closed', openUntil: 0, failing: false })

/** Route health as the admin API shows it. */
export interface RouteHealth {
  readonly paused: boolean
  readonly pausedAt: string | null
  readonly pauseReason: string | null
  readonly circuit: CircuitState
  readonly circuitOpenedAt: string | null
  /** When an open circuit lets one delivery probe the webhook. */
  readonly circuitOpenUntil: string | null
  readonly consecutiveFailures: number
  readonly lastStatus: number | null
  readonly lastError: string | null
  readonly lastAttemptAt: string | null
  readonly inFlight: number
  readonly lastHour: { readonly attempts: number; readonly delivered: number; readonly successRate: number | null }
}

export const pausedReply = (rcpt: string): Reply => reply(451, '4.3.2', `<${rcpt}> delivery to this address is paused, try again later`)
export const circuitOpenReply = (rcpt: string): Reply => reply(451, '4.3.2', `<${rcpt}> webhook failing, deliveries suspended, try again later`)
export const busyReply = (rcpt: string): Reply => reply(451, '4.7.0', `<${rcpt}> webhook at its delivery limit, try again later`)

/**
 * Lua shared by the scripts: `now()` in ms from Redis's clock, and `announce(key, channel, id,
 * command)`, which publishes the route's condition with `command` (PUBLISH, or SPUBLISH on a
 * cluster: src/redis/pubsub.ts `publishCommand`) and returns the message.
 */
export const LUA_HELPERS = `
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function announce(key, channel, id, command)
  local f = redis.call('HMGET', key, 'paused', 'circuit', 'openUntil', 'streak')
  local failing = (tonumber(f[4]) or 0) > 0 and '1' or '0'
  local message = id .. ' ' .. (f[1] == '1' and '1' or '0') .. ' ' .. (f[2] or 'closed') .. ' ' .. (f[3] or '0') .. ' ' .. failing
  redis.call(command, channel, message)
  return message
end
`

/** KEYS[1] state; ARGV[1] channel, ARGV[2] id, ARGV[3] reason, ARGV[4] publish command. Returns {changed 0|1, pausedAt, message}. */
const PAUSE = defineScript(
  'route-pause',
  `${LUA_HELPERS}
local at = redis.call('HGET', KEYS[1], 'pausedAt')
if redis.call('HGET', KEYS[1], 'paused') == '1' then return {0, at or '0', ''} end
local t = now()
redis.call('HSET', KEYS[1], 'paused', '1', 'pausedAt', t, 'pauseReason', ARGV[3])
return {1, tostring(t), announce(KEYS[1], ARGV[1], ARGV[2], ARGV[4])}
`,
)

/** KEYS[1] state; ARGV[1] channel, ARGV[2] id, ARGV[3] publish command. Returns {changed 0|1, at, message}. */
const RESUME = defineScript(
  'route-resume',
  `${LUA_HELPERS}
if redis.call('HGET', KEYS[1], 'paused') ~= '1' then return {0, '0', ''} end
redis.call('HDEL', KEYS[1], 'paused', 'pausedAt', 'pauseReason')
return {1, tostring(now()), announce(KEYS[1], ARGV[1], ARGV[2], ARGV[3])}
`,
)

/** Parses a published condition: `"<id> <paused> <circuit> <openUntil> <failing>"`. */
export function parseAnnouncement(message: string): { id: string; condition: RouteCondition } | null {
  const m = /^(\S+) ([01]) (closed|open|half-open) (\d+) ([01])$/.exec(message)
  if (!m) return null
  return { id: m[1]!, condition: { paused: m[2] === '1', circuit: m[3] as CircuitState, openUntil: Number(m[4]), failing: m[5] === '1' } }
}

function conditionOf(fields: (string | null)[]): RouteCondition {
  const [paused, circuit, openUntil, streak] = fields
  if (paused !== '1' && (circuit === null || circuit === 'closed') && !(Number(streak) > 0)) return HEALTHY
  return {
    paused: paused === '1',
    circuit: circuit === 'open' || circuit === 'half-open' ? circuit : 'closed',
    openUntil: Number(openUntil ?? 0) || 0,
    failing: Number(streak ?? 0) > 0,
  }
}

const iso = (ms: string | null | undefined): string | null => (ms && Number(ms) > 0 ? new Date(Number(ms)).toISOString() : null)

/** What the state store needs of the delivery queue to release held jobs. */
export interface HeldJobs {
  getJob(id: string): Promise<{ promote(): Promise<void>; isDelayed(): Promise<boolean> } | undefined>
}

export interface RouteStateOptions {
  /** Commands and scripts; the state never closes it. */
  readonly redis: RedisClient
  /** The process's subscriptions (src/redis/pubsub.ts); the state never closes it. */
  readonly pubsub: PubSub
  readonly prefix: string
  readonly log: Logger
  /** The ids of the routes in force now (the route table). */
  readonly routeIds: () => readonly string[]
  /** Period of the safety-net reload, ms (default 30 s). */
  readonly reloadIntervalMs?: number
}

export type ConditionListener = (id: string, condition: RouteCondition, previous: RouteCondition) => void

export class RouteState {
  private readonly redis: RedisClient
  private readonly pubsub: PubSub
  private readonly prefix: string
  private readonly log: Logger
  private readonly routeIds: () => readonly string[]
  private readonly conditions = new Map<string, RouteCondition>()
  private readonly listeners = new Set<ConditionListener>()
  /** Routes whose change channel this process is subscribed to. */
  private readonly followed = new Set<string>()
  /** PUBLISH, or SPUBLISH on a cluster: what the scripts announce a change with. */
  readonly publishCommand: 'PUBLISH' | 'SPUBLISH'
  private timer: NodeJS.Timeout | undefined
  private stopReconnect: (() => void) | undefined
  private closed = false
  private readonly onMessage = (message: Buffer): void => this.applyAnnouncement(message.toString())

  private constructor(options: RouteStateOptions) {
    this.redis = options.redis
    this.pubsub = options.pubsub
    this.prefix = options.prefix
    this.log = options.log
    this.routeIds = options.routeIds
    this.publishCommand = publishCommand(options.redis)
  }

  /** Subscribes, loads the state of every route in force, and starts following changes. */
  static async open(options: RouteStateOptions): Promise<RouteState> {
    const state = new RouteState(options)
    try {
      state.stopReconnect = state.pubsub.onReconnect(() => state.reloadInBackground('reconnect'))
      await state.reload()
    } catch (err) {
      await state.close()
      throw err
    }
    state.timer = setInterval(() => state.reloadInBackground('periodic check'), options.reloadIntervalMs ?? 30_000)
    state.timer.unref()
    return state
  }

  keys(routeId: string): RouteStateKeys {
    return routeStateKeys(this.prefix, routeId)
  }

  /** The in-memory condition of a route (healthy when nothing is known). No Redis round trip. */
  get(routeId: string): RouteCondition {
    return this.conditions.get(routeId) ?? HEALTHY
  }

  /**
   * The RCPT-time answer: a defer-mode route that is paused, or whose circuit is open, refuses
   * the recipient with 451 4.3.2 before the data is sent. Accept mode takes the mail and holds
   * its jobs. Undefined when the recipient may go on.
   */
  refusal(route: Route, rcpt: string, now = Date.now()): Reply | undefined {
    if (route.mode !== 'defer') return undefined
    const c = this.conditions.get(route.id)
    if (c === undefined) return undefined
    if (c.paused) return pausedReply(rcpt)
    if (route.circuitBreaker !== null && c.circuit === 'open' && now < c.openUntil) return circuitOpenReply(rcpt)
    return undefined
  }

  /** Calls `listener` whenever a route's condition changes (in this process's copy). */
  onChange(listener: ConditionListener): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  /**
   * Applies an announcement a script returned (the same message reaches every replica through
   * the channel; applying it here too makes this process's copy current at once).
   */
  applyAnnouncement(message: string): void {
    const parsed = parseAnnouncement(message)
    if (parsed) this.apply(parsed.id, parsed.condition)
  }

  /** Pauses a route. `changed` is false when it was paused already. */
  async pause(routeId: string, reason: string): Promise<{ changed: boolean; at: number }> {
    const keys = this.keys(routeId)
    const [changed, at, message] = await runScript<[number, string, string]>(
      this.redis,
      PAUSE,
      [keys.state],
      [keys.changed, routeId, reason, this.publishCommand],
    )
    if (message) this.applyAnnouncement(message)
    return { changed: changed === 1, at: Number(at) }
  }

  /** Resumes a route and releases the jobs it held. `changed` is false when it was not paused. */
  async resume(routeId: string, queue: HeldJobs | null): Promise<{ changed: boolean; at: number }> {
    const keys = this.keys(routeId)
    const [changed, at, message] = await runScript<[number, string, string]>(this.redis, RESUME, [keys.state], [keys.changed, routeId, this.publishCommand])
    if (message) this.applyAnnouncement(message)
    if (changed === 1 && queue) this.releaseHeld(routeId, queue)
    return { changed: changed === 1, at: Number(at) }
  }

  /** Records that an accept-mode job is held until `untilMs` (so a resume or a closing circuit can release it early). */
  async noteHeld(routeId: string, jobId: string, untilMs: number): Promise<void> {
    const key = this.keys(routeId).held
    await this.redis
      .multi()
      .zadd(key, untilMs, jobId)
      // entries of jobs that came back on their own and left the queue since
      .zremrangebyscore(key, '-inf', Date.now() - 86_400_000)
      .pexpire(key, 7 * 86_400_000)
      .exec()
  }

  /**
   * Moves the held jobs of a route back to the queue now, in batches, in the background. A job
   * not released (this process stops, Redis fails) still comes back when its hold ends.
   */
  releaseHeld(routeId: string, queue: HeldJobs): void {
    const key = this.keys(routeId).held
    const run = async (): Promise<void> => {
      for (let round = 0; round < 10_000 && !this.closed; round++) {
        const popped = await this.redis.zpopmin(key, 200)
        if (popped.length === 0) return
        for (let i = 0; i < popped.length; i += 2) {
          const job = await queue.getJob(popped[i]!)
          if (job && (await job.isDelayed())) await job.promote().catch(() => undefined)
        }
      }
    }
    run().catch((err: unknown) => this.log.warn({ err, route: routeId }, 'could not release every held job; the rest come back when their hold ends'))
  }

  /**
   * Health of routes for the admin API. Each route's keys are in its own slot, so the reads go out
   * as single commands at once (one write per event-loop turn, src/redis/coalesce.ts), which a
   * cluster routes to each route's primary.
   */
  async health(routeIds: readonly string[], now = Date.now()): Promise<Map<string, RouteHealth>> {
    const out = new Map<string, RouteHealth>()
    if (routeIds.length === 0) return out
    const results = await Promise.all(
      routeIds.map((id) => {
        const k = this.keys(id)
        return Promise.all([this.redis.hgetall(k.state), this.redis.hgetall(k.stats), this.redis.zcount(k.slots, now, '+inf')])
      }),
    )
    const minute = Math.floor(now / 60_000)
    routeIds.forEach((id, i) => {
      const [h, stats, inFlight] = results[i]!
      let attempts = 0
      let delivered = 0
      for (const bucket of Object.values(stats)) {
        const [m, a, d] = bucket.split(':').map(Number)
        if (m! > minute - 60 && m! <= minute) {
          attempts += a ?? 0
          delivered += d ?? 0
        }
      }
      const stored: CircuitState = h.circuit === 'open' || h.circuit === 'half-open' ? h.circuit : 'closed'
      // An open circuit whose cool-down is over lets the next delivery probe: half-open.
      const circuit: CircuitState = stored === 'open' && Number(h.openUntil ?? 0) <= now ? 'half-open' : stored
      out.set(id, {
        paused: h.paused === '1',
        pausedAt: h.paused === '1' ? iso(h.pausedAt) : null,
        pauseReason: h.paused === '1' && h.pauseReason ? h.pauseReason : null,
        circuit,
        circuitOpenedAt: circuit === 'closed' ? null : iso(h.openedAt),
        circuitOpenUntil: circuit === 'closed' ? null : iso(h.openUntil),
        consecutiveFailures: Number(h.streak ?? 0) || 0,
        lastStatus: h.lastStatus ? Number(h.lastStatus) : null,
        lastError: h.lastError || null,
        lastAttemptAt: iso(h.lastAt),
        inFlight,
        lastHour: { attempts, delivered, successRate: attempts === 0 ? null : Math.round((delivered / attempts) * 10_000) / 10_000 },
      })
    })
    return out
  }

  /** Reloads the condition of every route in force (and forgets routes no longer there). */
  async reload(): Promise<void> {
    const ids = [...this.routeIds()]
    await this.load(ids)
    const known = new Set(ids)
    for (const id of this.conditions.keys()) if (!known.has(id)) this.conditions.delete(id)
    await this.unfollow(known)
  }

  /** Loads the condition of the given routes from Redis (and follows their changes). */
  async load(ids: readonly string[]): Promise<void> {
    for (let start = 0; start < ids.length; start += 500) {
      const batch = ids.slice(start, start + 500)
      // Subscribed before the read, so a change made meanwhile is not missed.
      await this.follow(batch)
      const results = await Promise.all(batch.map((id) => this.redis.hmget(this.keys(id).state, 'paused', 'circuit', 'openUntil', 'streak')))
      batch.forEach((id, i) => this.apply(id, conditionOf(results[i]!)))
    }
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    if (this.timer) clearInterval(this.timer)
    this.stopReconnect?.()
    this.listeners.clear()
    const ids = [...this.followed]
    this.followed.clear()
    await Promise.all(ids.map((id) => this.pubsub.unsubscribe(this.keys(id).changed, this.onMessage)))
  }

  /** Subscribes to the change channel of each of `ids` not followed yet. */
  private async follow(ids: readonly string[]): Promise<void> {
    const fresh = ids.filter((id) => !this.followed.has(id))
    for (const id of fresh) this.followed.add(id)
    try {
      await Promise.all(fresh.map((id) => this.pubsub.subscribe(this.keys(id).changed, this.onMessage)))
    } catch (err) {
      for (const id of fresh) this.followed.delete(id)
      throw err
    }
  }

  /** Unsubscribes from the channels of routes no longer in force. */
  private async unfollow(keep: ReadonlySet<string>): Promise<void> {
    const gone = [...this.followed].filter((id) => !keep.has(id))
    for (const id of gone) this.followed.delete(id)
    await Promise.all(gone.map((id) => this.pubsub.unsubscribe(this.keys(id).changed, this.onMessage)))
  }

  private apply(id: string, condition: RouteCondition): void {
    const previous = this.get(id)
    if (
      previous.paused === condition.paused &&
      previous.circuit === condition.circuit &&
      previous.openUntil === condition.openUntil &&
      previous.failing === condition.failing
    )
      return
    if (condition === HEALTHY || (!condition.paused && condition.circuit === 'closed' && !condition.failing)) this.conditions.delete(id)
    else this.conditions.set(id, condition)
    for (const listener of this.listeners) {
      try {
        listener(id, condition, previous)
      } catch (err) {
        this.log.error({ err }, 'route state listener failed')
      }
    }
  }

  private reloadInBackground(reason: string): void {
    if (this.closed) return
    this.reload().catch((err: unknown) => this.log.warn({ err, reason }, 'reloading route state from Redis failed; keeping the current copy'))
  }
}

/** A holder id for a concurrency slot or a probe: unique per acquisition. */
export function holderId(jobId: string): string {
  return `${jobId}~${randomBytes(6).toString('base64url')}`
}
