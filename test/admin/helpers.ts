/** Admin API test helpers: the whole app with its admin server on an ephemeral port. */
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

/** Older names, kept for tests written against them: see test/helpers/until.ts and lmtp-client.ts. */
export { until } from '../helpers/until.js'
export { dataReplies, transaction } from '../helpers/lmtp-client.js'
