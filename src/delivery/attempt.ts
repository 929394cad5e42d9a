/**
 * One webhook attempt for one recipient, wherever it runs: a worker taking a job, or the listener
 * making the first attempt itself (local.ts). Builds and signs the request from the transaction's
 * fields, sends it under the route's deadline, tells the route gate how it went, maps the answer
 * to the recipient's reply, and reports the attempt to the observer (delivery log, metrics).
 */
import type { Logger } from 'pino'
import type { Route } from '../routing/schema.js'
import type { AttemptResult, WebhookClient } from './http.js'
import { buildRequest } from './request.js'
import { decideReply, type Decision } from './outcome.js'
import type { DeliveryGate, Permit } from './limits.js'
import { storedSummary, type StoredSummary } from './summary.js'
import type { Outcome } from './results.js'

export interface AttemptRecord {
  readonly jobId: string
  readonly txn: string
  readonly rcpt: string
  readonly route: string
  readonly mode: Route['mode']
  /** Reverse path of the message ('' for the null sender). */
  readonly sender: string
  /** Message-ID of the message, with its angle brackets; null when it has none. */
  readonly messageId: string | null
  readonly attempt: number
  readonly status: number | undefined
  readonly error: string | undefined
  readonly durationMs: number
  readonly outcome: Outcome
  readonly reply: string
  readonly responseSnippet: string
  /** No further attempt will be made (delivered, rejected, defer mode, or out of attempts). */
  readonly final: boolean
}

export interface AttemptDeps {
  readonly client: WebhookClient
  readonly webhookTimeoutMs: number
  readonly log: Logger
  /** Guarded by the caller (guardHook): an observer never changes a delivery. */
  readonly onAttempt?: ((record: AttemptRecord) => void) | undefined
  readonly signal?: AbortSignal | undefined
  readonly gate?: DeliveryGate | undefined
}

export interface AttemptInput {
  readonly route: Route
  /** The values of `requiredFields(route)`, none missing. */
  readonly fields: readonly (Buffer | null)[]
  readonly jobId: string
  readonly txn: string
  readonly rcpt: string
  readonly webhookId: string
  /** 1 for the first attempt. */
  readonly attempt: number
  /** Whether a temporary failure of this attempt ends the delivery (defer mode, out of attempts). */
  readonly last: boolean
  /** The gate's permit this attempt holds (released here). */
  readonly permit?: Permit | undefined
  /** Sender and Message-ID for the log, when known (else read from `fields`). */
  readonly summary?: StoredSummary | undefined
}

export interface AttemptOutcome {
  readonly decision: Decision
  readonly result: AttemptResult
}

export async function attemptDelivery(deps: AttemptDeps, input: AttemptInput, log: Logger): Promise<AttemptOutcome> {
  const { route } = input
  const request = buildRequest(route, input.fields, input.rcpt, input.webhookId)
  const result = await deps.client.attempt({
    url: route.url,
    headers: request.headers,
    body: request.body,
    deadlineMs: route.timeoutMs ?? deps.webhookTimeoutMs,
    signal: deps.signal,
  })
  const decision = decideReply(result, route, input.rcpt)
  if (input.permit && deps.gate) {
    const outcome = result.error?.code === 'HOOK_ERR_ABORTED' ? 'aborted' : decision.outcome
    await deps.gate.after(route, input.permit, { outcome, status: result.status, error: result.error?.code })
  }
  const final = decision.outcome !== 'temporary' || input.last
  log.info(
    { attempt: input.attempt, status: result.status, error: result.error?.code, durationMs: result.durationMs, outcome: decision.outcome },
    'webhook attempt',
  )
  // The observer is guarded by whoever built `deps` (guardHook): it cannot change the delivery.
  deps.onAttempt?.({
    jobId: input.jobId,
    txn: input.txn,
    rcpt: input.rcpt,
    route: route.id,
    mode: route.mode,
    ...(input.summary ?? storedSummary(route, input.fields)),
    attempt: input.attempt,
    status: result.status,
    error: result.error?.code,
    durationMs: result.durationMs,
    outcome: decision.outcome,
    reply: `${decision.reply.code} ${decision.reply.enhanced ?? ''}`.trim(),
    responseSnippet: result.bodySnippet,
    final,
  })
  return { decision, result }
}
