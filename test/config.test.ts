/**
 * Every environment variable src/config.ts reads: its default, the values and units it takes,
 * its bounds, and that a bad value stops start-up with CONFIG_ERR_INVALID naming the variable
 * (message `VARIABLE: expected ...`, `details.variable`). A variable the code reads that this
 * table does not cover fails the last test.
 */
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { hostname, tmpdir } from 'node:os'
import { join } from 'node:path'
import { readFileSync } from 'node:fs'
import { isAppError } from '../src/errors.js'
import { loadConfig, parseDuration, parseSize, type Config } from '../src/config.js'

const TOKEN = 'token-0123456789abcdef'
/** The admin API is on by default and then needs a token; everything else is left to defaults. */
const BASE = { ADMIN_TOKENS: TOKEN }

function at(config: Config, path: string): unknown {
  return path.split('.').reduce<unknown>((v, k) => (v as Record<string, unknown>)[k], config)
}

function failure(env: Record<string, string>): { message: string; variable: unknown } | null {
  try {
    loadConfig({ ...BASE, ...env })
    return null
  } catch (err) {
    if (!isAppError(err, 'CONFIG_ERR_INVALID')) throw err
    return { message: err.message, variable: err.details?.variable }
  }
}

const S = 1000
const MIN = 60 * S
const DAY = 86_400 * S
const MiB = 1024 * 1024

interface Variable {
  readonly name: string
  /** Where the value lands in Config. */
  readonly path: string
  readonly fallback: unknown
  /** Raw value → what it becomes. */
  readonly valid: readonly (readonly [string, unknown])[]
  readonly invalid: readonly string[]
  /** Extra environment the values need (e.g. LMTP_SOCKET to turn the port off). */
  readonly env?: Record<string, string>
  /** In that environment the variable has no default: unset, empty or blank is refused, naming it. */
  readonly required?: boolean
}

const durations = (min: number): [string, number][] =>
  [
    ['1500ms', 1500],
    ['90s', 90 * S],
    ['2m', 2 * MIN],
    ['1h', 3600 * S],
    ['1d', DAY],
    ['45', 45 * S],
    ['1.5s', 1500],
    ['0.5', 500],
    [`${min}ms`, min],
  ].filter(([, ms]) => (ms as number) >= min) as [string, number][]
const badDurations = (min: number): string[] => ['soon', '10 sec', '-1s', '1w', ...(min > 0 ? [`${min - 1}ms`] : [])]

