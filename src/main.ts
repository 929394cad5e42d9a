/**
 * Process entry point: configuration, logger, start, signals, graceful shutdown. Nothing else.
 */
import { loadConfig } from './config.js'
import { isAppError } from './errors.js'
import { createLogger, flushLogs } from './logger.js'
import { buildApp } from './app.js'

async function main(): Promise<void> {
  let config
  try {
    config = loadConfig(process.env)
  } catch (err) {
    if (isAppError(err, 'CONFIG_ERR_INVALID')) {
      process.stderr.write(`lmtp-webhook: configuration error: ${err.message}\n`)
      process.exit(78) // EX_CONFIG
    }
    throw err
  }
  const log = createLogger(config.logLevel)
  let app
  try {
    app = await buildApp(config, log)
  } catch (err) {
    if (isAppError(err)) {
      log.fatal({ code: err.code, details: err.details }, err.message)
      process.stderr.write(`lmtp-webhook: ${err.message}\n`)
      process.exit(78)
    }
    throw err
  }
  const started = await app.start()
  log.info({ ...started, role: config.role }, 'lmtp-webhook started')
  flushLogs()

  let stopping = false
  const stop = (signal: string): void => {
    if (stopping) return
    stopping = true
    log.info({ signal }, 'shutting down')
    const hard = setTimeout(
      () => {
        log.error('shutdown took too long, exiting')
        process.exit(1)
      },
      config.lmtp.shutdownDelayMs + config.lmtp.shutdownTimeoutMs * 2 + 5000,
    )
    hard.unref()
    app.close().then(
      () => {
        log.info('stopped')
        process.exit(0)
      },
      (err: unknown) => {
        log.error({ err }, 'error during shutdown')
        process.exit(1)
      },
    )
  }
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGINT', () => stop('SIGINT'))
}

process.on('unhandledRejection', (err) => {
  process.stderr.write(`lmtp-webhook: unhandled rejection: ${(err as Error)?.stack ?? String(err)}\n`)
  process.exit(1)
})

main().catch((err: unknown) => {
  process.stderr.write(`lmtp-webhook: failed to start: ${(err as Error)?.stack ?? String(err)}\n`)
  process.exit(1)
})
