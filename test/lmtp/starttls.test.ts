/**
 * STARTTLS over real sockets with certificates made by openssl: what is announced when, the
 * handshake and the fresh session after it, LMTP_TLS_REQUIRED, client certificates (request and
 * require), the command injection of CVE-2011-0411, certificate rotation on disk while the server
 * runs, and swaks as a real client.
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import { copyFileSync, renameSync } from 'node:fs'
import { join } from 'node:path'
import { X509Certificate } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { startServer } from '../helpers/lmtp.js'
import { pki, type Pki } from '../helpers/certs.js'
import { RawClient } from '../helpers/lmtp-tls.js'
import type { LmtpServerOptions } from '../../src/lmtp/server.js'
import { Metrics } from '../../src/metrics.js'

const LHLO = 'LHLO client.test\r\n'
const TXN = 'MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nSubject: tls\r\n\r\nover TLS\r\n.\r\n'

interface Setup {
  pki: Pki
  ca: { cert: string; key: string }
  server: { cert: string; key: string }
  clientCa: { cert: string; key: string }
  client: { cert: string; key: string }
  otherCa: { cert: string; key: string }
  stranger: { cert: string; key: string }
}

function setup(tt: Parameters<typeof pki>[0]): Setup {
  const p = pki(tt)
  const ca = p.ca('server-ca')
  const server = p.leaf('server', ca, { cn: 'lmtp.test', usage: 'server', dns: ['lmtp.test'], ip: ['127.0.0.1'] })
  const clientCa = p.ca('mta-ca')
  const client = p.leaf('mta', clientCa, { cn: 'mx1.example.net', o: 'Example MTA', usage: 'client' })
  const otherCa = p.ca('other-ca')
  const stranger = p.leaf('stranger', otherCa, { cn: 'stranger.example.net', usage: 'client' })
  return { pki: p, ca, server, clientCa, client, otherCa, stranger }
}

const s = setup(t)

function tlsOptions(extra: Partial<NonNullable<LmtpServerOptions['tls']>> = {}): Partial<LmtpServerOptions> {
  return { tls: { certFile: s.server.cert, keyFile: s.server.key, clientCaFile: null, clientCert: 'off', required: false, ...extra } }
}

const fingerprint = (path: string): string => new X509Certificate(readFileSync(path)).fingerprint256

/** Connects, sends LHLO and STARTTLS, and completes the handshake. */
async function secureClient(port: number, options: Parameters<RawClient['upgrade']>[0] = {}): Promise<RawClient> {
  const c = await RawClient.connect(port)
  const codes = await c.send(LHLO + 'STARTTLS\r\n', 2)
  if (codes[1] !== '220 2.0.0') throw new Error(`STARTTLS refused: ${c.output}`)
  await c.upgrade({ ca: readFileSync(s.ca.cert), servername: 'lmtp.test', rejectUnauthorized: true, ...options })
  return c
}

t.test('without a certificate: STARTTLS is not announced and not known', async (t) => {
  const { port } = await startServer(t)
  const c = await RawClient.connect(port)
  t.strictSame(await c.send(LHLO + 'STARTTLS\r\nAUTH PLAIN\r\nQUIT\r\n', 4), ['250', '500 5.5.1', '500 5.5.1', '221 2.0.0'])
  t.notMatch(c.output, /250-STARTTLS|250-AUTH/)
})

