/**
 * Real LMTP clients from other projects against our LmtpServer: swaks, Python's smtplib.LMTP,
 * nodemailer's SMTP connection in LMTP mode, and Postfix's smtp-source. Each recipient's reply after
 * the data is chosen by its local part, so the tests can check that every client sees one reply per
 * recipient, in RCPT order.
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import { accessSync, constants } from 'node:fs'
import SMTPConnection from 'nodemailer/lib/smtp-connection'
import { readAll, startServer, type Received } from '../helpers/lmtp.js'
import type { LmtpHandler } from '../../src/lmtp/types.js'
import { reply, type Reply } from '../../src/lmtp/reply.js'

const SWAKS = '/usr/bin/swaks'
const PYTHON = '/usr/bin/python3'
const SMTP_SOURCE = '/usr/sbin/smtp-source'

/** Fails the test with a message saying what to install when a client program is missing. */
function requireTool(path: string, install: string): string {
  try {
    accessSync(path, constants.X_OK)
  } catch {
    throw new Error(`${path} is required by this test and is not installed (or not executable): install ${install}`)
  }
  return path
}

/** The reply after the data for one recipient, chosen by the local part: ok*, temp*, perm*. */
function replyFor(address: string): Reply {
  const local = address.slice(0, address.lastIndexOf('@')).replace(/^\d+/, '')
  if (local.startsWith('temp')) return reply(451, '4.3.0', `<${address}> try again later`)
  if (local.startsWith('perm')) return reply(550, '5.1.1', `<${address}> no such user`)
  return reply(250, '2.0.0', `<${address}> delivered`)
}

/** Records every envelope and body; replies per recipient by local part. */
function recordingHandler(received: Received[]): LmtpHandler {
  return {
    async data(envelope, message) {
      const body = await readAll(message)
      received.push({ envelope, body })
      return envelope.recipients.map((r) => replyFor(r.address))
    },
  }
}

interface RunResult {
  code: number
  stdout: string
  stderr: string
}

/** Runs a program to its end; resolves with its exit status and output (never rejects on a non-zero exit). */
function run(file: string, args: readonly string[], timeoutMs = 60_000): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') return reject(new Error(`${file} failed to run: ${err.message}\n${stderr}`))
      resolve({ code: err ? (err.code as number) : 0, stdout: stdout.toString(), stderr: stderr.toString() })
    })
  })
}

const options = { domains: ['*'] }

t.test('swaks --protocol LMTP: one reply per recipient after the data, in order', async (t) => {
  const swaks = requireTool(SWAKS, 'swaks (apt-get install swaks)')
  const { port, received } = await startServer(t, recordingHandler, options)
  const rcpts = ['ok1@example.com', 'temp1@example.com', 'ok1@example.com']
  const result = await run(swaks, [
    '--protocol',
    'LMTP',
    '--server',
    '127.0.0.1',
    '--port',
    String(port),
    '--helo',
    'client.test',
    '--from',
    'sender@example.org',
    '--to',
    rcpts.join(','),
    '--body',
    'Hello from swaks',
    '--timeout',
    '20',
  ])
  const transcript = result.stdout
  t.equal(result.code, 0, `swaks exits 0 when at least one recipient got 250:\n${transcript}${result.stderr}`)

  // Reply lines that follow the end of the data (swaks marks failures with <**), up to QUIT.
  const lines = transcript.split('\n')
  const dot = lines.findIndex((l) => l.trim() === '-> .')
  const quit = lines.findIndex((l) => l.includes('-> QUIT'))
  t.ok(dot > 0 && quit > dot, transcript)
  const after = lines.slice(dot + 1, quit).map((l) => l.replace(/^<(-|\*\*) +/, '').trim())
  t.strictSame(
    after.map((l) => l.split(' ').slice(0, 2).join(' ')),
    ['250 2.0.0', '451 4.3.0', '250 2.0.0'],
    transcript,
  )
  t.match(after[1], /temp1@example\.com/)

  t.equal(received.length, 1)
  t.strictSame(
    received[0]!.envelope.recipients.map((r) => r.address),
    rcpts,
    'the duplicate recipient is kept',
  )
  t.equal(received[0]!.envelope.sender.address, 'sender@example.org')
  t.equal(received[0]!.envelope.session.lhlo, 'client.test')
  t.match(received[0]!.body.toString(), /\r\n\r\nHello from swaks\r\n/)
})

