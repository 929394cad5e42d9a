/**
 * The operator dashboard, GET /ui: a static page (ui/index.html, ui/app.js, ui/app.css, no build
 * step, no asset from anywhere else) served without a token, because it holds no data. The page
 * asks for an admin token and sends it as a bearer header on every API call it makes; a strict
 * Content-Security-Policy keeps it to this server's own scripts, styles and API.
 */
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import type { AdminFastify } from './context.js'
import { adminError } from './errors.js'

/** ui/, from src/admin/ and from dist/admin/ alike. */
export const UI_DIR = fileURLToPath(new URL('../../ui/', import.meta.url))

const FILES: Record<string, { file: string; type: string }> = {
  '/ui': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/ui/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/ui/app.css': { file: 'app.css', type: 'text/css; charset=utf-8' },
}

/** Paths served without a token. */
export const UI_PATHS: readonly string[] = [...Object.keys(FILES), '/ui/']

const SECURITY_HEADERS = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cache-control': 'no-cache',
}

function load(file: string): Buffer | null {
  try {
    return readFileSync(`${UI_DIR}${file}`)
  } catch {
    return null
  }
}

export function registerUi(app: AdminFastify): void {
  for (const [path, { file, type }] of Object.entries(FILES)) {
    const body = load(file)
    app.get(path, { schema: { hide: true } }, async (_req, res) => {
      if (body === null) throw adminError('ADMIN_ERR_NOT_FOUND', 'the dashboard is not shipped with this build')
      return res.headers({ ...SECURITY_HEADERS, 'content-type': type }).send(body)
    })
  }
  // Relative, so it also works behind a reverse proxy that serves the admin API under a path.
  app.get('/ui/', { schema: { hide: true } }, async (_req, res) => res.redirect('../ui', 302))
}