t.test('STARTTLS: announced in cleartext, then a new session inside TLS that needs LHLO again', async (t) => {
  const metrics = new Metrics({ processMetrics: false })
  const { port, received } = await startServer(t, undefined, tlsOptions(), metrics.lmtpObserver())
  const c = await RawClient.connect(port)
  t.strictSame(await c.send(LHLO, 1), ['250'])
  t.strictSame(c.replies()[1], [
    '250-lmtp.test',
    '250-PIPELINING',
    '250-ENHANCEDSTATUSCODES',
    '250-8BITMIME',
    '250-SIZE 1048576',
    '250-SMTPUTF8',
    '250-CHUNKING',
    '250-BINARYMIME',
    '250-STARTTLS',
    '250 XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE',
  ])
  t.strictSame(await c.send('XFORWARD ADDR=192.0.2.1\r\nSTARTTLS now\r\nSTARTTLS\r\n', 3), ['250 2.0.0', '501 5.5.4', '220 2.0.0'])
  const secure = await c.upgrade({ ca: readFileSync(s.ca.cert), servername: 'lmtp.test', rejectUnauthorized: true })
  t.ok(secure.authorized, 'the client verifies the server certificate')
  t.equal(secure.getPeerX509Certificate()?.fingerprint256, fingerprint(s.server.cert), 'the configured certificate is presented')
  const before = c.replies().length
  t.strictSame(await c.send('MAIL FROM:<a@example.org>\r\n', 1), ['503 5.5.1'], 'the LHLO from before TLS is forgotten (RFC 3207)')
  t.strictSame(await c.send(LHLO, 1), ['250'])
  t.notOk(c.replies()[before + 1]!.includes('250-STARTTLS'), 'no STARTTLS inside TLS')
  t.strictSame(await c.send('STARTTLS\r\n' + TXN + 'QUIT\r\n', 6), ['503 5.5.1', '250 2.1.0', '250 2.1.5', '354', '250 2.0.0', '221 2.0.0'])
  await c.closed
  t.equal(received.length, 1)
  const session = received[0]!.envelope.session
  t.match(session.tls, { protocol: /^TLSv1\.[23]$/, cipher: /^TLS_/, clientSubject: null }, `the envelope records TLS (${JSON.stringify(session.tls)})`)
  t.same(received[0]!.envelope.xforward, {}, 'XFORWARD data from before TLS is forgotten')
  t.equal(received[0]!.body.toString(), 'Subject: tls\r\n\r\nover TLS\r\n')
  const ok = (await metrics.registry.getSingleMetric('lmtp_webhook_lmtp_starttls_total')!.get()).values.find((v) => v.labels.result === 'ok')
  t.equal(ok?.value, 1, 'lmtp_webhook_lmtp_starttls_total{result="ok"} counts the handshake')
})

t.test('STARTTLS refused: before LHLO, inside a transaction', async (t) => {
  const { port } = await startServer(t, undefined, tlsOptions())
  const c = await RawClient.connect(port)
  t.strictSame(await c.send('STARTTLS\r\n' + LHLO + 'MAIL FROM:<a@example.org>\r\nSTARTTLS\r\nRSET\r\nQUIT\r\n', 6), [
    '503 5.5.1',
    '250',
    '250 2.1.0',
    '503 5.5.1',
    '250 2.0.0',
    '221 2.0.0',
  ])
})

t.test('LMTP_TLS_REQUIRED: MAIL before STARTTLS gets 530 5.7.0; inside TLS mail flows', async (t) => {
  const { port, received } = await startServer(t, undefined, tlsOptions({ required: true }))
  const plain = await RawClient.connect(port)
  t.strictSame(await plain.send(LHLO + 'MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nQUIT\r\n', 4), ['250', '530 5.7.0', '503 5.5.1', '221 2.0.0'])
  t.match(plain.replies()[2]![0], /^530 5\.7\.0 Must issue a STARTTLS command first$/)
  const c = await secureClient(port)
  t.strictSame(await c.send(LHLO + TXN + 'QUIT\r\n', 6), ['250', '250 2.1.0', '250 2.1.5', '354', '250 2.0.0', '221 2.0.0'])
  t.equal(received.length, 1)
})

t.test('the STARTTLS command injection (CVE-2011-0411): cleartext pipelined after STARTTLS is discarded, never run', async (t) => {
  const { port, received } = await startServer(t, undefined, tlsOptions())
  const c = await RawClient.connect(port)
  t.strictSame(await c.send(LHLO, 1), ['250'])
  // One write, as an attacker in the path would inject it: STARTTLS and commands behind it.
  const injected = 'STARTTLS\r\nLHLO evil.test\r\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nSubject: injected\r\n\r\nx\r\n.\r\n'
  t.strictSame(await c.send(injected, 1), ['220 2.0.0'])
  await new Promise((r) => setTimeout(r, 100))
  t.equal(c.replies().length, 3, 'nothing but the 220 answers the injected cleartext')
  await c.upgrade({ ca: readFileSync(s.ca.cert), servername: 'lmtp.test' })
  t.strictSame(await c.send('MAIL FROM:<a@example.org>\r\n', 1), ['503 5.5.1'], 'inside TLS no LHLO has been given: the injected one was not run')
  t.strictSame(await c.send('RCPT TO:<b@example.com>\r\nDATA\r\n', 2), ['503 5.5.1', '503 5.5.1'], 'and no injected transaction is open')
  t.strictSame(await c.send(LHLO + TXN + 'QUIT\r\n', 6), ['250', '250 2.1.0', '250 2.1.5', '354', '250 2.0.0', '221 2.0.0'])
  await c.closed
  t.equal(received.length, 1, 'one message delivered: the client’s own')
  t.equal(received[0]!.envelope.sender.address, 'a@example.org')
  t.equal(received[0]!.envelope.session.lhlo, 'client.test')
})

