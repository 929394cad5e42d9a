/**
 * Every error the admin server can produce answers `{ "error": { code, message, details? } }` with
 * a stable ADMIN_ERR_* code, over a real socket: the framework's own errors (unknown path, wrong
 * method, bad percent-encoding, over-long path parameter, content type, body limit) and what
 * Node's HTTP parser rejects before any request exists (malformed request line, oversized headers,
 * headers that never finish, missing Host, unsupported Expect).
 */
import t, { type Test } from 'tap'
import net from 'node:net'
import { readFileSync } from 'node:fs'
import { pino } from 'pino'
import { startAdmin, TOKEN } from './helpers.js'
import { loadConfig } from '../../src/config.js'
import { ErrorCodes } from '../../src/errors.js'
import { ADMIN_STATUS } from '../../src/admin/errors.js'
import { buildAdminServer, type AdminContext } from '../../src/admin/server.js'

interface RawResponse {
  status: number
  headers: Record<string, string>
  body: string
}

/** Writes `request` as is, reads until the server closes (every request here says `connection: close`). */
function raw(port: number, request: string | Buffer, opts: { endAfterMs?: number } = {}): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1' })
    const chunks: Buffer[] = []
    socket.on('data', (c: Buffer) => chunks.push(c))
    socket.on('error', () => {}) // a server that destroys the socket after its answer may reset it
    socket.on('close', () => {
      const text = Buffer.concat(chunks).toString('utf8')
      const end = text.indexOf('\r\n\r\n')
      if (end < 0) return reject(new Error(`no HTTP response: ${JSON.stringify(text)}`))
      const [statusLine, ...lines] = text.slice(0, end).split('\r\n')
      const headers: Record<string, string> = {}
      for (const l of lines) headers[l.slice(0, l.indexOf(':')).toLowerCase()] = l.slice(l.indexOf(':') + 1).trim()
      resolve({ status: Number(statusLine!.split(' ')[1]), headers, body: text.slice(end + 4) })
    })
    socket.write(request)
    if (opts.endAfterMs !== undefined) setTimeout(() => socket.end(), opts.endAfterMs)
  })
}

const AUTH = `Authorization: Bearer ${TOKEN}\r\n`
const get = (path: string, headers = AUTH): string => `GET ${path} HTTP/1.1\r\nHost: admin.test\r\n${headers}Connection: close\r\n\r\n`

/** The response is JSON of exactly the documented shape, with this status and code. */
function checkShape(
  t: Test,
  res: RawResponse,
  status: number,
  code: string,
  what: string,
): { code: string; message: string; details?: Record<string, unknown> } {
  t.equal(res.status, status, `${what}: status ${status} (${res.body.slice(0, 200)})`)
  t.match(res.headers['content-type'], /^application\/json/, `${what}: JSON`)
  let parsed: unknown
  try {
    parsed = JSON.parse(res.body)
  } catch {
    t.fail(`${what}: the body is JSON: ${JSON.stringify(res.body.slice(0, 200))}`)
    return { code: '', message: '' }
  }
  const body = parsed as { error: { code: string; message: string; details?: Record<string, unknown> } }
  t.same(Object.keys(body), ['error'], `${what}: one key, error`)
  if (typeof body.error !== 'object' || body.error === null) {
    t.fail(`${what}: error is an object: ${res.body.slice(0, 200)}`)
    return { code: '', message: '' }
  }
  t.ok(
    Object.keys(body.error).every((k) => ['code', 'message', 'details'].includes(k)),
    `${what}: error has only code, message and details (${Object.keys(body.error).join()})`,
  )
  t.equal(body.error.code, code, `${what}: code ${code}`)
  t.ok(code in ErrorCodes, `${what}: the code is in the registry`)
  t.equal(typeof body.error.message, 'string', `${what}: a message`)
  t.ok(body.error.message.length > 0, `${what}: a non-empty message`)
  if (body.error.details !== undefined) t.equal(typeof body.error.details, 'object', `${what}: details is an object`)
  return body.error
}

