/**
 * What stands between a job and its webhook attempt: the route's pause flag, its circuit breaker,
 * its concurrency limit and its rate limit, all shared by every replica through Redis
 * (`routing/state.ts` holds the keys and the in-memory copy). The worker calls two entry points:
 *
 *   before(route, jobId)          go (with a permit) / wait for a slot or the rate window / held
 *   after(route, permit, result)  releases the slot, feeds the breaker, records the statistics
 *
 * and `hold()` for a job that may not go now: defer-mode jobs wait for a slot until shortly before
 * their reply deadline and then answer 451 4.7.0 (4.3.2 for a paused route or an open circuit);
 * other modes wait without spending an attempt (BullMQ `moveToDelayed` + `DelayedError`), held
 * until the route is resumed or the cool-down ends.
 *
 * Each decision that needs Redis is one Lua script over one route's keys (one round trip). A
 * route with no limits whose copy says healthy needs none before its attempt, and none after a
 * success when no failure streak is under way: the statistics are added up in memory and written
 * once a second per route.
 */
import { DelayedError } from 'bullmq'
import type { Logger } from 'pino'
import type { Reply } from '../lmtp/reply.js'
import type { RedisClient } from '../redis/connections.js'
import { defineScript, runScript } from '../redis/scripts.js'
import type { Route } from '../routing/schema.js'
import { LUA_HELPERS, busyReply, circuitOpenReply, holderId, pausedReply, type RouteState } from '../routing/state.js'
import { queuedReply, type Outcome } from './outcome.js'
import type { DeliveryJob, DeliveryJobReturn } from './queue.js'

/** A paused route's accept-mode jobs wake after this long if a resume did not release them first. */
export const PAUSE_HOLD_MS = 5 * 60_000
/** A defer-mode job gives up waiting this long before its reply deadline, so its 451 arrives in time. */
export const DEFER_MARGIN_MS = 300
/** Beyond its attempt deadline, how long a concurrency slot outlives a process that died holding it. */
const LEASE_GRACE_MS = 30_000
/** Statistics are written this often (per route with attempts). */
const STATS_FLUSH_MS = 1000

export interface Permit {
  /** Slot / probe holder id; '' when nothing was taken in Redis. */
  readonly holder: string
  readonly slot: boolean
  readonly probe: boolean
}

export type WaitReason = 'busy' | 'rate' | 'probing'
export type HoldReason = 'paused' | 'open'

export type GateDecision =
  | { readonly kind: 'go'; readonly permit: Permit }
  /** Transient: a slot, the rate window or the probe's result is expected soon. */
  | { readonly kind: 'wait'; readonly reason: WaitReason; readonly retryInMs: number }
  /** The route does not take deliveries until `untilMs` (or until resumed). */
  | { readonly kind: 'held'; readonly reason: HoldReason; readonly untilMs: number }

export type Transition = 'opened' | 'closed' | 'reopened'

export interface AttemptSummary {
  /** `aborted`: the attempt was cut off by shutdown and says nothing about the webhook. */
  readonly outcome: Outcome | 'aborted'
  readonly status?: number | undefined
  readonly error?: string | undefined
}

export interface GateObserver {
  /** The circuit changed in this process's call (once across replicas: the script decides). */
  transition?(route: Route, transition: Transition, at: number): void
  /** A job did not go now. */
  waited?(route: Route, reason: WaitReason | HoldReason): void
}

export interface GateOptions {
  readonly redis: RedisClient
  readonly state: RouteState
  readonly log: Logger
  /** WEBHOOK_TIMEOUT: the attempt deadline of routes without their own. */
  readonly defaultTimeoutMs: number
  readonly observer?: GateObserver
}

/**
 * KEYS[1] state, KEYS[2] slots, KEYS[3] rate window
 * ARGV[1] channel, ARGV[2] route id, ARGV[3] holder, ARGV[4] lease ms, ARGV[5] concurrency (0: none),
 * ARGV[6] rate max (0: none), ARGV[7] rate interval ms, ARGV[8] breaker on (1/0), ARGV[9] publish command
 * Returns {verdict, value, announcement}: go | probe | paused | open (value: openUntil) |
 * probing | rate (value: ms until the window has room) | busy.
 */