t.test('a failed handshake closes the connection and is counted', async (t) => {
  const metrics = new Metrics({ processMetrics: false })
  const { port, server } = await startServer(t, undefined, tlsOptions(), metrics.lmtpObserver())
  const c = await RawClient.connect(port)
  t.strictSame(await c.send(LHLO + 'STARTTLS\r\n', 2), ['250', '220 2.0.0'])
  c.socket.write('MAIL FROM:<not-tls@example.org>\r\n')
  await c.closed
  t.equal(c.replies().length, 3, 'no LMTP reply to bytes that are not TLS')
  while (server.connections > 0) await new Promise((r) => setTimeout(r, 10))
  const failed = (await metrics.registry.getSingleMetric('lmtp_webhook_lmtp_starttls_total')!.get()).values.find((v) => v.labels.result === 'failed')
  t.equal(failed?.value, 1, 'lmtp_webhook_lmtp_starttls_total{result="failed"}')
})

t.test('a handshake that never starts is cut off after the idle timeout, and the slot is free again', async (t) => {
  const { port, server } = await startServer(t, undefined, { ...tlsOptions(), idleTimeoutMs: 300 })
  const c = await RawClient.connect(port)
  t.strictSame(await c.send(LHLO + 'STARTTLS\r\n', 2), ['250', '220 2.0.0'])
  const started = Date.now()
  await c.closed
  t.ok(Date.now() - started < 3000, `closed after ${Date.now() - started} ms (idle timeout 300 ms)`)
  while (server.connections > 0) await new Promise((r) => setTimeout(r, 10))
  t.equal(server.connections, 0)
})

t.test('client certificates, LMTP_TLS_CLIENT_CERT=request: a verified subject is recorded, others get none', async (t) => {
  const { port, received } = await startServer(t, undefined, tlsOptions({ clientCaFile: s.clientCa.cert, clientCert: 'request' }))
  const cases: [string, { cert?: Buffer; key?: Buffer }, string | null][] = [
    ['signed by the client CA', { cert: readFileSync(s.client.cert), key: readFileSync(s.client.key) }, 'CN=mx1.example.net,O=Example MTA'],
    ['no certificate', {}, null],
    ['signed by another CA', { cert: readFileSync(s.stranger.cert), key: readFileSync(s.stranger.key) }, null],
  ]
  for (const [what, creds, subject] of cases) {
    const c = await secureClient(port, creds)
    t.strictSame(await c.send(LHLO + TXN + 'QUIT\r\n', 6), ['250', '250 2.1.0', '250 2.1.5', '354', '250 2.0.0', '221 2.0.0'], `${what}: delivered`)
    await c.closed
    t.equal(received.at(-1)!.envelope.session.tls?.clientSubject, subject, `${what}: subject ${subject}`)
  }
})

t.test('client certificates, LMTP_TLS_CLIENT_CERT=require: without a verified one, 421 4.7.0 and closed', async (t) => {
  const metrics = new Metrics({ processMetrics: false })
  const { port, received } = await startServer(t, undefined, tlsOptions({ clientCaFile: s.clientCa.cert, clientCert: 'require' }), metrics.lmtpObserver())
  for (const [what, creds] of [
    ['no certificate', {}],
    ['signed by another CA', { cert: readFileSync(s.stranger.cert), key: readFileSync(s.stranger.key) }],
  ] as const) {
    const c = await secureClient(port, creds)
    c.socket.write(LHLO)
    await c.closed
    t.strictSame(c.codes(3), ['421 4.7.0'], `${what}: refused`)
  }
  const c = await secureClient(port, { cert: readFileSync(s.client.cert), key: readFileSync(s.client.key) })
  t.strictSame(
    await c.send(LHLO + TXN + 'QUIT\r\n', 6),
    ['250', '250 2.1.0', '250 2.1.5', '354', '250 2.0.0', '221 2.0.0'],
    'a certificate from the client CA: delivered',
  )
  t.equal(received.length, 1)
  t.equal(received[0]!.envelope.session.tls?.clientSubject, 'CN=mx1.example.net,O=Example MTA')
  const refused = (await metrics.registry.getSingleMetric('lmtp_webhook_lmtp_starttls_total')!.get()).values.find(
    (v) => v.labels.result === 'no_client_certificate',
  )
  t.equal(refused?.value, 2, 'lmtp_webhook_lmtp_starttls_total{result="no_client_certificate"}')
})

