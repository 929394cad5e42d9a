import t from 'tap'
import { randomBytes } from 'node:crypto'
import { isAppError } from '../../src/errors.js'
import { parseRoute, publicView, routeReplyFor, routeToDefinition, secretId, type Route } from '../../src/routing/schema.js'
import { parseDuration } from '../../src/config.js'

const secret = (bytes = 32): string => `whsec_${randomBytes(bytes).toString('base64')}`
const base = { id: 'sales', match: 'sales@example.com', url: 'https://hooks.example.com/mail' }

function problem(input: unknown, where = 'routes[2]'): string {
  try {
    parseRoute(input, where)
  } catch (err) {
    if (!isAppError(err, 'ROUTE_ERR_INVALID')) throw err
    return err.message
  }
  throw new Error(`accepted: ${JSON.stringify(input)}`)
}

t.test('a minimal route gets the documented defaults', async (t) => {
  const route = parseRoute(base, 'routes[0]')
  t.same(route, {
    id: 'sales',
    match: 'sales@example.com',
    url: 'https://hooks.example.com/mail',
    format: 'json',
    secrets: [],
    headers: {},
    timeoutMs: undefined,
    mode: 'defer',
    retry: { attempts: 10, backoffMs: 30_000, maxDelayMs: 3_600_000 },
    maxInlineAttachmentBytes: 10 * 1024 * 1024,
    recipientCheckUrl: undefined,
    replies: {},
    concurrency: undefined,
    rateLimit: undefined,
    circuitBreaker: { failures: 5, windowMs: 60_000, coolDownMs: 30_000 },
    source: 'file',
  })
  t.equal(parseRoute(base, 'route', 'api').source, 'api')
})

t.test('a full route is normalised', async (t) => {
  const [s1, s2] = [secret(24), secret(64)]
  const route = parseRoute(
    {
      id: 'support-eu_1',
      match: 'Support+*@Example.COM',
      url: 'http://127.0.0.1:8080/hook?x=1',
      format: 'json+raw',
      secrets: [s1, s2],
      headers: { Authorization: 'Bearer abc', 'X-Tenant': 'eu' },
      timeout: '2.5s',
      mode: 'accept',
      retry: { attempts: 3, backoff: '500ms', maxDelay: '2m' },
      maxInlineAttachmentBytes: '512KiB',
      recipientCheckUrl: 'https://hooks.example.com/check',
      replies: { '404': { code: 550, enhanced: '5.1.1', message: 'no such\r\nuser' }, '5XX': { code: 451 }, timeout: { code: 250, message: 'queued' } },
    },
    'routes[0]',
  )
  t.equal(route.match, 'support+*@example.com')
  t.same(route.secrets, [s1, s2], 'secrets keep their order, newest first')
  t.same(route.headers, { authorization: 'Bearer abc', 'x-tenant': 'eu' })
  t.equal(route.timeoutMs, 2500)
  t.same(route.retry, { attempts: 3, backoffMs: 500, maxDelayMs: 120_000 })
  t.equal(route.maxInlineAttachmentBytes, 512 * 1024)
  t.same(route.replies['404'], { code: 550, enhanced: '5.1.1', message: 'no such user' }, 'reply text loses its line break')
  t.same(route.replies['5xx'], { code: 451, enhanced: undefined, message: undefined }, 'class keys are lower-cased')
  t.equal(parseRoute({ ...base, secret: s1 }, 'r').secrets[0], s1, 'one secret becomes a list of one')
  t.equal(parseRoute({ ...base, maxInlineAttachmentBytes: 0 }, 'r').maxInlineAttachmentBytes, 0, '0 keeps attachments out')
})

t.test('reply overrides: exact status first, then its class', async (t) => {
  const route = parseRoute({ ...base, replies: { '404': { code: 550, enhanced: '5.1.1' }, '4xx': { code: 554 }, timeout: { code: 451 } } }, 'r')
  t.equal(routeReplyFor(route, 404)?.enhanced, '5.1.1')
  t.equal(routeReplyFor(route, 410)?.code, 554)
  t.equal(routeReplyFor(route, 503), undefined)
  t.equal(routeReplyFor(route, 'timeout')?.code, 451)
  t.equal(routeReplyFor(route, 'error'), undefined)
})

