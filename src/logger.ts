/**
 * The one root logger. Everything else takes a child logger carrying its context.
 *
 * Performance trade-off (the pino way): log lines are buffered and written in blocks of at least
 * 4 KiB rather than with one write(2) per line, which on the delivery hot path (one line per webhook
 * attempt) saves a system call per attempt. The buffer is also written every 250 ms, so a quiet
 * service still shows its logs promptly, and on exit and by `flushLogs()`; what a SIGKILL interrupts
 * may lose the lines of the last 250 ms.
 */
import { pino, type Logger, type LoggerOptions } from 'pino'

export type { Logger }

const CENSOR = '[redacted]'
/** Keys whose values are secrets wherever they appear (top level or one level down). */
const SECRET_KEYS = new Set(['secret', 'secrets'])
/** Header names whose values are credentials, in a `headers` object (top level or one level down). */
const SECRET_HEADERS = ['authorization', 'webhook-signature']

function scrubHeaders(headers: unknown): unknown {
  if (typeof headers !== 'object' || headers === null) return headers
  const h = headers as Record<string, unknown>
  if (!SECRET_HEADERS.some((name) => name in h)) return headers
  const copy = { ...h }
  for (const name of SECRET_HEADERS) if (name in copy) copy[name] = CENSOR
  return copy
}

function scrubLevel(obj: Record<string, unknown>, deeper: boolean): Record<string, unknown> {
  let out: Record<string, unknown> | null = null
  for (const key in obj) {
    const value = obj[key]
    let next = value
    if (SECRET_KEYS.has(key)) next = CENSOR
    else if (key === 'headers') next = scrubHeaders(value)
    else if (deeper && typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Error)) {
      next = scrubLevel(value as Record<string, unknown>, false)
    }
    if (next !== value) (out ??= { ...obj })[key] = next
  }
  return out ?? obj
}

/**
 * Replaces secrets in a log line's object: `secret`, `secrets` and the `authorization` and
 * `webhook-signature` headers, at the top level and one level down. The object is copied only when
 * it holds one. A walk of two levels costs a fraction of pino's path-based redaction, which runs
 * on every line (one per webhook attempt on the delivery path).
 */
export function redactSecrets(obj: Record<string, unknown>): Record<string, unknown> {
  return scrubLevel(obj, true)
}

/** The service's pino options (level, base, the secret redaction). */
export function loggerOptions(level: string): LoggerOptions {
  return { level, base: { service: 'lmtp-webhook' }, formatters: { log: redactSecrets } }
}

export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  const options = loggerOptions(level)
  if (destination) return pino(options, destination as never)
  const stream = pino.destination({ dest: 1, sync: false, minLength: 4096 })
  const flush = (): void => {
    try {
      stream.flushSync()
    } catch {
      // stdout closed or busy: nothing more can be done at exit
    }
  }
  process.once('exit', flush)
  setInterval(() => {
    try {
      stream.flush()
    } catch {
      // destroyed at exit
    }
  }, 250).unref()
  const logger = pino(options, stream)
  flushers.add(flush)
  return logger
}

const flushers = new Set<() => void>()

/** Writes out buffered log lines now (before a deliberate exit). */
export function flushLogs(): void {
  for (const flush of flushers) flush()
}
