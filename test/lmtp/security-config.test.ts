/**
 * The listener-security variables in src/config.ts: defaults, what each one turns on, and that a
 * bad value (or a missing partner) stops start-up with an error naming the variable, also for a
 * real process.
 */
import t from 'tap'
import { copyFileSync, writeFileSync } from 'node:fs'
import { execFileSync, spawn } from 'node:child_process'
import { join } from 'node:path'
import { loadConfig } from '../../src/config.js'
import { isAppError } from '../../src/errors.js'
import { pki } from '../helpers/certs.js'

const p = pki(t)
const ca = p.ca('ca')
const server = p.leaf('server', ca, { cn: 'lmtp.test', usage: 'server', dns: ['lmtp.test'] })
const other = p.leaf('other', ca, { cn: 'other.test', usage: 'server', dns: ['other.test'] })
const garbage = join(p.dir, 'garbage.pem')
writeFileSync(garbage, 'not a certificate\n')
const users = join(p.dir, 'users')
writeFileSync(users, execFileSync('htpasswd', ['-nbB', '-C', '5', 'postfix', 'secret'], { encoding: 'utf8' }))
const badUsers = join(p.dir, 'bad-users')
writeFileSync(badUsers, 'postfix:secret\n')
const keyAsCert = join(p.dir, 'key-as-cert.pem')
copyFileSync(server.key, keyAsCert)

const BASE = { ADMIN_ALLOW_NO_AUTH: 'true' }
const TLS = { LMTP_TLS_CERT_FILE: server.cert, LMTP_TLS_KEY_FILE: server.key }

/** The variable a configuration error names, or null when the configuration loads. */
function rejected(env: Record<string, string>): string | null {
  try {
    loadConfig({ ...BASE, ...env })
    return null
  } catch (err) {
    if (!isAppError(err, 'CONFIG_ERR_INVALID')) throw err
    const variable = err.details?.variable as string
    if (!err.message.startsWith(`${variable}: `)) throw new Error(`message does not start with the variable: ${err.message}`, { cause: err })
    return variable
  }
}

t.test('defaults: cleartext, no AUTH, everyone, no PROXY, 64 KiB discard cap', async (t) => {
  const c = loadConfig(BASE)
  t.equal(c.lmtp.tls, null)
  t.equal(c.lmtp.auth, null)
  t.same(c.lmtp.allowCidrs, [])
  t.equal(c.lmtp.proxy, null)
  t.equal(c.lmtp.maxLineDiscard, 64 * 1024)
})

t.test('values that load', async (t) => {
  const tls = loadConfig({ ...BASE, ...TLS }).lmtp.tls
  t.same(tls, { certFile: server.cert, keyFile: server.key, clientCaFile: null, clientCert: 'off', required: false })
  const withCa = loadConfig({ ...BASE, ...TLS, LMTP_TLS_CLIENT_CA_FILE: ca.cert, LMTP_TLS_REQUIRED: 'yes' }).lmtp.tls
  t.same([withCa?.clientCaFile, withCa?.clientCert, withCa?.required], [ca.cert, 'request', true], 'a client CA alone means request')
  t.equal(loadConfig({ ...BASE, ...TLS, LMTP_TLS_CLIENT_CA_FILE: ca.cert, LMTP_TLS_CLIENT_CERT: 'require' }).lmtp.tls?.clientCert, 'require')
  t.same(loadConfig({ ...BASE, ...TLS, LMTP_TLS_CLIENT_CA_FILE: ca.cert, LMTP_TLS_CLIENT_CERT: 'off' }).lmtp.tls?.clientCaFile, null, 'off ignores the CA')
  const auth = loadConfig({
    ...BASE,
    ...TLS,
    LMTP_AUTH_USERS_FILE: users,
    LMTP_AUTH_REQUIRED: 'true',
    LMTP_AUTH_MAX_FAILURES: '3',
    LMTP_AUTH_FAILURE_WINDOW: '90s',
  }).lmtp.auth
  t.same(auth, { usersFile: users, required: true, maxFailures: 3, failureWindowMs: 90_000 })
  t.same(loadConfig({ ...BASE, ...TLS, LMTP_AUTH_USERS_FILE: users }).lmtp.auth, {
    usersFile: users,
    required: false,
    maxFailures: 5,
    failureWindowMs: 600_000,
  })
  t.same(loadConfig({ ...BASE, LMTP_ALLOW_CIDRS: '10.0.0.0/8, fd00::/8,192.0.2.1' }).lmtp.allowCidrs, ['10.0.0.0/8', 'fd00::/8', '192.0.2.1'])
  t.same(loadConfig({ ...BASE, LMTP_PROXY_PROTOCOL: 'true', LMTP_PROXY_TRUSTED_CIDRS: '10.0.0.0/16' }).lmtp.proxy, { trustedCidrs: ['10.0.0.0/16'] })
  t.equal(loadConfig({ ...BASE, LMTP_MAX_LINE_DISCARD: '1MiB' }).lmtp.maxLineDiscard, 1024 * 1024)
})

