import t from 'tap'
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { ajv, validatePayload } from '../helpers/schema.js'
import { WebhookClient } from '../../src/delivery/http.js'
import {
  buildJsonBody,
  envelopeInfo,
  headerSafe,
  messageJson,
  parseHeaderFields,
  parseMessage,
  rawRequestHeaders,
  type EnvelopeInfo,
  type ParsedMessage,
} from '../../src/delivery/payload.js'
import type { Envelope } from '../../src/lmtp/types.js'
import { webhook } from '../helpers/webhook.js'

const fixture = (name: string): Buffer => readFileSync(new URL(`../fixtures/${name}`, import.meta.url))
const FIXTURES = ['multipart-attachments.eml', 'non-ascii-subject.eml', 'html-only.eml', 'empty-body.eml']

const validate = validatePayload

const envelope: EnvelopeInfo = {
  mailFrom: 'alice@example.org',
  recipients: ['bob@example.com', 'carol@example.com', 'jürgen@beispiel.de'],
  lhlo: 'mx.example.com',
  clientAddress: '10.1.2.3',
  xforward: { name: 'mail.example.org', addr: '192.0.2.25', proto: 'ESMTP', helo: 'mail.example.org', ident: '4Xk2Lm0Zp9z9sQ' },
}

t.test('multipart with attachments', async (t) => {
  const raw = fixture('multipart-attachments.eml')
  const m = await parseMessage(raw)
  t.equal(m.messageId, '<20250114093011.GA1234@mail.example.org>')
  t.equal(m.date, '2025-01-14T09:30:11.000Z')
  t.equal(m.subject, 'Quarterly report with attachments')
  t.same(m.from, [{ name: 'Alice Example', address: 'alice@example.org' }])
  t.same(m.to, [
    { name: 'Bob', address: 'bob@example.com' },
    { name: '', address: 'carol@example.com' },
  ])
  t.same(
    m.cc,
    [
      { name: 'Dave, the Reviewer', address: 'dave@example.net' },
      { name: '', address: 'erin@example.net' },
      { name: '', address: 'frank@example.net' },
    ],
    'group members are listed one by one',
  )
  t.same(m.bcc, [])
  t.same(m.replyTo, [{ name: '', address: 'replies@example.org' }])
  t.equal(m.inReplyTo, '<prev-2@mail.example.org>')
  t.same(m.references, ['<prev-1@mail.example.org>', '<prev-2@mail.example.org>'])
  t.equal(m.text, 'Hi Bob,\n\nthe quarterly report is attached. The chart is inline.\n\nAlice\n')
  t.match(m.html, /<img src="cid:chart@example\.org"/, 'cid links stay links')
  t.equal(m.size, raw.length)
  t.equal(m.sha256, createHash('sha256').update(raw).digest('hex'))

  t.same(
    m.headers.map((h) => h.name),
    [
      'Return-Path',
      'Received',
      'Message-ID',
      'Date',
      'From',
      'To',
      'Cc',
      'Reply-To',
      'Subject',
      'In-Reply-To',
      'References',
      'X-Mailer',
      'MIME-Version',
      'Content-Type',
    ],
  )
  t.equal(
    m.headers[1]!.value,
    'from mail.example.org (mail.example.org [192.0.2.25])\tby mx.example.com (Postfix) with ESMTPS id 4Xk2Lm0Zp9z9sQ\tfor <bob@example.com>; Tue, 14 Jan 2025 09:30:12 +0000 (UTC)',
    'folded lines unfolded, white space kept',
  )
  t.equal(m.headers[6]!.value, '"Dave, the Reviewer" <dave@example.net>, Team: erin@example.net, frank@example.net;')

  t.same(
    m.attachments.map((a) => [a.filename, a.contentType, a.size, a.contentId, a.disposition]),
    [
      ['chart.png', 'image/png', 69, 'chart@example.org', 'inline'],
      ['report.txt', 'text/plain', 3486, null, 'attachment'],
      ['summary.pdf', 'application/pdf', 83, null, 'attachment'],
    ],
  )
  for (const a of m.attachments) t.equal(a.sha256, createHash('sha256').update(a.content).digest('hex'), `${a.filename} sha256`)
  t.ok(m.attachments[0]!.content.subarray(0, 8).equals(Buffer.from('89504e470d0a1a0a', 'hex')), 'decoded PNG bytes')
  t.match(m.attachments[1]!.content.toString(), /^Quarterly figures\nline 0000: /)
})

