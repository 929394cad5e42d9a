/**
 * SASL credentials for AUTH PLAIN and LOGIN: the users file, password checks, and the limit on
 * failed attempts per client address.
 *
 * The users file has one `name:hash` a line, as `htpasswd -nbB name password` (apache2-utils)
 * writes it; `#` starts a comment line. The hash is bcrypt (`$2a$`, `$2b$` or `$2y$`, cost 4 to
 * 12), optionally written `{BLF-CRYPT}$2y$...` as Dovecot's `doveadm pw -s BLF-CRYPT` prints it.
 * The file is looked at again at most once per check interval and reloaded when it changed, so a
 * rotated Secret is picked up without a restart; a file that no longer parses is logged and the
 * previous users stay in force.
 *
 * bcrypt runs on the event loop (bcryptjs, plain JavaScript), so a success is remembered for a
 * while as an HMAC of name, password and hash under a key that lives only in this process: an
 * MTA that authenticates on every connection costs one bcrypt computation per cache period, not
 * one per connection. Failures are never cached, always cost a bcrypt computation (an unknown name
 * is checked against a dummy hash, so timing does not tell names apart) and count against the
 * client address.
 */
import { createHmac, randomBytes } from 'node:crypto'
import { readFileSync, statSync } from 'node:fs'
import { isIPv6 } from 'node:net'
import bcrypt from 'bcryptjs'
import type { Logger } from 'pino'

export interface AuthOptions {
  readonly usersFile: string
  /** MAIL before a successful AUTH gets 530 5.7.0. */
  readonly required: boolean
  /** Failed attempts allowed per client address within `failureWindowMs`; then 454 4.7.0. */
  readonly maxFailures: number
  readonly failureWindowMs: number
}

/** Highest bcrypt cost accepted: each check not in the cache costs about 2^cost rounds on the event loop. */
export const MAX_BCRYPT_COST = 12

const BCRYPT = /^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$/

/** Parses a users file; throws an Error naming the line of the first problem. */
export function parseUsers(text: string): Map<string, string> {
  const users = new Map<string, string>()
  const lines = text.split(/\r?\n/)
  lines.forEach((raw, i) => {
    const line = raw.trim()
    if (line === '' || line.startsWith('#')) return
    const colon = line.indexOf(':')
    if (colon <= 0) throw new Error(`line ${i + 1}: expected name:hash`)
    const name = line.slice(0, colon)
    let hash = line.slice(colon + 1).trim()
    if (hash.startsWith('{BLF-CRYPT}')) hash = hash.slice('{BLF-CRYPT}'.length)
    if (/[\s\u0000-\u001f\u007f]/.test(name)) throw new Error(`line ${i + 1}: the name holds white space or control characters`)
    const m = BCRYPT.exec(hash)
    if (!m) throw new Error(`line ${i + 1} (${name}): expected a bcrypt hash such as htpasswd -nbB writes ($2y$...)`)
    const cost = Number(m[1])
    if (cost < 4 || cost > MAX_BCRYPT_COST) throw new Error(`line ${i + 1} (${name}): bcrypt cost ${cost} is outside 4..${MAX_BCRYPT_COST}`)
    if (users.has(name)) throw new Error(`line ${i + 1}: ${name} is listed twice`)
    users.set(name, hash)
  })
  return users
}

/** Reads and parses a users file; throws an Error saying what is wrong. */
export function readUsersFile(path: string): Map<string, string> {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    throw new Error(`cannot read ${path}: ${(err as Error).message}`, { cause: err })
  }
  return parseUsers(text)
}

const CACHE_MS = 10 * 60_000
const CACHE_MAX = 1000

export class UserStore {
  private users: Map<string, string>
  private seen: string
  private checkedAt = Date.now()
  private readonly cacheKey = randomBytes(32)
  private readonly cache = new Map<string, number>()
  /** A hash of a random password at the users' cost: unknown names are checked against it, so they take as long as known ones. */
  private dummy: string | null = null