t.test('each bad value names its variable', async (t) => {
  const cases: [string, Record<string, string>, string][] = [
    ['a certificate without a key', { LMTP_TLS_CERT_FILE: server.cert }, 'LMTP_TLS_KEY_FILE'],
    ['a key without a certificate', { LMTP_TLS_KEY_FILE: server.key }, 'LMTP_TLS_CERT_FILE'],
    ['a certificate file that does not exist', { ...TLS, LMTP_TLS_CERT_FILE: join(p.dir, 'missing.crt') }, 'LMTP_TLS_CERT_FILE'],
    ['a certificate file without a certificate', { ...TLS, LMTP_TLS_CERT_FILE: garbage }, 'LMTP_TLS_CERT_FILE'],
    ['a key in the certificate variable', { ...TLS, LMTP_TLS_CERT_FILE: keyAsCert }, 'LMTP_TLS_CERT_FILE'],
    ['a key file without a key', { ...TLS, LMTP_TLS_KEY_FILE: garbage }, 'LMTP_TLS_KEY_FILE'],
    ['the key of another certificate', { ...TLS, LMTP_TLS_KEY_FILE: other.key }, 'LMTP_TLS_KEY_FILE'],
    ['TLS required without a certificate', { LMTP_TLS_REQUIRED: 'true' }, 'LMTP_TLS_REQUIRED'],
    ['TLS required, not a boolean', { ...TLS, LMTP_TLS_REQUIRED: 'sometimes' }, 'LMTP_TLS_REQUIRED'],
    ['a client CA without a certificate', { LMTP_TLS_CLIENT_CA_FILE: ca.cert }, 'LMTP_TLS_CLIENT_CA_FILE'],
    ['a client CA file without a certificate in it', { ...TLS, LMTP_TLS_CLIENT_CA_FILE: garbage }, 'LMTP_TLS_CLIENT_CA_FILE'],
    ['a client CA that does not exist', { ...TLS, LMTP_TLS_CLIENT_CA_FILE: join(p.dir, 'none.crt') }, 'LMTP_TLS_CLIENT_CA_FILE'],
    ['an unknown client certificate mode', { ...TLS, LMTP_TLS_CLIENT_CA_FILE: ca.cert, LMTP_TLS_CLIENT_CERT: 'maybe' }, 'LMTP_TLS_CLIENT_CERT'],
    ['require without a client CA', { ...TLS, LMTP_TLS_CLIENT_CERT: 'require' }, 'LMTP_TLS_CLIENT_CERT'],
    ['request without any TLS', { LMTP_TLS_CLIENT_CERT: 'request' }, 'LMTP_TLS_CLIENT_CERT'],
    ['a users file without TLS', { LMTP_AUTH_USERS_FILE: users }, 'LMTP_AUTH_USERS_FILE'],
    ['a users file with a plain password', { ...TLS, LMTP_AUTH_USERS_FILE: badUsers }, 'LMTP_AUTH_USERS_FILE'],
    ['a users file that does not exist', { ...TLS, LMTP_AUTH_USERS_FILE: join(p.dir, 'nobody') }, 'LMTP_AUTH_USERS_FILE'],
    ['AUTH required without users', { ...TLS, LMTP_AUTH_REQUIRED: 'true' }, 'LMTP_AUTH_REQUIRED'],
    ['no failures allowed', { ...TLS, LMTP_AUTH_USERS_FILE: users, LMTP_AUTH_MAX_FAILURES: '0' }, 'LMTP_AUTH_MAX_FAILURES'],
    ['a failure window in words', { LMTP_AUTH_FAILURE_WINDOW: 'ten minutes' }, 'LMTP_AUTH_FAILURE_WINDOW'],
    ['an allowlist entry that is no CIDR', { LMTP_ALLOW_CIDRS: '10.0.0.0/8,office' }, 'LMTP_ALLOW_CIDRS'],
    ['an allowlist prefix too long', { LMTP_ALLOW_CIDRS: '10.0.0.0/33' }, 'LMTP_ALLOW_CIDRS'],
    ['PROXY without trusted proxies', { LMTP_PROXY_PROTOCOL: 'true' }, 'LMTP_PROXY_TRUSTED_CIDRS'],
    ['trusted proxies without PROXY', { LMTP_PROXY_TRUSTED_CIDRS: '10.0.0.0/8' }, 'LMTP_PROXY_PROTOCOL'],
    ['PROXY not a boolean', { LMTP_PROXY_PROTOCOL: 'v2' }, 'LMTP_PROXY_PROTOCOL'],
    ['a bad trusted proxy', { LMTP_PROXY_PROTOCOL: 'true', LMTP_PROXY_TRUSTED_CIDRS: 'lb.internal' }, 'LMTP_PROXY_TRUSTED_CIDRS'],
    ['a discard cap below the line limit', { LMTP_MAX_LINE_DISCARD: '1000' }, 'LMTP_MAX_LINE_DISCARD'],
    ['a discard cap in unknown units', { LMTP_MAX_LINE_DISCARD: '1 parsec' }, 'LMTP_MAX_LINE_DISCARD'],
  ]
  for (const [what, env, variable] of cases) t.equal(rejected(env), variable, `${what}: ${variable}`)
})

t.test('a real process with a bad TLS setting exits 78 with a line naming the variable', async (t) => {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    env: { PATH: process.env.PATH ?? '', ADMIN_PORT: 'off', LMTP_PORT: '0', LMTP_TLS_CERT_FILE: server.cert, LMTP_TLS_KEY_FILE: other.key },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  child.stdout.on('data', (c: Buffer) => (out += c.toString()))
  child.stderr.on('data', (c: Buffer) => (out += c.toString()))
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve))
  t.equal(code, 78)
  t.match(out, /LMTP_TLS_KEY_FILE: .*is not the key of the certificate/)
})
