/**
 * The one place that reads the environment. `loadConfig(env)` parses every setting once into a
 * typed, frozen object and throws a CONFIG_ERR_INVALID naming the variable on the first bad value.
 */
import { hostname } from 'node:os'
import { readFileSync } from 'node:fs'
import { isIP } from 'node:net'
import { AppError, isAppError } from './errors.js'
import { parseSecret } from './delivery/signing.js'
import { readTlsFiles, TlsFileError, type ClientCertMode } from './lmtp/tls.js'
import { readUsersFile } from './lmtp/auth.js'
import { MAX_QUEUE_SHARDS } from './redis/keys.js'

export type Role = 'all' | 'listener' | 'worker'

// ---- Redis topology, credentials, TLS, durability, shards ----------------------------------
export type RedisMode = 'standalone' | 'sentinel' | 'cluster'

export interface RedisEndpoint {
  readonly host: string
  readonly port: number
}

/** TLS towards Redis (and Sentinel); PEM contents read from the files at start. */
export interface RedisTls {
  readonly ca: string | null
  readonly cert: string | null
  readonly key: string | null
  readonly servername: string | null
}

export interface Config {
  readonly role: Role
  readonly logLevel: string
  readonly lmtp: {
    readonly host: string
    /** `null` when TCP listening is turned off (`LMTP_PORT=off`). */
    readonly port: number | null
    readonly socket: string | null
    readonly hostname: string
    /** Lower-cased accepted recipient domains; `['*']` accepts all. */
    readonly domains: readonly string[]
    readonly maxMessageSize: number
    readonly maxRecipients: number
    readonly maxConnections: number
    readonly idleTimeoutMs: number
    readonly dataTimeoutMs: number
    readonly shutdownTimeoutMs: number
    /** Octets of one over-long command line dropped before the connection is closed. */
    readonly maxLineDiscard: number
    /** STARTTLS; null when no certificate is configured. */
    readonly tls: {
      readonly certFile: string
      readonly keyFile: string
      readonly clientCaFile: string | null
      readonly clientCert: ClientCertMode
      readonly required: boolean
    } | null
    /** AUTH PLAIN/LOGIN inside TLS; null when no users file is configured. */
    readonly auth: {
      readonly usersFile: string
      readonly required: boolean
      readonly maxFailures: number
      readonly failureWindowMs: number
    } | null
    /** Client addresses allowed to connect; empty: all. */
    readonly allowCidrs: readonly string[]
    /** The PROXY protocol; null when off. */
    readonly proxy: { readonly trustedCidrs: readonly string[] } | null
    /** Time between readiness turning false and the listener closing, at shutdown. */
    readonly shutdownDelayMs: number
  }
  readonly redis: {
    readonly mode: RedisMode
    /** Standalone: the server (`redis://`, `rediss://`, or a unix socket path). */
    readonly url: string
    /** Sentinel: the sentinels and the master group name. */
    readonly sentinels: readonly RedisEndpoint[]
    readonly sentinelName: string
    readonly sentinelUsername: string | null
    readonly sentinelPassword: string | null
    /** Cluster: seed nodes. */
    readonly clusterNodes: readonly RedisEndpoint[]
    /** Credentials of the data nodes (null: none, or those of the URL). */
    readonly username: string | null
    readonly password: string | null
    /** null: plain TCP. */
    readonly tls: RedisTls | null
    /** Replicas that must acknowledge accept-mode writes (WAIT) before a 250; 0: none. */
    readonly minReplicasAck: number
    /** Delivery queues, each on its own hash tag (a cluster places them on different primaries). */
    readonly queueShards: number
    /** How long start-up waits for Redis before it stops with the reason. */
    readonly connectTimeoutMs: number
    /** Prefix of every key this service writes (BullMQ queues included). */
    readonly prefix: string
    readonly allowAcceptWithoutAof: boolean
  }
  readonly delivery: {
    readonly routesFile: string | null
    readonly workerConcurrency: number
    readonly replyTimeoutMs: number
    readonly messageTtlMs: number
    readonly senderCheckUrl: string | null
    /** SENDER_CHECK_SECRET: Standard Webhooks signing secret of the sender check; null: unsigned. */
    readonly senderCheckSecret: string | null
    readonly webhookTimeoutMs: number
    readonly connectTimeoutMs: number
    readonly allowCidrs: readonly string[]
    readonly denyCidrs: readonly string[]
    readonly logRetention: number
    readonly logTtlMs: number
  }
  readonly admin: {
    readonly host: string
    /** `null` when the admin API is turned off (`ADMIN_PORT=off`). */
    readonly port: number | null
    readonly tokens: readonly string[]
    readonly allowNoAuth: boolean
  }
  /** Operational events (circuit opened/closed, route paused/resumed, dead letters). */
  readonly events: {
    /** EVENTS_URL; null: no events are sent. */
    readonly url: string | null
    /** EVENTS_SECRET: Standard Webhooks signing secret of the events; null: unsigned. */
    readonly secret: string | null
  }
}

