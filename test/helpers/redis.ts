/**
 * Private Redis topologies for tests, each in its own temp dir, on loopback, stopped by pid:
 * a server on a unix socket (persistence settings), servers on TCP ports, a Sentinel set (one
 * primary, one replica, three sentinels), a Redis Cluster, and TLS material made with openssl.
 * Start a topology once per test file; every test uses its own key prefix on it.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, existsSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pki } from './certs.js'
import { freePort } from './net.js'
import { until } from './until.js'

type Teardown = { teardown: (fn: () => unknown) => void }

/** How long a topology may take to come up (servers, replication, sentinels, cluster state). */
const TOPOLOGY_MS = 20_000

/**
 * redis-server, killed by the kernel if the test process dies first (a runner's timeout kills
 * it without teardown): setpriv sets the parent-death signal and execs, so the pid is the server's.
 */
function spawnRedis(args: string[]): ChildProcess {
  return spawn('setpriv', ['--pdeathsig', 'KILL', 'redis-server', ...args], { stdio: 'ignore' })
}

export interface PrivateRedis {
  url: string
  dir: string
  /** The redis-server process now (to stop, freeze or kill it in a test). */
  pid: number
  /** Kills the process if it still runs and starts a new one on the same socket and directory. */
  restart(): Promise<void>
}

export async function privateRedis(t: Teardown, args: string[]): Promise<PrivateRedis> {
  const dir = mkdtempSync(join(tmpdir(), 'lmtp-webhook-redis-'))
  const sock = join(dir, 'redis.sock')
  let child: ChildProcess
  let exited: Promise<void>
  const stop = async (): Promise<void> => {
    child.kill('SIGCONT')
    child.kill('SIGKILL')
    await exited
  }
  const start = async (): Promise<void> => {
    rmSync(sock, { force: true })
    child = spawnRedis(['--port', '0', '--unixsocket', sock, '--save', '', '--dir', dir, ...args])
    exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
    await until('the redis-server socket', () => existsSync(sock), 5_000, 50).catch(() => {
      throw new Error('redis-server did not start (is it installed?)')
    })
    redis.pid = child.pid!
  }
  const redis: PrivateRedis = {
    url: `unix://${sock}`,
    dir,
    pid: 0,
    async restart() {
      await stop()
      await start()
    },
  }
  t.teardown(async () => {
    await stop()
    rmSync(dir, { recursive: true, force: true })
  })
  await start()
  return redis
}

export interface ServerProcess {
  readonly host: string
  readonly port: number
  readonly dir: string
  readonly pid: number
  readonly log: () => string
  /** Resolves when the process has exited. */
  readonly exited: Promise<void>
  /** kill -9, and wait for the exit. */
  kill(): Promise<void>
  alive(): boolean
  /** `redis-cli` against this server (with its credentials); the reply as text. */
  cli(...args: string[]): string
}

/**
 * `redis-server` (or `redis-server --sentinel`) with `config` as its configuration file, in `dir`,
 * on 127.0.0.1:`port`; resolves once its log says it is ready.
 */
async function spawnServer(t: Teardown, dir: string, port: number, config: string, sentinel: boolean, auth: readonly string[] = []): Promise<ServerProcess> {
  const file = join(dir, sentinel ? 'sentinel.conf' : 'redis.conf')
  const logFile = join(dir, 'server.log')
  writeFileSync(file, `${config}\nlogfile ${logFile}\ndir ${dir}\n`)
  const child = spawnRedis(sentinel ? [file, '--sentinel'] : [file])
  let alive = true
  const exited = new Promise<void>((resolve) =>
    child.once('exit', () => {
      alive = false
      resolve()
    }),
  )
  const log = (): string => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : '')
  const server: ServerProcess = {
    host: '127.0.0.1',
    port,
    dir,
    pid: child.pid!,
    log,
    exited,
    alive: () => alive,
    cli: (...args) => redisCli(port, ...auth, ...args),
    async kill() {
      if (alive) {
        child.kill('SIGCONT')
        child.kill('SIGKILL')
      }
      await exited
    },
  }
  t.teardown(() => server.kill())
  await until(
    `redis-server on ${port} (${dir})`,
    () => {
      if (!alive) throw new Error(`redis-server on ${port} exited:\n${log()}`)
      return sentinel ? /Sentinel ID is/.test(log()) : /Ready to accept connections/.test(log())
    },
    TOPOLOGY_MS,
    50,
  )
  return server
}

function tempDir(t: Teardown, name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `lmtp-webhook-${name}-`))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** `redis-cli` against one server; the reply as text. */
export function redisCli(port: number, ...args: string[]): string {
  return execFileSync('redis-cli', ['-h', '127.0.0.1', '-p', String(port), '--no-auth-warning', ...args], { encoding: 'utf8' }).trim()
}