const ACQUIRE = defineScript(
  'route-acquire',
  `${LUA_HELPERS}
local t = now()
if redis.call('HGET', KEYS[1], 'paused') == '1' then return {'paused', '0', ''} end
local probe = false
if ARGV[8] == '1' then
  local circuit = redis.call('HGET', KEYS[1], 'circuit') or 'closed'
  if circuit == 'open' then
    local untilMs = tonumber(redis.call('HGET', KEYS[1], 'openUntil')) or 0
    if t < untilMs then return {'open', tostring(untilMs), ''} end
    probe = true
  elseif circuit == 'half-open' then
    local probeUntil = tonumber(redis.call('HGET', KEYS[1], 'probeUntil')) or 0
    if t < probeUntil then return {'probing', '0', ''} end
    probe = true
  end
end
local lease = tonumber(ARGV[4])
local concurrency = tonumber(ARGV[5])
local rateMax = tonumber(ARGV[6])
local per = tonumber(ARGV[7])
if rateMax > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', t - per)
  if redis.call('ZCARD', KEYS[3]) >= rateMax then
    local oldest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
    return {'rate', tostring(math.max(1, tonumber(oldest[2]) + per - t)), ''}
  end
end
if concurrency > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', t)
  if redis.call('ZCARD', KEYS[2]) >= concurrency then return {'busy', '0', ''} end
  redis.call('ZADD', KEYS[2], t + lease, ARGV[3])
  redis.call('PEXPIRE', KEYS[2], lease * 2)
end
if rateMax > 0 then
  redis.call('ZADD', KEYS[3], t, ARGV[3])
  redis.call('PEXPIRE', KEYS[3], per * 2)
end
if probe then
  redis.call('HSET', KEYS[1], 'circuit', 'half-open', 'probe', ARGV[3], 'probeUntil', t + lease)
  return {'probe', '0', announce(KEYS[1], ARGV[1], ARGV[2], ARGV[9])}
end
return {'go', '0', ''}
`,
)

/**
 * KEYS[1] state, KEYS[2] slots
 * ARGV[1] channel, ARGV[2] route id, ARGV[3] holder, ARGV[4] slot held (1/0), ARGV[5] ok | fail | none,
 * ARGV[6] breaker on (1/0), ARGV[7] failures, ARGV[8] window ms, ARGV[9] cool-down ms, ARGV[10] publish command
 * Returns {transition ('' | opened | closed | reopened), time, announcement}.
 *
 * ok (the webhook answered, 2xx or a refusal) resets the streak and closes a circuit that is not
 * closed; fail (a temporary failure) counts towards opening, the streak restarting when its first
 * failure is older than the window; a failed probe opens the circuit again for the cool-down.
 */
