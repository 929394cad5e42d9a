/** A logger whose lines the test can read: the service's own pino options, written to memory. */
import { Writable } from 'node:stream'
import { pino, type Logger } from 'pino'
import { loggerOptions } from '../../src/logger.js'

export interface CapturedLogs {
  readonly log: Logger
  /** Every line written so far, as one string. */
  text(): string
}

export function capturedLogs(level = 'debug'): CapturedLogs {
  let text = ''
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      text += chunk.toString()
      done()
    },
  })
  return { log: pino(loggerOptions(level), sink), text: () => text }
}