/** Persistence settings under which accept mode is durable on Redis 7.0 (no WAITAOF there). */
export const DURABLE_ARGS = ['appendonly yes', 'appendfsync always']

export interface RedisServerOptions {
  /** Extra configuration lines. */
  readonly config?: readonly string[]
  readonly port?: number
  /** redis-cli arguments that authenticate (`--user u --pass p`, `-a p`). */
  readonly auth?: readonly string[]
  /** TLS only on `port` (client certificates required, replication and cluster bus on TLS too). */
  readonly tls?: TlsFiles
}

/** One redis-server on a TCP port of its own. */
export async function redisServer(t: Teardown, options: RedisServerOptions = {}): Promise<ServerProcess> {
  const port = options.port ?? (await freePort())
  const dir = tempDir(t, 'redis')
  const tls = options.tls ? [...tlsServerConfig(options.tls, port), 'tls-replication yes', 'tls-cluster yes'] : []
  const config = ['bind 127.0.0.1', `port ${port}`, 'save ""', ...tls, ...(options.config ?? [])].join('\n')
  return spawnServer(t, dir, port, config, false, [...(options.tls ? tlsCliArgs(options.tls) : []), ...(options.auth ?? [])])
}

/** redis-cli arguments for a TLS server. */
export function tlsCliArgs(files: TlsFiles): string[] {
  return ['--tls', '--cacert', files.ca, '--cert', files.clientCert, '--key', files.clientKey]
}

export interface SentinelSet {
  readonly name: string
  readonly primary: ServerProcess
  readonly replica: ServerProcess
  readonly sentinels: readonly ServerProcess[]
  /** REDIS_MODE, REDIS_SENTINELS, REDIS_SENTINEL_NAME and the credentials, for the service. */
  readonly env: Record<string, string>
  /** The port the sentinels name as the master now. */
  masterPort(): number
}

export interface SentinelSetOptions {
  /** Configuration lines for both data servers. */
  readonly config?: readonly string[]
  /** Everything (data servers, sentinels) on TLS only. */
  readonly tls?: TlsFiles
  /** Password of the data servers (requirepass, masterauth). */
  readonly password: string
  /** Password of the sentinels (requirepass; they authenticate to each other with it). */
  readonly sentinelPassword: string
}

/**
 * A primary, its replica and three sentinels (quorum 2) watching them, every one behind a password,
 * with a fast failover (down after 1 s). Resolves once every sentinel knows the master, its replica
 * and the other sentinels, and the replica is in sync.
 */
export async function sentinelSet(t: Teardown, options: SentinelSetOptions): Promise<SentinelSet> {
  const name = 'mymaster'
  const { password, sentinelPassword } = options
  const dataAuth = ['-a', password]
  const dataConfig = [...(options.config ?? []), `requirepass ${password}`, `masterauth ${password}`]
  const primaryPort = await freePort()
  const tls = options.tls
  const primary = await redisServer(t, { port: primaryPort, config: dataConfig, auth: dataAuth, tls })
  const replica = await redisServer(t, { config: [...dataConfig, `replicaof 127.0.0.1 ${primaryPort}`], auth: dataAuth, tls })
  await until('the replica to be in sync', () => /master_link_status:up/.test(replica.cli('info', 'replication')), TOPOLOGY_MS, 50)
  const sentinels: ServerProcess[] = []
  for (let i = 0; i < 3; i++) {
    const port = await freePort()
    const sentinelConfig = [
      'bind 127.0.0.1',
      `port ${port}`,
      `requirepass ${sentinelPassword}`,
      `sentinel sentinel-pass ${sentinelPassword}`,
      `sentinel monitor ${name} 127.0.0.1 ${primaryPort} 2`,
      `sentinel auth-pass ${name} ${password}`,
      `sentinel down-after-milliseconds ${name} 1000`,
      `sentinel failover-timeout ${name} 4000`,
      `sentinel parallel-syncs ${name} 1`,
      ...(tls ? [...tlsServerConfig(tls, port), 'tls-replication yes'] : []),
    ].join('\n')
    const cli = [...(tls ? tlsCliArgs(tls) : []), '-a', sentinelPassword]
    sentinels.push(await spawnServer(t, tempDir(t, 'sentinel'), port, sentinelConfig, true, cli))
  }
  for (const s of sentinels) {
    await until(
      `sentinel ${s.port} to see the replica and the other sentinels`,
      () => {
        const info = s.cli('sentinel', 'master', name)
        const field = (f: string): number => Number(new RegExp(`(?:^|\\n)${f}\\n(\\d+)`).exec(info)?.[1] ?? -1)
        return field('num-slaves') === 1 && field('num-other-sentinels') === 2
      },
      TOPOLOGY_MS,
      50,
    )
  }
  return {
    name,
    primary,
    replica,
    sentinels,
    env: {
      REDIS_MODE: 'sentinel',
      REDIS_SENTINELS: sentinels.map((s) => `127.0.0.1:${s.port}`).join(','),
      REDIS_SENTINEL_NAME: name,
      REDIS_PASSWORD: password,
      REDIS_SENTINEL_PASSWORD: sentinelPassword,
    },
    masterPort: () =>
      Number(
        sentinels
          .find((s) => s.alive())!
          .cli('sentinel', 'get-master-addr-by-name', name)
          .split('\n')[1],
      ),
  }
}

