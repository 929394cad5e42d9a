/**
 * The LMTP handler of the product: the seed's three callbacks, each turned into HTTP through the
 * queue. RCPT looks the route up in memory (no Redis round trip). The end of the data adds one
 * BullMQ job per recipient, all in one script call (guards.ts), and stores the message once when a
 * worker may need it. In a process that also works the queue, the session then makes each
 * recipient's first attempt itself (local.ts) while its job waits as a guard; a listener-only
 * process leaves the attempt to the workers and hears its result on the result channel. Either
 * way each recipient's reply comes from one decision (`recipientOutcome`, outcome.ts).
 */
import { createHash, randomBytes } from 'node:crypto'
import type { Readable } from 'node:stream'
import type { Logger } from 'pino'
import type { Envelope, LmtpHandler, RecipientVerdict, Sender, SessionInfo, Verdict, XForward } from '../lmtp/types.js'
import { reply, type Reply } from '../lmtp/reply.js'
import type { Route } from '../routing/schema.js'
import { deriveWebhookId, parseSecret, webhookHeaders } from './signing.js'
import { backoffDelay, jobId, jobOptions, type DeliveryJobData, type DeliveryQueues, type DeliveryShard } from './queue.js'
import type { ResultChannel } from './results.js'
import { waitDurable, type Durability } from './durability.js'
import { writeSession, type RedisClient } from '../redis/connections.js'
import { extraFields, messageParts, requiredFields, routeSecretKeys, type StoredEnvelope } from './request.js'
import { envelopeInfo, isUnparsedJson } from './payload.js'
import { storedSummary, type StoredSummary } from './summary.js'
import type { WebhookClient } from './http.js'
import { decideReply, keepsMail, notConfirmedReply, recipientOutcome, type FirstAttempt } from './outcome.js'
import { GUARD_LEASE_MS, GuardJobs, type GuardEntry, type GuardState } from './guards.js'
import type { LocalAttempts, LocalResult } from './local.js'
import { failureReason } from './worker.js'

export interface PipelineOptions {
  readonly replyTimeoutMs: number
  readonly messageTtlMs: number
  readonly senderCheckUrl: string | null
  /** Signs the sender check like a delivery (SENDER_CHECK_SECRET); absent or null: unsigned. */
  readonly senderCheckSecret?: string | null
  readonly checkTimeoutMs: number
  readonly allowAcceptWithoutAof: boolean
  /** Replicas that must acknowledge accept-mode writes before a 250 (REDIS_MIN_REPLICAS_ACK). */
  readonly minReplicasAck: number
  /** WEBHOOK_TIMEOUT: the attempt deadline of routes without their own. */
  readonly webhookTimeoutMs: number
}

export interface RouteLookup {
  lookup(address: string): Route | undefined
  /** The RCPT-time refusal of a route that takes no mail now (paused, circuit open), from memory. */
  refusal?(route: Route, rcpt: string): Reply | undefined
}

export interface PipelineObserver {
  recipientReply?(reply: Reply, mode: Route['mode'], timedOut: boolean): void
}

export interface PipelineDeps {
  readonly routes: RouteLookup
  readonly queues: DeliveryQueues
  /** The connection the transaction and its jobs are written on (WAITAOF/WAIT go there). */
  readonly redis: RedisClient
  readonly channel: ResultChannel
  readonly client: WebhookClient
  readonly durability: Durability
  readonly options: PipelineOptions
  readonly log: Logger
  readonly observer?: PipelineObserver | undefined
  /** First attempts made here; null in a listener-only process. */
  readonly local: LocalAttempts | null
}

/** WAITAOF's and WAIT's own deadline; it stays under the connection's command timeout. */
const DURABLE_WAIT_MS = 4_000

export const deferReply = notConfirmedReply
export const noRouteReply = (rcpt: string): Reply => reply(550, '5.1.1', `<${rcpt}>: no such recipient here`)
const alreadyDelivered = (rcpt: string): FirstAttempt => ({ reply: reply(250, '2.0.0', `<${rcpt}> already delivered`), outcome: 'delivered' })