t.test('every schema error names the route and the field and says what was expected', async (t) => {
  const cases: Array<[Record<string, unknown>, string]> = [
    [{ ...base, url: 'ftp://x' }, 'routes[2] (id "sales"): url: expected an http(s) URL, got "ftp://x"'],
    [{ id: 'sales', match: 'a@b.c' }, 'routes[2] (id "sales"): url: required, expected an http(s) URL'],
    [{ ...base, id: 'Sales!' }, 'routes[2]: id: expected an id of 1 to 64 characters'],
    [{ ...base, id: 'x'.repeat(65) }, 'routes[2]: id: expected an id of 1 to 64'],
    [{ ...base, match: 'nope' }, 'routes[2] (id "sales"): match: expected a recipient pattern'],
    [{ ...base, format: 'xml' }, 'format: expected one of "json", "json+raw", "raw", got "xml"'],
    [{ ...base, mode: 'later' }, 'mode: expected one of "defer", "accept", "async", got "later"'],
    [{ ...base, timeout: 'soon' }, 'timeout: expected a duration: seconds or a string such as "10s"'],
    [{ ...base, timeout: '10 sec' }, 'timeout: expected a duration'],
    [{ ...base, timeout: -1 }, 'timeout: expected a duration'],
    [{ ...base, timeout: 0.005 }, 'timeout: expected a duration from 10 ms to 900000 ms'],
    [{ ...base, timeout: 901 }, 'timeout: expected a duration from 10 ms to 900000 ms (such as "10s", "500ms", "2m"), got 901'],
    [{ ...base, retry: { backoff: 60, maxDelay: 30 } }, 'retry.maxDelay: expected a duration of at least retry.backoff (60000 ms), got 30000 ms'],
    [{ ...base, timeout: '1d' }, 'timeout: expected a duration from 10 ms to 900000 ms (such as "10s", "500ms", "2m"), got "1d"'],
    [{ ...base, retry: { attempts: 0 } }, 'retry.attempts: expected an integer from 1 to 100, got 0'],
    [{ ...base, retry: { attempts: 2.5 } }, 'retry.attempts: expected an integer from 1 to 100, got 2.5'],
    [{ ...base, retry: { backoff: '5m', maxDelay: '1m' } }, 'retry.maxDelay: expected a duration of at least retry.backoff (300000 ms), got 60000 ms'],
    [{ ...base, retry: { tries: 3 } }, 'retry.tries: unknown field in retry'],
    [{ ...base, retries: 3 }, 'retries: unknown field (known fields: id, match, url'],
    [{ ...base, maxInlineAttachmentBytes: -1 }, 'maxInlineAttachmentBytes: expected a size in bytes'],
    [
      { ...base, maxInlineAttachmentBytes: '2GiB' },
      'maxInlineAttachmentBytes: expected a size in bytes or a string such as "10MiB", "512KiB" (0 = metadata only), at most 1GiB, got "2GiB"',
    ],
    [{ ...base, recipientCheckUrl: 'mailto:x@y' }, 'recipientCheckUrl: expected an http(s) URL, got "mailto:x@y"'],
    [
      { ...base, url: 'https://user:pw@hooks.example.com/' },
      'url: expected an http(s) URL without credentials (put them in headers, such as Authorization), got a URL with user info for hooks.example.com',
    ],
    [{ ...base, url: 'http://' }, 'url: expected an http(s) URL'],
    [{ ...base, headers: { Host: 'x' } }, 'headers.Host: expected a header the service does not set itself'],
    [{ ...base, headers: { 'Content-Type': 'text/plain' } }, 'headers.Content-Type: expected a header the service does not set itself'],
    [{ ...base, headers: { 'Webhook-Signature': 'v1,x' } }, 'headers.Webhook-Signature: expected a header'],
    [{ ...base, headers: { 'Transfer-Encoding': 'chunked' } }, 'headers.Transfer-Encoding: expected a header'],
    [{ ...base, headers: { 'User-Agent': 'me' } }, 'headers.User-Agent: expected a header'],
    [{ ...base, headers: { 'Bad Name': 'x' } }, 'headers.Bad Name: expected a header name'],
    [{ ...base, headers: { 'X-A': 'a', 'x-a': 'b' } }, 'headers.x-a: expected each header name once'],
    [
      { ...base, headers: { 'X-A': 1 } },
      'headers.X-A: expected a header value of at most 8192 characters without line breaks, got a value of number (not shown)',
    ],
    [
      { ...base, headers: { 'X-A': 'a\r\nInjected: 1' } },
      'headers.X-A: expected a header value of at most 8192 characters without line breaks, got a value of 14 characters (not shown)',
    ],
    [{ ...base, replies: { '600': { code: 550 } } }, 'replies.600: expected a key that is an HTTP status from 200 to 599'],
    [{ ...base, replies: { '404': { code: 350 } } }, 'replies.404.code: expected a reply code of class 2, 4 or 5 (such as 250, 451, 550), got 350'],
    [{ ...base, replies: { '404': { code: 700 } } }, 'replies.404.code: expected a reply code of class 2, 4 or 5'],
    [
      { ...base, replies: { '404': { code: 550, enhanced: '4.1.1' } } },
      'replies.404.enhanced: expected an enhanced status code of class 5 (as the code 550), got "4.1.1"',
    ],
    [{ ...base, replies: { '404': { code: 550, text: 'x' } } }, 'replies.404.text: unknown field in replies.404'],
    [{ ...base, replies: { '4xx': { code: 550 }, '4XX': { code: 451 } } }, 'replies.4XX: expected each key once'],
  ]
  for (const [input, message] of cases) {
    const got = problem(input)
    t.ok(got.startsWith('routes[2]'), `message names the route: ${got}`)
    t.match(got, message, message)
  }
})

