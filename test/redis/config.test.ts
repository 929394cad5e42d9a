/** REDIS_* and QUEUE_SHARDS: what loadConfig accepts, and that every refusal names its variable. */
import t from 'tap'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { loadConfig } from '../../src/config.js'
import { isAppError } from '../../src/errors.js'

const dir = mkdtempSync(join(tmpdir(), 'lmtp-webhook-config-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))
const file = (name: string, text: string): string => {
  const path = join(dir, name)
  writeFileSync(path, text)
  return path
}
const PEM_CERT = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n'
const PEM_KEY = '-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n'
const base = { ADMIN_PORT: 'off' }
const load = (env: Record<string, string>) => loadConfig({ ...base, ...env })

t.test('the defaults are the quick start: one standalone Redis, one shard, no replica acknowledgement, no TLS', async (t) => {
  const { redis } = load({})
  t.equal(redis.mode, 'standalone')
  t.equal(redis.url, 'redis://127.0.0.1:6379')
  t.equal(redis.queueShards, 1)
  t.equal(redis.minReplicasAck, 0)
  t.equal(redis.tls, null)
  t.equal(redis.username, null)
  t.equal(redis.password, null)
  t.equal(redis.connectTimeoutMs, 15_000)
})

t.test('sentinel and cluster endpoints, default ports, IPv6', async (t) => {
  const s = load({ REDIS_MODE: 'sentinel', REDIS_SENTINELS: 'a.example:26380, [::1], 10.0.0.3', REDIS_SENTINEL_NAME: 'mail' }).redis
  t.same(s.sentinels, [
    { host: 'a.example', port: 26380 },
    { host: '::1', port: 26379 },
    { host: '10.0.0.3', port: 26379 },
  ])
  t.equal(s.sentinelName, 'mail')
  t.equal(load({ REDIS_MODE: 'sentinel', REDIS_SENTINELS: 'a:1' }).redis.sentinelName, 'mymaster', 'the usual master group name by default')
  const c = load({ REDIS_MODE: 'cluster', REDIS_CLUSTER_NODES: 'n1:7000,n2', QUEUE_SHARDS: '12' }).redis
  t.same(c.clusterNodes, [
    { host: 'n1', port: 7000 },
    { host: 'n2', port: 6379 },
  ])
  t.equal(c.queueShards, 12)
})

t.test('credentials and TLS from files; a trailing newline of a mounted Secret is dropped', async (t) => {
  const r = load({
    REDIS_USERNAME: 'svc',
    REDIS_PASSWORD_FILE: file('pw', 's3cret with spaces\n'),
    REDIS_TLS: 'true',
    REDIS_TLS_CA_FILE: file('ca.crt', PEM_CERT),
    REDIS_TLS_CERT_FILE: file('tls.crt', PEM_CERT),
    REDIS_TLS_KEY_FILE: file('tls.key', PEM_KEY),
    REDIS_TLS_SERVERNAME: 'redis.internal',
    REDIS_MIN_REPLICAS_ACK: '2',
  }).redis
  t.equal(r.username, 'svc')
  t.equal(r.password, 's3cret with spaces')
  t.same(r.tls, { ca: PEM_CERT, cert: PEM_CERT, key: PEM_KEY, servername: 'redis.internal' })
  t.equal(r.minReplicasAck, 2)
  t.same(load({ REDIS_URL: 'rediss://redis:6380' }).redis.tls, { ca: null, cert: null, key: null, servername: null }, 'rediss:// turns TLS on')
  t.equal(
    load({ REDIS_MODE: 'sentinel', REDIS_SENTINELS: 'a:1', REDIS_SENTINEL_PASSWORD_FILE: file('spw', 'sentinel-pw\n') }).redis.sentinelPassword,
    'sentinel-pw',
  )
})

t.test('every bad Redis setting stops start-up naming its variable, and never prints a secret', async (t) => {
  const cases: [string, Record<string, string>, string][] = [
    ['unknown mode', { REDIS_MODE: 'replicated' }, 'REDIS_MODE'],
    ['sentinel without sentinels', { REDIS_MODE: 'sentinel' }, 'REDIS_SENTINELS'],
    ['a sentinel that is not host:port', { REDIS_MODE: 'sentinel', REDIS_SENTINELS: 'a:1,b:notaport' }, 'REDIS_SENTINELS'],
    ['a port out of range', { REDIS_MODE: 'sentinel', REDIS_SENTINELS: 'a:70000' }, 'REDIS_SENTINELS'],
    ['sentinels in standalone mode', { REDIS_SENTINELS: 'a:1' }, 'REDIS_SENTINELS'],
    [
      'a sentinel password in cluster mode',
      { REDIS_MODE: 'cluster', REDIS_CLUSTER_NODES: 'a:1', REDIS_SENTINEL_PASSWORD: 'hunter2-secret' },
      'REDIS_SENTINEL_PASSWORD',
    ],
    ['a bad master group name', { REDIS_MODE: 'sentinel', REDIS_SENTINELS: 'a:1', REDIS_SENTINEL_NAME: 'my master' }, 'REDIS_SENTINEL_NAME'],
    ['cluster without nodes', { REDIS_MODE: 'cluster' }, 'REDIS_CLUSTER_NODES'],
    ['cluster nodes in sentinel mode', { REDIS_MODE: 'sentinel', REDIS_SENTINELS: 'a:1', REDIS_CLUSTER_NODES: 'b:2' }, 'REDIS_CLUSTER_NODES'],
    ['REDIS_URL in cluster mode', { REDIS_MODE: 'cluster', REDIS_CLUSTER_NODES: 'a:1', REDIS_URL: 'redis://a:1' }, 'REDIS_URL'],
    ['a password twice', { REDIS_PASSWORD: 'hunter2-secret', REDIS_PASSWORD_FILE: file('pw2', 'x') }, 'REDIS_PASSWORD_FILE'],
    ['an unreadable password file', { REDIS_PASSWORD_FILE: join(dir, 'missing') }, 'REDIS_PASSWORD_FILE'],
    ['an empty password file', { REDIS_PASSWORD_FILE: file('empty', '\n') }, 'REDIS_PASSWORD_FILE'],
    ['a password in the URL and in REDIS_PASSWORD', { REDIS_URL: 'redis://:hunter2-url@r:6379', REDIS_PASSWORD: 'hunter2-secret' }, 'REDIS_PASSWORD'],
    ['a user without a password', { REDIS_USERNAME: 'svc' }, 'REDIS_PASSWORD'],
    ['a CA without TLS', { REDIS_TLS_CA_FILE: file('ca2.crt', PEM_CERT) }, 'REDIS_TLS_CA_FILE'],
    ['a server name without TLS', { REDIS_TLS_SERVERNAME: 'r' }, 'REDIS_TLS_SERVERNAME'],
    ['a certificate without its key', { REDIS_TLS: 'true', REDIS_TLS_CERT_FILE: file('c.crt', PEM_CERT) }, 'REDIS_TLS_KEY_FILE'],
    ['a key without its certificate', { REDIS_TLS: 'true', REDIS_TLS_KEY_FILE: file('k.key', PEM_KEY) }, 'REDIS_TLS_CERT_FILE'],
    ['a CA file that is not PEM', { REDIS_TLS: 'true', REDIS_TLS_CA_FILE: file('ca.der', 'garbage') }, 'REDIS_TLS_CA_FILE'],
    [
      'a key file that is not a key',
      { REDIS_TLS: 'true', REDIS_TLS_CERT_FILE: file('c2.crt', PEM_CERT), REDIS_TLS_KEY_FILE: file('k2', PEM_CERT) },
      'REDIS_TLS_KEY_FILE',
    ],
    ['TLS off with a rediss:// URL', { REDIS_URL: 'rediss://r:6380', REDIS_TLS: 'false' }, 'REDIS_TLS'],
    ['TLS on a unix socket', { REDIS_URL: 'unix:///run/redis.sock', REDIS_TLS: 'true' }, 'REDIS_TLS'],
    ['no shards', { QUEUE_SHARDS: '0' }, 'QUEUE_SHARDS'],
    ['more shards than tags', { QUEUE_SHARDS: '13' }, 'QUEUE_SHARDS'],
    ['a negative replica count', { REDIS_MIN_REPLICAS_ACK: '-1' }, 'REDIS_MIN_REPLICAS_ACK'],
    ['a connect timeout in words', { REDIS_CONNECT_TIMEOUT: 'a while' }, 'REDIS_CONNECT_TIMEOUT'],
  ]
  for (const [what, env, variable] of cases) {
    let err: unknown = null
    try {
      load(env)
    } catch (e) {
      err = e
    }
    t.ok(isAppError(err, 'CONFIG_ERR_INVALID'), `${what}: CONFIG_ERR_INVALID`)
    t.equal((err as { details?: { variable?: string } })?.details?.variable, variable, `${what}: names ${variable}`)
    t.match((err as Error)?.message, new RegExp(`^${variable}: `), `${what}: the message starts with ${variable}`)
    t.notMatch((err as Error)?.message, /hunter2/, `${what}: no secret in the message`)
  }
})

t.test("README's configuration table lists every Redis variable src/config.ts reads", async (t) => {
  const source = readFileSync(new URL('../../src/config.ts', import.meta.url), 'utf8')
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')
  const table = readme.slice(readme.indexOf('## Configuration'), readme.indexOf('## Development'))
  const names = new Set([...source.matchAll(/\benv, '((?:REDIS|QUEUE)_[A-Z0-9_]+)'/g)].map((m) => m[1]!))
  t.ok(names.size >= 18, `config.ts reads ${names.size} of them`)
  for (const name of names) t.match(table, `\`${name}\``, `${name} is in the table`)
})
