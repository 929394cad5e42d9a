/**
 * Turns one webhook attempt into the recipient's LMTP reply, in three layers:
 *
 * 1. the default table (docs/webhooks.md, "Answering"), from the HTTP status or, when
 *    no status arrived, from the error (timeout, connect failure, refused destination, cancel);
 * 2. the route's `replies` override, looked up by exact status ("404"), then class ("4xx"), or
 *    "timeout" / "error" when there is no status. The operator's code decides the outcome;
 * 3. the webhook's own `{"smtp": {"code", "enhanced", "message"}}`, clamped to the class layer 2
 *    settled on: a code of another class is ignored, an enhanced code must match the class, the
 *    message is stripped of control characters and cut so the reply line fits 512 octets.
 *
 * When response headers arrived, the status decides even if the body then failed (too large, or
 * the deadline passed while reading it): the webhook has answered; only its `smtp` override is lost.
 */
import { MAX_REPLY_LINE, enhancedMatches, isReplyCode, sanitizeText, truncateUtf8, type Reply } from '../lmtp/reply.js'

export type Outcome = 'delivered' | 'rejected' | 'temporary'

export interface Decision {
  readonly reply: Reply
  readonly outcome: Outcome
  /** What the decision rests on, for logs: `HTTP 404`, `timeout`, `connect`, ... */
  readonly reason: string
  /** Which layer produced the reply. */
  readonly source: 'default' | 'route' | 'webhook'
}

export interface ReplyOverride {
  readonly code: number
  readonly enhanced?: string | undefined
  readonly message?: string | undefined
}

/** What decideReply needs of a route (routing's Route satisfies it). */
export interface ReplyRoute {
  readonly replies?: Readonly<Record<string, ReplyOverride>> | undefined
}

/** What decideReply needs of an attempt (http's AttemptResult satisfies it). */
export interface AttemptSummary {
  readonly status?: number | undefined
  readonly json?: unknown
  readonly error?: { readonly code: string; readonly message?: string } | undefined
}

function outcomeOf(code: number): Outcome {
  return code < 300 ? 'delivered' : code < 500 ? 'temporary' : 'rejected'
}

/** The room left for text in `CODE SP ENHANCED SP text CRLF` within 512 octets. */
function fitText(text: string, enhanced: string | undefined): string {
  const budget = MAX_REPLY_LINE - 4 - 2 - (enhanced === undefined ? 0 : enhanced.length + 1)
  return truncateUtf8(sanitizeText(text), budget)
}

function build(code: number, enhanced: string, text: string): Reply {
  return { code, enhanced, text: fitText(text, enhanced) }
}

const ERROR_REASONS: Record<string, string> = {
  HOOK_ERR_TIMEOUT: 'timeout',
  HOOK_ERR_CONNECT: 'connection failed',
  HOOK_ERR_DESTINATION_DENIED: 'destination not allowed',
  HOOK_ERR_ABORTED: 'cancelled',
}

/** Layer 1: the default reply for a status, or for an attempt that got none. */
function defaultReply(result: AttemptSummary, rcpt: string): { reply: Reply; reason: string } {
  const who = `<${rcpt}>`
  const status = result.status
  if (status === undefined) {
    const reason = ERROR_REASONS[result.error?.code ?? ''] ?? 'no answer'
    return { reply: build(451, '4.3.0', `${who} webhook unavailable (${reason}), try again later`), reason }
  }
  const reason = `HTTP ${status}`
  const is = (text: string, code: number, enhanced: string) => ({ reply: build(code, enhanced, `${who} ${text}`), reason })
  if (status >= 200 && status < 300) return is('delivered', 250, '2.0.0')
  if (status === 404 || status === 410) return is(`mailbox unavailable (webhook answered ${status})`, 550, '5.1.1')
  if (status === 413) return is('message too big for the webhook (HTTP 413)', 552, '5.3.4')
  if (status === 403) return is('delivery not authorized (HTTP 403)', 550, '5.7.1')
  if (status === 408 || status === 429) return is(`webhook busy (HTTP ${status}), try again later`, 451, '4.3.0')
  if (status >= 400 && status < 500) return is(`message refused by the webhook (HTTP ${status})`, 554, '5.6.0')
  // 5xx, 3xx (redirects are never followed) and anything unexpected
  return is(`webhook unavailable (HTTP ${status}), try again later`, 451, '4.3.0')
}

