/**
 * The listener's own first attempts. In a process that runs both roles, the session that received
 * a recipient's message attempts its webhook at once, from the message it holds in memory, while
 * the recipient's job waits in BullMQ as a guard (guards.ts) for the case this process dies. That
 * takes the queue's hops (a worker's wake-up, its move to active, its reads of the stored message,
 * its finish, the result's publish) off the path of every reply.
 *
 * Attempts in flight here are limited to WORKER_CONCURRENCY, like a worker's; a recipient that
 * finds no slot waits in order until its reply deadline. The route gate (pause, circuit breaker,
 * limits) is asked first: a recipient it does not let go now is handed to the workers, which hold
 * or retry it as they do every job.
 */
import { attemptDelivery, type AttemptDeps, type AttemptInput, type AttemptOutcome, type AttemptRecord } from './attempt.js'
import type { DeliveryShard } from './queue.js'
import { guardHook } from '../observers.js'

export interface LocalAttemptsDeps extends Omit<AttemptDeps, 'onAttempt'> {
  /** Each attempt, with the shard of its job (the delivery log is kept per shard). */
  readonly onAttempt?: ((record: AttemptRecord, shard: DeliveryShard) => void) | undefined
}

/** A first attempt: what any attempt needs, less its number (1) and permit (asked for here). */
export interface LocalAttempt extends Omit<AttemptInput, 'attempt' | 'permit'> {
  readonly shard: DeliveryShard
  /** Epoch ms: no slot by then, no attempt. */
  readonly slotBy: number
}

/** `none`: no slot before the deadline; `gated`: the gate said wait or hold. */
export type LocalResult = ({ readonly kind: 'attempted' } & AttemptOutcome) | { readonly kind: 'none' } | { readonly kind: 'gated' }

export class LocalAttempts {
  private running = 0
  private readonly waiting: { resolve: (got: boolean) => void; timer: NodeJS.Timeout }[] = []

  private readonly onAttempt: ((record: AttemptRecord, shard: DeliveryShard) => void) | undefined

  constructor(
    private readonly deps: LocalAttemptsDeps,
    private readonly concurrency: number,
  ) {
    // Metrics and log hooks watch the attempt; one that throws must not change the delivery.
    this.onAttempt = deps.onAttempt ? guardHook('onAttempt', deps.onAttempt, deps.log) : undefined
  }

  async run(a: LocalAttempt): Promise<LocalResult> {
    if (!(await this.acquire(a.slotBy))) return { kind: 'none' }
    const log = this.deps.log.child({ job: a.jobId, txn: a.txn, rcpt: a.rcpt, route: a.route.id })
    try {
      let permit
      if (this.deps.gate) {
        const decision = await this.deps.gate.before(a.route, a.jobId)
        if (decision.kind !== 'go') return { kind: 'gated' }
        permit = decision.permit
      }
      const onAttempt = this.onAttempt
      const outcome = await attemptDelivery(
        { ...this.deps, onAttempt: onAttempt && ((record) => onAttempt(record, a.shard)) },
        { ...a, attempt: 1, permit },
        log,
      )
      return { kind: 'attempted', ...outcome }
    } finally {
      this.release()
    }
  }

  private acquire(by: number): Promise<boolean> | boolean {
    if (this.running < this.concurrency) {
      this.running++
      return true
    }
    const wait = by - Date.now()
    if (wait <= 0) return false
    return new Promise<boolean>((resolve) => {
      const entry = {
        resolve,
        timer: setTimeout(() => {
          const i = this.waiting.indexOf(entry)
          if (i >= 0) this.waiting.splice(i, 1)
          resolve(false)
        }, wait),
      }
      this.waiting.push(entry)
    })
  }

  private release(): void {
    const next = this.waiting.shift()
    if (next) {
      clearTimeout(next.timer)
      next.resolve(true)
    } else this.running--
  }
}