type Env = Record<string, string | undefined>

function fail(name: string, expected: string, value: string | undefined): never {
  throw new AppError('CONFIG_ERR_INVALID', `${name}: expected ${expected}, got ${JSON.stringify(value)}`, { variable: name })
}

function str(env: Env, name: string, fallback: string): string {
  const v = env[name]
  return v === undefined || v.trim() === '' ? fallback : v.trim()
}

function optional(env: Env, name: string): string | null {
  const v = env[name]
  return v === undefined || v.trim() === '' ? null : v.trim()
}

function int(env: Env, name: string, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const raw = optional(env, name)
  if (raw === null) return fallback
  if (!/^\d+$/.test(raw)) fail(name, `an integer between ${min} and ${max}`, raw)
  const n = Number(raw)
  if (n < min || n > max) fail(name, `an integer between ${min} and ${max}`, raw)
  return n
}

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
}

/** Byte sizes: `26214400`, `25MiB`, `512k`. Binary units. */
export function parseSize(raw: string): number | null {
  const m = /^(\d+)\s*([a-z]*)$/i.exec(raw.trim())
  if (!m) return null
  const unit = SIZE_UNITS[(m[2] ?? '').toLowerCase()]
  return unit === undefined ? null : Number(m[1]) * unit
}

function size(env: Env, name: string, fallback: number, min: number): number {
  const raw = optional(env, name)
  if (raw === null) return fallback
  const n = parseSize(raw)
  if (n === null || n < min || !Number.isSafeInteger(n)) fail(name, `a size such as 26214400, 25MiB or 512KiB (at least ${min} bytes)`, raw)
  return n
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/** Durations: `30s`, `500ms`, `5m`, `7d`; a bare number is seconds. */
export function parseDuration(raw: string): number | null {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/.exec(raw.trim())
  if (!m) return null
  return Math.round(Number(m[1]) * (DURATION_UNITS[m[2] ?? 's'] ?? 1000))
}

function duration(env: Env, name: string, fallbackMs: number, minMs: number): number {
  const raw = optional(env, name)
  if (raw === null) return fallbackMs
  const n = parseDuration(raw)
  if (n === null || n < minMs) fail(name, `a duration such as 30s, 500ms or 5m (at least ${minMs} ms)`, raw)
  return n
}

function bool(env: Env, name: string, fallback: boolean): boolean {
  const raw = optional(env, name)
  if (raw === null) return fallback
  if (/^(1|true|yes|on)$/i.test(raw)) return true
  if (/^(0|false|no|off)$/i.test(raw)) return false
  fail(name, 'true or false', raw)
}

function list(env: Env, name: string): string[] {
  const raw = optional(env, name)
  if (raw === null) return []
  return raw
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
}

function port(env: Env, name: string, fallback: number): number | null {
  const raw = optional(env, name)
  if (raw !== null && /^(off|none|false)$/i.test(raw)) return null
  return int(env, name, fallback, 0, 65535)
}

/** CIDR syntax check (address/prefix, IPv4 or IPv6). */
export function isCidr(value: string): boolean {
  const [addr, bits, extra] = value.split('/')
  if (extra !== undefined || addr === undefined) return false
  const family = isIP(addr)
  if (family === 0) return false
  if (bits === undefined) return true
  if (!/^\d+$/.test(bits)) return false
  return Number(bits) <= (family === 4 ? 32 : 128)
}

function cidrs(env: Env, name: string): string[] {
  const values = list(env, name)
  for (const v of values) if (!isCidr(v)) fail(name, 'a comma-separated list of CIDRs such as 10.0.0.0/8,fd00::/8', v)
  return values
}

function url(env: Env, name: string): string | null {
  const raw = optional(env, name)
  if (raw === null) return null
  let parsed: URL
  try {
    parsed = new URL(raw)
  } catch {
    fail(name, 'an http(s) URL', raw)
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') fail(name, 'an http(s) URL', raw)
  return raw
}

function secret(env: Env, name: string): string | null {
  const raw = optional(env, name)
  if (raw === null) return null
  try {
    parseSecret(raw, name)
  } catch (err) {
    if (!isAppError(err)) throw err
    fail(name, 'a secret "whsec_" followed by base64 of 24 to 64 random bytes', '<redacted>')
  }
  return raw
}

const DOMAIN = /^(\*|(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.?|\[[0-9a-f:.]+\])$/i

function readTokens(env: Env): string[] {
  const tokens = list(env, 'ADMIN_TOKENS')
  const file = optional(env, 'ADMIN_TOKENS_FILE')
  if (file !== null) {
    let text: string
    try {
      text = readFileSync(file, 'utf8')
    } catch (err) {
      fail('ADMIN_TOKENS_FILE', `a readable file (${(err as Error).message})`, file)
    }
    for (const line of text.split(/[\r\n,]+/)) {
      const t = line.trim()
      if (t !== '' && !t.startsWith('#')) tokens.push(t)
    }
  }
  for (const t of tokens) {
    if (t.length < 16 || /\s/.test(t))
      fail(file !== null ? 'ADMIN_TOKENS_FILE' : 'ADMIN_TOKENS', 'tokens of at least 16 characters without spaces', '<redacted>')
  }
  return tokens
}

function lmtpTls(env: Env): Config['lmtp']['tls'] {
  const certFile = optional(env, 'LMTP_TLS_CERT_FILE')
  const keyFile = optional(env, 'LMTP_TLS_KEY_FILE')
  const clientCaFile = optional(env, 'LMTP_TLS_CLIENT_CA_FILE')
  const clientCertRaw = optional(env, 'LMTP_TLS_CLIENT_CERT')
  const required = bool(env, 'LMTP_TLS_REQUIRED', false)
  if (clientCertRaw !== null && !['off', 'request', 'require'].includes(clientCertRaw))
    fail('LMTP_TLS_CLIENT_CERT', 'one of off, request, require', clientCertRaw)
  if (certFile === null && keyFile === null) {
    if (required) fail('LMTP_TLS_REQUIRED', 'true only with LMTP_TLS_CERT_FILE and LMTP_TLS_KEY_FILE set', 'true')
    if (clientCaFile !== null) fail('LMTP_TLS_CLIENT_CA_FILE', 'a CA file only with LMTP_TLS_CERT_FILE and LMTP_TLS_KEY_FILE set', clientCaFile)
    if (clientCertRaw !== null && clientCertRaw !== 'off')
      fail('LMTP_TLS_CLIENT_CERT', 'request or require only with LMTP_TLS_CERT_FILE, LMTP_TLS_KEY_FILE and LMTP_TLS_CLIENT_CA_FILE set', clientCertRaw)
    return null
  }
  if (certFile === null) fail('LMTP_TLS_CERT_FILE', 'a certificate file (LMTP_TLS_KEY_FILE is set)', undefined)
  if (keyFile === null) fail('LMTP_TLS_KEY_FILE', 'a private key file (LMTP_TLS_CERT_FILE is set)', undefined)
  const clientCert = (clientCertRaw ?? (clientCaFile === null ? 'off' : 'request')) as ClientCertMode
  if (clientCert !== 'off' && clientCaFile === null) fail('LMTP_TLS_CLIENT_CERT', `${clientCert} only with LMTP_TLS_CLIENT_CA_FILE set`, clientCert)
  try {
    readTlsFiles({ certFile, keyFile, clientCaFile: clientCert === 'off' ? null : clientCaFile })
  } catch (err) {
    if (!(err instanceof TlsFileError)) throw err
    const variable = err.file === 'cert' ? 'LMTP_TLS_CERT_FILE' : err.file === 'key' ? 'LMTP_TLS_KEY_FILE' : 'LMTP_TLS_CLIENT_CA_FILE'
    const value = err.file === 'cert' ? certFile : err.file === 'key' ? keyFile : clientCaFile
    throw new AppError('CONFIG_ERR_INVALID', `${variable}: ${err.message}`, { variable, value })
  }
  return { certFile, keyFile, clientCaFile: clientCert === 'off' ? null : clientCaFile, clientCert, required }
}

function lmtpAuth(env: Env, tls: Config['lmtp']['tls']): Config['lmtp']['auth'] {
  const usersFile = optional(env, 'LMTP_AUTH_USERS_FILE')
  const required = bool(env, 'LMTP_AUTH_REQUIRED', false)
  const maxFailures = int(env, 'LMTP_AUTH_MAX_FAILURES', 5, 1, 1000)
  const failureWindowMs = duration(env, 'LMTP_AUTH_FAILURE_WINDOW', 600_000, 1000)
  if (usersFile === null) {
    if (required) fail('LMTP_AUTH_REQUIRED', 'true only with LMTP_AUTH_USERS_FILE set', 'true')
    return null
  }
  if (tls === null)
    fail('LMTP_AUTH_USERS_FILE', 'a users file only with LMTP_TLS_CERT_FILE and LMTP_TLS_KEY_FILE set (AUTH is offered inside TLS only)', usersFile)
  try {
    readUsersFile(usersFile)
  } catch (err) {
    throw new AppError('CONFIG_ERR_INVALID', `LMTP_AUTH_USERS_FILE: ${(err as Error).message}`, { variable: 'LMTP_AUTH_USERS_FILE', value: usersFile })
  }
  return { usersFile, required, maxFailures, failureWindowMs }
}

// ---- Redis (REDIS_*, QUEUE_SHARDS) ------------------------------------------------------------

function readFileVar(env: Env, name: string): string | null {
  const path = optional(env, name)
  if (path === null) return null
  try {
    return readFileSync(path, 'utf8')
  } catch (err) {
    fail(name, `a readable file (${(err as Error).message})`, path)
  }
}

/** A secret given directly (`name`) or as a mounted file (`fileName`, trailing newline dropped). */
function redisSecret(env: Env, name: string, fileName: string): string | null {
  // Blank is unset, as for every variable; a password is otherwise taken as written (spaces kept).
  const direct = env[name] === undefined || env[name]!.trim() === '' ? null : env[name]!
  const fromFile = readFileVar(env, fileName)
  if (direct !== null && fromFile !== null) fail(fileName, `unset when ${name} is set (one or the other)`, optional(env, fileName)!)
  if (fromFile !== null) {
    const value = fromFile.replace(/\r?\n$/, '')
    if (value === '') fail(fileName, 'a file holding the secret (it is empty)', optional(env, fileName)!)
    return value
  }
  return direct
}

/** `host:port,host:port` with `[v6]:port` for IPv6; a missing port is `defaultPort`. */
function endpoints(env: Env, name: string, defaultPort: number): RedisEndpoint[] {
  return list(env, name).map((item) => {
    const m = /^(?:\[([0-9a-f:.]+)\]|([^\s:[\]]+))(?::(\d{1,5}))?$/i.exec(item)
    const port = m?.[3] === undefined ? defaultPort : Number(m[3])
    if (!m || port < 1 || port > 65535) fail(name, 'a comma-separated list of host:port (IPv6 as [addr]:port)', item)
    return { host: (m[1] ?? m[2])!, port }
  })
}

function readRedis(env: Env): Omit<Config['redis'], 'allowAcceptWithoutAof'> {
  const mode = str(env, 'REDIS_MODE', 'standalone')
  if (mode !== 'standalone' && mode !== 'sentinel' && mode !== 'cluster') fail('REDIS_MODE', 'one of standalone, sentinel, cluster', mode)

  const urlGiven = optional(env, 'REDIS_URL')
  if (urlGiven !== null && mode !== 'standalone')
    fail('REDIS_URL', `unset with REDIS_MODE=${mode} (it names one server; use ${mode === 'sentinel' ? 'REDIS_SENTINELS' : 'REDIS_CLUSTER_NODES'})`, urlGiven)
  let url = urlGiven ?? 'redis://127.0.0.1:6379'
  if (!/^(rediss?:\/\/|unix:\/\/\/)/.test(url)) fail('REDIS_URL', 'a redis://, rediss:// or unix:///path URL', url)
  let urlHasPassword = false
  if (!url.startsWith('unix:')) {
    let parsed: URL
    try {
      parsed = new URL(url)
    } catch {
      fail('REDIS_URL', 'a redis://, rediss:// or unix:///path URL', url.replace(/:[^:@/]*@/, ':<redacted>@'))
    }
    urlHasPassword = parsed.password !== ''
  }
  // ioredis takes a unix socket as a bare path (query options such as ?db=1 kept).
  if (url.startsWith('unix://')) url = url.slice('unix://'.length)

  const sentinels = endpoints(env, 'REDIS_SENTINELS', 26379)
  const clusterNodes = endpoints(env, 'REDIS_CLUSTER_NODES', 6379)
  if (mode === 'sentinel' && sentinels.length === 0) fail('REDIS_SENTINELS', 'the sentinels as host:port,host:port (REDIS_MODE=sentinel)', undefined)
  if (mode !== 'sentinel' && sentinels.length > 0) fail('REDIS_SENTINELS', 'unset unless REDIS_MODE=sentinel', optional(env, 'REDIS_SENTINELS')!)
  if (mode === 'cluster' && clusterNodes.length === 0) fail('REDIS_CLUSTER_NODES', 'seed nodes as host:port,host:port (REDIS_MODE=cluster)', undefined)
  if (mode !== 'cluster' && clusterNodes.length > 0) fail('REDIS_CLUSTER_NODES', 'unset unless REDIS_MODE=cluster', optional(env, 'REDIS_CLUSTER_NODES')!)
  const sentinelName = str(env, 'REDIS_SENTINEL_NAME', 'mymaster')
  if (!/^[\w.-]{1,128}$/.test(sentinelName)) fail('REDIS_SENTINEL_NAME', 'a master group name (letters, digits, dot, dash, underscore)', sentinelName)
  const sentinelUsername = optional(env, 'REDIS_SENTINEL_USERNAME')
  const sentinelPassword = redisSecret(env, 'REDIS_SENTINEL_PASSWORD', 'REDIS_SENTINEL_PASSWORD_FILE')
  if (mode !== 'sentinel') {
    for (const name of ['REDIS_SENTINEL_NAME', 'REDIS_SENTINEL_USERNAME', 'REDIS_SENTINEL_PASSWORD', 'REDIS_SENTINEL_PASSWORD_FILE'])
      if (optional(env, name) !== null) fail(name, 'unset unless REDIS_MODE=sentinel', name.includes('PASSWORD') ? '<redacted>' : optional(env, name)!)
  }

  const username = optional(env, 'REDIS_USERNAME')
  const password = redisSecret(env, 'REDIS_PASSWORD', 'REDIS_PASSWORD_FILE')
  if (urlHasPassword && password !== null)
    fail(
      optional(env, 'REDIS_PASSWORD') !== null ? 'REDIS_PASSWORD' : 'REDIS_PASSWORD_FILE',
      'unset when REDIS_URL holds a password (one or the other)',
      '<redacted>',
    )
  if (username !== null && password === null && !urlHasPassword) fail('REDIS_PASSWORD', 'a password for REDIS_USERNAME (or REDIS_PASSWORD_FILE)', undefined)

  const urlTls = url.startsWith('rediss://')
  const tlsOn = bool(env, 'REDIS_TLS', urlTls)
  if (urlTls && !tlsOn) fail('REDIS_TLS', 'true or unset with a rediss:// URL', optional(env, 'REDIS_TLS')!)
  if (tlsOn && mode === 'standalone' && !/^rediss?:/.test(url)) fail('REDIS_TLS', 'false with a unix socket REDIS_URL', optional(env, 'REDIS_TLS') ?? 'true')
  const ca = readFileVar(env, 'REDIS_TLS_CA_FILE')
  const cert = readFileVar(env, 'REDIS_TLS_CERT_FILE')
  const key = readFileVar(env, 'REDIS_TLS_KEY_FILE')
  const servername = optional(env, 'REDIS_TLS_SERVERNAME')
  if (!tlsOn) {
    for (const name of ['REDIS_TLS_CA_FILE', 'REDIS_TLS_CERT_FILE', 'REDIS_TLS_KEY_FILE', 'REDIS_TLS_SERVERNAME'])
      if (optional(env, name) !== null) fail(name, 'unset unless REDIS_TLS=true (or a rediss:// URL)', optional(env, name)!)
  }
  if ((cert === null) !== (key === null))
    fail(
      cert === null ? 'REDIS_TLS_CERT_FILE' : 'REDIS_TLS_KEY_FILE',
      'set together with the other (mutual TLS needs both the certificate and its key)',
      undefined,
    )
  if (ca !== null && !ca.includes('-----BEGIN CERTIFICATE-----'))
    fail('REDIS_TLS_CA_FILE', 'a PEM file with CERTIFICATE blocks', optional(env, 'REDIS_TLS_CA_FILE')!)
  if (cert !== null && !cert.includes('-----BEGIN CERTIFICATE-----'))
    fail('REDIS_TLS_CERT_FILE', 'a PEM file with a CERTIFICATE block', optional(env, 'REDIS_TLS_CERT_FILE')!)
  if (key !== null && !/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(key))
    fail('REDIS_TLS_KEY_FILE', 'a PEM file with a PRIVATE KEY block', optional(env, 'REDIS_TLS_KEY_FILE')!)

  const prefix = str(env, 'REDIS_PREFIX', 'lmtp-webhook')
  if (!/^[\w.-]{1,64}$/.test(prefix)) fail('REDIS_PREFIX', 'letters, digits, dot, dash or underscore (1 to 64)', prefix)

  return {
    mode,
    url,
    sentinels,
    sentinelName,
    sentinelUsername,
    sentinelPassword,
    clusterNodes,
    username,
    password,
    tls: tlsOn ? { ca, cert, key, servername } : null,
    minReplicasAck: int(env, 'REDIS_MIN_REPLICAS_ACK', 0, 0, 100),
    queueShards: int(env, 'QUEUE_SHARDS', 1, 1, MAX_QUEUE_SHARDS),
    connectTimeoutMs: duration(env, 'REDIS_CONNECT_TIMEOUT', 15_000, 100),
    prefix,
  }
}

export function loadConfig(env: Env): Config {
  const role = str(env, 'ROLE', 'all')
  if (role !== 'all' && role !== 'listener' && role !== 'worker') fail('ROLE', 'one of all, listener, worker', role)

  const lmtpPort = port(env, 'LMTP_PORT', 2424)
  if (lmtpPort === 25) fail('LMTP_PORT', 'a port other than 25 (RFC 2033 section 5 forbids LMTP on the SMTP port)', '25')
  const socket = optional(env, 'LMTP_SOCKET')
  if (lmtpPort === null && socket === null && role !== 'worker') fail('LMTP_PORT', 'a port, or LMTP_SOCKET set when the port is off', 'off')

  const domains = list(env, 'LMTP_DOMAINS').map((d) => d.toLowerCase().replace(/\.$/, ''))
  for (const d of domains) if (!DOMAIN.test(d)) fail('LMTP_DOMAINS', 'a comma-separated list of domain names, or *', d)

  const logLevel = str(env, 'LOG_LEVEL', 'info')
  if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(logLevel))
    fail('LOG_LEVEL', 'one of fatal, error, warn, info, debug, trace, silent', logLevel)

  const redis = readRedis(env)

  const adminPort = port(env, 'ADMIN_PORT', 8080)
  const tokens = readTokens(env)
  const allowNoAuth = bool(env, 'ADMIN_ALLOW_NO_AUTH', false)
  if (adminPort !== null && tokens.length === 0 && !allowNoAuth) {
    fail('ADMIN_TOKENS', 'at least one token (or ADMIN_TOKENS_FILE, or ADMIN_ALLOW_NO_AUTH=true to expose /v1 without auth)', undefined)
  }

  const tls = lmtpTls(env)
  const auth = lmtpAuth(env, tls)
  const proxyProtocol = bool(env, 'LMTP_PROXY_PROTOCOL', false)
  const trustedCidrs = cidrs(env, 'LMTP_PROXY_TRUSTED_CIDRS')
  if (proxyProtocol && trustedCidrs.length === 0)
    fail('LMTP_PROXY_TRUSTED_CIDRS', 'the addresses of the proxies allowed to send a PROXY header (LMTP_PROXY_PROTOCOL is true)', undefined)
  if (!proxyProtocol && trustedCidrs.length > 0) fail('LMTP_PROXY_PROTOCOL', 'true when LMTP_PROXY_TRUSTED_CIDRS is set', env.LMTP_PROXY_PROTOCOL)

  const config: Config = {
    role,
    logLevel,
    lmtp: {
      host: str(env, 'LMTP_HOST', '0.0.0.0'),
      port: lmtpPort,
      socket,
      hostname: str(env, 'LMTP_HOSTNAME', hostname()),
      domains: domains.length === 0 ? ['*'] : domains,
      maxMessageSize: size(env, 'LMTP_MAX_MESSAGE_SIZE', 25 * 1024 * 1024, 1024),
      maxRecipients: int(env, 'LMTP_MAX_RECIPIENTS', 1000, 1, 100_000),
      maxConnections: int(env, 'LMTP_MAX_CONNECTIONS', 1000, 1, 1_000_000),
      idleTimeoutMs: duration(env, 'LMTP_IDLE_TIMEOUT', 300_000, 100),
      dataTimeoutMs: duration(env, 'LMTP_DATA_TIMEOUT', 300_000, 100),
      shutdownTimeoutMs: duration(env, 'SHUTDOWN_TIMEOUT', 25_000, 0),
      maxLineDiscard: size(env, 'LMTP_MAX_LINE_DISCARD', 64 * 1024, 4096),
      tls,
      auth,
      allowCidrs: cidrs(env, 'LMTP_ALLOW_CIDRS'),
      proxy: proxyProtocol ? { trustedCidrs } : null,
      shutdownDelayMs: duration(env, 'SHUTDOWN_DELAY', 5_000, 0),
    },
    redis: { ...redis, allowAcceptWithoutAof: bool(env, 'ALLOW_ACCEPT_WITHOUT_AOF', false) },
    delivery: {
      routesFile: optional(env, 'ROUTES_FILE'),
      workerConcurrency: int(env, 'WORKER_CONCURRENCY', 64, 1, 10_000),
      replyTimeoutMs: duration(env, 'REPLY_TIMEOUT', 30_000, 10),
      messageTtlMs: duration(env, 'MESSAGE_TTL', 7 * 86_400_000, 1000),
      senderCheckUrl: url(env, 'SENDER_CHECK_URL'),
      senderCheckSecret: secret(env, 'SENDER_CHECK_SECRET'),
      webhookTimeoutMs: duration(env, 'WEBHOOK_TIMEOUT', 15_000, 10),
      connectTimeoutMs: duration(env, 'WEBHOOK_CONNECT_TIMEOUT', 5_000, 10),
      allowCidrs: cidrs(env, 'WEBHOOK_ALLOW_CIDRS'),
      denyCidrs: cidrs(env, 'WEBHOOK_DENY_CIDRS'),
      logRetention: int(env, 'DELIVERY_LOG_MAX', 10_000, 0, 10_000_000),
      logTtlMs: duration(env, 'DELIVERY_LOG_TTL', 7 * 86_400_000, 1000),
    },
    admin: {
      host: str(env, 'ADMIN_HOST', '0.0.0.0'),
      port: adminPort,
      tokens,
      allowNoAuth,
    },
    events: {
      url: url(env, 'EVENTS_URL'),
      secret: secret(env, 'EVENTS_SECRET'),
    },
  }
  return deepFreeze(config)
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v)
    Object.freeze(value)
  }
  return value
}