const RECORD = defineScript(
  'route-record',
  `${LUA_HELPERS}
local t = now()
if ARGV[4] == '1' then redis.call('ZREM', KEYS[2], ARGV[3]) end
local isProbe = ARGV[3] ~= '' and redis.call('HGET', KEYS[1], 'probe') == ARGV[3]
if ARGV[5] == 'none' or ARGV[6] ~= '1' then
  if isProbe then redis.call('HDEL', KEYS[1], 'probe', 'probeUntil') end
  return {'', tostring(t), ''}
end
local circuit = redis.call('HGET', KEYS[1], 'circuit') or 'closed'
local streak = tonumber(redis.call('HGET', KEYS[1], 'streak')) or 0
local coolDown = tonumber(ARGV[9])
if ARGV[5] == 'ok' then
  local changed = streak > 0
  local transition = ''
  redis.call('HDEL', KEYS[1], 'streak', 'streakStart')
  if circuit ~= 'closed' then
    redis.call('HSET', KEYS[1], 'circuit', 'closed', 'closedAt', t)
    redis.call('HDEL', KEYS[1], 'probe', 'probeUntil', 'openUntil')
    transition = 'closed'
    changed = true
  end
  if changed then return {transition, tostring(t), announce(KEYS[1], ARGV[1], ARGV[2], ARGV[10])} end
  return {'', tostring(t), ''}
end
if circuit == 'half-open' and isProbe then
  redis.call('HSET', KEYS[1], 'circuit', 'open', 'openUntil', t + coolDown, 'streak', streak + 1)
  redis.call('HDEL', KEYS[1], 'probe', 'probeUntil')
  return {'reopened', tostring(t), announce(KEYS[1], ARGV[1], ARGV[2], ARGV[10])}
end
if circuit ~= 'closed' then return {'', tostring(t), ''} end
local start = tonumber(redis.call('HGET', KEYS[1], 'streakStart')) or 0
local before = streak
if streak == 0 or t - start > tonumber(ARGV[8]) then
  streak = 1
  start = t
else
  streak = streak + 1
end
redis.call('HSET', KEYS[1], 'streak', streak, 'streakStart', start)
if streak >= tonumber(ARGV[7]) then
  redis.call('HSET', KEYS[1], 'circuit', 'open', 'openedAt', t, 'openUntil', t + coolDown)
  redis.call('HDEL', KEYS[1], 'closedAt')
  return {'opened', tostring(t), announce(KEYS[1], ARGV[1], ARGV[2], ARGV[10])}
end
if before == 0 then return {'', tostring(t), announce(KEYS[1], ARGV[1], ARGV[2], ARGV[10])} end
return {'', tostring(t), ''}
`,
)

/**
 * KEYS[1] state, KEYS[2] stats
 * ARGV[1] time of the newest attempt, ARGV[2] its status, ARGV[3] its error; then triples of
 * minute, attempts, delivered. Buckets are a ring of 60 fields (minute mod 60).
 */
const STATS = defineScript(
  'route-stats',
  `
if tonumber(ARGV[1]) > (tonumber(redis.call('HGET', KEYS[1], 'lastAt')) or 0) then
  redis.call('HSET', KEYS[1], 'lastAt', ARGV[1], 'lastStatus', ARGV[2], 'lastError', ARGV[3])
end
for i = 4, #ARGV, 3 do
  local m = tonumber(ARGV[i])
  local field = tostring(m % 60)
  local a = tonumber(ARGV[i + 1])
  local d = tonumber(ARGV[i + 2])
  local current = redis.call('HGET', KEYS[2], field)
  if current then
    local cm, ca, cd = string.match(current, '^(%d+):(%d+):(%d+)$')
    if tonumber(cm) == m then
      a = a + tonumber(ca)
      d = d + tonumber(cd)
    elseif tonumber(cm) > m then
      a = -1
    end
  end
  if a >= 0 then redis.call('HSET', KEYS[2], field, string.format('%d:%d:%d', m, a, d)) end
end
redis.call('PEXPIRE', KEYS[2], 7200000)
return 1
`,
)

interface PendingStats {
  /** minute → [attempts, delivered] */
  readonly buckets: Map<number, [number, number]>
  last: { at: number; status: string; error: string }
}

export class DeliveryGate {
  private readonly redis: RedisClient
  private readonly state: RouteState
  private readonly log: Logger
  private readonly defaultTimeoutMs: number
  private readonly observer: GateObserver
  private readonly pending = new Map<string, PendingStats>()
  private readonly timer: NodeJS.Timeout
  private flushing: Promise<void> | undefined

  constructor(options: GateOptions) {
    this.redis = options.redis
    this.state = options.state
    this.log = options.log
    this.defaultTimeoutMs = options.defaultTimeoutMs
    this.observer = options.observer ?? {}
    this.timer = setInterval(() => void this.flush(), STATS_FLUSH_MS)
    this.timer.unref()
  }