t.test('secrets are checked but never shown in errors', async (t) => {
  const short = `whsec_${randomBytes(16).toString('base64')}`
  const long = `whsec_${randomBytes(72).toString('base64')}`
  t.match(problem({ ...base, secret: short }), 'secret: expected a secret "whsec_" followed by base64 of 24 to 64 bytes (it decodes to 16)')
  t.match(problem({ ...base, secrets: [secret(), long] }), /secrets\[1\]: expected a secret "whsec_"/)
  t.match(
    problem({ ...base, secret: 'sk_live_abcdef' }),
    'secret: expected a secret "whsec_" followed by base64 of 24 to 64 bytes, got a value of 14 characters (not shown)',
  )
  t.match(problem({ ...base, secrets: [] }), 'secrets: expected a list of 1 to 10 secrets')
  t.match(problem({ ...base, secret: secret(), secrets: [secret()] }), 'secret: expected either secret or secrets, not both')
  const same = secret()
  t.match(problem({ ...base, secrets: [same, same] }), 'secrets: expected different secrets')
  for (const bad of [short, long, 'sk_live_abcdef']) {
    t.notMatch(problem({ ...base, secret: bad }), bad, 'the secret is not in the message')
    t.notMatch(problem({ ...base, secret: bad }), bad.slice(6, 20), 'no part of it either')
  }
  t.notMatch(problem({ ...base, headers: { Authorization: 'Bearer top\nsecret' } }), 'top', 'a header value is not shown')
})

t.test('several problems are reported together', async (t) => {
  const message = problem({ ...base, url: 'ftp://x', format: 'xml', timeout: 'soon' })
  t.match(message, /^routes\[2\] \(id "sales"\): 3 problems: /)
  t.match(message, 'url: expected')
  t.match(message, 'format: expected')
  t.match(message, 'timeout: expected')
})

t.test('things that are not a route', async (t) => {
  for (const input of [null, 'sales', 42, [base]]) {
    t.match(problem(input, 'routes[0]'), /^routes\[0\]: expected a route \(a map with id, match, url\), got /)
  }
})

t.test('a bare number in a route duration is seconds, as in the environment', async (t) => {
  const r = parseRoute({ ...base, timeout: 30, retry: { backoff: 2, maxDelay: 90 } }, 'r')
  t.equal(r.timeoutMs, 30_000, 'timeout: 30 is 30 s')
  t.same(r.retry, { attempts: 10, backoffMs: 2_000, maxDelayMs: 90_000 }, 'retry.backoff and retry.maxDelay too')
  t.equal(parseRoute({ ...base, timeout: 1.5 }, 'r').timeoutMs, 1500, 'fractions of a second')
  t.equal(parseRoute({ ...base, timeout: '30' }, 'r').timeoutMs, 30_000, 'a string without a unit is seconds too')
  t.equal(parseRoute({ ...base, timeout: '1500ms' }, 'r').timeoutMs, 1500, 'units still work')
  t.equal(parseRoute({ ...base, timeout: 0.01 }, 'r').timeoutMs, 10, 'down to the 10 ms floor')
  t.equal(parseRoute({ ...base, timeout: '30' }, 'r').timeoutMs, parseDuration('30'), 'the same reading as REPLY_TIMEOUT=30')
})

t.test('routeToDefinition writes durations with their unit', async (t) => {
  const def = routeToDefinition(parseRoute({ ...base, timeout: 2.5, retry: { backoff: '1m', maxDelay: 7200 } }, 'r'))
  t.equal(def.timeout, '2500ms')
  t.same(def.retry, { attempts: 10, backoff: '60000ms', maxDelay: '7200000ms' })
})

