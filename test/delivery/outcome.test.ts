import t from 'tap'
import { formatReply } from '../../src/lmtp/reply.js'
import {
  decideReply,
  queuedReply,
  recipientOutcome,
  type AttemptSummary,
  type DeliveryMode,
  type FirstAttempt,
  type ReplyRoute,
} from '../../src/delivery/outcome.js'

const RCPT = 'bob@example.com'

interface Row {
  name: string
  result: AttemptSummary
  route?: ReplyRoute
  /** The exact reply line as the MTA would read it. */
  line: string | RegExp
  outcome: 'delivered' | 'rejected' | 'temporary'
  source?: 'default' | 'route' | 'webhook'
}

const table: Row[] = [
  // defaults, as docs/webhooks.md (Answering) lists them
  { name: '200', result: { status: 200 }, line: '250 2.0.0 <bob@example.com> delivered\r\n', outcome: 'delivered' },
  { name: '204', result: { status: 204 }, line: /^250 2\.0\.0 /, outcome: 'delivered' },
  { name: '404', result: { status: 404 }, line: /^550 5\.1\.1 <bob@example\.com> .*404/, outcome: 'rejected' },
  { name: '410', result: { status: 410 }, line: /^550 5\.1\.1 /, outcome: 'rejected' },
  { name: '413', result: { status: 413 }, line: /^552 5\.3\.4 /, outcome: 'rejected' },
  { name: '403', result: { status: 403 }, line: /^550 5\.7\.1 /, outcome: 'rejected' },
  { name: '400', result: { status: 400 }, line: /^554 5\.6\.0 .*HTTP 400/, outcome: 'rejected' },
  { name: '401', result: { status: 401 }, line: /^554 5\.6\.0 /, outcome: 'rejected' },
  { name: '422', result: { status: 422 }, line: /^554 5\.6\.0 /, outcome: 'rejected' },
  { name: '418 (other 4xx)', result: { status: 418 }, line: /^554 5\.6\.0 /, outcome: 'rejected' },
  { name: '408', result: { status: 408 }, line: /^451 4\.3\.0 /, outcome: 'temporary' },
  { name: '429', result: { status: 429 }, line: /^451 4\.3\.0 .*HTTP 429/, outcome: 'temporary' },
  { name: '500', result: { status: 500 }, line: /^451 4\.3\.0 /, outcome: 'temporary' },
  { name: '503', result: { status: 503 }, line: /^451 4\.3\.0 .*HTTP 503/, outcome: 'temporary' },
  { name: '302 is a failure, not a redirect', result: { status: 302 }, line: /^451 4\.3\.0 .*HTTP 302/, outcome: 'temporary' },
  { name: 'timeout', result: { error: { code: 'HOOK_ERR_TIMEOUT', message: 'x' } }, line: /^451 4\.3\.0 .*\(timeout\)/, outcome: 'temporary' },
  {
    name: 'connect error',
    result: { error: { code: 'HOOK_ERR_CONNECT', message: 'ECONNREFUSED 10.0.0.1' } },
    line: /^451 4\.3\.0 .*\(connection failed\)/,
    outcome: 'temporary',
  },
  {
    name: 'denied destination',
    result: { error: { code: 'HOOK_ERR_DESTINATION_DENIED', message: 'x' } },
    line: /^451 4\.3\.0 .*destination not allowed/,
    outcome: 'temporary',
  },
  { name: 'cancelled', result: { error: { code: 'HOOK_ERR_ABORTED', message: 'x' } }, line: /^451 4\.3\.0 /, outcome: 'temporary' },
  {
    name: 'status decides when the body was too large',
    result: { status: 200, error: { code: 'HOOK_ERR_RESPONSE_TOO_LARGE', message: 'x' } },
    line: /^250 2\.0\.0 /,
    outcome: 'delivered',
  },
  {
    name: 'status decides when the body timed out',
    result: { status: 404, error: { code: 'HOOK_ERR_TIMEOUT', message: 'x' } },
    line: /^550 5\.1\.1 /,
    outcome: 'rejected',
  },
  {
    name: 'the error message does not reach the reply',
    result: { error: { code: 'HOOK_ERR_CONNECT', message: 'ECONNREFUSED 10.0.0.1:8080' } },
    line: /^(?!.*10\.0\.0\.1)/,
    outcome: 'temporary',
  },

  // route overrides
  {
    name: 'route: exact status',
    result: { status: 404 },
    route: { replies: { '404': { code: 550, enhanced: '5.1.2', message: 'no such box' } } },
    line: '550 5.1.2 no such box\r\n',
    outcome: 'rejected',
    source: 'route',
  },
  {
    name: 'route: exact status beats class',
    result: { status: 404 },
    route: { replies: { '4xx': { code: 451 }, '404': { code: 550, message: 'gone' } } },
    line: '550 5.1.1 gone\r\n',
    outcome: 'rejected',
  },
  {
    name: 'route: class',
    result: { status: 409 },
    route: { replies: { '4xx': { code: 451, enhanced: '4.2.0', message: 'later' } } },
    line: '451 4.2.0 later\r\n',
    outcome: 'temporary',
    source: 'route',
  },
  {
    name: 'route: 5xx made permanent',
    result: { status: 503 },
    route: { replies: { '5xx': { code: 554, message: 'broken hook' } } },
    line: '554 5.0.0 broken hook\r\n',
    outcome: 'rejected',
  },
  {
    name: 'route: timeout',
    result: { error: { code: 'HOOK_ERR_TIMEOUT', message: 'x' } },
    route: { replies: { timeout: { code: 452, message: 'slow' } } },
    line: '452 4.3.0 slow\r\n',
    outcome: 'temporary',
  },
  {
    name: 'route: error',
    result: { error: { code: 'HOOK_ERR_CONNECT', message: 'x' } },
    route: { replies: { error: { code: 421, enhanced: '4.4.1', message: 'down' } } },
    line: '421 4.4.1 down\r\n',
    outcome: 'temporary',
  },
  {
    name: 'route: error covers timeout without a timeout key',
    result: { error: { code: 'HOOK_ERR_TIMEOUT', message: 'x' } },
    route: { replies: { error: { code: 450 } } },
    line: /^450 4\.3\.0 .*timeout/,
    outcome: 'temporary',
  },
  {
    name: 'route: timeout key does not cover connect errors',
    result: { error: { code: 'HOOK_ERR_CONNECT', message: 'x' } },
    route: { replies: { timeout: { code: 554 } } },
    line: /^451 4\.3\.0 /,
    outcome: 'temporary',
    source: 'default',
  },
  {
    name: 'route: enhanced of the wrong class falls back',
    result: { status: 404 },
    route: { replies: { '404': { code: 550, enhanced: '4.1.1' } } },
    line: /^550 5\.1\.1 /,
    outcome: 'rejected',
  },
  {
    name: 'route: an invalid code is ignored',
    result: { status: 404 },
    route: { replies: { '404': { code: 999 } } },
    line: /^550 5\.1\.1 /,
    outcome: 'rejected',
    source: 'default',
  },
  {
    name: 'route: message is sanitised too',
    result: { status: 404 },
    route: { replies: { '404': { code: 550, message: 'a\r\n250 ok' } } },
    line: '550 5.1.1 a 250 ok\r\n',
    outcome: 'rejected',
  },

  // the webhook's smtp override
  {
    name: 'smtp: same class accepted',
    result: { status: 403, json: { smtp: { code: 550, enhanced: '5.7.1', message: 'spam' } } },
    line: '550 5.7.1 spam\r\n',
    outcome: 'rejected',
    source: 'webhook',
  },
  {
    name: 'smtp: 2xx message',
    result: { status: 200, json: { smtp: { code: 250, message: 'stored as 42' } } },
    line: '250 2.0.0 stored as 42\r\n',
    outcome: 'delivered',
    source: 'webhook',
  },
  {
    name: 'smtp: 2xx status cannot reject',
    result: { status: 200, json: { smtp: { code: 550, enhanced: '5.7.1', message: 'no' } } },
    line: '250 2.0.0 no\r\n',
    outcome: 'delivered',
  },
  {
    name: 'smtp: permanent status cannot defer',
    result: { status: 400, json: { smtp: { code: 451, enhanced: '4.7.1', message: 'later' } } },
    line: '554 5.6.0 later\r\n',
    outcome: 'rejected',
  },
  {
    name: 'smtp: temporary status cannot reject',
    result: { status: 503, json: { smtp: { code: 550, message: 'no' } } },
    line: '451 4.3.0 no\r\n',
    outcome: 'temporary',
  },
  {
    name: 'smtp: temporary status may pick its 4xx',
    result: { status: 503, json: { smtp: { code: 452, enhanced: '4.2.2', message: 'mailbox full' } } },
    line: '452 4.2.2 mailbox full\r\n',
    outcome: 'temporary',
  },
  { name: 'smtp: 2xx status cannot claim a 4xx', result: { status: 202, json: { smtp: { code: 451 } } }, line: /^250 2\.0\.0 /, outcome: 'delivered' },
  {
    name: 'smtp: enhanced of the wrong class is replaced',
    result: { status: 404, json: { smtp: { code: 550, enhanced: '2.0.0', message: 'x' } } },
    line: '550 5.1.1 x\r\n',
    outcome: 'rejected',
  },
  {
    name: 'smtp: malformed enhanced is replaced',
    result: { status: 404, json: { smtp: { enhanced: '5.1.1\r\n250 2.0.0' } } },
    line: /^550 5\.1\.1 <bob@example\.com>/,
    outcome: 'rejected',
  },
  {
    name: 'smtp: code as a string is ignored',
    result: { status: 404, json: { smtp: { code: '550', message: 'x' } } },
    line: '550 5.1.1 x\r\n',
    outcome: 'rejected',
  },
  { name: 'smtp: 3-digit range only', result: { status: 404, json: { smtp: { code: 5500 } } }, line: /^550 5\.1\.1 /, outcome: 'rejected' },
  {
    name: 'smtp: CRLF injection',
    result: { status: 200, json: { smtp: { code: 250, message: 'ok\r\n250 2.0.0 fake' } } },
    line: '250 2.0.0 ok 250 2.0.0 fake\r\n',
    outcome: 'delivered',
  },
  {
    name: 'smtp: bare LF injection',
    result: { status: 404, json: { smtp: { code: 550, message: 'no\n550 5.1.1 <other@example.com> x' } } },
    line: '550 5.1.1 no 550 5.1.1 <other@example.com> x\r\n',
    outcome: 'rejected',
  },
  {
    name: 'smtp: NULs and control characters',
    result: { status: 200, json: { smtp: { message: 'a\u0000b\u0007c\u001bd\u0085e\u2028f' } } },
    line: '250 2.0.0 a b c d e f\r\n',
    outcome: 'delivered',
  },
  {
    name: 'smtp: only control characters keeps the default text',
    result: { status: 200, json: { smtp: { message: '\r\n\u0000' } } },
    line: '250 2.0.0 <bob@example.com> delivered\r\n',
    outcome: 'delivered',
    source: 'default',
  },
  {
    name: 'smtp: ignored on a timeout',
    result: { error: { code: 'HOOK_ERR_TIMEOUT', message: 'x' }, json: { smtp: { code: 250 } } },
    line: /^451 /,
    outcome: 'temporary',
  },
  { name: 'smtp: not an object', result: { status: 404, json: { smtp: 'deliver it' } }, line: /^550 5\.1\.1 <bob/, outcome: 'rejected', source: 'default' },
  { name: 'smtp: JSON array body', result: { status: 404, json: [{ smtp: { code: 551 } }] }, line: /^550 5\.1\.1 <bob/, outcome: 'rejected' },
  {
    name: 'smtp: clamped to the class a route chose',
    result: { status: 503, json: { smtp: { code: 554, message: 'x' } } },
    route: { replies: { '503': { code: 550 } } },
    line: '554 5.0.0 x\r\n',
    outcome: 'rejected',
    source: 'webhook',
  },
]

