/**
 * The transaction store: what one LMTP transaction leaves in Redis for the workers. One hash per
 * transaction (`<prefix>:txn:<id>`) holds the raw message once, the envelope, and the parsed
 * message serialised once per attachment cap in use; jobs carry only the transaction id.
 */
import type { Redis } from 'ioredis'
import type { StoredEnvelope } from './request.js'

export class TransactionStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  key(txnId: string): string {
    return `${this.prefix}:txn:${txnId}`
  }

  /** Stores a transaction in one round trip. `parts` are named serialised forms (e.g. `json:<cap>`). */
  async save(txnId: string, raw: Buffer, envelope: StoredEnvelope, parts: ReadonlyMap<string, Buffer | string>, ttlMs: number): Promise<void> {
    const key = this.key(txnId)
    const fields: (string | Buffer)[] = ['raw', raw, 'env', JSON.stringify(envelope)]
    for (const [name, value] of parts) fields.push(name, value)
    const result = await this.redis.multi().hset(key, ...fields).pexpire(key, ttlMs).exec()
    const failed = result?.find(([err]) => err)
    if (!result || failed) throw failed?.[0] ?? new Error('transaction store write was discarded')
  }

  /** Reads the named fields; missing fields (or an expired transaction) come back as null. */
  async load(txnId: string, fields: readonly string[]): Promise<(Buffer | null)[]> {
    return this.redis.hmgetBuffer(this.key(txnId), ...fields)
  }

  async remove(txnId: string): Promise<void> {
    await this.redis.del(this.key(txnId))
  }

  /** Extends the retention (a dead-lettered delivery being replayed needs its message). */
  async touch(txnId: string, ttlMs: number): Promise<boolean> {
    return (await this.redis.pexpire(this.key(txnId), ttlMs)) === 1
  }
}
