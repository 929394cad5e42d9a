import t, { type Test } from 'tap'
import { routesFile, startApp } from '../helpers/app.js'
import { converse, dataReplies } from '../helpers/lmtp-client.js'
import { ajv, validatePayload } from '../helpers/schema.js'
import { until } from '../helpers/until.js'
import { webhook } from '../helpers/webhook.js'

/** A multipart nested `depth` levels deep (mailparser stops at 1,000 MIME parts). */
function nested(depth: number): Buffer {
  let s = `From: a@x.test\r\nTo: a@example.com\r\nSubject: nested\r\nMessage-ID: <nested-${depth}@x.test>\r\nMIME-Version: 1.0\r\n`
  s += `Content-Type: multipart/mixed; boundary="b0"\r\n\r\n`
  for (let i = 0; i < depth; i++) s += `--b${i}\r\nContent-Type: multipart/mixed; boundary="b${i + 1}"\r\n\r\n`
  s += `--b${depth}\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b${depth}--\r\n`
  for (let i = depth - 1; i >= 0; i--) s += `--b${i}--\r\n`
  return Buffer.from(s)
}

/** A header section of `lines` lines (mailparser stops at 1 MiB of header, about 16,000 lines). */
function manyHeaders(lines: number): Buffer {
  let s = 'From: a@x.test\r\nTo: a@example.com\r\nSubject: many headers\r\nMessage-ID: <many@x.test>\r\n'
  for (let i = 0; i < lines; i++) s += `X-Filler-${i}: value ${i}\r\n`
  return Buffer.from(s + '\r\nbody\r\n')
}

interface Body {
  message: { messageId: string | null; parseError?: string; headers: unknown[]; subject: string | null; text: string | null }
  raw?: string
}

async function deliver(t: Test, raw: Buffer): Promise<{ replies: string[]; json: Body; jsonRaw: Body }> {
  const json = await webhook(t, 200)
  const jsonRaw = await webhook(t, 200)
  const file = routesFile(
    t,
    `routes:\n  - { id: json, match: "a@example.com", url: "${json.url}" }\n  - { id: both, match: "b@example.com", url: "${jsonRaw.url}", format: json+raw }\n`,
  )
  const { lmtpPort } = await startApp(t, { ROUTES_FILE: file, REPLY_TIMEOUT: '10s' })
  const head = Buffer.from('LHLO mta.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n')
  const out = await converse(lmtpPort!, Buffer.concat([head, raw, Buffer.from('.\r\nQUIT\r\n')]), { timeoutMs: 20_000 })
  await until('both webhooks called', () => json.requests.length === 1 && jsonRaw.requests.length === 1)
  const parse = (b: Buffer): Body => {
    const body = JSON.parse(b.toString('utf8')) as Body
    t.ok(validatePayload(body), `schema-valid: ${ajv.errorsText(validatePayload.errors)}`)
    return body
  }
  return { replies: dataReplies(out).slice(-2), json: parse(json.requests[0]!.body), jsonRaw: parse(jsonRaw.requests[0]!.body) }
}

const delivered = ['250 2.0.0 <a@example.com> delivered', '250 2.0.0 <b@example.com> delivered']

t.test('a 2,000-deep nested multipart is delivered with its raw bytes and parseError, not refused with 451', async (t) => {
  const raw = nested(2_000)
  const { replies, json, jsonRaw } = await deliver(t, raw)
  t.same(replies, delivered)
  for (const body of [json, jsonRaw]) {
    t.match(body.message.parseError, /child nodes/, 'says what the parser refused')
    t.equal(body.message.messageId, '<nested-2000@x.test>', 'the Message-ID from the raw header')
    t.equal(body.message.subject, null, 'nothing decoded')
    t.ok(Buffer.from(body.raw!, 'base64').equals(raw), 'the raw message, byte for byte')
  }
})

t.test('a message of 20,000 header lines is delivered with every header field and its raw bytes', async (t) => {
  const raw = manyHeaders(20_000)
  const { replies, json, jsonRaw } = await deliver(t, raw)
  t.same(replies, delivered)
  for (const body of [json, jsonRaw]) {
    t.match(body.message.parseError, /header size/)
    t.equal(body.message.headers.length, 20_004, 'every field of the header section')
    t.ok(Buffer.from(body.raw!, 'base64').equals(raw), 'the raw message, byte for byte')
  }
})

t.test('a message the parser takes is unchanged: no parseError, no raw in the json format', async (t) => {
  const raw = nested(3)
  const { replies, json, jsonRaw } = await deliver(t, raw)
  t.same(replies, delivered)
  t.notOk('parseError' in json.message)
  t.notOk('raw' in json, 'json carries no raw')
  t.equal(json.message.text, 'hello')
  t.ok(Buffer.from(jsonRaw.raw!, 'base64').equals(raw), 'json+raw still does')
})

t.test('the schema wants raw whenever parseError is set', async (t) => {
  const { json } = await deliver(t, nested(1_500))
  const without = structuredClone(json)
  delete without.raw
  t.notOk(validatePayload(without))
})