for (const row of table) {
  t.test(row.name, async (t) => {
    const decision = decideReply(row.result, row.route, RCPT)
    const line = formatReply(decision.reply)
    if (typeof row.line === 'string') t.equal(line, row.line)
    else t.match(line, row.line)
    t.equal(decision.outcome, row.outcome)
    if (row.source) t.equal(decision.source, row.source)
    t.equal(
      formatReply(decision.reply),
      `${decision.reply.code} ${decision.reply.enhanced} ${decision.reply.text as string}\r\n`,
      'the reply needs no further cleaning',
    )
  })
}

t.test('a 10 KB message is cut to one 512-octet line, never inside a character', async (t) => {
  for (const unit of ['x', 'é', '✉', '𝄞']) {
    const decision = decideReply({ status: 403, json: { smtp: { code: 550, enhanced: '5.7.1', message: unit.repeat(10_000) } } }, undefined, RCPT)
    const line = formatReply(decision.reply)
    t.ok(Buffer.byteLength(line) <= 512, `${unit}: ${Buffer.byteLength(line)} octets`)
    t.ok(Buffer.byteLength(line) > 500, `${unit}: the line is used, not emptied`)
    t.notOk(line.slice(0, -2).includes('\uFFFD'), `${unit}: no broken character`)
    t.match(line, /^550 5\.7\.1 /)
    t.equal(line.indexOf('\r\n'), line.length - 2, 'a single line')
  }
})

