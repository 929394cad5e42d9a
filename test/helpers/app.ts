/** Test helpers: the whole app against the real Redis, with its own key prefix. */
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'
import { pino } from 'pino'
import { loadConfig } from '../../src/config.js'
import { buildApp, type App, type AppHooks, type StartedApp } from '../../src/app.js'

/** Older names, kept for tests written against them: the receiver lives in webhook.ts. */
export { webhook, type Receiver as Hook, type Behaviour as HookBehaviour } from './webhook.js'

export const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379'

export function prefix(): string {
  return `test-${randomBytes(5).toString('hex')}`
}

/** Deletes every key under the prefix. */
export async function cleanRedis(p: string, url = REDIS_URL): Promise<void> {
  const redis = new Redis(url)
  let cursor = '0'
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${p}:*`, 'COUNT', 1000)
    cursor = next
    if (keys.length > 0) await redis.del(...keys)
  } while (cursor !== '0')
  await redis.quit()
}

export interface TestApp extends StartedApp {
  app: App
  prefix: string
}

export function routesFile(t: { teardown: (fn: () => unknown) => void }, yaml: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'lmtp-webhook-test-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'routes.yaml')
  writeFileSync(file, yaml)
  return file
}

export async function startApp(
  t: { teardown: (fn: () => unknown) => void },
  env: Record<string, string>,
  hooks: AppHooks = {},
  options: { prefix?: string; clean?: boolean } = {},
): Promise<TestApp> {
  const p = options.prefix ?? prefix()
  // Sentinel and cluster topologies are private to their test file (stopped with it); REDIS_URL
  // names a standalone server only.
  const topology = env.REDIS_MODE !== undefined && env.REDIS_MODE !== 'standalone'
  const config = loadConfig({
    ...(topology ? {} : { REDIS_URL }),
    REDIS_PREFIX: p,
    LMTP_HOST: '127.0.0.1',
    LMTP_PORT: '0',
    LMTP_HOSTNAME: 'lmtp.test',
    LMTP_DOMAINS: 'example.com',
    ADMIN_PORT: 'off',
    REPLY_TIMEOUT: '3s',
    SHUTDOWN_TIMEOUT: '2s',
    SHUTDOWN_DELAY: '0',
    LOG_LEVEL: 'silent',
    ...env,
  })
  const app = await buildApp(config, pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }), hooks)
  let closed = false
  // Registered before start(): an app whose start fails (a listener that cannot bind) still closes.
  t.teardown(async () => {
    if (!closed) await app.close()
    closed = true
    // A TLS server is private to its test file too, and cleanRedis speaks plain TCP.
    const tls = env.REDIS_TLS !== undefined || env.REDIS_URL?.startsWith('rediss://') === true
    if (options.clean !== false && !topology && !tls) await cleanRedis(p, env.REDIS_URL ?? REDIS_URL)
  })
  const started = await app.start()
  return { ...started, app, prefix: p }
}
