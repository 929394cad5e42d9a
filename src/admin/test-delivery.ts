/**
 * A synthetic delivery to a route's webhook, sent now: a small generated message, stored nowhere,
 * built and signed by the same request builder and sent by the same WebhookClient (destination
 * guard included) as real deliveries, and mapped to the reply a real recipient would get.
 */
import { createHash, randomBytes } from 'node:crypto'
import type { Route } from '../routing/schema.js'
import type { WebhookClient } from '../delivery/http.js'
import { buildRequest, messageParts, requiredFields, type StoredEnvelope } from '../delivery/request.js'
import { decideReply, recipientOutcome, type Outcome } from '../delivery/outcome.js'
import type { Reply } from '../lmtp/reply.js'

export interface TestReply {
  readonly code: number
  readonly enhanced: string | null
  readonly text: string
}

const view = (r: Reply): TestReply => ({ code: r.code, enhanced: r.enhanced ?? null, text: typeof r.text === 'string' ? r.text : r.text.join(' ') })

export interface TestDeliveryResult {
  readonly status: number | null
  readonly durationMs: number
  /** What the MTA would have been told (the route's mode applied, as a session applies it). */
  readonly reply: TestReply
  /** The reply the webhook's answer maps to, before the mode. */
  readonly webhookReply: TestReply
  readonly outcome: Outcome
  readonly error?: { readonly code: string; readonly message: string }
  readonly webhookId: string
  readonly recipient: string
}

/** A recipient the route's pattern matches: the address itself, or `test` in place of each `*`. */
export function sampleRecipient(pattern: string): string {
  if (pattern === '*') return 'test@example.com'
  return pattern
    .replace('+*@', '+test@')
    .replace(/^\*@\*\./, 'test@test.')
    .replace(/^\*@/, 'test@')
}

/** The generated message: plain text, a few lines, CRLF line ends. */
export function testMessage(routeId: string, rcpt: string, hostname: string, now = new Date()): Buffer {
  const id = randomBytes(8).toString('hex')
  return Buffer.from(
    [
      `From: lmtp-webhook <postmaster@${hostname}>`,
      `To: <${rcpt}>`,
      `Subject: Test delivery for route ${routeId}`,
      `Date: ${now.toUTCString()}`,
      `Message-ID: <test-${id}@${hostname}>`,
      'MIME-Version: 1.0',
      'Content-Type: text/plain; charset=utf-8',
      'X-Lmtp-Webhook-Test: yes',
      '',
      `This is a test delivery for route ${routeId}, sent from the admin API.`,
      'No mail was received: the message was generated to check the webhook.',
      '',
    ].join('\r\n'),
  )
}

export interface TestDeliveryOptions {
  readonly client: WebhookClient
  /** LMTP_HOSTNAME: used in the generated message and as the LHLO name. */
  readonly hostname: string
  /** Deadline when the route sets none (WEBHOOK_TIMEOUT). */
  readonly webhookTimeoutMs: number
  /** Envelope recipient; by default `sampleRecipient(route.match)`. */
  readonly rcpt?: string | undefined
}

export async function sendTestDelivery(route: Route, options: TestDeliveryOptions): Promise<TestDeliveryResult> {
  const rcpt = options.rcpt ?? sampleRecipient(route.match)
  const raw = testMessage(route.id, rcpt, options.hostname)
  const envelope: StoredEnvelope = {
    mailFrom: '',
    recipients: [rcpt],
    lhlo: options.hostname,
    clientAddress: '',
    xforward: null,
    size: raw.length,
    receivedAt: new Date().toISOString(),
    sha256: createHash('sha256').update(raw).digest('hex'),
  }
  const parts = await messageParts(raw, [route])
  const available = new Map<string, Buffer>([['env', Buffer.from(JSON.stringify(envelope))], ['raw', raw], ...parts])
  const fields = requiredFields(route).map((f) => available.get(f) ?? null)
  const webhookId = `test_${randomBytes(16).toString('base64url')}`
  const request = buildRequest(route, fields, rcpt, webhookId)
  const result = await options.client.attempt({
    url: route.url,
    headers: request.headers,
    body: request.body,
    deadlineMs: route.timeoutMs ?? options.webhookTimeoutMs,
  })
  const decision = decideReply(result, route, rcpt)
  // The job of a real delivery would be durable (or the session's 451 would say so): the test
  // shows the answer of the working case.
  const told = recipientOutcome(route.mode, true, decision, rcpt)
  return {
    status: result.status ?? null,
    durationMs: result.durationMs,
    reply: view(told),
    webhookReply: view(decision.reply),
    outcome: decision.outcome,
    ...(result.error ? { error: { code: result.error.code, message: result.error.message } } : {}),
    webhookId,
    recipient: rcpt,
  }
}
