/**
 * The whole service (real Redis, real webhook receivers) with every listener-security option on:
 * an MTA behind a load balancer that sends the PROXY protocol, STARTTLS with a client
 * certificate, AUTH PLAIN. What the webhook receives says who delivered: the MTA's address from the
 * PROXY header, the TLS parameters with the verified subject, and the AUTH identity, in the JSON
 * envelope and in the raw format's x-lmtp-* headers.
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { routesFile, startApp, webhook } from '../helpers/app.js'
import { validatePayload } from '../helpers/schema.js'
import { pki } from '../helpers/certs.js'
import { RawClient } from '../helpers/lmtp-tls.js'

const p = pki(t)
const ca = p.ca('ca')
const server = p.leaf('server', ca, { cn: 'lmtp.test', usage: 'server', dns: ['lmtp.test'] })
const mtaCa = p.ca('mta-ca')
const mta = p.leaf('mta', mtaCa, { cn: 'mx1.example.net', o: 'Example, Inc.', usage: 'client' })
const users = join(p.dir, 'users')
writeFileSync(users, execFileSync('htpasswd', ['-nbB', '-C', '5', 'relay', 'relay secret'], { encoding: 'utf8' }))

const plain = (user: string, pass: string): string => Buffer.from(`\0${user}\0${pass}`).toString('base64')

t.test('PROXY + STARTTLS + client certificate + AUTH: the webhook sees who delivered', async (t) => {
  const json = await webhook(t, 200)
  const raw = await webhook(t, 200)
  const file = routesFile(
    t,
    `routes:
  - { id: json, match: "json@example.com", url: "${json.url}" }
  - { id: raw, match: "raw@example.com", url: "${raw.url}", format: raw }
`,
  )
  const { lmtpPort } = await startApp(t, {
    ROUTES_FILE: file,
    LMTP_TLS_CERT_FILE: server.cert,
    LMTP_TLS_KEY_FILE: server.key,
    LMTP_TLS_CLIENT_CA_FILE: mtaCa.cert,
    LMTP_TLS_CLIENT_CERT: 'require',
    LMTP_TLS_REQUIRED: 'true',
    LMTP_AUTH_USERS_FILE: users,
    LMTP_AUTH_REQUIRED: 'true',
    LMTP_PROXY_PROTOCOL: 'true',
    LMTP_PROXY_TRUSTED_CIDRS: '127.0.0.1/32',
    LMTP_ALLOW_CIDRS: '203.0.113.0/24',
  })
  const c = await RawClient.connect(lmtpPort!, { preamble: 'PROXY TCP4 203.0.113.25 10.0.0.7 41000 2424\r\n' })
  t.strictSame(await c.send('LHLO mx1.example.net\r\nSTARTTLS\r\n', 2), ['250', '220 2.0.0'])
  await c.upgrade({ ca: readFileSync(ca.cert), servername: 'lmtp.test', cert: readFileSync(mta.cert), key: readFileSync(mta.key) })
  t.strictSame(
    await c.send(
      `LHLO mx1.example.net\r\nAUTH PLAIN ${plain('relay', 'relay secret')}\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<json@example.com>\r\nRCPT TO:<raw@example.com>\r\nDATA\r\nSubject: secure\r\n\r\nhi\r\n.\r\nQUIT\r\n`,
      9,
    ),
    ['250', '235 2.7.0', '250 2.1.0', '250 2.1.5', '250 2.1.5', '354', '250 2.0.0', '250 2.0.0', '221 2.0.0'],
  )
  t.equal(json.requests.length, 1)
  const payload = JSON.parse(json.requests[0]!.body.toString()) as { envelope: Record<string, unknown> }
  t.ok(validatePayload(payload), `the payload matches its schema ${JSON.stringify(validatePayload.errors)}`)
  t.equal(payload.envelope.clientAddress, '203.0.113.25', 'the MTA behind the load balancer, not the proxy')
  t.match(payload.envelope.tls, { protocol: /^TLSv1\.[23]$/, cipher: /^TLS_/, clientSubject: 'CN=mx1.example.net,O=Example\\, Inc.' })
  t.equal(payload.envelope.authUser, 'relay')
  t.equal(raw.requests.length, 1)
  const h = raw.requests[0]!.headers
  t.equal(h['x-lmtp-client-address'], '203.0.113.25')
  t.match(h['x-lmtp-tls'], /^TLSv1\.[23]$/)
  t.match(h['x-lmtp-tls-cipher'], /^TLS_/)
  t.equal(decodeURIComponent(h['x-lmtp-tls-client-subject'] as string), 'CN=mx1.example.net,O=Example\\, Inc.')
  t.equal(h['x-lmtp-auth-user'], 'relay')
})