t.test('non-ASCII subject and names (RFC 2047), quoted-printable body', async (t) => {
  const m = await parseMessage(fixture('non-ascii-subject.eml'))
  t.equal(m.subject, 'Grüße aus Köln – Ihre Bestellung ✓')
  t.same(m.from, [{ name: 'Jürgen Müller', address: 'juergen@beispiel.de' }])
  t.same(m.to, [{ name: 'François Lefèvre', address: 'francois@example.fr' }], 'ISO-8859-1 Q-encoding')
  t.equal(m.text, 'Sehr geehrter Herr Lefèvre,\n\nvielen Dank für Ihre Bestellung. Grüße aus Köln!\n')
  t.equal(m.html, null)
  t.match(m.headers.find((h) => h.name === 'Subject')?.value, /^=\?UTF-8\?B\?/, 'the header list keeps the raw encoded value')
  t.same(m.attachments, [])
})

t.test('HTML only', async (t) => {
  const m = await parseMessage(fixture('html-only.eml'))
  t.equal(m.text, null, 'no text is made up from the HTML')
  t.match(m.html, /<h1>January news<\/h1>/)
  t.equal(m.date, '2025-01-16T12:00:00.000Z')
})

t.test('empty body, no Date, no Message-ID', async (t) => {
  const m = await parseMessage(fixture('empty-body.eml'))
  t.equal(m.subject, 'ping')
  t.equal(m.text, null)
  t.equal(m.html, null)
  t.equal(m.date, null)
  t.equal(m.messageId, null)
  t.equal(m.inReplyTo, null)
  t.same(m.references, [])
  t.same(
    m.headers.map((h) => `${h.name}: ${h.value}`),
    ['From: monitor@example.com', 'To: ops@example.com', 'Subject: ping'],
  )
})

t.test('parseHeaderFields', async (t) => {
  t.same(
    parseHeaderFields(Buffer.from('A: 1\nB:2\n folded\n\nC: body')),
    [
      { name: 'A', value: '1' },
      { name: 'B', value: '2 folded' },
    ],
    'LF line ends; the body is not read',
  )
  t.same(
    parseHeaderFields(Buffer.from('A: 1\r\nA: 2\r\n')),
    [
      { name: 'A', value: '1' },
      { name: 'A', value: '2' },
    ],
    'no body at all; repeated fields kept',
  )
  t.same(parseHeaderFields(Buffer.from('\r\nX: not a header')), [], 'empty header section')
  t.same(parseHeaderFields(Buffer.from('From alice Tue Jan 14 2025\r\nSubject: s\r\n\r\n')), [{ name: 'Subject', value: 's' }], 'an mbox From line is skipped')
  t.same(parseHeaderFields(Buffer.from('Subject: Grüße\r\n\r\n')), [{ name: 'Subject', value: 'Grüße' }], 'SMTPUTF8 bytes read as UTF-8')
})

/** The same body built the obvious way, to show the spliced one is identical. */
function expectedBody(m: ParsedMessage, env: EnvelopeInfo, rcpt: string, id: string, cap: number, raw?: Buffer): string {
  return JSON.stringify({
    id,
    envelope: {
      mailFrom: env.mailFrom,
      rcptTo: rcpt,
      recipients: env.recipients,
      lhlo: env.lhlo,
      clientAddress: env.clientAddress,
      xforward: env.xforward,
      tls: env.tls ?? null,
      authUser: env.authUser ?? null,
    },
    message: {
      messageId: m.messageId,
      date: m.date,
      subject: m.subject,
      from: m.from,
      to: m.to,
      cc: m.cc,
      bcc: m.bcc,
      replyTo: m.replyTo,
      inReplyTo: m.inReplyTo,
      references: m.references,
      headers: m.headers,
      text: m.text,
      html: m.html,
      attachments: m.attachments.map((a) => ({
        filename: a.filename,
        contentType: a.contentType,
        size: a.size,
        contentId: a.contentId,
        disposition: a.disposition,
        sha256: a.sha256,
        truncated: a.size > cap,
        ...(a.size > cap ? {} : { content: a.content.toString('base64') }),
      })),
    },
    size: m.size,
    ...(raw ? { raw: raw.toString('base64') } : {}),
  })
}

