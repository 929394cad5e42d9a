/**
 * The transaction store: what one LMTP transaction leaves in Redis for the workers. One hash per
 * transaction (`<prefix>:{<shard>}:txn:<id>`, in the slot of the queue shard its jobs go to; see
 * src/redis/keys.ts) holds the raw message once, the envelope, and the parsed message serialised
 * once per attachment cap in use; jobs carry only the transaction id. One store per shard.
 *
 * While a transaction's session is waiting, this process also keeps its fields in memory, so a
 * worker in the same process reads them without a Redis round trip (a worker on another replica
 * reads Redis). The memory is the one the listener holds for that transaction anyway; `forget()`
 * releases it when the session has its replies.
 */
import type { RedisClient } from '../redis/connections.js'
import { defineScript, runScript } from '../redis/scripts.js'
import type { StoredEnvelope } from './request.js'

/**
 * KEYS[1] the transaction hash; ARGV[1] TTL in ms, ARGV[2..] field, value, field, value...
 * Writes the fields and the TTL atomically in one command (no MULTI, no client-side pipeline).
 * Ordered: the jobs sent right after it must find the message stored.
 */
const SAVE = defineScript(
  'save-transaction',
  `redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1`,
  { ordered: true },
)

export class TransactionStore {
  private readonly local = new Map<string, ReadonlyMap<string, Buffer>>()

  /**
   * `writer` stores transactions: the connection the jobs are added on, so Redis has the message
   * before its jobs, and WAITAOF on it covers both. `reader` (the app connection) reads, extends and
   * deletes, so a delete shares its write with the delivery log's.
   */
  constructor(
    private readonly writer: RedisClient,
    private readonly reader: RedisClient,
    private readonly keyOf: (txnId: string) => string,
  ) {}

  key(txnId: string): string {
    return this.keyOf(txnId)
  }

  /** Stores a transaction in one command. `parts` are named serialised forms (e.g. `json:<cap>`). */
  async save(txnId: string, raw: Buffer, envelope: StoredEnvelope, parts: ReadonlyMap<string, Buffer>, ttlMs: number): Promise<void> {
    const key = this.key(txnId)
    const fields = new Map<string, Buffer>([['raw', raw], ['env', Buffer.from(JSON.stringify(envelope))], ...parts])
    const args: (string | Buffer)[] = []
    for (const [name, value] of fields) args.push(name, value)
    await runScript(this.writer, SAVE, [key], [ttlMs, ...args])
    this.local.set(txnId, fields)
  }

  /**
   * Keeps a transaction in memory only: every first attempt is made in this process and nothing
   * else will read it (defer mode).
   */
  keep(txnId: string, raw: Buffer, envelope: StoredEnvelope, parts: ReadonlyMap<string, Buffer>): void {
    this.local.set(txnId, new Map<string, Buffer>([['raw', raw], ['env', Buffer.from(JSON.stringify(envelope))], ...parts]))
  }

  /** The named fields from memory, while the transaction's session holds them (null if missing). */
  fieldsNow(txnId: string, names: readonly string[]): (Buffer | null)[] {
    const local = this.local.get(txnId)
    return names.map((n) => local?.get(n) ?? null)
  }

  /** Reads the named fields; missing fields (or an expired transaction) come back as null. */
  async load(txnId: string, names: readonly string[]): Promise<(Buffer | null)[]> {
    const local = this.local.get(txnId)
    if (local && names.every((n) => local.has(n))) return names.map((n) => local.get(n)!)
    return this.reader.hmgetBuffer(this.key(txnId), ...names)
  }

  /** Releases the in-memory copy; Redis keeps the transaction until `remove()` or its TTL. */
  forget(txnId: string): void {
    this.local.delete(txnId)
  }

  async remove(txnId: string): Promise<void> {
    this.forget(txnId)
    await this.reader.del(this.key(txnId))
  }

  /** Extends the retention (a dead-lettered delivery being replayed needs its message). */
  async touch(txnId: string, ttlMs: number): Promise<boolean> {
    return (await this.reader.pexpire(this.key(txnId), ttlMs)) === 1
  }
}
