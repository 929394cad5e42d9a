/** The one root logger. Everything else takes a child logger carrying its context. */
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
  return destination ? pino(options, destination as never) : pino(options)
}