for (const name of FIXTURES) {
  t.test(`JSON body of ${name}: schema-valid and byte-identical to a plain serialisation`, async (t) => {
    const raw = fixture(name)
    const m = await parseMessage(raw)
    for (const [format, cap] of [
      ['json', 10 * 1024 * 1024],
      ['json', 100],
      ['json', 0],
      ['json+raw', 1024],
    ] as const) {
      const body = buildJsonBody(m, envelope, { address: 'bob@example.com', webhookId: 'msg_abc-DEF_123' }, { format, maxInlineAttachmentBytes: cap }, raw)
      const parsed = JSON.parse(body.toString('utf8')) as Record<string, unknown>
      t.ok(validate(parsed), `${format}/${cap} valid: ${ajv.errorsText(validate.errors)}`)
      t.equal(
        body.toString('utf8'),
        expectedBody(m, envelope, 'bob@example.com', 'msg_abc-DEF_123', cap, format === 'json+raw' ? raw : undefined),
        `${format}/${cap} bytes`,
      )
      if (format === 'json+raw') t.ok(Buffer.from(parsed.raw as string, 'base64').equals(raw), 'raw round-trips')
      else t.notOk('raw' in parsed)
    }
  })
}

t.test('attachment cap: content only within it, truncated beyond', async (t) => {
  const m = await parseMessage(fixture('multipart-attachments.eml'))
  const attachments = (cap: number) =>
    (JSON.parse(messageJson(m, cap).toString()) as { attachments: Array<{ filename: string; truncated: boolean; content?: string }> }).attachments
  t.same(
    attachments(100).map((a) => [a.filename, a.truncated, a.content !== undefined]),
    [
      ['chart.png', false, true],
      ['report.txt', true, false],
      ['summary.pdf', false, true],
    ],
  )
  t.same(
    attachments(83).map((a) => a.truncated),
    [false, true, false],
    'a size equal to the cap is inline',
  )
  t.same(
    attachments(82).map((a) => a.truncated),
    [false, true, true],
  )
  t.same(
    attachments(0).map((a) => a.truncated),
    [true, true, true],
    'cap 0 sends metadata only',
  )
  t.equal(Buffer.from(attachments(100)[2]!.content!, 'base64').toString('latin1'), m.attachments[2]!.content.toString('latin1'))
})

t.test('many recipients: the shared parts are serialised once and spliced', async (t) => {
  const m = await parseMessage(fixture('multipart-attachments.eml'))
  const route = { format: 'json', maxInlineAttachmentBytes: 1 << 20 } as const
  t.equal(messageJson(m, 1 << 20), messageJson(m, 1 << 20), 'the same Buffer for the same message and cap')
  const bodies = envelope.recipients.map((address, i) => buildJsonBody(m, envelope, { address, webhookId: `msg_${i}` }, route))
  const parsed = bodies.map((b) => JSON.parse(b.toString()) as { id: string; envelope: { rcptTo: string }; message: unknown })
  t.same(
    parsed.map((p) => [p.id, p.envelope.rcptTo]),
    [
      ['msg_0', 'bob@example.com'],
      ['msg_1', 'carol@example.com'],
      ['msg_2', 'jürgen@beispiel.de'],
    ],
  )
  t.same(parsed[0]!.message, parsed[2]!.message)
  for (const p of parsed) t.ok(validate(p))
})

