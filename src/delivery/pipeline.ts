/**
 * The LMTP handler of the product: the seed's three callbacks, each turned into HTTP through the
 * queue. RCPT looks the route up in memory (no Redis round trip); the end of the data stores the
 * message once, adds one job per recipient in one round trip, and waits for each first attempt
 * through the result channel up to the reply timeout.
 */
import { createHash, randomBytes } from 'node:crypto'
import type { Readable } from 'node:stream'
import type { Logger } from 'pino'
import type { Envelope, LmtpHandler, RecipientVerdict, Sender, SessionInfo, Verdict, XForward } from '../lmtp/types.js'
import { reply, type Reply } from '../lmtp/reply.js'
import type { Route } from '../routing/schema.js'
import { deriveWebhookId, parseSecret, webhookHeaders } from './signing.js'
import { jobId, jobOptions, type DeliveryJobData, type DeliveryQueues } from './queue.js'
import type { ResultChannel, DeliveryResult } from './results.js'
import { waitDurable, type Durability } from './durability.js'
import { writeSession, type RedisClient } from '../redis/connections.js'
import { messageParts, routeSecretKeys, type StoredEnvelope } from './request.js'
import { envelopeInfo } from './payload.js'
import type { WebhookClient } from './http.js'
import { decideReply, queuedReply } from './outcome.js'

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
}

export interface RouteLookup {
  lookup(address: string): Route | undefined
  /** The RCPT-time refusal of a route that takes no mail now (paused, circuit open), from memory. */
  refusal?(route: Route, rcpt: string): Reply | undefined
}

export interface PipelineObserver {
  recipientReply?(reply: Reply, mode: Route['mode'], timedOut: boolean): void
}

/** WAITAOF's and WAIT's own deadline; it stays under the connection's command timeout. */
const DURABLE_WAIT_MS = 4_000

export const deferReply = (): Reply => reply(451, '4.3.0', 'Delivery not confirmed in time, try again later')
export const noRouteReply = (rcpt: string): Reply => reply(550, '5.1.1', `<${rcpt}>: no such recipient here`)

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

export class DeliveryPipeline implements LmtpHandler {
  constructor(
    private readonly routes: RouteLookup,
    private readonly queues: DeliveryQueues,
    /** The connection the transaction and its jobs are written on (WAITAOF/WAIT go there). */
    private readonly redis: RedisClient,
    private readonly channel: ResultChannel,
    private readonly client: WebhookClient,
    private readonly durability: Durability,
    private readonly options: PipelineOptions,
    private readonly log: Logger,
    private readonly observer: PipelineObserver = {},
  ) {}

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
    const routes = envelope.recipients.map((r) => r.context as Route)
    const stored: StoredEnvelope = {
      ...envelopeInfo(envelope),
      size: raw.length,
      receivedAt: new Date(envelope.startedAt).toISOString(),
      sha256,
    }
    const anyAccept = routes.some((r) => r.mode === 'accept')
    const parts = await messageParts(raw, routes, sha256)
    // Defer-only transactions are removed once answered; the TTL is the safety net.
    const ttl = anyAccept ? this.options.messageTtlMs : Math.max(this.options.replyTimeoutMs * 4, 300_000)
    const replyBy = started + this.options.replyTimeoutMs
    const webhookIds = envelope.recipients.map((r, i) => deriveWebhookId(sha256, r.address.toLowerCase(), routes[i]!.id))
    const ids = webhookIds.map((id, i) => jobId(id, envelope.id, routes[i]!.mode))
    const unique = new Map<string, number>()
    ids.forEach((id, i) => unique.has(id) || unique.set(id, i))
    const uniqueIds = [...unique.keys()]
    const wait = this.channel.expect(uniqueIds)
    const jobs = [...unique.values()].map((i) => {
      const route = routes[i]!
      const data: DeliveryJobData = {
        webhookId: webhookIds[i]!,
        txn: envelope.id,
        rcpt: envelope.recipients[i]!.address,
        route: route.id,
        mode: route.mode,
        replyTo: this.channel.address,
        replyBy,
      }
      return { name: route.id, data, opts: jobOptions(ids[i]!, route) }
    })
    // Issued back to back on one connection, without waiting for replies in between: one network
    // round trip and, with the connection's write coalescing, one write; Redis has stored the
    // transaction before its jobs exist. (`addBulk` would build an ioredis pipeline, which copies
    // BullMQ's 64 scripts: dearer than the writes it saves.)
    let waited = false
    const session = writeSession(this.redis, shard.keys.slot) // what WAITAOF/WAIT must still be talking to
    try {
      await Promise.all([store.save(envelope.id, raw, stored, parts, ttl), ...jobs.map((j) => shard.queue.add(j.name, j.data, j.opts))])
      // Accept mode may only say 250 once the jobs are on disk. If that cannot be confirmed, its
      // recipients get 451 below; the defer-mode recipients of the same transaction still get
      // their webhooks' answers (their jobs are queued and will run).
      let durable = true
      if (anyAccept && !(this.options.allowAcceptWithoutAof && !this.durability.durable)) {
        const timeoutMs = Math.min(DURABLE_WAIT_MS, Math.max(100, replyBy - Date.now()))
        durable = await waitDurable(session, this.durability, timeoutMs, this.options.minReplicasAck).then(
          () => true,
          (err: unknown) => {
            this.log.error({ err, txn: envelope.id }, 'accept-mode jobs could not be made durable')
            return false
          },
        )
      }
      const results = await wait(Math.max(0, replyBy - Date.now()))
      waited = true
      const byId = new Map<string, DeliveryResult | null>(uniqueIds.map((id, k) => [id, results[k] ?? null]))
      const replies = envelope.recipients.map((r, i) => {
        const result = byId.get(ids[i]!) ?? null
        const mode = routes[i]!.mode
        let out: Reply
        if (mode === 'accept' && !durable && (result === null || result.outcome === 'temporary')) out = deferReply()
        else if (result === null) out = mode === 'accept' ? queuedReply(r.address) : deferReply()
        else if (result.outcome === 'temporary' && mode === 'accept') out = queuedReply(r.address)
        else out = result.reply
        this.observer.recipientReply?.(out, mode, result === null)
        return out
      })
      if (!anyAccept && results.every((r) => r !== null)) {
        store.remove(envelope.id).catch((err: unknown) => this.log.warn({ err, txn: envelope.id }, 'could not remove an answered transaction'))
      }
      return replies
    } finally {
      if (!waited) void wait(0) // releases the waiters
      store.forget(envelope.id)
    }
  }
}