/** The `webhook-id` of one sender or recipient check: new for every call (a check is not retried). */
const checkId = (): string => `chk_${randomBytes(16).toString('base64url')}`

async function collect(message: Readable): Promise<Buffer> {
  const parts: Buffer[] = []
  let size = 0
  for await (const chunk of message) {
    parts.push(chunk as Buffer)
    size += (chunk as Buffer).length
  }
  return Buffer.concat(parts, size)
}

/** One distinct delivery of a transaction (a recipient given twice is one delivery). */
interface Planned {
  readonly id: string
  readonly route: Route
  readonly data: DeliveryJobData
  readonly entry: GuardEntry
}

export class DeliveryPipeline implements LmtpHandler {
  private readonly routes: RouteLookup
  private readonly queues: DeliveryQueues
  private readonly redis: RedisClient
  private readonly channel: ResultChannel
  private readonly client: WebhookClient
  private readonly durability: Durability
  private readonly options: PipelineOptions
  private readonly log: Logger
  private readonly observer: PipelineObserver
  private readonly local: LocalAttempts | null
  private readonly guards = new Map<DeliveryShard, GuardJobs>()

  constructor(deps: PipelineDeps) {
    this.routes = deps.routes
    this.queues = deps.queues
    this.redis = deps.redis
    this.channel = deps.channel
    this.client = deps.client
    this.durability = deps.durability
    this.options = deps.options
    this.log = deps.log
    this.observer = deps.observer ?? {}
    this.local = deps.local
  }

  async sender(sender: Sender, session: SessionInfo, xforward: Readonly<XForward>): Promise<Verdict> {
    const url = this.options.senderCheckUrl
    if (url === null) return undefined
    const body = JSON.stringify({ type: 'sender-check', mailFrom: sender.address, lhlo: session.lhlo, clientAddress: session.remoteAddress, xforward })
    const secret = this.options.senderCheckSecret ?? null
    const keys = secret === null ? [] : [parseSecret(secret, 'SENDER_CHECK_SECRET')]
    const result = await this.client.attempt({
      url,
      headers: { 'content-type': 'application/json', ...webhookHeaders(keys, checkId(), body) },
      body,
      deadlineMs: this.options.checkTimeoutMs,
    })
    const decision = decideReply(result, undefined, sender.address === '' ? '<>' : sender.address)
    if (decision.outcome === 'delivered') return undefined
    if (decision.outcome === 'temporary') return reply(451, '4.3.0', 'Sender check unavailable, try again later')
    return decision.reply.code === 550 && decision.reply.enhanced === '5.1.1' ? reply(550, '5.1.8', 'Sender address rejected') : decision.reply
  }

  recipient(rcpt: { address: string; domain: string }): RecipientVerdict | Promise<RecipientVerdict> {
    const route = this.routes.lookup(rcpt.address)
    if (!route) return { reply: noRouteReply(rcpt.address) }
    const refused = this.routes.refusal?.(route, rcpt.address)
    if (refused) return { reply: refused }
    if (route.recipientCheckUrl === undefined) return { context: route }
    return this.checkRecipient(rcpt.address, route)
  }

  private async checkRecipient(address: string, route: Route): Promise<RecipientVerdict> {
    const body = JSON.stringify({ type: 'recipient-check', rcptTo: address, route: route.id })
    const result = await this.client.attempt({
      url: route.recipientCheckUrl!,
      // signed with the route's secrets, as its deliveries are
      headers: { ...route.headers, 'content-type': 'application/json', ...webhookHeaders(routeSecretKeys(route), checkId(), body) },
      body,
      deadlineMs: this.options.checkTimeoutMs,
    })
    const decision = decideReply(result, route, address)
    if (decision.outcome === 'delivered') return { context: route }
    if (decision.outcome === 'temporary') return { reply: reply(451, '4.3.0', 'Recipient check unavailable, try again later') }
    return { reply: decision.reply }
  }

