/**
 * docker/demo-receiver/server.mjs, run as compose runs it (plain `node`), checked against
 * requests signed by the standardwebhooks reference library: valid signatures (any of the
 * configured secrets) get 200, anything else 401, and /status/<code> answers that code.
 */
import t, { type Test } from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { createInterface } from 'node:readline'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { request } from 'undici'
import { Webhook } from 'standardwebhooks'
import { ROOT } from './helpers.js'
import { until } from '../helpers/until.js'

const SCRIPT = join(ROOT, 'docker', 'demo-receiver', 'server.mjs')
const current = `whsec_${randomBytes(32).toString('base64')}`
const previous = `whsec_${randomBytes(32).toString('base64')}`

interface Receiver {
  child: ChildProcess
  base: string
  /** JSON log lines written so far. */
  lines: Array<Record<string, unknown>>
}

async function startReceiver(t: Test, env: Record<string, string>): Promise<Receiver> {
  const child = spawn(process.execPath, [SCRIPT], {
    env: { PATH: process.env.PATH ?? '', HOST: '127.0.0.1', PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL')
  })
  const lines: Array<Record<string, unknown>> = []
  const listening = new Promise<number>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const entry = JSON.parse(line) as Record<string, unknown>
      lines.push(entry)
      if (entry.msg === 'listening') resolve(entry.port as number)
    })
    child.once('exit', (code) => reject(new Error(`receiver exited with ${code}`)))
  })
  return { child, base: `http://127.0.0.1:${await listening}`, lines }
}

function signed(secret: string, body: string, at = new Date()): Record<string, string> {
  const id = `msg_${randomBytes(8).toString('hex')}`
  return {
    'content-type': 'application/json',
    'webhook-id': id,
    'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
    'webhook-signature': new Webhook(secret).sign(id, at, body),
  }
}

async function post(base: string, path: string, headers: Record<string, string>, body: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await request(`${base}${path}`, { method: 'POST', headers, body })
  return { status: res.statusCode, body: (await res.body.json()) as Record<string, unknown> }
}

const payload = JSON.stringify({
  envelope: { mailFrom: 'sender@example.org', rcptTo: 'alice@example.test' },
  message: { subject: 'Hello', messageId: '<1@example.org>' },
})

t.test('verifies Standard Webhooks signatures', async (t) => {
  const receiver = await startReceiver(t, { WEBHOOK_SECRET: `${current} ${previous}` })

  const health = await request(`${receiver.base}/healthz`)
  t.equal(health.statusCode, 200)
  await health.body.dump()

  const valid = await post(receiver.base, '/hooks/inbox', signed(current, payload), payload)
  t.equal(valid.status, 200, 'a valid signature is accepted')
  // The receiver's log line travels through a pipe: it may arrive just after the response.
  const logged = await until('the log line of the delivery', () => receiver.lines.find((l) => l.path === '/hooks/inbox'))
  t.match(logged, { signature: 'valid', status: 200, rcptTo: 'alice@example.test', subject: 'Hello' }, 'the delivery is logged with its envelope')

  t.equal((await post(receiver.base, '/hooks/inbox', signed(previous, payload), payload)).status, 200, 'a second secret (key rotation) is accepted')

  const tampered = await post(receiver.base, '/hooks/inbox', signed(current, payload), payload.replace('Hello', 'Hijacked'))
  t.equal(tampered.status, 401, 'a changed body is refused')
  t.match(tampered.body.error, /no v1 signature matches/)

  t.equal(
    (await post(receiver.base, '/hooks/inbox', signed(`whsec_${randomBytes(32).toString('base64')}`, payload), payload)).status,
    401,
    'an unknown secret is refused',
  )

  const old = new Date(Date.now() - 10 * 60_000)
  const stale = await post(receiver.base, '/hooks/inbox', signed(current, payload, old), payload)
  t.equal(stale.status, 401, 'a timestamp outside the tolerance is refused (replay)')
  t.match(stale.body.error, /tolerance/)

  const unsigned = await post(receiver.base, '/hooks/inbox', { 'content-type': 'application/json' }, payload)
  t.equal(unsigned.status, 401)
  t.match(unsigned.body.error, /missing webhook-id/)

  t.equal((await post(receiver.base, '/status/404/unknown', signed(current, payload), payload)).status, 404, '/status/404 answers 404 once verified')
  t.equal((await post(receiver.base, '/status/503/busy', signed(current, 'x'), 'x')).status, 503)
  t.equal((await post(receiver.base, '/status/503/busy', signed(current, 'x'), 'y')).status, 401, '/status/ still checks the signature first')

  receiver.child.kill('SIGTERM')
  const [code] = await once(receiver.child, 'exit')
  t.equal(code, 0, 'SIGTERM stops it cleanly')
})

t.test('refuses to start without a usable secret, naming the variable', async (t) => {
  for (const secret of ['', 'hunter2']) {
    const child = spawn(process.execPath, [SCRIPT], {
      env: { PATH: process.env.PATH ?? '', PORT: '0', HOST: '127.0.0.1', WEBHOOK_SECRET: secret },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stderr = ''
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
    const [code] = await once(child, 'exit')
    t.equal(code, 2, `WEBHOOK_SECRET=${JSON.stringify(secret)} exits with 2`)
    t.match(stderr, /WEBHOOK_SECRET: expected/)
  }
})