t.test('envelopeInfo from an LMTP envelope', async (t) => {
  const lmtp: Envelope = {
    id: 'tx1',
    session: { id: 's1', remoteAddress: '10.1.2.3', remotePort: 40000, peerAddress: '10.9.9.9', lhlo: 'mx.example.com', tls: null, authUser: null },
    sender: { address: '', size: undefined, body: undefined, smtputf8: false },
    recipients: [
      { address: 'Bob@Example.com', domain: 'example.com', index: 0 },
      { address: 'bob@example.com', domain: 'example.com', index: 1 },
    ],
    xforward: {},
    startedAt: 0,
  }
  t.same(envelopeInfo(lmtp), {
    mailFrom: '',
    recipients: ['Bob@Example.com', 'bob@example.com'],
    lhlo: 'mx.example.com',
    clientAddress: '10.1.2.3',
    xforward: null,
    tls: null,
    authUser: null,
  })
  t.same(envelopeInfo({ ...lmtp, xforward: { addr: '192.0.2.1', name: undefined } }).xforward, { addr: '192.0.2.1' })
  const tls = { protocol: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384', clientSubject: 'CN=mx1.example.net,O=Example' }
  const secure = envelopeInfo({ ...lmtp, session: { ...lmtp.session, tls, authUser: 'postfix' } })
  t.same([secure.tls, secure.authUser], [tls, 'postfix'], 'the TLS parameters and the AUTH identity of the session')
})

t.test('TLS and AUTH in the envelope: JSON body and raw headers', async (t) => {
  const m = await parseMessage(fixture('empty-body.eml'))
  const rcpt = { address: 'bob@example.com', webhookId: 'msg_1' }
  const route = { format: 'json' as const, maxInlineAttachmentBytes: 0 }
  const secure: EnvelopeInfo = {
    ...envelope,
    tls: { protocol: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384', clientSubject: 'CN=mx1.example.net,O=Example\\, Inc.' },
    authUser: 'relay@example.net',
  }
  const body = JSON.parse(buildJsonBody(m, secure, rcpt, route).toString()) as { envelope: Record<string, unknown> }
  t.same(body.envelope.tls, secure.tls)
  t.equal(body.envelope.authUser, 'relay@example.net')
  t.ok(validate(body), 'the schema accepts it')
  const plain = JSON.parse(buildJsonBody(m, envelope, rcpt, route).toString()) as { envelope: Record<string, unknown> }
  t.same([plain.envelope.tls, plain.envelope.authUser], [null, null], 'cleartext and no AUTH: both null (also for envelopes stored without them)')
  t.ok(validate(plain))

  const headers = rawRequestHeaders(secure, rcpt)
  t.equal(headers['x-lmtp-tls'], 'TLSv1.3')
  t.equal(headers['x-lmtp-tls-cipher'], 'TLS_AES_256_GCM_SHA384')
  t.equal(decodeURIComponent(headers['x-lmtp-tls-client-subject']!), 'CN=mx1.example.net,O=Example\\, Inc.')
  t.equal(decodeURIComponent(headers['x-lmtp-auth-user']!), 'relay@example.net')
  const none = rawRequestHeaders({ ...secure, tls: { ...secure.tls!, clientSubject: null }, authUser: null }, rcpt)
  t.notOk('x-lmtp-tls-client-subject' in none, 'no subject header without a verified certificate')
  t.notOk('x-lmtp-auth-user' in none)
  t.notOk('x-lmtp-tls' in rawRequestHeaders(envelope, rcpt), 'no TLS headers in cleartext')
})

t.test('format checks', async (t) => {
  const m = await parseMessage(fixture('empty-body.eml'))
  const rcpt = { address: 'ops@example.com', webhookId: 'msg_1' }
  t.throws(() => buildJsonBody(m, envelope, rcpt, { format: 'json+raw', maxInlineAttachmentBytes: 0 }), { name: 'TypeError', message: /^raw: required/ })
  t.throws(() => buildJsonBody(m, envelope, rcpt, { format: 'raw', maxInlineAttachmentBytes: 0 }), /format: the raw format/)
})

t.test('headerSafe: printable ASCII stays, the rest is percent-encoded and decodes back', async (t) => {
  const cases: Array<[string, string]> = [
    ['bob@example.com', 'bob@example.com'],
    ['', ''],
    ['jürgen@beispiel.de', 'j%C3%BCrgen@beispiel.de'],
    ['"a,b"@example.com', '"a%2Cb"@example.com'],
    ['100%@example.com', '100%25@example.com'],
    ['x\r\ny: injected', 'x%0D%0Ay:%20injected'],
    ['用户@例子.广告', '%E7%94%A8%E6%88%B7@%E4%BE%8B%E5%AD%90.%E5%B9%BF%E5%91%8A'],
  ]
  for (const [input, output] of cases) {
    t.equal(headerSafe(input), output)
    t.equal(decodeURIComponent(headerSafe(input)), input)
  }
})

t.test('raw format: the message as the body, the envelope in headers, over a real request', async (t) => {
  const raw = fixture('non-ascii-subject.eml')
  const env: EnvelopeInfo = { ...envelope, mailFrom: 'jürgen@beispiel.de', recipients: ['"a,b"@example.com', 'françois@example.fr'] }
  // As src/delivery/request.ts sends the raw format: the message itself, the envelope in headers.
  const request = { headers: rawRequestHeaders(env, { address: 'françois@example.fr', webhookId: 'msg_1' }), body: raw }
  for (const value of Object.values(request.headers)) t.match(value, /^[\x21-\x7e]*$/, 'header-safe')

  const srv = await webhook(t, (_req, _body, res) => res.end())
  const client = new WebhookClient()
  t.teardown(() => client.close())
  const result = await client.attempt({ url: srv.origin, headers: request.headers, body: request.body, deadlineMs: 10_000 })
  t.equal(result.status, 200)
  const got = srv.requests[0]!
  t.ok(got.body.equals(raw))
  t.equal(got.headers['content-type'], 'message/rfc822')
  t.equal(decodeURIComponent(got.headers['x-lmtp-mail-from'] as string), 'jürgen@beispiel.de')
  t.equal(decodeURIComponent(got.headers['x-lmtp-rcpt-to'] as string), 'françois@example.fr')
  t.same((got.headers['x-lmtp-recipients'] as string).split(',').map(decodeURIComponent), ['"a,b"@example.com', 'françois@example.fr'])
  t.equal(got.headers['x-lmtp-lhlo'], 'mx.example.com')
  t.equal(got.headers['x-lmtp-client-address'], '10.1.2.3')
  t.equal(got.headers['x-lmtp-xforward-addr'], '192.0.2.25')
  t.equal(got.headers['x-lmtp-xforward-ident'], '4Xk2Lm0Zp9z9sQ')
  t.equal(got.headers['x-lmtp-xforward-port'], undefined, 'attributes not sent are absent')
})

t.test('the schema refuses what the service never sends', async (t) => {
  const m = await parseMessage(fixture('multipart-attachments.eml'))
  const good = JSON.parse(
    buildJsonBody(m, envelope, { address: 'bob@example.com', webhookId: 'msg_1' }, { format: 'json', maxInlineAttachmentBytes: 100 }).toString(),
  ) as {
    envelope: Record<string, unknown>
    message: { attachments: Array<Record<string, unknown>>; date: unknown }
  }
  t.ok(validate(good))
  const mutations: Array<[string, (b: typeof good) => void]> = [
    ['content on a truncated attachment', (b) => (b.message.attachments[1]!.content = 'AAAA')],
    ['no content on an inline attachment', (b) => delete b.message.attachments[0]!.content],
    ['an unknown envelope key', (b) => (b.envelope.extra = 1)],
    ['a date that is not a date-time', (b) => (b.message.date = 'Tue, 14 Jan 2025')],
    ['a missing rcptTo', (b) => delete b.envelope.rcptTo],
  ]
  for (const [name, mutate] of mutations) {
    const body = structuredClone(good)
    mutate(body)
    t.notOk(validate(body), name)
  }
})