/** Layer 2: the route override that applies to this attempt, if any. */
function routeOverride(result: AttemptSummary, route: ReplyRoute | undefined): ReplyOverride | undefined {
  const replies = route?.replies
  if (!replies) return undefined
  const status = result.status
  if (status !== undefined) return replies[String(status)] ?? replies[`${Math.floor(status / 100)}xx`]
  return result.error?.code === 'HOOK_ERR_TIMEOUT' ? (replies.timeout ?? replies.error) : replies.error
}

function smtpOverride(json: unknown): { code?: unknown; enhanced?: unknown; message?: unknown } | undefined {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return undefined
  const smtp = (json as { smtp?: unknown }).smtp
  return typeof smtp === 'object' && smtp !== null && !Array.isArray(smtp) ? (smtp as Record<string, unknown>) : undefined
}

/**
 * The LMTP reply and outcome for one recipient after one webhook attempt. `rcpt` is the
 * recipient as it appears in default texts (`<rcpt> delivered`). `route` may be omitted (sender
 * and recipient checks without a route).
 */
export function decideReply(result: AttemptSummary, route: ReplyRoute | undefined, rcpt: string): Decision {
  const base = defaultReply(result, sanitizeText(rcpt))
  let { code, enhanced, text } = { code: base.reply.code, enhanced: base.reply.enhanced ?? '4.3.0', text: base.reply.text as string }
  let source: Decision['source'] = 'default'

  const configured = routeOverride(result, route)
  if (configured && isReplyCode(configured.code)) {
    if (Math.floor(configured.code / 100) !== Math.floor(code / 100)) enhanced = `${Math.floor(configured.code / 100)}.0.0`
    code = configured.code
    if (configured.enhanced !== undefined && enhancedMatches(code, configured.enhanced)) enhanced = configured.enhanced
    if (configured.message !== undefined && sanitizeText(configured.message) !== '') text = configured.message
    source = 'route'
  }

  const smtp = result.status === undefined ? undefined : smtpOverride(result.json)
  if (smtp) {
    const before = { code, enhanced, text }
    if (isReplyCode(smtp.code, [Math.floor(code / 100)])) code = smtp.code
    if (typeof smtp.enhanced === 'string' && enhancedMatches(code, smtp.enhanced)) enhanced = smtp.enhanced
    if (typeof smtp.message === 'string' && sanitizeText(smtp.message) !== '') text = smtp.message
    if (code !== before.code || enhanced !== before.enhanced || text !== before.text) source = 'webhook'
  }

  return { reply: build(code, enhanced, text), outcome: outcomeOf(code), reason: base.reason, source }
}

/** The reply of mode `accept` when the first attempt did not settle: the service keeps the message. */
export function queuedReply(rcpt: string): Reply {
  return build(250, '2.0.0', `<${sanitizeText(rcpt)}> queued for delivery`)
}

/** A route's mode: defer (the webhook's answer is the reply), accept (its answer, or `250 queued` and
 * retries here), async (`250 queued` once the job is durable; the first attempt comes after). */
export type DeliveryMode = 'defer' | 'accept' | 'async'

/** Modes in which this service keeps the mail once it said 250: the jobs must be durable first. */
export const keepsMail = (mode: DeliveryMode): boolean => mode !== 'defer'

/** 451 when no answer settles a recipient in time (defer), or a queued job is not durable (accept, async). */
export const notConfirmedReply = (): Reply => build(451, '4.3.0', 'Delivery not confirmed in time, try again later')

export interface FirstAttempt {
  readonly reply: Reply
  readonly outcome: Outcome
}

/**
 * The one decision of what a recipient is told, for the session and the route test endpoint:
 * the route's mode × whether its job is durable (accept, async; ignored for defer) × the first
 * attempt's result, `null` when none settled before the reply deadline (or none was made: async).
 *
 * - defer: the attempt's reply; none in time → 451.
 * - accept: delivered or refused → the attempt's reply (the webhook has answered for good);
 *   temporary or none in time → `250 queued` when durable, else 451.
 * - async: `250 queued` when durable, else 451; the attempt, if any, does not change it.
 */
export function recipientOutcome(mode: DeliveryMode, durable: boolean, first: FirstAttempt | null, rcpt: string): Reply {
  if (mode === 'async') return durable ? queuedReply(rcpt) : notConfirmedReply()
  if (mode === 'defer') return first === null ? notConfirmedReply() : first.reply
  if (first !== null && first.outcome !== 'temporary') return first.reply
  return durable ? queuedReply(rcpt) : notConfirmedReply()
}
