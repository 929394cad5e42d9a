/**
 * TLS towards Redis, with a private CA and a client certificate made by openssl for this file
 * (test/helpers/redis.ts): a standalone server, a Sentinel set and a cluster, each on TLS only and
 * requiring client certificates. Mail flows when the settings are right; start-up stops with the
 * reason when the client certificate, the CA or the server name is wrong.
 */
import t, { type Test } from 'tap'
import { redisCluster, redisServer, sentinelSet, tlsFiles } from '../helpers/redis.js'
import { until } from '../helpers/until.js'
import { routesFile, startApp, webhook } from '../helpers/app.js'
import { converse } from '../helpers/lmtp.js'
import { dataReplies, transaction } from '../admin/helpers.js'
import { isAppError } from '../../src/errors.js'

const files = tlsFiles(t)
const server = await redisServer(t, { tls: files })
const clientTls = { REDIS_TLS_CA_FILE: files.ca, REDIS_TLS_CERT_FILE: files.clientCert, REDIS_TLS_KEY_FILE: files.clientKey }

async function delivers(t: Test, env: Record<string, string>): Promise<void> {
  const hook = await webhook(t, 200)
  const file = routesFile(t, `routes:\n  - { id: all, match: "*@example.com", url: "${hook.url}" }\n`)
  const { lmtpPort, app } = await startApp(t, { ...env, ROUTES_FILE: file })
  const out = await converse(lmtpPort!, transaction(['a@example.com', 'b@example.com'], 'over TLS'))
  t.match(dataReplies(out), [/^250 2\.0\.0 <a@example\.com> delivered/, /^250 2\.0\.0 <b@example\.com> delivered/])
  t.equal(hook.requests.length, 2)
  const created = await app.routes.create({ id: 'api', match: 'api@example.com', url: hook.url })
  t.equal(created.id, 'api', 'Lua scripts and pub/sub work over TLS too')
}

async function refused(t: Test, env: Record<string, string>): Promise<Error> {
  const err = await startApp(t, { ...env, REDIS_CONNECT_TIMEOUT: '2s' }).then(
    () => null,
    (e: unknown) => e,
  )
  t.ok(isAppError(err, 'QUEUE_ERR_REDIS_UNREACHABLE'), 'start-up stops')
  return err as Error
}

t.test('standalone: rediss:// with the CA, a client certificate and REDIS_TLS_SERVERNAME', async (t) => {
  await delivers(t, { REDIS_URL: `rediss://127.0.0.1:${server.port}`, ...clientTls, REDIS_TLS_SERVERNAME: files.servername })
})

t.test('standalone: REDIS_TLS=true with a redis:// URL, checked against the IP in the certificate', async (t) => {
  await delivers(t, { REDIS_URL: `redis://127.0.0.1:${server.port}`, REDIS_TLS: 'true', ...clientTls })
})

t.test('without the client certificate the server refuses the connection', async (t) => {
  const { REDIS_TLS_CERT_FILE: _c, REDIS_TLS_KEY_FILE: _k, ...caOnly } = clientTls
  const err = await refused(t, { REDIS_URL: `rediss://127.0.0.1:${server.port}`, ...caOnly })
  t.match(err.message, /Redis at rediss:\/\/127\.0\.0\.1/)
})

t.test('a CA that did not sign the server certificate: refused, and the message says why', async (t) => {
  const err = await refused(t, { REDIS_URL: `rediss://127.0.0.1:${server.port}`, ...clientTls, REDIS_TLS_CA_FILE: files.otherCa })
  t.match(err.message, /certificate/i)
})

t.test('a server name the certificate does not hold: refused', async (t) => {
  const err = await refused(t, { REDIS_URL: `rediss://127.0.0.1:${server.port}`, ...clientTls, REDIS_TLS_SERVERNAME: 'other.test' })
  t.match(err.message, /other\.test|altnames|hostname/i)
})

t.test('Sentinel on TLS: sentinels and data servers', async (t) => {
  const set = await sentinelSet(t, { password: 'tls-data-secret', sentinelPassword: 'tls-sentinel-secret', tls: files })
  await until('the sentinels to answer over TLS', () => set.masterPort() === set.primary.port)
  await delivers(t, { ...set.env, REDIS_TLS: 'true', ...clientTls, REDIS_TLS_SERVERNAME: files.servername })
})

t.test('Cluster on TLS, QUEUE_SHARDS=3', async (t) => {
  const cluster = await redisCluster(t, 'tls-cluster-secret', 3, [], files)
  await delivers(t, { ...cluster.env, REDIS_TLS: 'true', ...clientTls, REDIS_TLS_SERVERNAME: files.servername, QUEUE_SHARDS: '3' })
})