t.test('swaks --protocol LMTP: exit status 26 when no recipient is accepted after the data', async (t) => {
  const swaks = requireTool(SWAKS, 'swaks (apt-get install swaks)')
  const { port, received } = await startServer(t, recordingHandler, options)
  const result = await run(swaks, [
    '--protocol',
    'LMTP',
    '--server',
    '127.0.0.1',
    '--port',
    String(port),
    '--helo',
    'client.test',
    '--from',
    'sender@example.org',
    '--to',
    'temp1@example.com,perm1@example.com,temp1@example.com',
    '--timeout',
    '20',
  ])
  t.equal(result.code, 26, `swaks reports "server did not accept mail following data":\n${result.stdout}${result.stderr}`)
  const failures = result.stdout
    .split('\n')
    .filter((l) => l.startsWith('<**'))
    .map((l) => l.slice(3).trim().split(' ').slice(0, 2).join(' '))
  t.strictSame(failures, ['451 4.3.0', '550 5.1.1', '451 4.3.0'], result.stdout)
  t.equal(received.length, 1)
})

// smtplib.LMTP's sendmail() reads only the first reply after the data; the script reads the others
// itself, then checks the session is still in step with a NOOP and a second transaction.
const PYTHON_CLIENT = `
import json, smtplib, sys
port = int(sys.argv[1])
rcpts = sys.argv[2:]
out = {}
lmtp = smtplib.LMTP("127.0.0.1", port, local_hostname="client.test", timeout=20)
msg = b"Subject: from python\\r\\n\\r\\nHello from smtplib\\r\\n.leading dot\\r\\n"
out["refused"] = lmtp.sendmail("sender@example.org", rcpts, msg)
replies = [[250, "first"]]
for _ in rcpts[1:]:
    code, text = lmtp.getreply()
    replies.append([code, text.decode()])
out["replies"] = replies
out["noop"] = lmtp.noop()[0]
lmtp.mail("sender@example.org")
lmtp.rcpt("perm9@example.com")
code, text = lmtp.data(b"Subject: second\\r\\n\\r\\nagain\\r\\n")
out["second"] = [code, text.decode()]
out["quit"] = lmtp.quit()[0]
print(json.dumps(out))
`

t.test('Python smtplib.LMTP: the script reads each recipient reply after the data', async (t) => {
  const python = requireTool(PYTHON, 'Python 3 (apt-get install python3)')
  const { port, received } = await startServer(t, recordingHandler, options)
  const rcpts = ['ok1@example.com', 'temp2@example.com', 'perm3@example.com', 'ok1@example.com']
  const result = await run(python, ['-c', PYTHON_CLIENT, String(port), ...rcpts])
  t.equal(result.code, 0, result.stderr)
  const out = JSON.parse(result.stdout) as { refused: object; replies: [number, string][]; noop: number; second: [number, string]; quit: number }
  t.strictSame(out.refused, {}, 'no recipient refused at RCPT time')
  t.strictSame(
    out.replies.map((r) => r[0]),
    [250, 451, 550, 250],
  )
  t.match(out.replies[1]![1], /^4\.3\.0 <temp2@example\.com>/)
  t.match(out.replies[2]![1], /^5\.1\.1 <perm3@example\.com>/)
  t.equal(out.noop, 250, 'the session is still in step after the per-recipient replies')
  t.strictSame(out.second, [550, '5.1.1 <perm9@example.com> no such user'])
  t.equal(out.quit, 221)

  t.equal(received.length, 2)
  t.strictSame(
    received[0]!.envelope.recipients.map((r) => r.address),
    rcpts,
  )
  t.equal(received[0]!.body.toString(), 'Subject: from python\r\n\r\nHello from smtplib\r\n.leading dot\r\n', 'dot-stuffed by the client, unstuffed by us')
})

