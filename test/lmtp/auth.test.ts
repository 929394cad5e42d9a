/**
 * AUTH PLAIN and LOGIN over real sockets, with a users file whose hashes htpasswd -B made: only
 * inside TLS, LMTP_AUTH_REQUIRED, wrong passwords, the limit on failures per client address,
 * logs that never hold the password, a users file rotated on disk, and swaks -a PLAIN / LOGIN.
 */
import t from 'tap'
import { execFile, execFileSync } from 'node:child_process'
import { readFileSync, renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { capturedLogs } from '../helpers/logs.js'
import { pki } from '../helpers/certs.js'
import { RawClient } from '../helpers/lmtp-tls.js'
import { acceptingHandler, defaultOptions, type Received } from '../helpers/lmtp.js'
import { LmtpServer, type LmtpServerOptions } from '../../src/lmtp/server.js'
import { parseUsers, clientKey, FailureLimiter } from '../../src/lmtp/auth.js'
import { Metrics } from '../../src/metrics.js'

const HTPASSWD = '/usr/bin/htpasswd'
const LHLO = 'LHLO client.test\r\n'
const TXN = 'MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nSubject: auth\r\n\r\nhello\r\n.\r\n'
const PASSWORD = 'correct horse battery staple'

const p = pki(t)
const ca = p.ca('ca')
const cert = p.leaf('server', ca, { cn: 'lmtp.test', usage: 'server', dns: ['lmtp.test'], ip: ['127.0.0.1'] })

/** `name:hash` as an operator makes it: htpasswd -nbB (bcrypt, $2y$). */
function htpasswd(name: string, password: string, cost = 5): string {
  return execFileSync(HTPASSWD, ['-nbB', '-C', String(cost), name, password], { encoding: 'utf8' }).trim()
}

const usersFile = join(p.dir, 'users')
writeFileSync(usersFile, `# LMTP clients\n${htpasswd('postfix', PASSWORD)}\n\n${htpasswd('exim@example.net', 'another secret')}\n`)

const b64 = (s: string): string => Buffer.from(s).toString('base64')
const plain = (user: string, pass: string, authzid = ''): string => b64(`${authzid}\0${user}\0${pass}`)

interface Started {
  port: number
  received: Received[]
  logs: () => string
  metrics: Metrics
}

async function start(tt: { teardown: (fn: () => unknown) => void }, auth: Partial<NonNullable<LmtpServerOptions['auth']>> = {}): Promise<Started> {
  const { log, text: logs } = capturedLogs('debug')
  const received: Received[] = []
  const metrics = new Metrics({ processMetrics: false })
  const server = new LmtpServer(
    {
      ...defaultOptions,
      tls: { certFile: cert.cert, keyFile: cert.key, clientCaFile: null, clientCert: 'off', required: false },
      auth: { usersFile, required: false, maxFailures: 3, failureWindowMs: 60_000, ...auth },
    },
    acceptingHandler(received),
    log,
    metrics.lmtpObserver(),
  )
  const port = (await server.listen({ host: '127.0.0.1', port: 0 })) as number
  tt.teardown(() => server.close(100))
  return { port, received, logs, metrics }
}

async function secure(port: number, localAddress?: string): Promise<RawClient> {
  const c = await RawClient.connect(port, { localAddress })
  await c.send(LHLO + 'STARTTLS\r\n', 2)
  await c.upgrade({ ca: readFileSync(ca.cert), servername: 'lmtp.test' })
  await c.send(LHLO, 1)
  return c
}

async function authCount(metrics: Metrics, result: string): Promise<number> {
  const values = (await metrics.registry.getSingleMetric('lmtp_webhook_lmtp_auth_total')!.get()).values
  return Number(values.find((v) => v.labels.result === result)?.value ?? NaN)
}

t.test('users file: htpasswd -B lines, comments; bad lines are named', async (t) => {
  const users = parseUsers(readFileSync(usersFile, 'utf8'))
  t.same([...users.keys()], ['postfix', 'exim@example.net'])
  t.same(parseUsers(`dovecot:{BLF-CRYPT}${htpasswd('x', 'y').split(':')[1]}`).size, 1, "Dovecot's {BLF-CRYPT} prefix is accepted")
  t.throws(() => parseUsers('postfix:secret\n'), /line 1 \(postfix\): expected a bcrypt hash/, 'a plain password is refused')
  t.throws(() => parseUsers('# c\npostfix\n'), /line 2: expected name:hash/)
  t.throws(() => parseUsers(`${htpasswd('a', 'b')}\n${htpasswd('a', 'c')}\n`), /line 2: a is listed twice/)
  t.throws(() => parseUsers(htpasswd('slow', 'x', 13)), /bcrypt cost 13 is outside 4\.\.12/)
  t.throws(() => parseUsers('md5:$apr1$abc$def\n'), /expected a bcrypt hash/)
})

t.test('AUTH is announced and accepted inside TLS only', async (t) => {
  const { port } = await start(t)
  const c = await RawClient.connect(port)
  t.strictSame(await c.send(LHLO, 1), ['250'])
  t.notOk(
    c.replies()[1]!.some((l) => l.includes('AUTH')),
    'not announced in cleartext',
  )
  t.strictSame(await c.send(`AUTH PLAIN ${plain('postfix', PASSWORD)}\r\n`, 1), ['538 5.7.11'], 'refused in cleartext: the password must not cross unencrypted')
  t.strictSame(await c.send('STARTTLS\r\n', 1), ['220 2.0.0'])
  await c.upgrade({ ca: readFileSync(ca.cert), servername: 'lmtp.test' })
  t.strictSame(await c.send(LHLO, 1), ['250'])
  t.ok(c.replies().at(-1)!.includes('250-AUTH PLAIN LOGIN'), 'announced inside TLS')
})

t.test('AUTH PLAIN and LOGIN: the identity reaches the envelope; wrong passwords get 535 5.7.8', async (t) => {
  const { port, received, metrics, logs } = await start(t, { maxFailures: 10 })
  const a = await secure(port)
  t.strictSame(await a.send(`AUTH PLAIN ${plain('postfix', 'wrong password')}\r\n`, 1), ['535 5.7.8'])
  t.strictSame(await a.send(`AUTH PLAIN ${plain('nobody', PASSWORD)}\r\n`, 1), ['535 5.7.8'], 'an unknown name fails the same way')
  t.strictSame(await a.send(`AUTH PLAIN ${plain('postfix', PASSWORD, 'admin')}\r\n`, 1), ['535 5.7.8'], 'acting as another identity is refused')
  t.strictSame(await a.send(`AUTH PLAIN ${plain('postfix', PASSWORD)}\r\n`, 1), ['235 2.7.0'])
  t.strictSame(await a.send(`AUTH PLAIN ${plain('postfix', PASSWORD)}\r\n` + TXN + 'QUIT\r\n', 6), [
    '503 5.5.1',
    '250 2.1.0',
    '250 2.1.5',
    '354',
    '250 2.0.0',
    '221 2.0.0',
  ])
  t.equal(received.at(-1)!.envelope.session.authUser, 'postfix')

  const b = await secure(port)
  t.strictSame(await b.send('AUTH PLAIN\r\n', 1), ['334'], 'PLAIN without an initial response: an empty challenge')
  t.equal(b.replies().at(-1)![0], '334 ')
  t.strictSame(await b.send(`${plain('exim@example.net', 'another secret', 'exim@example.net')}\r\n`, 1), ['235 2.7.0'])
  await b.send(TXN + 'QUIT\r\n', 5)
  t.equal(received.at(-1)!.envelope.session.authUser, 'exim@example.net')

  const c = await secure(port)
  t.strictSame(await c.send('AUTH LOGIN\r\n', 1), ['334'])
  t.equal(c.replies().at(-1)![0], `334 ${b64('Username:')}`)
  t.strictSame(await c.send(`${b64('postfix')}\r\n`, 1), ['334'])
  t.equal(c.replies().at(-1)![0], `334 ${b64('Password:')}`)
  t.strictSame(await c.send(`${b64(PASSWORD)}\r\n`, 1), ['235 2.7.0'])
  await c.send('QUIT\r\n', 1)

  const d = await secure(port)
  t.strictSame(await d.send(`AUTH LOGIN ${b64('postfix')}\r\n`, 1), ['334'], 'LOGIN with the name as initial response')
  t.strictSame(await d.send('*\r\n', 1), ['501 5.0.0'], '* cancels')
  t.strictSame(await d.send('AUTH LOGIN\r\nnot base64!\r\n', 2), ['334', '501 5.5.2'])
  t.strictSame(await d.send('AUTH CRAM-MD5\r\nAUTH\r\n', 2), ['504 5.5.4', '501 5.5.4'])
  t.strictSame(
    await d.send('MAIL FROM:<a@example.org>\r\nAUTH PLAIN\r\nRSET\r\nQUIT\r\n', 4),
    ['250 2.1.0', '503 5.5.1', '250 2.0.0', '221 2.0.0'],
    'no AUTH inside a transaction',
  )

  t.equal(await authCount(metrics, 'ok'), 3)
  t.equal(await authCount(metrics, 'failed'), 3)
  const text = logs()
  const failures = text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l.msg === 'authentication failed')
  t.match(failures[0], { level: 40, user: 'postfix', mechanism: 'PLAIN', remote: '127.0.0.1' }, 'a failure is logged with the name and the client address')
  t.notMatch(text, /wrong password/, 'never with the password tried')
  t.notMatch(text, new RegExp(PASSWORD), 'nor the right one')
  t.notMatch(text, new RegExp(plain('postfix', 'wrong password').slice(0, 12)), 'nor its base64')
})

