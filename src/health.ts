/**
 * Whether Redis answers, for readiness. A connection that is open is not enough: a Redis that is
 * frozen (SIGSTOP, a stalled host, a full network buffer) keeps its sockets open and answers
 * nothing, and every transaction would then wait for the command timeout and fail. A background
 * probe sends one PING at a time on a schedule; Redis counts as up while the last PING was
 * answered within its deadline. /readyz reads the last result and never waits for Redis itself.
 *
 * The probe runs on the connection the service's commands use (src/redis/connections.ts `app`):
 * standalone, the server; Sentinel, the primary the sentinels named (the client follows a
 * failover); a cluster, every primary (src/redis/connections.ts `primaries`), since each holds
 * part of the queues and one that does not answer fails the mail of its shards.
 */
import { isCluster, primaries, type RedisClient } from './redis/connections.js'

export interface RedisProbeOptions {
  /** Time between two PINGs (from the start of one to the start of the next). */
  readonly intervalMs: number
  /** A PING not answered within this is a failure, whenever its answer comes. */
  readonly timeoutMs: number
}

/** The probe's defaults: /readyz turns 503 at most `intervalMs + timeoutMs` (2 s) after Redis stops answering. */
export const REDIS_PROBE: RedisProbeOptions = { intervalMs: 1_000, timeoutMs: 1_000 }

export class RedisProbe {
  private answered = false
  private inFlight = false
  private timer: NodeJS.Timeout | null = null

  constructor(
    private readonly redis: RedisClient,
    private readonly options: RedisProbeOptions = REDIS_PROBE,
  ) {}

  /** True while the connection is up and the last PING (of every primary) was answered within its deadline. */
  get up(): boolean {
    return this.answered && this.redis.status === 'ready'
  }

  /** Runs a first probe (bounded by the deadline), then one per interval until `stop()`. */
  async start(): Promise<void> {
    if (this.timer) return
    this.timer = setInterval(() => void this.probe(), this.options.intervalMs)
    this.timer.unref()
    await this.probe()
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer)
    this.timer = null
  }

  /**
   * One PING (to each primary of a cluster). While one is outstanding no other is sent (a frozen
   * Redis would otherwise collect one per interval); it still turns the result false when its
   * deadline passes.
   */
  private probe(): Promise<void> {
    if (this.inFlight) return Promise.resolve()
    this.inFlight = true
    return new Promise<void>((resolve) => {
      let late = false
      const deadline = setTimeout(() => {
        late = true
        this.answered = false
        resolve()
      }, this.options.timeoutMs)
      deadline.unref()
      this.ping()
        .then(
          () => {
            if (!late) this.answered = true
          },
          () => {
            this.answered = false
          },
        )
        .finally(() => {
          clearTimeout(deadline)
          this.inFlight = false
          resolve()
        })
    })
  }

  private async ping(): Promise<void> {
    if (!isCluster(this.redis)) {
      await this.redis.ping()
      return
    }
    const nodes = primaries(this.redis)
    if (nodes.length === 0) throw new Error('the cluster has no known primary')
    await Promise.all(nodes.map((node) => node.ping()))
  }
}
