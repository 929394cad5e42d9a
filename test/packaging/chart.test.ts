/**
 * The Helm chart without helm: values.schema.json accepts values.yaml and rejects bad values
 * naming the field, non-template files parse, templates only reference values that exist, and
 * the environment the chart sets is one src/config.ts accepts with the values it was given.
 */
import t, { type Test } from 'tap'
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { Ajv, type ErrorObject } from 'ajv'
import { parse as parseYaml } from 'yaml'
import { loadConfig } from '../../src/config.js'
import { parseRoutesFile } from '../../src/routing/file.js'
import { RouteDefinitionSchema } from '../../src/routing/schema.js'
import { CHART, ROOT, chartEnvironment, chartValues, configVariables, listFiles, valueAt, withOverrides, type Values } from './helpers.js'

const schema = JSON.parse(readFileSync(join(CHART, 'values.schema.json'), 'utf8')) as object
const ajv = new Ajv({ allErrors: true, strict: true, allowUnionTypes: true })
const validate = ajv.compile(schema)
const values = chartValues()
const templateDir = join(CHART, 'templates')
const templates = readdirSync(templateDir).map((name) => ({ name, text: readFileSync(join(templateDir, name), 'utf8') }))

function errorsOf(candidate: unknown): ErrorObject[] {
  return validate(candidate) ? [] : [...(validate.errors ?? [])]
}

t.test('values.schema.json is draft-07 and accepts values.yaml', async (t) => {
  t.equal((schema as { $schema?: string }).$schema, 'http://json-schema.org/draft-07/schema#')
  t.same(errorsOf(values), [])
})