  constructor(
    private readonly file: string,
    private readonly log: Logger,
    private readonly checkIntervalMs = 1000,
  ) {
    this.seen = this.signature()
    this.users = readUsersFile(file)
    log.info({ users: this.users.size }, 'LMTP users loaded')
  }

  /** True when `password` is the password of `name`. */
  async verify(name: string, password: string): Promise<boolean> {
    this.reload()
    const hash = this.users.get(name)
    if (hash === undefined) {
      await bcrypt.compare(password, this.dummyHash())
      return false
    }
    const key = createHmac('sha256', this.cacheKey).update(name).update('\0').update(password).update('\0').update(hash).digest('base64')
    const until = this.cache.get(key)
    if (until !== undefined && until > Date.now()) return true
    if (!(await bcrypt.compare(password, hash))) return false
    // The users may have changed while bcrypt ran.
    if (this.users.get(name) !== hash) return false
    if (this.cache.size >= CACHE_MAX) this.cache.delete(this.cache.keys().next().value!)
    this.cache.set(key, Date.now() + CACHE_MS)
    return true
  }

  private dummyHash(): string {
    if (this.dummy === null) {
      const cost = Number(/^\$2[aby]\$(\d\d)\$/.exec(this.users.values().next().value ?? '')?.[1] ?? 10)
      this.dummy = bcrypt.hashSync(randomBytes(12).toString('base64'), cost)
    }
    return this.dummy
  }

  private signature(): string {
    try {
      const s = statSync(this.file)
      return `${s.ino}:${s.size}:${s.mtimeMs}`
    } catch {
      return 'missing'
    }
  }

  private reload(): void {
    const now = Date.now()
    if (now - this.checkedAt < this.checkIntervalMs) return
    this.checkedAt = now
    const sig = this.signature()
    if (sig === this.seen) return
    this.seen = sig
    try {
      this.users = readUsersFile(this.file)
      this.cache.clear()
      this.dummy = null
      this.log.info({ users: this.users.size }, 'LMTP users reloaded')
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'LMTP users file changed but cannot be read; keeping the previous users')
    }
  }
}

/** The key failures are counted under: the address, or its /64 for IPv6 (one host usually has a whole /64). */
export function clientKey(address: string): string {
  const a = address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address
  if (!isIPv6(a)) return a
  const [head = '', tail] = a.split('::')
  const h = head === '' ? [] : head.split(':')
  const t = tail === undefined || tail === '' ? [] : tail.split(':')
  const groups = tail === undefined ? h : [...h, ...Array<string>(Math.max(0, 8 - h.length - t.length)).fill('0'), ...t]
  return `${groups
    .slice(0, 4)
    .map((g) => parseInt(g, 16).toString(16))
    .join(':')}::/64`
}

/**
 * Failed attempts per client address: at most `max` within a window that starts at the first
 * failure; past it, the address is refused until the window ends. A success clears the address.
 * Bounded: past `maxEntries` addresses, the oldest are forgotten.
 */
export class FailureLimiter {
  private readonly entries = new Map<string, { count: number; since: number }>()

  constructor(
    private readonly max: number,
    private readonly windowMs: number,
    private readonly maxEntries = 10_000,
  ) {}

  blocked(address: string, now = Date.now()): boolean {
    const e = this.entries.get(clientKey(address))
    if (!e) return false
    if (now - e.since >= this.windowMs) {
      this.entries.delete(clientKey(address))
      return false
    }
    return e.count >= this.max
  }

  fail(address: string, now = Date.now()): void {
    const key = clientKey(address)
    const e = this.entries.get(key)
    if (e && now - e.since < this.windowMs) {
      e.count++
      return
    }
    if (e) this.entries.delete(key)
    if (this.entries.size >= this.maxEntries) this.entries.delete(this.entries.keys().next().value!)
    this.entries.set(key, { count: 1, since: now })
  }

  succeed(address: string): void {
    this.entries.delete(clientKey(address))
  }
}