t.test('failures are limited per client address: 454 4.7.0, other addresses unaffected', async (t) => {
  const { port, metrics } = await start(t, { maxFailures: 3 })
  const c = await secure(port)
  for (let i = 0; i < 3; i++) t.strictSame(await c.send(`AUTH PLAIN ${plain('postfix', `guess ${i}`)}\r\n`, 1), ['535 5.7.8'])
  t.strictSame(await c.send(`AUTH PLAIN ${plain('postfix', PASSWORD)}\r\n`, 1), ['454 4.7.0'], 'even the right password is refused now')
  const again = await secure(port)
  t.strictSame(await again.send(`AUTH PLAIN ${plain('postfix', PASSWORD)}\r\n`, 1), ['454 4.7.0'], 'on a new connection from the same address too')
  const other = await secure(port, '127.0.0.2')
  t.strictSame(await other.send(`AUTH PLAIN ${plain('postfix', PASSWORD)}\r\n`, 1), ['235 2.7.0'], 'another address is not affected')
  t.equal(await authCount(metrics, 'limited'), 2)

  const limiter = new FailureLimiter(2, 1000)
  limiter.fail('10.0.0.1', 0)
  limiter.fail('10.0.0.1', 10)
  t.ok(limiter.blocked('10.0.0.1', 500))
  t.notOk(limiter.blocked('10.0.0.1', 1000), 'the window ends')
  limiter.fail('2001:db8:1:2::1', 0)
  limiter.fail('2001:db8:1:2:ffff::9', 0)
  t.ok(limiter.blocked('2001:db8:1:2:abcd::5', 1), 'IPv6 addresses count per /64')
  t.same(['::ffff:10.1.2.3', '2001:DB8::1', '::1', 'fe80:0:0:0:1::'].map(clientKey), ['10.1.2.3', '2001:db8:0:0::/64', '0:0:0:0::/64', 'fe80:0:0:0::/64'])
})

