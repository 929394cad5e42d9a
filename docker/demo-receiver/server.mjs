/**
 * Demo webhook receiver for docker/compose.yaml: verifies each request's Standard Webhooks
 * signature, logs one JSON line per delivery and answers.
 *
 *   POST /<any path>          200 when the signature is valid, 401 when it is not
 *   POST /status/<code>/...   answers <code> after a valid signature (try 404, 413, 503)
 *   GET  /healthz             200
 *
 * Environment: PORT (default 8000, 0 picks a free port), HOST (default 0.0.0.0),
 * WEBHOOK_SECRET (one or more whsec_ secrets separated by spaces or commas),
 * TOLERANCE_SECONDS (accepted clock skew of webhook-timestamp, default 300).
 * Only Node's own modules: it runs as `node server.mjs` in a plain node image.
 */
import { createHmac, timingSafeEqual } from 'node:crypto'
import { createServer } from 'node:http'
import { Buffer } from 'node:buffer'
import process from 'node:process'
import { URL } from 'node:url'

const MAX_BODY = 64 * 1024 * 1024

function log(fields) {
  process.stdout.write(JSON.stringify({ time: new Date().toISOString(), ...fields }) + '\n')
}

function fatal(message) {
  process.stderr.write(`demo-receiver: ${message}\n`)
  process.exit(2)
}

function parseSecrets(raw) {
  const secrets = (raw ?? '').split(/[\s,]+/).filter((s) => s !== '')
  if (secrets.length === 0) fatal('WEBHOOK_SECRET: expected one or more whsec_ secrets, got nothing')
  return secrets.map((secret) => {
    if (!secret.startsWith('whsec_')) fatal('WEBHOOK_SECRET: expected secrets starting with "whsec_"')
    const key = Buffer.from(secret.slice('whsec_'.length), 'base64')
    if (key.length === 0) fatal('WEBHOOK_SECRET: expected base64 after "whsec_"')
    return key
  })
}

const keys = parseSecrets(process.env.WEBHOOK_SECRET)
const tolerance = Number(process.env.TOLERANCE_SECONDS ?? 300)
if (!Number.isFinite(tolerance) || tolerance < 0) fatal(`TOLERANCE_SECONDS: expected a number of seconds, got ${JSON.stringify(process.env.TOLERANCE_SECONDS)}`)

/** Returns null when the signature is valid, else the reason it is not. */
function checkSignature(headers, body) {
  const id = headers['webhook-id']
  const timestamp = headers['webhook-timestamp']
  const signature = headers['webhook-signature']
  if (!id || !timestamp || !signature) return 'missing webhook-id, webhook-timestamp or webhook-signature'
  if (!/^\d+$/.test(timestamp)) return 'webhook-timestamp is not a number of seconds'
  if (Math.abs(Date.now() / 1000 - Number(timestamp)) > tolerance) return 'webhook-timestamp outside the tolerance'
  const candidates = signature
    .split(' ')
    .filter((s) => s.startsWith('v1,'))
    .map((s) => Buffer.from(s.slice(3), 'base64'))
  for (const key of keys) {
    const expected = createHmac('sha256', key).update(`${id}.${timestamp}.`).update(body).digest()
    if (candidates.some((c) => c.length === expected.length && timingSafeEqual(c, expected))) return null
  }
  return 'no v1 signature matches'
}

/** A few fields worth seeing in the log, from whichever payload format the route uses. */
function summary(headers, body) {
  const type = String(headers['content-type'] ?? '')
  if (type.startsWith('application/json')) {
    try {
      const payload = JSON.parse(body.toString('utf8'))
      const envelope = payload.envelope ?? {}
      const message = payload.message ?? {}
      return { mailFrom: envelope.mailFrom, rcptTo: envelope.rcptTo, subject: message.subject, messageId: message.messageId }
    } catch {
      return { note: 'body is not valid JSON' }
    }
  }
  return { contentType: type }
}

function answer(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' })
  res.end(JSON.stringify(body))
}

const server = createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://receiver')
  if (req.method === 'GET' && url.pathname === '/healthz') return answer(res, 200, { ok: true })
  if (req.method !== 'POST') return answer(res, 405, { error: 'POST only' })

  const chunks = []
  let size = 0
  req.on('data', (chunk) => {
    size += chunk.length
    if (size > MAX_BODY) {
      answer(res, 413, { error: 'body too large' })
      req.destroy()
      return
    }
    chunks.push(chunk)
  })
  req.on('end', () => {
    const body = Buffer.concat(chunks)
    const problem = checkSignature(req.headers, body)
    const wanted = /^\/status\/(\d{3})(?:\/|$)/.exec(url.pathname)
    const status = problem !== null ? 401 : wanted ? Number(wanted[1]) : 200
    log({ path: url.pathname, webhookId: req.headers['webhook-id'], signature: problem ?? 'valid', status, size, ...summary(req.headers, body) })
    answer(res, status, problem !== null ? { error: `invalid signature: ${problem}` } : { ok: status < 300 })
  })
})

server.listen(Number(process.env.PORT ?? 8000), process.env.HOST ?? '0.0.0.0', () => {
  const address = server.address()
  log({ msg: 'listening', port: typeof address === 'object' && address ? address.port : null })
})

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.once(signal, () => {
    server.close(() => process.exit(0))
    server.closeAllConnections()
  })
}
