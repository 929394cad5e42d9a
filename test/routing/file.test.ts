import t from 'tap'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { isAppError, type ErrorCode } from '../../src/errors.js'
import { loadRoutesFile } from '../../src/routing/file.js'

const dir = mkdtempSync(join(tmpdir(), 'routes-test-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

let n = 0
function file(text: string): string {
  const path = join(dir, `routes-${n++}.yaml`)
  writeFileSync(path, text)
  return path
}

function failure(path: string, code: ErrorCode = 'ROUTE_ERR_INVALID'): string {
  try {
    loadRoutesFile(path)
  } catch (err) {
    if (!isAppError(err, code)) throw err
    return err.message
  }
  throw new Error(`loaded ${path}`)
}

const SECRET = `whsec_${Buffer.alloc(32, 7).toString('base64')}`

t.test('a good file', async (t) => {
  const path = file(`
# routes of the example tenant
routes:
  - id: support
    match: support@example.com
    url: https://hooks.example.com/support
    secret: ${SECRET}
    headers:
      Authorization: Bearer abc
  - id: tagged
    match: "user+*@example.com"
    url: http://127.0.0.1:9000/tagged
    format: raw
    timeout: 5s
  - id: everyone
    match: "*@example.com"
    url: https://hooks.example.com/all
    mode: accept
    retry: { attempts: 5, backoff: 10s, maxDelay: 10m }
    replies:
      "404": { code: 550, enhanced: 5.1.1, message: No such mailbox }
      timeout: { code: 451, enhanced: 4.4.1 }
`)
  const routes = loadRoutesFile(path)
  t.same(
    routes.map((r) => r.id),
    ['support', 'tagged', 'everyone'],
    'routes keep the file order',
  )
  t.ok(
    routes.every((r) => r.source === 'file'),
    'all are file routes',
  )
  t.same(routes[0]!.secrets, [SECRET])
  t.same(routes[0]!.headers, { authorization: 'Bearer abc' })
  t.equal(routes[1]!.format, 'raw')
  t.equal(routes[1]!.timeoutMs, 5000)
  t.same(routes[2]!.retry, { attempts: 5, backoffMs: 10_000, maxDelayMs: 600_000 })
  t.same(routes[2]!.replies['404'], { code: 550, enhanced: '5.1.1', message: 'No such mailbox' })
})

t.test('a bare number in a duration of the file is seconds', async (t) => {
  const path = file('routes:\n  - { id: a, match: "a@example.com", url: "https://h.example.com/", timeout: 30, retry: { backoff: 5, maxDelay: 600 } }\n')
  const [route] = loadRoutesFile(path)
  t.equal(route!.timeoutMs, 30_000, 'timeout: 30 is 30 s, not 30 ms')
  t.same(route!.retry, { attempts: 10, backoffMs: 5_000, maxDelayMs: 600_000 })
})

t.test('an empty file or an empty list has no routes', async (t) => {
  t.same(loadRoutesFile(file('')), [])
  t.same(loadRoutesFile(file('# nothing yet\n')), [])
  t.same(loadRoutesFile(file('routes: []\n')), [])
  t.same(loadRoutesFile(file('routes:\n')), [])
})

t.test('each kind of bad file gives an error naming the file, the route and the field', async (t) => {
  const missing = join(dir, 'does-not-exist.yaml')
  t.equal(failure(missing), `${missing}: cannot read the routes file (ENOENT)`)

  let path = file('routes:\n  - id: a\n    match: [unclosed\n')
  t.match(failure(path), new RegExp(`^${path}: not valid YAML: line \\d+, column \\d+: `))

  path = file('routes:\n  - id: a\n    id: b\n')
  t.equal(failure(path), `${path}: not valid YAML: line 3, column 5: Map keys must be unique`, 'a key twice in one map')

  path = file('- id: a\n  match: a@b.c\n  url: http://x\n')
  t.equal(failure(path), `${path}: expected a map with a "routes" list at the top level`)

  path = file('routes:\n  id: a\n')
  t.equal(failure(path), `${path}: routes: expected a list of routes, got object`)

  path = file('route:\n  - id: a\n')
  t.equal(failure(path), `${path}: route: unknown top-level field (expected only "routes")`)

  path = file(`routes:
  - id: ok
    match: ok@example.com
    url: http://127.0.0.1/ok
  - id: sales
    match: sales@example.com
    url: ftp://x
`)
  t.equal(failure(path), `${path}: routes[1] (id "sales"): url: expected an http(s) URL, got "ftp://x"`)

  path = file(`routes:
  - id: sales
    match: "sales@"
    url: http://127.0.0.1/
`)
  t.match(failure(path), `${path}: routes[0] (id "sales"): match: expected a domain name after "@"`)

  path = file(`routes:
  - id: sales
    match: sales@example.com
    url: http://127.0.0.1/
    timeout: forever
`)
  t.match(failure(path), `${path}: routes[0] (id "sales"): timeout: expected a duration`)

  path = file(`routes:
  - just a string
`)
  t.equal(failure(path), `${path}: routes[0]: expected a route (a map with id, match, url), got "just a string"`)
})

t.test('duplicate ids and patterns are errors', async (t) => {
  let path = file(`routes:
  - { id: a, match: a@example.com, url: "http://127.0.0.1/a" }
  - { id: b, match: b@example.com, url: "http://127.0.0.1/b" }
  - { id: a, match: c@example.com, url: "http://127.0.0.1/c" }
`)
  t.equal(failure(path, 'ROUTE_ERR_DUPLICATE'), `${path}: routes[2] (id "a"): id: already used by routes[0]`)

  path = file(`routes:
  - { id: a, match: "*@Example.com", url: "http://127.0.0.1/a" }
  - { id: b, match: "*@example.COM.", url: "http://127.0.0.1/b" }
`)
  t.equal(failure(path, 'ROUTE_ERR_DUPLICATE'), `${path}: routes[1] (id "b"): match: "*@example.com" is already the pattern of routes[0] (id "a")`)
})

t.test('the example in docs/routes.md is a valid routes file', async (t) => {
  const doc = readFileSync(new URL('../../docs/routes.md', import.meta.url), 'utf8')
  const example = /```yaml\n([\s\S]*?)```/.exec(doc)?.[1]
  t.ok(example, 'the page has a YAML example')
  const routes = loadRoutesFile(file(example!))
  t.same(
    routes.map((r) => r.id),
    ['support', 'sales', 'example-catch-all', 'crm-leads', 'tenants'],
  )
  t.equal(routes[2]!.maxInlineAttachmentBytes, 0)
  t.match(routes[3], { concurrency: 4, rateLimit: { max: 50, perMs: 60_000 }, circuitBreaker: { failures: 3, windowMs: 30_000, coolDownMs: 120_000 } })
  t.same(routes[4]!.replies.timeout, { code: 451, enhanced: '4.4.1', message: undefined })
})