t.test('LMTP_AUTH_REQUIRED: MAIL before AUTH gets 530 5.7.0', async (t) => {
  const { port, received } = await start(t, { required: true })
  const c = await secure(port)
  t.strictSame(await c.send('MAIL FROM:<a@example.org>\r\n', 1), ['530 5.7.0'])
  t.match(c.replies().at(-1)![0], /^530 5\.7\.0 Authentication required$/)
  t.strictSame(await c.send(`AUTH PLAIN ${plain('postfix', PASSWORD)}\r\n` + TXN + 'QUIT\r\n', 6), [
    '235 2.7.0',
    '250 2.1.0',
    '250 2.1.5',
    '354',
    '250 2.0.0',
    '221 2.0.0',
  ])
  t.equal(received.length, 1)
})

t.test('a users file rotated on disk is used without a restart; a broken one keeps the previous users', async (t) => {
  const file = join(p.dir, 'rotating-users')
  writeFileSync(file, `${htpasswd('first', 'one')}\n`)
  const { port } = await start(t, { usersFile: file, maxFailures: 1000 })
  const ok = async (name: string, pass: string): Promise<string> => {
    const c = await secure(port)
    const [code] = await c.send(`AUTH PLAIN ${plain(name, pass)}\r\n`, 1)
    c.destroy()
    return code!
  }
  t.equal(await ok('first', 'one'), '235 2.7.0')
  writeFileSync(file + '.new', `${htpasswd('second', 'two')}\n`)
  renameSync(file + '.new', file)
  let code = ''
  for (let i = 0; i < 50 && code !== '235 2.7.0'; i++) {
    await new Promise((r) => setTimeout(r, 100))
    code = await ok('second', 'two')
  }
  t.equal(code, '235 2.7.0', 'the new user is accepted')
  t.equal(await ok('first', 'one'), '535 5.7.8', 'the removed one is not')
  writeFileSync(file, 'second:not-a-hash\n')
  await new Promise((r) => setTimeout(r, 1200))
  t.equal(await ok('second', 'two'), '235 2.7.0', 'a file that does not parse keeps the users in force')
})

function swaks(args: string[]): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile('/usr/bin/swaks', args, { timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, output: `${stdout}${stderr}` })
    })
  })
}

t.test('swaks --tls -a PLAIN and -a LOGIN', async (t) => {
  const { port, received } = await start(t, { required: true })
  const base = ['--protocol', 'LMTP', '--server', '127.0.0.1', '--port', String(port), '--from', 'a@example.org', '--to', 'b@example.com', '--tls']
  for (const mechanism of ['PLAIN', 'LOGIN']) {
    const ok = await swaks([...base, '-a', mechanism, '-au', 'postfix', '-ap', PASSWORD])
    t.equal(ok.code, 0, `${mechanism}: swaks succeeds:\n${ok.output}`)
    t.match(ok.output, /<~ {2}235 2\.7\.0 Authentication successful/)
    t.equal(received.at(-1)!.envelope.session.authUser, 'postfix')
  }
  const bad = await swaks([...base, '-a', 'PLAIN', '-au', 'postfix', '-ap', 'nope'])
  t.not(bad.code, 0, 'a wrong password fails')
  t.match(bad.output, /<~\* 535 5\.7\.8 Authentication credentials invalid/)
  t.equal(received.length, 2)
})