t.test('values.schema.json rejects bad values and names the field', async (t) => {
  const cases: Array<[string, Values, string]> = [
    ['unknown role', { role: 'both' }, '/role'],
    ['negative replica count', { replicaCount: -1 }, '/replicaCount'],
    ['typo in a top-level key', { replicas: 3 }, ''],
    ['redis over http', { redis: { url: 'http://redis:6379' } }, '/redis/url'],
    ['short admin token', { adminTokens: ['short'] }, '/adminTokens/0'],
    ['duration with words', { config: { lmtp: { idleTimeout: '5 minutes' } } }, '/config/lmtp/idleTimeout'],
    ['reply timeout as a string', { config: { delivery: { replyTimeoutSeconds: '30s' } } }, '/config/delivery/replyTimeoutSeconds'],
    ['message size with an unknown unit', { config: { lmtp: { maxMessageSize: '25 parsecs' } } }, '/config/lmtp/maxMessageSize'],
    ['port out of range', { containerPorts: { lmtp: 70000 } }, '/containerPorts/lmtp'],
    ['root user', { podSecurityContext: { runAsNonRoot: true, runAsUser: 0 } }, '/podSecurityContext/runAsUser'],
    ['privilege escalation', { securityContext: { allowPrivilegeEscalation: true } }, '/securityContext/allowPrivilegeEscalation'],
    ['capabilities not dropped', { securityContext: { capabilities: { drop: ['NET_RAW'] } } }, '/securityContext/capabilities/drop'],
    ['route without url', { routes: [{ id: 'a', match: '*@example.com' }] }, '/routes/0'],
    ['route secret without whsec_', { routes: [{ id: 'a', match: '*', url: 'https://h.example/x', secret: 'hunter2' }] }, '/routes/0/secret'],
    ['route mode', { routes: [{ id: 'a', match: '*', url: 'https://h.example/x', mode: 'maybe' }] }, '/routes/0/mode'],
    ['route url scheme', { routes: [{ id: 'a', match: '*', url: 'ftp://h.example/x' }] }, '/routes/0/url'],
    ['CIDR list entry', { config: { delivery: { allowCidrs: ['internal network'] } } }, '/config/delivery/allowCidrs/0'],
    ['log level', { config: { logLevel: 'verbose' } }, '/config/logLevel'],
    ['client certificate mode', { lmtpTls: { clientCa: { mode: 'optional' } } }, '/lmtpTls/clientCa/mode'],
    ['TLS Secret name', { lmtpTls: { secretName: 'My_Secret' } }, '/lmtpTls/secretName'],
    ['unknown key in lmtpTls', { lmtpTls: { certificate: 'x' } }, '/lmtpTls'],
    ['AUTH failures', { lmtpAuth: { maxFailures: 0 } }, '/lmtpAuth/maxFailures'],
    ['AUTH failure window', { lmtpAuth: { failureWindow: 'ten minutes' } }, '/lmtpAuth/failureWindow'],
    ['allowlist entry', { config: { lmtp: { allowCidrs: ['the office'] } } }, '/config/lmtp/allowCidrs/0'],
    ['PROXY protocol as a string', { config: { lmtp: { proxyProtocol: 'v2' } } }, '/config/lmtp/proxyProtocol'],
    ['line discard cap', { config: { lmtp: { maxLineDiscard: 'lots' } } }, '/config/lmtp/maxLineDiscard'],
    ['events URL scheme', { config: { events: { url: 'ftp://alerts.example.com' } } }, '/config/events/url'],
    ['events secret without whsec_', { eventsSecret: 'hunter2' }, '/eventsSecret'],
    ['sender check secret without whsec_', { senderCheckSecret: 'hunter2' }, '/senderCheckSecret'],
    ['route concurrency 0', { routes: [{ id: 'a', match: '*', url: 'https://h.example/x', concurrency: 0 }] }, '/routes/0/concurrency'],
    ['route rate limit without per', { routes: [{ id: 'a', match: '*', url: 'https://h.example/x', rateLimit: { max: 5 } }] }, '/routes/0/rateLimit'],
    ['route breaker true', { routes: [{ id: 'a', match: '*', url: 'https://h.example/x', circuitBreaker: true }] }, '/routes/0/circuitBreaker'],
    ['unknown Redis mode', { redis: { mode: 'replicated' } }, '/redis/mode'],
    ['sentinel mode without sentinels', { redis: { mode: 'sentinel' } }, '/redis/sentinel/nodes'],
    ['cluster mode without nodes', { redis: { mode: 'cluster' } }, '/redis/cluster/nodes'],
    ['a cluster node that is not host:port', { redis: { mode: 'cluster', cluster: { nodes: ['redis:6379', 'http://redis'] } } }, '/redis/cluster/nodes/1'],
    ['a master group name with a space', { redis: { sentinel: { masterSet: 'my master' } } }, '/redis/sentinel/masterSet'],
    ['too many queue shards', { redis: { queueShards: 13 } }, '/redis/queueShards'],
    ['replica acks as a string', { redis: { minReplicasAck: '1' } }, '/redis/minReplicasAck'],
    ['a client certificate without its key', { redis: { tls: { enabled: true, existingSecret: 'redis-tls', certKey: 'tls.crt' } } }, '/redis/tls/keyKey'],
    ['a typo under redis.auth', { redis: { auth: { pasword: 'x' } } }, '/redis/auth'],
  ]
  for (const [what, override, path] of cases) {
    const errors = errorsOf(withOverrides(values, override))
    t.ok(errors.length > 0, `${what} is rejected`)
    t.ok(
      errors.some((e) => e.instancePath === path),
      `${what}: an error names ${path || 'the root'} (got ${errors.map((e) => `${e.instancePath} ${e.message}`).join('; ')})`,
    )
  }
})

t.test('values.schema.json accepts a realistic production override', async (t) => {
  const production = withOverrides(values, {
    role: 'listener',
    redis: { url: 'rediss://:pw@redis.example.internal:6380/0', prefix: 'mail-prod' },
    adminTokens: ['0123456789abcdef0123'],
    routes: [
      {
        id: 'support',
        match: '*@support.example.com',
        url: 'https://hooks.example.com/mail',
        secrets: ['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'],
        mode: 'accept',
        timeout: '20s',
        headers: { 'x-tenant': 'support' },
      },
    ],
    config: { lmtp: { domains: ['example.com', 'support.example.com'], maxMessageSize: '50MiB' }, delivery: { denyCidrs: ['10.0.0.0/8', 'fd00::/8'] } },
    autoscaling: { enabled: true, minReplicas: 3, maxReplicas: 12 },
    podDisruptionBudget: { enabled: true, maxUnavailable: '25%' },
    terminationGracePeriodSeconds: 120,
  })
  t.same(errorsOf(production), [])
})