  async data(envelope: Envelope, message: Readable): Promise<readonly Reply[]> {
    const raw = await collect(message)
    const started = Date.now()
    const sha256 = createHash('sha256').update(raw).digest('hex')
    // All of a transaction's jobs go to one shard, the same for every resend of the message.
    const shard = this.queues.shardFor(sha256)
    const store = shard.store
    const guards = this.guardsOf(shard)
    const routes = envelope.recipients.map((r) => r.context as Route)
    const stored: StoredEnvelope = {
      ...envelopeInfo(envelope),
      size: raw.length,
      receivedAt: new Date(envelope.startedAt).toISOString(),
      sha256,
    }
    const keeps = routes.some((r) => keepsMail(r.mode))
    const replyBy = started + this.options.replyTimeoutMs
    const webhookIds = envelope.recipients.map((r, i) => deriveWebhookId(sha256, r.address.toLowerCase(), routes[i]!.id))
    const ids = webhookIds.map((id, i) => jobId(id, envelope.id, routes[i]!.mode))
    const unique = new Map<string, number>()
    ids.forEach((id, i) => unique.has(id) || unique.set(id, i))
    // First attempts are made in this process when it also works the queue (every recipient alike).
    const here = this.local !== null
    const planned: Planned[] = [...unique.values()].map((i) => {
      const route = routes[i]!
      const data: DeliveryJobData = {
        webhookId: webhookIds[i]!,
        txn: envelope.id,
        rcpt: envelope.recipients[i]!.address,
        route: route.id,
        mode: route.mode,
        replyTo: this.channel.address,
        replyBy,
        ...(here ? { guard: true } : {}),
      }
      const entry: GuardEntry = {
        id: ids[i]!,
        name: route.id,
        data,
        opts: jobOptions(ids[i]!, route),
        delayMs: here ? GUARD_LEASE_MS : 0,
        leased: here,
        checkLog: keepsMail(route.mode),
      }
      return { id: ids[i]!, route, data, entry }
    })
    // A worker needs the message in Redis unless every first attempt is made here in defer mode
    // (a defer-mode guard that falls due is skipped: its session has answered).
    const inRedis = keeps || !here
    // With nothing to store, the jobs need nothing of the parse: they go out first, and their round
    // trip overlaps the parse instead of following it.
    let added: Promise<GuardState[]> | undefined
    if (!inRedis) {
      added = guards.add(planned.map((p) => p.entry))
      added.catch(() => {}) // awaited below; this only keeps it from counting as unhandled meanwhile
    }
    const parts = await messageParts(raw, routes, sha256)
    if ([...parts.values()].some(isUnparsedJson)) {
      this.log.warn({ txn: envelope.id, size: raw.length }, 'the message could not be parsed: delivered with its raw form and message.parseError')
    }
    const viaWorker = here ? [] : planned.filter((p) => p.route.mode !== 'async')
    // (an async recipient's first attempt is never waited for, wherever it is made)
    const heard = this.channel.expect(viaWorker.map((p) => p.id))
    let listened = false
    const session = writeSession(this.redis, shard.keys.slot) // what WAITAOF/WAIT must still be talking to
    try {
      // Issued back to back on one connection, without waiting in between: one round trip, and
      // Redis has stored the transaction before its jobs exist.
      const ttl = keeps ? this.options.messageTtlMs : Math.max(this.options.replyTimeoutMs * 4, 300_000)
      const saved = inRedis ? store.save(envelope.id, raw, stored, parts, ttl) : (store.keep(envelope.id, raw, stored, parts), undefined)
      // A first attempt the gate hands over to the workers (any replica) needs the message in Redis.
      let inRedisNow = saved
      const ensureStored = (): Promise<void> => (inRedisNow ??= store.save(envelope.id, raw, stored, parts, ttl))
      added ??= guards.add(planned.map((p) => p.entry))
      // Accept and async may only say 250 once the jobs are on disk (and on the replicas asked
      // for); WAITAOF/WAIT follow the writes on their connection and cover them. Unconfirmed,
      // their recipients get 451; defer-mode recipients of the same transaction are not affected.
      let durable: Promise<boolean> = Promise.resolve(true)
      if (keeps && !(this.options.allowAcceptWithoutAof && !this.durability.durable)) {
        const timeoutMs = Math.min(DURABLE_WAIT_MS, Math.max(100, replyBy - Date.now()))
        durable = waitDurable(session, this.durability, timeoutMs, this.options.minReplicasAck).then(
          () => true,
          (err: unknown) => {
            this.log.error({ err, txn: envelope.id }, 'accept-mode jobs could not be made durable')
            return false
          },
        )
      }
      // Durability is confirmed while the first attempts run.
      const [, states] = await Promise.all([saved, added])
      const fieldsOf = (route: Route): (Buffer | null)[] => {
        const fields = store.fieldsNow(envelope.id, requiredFields(route))
        // A message the parser gave up on is always sent with its raw form.
        return [...fields, ...store.fieldsNow(envelope.id, extraFields(route, fields))]
      }
      // What the delivery log shows of the message (sender, Message-ID): once for all its recipients.
      const summary: StoredSummary = storedSummary(planned[0]!.route, fieldsOf(planned[0]!.route))
      const revived = await Promise.all(planned.map((p, k) => (states[k] === 'dead' ? this.revive(guards, p) : states[k]!)))
      // Only new jobs have a first attempt to wait for: a resend of one already queued is answered
      // at once. (Registered again before the first registration goes, so no result can slip by.)
      const waited = viaWorker.filter((p) => revived[planned.indexOf(p)] === 'new')
      const heardNew = this.channel.expect(waited.map((p) => p.id))
      void heard(0)
      listened = true
      const firsts = await this.untilDeadline(
        replyBy,
        planned.map(async (p, k) => {
          const state: GuardState = revived[k]!
          if (state === 'delivered') return alreadyDelivered(p.data.rcpt)
          // Still queued or retrying (an MTA's resend of mail queued here): answered at once.
          if (state === 'pending') return null
          if (!here) return null // heard on the result channel below (async: not waited for)
          const attempt = this.attemptHere(guards, p, fieldsOf(p.route), replyBy, ensureStored, summary)
          if (p.route.mode !== 'async') return attempt
          // async: the attempt starts now and the reply does not wait for it
          attempt.catch((err: unknown) => this.log.warn({ err, job: p.id }, 'an async first attempt failed; its job is retried'))
          return null
        }),
      )
      const results = await heardNew(waited.length === 0 ? 0 : Math.max(0, replyBy - Date.now()))
      const byId = new Map<string, FirstAttempt | null>()
      planned.forEach((p, k) => byId.set(p.id, firsts[k] ?? null))
      waited.forEach((p, k) => {
        const r = results[k]
        if (r) byId.set(p.id, { reply: r.reply, outcome: r.outcome })
      })
      const isDurable = await durable
      // A first attempt was waited for and did not settle in time (not: a resend of a job already queued).
      const expected = new Set(planned.filter((p, k) => revived[k] === 'new' && p.route.mode !== 'async').map((p) => p.id))
      const replies = envelope.recipients.map((r, i) => {
        const first = byId.get(ids[i]!) ?? null
        const mode = routes[i]!.mode
        const out = recipientOutcome(mode, isDurable, first, r.address)
        this.observe(out, mode, first === null && expected.has(ids[i]!))
        return out
      })
      if (inRedisNow !== undefined && !keeps && results.every((r) => r !== null) && firsts.every((f) => f !== null)) {
        store.remove(envelope.id).catch((err: unknown) => this.log.warn({ err, txn: envelope.id }, 'could not remove an answered transaction'))
      }
      return replies
    } finally {
      if (!listened) void heard(0) // releases the waiters
      store.forget(envelope.id)
    }
  }

