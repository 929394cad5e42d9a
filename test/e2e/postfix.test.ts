/**
 * A real Postfix in front of the service. One message to three recipients goes in through
 * Postfix's smtpd; Postfix relays it over LMTP; each recipient's webhook answers differently, and
 * Postfix's own log shows what a mail administrator would see: one recipient sent, one deferred
 * and sent on retry once its webhook recovers, one bounced. Then Postfix over TLS with a client
 * certificate, accepted by a service that trusts its CA and deferred by one that does not.
 */
import t from 'tap'
import { cleanRedis, prefix, REDIS_URL, routesFile } from '../helpers/app.js'
import { startService } from '../helpers/process.js'
import { postfixUnavailable, startPostfix, submit } from '../helpers/postfix.js'
import { freePort } from '../helpers/net.js'
import { until } from '../helpers/until.js'
import { webhook } from '../helpers/webhook.js'
import { pki } from '../helpers/certs.js'
import { execFileSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'

const unavailable = postfixUnavailable()

const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')

interface Payload {
  envelope: { mailFrom: string; rcptTo: string; recipients: string[]; xforward: Record<string, string> | null }
  message: { subject: string }
}

t.test('Postfix relays over LMTP: per-recipient sent, deferred then sent, bounced', { skip: unavailable ?? false }, async (t) => {
  const p = prefix()
  t.teardown(() => cleanRedis(p))
  const accepting = await webhook(t, 200)
  const deferring = await webhook(t, (_req, _body, res, n) => {
    res.statusCode = n === 1 ? 503 : 200
    res.end()
  })
  const rejecting = await webhook(t, 404)
  const file = routesFile(
    t,
    `routes:
  - { id: accepting, match: "alice@example.com", url: "${accepting.url}" }
  - { id: deferring, match: "bob@example.com", url: "${deferring.url}" }
  - { id: rejecting, match: "carol@example.com", url: "${rejecting.url}" }
`,
  )
  const service = await startService(t, {
    REDIS_URL,
    REDIS_PREFIX: p,
    ROUTES_FILE: file,
    LMTP_DOMAINS: 'example.com',
    LMTP_HOSTNAME: 'lmtp.e2e.test',
    REPLY_TIMEOUT: '20s',
  })
  const postfix = await startPostfix(t, { domain: 'example.com', lmtpPort: service.lmtpPort })

  const helo = `client-${p}.e2e.test`
  const { queueId } = await submit(postfix.smtpPort, {
    helo,
    from: 'sender@sender.e2e.test',
    to: ['alice@example.com', 'bob@example.com', 'carol@example.com'],
    message: `From: <sender@sender.e2e.test>\nTo: <alice@example.com>, <bob@example.com>, <carol@example.com>\nSubject: through postfix ${p}\nMessage-ID: <${p}@sender.e2e.test>\n\nHello from Postfix.\n.leading dot\n`,
  })

  const relay = `relay=127\\.0\\.0\\.1\\[127\\.0\\.0\\.1\\]:${service.lmtpPort}`
  const line = (rcpt: string, status: string): RegExp =>
    new RegExp(`^.*postfix/lmtp\\[\\d+\\]: ${queueId}: to=<${escape(rcpt)}>, ${relay}, .*status=${status} \\((.*)\\)$`, 'm')

  const sent = await postfix.waitForLog(line('alice@example.com', 'sent'))
  t.match(sent[1], /^250 2\.0\.0 <alice@example\.com> delivered$/, 'Postfix records our 250 for the accepting recipient')

  const bounced = await postfix.waitForLog(line('carol@example.com', 'bounced'))
  t.match(
    bounced[1],
    /said: 550 5\.1\.1 <carol@example\.com> mailbox unavailable \(webhook answered 404\) \(in reply to end of DATA command\)/,
    'Postfix bounces the rejected recipient with our 5.1.1 text',
  )

  const deferred = await postfix.waitForLog(line('bob@example.com', 'deferred'))
  t.match(
    deferred[1],
    /said: 451 4\.3\.0 <bob@example\.com> webhook unavailable \(HTTP 503\), try again later \(in reply to end of DATA command\)/,
    'the 503 defers the recipient',
  )
  const retried = await postfix.waitForLog(line('bob@example.com', 'sent'))
  t.match(retried[1], /^250 2\.0\.0 <bob@example\.com> delivered$/, 'Postfix retries and the recovered webhook delivers it')
  t.ok(deferred.index < retried.index, 'deferred first, sent on the retry')

  // Postfix's bounce to the sender goes to the discard transport, not to the network.
  const [, bounceId] = await postfix.waitForLog(new RegExp(`${queueId}: sender non-delivery notification: (\\w+)`))
  const discarded = await postfix.waitForLog(new RegExp(`postfix/discard\\[\\d+\\]: ${bounceId}: to=<sender@sender\\.e2e\\.test>, relay=none, .*status=sent`))
  t.ok(discarded, 'the bounce to the sender is discarded on this machine')
  await postfix.waitForLog(new RegExp(`${queueId}: removed`))
  const queue = await until('an empty Postfix queue', async () => {
    const q = await postfix.queue()
    return /Mail queue is empty/.test(q) ? q : null
  })
  t.match(queue, /Mail queue is empty/, 'nothing is left in the Postfix queue')

  t.equal(accepting.requests.length, 1, 'the accepting webhook got the message once')
  t.equal(rejecting.requests.length, 1, 'the rejecting webhook got the message once')
  t.equal(deferring.requests.length, 2, 'the deferring webhook got the first attempt and the retry')
  t.equal(deferring.requests[0]!.headers['webhook-id'], deferring.requests[1]!.headers['webhook-id'], 'the retry carries the same webhook-id')

  const payload = JSON.parse(accepting.requests[0]!.body.toString()) as Payload
  t.equal(payload.envelope.mailFrom, 'sender@sender.e2e.test', 'the payload carries the envelope sender')
  t.equal(payload.envelope.rcptTo, 'alice@example.com', 'and this recipient')
  t.same(payload.envelope.recipients, ['alice@example.com', 'bob@example.com', 'carol@example.com'], 'one LMTP transaction carried all three recipients')
  t.equal(payload.message.subject, `through postfix ${p}`, 'the parsed message is the one sent')
  t.match(
    payload.envelope.xforward,
    { addr: '127.0.0.1', helo, ident: queueId },
    'XFORWARD data from Postfix: the original client address, its EHLO name and Postfix queue id',
  )
  const retryPayload = JSON.parse(deferring.requests[1]!.body.toString()) as Payload
  t.same(retryPayload.envelope.recipients, ['bob@example.com'], 'the retry carries only the deferred recipient')
  t.equal(retryPayload.envelope.xforward?.helo, helo, 'the retry still carries the original client')
})

t.test('a service restart while Postfix waits for replies loses nothing: deferred, then sent by the new process', { skip: unavailable ?? false }, async (t) => {
  const p = prefix()
  t.teardown(() => cleanRedis(p))
  // The webhook hangs until `answering` is set, as a consumer that is down would.
  let answering = false
  const hanging: (() => void)[] = []
  const hook = await webhook(t, (_req, _body, res) => {
    const answer = (): void => {
      if (!res.destroyed) res.end()
    }
    if (answering) answer()
    else hanging.push(answer)
  })
  t.teardown(() => hanging.splice(0).forEach((answer) => answer()))
  const file = routesFile(t, `routes:\n  - { id: all, match: "*@example.com", url: "${hook.url}" }\n`)
  // Postfix's transport names a fixed port: the restarted service must come back on it.
  const lmtpPort = await freePort()
  const env = {
    REDIS_URL,
    REDIS_PREFIX: p,
    ROUTES_FILE: file,
    LMTP_PORT: String(lmtpPort),
    LMTP_DOMAINS: 'example.com',
    LMTP_HOSTNAME: 'lmtp.e2e.test',
    REPLY_TIMEOUT: '30s',
    SHUTDOWN_TIMEOUT: '1s',
  }
  const first = await startService(t, env)
  const postfix = await startPostfix(t, { domain: 'example.com', lmtpPort })

  const recipients = ['dave@example.com', 'erin@example.com']
  const { queueId } = await submit(postfix.smtpPort, {
    helo: 'client.e2e.test',
    from: 'sender@sender.e2e.test',
    to: recipients,
    message: `From: <sender@sender.e2e.test>\nSubject: restart ${p}\nMessage-ID: <restart-${p}@sender.e2e.test>\n\nDelivered across a restart.\n`,
  })
  await until('both webhook calls', () => hook.requests.length >= recipients.length, 30_000)
  t.equal(hook.requests.length, recipients.length, 'Postfix handed the message over and both webhook calls hang')

  first.child.kill('SIGTERM')
  t.equal(await first.exited, 0, 'the service stops at its shutdown deadline and exits 0')
  const relay = `relay=127\\.0\\.0\\.1\\[127\\.0\\.0\\.1\\]:${lmtpPort}`
  const line = (rcpt: string, status: string): RegExp =>
    new RegExp(`^.*postfix/lmtp\\[\\d+\\]: ${queueId}: to=<${escape(rcpt)}>, ${relay}, .*status=${status} \\((.*)\\)$`, 'm')
  const deferred = await Promise.all(recipients.map((rcpt) => postfix.waitForLog(line(rcpt, 'deferred'))))
  t.match(deferred[0]![1], /said: 421 4\.3\.2 /, 'the first waiting recipient gets the 421 4.3.2 shutdown reply and is deferred')
  t.ok(deferred[1], 'the other waiting recipient is deferred too')
  t.notMatch(postfix.log(), new RegExp(`${queueId}: to=<[^>]+>, ${relay}, .*status=bounced`), 'nothing bounced')

  answering = true
  const idsBefore = new Set(hook.requests.map((r) => r.headers['webhook-id']))
  await startService(t, env)
  for (const rcpt of recipients) {
    const sent = await postfix.waitForLog(line(rcpt, 'sent'))
    t.match(sent[1], new RegExp(`^250 2\\.0\\.0 <${escape(rcpt)}> delivered$`), `${rcpt}: Postfix delivers it again to the restarted service`)
  }
  const idsAfter = new Set(hook.requests.slice(recipients.length).map((r) => r.headers['webhook-id']))
  t.same([...idsAfter].sort(), [...idsBefore].sort(), 'the redelivery carries the same webhook ids, so the consumer can tell')
})

t.test(
  'Postfix with lmtp_tls_security_level = encrypt, a client certificate and SASL AUTH: delivered over TLS; with the wrong CA, deferred',
  { skip: unavailable ?? false },
  async (t) => {
    const p = prefix()
    t.teardown(() => cleanRedis(p))
    const certs = pki(t)
    const serverCa = certs.ca('server-ca')
    const serverCert = certs.leaf('lmtp', serverCa, { cn: 'lmtp.e2e.test', usage: 'server', dns: ['lmtp.e2e.test'], ip: ['127.0.0.1'] })
    const mtaCa = certs.ca('mta-ca')
    const mtaCert = certs.leaf('mta', mtaCa, { cn: 'mx.e2e.test', o: 'E2E MTA', usage: 'client' })
    const otherCa = certs.ca('other-ca')
    const hook = await webhook(t, 200)
    const file = routesFile(t, `routes:\n  - { id: all, match: "*", url: "${hook.url}" }\n`)
    const env = (clientCa: string): Record<string, string> => ({
      REDIS_URL,
      REDIS_PREFIX: p,
      ROUTES_FILE: file,
      LMTP_DOMAINS: 'example.com,example.net',
      LMTP_HOSTNAME: 'lmtp.e2e.test',
      LMTP_TLS_CERT_FILE: serverCert.cert,
      LMTP_TLS_KEY_FILE: serverCert.key,
      LMTP_TLS_REQUIRED: 'true',
      LMTP_TLS_CLIENT_CA_FILE: clientCa,
      LMTP_TLS_CLIENT_CERT: 'require',
    })
    // example.com goes to a service that trusts the MTA's CA, example.net to one that trusts another.
    const trusting = await startService(t, env(mtaCa.cert))
    const distrusting = await startService(t, env(otherCa.cert))
    // example.org goes to one that also requires AUTH.
    const usersFile = join(certs.dir, 'users')
    writeFileSync(usersFile, execFileSync('htpasswd', ['-nbB', 'postfix', 'sasl-secret'], { encoding: 'utf8' }))
    const authenticating = await startService(t, {
      ...env(mtaCa.cert),
      LMTP_DOMAINS: 'example.org',
      LMTP_AUTH_USERS_FILE: usersFile,
      LMTP_AUTH_REQUIRED: 'true',
    })
    const postfix = await startPostfix(t, {
      domain: 'example.com',
      lmtpPort: trusting.lmtpPort,
      main: {
        relay_domains: 'example.com, example.net, example.org',
        transport_maps: `inline:{ example.com=lmtp:inet:127.0.0.1:${trusting.lmtpPort}, example.net=lmtp:inet:127.0.0.1:${distrusting.lmtpPort}, example.org=lmtp:inet:127.0.0.1:${authenticating.lmtpPort} }`,
        lmtp_tls_security_level: 'encrypt',
        lmtp_tls_cert_file: mtaCert.cert,
        lmtp_tls_key_file: mtaCert.key,
        lmtp_tls_loglevel: '1',
        lmtp_sasl_auth_enable: 'yes',
        lmtp_sasl_password_maps: 'static:postfix:sasl-secret',
        lmtp_sasl_security_options: 'noanonymous',
        lmtp_sasl_tls_security_options: 'noanonymous',
      },
    })
    const good = await submit(postfix.smtpPort, {
      helo: 'client.e2e.test',
      from: 'sender@sender.e2e.test',
      to: ['alice@example.com'],
      message: `From: <sender@sender.e2e.test>\nSubject: tls ${p}\n\nOver TLS with a client certificate.\n`,
    })
    const trustingRelay = `127\\.0\\.0\\.1\\[127\\.0\\.0\\.1\\]:${trusting.lmtpPort}`
    const established = await postfix.waitForLog(
      new RegExp(`postfix/lmtp\\[\\d+\\]: \\w+ TLS connection established to ${trustingRelay}: (TLSv1\\.[23]) with cipher (\\S+)`),
    )
    t.ok(established, `Postfix's log shows the TLS connection: ${established[0].split(': ').slice(1).join(': ')}`)
    const sent = await postfix.waitForLog(
      new RegExp(`postfix/lmtp\\[\\d+\\]: ${good.queueId}: to=<alice@example\\.com>, relay=${trustingRelay}, .*status=sent \\((.*)\\)$`, 'm'),
    )
    t.match(sent[1], /^250 2\.0\.0 <alice@example\.com> delivered$/, 'delivered')
    t.equal(hook.requests.length, 1)
    const payload = JSON.parse(hook.requests[0]!.body.toString()) as { envelope: { tls: { protocol: string; clientSubject: string | null } } }
    t.equal(payload.envelope.tls.protocol, established[1], 'the payload records the TLS version Postfix negotiated')
    t.equal(payload.envelope.tls.clientSubject, 'CN=mx.e2e.test,O=E2E MTA', "and the subject of Postfix's client certificate")

    const bad = await submit(postfix.smtpPort, {
      helo: 'client.e2e.test',
      from: 'sender@sender.e2e.test',
      to: ['bob@example.net'],
      message: `From: <sender@sender.e2e.test>\nSubject: wrong CA ${p}\n\nRefused.\n`,
    })
    const distrustingRelay = `127\\.0\\.0\\.1\\[127\\.0\\.0\\.1\\]:${distrusting.lmtpPort}`
    const deferred = await postfix.waitForLog(
      new RegExp(`postfix/lmtp\\[\\d+\\]: ${bad.queueId}: to=<bob@example\\.net>, relay=${distrustingRelay}, .*status=deferred \\((.*)\\)$`, 'm'),
    )
    t.match(
      deferred[1],
      /421 4\.7\.0 lmtp\.e2e\.test a client certificate signed by the trusted CA is required/,
      'a certificate from another CA: deferred with our 421 4.7.0',
    )
    t.notMatch(postfix.log(), new RegExp(`${bad.queueId}: .*status=(sent|bounced)`), 'neither delivered nor bounced: the MTA keeps it')
    t.equal(hook.requests.length, 1, 'nothing reached the webhook from the refused session')

    const authed = await submit(postfix.smtpPort, {
      helo: 'client.e2e.test',
      from: 'sender@sender.e2e.test',
      to: ['carol@example.org'],
      message: `From: <sender@sender.e2e.test>\nSubject: sasl ${p}\n\nWith AUTH.\n`,
    })
    const authRelay = `127\\.0\\.0\\.1\\[127\\.0\\.0\\.1\\]:${authenticating.lmtpPort}`
    const authSent = await postfix.waitForLog(
      new RegExp(`postfix/lmtp\\[\\d+\\]: ${authed.queueId}: to=<carol@example\\.org>, relay=${authRelay}, .*status=sent \\((.*)\\)$`, 'm'),
    )
    t.match(authSent[1], /^250 2\.0\.0 <carol@example\.org> delivered$/, 'with lmtp_sasl_auth_enable, delivered to the service that requires AUTH')
    const last = JSON.parse(hook.requests.at(-1)!.body.toString()) as { envelope: { authUser: string | null; rcptTo: string } }
    t.same([last.envelope.rcptTo, last.envelope.authUser], ['carol@example.org', 'postfix'], 'the payload names the SASL identity Postfix used')
  },
)
