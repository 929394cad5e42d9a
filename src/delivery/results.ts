/**
 * The result channel: how a waiting LMTP session learns each recipient's first-attempt result,
 * whichever replica's worker ran the job. One Redis pub/sub channel per process
 * (`<prefix>:results:<processId>`), one PUBLISH per job (O(1); SPUBLISH on a cluster, so only the
 * primary of the channel's slot carries it, see src/redis/pubsub.ts); when the worker runs in the same
 * process as the waiting session the result is handed over in memory and Redis is not used at all.
 * No per-job `waitUntilFinished`, no per-job listeners on Redis.
 *
 * Pub/sub is not durable: a result lost while the subscriber reconnects makes the session time out,
 * which gives the safe reply (451 in defer mode, 250 queued for a job already durably queued).
 */
import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import type { Reply } from '../lmtp/reply.js'
import type { RedisClient } from '../redis/connections.js'
import type { KeyLayout } from '../redis/keys.js'
import { publish, type PubSub } from '../redis/pubsub.js'

export type Outcome = 'delivered' | 'rejected' | 'temporary'

export interface DeliveryResult {
  /** Job id (= webhook id). */
  readonly id: string
  readonly reply: Reply
  readonly outcome: Outcome
  readonly status?: number | undefined
}

type Waiter = (result: DeliveryResult) => void

export class ResultChannel {
  /** This process's address: job data carries it so the worker knows where to answer. */
  readonly address: string
  private readonly waiters = new Map<string, Waiter[]>()
  private closed = false

  private readonly handler = (message: Buffer): void => this.onMessage(message)

  private constructor(
    private readonly publisher: RedisClient,
    private readonly subscriber: PubSub | null,
    private readonly layout: KeyLayout,
    private readonly log: Logger,
  ) {
    this.address = randomBytes(8).toString('hex')
  }

  /**
   * Opens the channel. `subscriber: null` for a worker-only process, which only publishes.
   */
  static async open(publisher: RedisClient, subscriber: PubSub | null, layout: KeyLayout, log: Logger): Promise<ResultChannel> {
    const channel = new ResultChannel(publisher, subscriber, layout, log)
    if (subscriber) await subscriber.subscribe(layout.results(channel.address), channel.handler)
    return channel
  }

  private onMessage(message: Buffer): void {
    let result: DeliveryResult
    try {
      result = JSON.parse(message.toString('utf8')) as DeliveryResult
    } catch (err) {
      this.log.warn({ err }, 'unreadable delivery result')
      return
    }
    this.resolve(result)
  }

  private resolve(result: DeliveryResult): void {
    const waiting = this.waiters.get(result.id)
    if (!waiting) return
    this.waiters.delete(result.id)
    for (const w of waiting) w(result)
  }

  /**
   * Registers interest in the given job ids (call it BEFORE the jobs are added) and returns a
   * function that waits for them: results in the same order, `null` where none came in time.
   * One timer per call, however many ids.
   */
  expect(ids: readonly string[]): (timeoutMs: number) => Promise<(DeliveryResult | null)[]> {
    const results: (DeliveryResult | null)[] = ids.map(() => null)
    let remaining = ids.length
    let done: (() => void) | null = null
    const registered: [string, Waiter][] = []
    ids.forEach((id, index) => {
      const waiter: Waiter = (r) => {
        results[index] = r
        if (--remaining === 0) done?.()
      }
      registered.push([id, waiter])
      const list = this.waiters.get(id)
      if (list) list.push(waiter)
      else this.waiters.set(id, [waiter])
    })
    const unregister = (): void => {
      for (const [id, waiter] of registered) {
        const list = this.waiters.get(id)
        if (!list) continue
        const i = list.indexOf(waiter)
        if (i !== -1) list.splice(i, 1)
        if (list.length === 0) this.waiters.delete(id)
      }
    }
    return async (timeoutMs) => {
      if (remaining > 0 && !this.closed) {
        let timer: NodeJS.Timeout | undefined
        await new Promise<void>((resolve) => {
          done = resolve
          timer = setTimeout(resolve, timeoutMs)
        })
        clearTimeout(timer)
      }
      unregister()
      return results
    }
  }

  /** Sends a result to the process at `address`; in memory when that is this process. */
  async publish(address: string, result: DeliveryResult): Promise<void> {
    if (address === this.address && this.subscriber) {
      this.resolve(result)
      return
    }
    await publish(this.publisher, this.layout.results(address), JSON.stringify(result))
  }

  /** Number of recipients waiting (for metrics and shutdown). */
  get waiting(): number {
    return this.waiters.size
  }

  async close(): Promise<void> {
    this.closed = true
    if (this.subscriber) await this.subscriber.unsubscribe(this.layout.results(this.address), this.handler)
  }
}