  /** Before an attempt: may it go now? */
  async before(route: Route, jobId: string, now = Date.now()): Promise<GateDecision> {
    const c = this.state.get(route.id)
    if (c.paused) return { kind: 'held', reason: 'paused', untilMs: now + PAUSE_HOLD_MS }
    const breaker = route.circuitBreaker !== null
    if (breaker && c.circuit === 'open' && now < c.openUntil) return { kind: 'held', reason: 'open', untilMs: c.openUntil }
    const limited = route.concurrency !== undefined || route.rateLimit !== undefined
    if (!limited && !(breaker && c.circuit !== 'closed')) return { kind: 'go', permit: { holder: '', slot: false, probe: false } }
    const holder = holderId(jobId)
    const keys = this.state.keys(route.id)
    const lease = (route.timeoutMs ?? this.defaultTimeoutMs) + LEASE_GRACE_MS
    const [verdict, value, message] = await runScript<[string, string, string]>(
      this.redis,
      ACQUIRE,
      [keys.state, keys.slots, keys.rate],
      [
        keys.changed,
        route.id,
        holder,
        lease,
        route.concurrency ?? 0,
        route.rateLimit?.max ?? 0,
        route.rateLimit?.perMs ?? 0,
        breaker ? '1' : '0',
        this.state.publishCommand,
      ],
    )
    if (message) this.state.applyAnnouncement(message)
    const slot = route.concurrency !== undefined
    switch (verdict) {
      case 'go':
        return { kind: 'go', permit: { holder, slot, probe: false } }
      case 'probe':
        this.log.info({ route: route.id }, 'circuit half-open: this delivery probes the webhook')
        return { kind: 'go', permit: { holder, slot, probe: true } }
      case 'paused':
        return { kind: 'held', reason: 'paused', untilMs: now + PAUSE_HOLD_MS }
      case 'open':
        return { kind: 'held', reason: 'open', untilMs: Number(value) }
      case 'rate':
        return { kind: 'wait', reason: 'rate', retryInMs: Number(value) }
      case 'probing':
        return { kind: 'wait', reason: 'probing', retryInMs: 0 }
      default:
        return { kind: 'wait', reason: 'busy', retryInMs: 0 }
    }
  }

  /**
   * After an attempt (or with `result` null when none was made after all): releases the slot,
   * feeds the breaker, and notes the statistics. Never throws: a failed write is logged, and a
   * slot it could not release expires with its lease.
   */
  async after(route: Route, permit: Permit, result: AttemptSummary | null): Promise<void> {
    if (result !== null && result.outcome !== 'aborted') this.note(route.id, result)
    const breaker = route.circuitBreaker
    const verdict = result === null || result.outcome === 'aborted' ? 'none' : result.outcome === 'temporary' ? 'fail' : 'ok'
    const c = this.state.get(route.id)
    const needed = permit.slot || permit.probe || (breaker !== null && verdict !== 'none' && (verdict === 'fail' || c.failing || c.circuit !== 'closed'))
    if (!needed) return
    const keys = this.state.keys(route.id)
    try {
      const [transition, at, message] = await runScript<[string, string, string]>(
        this.redis,
        RECORD,
        [keys.state, keys.slots],
        [
          keys.changed,
          route.id,
          permit.holder,
          permit.slot ? '1' : '0',
          verdict,
          breaker ? '1' : '0',
          breaker?.failures ?? 0,
          breaker?.windowMs ?? 0,
          breaker?.coolDownMs ?? 0,
          this.state.publishCommand,
        ],
      )
      if (message) this.state.applyAnnouncement(message)
      if (transition === 'opened' || transition === 'closed' || transition === 'reopened') {
        const level = transition === 'closed' ? 'info' : 'warn'
        this.log[level]({ route: route.id, transition }, `circuit ${transition}`)
        this.observer.transition?.(route, transition, Number(at))
      }
    } catch (err) {
      this.log.warn({ err, route: route.id }, 'could not record the attempt for the route limits and breaker')
    }
  }