export interface RedisCluster {
  readonly nodes: readonly ServerProcess[]
  /** REDIS_MODE, REDIS_CLUSTER_NODES and the ACL user's credentials, for the service. */
  readonly env: Record<string, string>
}

/**
 * `masters` primaries (no replicas) made a cluster by `redis-cli --cluster create`, which splits
 * the slots evenly. The default user is off: clients log in as the ACL user `lmtp` (`password`).
 * Resolves when every node reports cluster_state:ok.
 */
export async function redisCluster(t: Teardown, password: string, masters = 3, config: readonly string[] = [], tls?: TlsFiles): Promise<RedisCluster> {
  const auth = ['--user', 'lmtp', '--pass', password]
  const acl = [`user lmtp on >${password} ~* &* +@all`, 'user default off', 'masteruser lmtp', `masterauth ${password}`]
  const nodes: ServerProcess[] = []
  for (let i = 0; i < masters; i++) {
    const busPort = await freePort()
    nodes.push(
      await redisServer(t, {
        config: ['cluster-enabled yes', 'cluster-config-file nodes.conf', 'cluster-node-timeout 2000', `cluster-port ${busPort}`, ...acl, ...config],
        auth,
        tls,
      }),
    )
  }
  execFileSync(
    'redis-cli',
    [...(tls ? tlsCliArgs(tls) : []), ...auth, '--no-auth-warning', '--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-yes'],
    {
      stdio: 'ignore',
    },
  )
  for (const n of nodes) await until(`cluster node ${n.port} to be ok`, () => /cluster_state:ok/.test(n.cli('cluster', 'info')), TOPOLOGY_MS, 50)
  return {
    nodes,
    env: { REDIS_MODE: 'cluster', REDIS_CLUSTER_NODES: nodes.map((n) => `127.0.0.1:${n.port}`).join(','), REDIS_USERNAME: 'lmtp', REDIS_PASSWORD: password },
  }
}

/** Which node (port) serves `key`'s slot, from CLUSTER KEYSLOT and CLUSTER NODES. */
export function clusterOwner(cluster: RedisCluster, key: string): { slot: number; port: number } {
  const node = cluster.nodes[0]!
  const slot = Number(node.cli('cluster', 'keyslot', key))
  for (const line of node.cli('cluster', 'nodes').split('\n')) {
    const [, address = '', flags = '', , , , , , ...ranges] = line.split(' ')
    if (!flags.includes('master')) continue
    for (const r of ranges) {
      const [from, to = from] = r.split('-').map(Number)
      if (from !== undefined && to !== undefined && slot >= from && slot <= to) return { slot, port: Number(address.split(':')[1]!.split('@')[0]) }
    }
  }
  throw new Error(`no node serves slot ${slot}`)
}

export interface TlsFiles {
  readonly dir: string
  readonly ca: string
  readonly serverCert: string
  readonly serverKey: string
  readonly clientCert: string
  readonly clientKey: string
  /** A CA that signed nothing here: trusting it alone must fail. */
  readonly otherCa: string
  /** The DNS name in the server certificate (it also names 127.0.0.1). */
  readonly servername: string
}

/** A private CA (test/helpers/certs.ts), a server certificate for `redis.test` and 127.0.0.1, and a client certificate. */
export function tlsFiles(t: Teardown): TlsFiles {
  const certs = pki(t)
  const ca = certs.ca('ca')
  const other = certs.ca('other-ca')
  const server = certs.leaf('server', ca, { cn: 'redis.test', usage: 'both', dns: ['redis.test'], ip: ['127.0.0.1'] })
  const client = certs.leaf('client', ca, { cn: 'lmtp-webhook', usage: 'client' })
  return {
    dir: certs.dir,
    ca: ca.cert,
    serverCert: server.cert,
    serverKey: server.key,
    clientCert: client.cert,
    clientKey: client.key,
    otherCa: other.cert,
    servername: 'redis.test',
  }
}

/** Server configuration for TLS only (no plain port), client certificates required. */
export function tlsServerConfig(files: TlsFiles, port: number): string[] {
  return [
    'port 0',
    `tls-port ${port}`,
    `tls-cert-file ${files.serverCert}`,
    `tls-key-file ${files.serverKey}`,
    `tls-ca-cert-file ${files.ca}`,
    'tls-auth-clients yes',
  ]
}