t.test('a certificate rotated on disk is used by new connections without a restart', async (t) => {
  const dir = s.pki.dir
  const certFile = join(dir, 'live.crt')
  const keyFile = join(dir, 'live.key')
  copyFileSync(s.server.cert, certFile)
  copyFileSync(s.server.key, keyFile)
  const { port } = await startServer(t, undefined, { tls: { certFile, keyFile, clientCaFile: null, clientCert: 'off', required: false } })
  const first = await secureClient(port)
  t.equal((first.socket as import('node:tls').TLSSocket).getPeerX509Certificate()?.fingerprint256, fingerprint(s.server.cert))

  // As Kubernetes updates a mounted Secret: new files written beside, then swapped in by rename.
  const next = s.pki.leaf('server-next', s.ca, { cn: 'lmtp.test', usage: 'server', dns: ['lmtp.test'] })
  copyFileSync(next.key, keyFile + '.new')
  copyFileSync(next.cert, certFile + '.new')
  renameSync(keyFile + '.new', keyFile)
  renameSync(certFile + '.new', certFile)
  let seen = ''
  const deadline = Date.now() + 10_000
  while (Date.now() < deadline) {
    const c = await secureClient(port)
    seen = (c.socket as import('node:tls').TLSSocket).getPeerX509Certificate()?.fingerprint256 ?? ''
    c.destroy()
    if (seen === fingerprint(next.cert)) break
    await new Promise((r) => setTimeout(r, 200))
  }
  t.equal(seen, fingerprint(next.cert), 'a new connection gets the new certificate')
  t.strictSame(
    await first.send(LHLO + TXN + 'QUIT\r\n', 6),
    ['250', '250 2.1.0', '250 2.1.5', '354', '250 2.0.0', '221 2.0.0'],
    'the session started before goes on',
  )

  // A half-written pair (a key that is not the certificate's) is not taken: the last good one stays.
  copyFileSync(s.server.key, keyFile)
  await new Promise((r) => setTimeout(r, 1200))
  const c = await secureClient(port)
  t.equal(
    (c.socket as import('node:tls').TLSSocket).getPeerX509Certificate()?.fingerprint256,
    fingerprint(next.cert),
    'a mismatched key keeps the previous pair',
  )
  c.destroy()
})

interface RunResult {
  code: number
  output: string
}

function swaks(args: string[]): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile('/usr/bin/swaks', args, { timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, output: `${stdout}${stderr}` })
    })
  })
}

t.test('swaks --protocol LMTP --tls, with and without a client certificate', async (t) => {
  const { port, received } = await startServer(t, undefined, tlsOptions({ clientCaFile: s.clientCa.cert, clientCert: 'request', required: true }))
  const base = [
    '--protocol',
    'LMTP',
    '--server',
    '127.0.0.1',
    '--port',
    String(port),
    '--helo',
    'swaks.test',
    '--from',
    'a@example.org',
    '--to',
    'b@example.com',
    '--tls',
  ]
  const plain = await swaks(base)
  t.equal(plain.code, 0, `swaks --tls succeeds:\n${plain.output}`)
  t.match(plain.output, /<- {2}220 2\.0\.0 Ready to start TLS/)
  t.match(plain.output, /=== TLS started with cipher/)
  t.match(plain.output, /<~ {2}250 2\.0\.0 <b@example\.com> delivered/)
  t.equal(received.at(-1)!.envelope.session.tls?.clientSubject, null)

  const withCert = await swaks([...base, '--tls-cert', s.client.cert, '--tls-key', s.client.key])
  t.equal(withCert.code, 0, `swaks --tls-cert succeeds:\n${withCert.output}`)
  t.equal(
    received.at(-1)!.envelope.session.tls?.clientSubject,
    'CN=mx1.example.net,O=Example MTA',
    'the subject of the client certificate reaches the envelope',
  )

  const cleartext = await swaks(base.filter((a) => a !== '--tls'))
  t.not(cleartext.code, 0, 'without --tls the required TLS refuses the mail')
  t.match(cleartext.output, /<\*\* 530 5\.7\.0 Must issue a STARTTLS command first/)
  t.equal(received.length, 2)
})
