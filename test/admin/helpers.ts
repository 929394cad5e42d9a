/** Admin API test helpers: the whole app with its admin server on an ephemeral port. */
import { setTimeout as sleep } from 'node:timers/promises'
import type { InjectOptions, LightMyRequestResponse } from 'fastify'
import type { AppHooks } from '../../src/app.js'
import type { AdminFastify } from '../../src/admin/context.js'
import { startApp, type TestApp } from '../helpers/app.js'

export const TOKEN = 'admin-token-0123456789abcdef'
export const SECRET = 'whsec_' + Buffer.alloc(32, 9).toString('base64')

export interface AdminTestApp extends TestApp {
  fastify: AdminFastify
  /** http://127.0.0.1:<admin port> */
  base: string
  /** fastify.inject() with the bearer token. */
  api(options: InjectOptions): Promise<LightMyRequestResponse>
}

export async function startAdmin(
  t: { teardown: (fn: () => unknown) => void },
  env: Record<string, string> = {},
  hooks: AppHooks = {},
  options: { prefix?: string; clean?: boolean } = {},
): Promise<AdminTestApp> {
  const started = await startApp(t, { ADMIN_PORT: '0', ADMIN_HOST: '127.0.0.1', ADMIN_TOKENS: TOKEN, ...env }, hooks, options)
  const fastify = started.app.admin!.fastify
  return {
    ...started,
    fastify,
    base: `http://127.0.0.1:${started.adminPort}`,
    api: (o) => fastify.inject({ ...o, headers: { authorization: `Bearer ${TOKEN}`, ...o.headers } }),
  }
}

/** Polls `probe` until it returns something truthy; fails after `ms`. */
export async function until<T>(what: string, probe: () => Promise<T> | T, ms = 10_000): Promise<Exclude<T, undefined | null | false>> {
  const end = Date.now() + ms
  for (;;) {
    const v = await probe()
    if (v) return v as Exclude<T, undefined | null | false>
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await sleep(25)
  }
}

export const transaction = (rcpts: string[], subject = 'admin test'): string =>
  'LHLO mta.test\r\nMAIL FROM:<sender@x.test>\r\n' +
  rcpts.map((r) => `RCPT TO:<${r}>\r\n`).join('') +
  `DATA\r\nSubject: ${subject}\r\nMessage-ID: <${Math.random()}@x.test>\r\n\r\nhello\r\n.\r\nQUIT\r\n`

/** The reply lines after the data, one per recipient. */
export function dataReplies(output: string): string[] {
  const lines = output.split('\r\n').filter((l) => l !== '')
  const start = lines.findIndex((l) => l.startsWith('354'))
  return lines.slice(start + 1, -1)
}