t.test('routes the schema accepts are routes the service accepts', async (t) => {
  const routeSchema = (schema as { properties: { routes: { items: { properties: object; required: string[] } } } }).properties.routes.items
  const known = Object.keys(RouteDefinitionSchema.properties)
  for (const key of Object.keys(routeSchema.properties)) t.ok(known.includes(key), `routes[].${key} is a route field`)
  t.same([...routeSchema.required].sort(), [...(RouteDefinitionSchema.required ?? [])].sort(), 'the same fields are required')
  const routes = [
    {
      id: 'support',
      match: '*@support.example.com',
      url: 'https://hooks.example.com/mail',
      secrets: ['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'],
      mode: 'accept',
      timeout: '20s',
      headers: { 'x-tenant': 'support' },
      concurrency: 8,
      rateLimit: { max: 100, per: '1m' },
      circuitBreaker: { failures: 3, window: '30s', coolDown: '60s' },
    },
    { id: 'sales', match: 'sales@example.com', url: 'http://sales.internal:8080/in', secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', circuitBreaker: false },
  ]
  t.same(errorsOf(withOverrides(values, { routes })), [])
  // the Secret renders `dict "routes" .Values.routes | toYaml`
  const parsed = parseRoutesFile(JSON.stringify({ routes }), 'routes.yaml')
  t.same(
    parsed.map((r) => [r.id, r.mode, r.timeoutMs, r.concurrency, r.circuitBreaker?.coolDownMs ?? null]),
    [
      ['support', 'accept', 20_000, 8, 60_000],
      ['sales', 'defer', undefined, undefined, null],
    ],
  )
  t.same(parseRoutesFile(JSON.stringify({ routes: [] }), 'routes.yaml'), [], 'the default (no routes) is a valid routes file')
})

t.test('every non-template file of the chart parses', async (t) => {
  const files = listFiles(CHART).filter((f) => !f.includes('/templates/'))
  t.ok(files.includes('helm/lmtp-webhook/Chart.yaml'))
  for (const file of files) {
    const text = readFileSync(join(ROOT, file), 'utf8')
    if (file.endsWith('.yaml') || file.endsWith('.yml')) t.doesNotThrow(() => parseYaml(text), `${file} is YAML`)
    else if (file.endsWith('.json')) t.doesNotThrow(() => JSON.parse(text), `${file} is JSON`)
  }
  const chart = parseYaml(readFileSync(join(CHART, 'Chart.yaml'), 'utf8')) as Record<string, unknown>
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }
  t.equal(chart.apiVersion, 'v2')
  t.equal(chart.name, 'lmtp-webhook', 'chart name is its directory name')
  t.match(chart.version, /^\d+\.\d+\.\d+(-[\w.]+)?$/, 'chart version is SemVer')
  t.equal(chart.appVersion, pkg.version, 'appVersion is the package version (the default image tag)')
})

t.test('every .Values path used in templates exists in values.yaml', async (t) => {
  let count = 0
  for (const { name, text } of templates) {
    for (const m of text.matchAll(/\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)/g)) {
      count++
      t.doesNotThrow(() => valueAt(values, (m[1] ?? '').slice(1)), `${name}: .Values${m[1]}`)
    }
  }
  t.ok(count > 50, `templates reference values (${count} references)`)
})