  /** Stops renewing the guards of attempts still running (shutdown): they fall due for the workers. */
  close(): void {
    for (const g of this.guards.values()) g.close()
  }

  private guardsOf(shard: DeliveryShard): GuardJobs {
    let g = this.guards.get(shard)
    if (!g) {
      g = new GuardJobs(this.redis, shard, (err) => this.log.warn({ err, shard: shard.label }, 'could not remove answered guard jobs'))
      this.guards.set(shard, g)
    }
    return g
  }

  /** Each promise's value, or null for one not settled by `deadline` (it goes on, unwaited). */
  private async untilDeadline<T>(deadline: number, promises: Promise<T | null>[]): Promise<(T | null)[]> {
    const values: (T | null)[] = promises.map(() => null)
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, Math.max(0, deadline - Date.now()))))
    const all = Promise.all(
      promises.map((p, k) =>
        p.then(
          (v) => void (values[k] = v),
          (err: unknown) => this.log.warn({ err }, 'a first attempt failed'),
        ),
      ),
    )
    await Promise.race([all, timeout])
    clearTimeout(timer)
    return [...values]
  }

  /** A resend of mail whose job is a dead letter: the dead letter goes, the delivery starts anew. */
  private async revive(guards: GuardJobs, p: Planned): Promise<GuardState> {
    this.log.info({ job: p.id, route: p.route.id }, 'the MTA sent a dead-lettered message again: delivering it anew')
    await guards.removeNow(p.id)
    return (await guards.add([p.entry]))[0]!
  }

  /** The first attempt, here; then the guard is removed, rescheduled, dead-lettered or handed over. */
  private async attemptHere(
    guards: GuardJobs,
    p: Planned,
    fields: (Buffer | null)[],
    replyBy: number,
    ensureStored: () => Promise<void>,
    summary: StoredSummary,
  ): Promise<FirstAttempt | null> {
    const mode = p.route.mode
    const result = await this.local!.run({
      shard: guards.shard,
      route: p.route,
      fields,
      jobId: p.id,
      txn: p.data.txn,
      rcpt: p.data.rcpt,
      webhookId: p.data.webhookId,
      last: mode === 'defer' || p.route.retry.attempts <= 1,
      slotBy: replyBy,
      summary,
    })
    if (result.kind === 'gated') {
      await ensureStored()
      return this.handOver(guards, p, replyBy)
    }
    void this.settle(guards, p, result).catch((err: unknown) =>
      this.log.warn({ err, job: p.id }, 'could not settle the guard job; a worker takes it when it falls due'),
    )
    return result.kind === 'attempted' ? { reply: result.decision.reply, outcome: result.decision.outcome } : null
  }

  /**
   * The gate does not let the attempt go now (limits, pause, open circuit): the job goes to the
   * workers at once, which wait or hold it as they do every job; its first result comes back on
   * the result channel.
   */
  private async handOver(guards: GuardJobs, p: Planned, replyBy: number): Promise<FirstAttempt | null> {
    const heard = this.channel.expect([p.id])
    try {
      await guards.promote(p.id, p.entry)
    } catch (err) {
      void heard(0)
      throw err
    }
    const [r] = await heard(Math.max(0, replyBy - Date.now()))
    return r ? { reply: r.reply, outcome: r.outcome } : null
  }

  private async settle(guards: GuardJobs, p: Planned, result: Exclude<LocalResult, { kind: 'gated' }>): Promise<void> {
    const { entry } = p
    if (p.route.mode === 'defer') return guards.remove(p.id)
    if (result.kind === 'none') return guards.promote(p.id, entry) // no slot in time: a worker makes the attempt
    const { decision, result: attempt } = result
    if (decision.outcome === 'delivered') return guards.remove(p.id)
    const data = { ...p.data, made: 1 }
    if (decision.outcome === 'rejected') return guards.deadLetter(p.id, entry, { ...data, deadLetter: `webhook rejected with ${attempt.status}` })
    const reason = failureReason(attempt.status, attempt.error?.code)
    if (p.route.retry.attempts <= 1) return guards.deadLetter(p.id, entry, { ...data, deadLetter: `${reason} (attempt 1 of 1)` })
    const delayMs = backoffDelay(1, p.route.retry.backoffMs, p.route.retry.maxDelayMs, attempt.retryAfterMs)
    return guards.reschedule(p.id, entry, data, delayMs)
  }

  private observe(out: Reply, mode: Route['mode'], timedOut: boolean): void {
    try {
      this.observer.recipientReply?.(out, mode, timedOut)
    } catch (err) {
      this.log.warn({ err }, 'a reply observer failed')
    }
  }
}