t.test('nodemailer SMTP connection with lmtp: true reports accepted and rejected per recipient', async (t) => {
  const { port, received } = await startServer(t, recordingHandler, options)
  const connection = new SMTPConnection({ host: '127.0.0.1', port, lmtp: true, name: 'client.test', connectionTimeout: 10_000, socketTimeout: 20_000 })
  t.teardown(() => connection.close())
  await new Promise<void>((resolve, reject) => {
    connection.once('error', reject)
    connection.connect(() => resolve())
  })
  const send = (to: string[], message: string): Promise<SMTPConnection.SentMessageInfo> =>
    new Promise((resolve, reject) => connection.send({ from: 'sender@example.org', to }, message, (err, info) => (err ? reject(err) : resolve(info))))

  const first = await send(['ok1@example.com', 'temp2@example.com', 'perm3@example.com', 'ok4@example.com'], 'Subject: nodemailer\r\n\r\nfirst\r\n')
  t.strictSame(first.accepted, ['ok1@example.com', 'ok4@example.com'])
  t.strictSame(first.rejected, ['temp2@example.com', 'perm3@example.com'])
  t.strictSame(
    (first.rejectedErrors ?? []).map((e) => [e.recipient, e.responseCode, e.response]),
    [
      ['temp2@example.com', 451, '451 4.3.0 <temp2@example.com> try again later'],
      ['perm3@example.com', 550, '550 5.1.1 <perm3@example.com> no such user'],
    ],
  )

  // The same connection stays usable: a second message in the same session.
  await new Promise<void>((resolve, reject) => connection.reset((err) => (err ? reject(err) : resolve())))
  const second = await send(['ok5@example.com'], 'Subject: nodemailer\r\n\r\nsecond\r\n')
  t.strictSame(second.accepted, ['ok5@example.com'])
  t.strictSame(second.rejected, [])

  t.equal(received.length, 2)
  t.strictSame(
    received[0]!.envelope.recipients.map((r) => r.address),
    ['ok1@example.com', 'temp2@example.com', 'perm3@example.com', 'ok4@example.com'],
  )
  t.equal(received[1]!.body.toString(), 'Subject: nodemailer\r\n\r\nsecond\r\n')
  t.equal(received[0]!.envelope.session.id, received[1]!.envelope.session.id, 'both messages came over one session')
})

t.test('Postfix smtp-source -L: several sessions, messages and recipients', async (t) => {
  const source = requireTool(SMTP_SOURCE, 'Postfix (apt-get install postfix)')
  for (const reuse of [true, false]) {
    await t.test(reuse ? 'messages over kept sessions (-d)' : 'one session per message', async (t) => {
      let opened = 0
      const { port, received } = await startServer(t, recordingHandler, options, { connection: (e) => void (e === 'open' && opened++) })
      const messages = 40
      const args = ['-L', '-s', '4', '-m', String(messages), '-r', '3', '-l', '2000', '-M', 'client.test', '-f', 'sender@example.org', '-t', 'ok@example.com']
      if (reuse) args.push('-d')
      const result = await run(source, [...args, `127.0.0.1:${port}`])
      t.equal(result.code, 0, `smtp-source exits 0\n${result.stdout}${result.stderr}`)
      t.equal(received.length, messages, 'every message was received')
      const envelopes = new Set(received.map((r) => r.envelope.recipients.map((x) => x.address).join(' ')))
      t.strictSame([...envelopes], ['3ok@example.com 2ok@example.com ok@example.com'], 'every message had the three recipients, in order')
      const shortest = Math.min(...received.map((r) => r.body.length))
      t.ok(shortest >= 2000, `every body has the 2000-octet payload (shortest: ${shortest})`)
      if (reuse) t.equal(opened, 4, 'four sessions carried all the messages')
      else t.equal(opened, messages, 'one session per message')
    })
  }
})