  /**
   * A job that may not go now. Defer mode: wait (moved to the delayed set, no attempt spent) while
   * there is time before the reply deadline, else answer 451 and end. Other modes: wait for a slot
   * or the window; held by a pause or an open circuit, answer `250 queued` to a session still
   * waiting and stay delayed until released. Throws DelayedError when the job waits.
   */
  async hold(
    job: DeliveryJob,
    token: string | undefined,
    route: Route,
    decision: Exclude<GateDecision, { kind: 'go' }>,
    publish: (reply: Reply) => Promise<void>,
    now = Date.now(),
  ): Promise<DeliveryJobReturn> {
    const d = job.data
    this.observer.waited?.(route, decision.reason)
    if (d.mode === 'defer') {
      if (decision.kind === 'held') {
        await publish(decision.reason === 'paused' ? pausedReply(d.rcpt) : circuitOpenReply(d.rcpt))
        return { outcome: 'temporary' }
      }
      const deadline = d.replyBy - DEFER_MARGIN_MS
      if (now < deadline) {
        await job.moveToDelayed(Math.min(deadline, now + this.waitDelay(job, decision, now)), token)
        throw new DelayedError()
      }
      await publish(decision.reason === 'probing' ? circuitOpenReply(d.rcpt) : busyReply(d.rcpt))
      return { outcome: 'temporary' }
    }
    if (decision.kind === 'wait' && decision.reason !== 'probing') {
      await job.moveToDelayed(now + this.waitDelay(job, decision, now), token)
      throw new DelayedError()
    }
    const until = decision.kind === 'held' ? decision.untilMs : now + Math.min(route.circuitBreaker?.coolDownMs ?? DEFAULT_COOL_DOWN_MS, PAUSE_HOLD_MS)
    // Spread the wake-ups of jobs held together, so they do not all come back in one instant.
    const wake = Math.max(now, until) + Math.round(Math.random() * Math.min(1000, Math.max(50, (until - now) / 10)))
    if (job.attemptsMade === 0 && now <= d.replyBy) await publish(queuedReply(d.rcpt))
    await this.state.noteHeld(route.id, job.id!, wake)
    await job.moveToDelayed(wake, token)
    throw new DelayedError()
  }

  /** Writes the pending statistics now (also called every second and at close). */
  flush(): Promise<void> {
    if (this.flushing) return this.flushing
    const batch = [...this.pending]
    this.pending.clear()
    if (batch.length === 0) return Promise.resolve()
    this.flushing = Promise.all(
      batch.map(async ([id, p]) => {
        const keys = this.state.keys(id)
        const args: (string | number)[] = [p.last.at, p.last.status, p.last.error]
        for (const [minute, [a, d]] of p.buckets) args.push(minute, a, d)
        await runScript(this.redis, STATS, [keys.state, keys.stats], args)
      }),
    )
      .then(() => undefined)
      .catch((err: unknown) => this.log.warn({ err }, 'could not write route statistics'))
      .finally(() => {
        this.flushing = undefined
      })
    return this.flushing
  }

  async close(): Promise<void> {
    clearInterval(this.timer)
    await this.flushing
    await this.flush()
  }

  private note(routeId: string, result: AttemptSummary, now = Date.now()): void {
    let p = this.pending.get(routeId)
    if (!p) this.pending.set(routeId, (p = { buckets: new Map(), last: { at: 0, status: '', error: '' } }))
    const minute = Math.floor(now / 60_000)
    const bucket = p.buckets.get(minute) ?? [0, 0]
    bucket[0]++
    if (result.outcome === 'delivered') bucket[1]++
    p.buckets.set(minute, bucket)
    if (now >= p.last.at) p.last = { at: now, status: result.status === undefined ? '' : String(result.status), error: result.error ?? '' }
  }

  /** How long a job waits before it asks again: the rate window's own answer, else a short back-off that grows with the wait. */
  private waitDelay(job: DeliveryJob, decision: { reason: WaitReason; retryInMs: number }, now: number): number {
    if (decision.reason === 'rate' && decision.retryInMs > 0) return decision.retryInMs + Math.round(Math.random() * 20)
    const waited = Math.max(0, now - job.timestamp)
    const base = Math.min(2000, Math.max(20, waited / 4))
    return Math.round(base * (0.8 + Math.random() * 0.4))
  }
}

const DEFAULT_COOL_DOWN_MS = 30_000
