/**
 * The one root logger. Everything else takes a child logger carrying its context.
 *
 * Performance trade-off (the pino way): log lines are buffered and written in blocks of at least
 * 4 KiB rather than with one write(2) per line, which on the delivery hot path (one line per webhook
 * attempt) saves a system call per attempt. The buffer is also written every 250 ms, so a quiet
 * service still shows its logs promptly, and on exit and by `flushLogs()`; what a SIGKILL interrupts
 * may lose the lines of the last 250 ms.
 */
import { pino, type Logger } from 'pino'

export type { Logger }

export const REDACT_PATHS = [
  'secret',
  'secrets',
  '*.secret',
  '*.secrets',
  'headers.authorization',
  'headers["webhook-signature"]',
  '*.headers.authorization',
  '*.headers["webhook-signature"]',
  'req.headers.authorization',
]

export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  const options = {
    level,
    base: { service: 'lmtp-webhook' },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
  }
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