t.test('routeToDefinition gives a definition that parses back to the same route', async (t) => {
  const routes: Route[] = [
    parseRoute(base, 'r', 'api'),
    parseRoute(
      {
        ...base,
        match: 'A+*@B.example',
        secret: secret(),
        headers: { 'X-Key': 'v' },
        timeout: '3s',
        mode: 'accept',
        retry: { attempts: 2, backoff: 0.1, maxDelay: '1s' },
        recipientCheckUrl: 'http://127.0.0.1/c',
        replies: { '404': { code: 550, enhanced: '5.1.1', message: 'gone' }, error: { code: 451 } },
        concurrency: 4,
        rateLimit: { max: 10, per: '1s' },
        circuitBreaker: { failures: 3, window: '10s', coolDown: '2m' },
      },
      'r',
      'api',
    ),
    parseRoute({ ...base, circuitBreaker: false }, 'r', 'api'),
  ]
  for (const route of routes) {
    const definition = JSON.parse(JSON.stringify(routeToDefinition(route))) as unknown
    t.same(parseRoute(definition, 'r', 'api'), route)
  }
})

t.test('publicView hides secrets and credential headers', async (t) => {
  const [s1, s2] = [secret(), secret()]
  const route = parseRoute({ ...base, secrets: [s1, s2], headers: { Authorization: 'Bearer abc', 'X-Api-Key': 'k', 'X-Tenant': 'eu' } }, 'r')
  const view = publicView(route)
  t.equal(view.hasSecret, true)
  t.same(view.secretIds, [secretId(s1), secretId(s2)])
  t.match(view.secretIds[0], /^[0-9a-f]{8}$/)
  t.same(view.headers, { authorization: '[redacted]', 'x-api-key': '[redacted]', 'x-tenant': 'eu' })
  const text = JSON.stringify(view)
  for (const hidden of [s1, s2, s1.slice(6), 'Bearer abc']) t.notMatch(text, hidden, 'nothing secret in the public view')
  t.notOk('secrets' in view, 'no secrets field')
  t.same(publicView(parseRoute(base, 'r')).secretIds, [])
  t.equal(publicView(parseRoute(base, 'r')).hasSecret, false)
})

t.test('protection fields: concurrency, rateLimit and circuitBreaker are normalised, with defaults', async (t) => {
  const route = parseRoute({ ...base, concurrency: 8, rateLimit: { max: 100, per: '1m' }, circuitBreaker: { failures: 3 } }, 'r')
  t.equal(route.concurrency, 8)
  t.same(route.rateLimit, { max: 100, perMs: 60_000 })
  t.same(route.circuitBreaker, { failures: 3, windowMs: 60_000, coolDownMs: 30_000 }, 'fields left out take their defaults')
  t.same(parseRoute({ ...base, circuitBreaker: {} }, 'r').circuitBreaker, { failures: 5, windowMs: 60_000, coolDownMs: 30_000 })
  t.equal(parseRoute({ ...base, circuitBreaker: false }, 'r').circuitBreaker, null, 'false turns the breaker off')
  t.same(parseRoute({ ...base, circuitBreaker: { window: 0.5, coolDown: '1.5s' } }, 'r').circuitBreaker, { failures: 5, windowMs: 500, coolDownMs: 1500 })
})

t.test('bad protection fields are refused, naming the field', async (t) => {
  const cases: [unknown, RegExp][] = [
    [{ concurrency: 0 }, /^routes\[2\] \(id "sales"\): concurrency: expected an integer from 1 to 10000, got 0$/],
    [{ concurrency: '2' }, /concurrency: expected an integer from 1 to 10000, got "2"$/],
    [{ rateLimit: 5 }, /rateLimit: expected a map with max and per/],
    [{ rateLimit: { max: 3 } }, /: rateLimit\.per: required, expected a duration/],
    [{ rateLimit: { max: 0, per: '1s' } }, /: rateLimit\.max: expected an integer from 1 to 100000, got 0$/],
    [{ rateLimit: { max: 3, per: '1ms' } }, /: rateLimit\.per: expected a duration from 10 ms/],
    [{ rateLimit: { max: 3, per: '1s', burst: 2 } }, /: rateLimit\.burst: unknown field in rateLimit$/],
    [{ circuitBreaker: true }, /: circuitBreaker: expected false, or a map with failures, window and coolDown, got true$/],
    [{ circuitBreaker: { failures: 0 } }, /\): circuitBreaker\.failures: expected an integer from 1 to 1000, got 0$/],
    [{ circuitBreaker: { coolDown: 'soon' } }, /\): circuitBreaker\.coolDown: expected a duration: seconds or a string/],
    [{ circuitBreaker: { window: '5ms' } }, /\): circuitBreaker\.window: expected a duration from 100 ms/],
    [{ circuitBreaker: { threshold: 3 } }, /\): circuitBreaker\.threshold: unknown field in circuitBreaker$/],
  ]
  for (const [extra, expected] of cases) t.match(problem({ ...base, ...(extra as object) }), expected, JSON.stringify(extra))
})