const table: Variable[] = [
  {
    name: 'ROLE',
    path: 'role',
    fallback: 'all',
    valid: [
      ['listener', 'listener'],
      ['worker', 'worker'],
      ['all', 'all'],
    ],
    invalid: ['both', 'ALL'],
  },
  {
    name: 'LOG_LEVEL',
    path: 'logLevel',
    fallback: 'info',
    valid: [
      ['debug', 'debug'],
      ['silent', 'silent'],
      ['fatal', 'fatal'],
    ],
    invalid: ['verbose', '10'],
  },
  {
    name: 'LMTP_HOST',
    path: 'lmtp.host',
    fallback: '0.0.0.0',
    valid: [
      ['127.0.0.1', '127.0.0.1'],
      ['::', '::'],
    ],
    invalid: [],
  },
  {
    name: 'LMTP_PORT',
    path: 'lmtp.port',
    fallback: 2424,
    valid: [
      ['0', 0],
      ['2525', 2525],
      ['65535', 65535],
      ['off', null],
    ],
    invalid: ['25', '65536', '-1', 'lmtp', '24.5'],
    env: { LMTP_SOCKET: '/tmp/lmtp.sock' },
  },
  { name: 'LMTP_SOCKET', path: 'lmtp.socket', fallback: null, valid: [['/run/lmtp.sock', '/run/lmtp.sock']], invalid: [] },
  { name: 'LMTP_HOSTNAME', path: 'lmtp.hostname', fallback: hostname(), valid: [['lmtp.example.com', 'lmtp.example.com']], invalid: [] },
  {
    name: 'LMTP_DOMAINS',
    path: 'lmtp.domains',
    fallback: ['*'],
    valid: [
      ['example.com', ['example.com']],
      ['Example.COM., hooks.example.org', ['example.com', 'hooks.example.org']],
      ['[192.0.2.1]', ['[192.0.2.1]']],
      ['*', ['*']],
    ],
    invalid: ['exa mple.com', '-bad.example', 'a..b', 'user@example.com'],
  },
  {
    name: 'LMTP_MAX_MESSAGE_SIZE',
    path: 'lmtp.maxMessageSize',
    fallback: 25 * MiB,
    valid: [
      ['1024', 1024],
      ['512KiB', 512 * 1024],
      ['10MiB', 10 * MiB],
      ['1GiB', 1024 * MiB],
      ['64k', 64 * 1024],
      ['2MB', 2 * MiB],
    ],
    invalid: ['1023', '10TB', 'big', '-5MiB'],
  },
  {
    name: 'LMTP_MAX_RECIPIENTS',
    path: 'lmtp.maxRecipients',
    fallback: 1000,
    valid: [
      ['1', 1],
      ['100000', 100_000],
    ],
    invalid: ['0', '100001', 'many', '1.5'],
  },
  {
    name: 'LMTP_MAX_CONNECTIONS',
    path: 'lmtp.maxConnections',
    fallback: 1000,
    valid: [
      ['1', 1],
      ['1000000', 1_000_000],
    ],
    invalid: ['0', '1000001', '-3'],
  },
  { name: 'LMTP_IDLE_TIMEOUT', path: 'lmtp.idleTimeoutMs', fallback: 5 * MIN, valid: durations(100), invalid: badDurations(100) },
  { name: 'LMTP_DATA_TIMEOUT', path: 'lmtp.dataTimeoutMs', fallback: 5 * MIN, valid: durations(100), invalid: badDurations(100) },
  { name: 'SHUTDOWN_TIMEOUT', path: 'lmtp.shutdownTimeoutMs', fallback: 25 * S, valid: [...durations(0), ['0', 0]], invalid: badDurations(0) },
  { name: 'SHUTDOWN_DELAY', path: 'lmtp.shutdownDelayMs', fallback: 5 * S, valid: [...durations(0), ['0', 0]], invalid: badDurations(0) },
  {
    name: 'REDIS_URL',
    path: 'redis.url',
    fallback: 'redis://127.0.0.1:6379',
    valid: [
      ['redis://redis:6379/2', 'redis://redis:6379/2'],
      ['rediss://:pw@redis.example:6380', 'rediss://:pw@redis.example:6380'],
      ['unix:///run/redis.sock', '/run/redis.sock'],
      ['unix:///run/redis.sock?db=1', '/run/redis.sock?db=1'],
    ],
    invalid: ['http://redis', 'redis.example:6379', 'unix://relative.sock'],
  },
  {
    name: 'REDIS_MODE',
    path: 'redis.mode',
    fallback: 'standalone',
    valid: [['standalone', 'standalone']],
    invalid: ['replicated', 'Sentinel'],
  },
  {
    name: 'REDIS_SENTINELS',
    path: 'redis.sentinels',
    fallback: undefined,
    required: true,
    env: { REDIS_MODE: 'sentinel' },
    valid: [
      [
        '10.0.0.1:26380, [fd00::1], sentinel-2',
        [
          { host: '10.0.0.1', port: 26380 },
          { host: 'fd00::1', port: 26379 },
          { host: 'sentinel-2', port: 26379 },
        ],
      ],
    ],
    invalid: ['10.0.0.1:0', '10.0.0.1:65536', 'redis://10.0.0.1:26379', 'a b:1'],
  },
  {
    name: 'REDIS_SENTINEL_NAME',
    path: 'redis.sentinelName',
    fallback: 'mymaster',
    env: { REDIS_MODE: 'sentinel', REDIS_SENTINELS: '10.0.0.1:26379' },
    valid: [['mail.redis-1_a', 'mail.redis-1_a']],
    invalid: ['my master', 'x'.repeat(129)],
  },
  {
    name: 'REDIS_SENTINEL_USERNAME',
    path: 'redis.sentinelUsername',
    fallback: null,
    env: { REDIS_MODE: 'sentinel', REDIS_SENTINELS: '10.0.0.1:26379' },
    valid: [['sentinel-user', 'sentinel-user']],
    invalid: [],
  },
  {
    name: 'REDIS_SENTINEL_PASSWORD',
    path: 'redis.sentinelPassword',
    fallback: null,
    env: { REDIS_MODE: 'sentinel', REDIS_SENTINELS: '10.0.0.1:26379' },
    valid: [['sentinel secret', 'sentinel secret']],
    invalid: [],
  },
  {
    name: 'REDIS_CLUSTER_NODES',
    path: 'redis.clusterNodes',
    fallback: undefined,
    required: true,
    env: { REDIS_MODE: 'cluster' },
    valid: [
      [
        'redis-0:7000,redis-1',
        [
          { host: 'redis-0', port: 7000 },
          { host: 'redis-1', port: 6379 },
        ],
      ],
    ],
    invalid: ['redis-0:7000:1', 'redis-0:-1'],
  },
  {
    name: 'REDIS_USERNAME',
    path: 'redis.username',
    fallback: null,
    env: { REDIS_PASSWORD: 'pw' },
    valid: [['svc', 'svc']],
    invalid: [],
  },
  { name: 'REDIS_PASSWORD', path: 'redis.password', fallback: null, valid: [['s3cret with spaces', 's3cret with spaces']], invalid: [] },
  {
    name: 'REDIS_TLS',
    path: 'redis.tls',
    fallback: null,
    valid: [
      ['true', { ca: null, cert: null, key: null, servername: null }],
      ['false', null],
    ],
    invalid: ['tls', '2'],
  },
  {
    name: 'REDIS_TLS_SERVERNAME',
    path: 'redis.tls.servername',
    fallback: null,
    env: { REDIS_TLS: 'true' },
    valid: [['redis.internal', 'redis.internal']],
    invalid: [],
  },
  {
    name: 'REDIS_MIN_REPLICAS_ACK',
    path: 'redis.minReplicasAck',
    fallback: 0,
    valid: [
      ['0', 0],
      ['1', 1],
      ['100', 100],
    ],
    invalid: ['-1', '101', 'one', '1.5'],
  },
  {
    name: 'QUEUE_SHARDS',
    path: 'redis.queueShards',
    fallback: 1,
    valid: [
      ['1', 1],
      ['3', 3],
      ['12', 12],
    ],
    invalid: ['0', '13', 'three', '2.5'],
  },
  { name: 'REDIS_CONNECT_TIMEOUT', path: 'redis.connectTimeoutMs', fallback: 15 * S, valid: durations(100), invalid: badDurations(100) },
  {
    name: 'REDIS_PREFIX',
    path: 'redis.prefix',
    fallback: 'lmtp-webhook',
    valid: [['mail.prod_1', 'mail.prod_1']],
    invalid: ['a:b', 'has space', 'x'.repeat(65)],
  },
  {
    name: 'ALLOW_ACCEPT_WITHOUT_AOF',
    path: 'redis.allowAcceptWithoutAof',
    fallback: false,
    valid: [
      ['true', true],
      ['1', true],
      ['yes', true],
      ['ON', true],
      ['false', false],
      ['0', false],
      ['no', false],
      ['off', false],
    ],
    invalid: ['maybe', '2'],
  },
  { name: 'ROUTES_FILE', path: 'delivery.routesFile', fallback: null, valid: [['/etc/routes.yaml', '/etc/routes.yaml']], invalid: [] },
  {
    name: 'WORKER_CONCURRENCY',
    path: 'delivery.workerConcurrency',
    fallback: 64,
    valid: [
      ['1', 1],
      ['10000', 10_000],
    ],
    invalid: ['0', '10001', 'lots'],
  },
  { name: 'REPLY_TIMEOUT', path: 'delivery.replyTimeoutMs', fallback: 30 * S, valid: durations(10), invalid: badDurations(10) },
  { name: 'MESSAGE_TTL', path: 'delivery.messageTtlMs', fallback: 7 * DAY, valid: durations(1000), invalid: badDurations(1000) },
  {
    name: 'SENDER_CHECK_URL',
    path: 'delivery.senderCheckUrl',
    fallback: null,
    valid: [['https://hooks.example.com/sender', 'https://hooks.example.com/sender']],
    invalid: ['ftp://x/', 'not a url', 'mailto:a@b'],
  },
  { name: 'WEBHOOK_TIMEOUT', path: 'delivery.webhookTimeoutMs', fallback: 15 * S, valid: durations(10), invalid: badDurations(10) },
  { name: 'WEBHOOK_CONNECT_TIMEOUT', path: 'delivery.connectTimeoutMs', fallback: 5 * S, valid: durations(10), invalid: badDurations(10) },
  {
    name: 'WEBHOOK_ALLOW_CIDRS',
    path: 'delivery.allowCidrs',
    fallback: [],
    valid: [
      ['10.0.0.0/8, fd00::/8', ['10.0.0.0/8', 'fd00::/8']],
      ['192.0.2.7', ['192.0.2.7']],
    ],
    invalid: ['10.0.0.0/33', 'example.com/8', '10.0.0.0/8/1'],
  },
  {
    name: 'LMTP_MAX_LINE_DISCARD',
    path: 'lmtp.maxLineDiscard',
    fallback: 64 * 1024,
    valid: [
      ['4096', 4096],
      ['1MiB', MiB],
    ],
    invalid: ['4095', 'lots', '-1'],
  },
  {
    name: 'LMTP_ALLOW_CIDRS',
    path: 'lmtp.allowCidrs',
    fallback: [],
    valid: [
      ['10.0.0.0/8, fd00::/8', ['10.0.0.0/8', 'fd00::/8']],
      ['127.0.0.1', ['127.0.0.1']],
    ],
    invalid: ['the office', '10.0.0.0/33'],
  },
  {
    name: 'EVENTS_URL',
    path: 'events.url',
    fallback: null,
    valid: [['https://alerts.example.com/lmtp', 'https://alerts.example.com/lmtp']],
    invalid: ['ftp://x/', 'not a url'],
  },
  {
    name: 'EVENTS_SECRET',
    path: 'events.secret',
    fallback: null,
    valid: [[`whsec_${Buffer.alloc(32, 7).toString('base64')}`, `whsec_${Buffer.alloc(32, 7).toString('base64')}`]],
    invalid: ['hunter2', `whsec_${Buffer.alloc(8, 7).toString('base64')}`],
  },
  {
    name: 'SENDER_CHECK_SECRET',
    path: 'delivery.senderCheckSecret',
    fallback: null,
    valid: [[`whsec_${Buffer.alloc(32, 9).toString('base64')}`, `whsec_${Buffer.alloc(32, 9).toString('base64')}`]],
    invalid: ['hunter2', `whsec_${Buffer.alloc(8, 9).toString('base64')}`],
  },
  {
    name: 'WEBHOOK_DENY_CIDRS',
    path: 'delivery.denyCidrs',
    fallback: [],
    valid: [['127.0.0.0/8,::1/128', ['127.0.0.0/8', '::1/128']]],
    invalid: ['::/129', 'nope'],
  },
  {
    name: 'DELIVERY_LOG_MAX',
    path: 'delivery.logRetention',
    fallback: 10_000,
    valid: [
      ['0', 0],
      ['10000000', 10_000_000],
    ],
    invalid: ['10000001', '-1', 'all'],
  },
  { name: 'DELIVERY_LOG_TTL', path: 'delivery.logTtlMs', fallback: 7 * DAY, valid: durations(1000), invalid: badDurations(1000) },
  { name: 'ADMIN_HOST', path: 'admin.host', fallback: '0.0.0.0', valid: [['127.0.0.1', '127.0.0.1']], invalid: [] },
  {
    name: 'ADMIN_PORT',
    path: 'admin.port',
    fallback: 8080,
    valid: [
      ['0', 0],
      ['9090', 9090],
      ['off', null],
      ['none', null],
    ],
    invalid: ['65536', 'http'],
  },
  {
    name: 'ADMIN_TOKENS',
    path: 'admin.tokens',
    fallback: [TOKEN],
    valid: [['aaaaaaaaaaaaaaaa, bbbbbbbbbbbbbbbbbbbb', ['aaaaaaaaaaaaaaaa', 'bbbbbbbbbbbbbbbbbbbb']]],
    invalid: ['short', 'aaaaaaaaaaaaaaaa,tiny'],
  },
  {
    name: 'ADMIN_ALLOW_NO_AUTH',
    path: 'admin.allowNoAuth',
    fallback: false,
    valid: [
      ['true', true],
      ['false', false],
    ],
    invalid: ['perhaps'],
  },
]