t.test('template actions are balanced and includes are defined', async (t) => {
  const defined = new Set<string>()
  for (const { text } of templates) for (const m of text.matchAll(/\{\{-?\s*define\s+"([^"]+)"/g)) defined.add(m[1] ?? '')
  for (const { name, text } of templates) {
    const actions = [...text.replace(/\{\{-?\s*\/\*[\s\S]*?\*\/\s*-?\}\}/g, '').matchAll(/\{\{-?\s*(\w+)?/g)].map((m) => m[1])
    let depth = 0
    let lowest = 0
    for (const action of actions) {
      if (action === 'if' || action === 'with' || action === 'range' || action === 'define' || action === 'block') depth++
      if (action === 'end') depth--
      lowest = Math.min(lowest, depth)
    }
    t.equal(depth, 0, `${name}: every if/with/range/define has its end`)
    t.equal(lowest, 0, `${name}: no end before its opening action`)
    t.equal((text.match(/\{\{/g) ?? []).length, (text.match(/\}\}/g) ?? []).length, `${name}: {{ and }} pair up`)
    for (const m of text.matchAll(/include\s+"([^"]+)"/g)) t.ok(defined.has(m[1] ?? ''), `${name}: include "${m[1]}" is defined`)
  }
})

t.test('the Deployment carries the probes, hardening and shutdown budget', async (t) => {
  const deployment = templates.find((f) => f.name === 'deployment.yaml')?.text ?? ''
  t.match(deployment, /livenessProbe:\n\s+httpGet:\n\s+path: \/healthz\n\s+port: admin/)
  t.match(deployment, /readinessProbe:\n\s+httpGet:\n\s+path: \/readyz\n\s+port: admin/)
  t.match(deployment, /- name: tmp\n\s+mountPath: \/tmp/)
  t.notMatch(deployment, /preStop:/, 'no preStop sleep: the service waits SHUTDOWN_DELAY itself')
  t.match(deployment, /terminationGracePeriodSeconds: \{\{ include "lmtp-webhook.terminationGracePeriodSeconds"/)
  const helpers = templates.find((f) => f.name === '_helpers.tpl')?.text ?? ''
  const grace = /define "lmtp-webhook.terminationGracePeriodSeconds"[\s\S]*?\{\{- end \}\}\n\{\{- end \}\}/.exec(helpers)?.[0] ?? ''
  for (const part of ['config.shutdownDelaySeconds', 'config.delivery.replyTimeoutSeconds', 'config.shutdownTimeoutSeconds']) {
    t.ok(grace.includes(`.Values.${part}`), `the grace period adds ${part}`)
  }
  const pod = values.podSecurityContext as Record<string, unknown>
  const container = values.securityContext as Record<string, unknown>
  t.equal(pod.runAsNonRoot, true)
  t.equal(container.readOnlyRootFilesystem, true)
  t.equal(container.allowPrivilegeEscalation, false)
  t.same((container.capabilities as { drop: string[] }).drop, ['ALL'])
  t.same(container.seccompProfile, { type: 'RuntimeDefault' })
})

t.test('optional objects are off by default', async (t) => {
  for (const key of ['autoscaling', 'podDisruptionBudget', 'serviceMonitor', 'networkPolicy']) {
    t.equal((values[key] as { enabled: boolean }).enabled, false, `${key}.enabled is false`)
  }
})

t.test('the chart sets only variables src/config.ts reads', async (t) => {
  const known = configVariables()
  t.ok(known.has('REDIS_URL') && known.has('ROLE'), 'config.ts variables are found')
  const { env, fromSecret } = chartEnvironment(values)
  for (const name of [...Object.keys(env), ...fromSecret]) {
    if (name === 'TMPDIR') continue
    t.ok(known.has(name), `${name} is read by src/config.ts`)
  }
})

/** Redis password and TLS files the Deployment would mount, by the path it passes. */
interface RedisFiles {
  readonly password?: string
  readonly sentinelPassword?: string
  readonly tls?: { readonly ca: string; readonly cert?: string; readonly key?: string }
}

/** Files the chart's Secrets would mount, written where the test can read them. */
function mountSecret(t: Test, vals: Values, redisFiles: RedisFiles = {}): { env: Record<string, string>; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'chart-secret-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'admin-tokens'), (vals.adminTokens as string[]).join('\n'))
  writeFileSync(join(dir, 'routes.yaml'), JSON.stringify({ routes: vals.routes }))
  const files: Record<string, string | undefined> = {
    'redis-auth/password': redisFiles.password,
    'redis-auth/sentinel-password': redisFiles.sentinelPassword,
    'redis-tls/ca.crt': redisFiles.tls?.ca,
    'redis-tls/tls.crt': redisFiles.tls?.cert,
    'redis-tls/tls.key': redisFiles.tls?.key,
  }
  for (const [path, text] of Object.entries(files)) {
    if (text === undefined) continue
    mkdirSync(join(dir, dirname(path)), { recursive: true })
    writeFileSync(join(dir, path), text)
  }
  const { env, fromSecret } = chartEnvironment(vals)
  const standalone = valueAt(vals, 'redis.mode') === 'standalone'
  t.same(
    fromSecret,
    standalone ? ['REDIS_URL', 'EVENTS_SECRET', 'SENDER_CHECK_SECRET'] : ['EVENTS_SECRET', 'SENDER_CHECK_SECRET'],
    'only REDIS_URL (standalone), EVENTS_SECRET and SENDER_CHECK_SECRET come from the Secret as variables',
  )
  const out: Record<string, string> = {
    ...(standalone ? { REDIS_URL: String(valueAt(vals, 'redis.url')) } : {}),
    EVENTS_SECRET: String(valueAt(vals, 'eventsSecret')),
    SENDER_CHECK_SECRET: String(valueAt(vals, 'senderCheckSecret')),
  }
  for (const [name, value] of Object.entries(env)) {
    const local = value.replace('/etc/lmtp-webhook/secret', dir).replace(/^\/etc\/lmtp-webhook\/(redis-auth|redis-tls)\//, `${dir}/$1/`)
    if (local.startsWith(dir) && !existsSync(local)) t.fail(`${name}: the chart mounts ${value}, which these values put nowhere`)
    out[name] = local
  }
  return { env: out, dir }
}

t.test('the default values give a configuration src/config.ts accepts', async (t) => {
  const vals = withOverrides(values, { adminTokens: ['0123456789abcdef0123'] })
  const { env, dir } = mountSecret(t, vals)
  const config = loadConfig(env)
  t.equal(config.role, 'all')
  t.equal(config.lmtp.port, 2424)
  t.equal(config.admin.port, 8080)
  t.equal(config.redis.url, 'redis://redis-master:6379')
  t.equal(config.redis.prefix, 'lmtp-webhook')
  t.same(config.admin.tokens, ['0123456789abcdef0123'], 'tokens are read from ADMIN_TOKENS_FILE')
  t.equal(config.delivery.routesFile, join(dir, 'routes.yaml'))
  t.equal(config.delivery.replyTimeoutMs, 30_000)
  t.equal(config.lmtp.shutdownTimeoutMs, 25_000)
  t.equal(config.lmtp.shutdownDelayMs, 5_000)
  t.equal(config.lmtp.maxMessageSize, 25 * 1024 * 1024)
  t.same(config.lmtp.domains, ['*'], 'no domains: all accepted')
  t.not(config.lmtp.hostname, '', 'an empty hostname falls back to the pod name')
  t.same(config.events, { url: null, secret: null }, 'no events by default')
  t.equal(config.delivery.senderCheckSecret, null, 'an unsigned sender check by default')
})

t.test('overridden values reach the configuration', async (t) => {
  const vals = withOverrides(values, {
    role: 'worker',
    adminTokens: ['0123456789abcdef0123', 'fedcba9876543210fedc'],
    redis: { url: 'rediss://redis.example.internal:6380', prefix: 'mail-prod' },
    containerPorts: { lmtp: 2525, admin: 9090 },
    config: {
      logLevel: 'debug',
      lmtp: { hostname: 'lmtp.example.com', domains: ['example.com', 'example.org'], maxMessageSize: '50MiB', maxConnections: 250, idleTimeout: '90s' },
      delivery: {
        workerConcurrency: 8,
        replyTimeoutSeconds: 45,
        denyCidrs: ['10.0.0.0/8', 'fd00::/8'],
        senderCheckUrl: 'https://hooks.example.com/sender',
        allowAcceptWithoutAof: true,
      },
      shutdownTimeoutSeconds: 60,
      events: { url: 'https://alerts.example.com/lmtp-webhook' },
      shutdownDelaySeconds: 0,
    },
    eventsSecret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
    senderCheckSecret: 'whsec_c2VuZGVyLWNoZWNrLXNlY3JldC0wMTIzNDU2Nzg5',
  })
  t.same(errorsOf(vals), [])
  const config = loadConfig(mountSecret(t, vals).env)
  t.equal(config.role, 'worker')
  t.equal(config.logLevel, 'debug')
  t.equal(config.redis.url, 'rediss://redis.example.internal:6380')
  t.equal(config.redis.prefix, 'mail-prod')
  t.equal(config.lmtp.port, 2525)
  t.equal(config.admin.port, 9090)
  t.equal(config.lmtp.hostname, 'lmtp.example.com')
  t.same(config.lmtp.domains, ['example.com', 'example.org'])
  t.equal(config.lmtp.maxMessageSize, 50 * 1024 * 1024)
  t.equal(config.lmtp.maxConnections, 250)
  t.equal(config.lmtp.idleTimeoutMs, 90_000)
  t.equal(config.delivery.workerConcurrency, 8)
  t.equal(config.delivery.replyTimeoutMs, 45_000)
  t.equal(config.lmtp.shutdownTimeoutMs, 60_000)
  t.equal(config.lmtp.shutdownDelayMs, 0, 'a shutdown delay of 0 is allowed')
  t.same(config.delivery.denyCidrs, ['10.0.0.0/8', 'fd00::/8'])
  t.equal(config.delivery.senderCheckUrl, 'https://hooks.example.com/sender')
  t.equal(config.delivery.senderCheckSecret, 'whsec_c2VuZGVyLWNoZWNrLXNlY3JldC0wMTIzNDU2Nzg5')
  t.equal(config.redis.allowAcceptWithoutAof, true)
  t.same(config.admin.tokens, ['0123456789abcdef0123', 'fedcba9876543210fedc'])
  t.same(config.events, { url: 'https://alerts.example.com/lmtp-webhook', secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw' })
})

t.test('TLS, client CA and users Secrets are mounted as directories and reach the configuration', async (t) => {
  const deployment = templates.find((f) => f.name === 'deployment.yaml')?.text ?? ''
  t.notMatch(deployment, /subPath: /, 'no subPath: Kubernetes updates a mounted Secret only without it')
  for (const [volume, path] of [
    ['lmtp-tls', '/etc/lmtp-webhook/tls'],
    ['lmtp-client-ca', '/etc/lmtp-webhook/client-ca'],
    ['lmtp-auth', '/etc/lmtp-webhook/auth'],
  ]) {
    t.match(deployment, new RegExp(`- name: ${volume}\\n\\s+mountPath: ${path}\\n\\s+readOnly: true`), `${volume} is mounted read-only at ${path}`)
    t.match(deployment, new RegExp(`- name: ${volume}\\n\\s+secret:`), `${volume} is a Secret volume`)
  }
  t.match(deployment, /- key: tls\.crt\n\s+path: tls\.crt\n\s+- key: tls\.key\n\s+path: tls\.key/, "cert-manager's tls.crt and tls.key")

  const off = chartEnvironment(withOverrides(values, { adminTokens: ['0123456789abcdef0123'] })).env
  for (const name of ['LMTP_TLS_CERT_FILE', 'LMTP_TLS_KEY_FILE', 'LMTP_TLS_CLIENT_CA_FILE', 'LMTP_TLS_CLIENT_CERT', 'LMTP_AUTH_USERS_FILE'])
    t.notOk(name in off, `${name} is not set by default`)

  const root = mkdtempSync(join(tmpdir(), 'chart-lmtp-secrets-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  const openssl = (args: string[]): void => void execFileSync('openssl', args, { stdio: 'ignore' })
  for (const dir of ['tls', 'client-ca', 'auth', 'secret']) mkdirSync(join(root, dir))
  openssl([
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-days',
    '1',
    '-subj',
    '/CN=lmtp.test',
    '-keyout',
    join(root, 'tls', 'tls.key'),
    '-out',
    join(root, 'tls', 'tls.crt'),
  ])
  openssl([
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-days',
    '1',
    '-subj',
    '/CN=mta-ca',
    '-keyout',
    join(root, 'ca.key'),
    '-out',
    join(root, 'client-ca', 'mta-ca.pem'),
  ])
  writeFileSync(join(root, 'auth', 'lmtp-users'), execFileSync('htpasswd', ['-nbB', '-C', '5', 'postfix', 'secret'], { encoding: 'utf8' }))
  const vals = withOverrides(values, {
    adminTokens: ['0123456789abcdef0123'],
    lmtpTls: { secretName: 'lmtp-webhook-tls', required: true, clientCa: { secretName: 'mta-ca', key: 'mta-ca.pem', mode: 'require' } },
    lmtpAuth: { secretName: 'lmtp-users', key: 'lmtp-users', required: true, maxFailures: 3, failureWindow: '1h' },
    config: { lmtp: { allowCidrs: ['198.51.100.0/24'], proxyProtocol: true, proxyTrustedCidrs: ['10.0.0.0/16'], maxLineDiscard: '1MiB' } },
  })
  t.same(errorsOf(vals), [])
  const { env } = chartEnvironment(vals)
  t.equal(env.LMTP_TLS_CLIENT_CA_FILE, '/etc/lmtp-webhook/client-ca/mta-ca.pem', 'the CA file is the key named in values')
  t.equal(env.LMTP_AUTH_USERS_FILE, '/etc/lmtp-webhook/auth/lmtp-users')
  writeFileSync(join(root, 'secret', 'admin-tokens'), '0123456789abcdef0123')
  writeFileSync(join(root, 'secret', 'routes.yaml'), 'routes: []')
  const mounted: Record<string, string> = { REDIS_URL: 'redis://redis:6379' }
  for (const [name, value] of Object.entries(env)) mounted[name] = value.replace('/etc/lmtp-webhook', root)
  const config = loadConfig(mounted)
  t.same(config.lmtp.tls, {
    certFile: join(root, 'tls', 'tls.crt'),
    keyFile: join(root, 'tls', 'tls.key'),
    clientCaFile: join(root, 'client-ca', 'mta-ca.pem'),
    clientCert: 'require',
    required: true,
  })
  t.same(config.lmtp.auth, { usersFile: join(root, 'auth', 'lmtp-users'), required: true, maxFailures: 3, failureWindowMs: 3_600_000 })
  t.same(config.lmtp.allowCidrs, ['198.51.100.0/24'])
  t.same(config.lmtp.proxy, { trustedCidrs: ['10.0.0.0/16'] })
  t.equal(config.lmtp.maxLineDiscard, 1024 * 1024)
})

const PEM_CERT = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n'
const PEM_KEY = '-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n'

t.test("sentinel values: the sentinels, the master group, both passwords from the chart's Secret, replica acks", async (t) => {
  const vals = withOverrides(values, {
    adminTokens: ['0123456789abcdef0123'],
    redis: {
      mode: 'sentinel',
      sentinel: {
        nodes: ['redis-node-0.redis-headless:26379', 'redis-node-1.redis-headless:26379', 'redis-node-2.redis-headless:26379'],
        masterSet: 'mymaster',
      },
      auth: { password: 'data-pw', sentinelPassword: 'sentinel-pw' },
      minReplicasAck: 1,
    },
  })
  t.same(errorsOf(vals), [])
  const config = loadConfig(mountSecret(t, vals, { password: 'data-pw\n', sentinelPassword: 'sentinel-pw\n' }).env)
  t.equal(config.redis.mode, 'sentinel')
  t.same(
    config.redis.sentinels.map((s) => `${s.host}:${s.port}`),
    ['redis-node-0.redis-headless:26379', 'redis-node-1.redis-headless:26379', 'redis-node-2.redis-headless:26379'],
  )
  t.equal(config.redis.sentinelName, 'mymaster')
  t.equal(config.redis.password, 'data-pw', 'REDIS_PASSWORD_FILE')
  t.equal(config.redis.sentinelPassword, 'sentinel-pw', 'REDIS_SENTINEL_PASSWORD_FILE')
  t.equal(config.redis.minReplicasAck, 1)
  const secret = templates.find((f) => f.name === 'secret.yaml')!.text
  t.match(secret, /redis-password: \{\{ \. \| b64enc \| quote \}\}/, "the chart's Secret holds the password")
  t.match(secret, /redis-sentinel-password: \{\{ \. \| b64enc \| quote \}\}/)
})

t.test('cluster values: seed nodes, shards, an ACL user whose password is in a Secret of the operator, TLS from a cert-manager Secret', async (t) => {
  const vals = withOverrides(values, {
    existingSecret: 'mail-secrets',
    redis: {
      mode: 'cluster',
      cluster: { nodes: ['redis-cluster-0.redis-cluster-headless:6379', '[fd00::12]:6379'] },
      auth: { username: 'lmtp', existingSecret: 'redis-cluster', existingSecretPasswordKey: 'redis-password' },
      tls: { enabled: true, existingSecret: 'redis-client-tls', certKey: 'tls.crt', keyKey: 'tls.key', servername: 'redis-cluster.mail.svc' },
      queueShards: 6,
    },
  })
  t.same(errorsOf(vals), [])
  const { env } = mountSecret(t, withOverrides(vals, { adminTokens: ['0123456789abcdef0123'] }), {
    password: 'cluster-pw',
    tls: { ca: PEM_CERT, cert: PEM_CERT, key: PEM_KEY },
  })
  const config = loadConfig(env)
  t.equal(config.redis.mode, 'cluster')
  t.same(config.redis.clusterNodes, [
    { host: 'redis-cluster-0.redis-cluster-headless', port: 6379 },
    { host: 'fd00::12', port: 6379 },
  ])
  t.equal(config.redis.queueShards, 6)
  t.equal(config.redis.username, 'lmtp')
  t.equal(config.redis.password, 'cluster-pw')
  t.same(config.redis.tls, { ca: PEM_CERT, cert: PEM_CERT, key: PEM_KEY, servername: 'redis-cluster.mail.svc' })
  const deployment = templates.find((f) => f.name === 'deployment.yaml')!.text
  t.match(deployment, /- name: redis-auth\n\s+secret:\n\s+secretName: \{\{ \. \}\}/, 'the password Secret is mounted')
  t.match(deployment, /- name: redis-tls\n\s+secret:\n\s+secretName: \{\{ \. \}\}/, 'the TLS Secret is mounted')
  t.match(deployment, /key: \{\{ \$\.Values\.redis\.tls\.caKey \}\}\n\s+path: ca\.crt/, 'its keys are the ones named in values')
})

t.test('standalone over TLS with a CA only: REDIS_TLS and the CA file, no client certificate', async (t) => {
  const vals = withOverrides(values, {
    adminTokens: ['0123456789abcdef0123'],
    redis: { url: 'rediss://redis.internal:6380', tls: { enabled: true, existingSecret: 'redis-ca' } },
  })
  t.same(errorsOf(vals), [])
  const config = loadConfig(mountSecret(t, vals, { tls: { ca: PEM_CERT } }).env)
  t.same(config.redis.tls, { ca: PEM_CERT, cert: null, key: null, servername: null })
})

t.test('combinations the schema cannot express fail the render, naming the value', async (t) => {
  const helpers = templates.find((f) => f.name === '_helpers.tpl')!.text
  const validate = helpers.slice(helpers.indexOf('define "lmtp-webhook.validateRedis"'))
  for (const value of ['redis.auth.password', 'redis.auth.existingSecretSentinelPasswordKey', 'redis.tls.enabled']) t.match(validate, `fail "${value}: `)
  t.match(templates.find((f) => f.name === 'configmap.yaml')!.text, /include "lmtp-webhook.validateRedis"/, 'checked on every render')
})