t.test('framework errors over a real socket: the one shape, a stable code', async (t) => {
  const { adminPort } = await startAdmin(t)
  const port = adminPort!

  const longId = await raw(port, get(`/v1/routes/${'a'.repeat(10_000)}`))
  checkShape(t, longId, 414, 'ADMIN_ERR_URI_TOO_LONG', 'a 10,000-character route id')
  t.notMatch(longId.body, /FST_ERR|aaaaaaaaaa/, 'neither the framework code nor the id is echoed')
  checkShape(t, await raw(port, get(`/v1/deliveries/${'b'.repeat(10_000)}/retry`)), 414, 'ADMIN_ERR_URI_TOO_LONG', 'a 10,000-character delivery id')
  checkShape(t, await raw(port, get(`/v1/routes/${'a'.repeat(10_000)}`, '')), 401, 'ADMIN_ERR_UNAUTHORIZED', 'a long id without a token')

  const text = `POST /v1/routes HTTP/1.1\r\nHost: admin.test\r\n${AUTH}Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi`
  checkShape(t, await raw(port, text), 415, 'ADMIN_ERR_UNSUPPORTED_MEDIA_TYPE', 'a text/plain body')
  const form = `PUT /v1/routes/x HTTP/1.1\r\nHost: admin.test\r\n${AUTH}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 3\r\nConnection: close\r\n\r\na=b`
  checkShape(t, await raw(port, form), 415, 'ADMIN_ERR_UNSUPPORTED_MEDIA_TYPE', 'a form body')

  const unknown = checkShape(t, await raw(port, get('/v1/nothing-here')), 404, 'ADMIN_ERR_NOT_FOUND', 'an unknown path')
  t.match(unknown.message, 'GET /v1/nothing-here')
  checkShape(t, await raw(port, get('/v1/nothing-here', '')), 401, 'ADMIN_ERR_UNAUTHORIZED', 'an unknown path without a token')
  checkShape(t, await raw(port, get('/v1/routes/')), 404, 'ADMIN_ERR_NOT_FOUND', 'a trailing slash')

  const patch = await raw(port, `PATCH /v1/routes HTTP/1.1\r\nHost: admin.test\r\n${AUTH}Connection: close\r\n\r\n`)
  const notAllowed = checkShape(t, patch, 405, 'ADMIN_ERR_METHOD_NOT_ALLOWED', 'PATCH on /v1/routes')
  t.equal(patch.headers.allow, 'GET, HEAD, POST', 'Allow lists the methods of the path')
  t.same(notAllowed.details, { allow: ['GET', 'HEAD', 'POST'] })
  const put = await raw(port, `PUT /v1/deliveries/msg_x HTTP/1.1\r\nHost: admin.test\r\n${AUTH}Content-Length: 0\r\nConnection: close\r\n\r\n`)
  checkShape(t, put, 405, 'ADMIN_ERR_METHOD_NOT_ALLOWED', 'PUT on a delivery')
  t.equal(put.headers.allow, 'GET, HEAD, DELETE')
  checkShape(
    t,
    await raw(port, `OPTIONS /v1/routes HTTP/1.1\r\nHost: admin.test\r\n${AUTH}Connection: close\r\n\r\n`),
    405,
    'ADMIN_ERR_METHOD_NOT_ALLOWED',
    'OPTIONS',
  )
  checkShape(
    t,
    await raw(port, `POST /healthz HTTP/1.1\r\nHost: admin.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`),
    401,
    'ADMIN_ERR_UNAUTHORIZED',
    'a wrong method without a token',
  )

  for (const path of ['/v1/routes/%E0%A4%A', '/v1/routes/%zz', '/v1/deliveries/%']) {
    const bad = checkShape(t, await raw(port, get(path)), 400, 'ADMIN_ERR_BAD_REQUEST', `bad percent-encoding ${path}`)
    t.equal(bad.message, 'path: invalid percent-encoding')
    checkShape(t, await raw(port, get(path, '')), 401, 'ADMIN_ERR_UNAUTHORIZED', `bad percent-encoding ${path} without a token`)
  }

  const big = JSON.stringify({ id: 'big', match: 'big@example.com', url: 'http://127.0.0.1:9/', headers: { 'x-pad': 'p'.repeat(300 * 1024) } })
  const tooLarge = `POST /v1/routes HTTP/1.1\r\nHost: admin.test\r\n${AUTH}Content-Type: application/json\r\nContent-Length: ${big.length}\r\nConnection: close\r\n\r\n${big}`
  checkShape(t, await raw(port, tooLarge), 413, 'ADMIN_ERR_PAYLOAD_TOO_LARGE', 'a body over 256 KiB')

  const json = (body: string): string =>
    `POST /v1/routes HTTP/1.1\r\nHost: admin.test\r\n${AUTH}Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`
  checkShape(t, await raw(port, json('{"id": ')), 400, 'ADMIN_ERR_VALIDATION', 'invalid JSON')
  checkShape(t, await raw(port, json('')), 400, 'ADMIN_ERR_VALIDATION', 'an empty JSON body')
  checkShape(t, await raw(port, json('{"__proto__": {"x": 1}}')), 400, 'ADMIN_ERR_VALIDATION', 'a __proto__ key')
  checkShape(t, await raw(port, get('/v1/deliveries?limit=abc')), 400, 'ADMIN_ERR_VALIDATION', 'a bad query parameter')
})