t.test('parseDuration and parseSize: units, and a bare number is seconds / octets', async (t) => {
  t.equal(parseDuration('30'), 30_000)
  t.equal(parseDuration('30s'), 30_000)
  t.equal(parseDuration('250ms'), 250)
  t.equal(parseDuration('1.25m'), 75_000)
  t.equal(parseDuration(' 2h '), 7_200_000)
  t.equal(parseDuration('7d'), 7 * DAY)
  t.equal(parseDuration('1w'), null)
  t.equal(parseDuration('s'), null)
  t.equal(parseSize('100'), 100)
  t.equal(parseSize('1KiB'), 1024)
  t.equal(parseSize('1 MiB'), MiB)
  t.equal(parseSize('1gb'), 1024 * MiB, 'units are binary and case-insensitive')
  t.equal(parseSize('1.5MiB'), null, 'no fractions')
  t.equal(parseSize('1TiB'), null)
})

for (const v of table) {
  t.test(v.name, async (t) => {
    if (v.required) {
      for (const raw of [undefined, '', '  ']) {
        const f = failure({ ...v.env, ...(raw === undefined ? {} : { [v.name]: raw }) })
        t.equal(f?.variable, v.name, `${raw === undefined ? 'unset' : JSON.stringify(raw)}: refused, naming ${v.name} (${f?.message})`)
      }
    }
    // ADMIN_TOKENS has no default: BASE sets one (the admin API is on by default and needs it)
    else if (v.name !== 'ADMIN_TOKENS') {
      t.same(at(loadConfig({ ...BASE, ...v.env, [v.name]: '' }), v.path), v.fallback, `empty: the default ${JSON.stringify(v.fallback)}`)
      t.same(at(loadConfig({ ...BASE, ...v.env, [v.name]: '  ' }), v.path), v.fallback, 'blank: the default')
    }
    if (!v.required) t.same(at(loadConfig({ ...BASE, ...v.env }), v.path), v.fallback, `unset: the default ${JSON.stringify(v.fallback)}`)
    for (const [raw, value] of v.valid)
      t.same(at(loadConfig({ ...BASE, ...v.env, [v.name]: raw }), v.path), value, `${v.name}=${raw} is ${JSON.stringify(value)}`)
    for (const raw of v.invalid) {
      const f = failure({ ...v.env, [v.name]: raw })
      t.ok(f, `${v.name}=${raw} is refused`)
      t.match(f?.message, new RegExp(`^${v.name}: expected `), `${v.name}=${raw}: the message names the variable and says what is expected (${f?.message})`)
      t.equal(f?.variable, v.name, `${v.name}=${raw}: details.variable`)
    }
  })
}