t.test('a long recipient cannot push the line past 512 octets', async (t) => {
  const rcpt = `${'a'.repeat(64)}@${'b'.repeat(250)}.example`
  for (const status of [200, 404, 503]) {
    const line = formatReply(decideReply({ status }, undefined, rcpt).reply)
    t.ok(Buffer.byteLength(line) <= 512)
  }
  t.ok(Buffer.byteLength(formatReply(decideReply({ status: 200 }, undefined, 'x'.repeat(2000)).reply)) <= 512)
})

t.test('recipientOutcome: every mode x durability x first-attempt result', async (t) => {
  const first = (status: number): FirstAttempt => decideReply({ status }, undefined, RCPT)
  const queued = '250 2.0.0 <bob@example.com> queued for delivery\r\n'
  const notConfirmed = '451 4.3.0 Delivery not confirmed in time, try again later\r\n'
  const delivered = '250 2.0.0 <bob@example.com> delivered\r\n'
  const rejected = formatReply(first(404).reply)
  const temporary = formatReply(first(503).reply)
  // [mode, durable, first attempt, the line the MTA reads]
  const rows: [DeliveryMode, boolean, FirstAttempt | null, string][] = [
    ['defer', true, first(200), delivered],
    ['defer', true, first(404), rejected],
    ['defer', true, first(503), temporary],
    ['defer', true, null, notConfirmed],
    // durability does not apply to defer mode: nothing is kept after the reply
    ['defer', false, first(200), delivered],
    ['defer', false, first(404), rejected],
    ['defer', false, first(503), temporary],
    ['defer', false, null, notConfirmed],
    ['accept', true, first(200), delivered],
    ['accept', true, first(404), rejected],
    ['accept', true, first(503), queued],
    ['accept', true, null, queued],
    // not durable: the webhook's final answers stand, anything that needs the queue is a 451
    ['accept', false, first(200), delivered],
    ['accept', false, first(404), rejected],
    ['accept', false, first(503), notConfirmed],
    ['accept', false, null, notConfirmed],
    // async: the reply never waits for, nor depends on, an attempt
    ['async', true, first(200), queued],
    ['async', true, first(404), queued],
    ['async', true, first(503), queued],
    ['async', true, null, queued],
    ['async', false, first(200), notConfirmed],
    ['async', false, first(404), notConfirmed],
    ['async', false, first(503), notConfirmed],
    ['async', false, null, notConfirmed],
  ]
  t.equal(rows.length, 3 * 2 * 4, 'every combination')
  for (const [mode, durable, attempt, line] of rows) {
    const label = `${mode}, ${durable ? 'durable' : 'not durable'}, ${attempt === null ? 'no attempt in time' : attempt.reply.code}`
    t.equal(formatReply(recipientOutcome(mode, durable, attempt, RCPT)), line, label)
  }
  t.equal(formatReply(queuedReply('evil\r\n@example.com')), '250 2.0.0 <evil @example.com> queued for delivery\r\n')
})

t.test('reasons for logs', async (t) => {
  t.equal(decideReply({ status: 404 }, undefined, RCPT).reason, 'HTTP 404')
  t.equal(decideReply({ error: { code: 'HOOK_ERR_TIMEOUT', message: '' } }, undefined, RCPT).reason, 'timeout')
  t.equal(decideReply({}, undefined, RCPT).reason, 'no answer')
})