t.test("what Node's HTTP parser rejects answers the one shape too", async (t) => {
  const { adminPort } = await startAdmin(t)
  const port = adminPort!
  const cases: [string, string, number, string][] = [
    ['an unknown method', `FOO /v1/routes HTTP/1.1\r\nHost: admin.test\r\n\r\n`, 400, 'ADMIN_ERR_BAD_REQUEST'],
    ['not HTTP at all', 'HELLO\r\n\r\n', 400, 'ADMIN_ERR_BAD_REQUEST'],
    ['an HTTP/2 preface', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 400, 'ADMIN_ERR_BAD_REQUEST'],
    ['a bad content-length', `POST /v1/routes HTTP/1.1\r\nHost: admin.test\r\nContent-Length: abc\r\n\r\n{}`, 400, 'ADMIN_ERR_BAD_REQUEST'],
    [
      'content-length with transfer-encoding',
      `POST /v1/routes HTTP/1.1\r\nHost: admin.test\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
      400,
      'ADMIN_ERR_BAD_REQUEST',
    ],
    ['a 20 KiB header', `GET /healthz HTTP/1.1\r\nHost: admin.test\r\nX-Pad: ${'a'.repeat(20_000)}\r\n\r\n`, 431, 'ADMIN_ERR_HEADERS_TOO_LARGE'],
    ['a 100,000-character path', `GET /${'a'.repeat(100_000)} HTTP/1.1\r\nHost: admin.test\r\n\r\n`, 431, 'ADMIN_ERR_HEADERS_TOO_LARGE'],
    ['HTTP/1.1 without Host', `GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n`, 400, 'ADMIN_ERR_BAD_REQUEST'],
    ['an unsupported Expect', `GET /healthz HTTP/1.1\r\nHost: admin.test\r\nExpect: magic\r\nConnection: close\r\n\r\n`, 417, 'ADMIN_ERR_EXPECTATION_FAILED'],
  ]
  for (const [what, request, status, code] of cases) checkShape(t, await raw(port, request), status, code, what)

  const http10 = await raw(port, 'GET /healthz HTTP/1.0\r\n\r\n')
  t.equal(http10.status, 200, 'HTTP/1.0 needs no Host')
})

t.test('headers that never finish: 408 in the one shape', async (t) => {
  const config = loadConfig({ ADMIN_TOKENS: TOKEN, LOG_LEVEL: 'silent' })
  const log = pino({ level: 'silent' })
  // Nothing behind the routes is reached: the request never gets past its headers.
  const ctx = new Proxy({ config, log } as unknown as AdminContext, {
    get: (target, key) => {
      if (key === 'config' || key === 'log') return target[key]
      throw new Error(`the test context has no ${String(key)}`)
    },
  })
  const server = await buildAdminServer(ctx, { headersTimeoutMs: 300 })
  t.teardown(() => server.close())
  const port = await server.listen('127.0.0.1', 0)
  const slow = await raw(port, `GET /healthz HTTP/1.1\r\nHost: admin.test\r\nX-Slow: `)
  checkShape(t, slow, 408, 'ADMIN_ERR_TIMEOUT', 'headers not finished in time')
})

t.test('docs/admin.md lists every admin error code with its status', async (t) => {
  const doc = readFileSync(new URL('../../docs/admin.md', import.meta.url), 'utf8')
  for (const [code, status] of Object.entries(ADMIN_STATUS)) {
    t.match(doc, new RegExp(`\\| \`${code}\` \\| ${status} \\|`), `${code} (${status}) is in the table`)
  }
})