t.test('rules across variables', async (t) => {
  const noPort = failure({ LMTP_PORT: 'off' })
  t.match(noPort?.message, /^LMTP_PORT: expected a port, or LMTP_SOCKET set when the port is off/, 'no listener at all is refused')
  t.equal(loadConfig({ ...BASE, LMTP_PORT: 'off', ROLE: 'worker' }).lmtp.port, null, 'a worker needs no listener')
  const port25 = failure({ LMTP_PORT: '25' })
  t.match(port25?.message, /^LMTP_PORT: expected a port other than 25 \(RFC 2033 section 5/, 'port 25 names the RFC')

  const noTokens = failure({ ADMIN_TOKENS: '' })
  t.equal(noTokens?.variable, 'ADMIN_TOKENS', 'the admin API on without a token is refused')
  t.match(noTokens?.message, /ADMIN_TOKENS_FILE, or ADMIN_ALLOW_NO_AUTH=true/)
  t.same(loadConfig({ ADMIN_ALLOW_NO_AUTH: 'true' }).admin.tokens, [], 'ADMIN_ALLOW_NO_AUTH=true opens it without tokens')
  t.same(loadConfig({ ADMIN_PORT: 'off' }).admin.port, null, 'no token needed with the admin API off')
  t.notMatch(failure({ ADMIN_TOKENS: 'short' })?.message ?? '', /short/, 'a bad token is not echoed')

  const dir = mkdtempSync(join(tmpdir(), 'config-test-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'tokens')
  writeFileSync(file, `# rotated monthly\n${'c'.repeat(20)}\n\n${'d'.repeat(20)}, ${'e'.repeat(16)}\r\n`)
  t.same(
    loadConfig({ ADMIN_TOKENS_FILE: file }).admin.tokens,
    ['c'.repeat(20), 'd'.repeat(20), 'e'.repeat(16)],
    'ADMIN_TOKENS_FILE: one per line or comma, # comments',
  )
  t.same(loadConfig({ ADMIN_TOKENS: TOKEN, ADMIN_TOKENS_FILE: file }).admin.tokens.length, 4, 'both sources add up')
  const missing = failure({ ADMIN_TOKENS: '', ADMIN_TOKENS_FILE: join(dir, 'nope') })
  t.equal(missing?.variable, 'ADMIN_TOKENS_FILE')
  t.match(missing?.message, /^ADMIN_TOKENS_FILE: expected a readable file/)
  writeFileSync(file, 'tiny\n')
  t.equal(failure({ ADMIN_TOKENS: '', ADMIN_TOKENS_FILE: file })?.variable, 'ADMIN_TOKENS_FILE', 'a short token in the file names the file variable')

  const frozen = loadConfig(BASE)
  t.ok(Object.isFrozen(frozen) && Object.isFrozen(frozen.lmtp) && Object.isFrozen(frozen.lmtp.domains), 'the configuration is frozen, deeply')
})

t.test('every variable src/config.ts reads is covered here', async (t) => {
  const source = readFileSync(new URL('../src/config.ts', import.meta.url), 'utf8')
  const read = new Set([...source.matchAll(/\benv, '([A-Z][A-Z0-9_]*)'/g)].map((m) => m[1]!))
  read.add('ADMIN_TOKENS').add('ADMIN_TOKENS_FILE')
  // Listener security needs certificate and users files: test/lmtp/security-config.test.ts covers it.
  const security = [
    'LMTP_TLS_CERT_FILE',
    'LMTP_TLS_KEY_FILE',
    'LMTP_TLS_CLIENT_CA_FILE',
    'LMTP_TLS_CLIENT_CERT',
    'LMTP_TLS_REQUIRED',
    'LMTP_AUTH_USERS_FILE',
    'LMTP_AUTH_REQUIRED',
    'LMTP_AUTH_MAX_FAILURES',
    'LMTP_AUTH_FAILURE_WINDOW',
    'LMTP_PROXY_PROTOCOL',
    'LMTP_PROXY_TRUSTED_CIDRS',
  ]
  // PEM files for TLS towards Redis, and the secrets read from files: test/redis/config.test.ts covers them.
  const redisFiles = ['REDIS_TLS_CA_FILE', 'REDIS_TLS_CERT_FILE', 'REDIS_TLS_KEY_FILE', 'REDIS_PASSWORD_FILE', 'REDIS_SENTINEL_PASSWORD_FILE']
  const covered = new Set([...table.map((v) => v.name), 'ADMIN_TOKENS_FILE', ...security, ...redisFiles])
  for (const name of read) t.ok(covered.has(name), `${name} has a row in this test`)
})
