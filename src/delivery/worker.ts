/**
 * The delivery processor: one job = one webhook attempt for one recipient. It loads the stored
 * transaction (one HMGET), makes one attempt (attempt.ts), and sends the recipient's reply to the
 * waiting session after the first attempt. A job whose first attempt the listener made itself (a
 * guard, local.ts) reaches a worker only as a retry, a dead letter, or when that process died.
 */
import { UnrecoverableError } from 'bullmq'
import type { Logger } from 'pino'
import { reply, type Reply } from '../lmtp/reply.js'
import type { Route } from '../routing/schema.js'
import type { WebhookClient } from './http.js'
import type { TransactionStore } from './messages.js'
import { RetryableDeliveryError, type DeliveryJob, type DeliveryJobReturn } from './queue.js'
import type { ResultChannel } from './results.js'
import { extraFields, requiredFields } from './request.js'
import type { DeliveryGate, Permit } from './limits.js'
import { attemptDelivery, type AttemptRecord } from './attempt.js'
import { guardHook } from '../observers.js'

export type { AttemptRecord } from './attempt.js'

export interface ProcessorDeps {
  readonly routes: { get(id: string): Route | undefined }
  readonly store: TransactionStore
  readonly client: WebhookClient
  readonly channel: ResultChannel
  readonly webhookTimeoutMs: number
  readonly log: Logger
  readonly onAttempt?: ((record: AttemptRecord) => void) | undefined
  /** Aborted when shutdown gives up waiting for jobs in flight. */
  readonly signal?: AbortSignal
  /** Route limits, pause and circuit breaker (absent: every job goes at once). */
  readonly gate?: DeliveryGate | undefined
}

const gone = (what: string) => reply(451, '4.3.0', `${what}, try again later`)

/** Why an attempt that got no usable answer failed: the retry's error and a dead letter's reason. */
export const failureReason = (status: number | undefined, error: string | undefined): string => `webhook answered ${status ?? error}`

export function createProcessor(deps: ProcessorDeps): (job: DeliveryJob, token?: string) => Promise<DeliveryJobReturn> {
  // Metrics and log hooks watch the attempt; one that throws must not fail a delivered job (accept
  // mode would send it again).
  const attemptDeps = { ...deps, onAttempt: deps.onAttempt ? guardHook('onAttempt', deps.onAttempt, deps.log) : undefined }
  return async (job, token) => {
    const d = job.data
    const jobId = job.id!
    // Attempts the listener made itself before this job was first taken (its guard, local.ts).
    const made = d.made ?? 0
    const first = job.attemptsMade === 0 && made === 0
    const log = deps.log.child({ job: jobId, txn: d.txn, rcpt: d.rcpt, route: d.route })
    if (d.mode === 'defer' && (d.guard === true || Date.now() > d.replyBy)) {
      // The session has answered 451 already, or its process died with it (a guard that fell
      // due), and the MTA will deliver again: an attempt now could only duplicate that delivery.
      log.debug('defer-mode job of a session that has answered or is gone: skipped')
      return { outcome: 'skipped' }
    }
    // The listener's attempt was refused for good: the guard became a dead letter with its reason.
    if (d.deadLetter !== undefined) throw new UnrecoverableError(d.deadLetter)
    const route = deps.routes.get(d.route)
    // Pause, circuit breaker, concurrency and rate limits: go now, wait, or hold (limits.ts).
    let permit: Permit | undefined
    if (route && deps.gate) {
      const decision = await deps.gate.before(route, jobId)
      if (decision.kind !== 'go') {
        const publish = (r: Reply): Promise<void> =>
          first
            ? deps.channel
                .publish(d.replyTo, { id: jobId, reply: r, outcome: 'temporary' })
                .catch((err: unknown) => log.warn({ err }, 'could not send the result to the waiting session'))
            : Promise.resolve()
        return deps.gate.hold(job, token, route, decision, publish)
      }
      permit = decision.permit
    }
    let fields = route ? await deps.store.load(d.txn, requiredFields(route)) : []
    // A message the parser gave up on is always sent with its raw form (one more read, rare).
    const extra = route && fields.every((f) => f !== null) ? extraFields(route, fields) : []
    if (extra.length > 0) fields = [...fields, ...(await deps.store.load(d.txn, extra))]
    if (!route || fields.some((f) => f === null)) {
      const what = !route ? 'Route was removed' : 'Stored message expired'
      if (route && permit) await deps.gate!.after(route, permit, null)
      log.warn(what)
      if (first)
        await deps.channel
          .publish(d.replyTo, { id: jobId, reply: gone(what), outcome: 'temporary' })
          .catch((err: unknown) => log.warn({ err }, 'could not send the result to the waiting session'))
      if (d.mode !== 'defer') throw new UnrecoverableError(what)
      return { outcome: 'temporary' }
    }
    const attempt = made + job.attemptsMade + 1
    const last = d.mode === 'defer' || attempt >= (job.opts.attempts ?? 1)
    const { decision, result } = await attemptDelivery(
      attemptDeps,
      { route, fields, jobId, txn: d.txn, rcpt: d.rcpt, webhookId: d.webhookId, attempt, last, permit },
      log,
    )
    // Best effort: a lost result makes the session time out, which gives the safe reply. It must
    // not turn an answered attempt into a failed job (accept mode would send it again).
    if (first)
      await deps.channel
        .publish(d.replyTo, { id: jobId, reply: decision.reply, outcome: decision.outcome, status: result.status })
        .catch((err: unknown) => log.warn({ err }, 'could not send the result to the waiting session'))
    if (d.mode !== 'defer') {
      if (decision.outcome === 'temporary') {
        const reason = failureReason(result.status, result.error?.code)
        // Counted with the listener's own attempts, which BullMQ does not know of.
        if (last) throw new UnrecoverableError(`${reason} (attempt ${attempt} of ${job.opts.attempts ?? 1})`)
        throw new RetryableDeliveryError(reason, result.retryAfterMs)
      }
      // A permanent refusal is kept as a dead letter even when the session may have passed it on:
      // the worker cannot know whether the MTA heard it or was told "queued" (deadline, lost
      // result), and only the dead letter keeps the second case from losing the mail silently.
      if (decision.outcome === 'rejected') throw new UnrecoverableError(`webhook rejected with ${result.status}`)
    }
    return { outcome: decision.outcome, status: result.status }
  }
}
