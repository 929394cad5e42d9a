/**
 * Queue shards on a Redis Cluster: how the Redis work of the delivery path spreads over the
 * primaries. A three-primary cluster (test/helpers/redis.ts), the service (defer mode, webhook
 * answering 200) with QUEUE_SHARDS=1 and then 3, the same load from `smtp-source -L -d`; each
 * primary's CPU (INFO cpu) is read around the measured part. Prints each primary's share of the
 * cluster's Redis CPU and the Redis CPU per message for both, side by side: with one shard one
 * primary does nearly all the work (one queue is one slot, one core), with three each does a third.
 *
 * Target: with QUEUE_SHARDS=3 the busiest primary does at most half of the cluster's Redis work.
 * Environment: BENCH_MESSAGES (default 3000), BENCH_RCPTS (default 2).
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { Redis } from 'ioredis'
import { Children } from './e2e/children.js'
import { redisCluster, type RedisCluster } from '../test/helpers/redis.js'

const MESSAGES = Number(process.env.BENCH_MESSAGES ?? 3000)
const RCPTS = Number(process.env.BENCH_RCPTS ?? 2)
const SESSIONS = 10
const SIZE = 10 * 1024
const PASSWORD = 'bench-cluster-secret'
const ROOT = new URL('..', import.meta.url).pathname
const work = mkdtempSync(join(tmpdir(), 'lmtp-webhook-bench-shards-'))
const children = new Children(ROOT)
const teardowns: (() => unknown)[] = []

async function cleanup(): Promise<void> {
  children.killAll()
  for (const fn of teardowns.reverse()) await fn()
  rmSync(work, { recursive: true, force: true })
}
process.on('SIGINT', () => void cleanup().then(() => process.exit(130)))

const startChild = (args: string[], env: Record<string, string>, ready: RegExp) => children.start(process.execPath, args, env, ready)

function smtpSource(port: number, messages: number): number {
  const args = ['-L', '-d', '-s', String(SESSIONS), '-m', String(messages), '-l', String(SIZE), '-r', String(RCPTS)]
  args.push('-f', 'sender@bench.test', '-t', 'user@example.com', `127.0.0.1:${port}`)
  const t0 = performance.now()
  execFileSync('smtp-source', args, { stdio: ['ignore', 'ignore', 'inherit'], timeout: 600_000 })
  return (messages * 1000) / (performance.now() - t0)
}

/** used_cpu_sys + used_cpu_user of each primary, in µs. */
async function cpuOfNodes(cluster: RedisCluster): Promise<number[]> {
  return Promise.all(
    cluster.nodes.map(async (n) => {
      const redis = new Redis({ host: n.host, port: n.port, username: 'lmtp', password: PASSWORD })
      try {
        const info = await redis.info('cpu')
        const field = (name: string): number => Number(new RegExp(`${name}:([\\d.]+)`).exec(info)?.[1] ?? 0)
        return (field('used_cpu_sys') + field('used_cpu_user')) * 1e6
      } finally {
        redis.disconnect()
      }
    }),
  )
}

interface Row {
  shards: number
  rate: number
  shares: number[]
  redisUsPerMessage: number
}

async function measure(cluster: RedisCluster, hookPort: number, shards: number): Promise<Row> {
  const routes = join(work, 'routes.yaml')
  writeFileSync(routes, `routes:\n  - { id: bench, match: "*@example.com", url: "http://127.0.0.1:${hookPort}/hook" }\n`)
  const { child, match } = await startChild(
    ['--import', 'tsx', 'src/main.ts'],
    {
      ...cluster.env,
      QUEUE_SHARDS: String(shards),
      REDIS_PREFIX: `bench-${randomBytes(4).toString('hex')}`,
      ROUTES_FILE: routes,
      LMTP_HOST: '127.0.0.1',
      LMTP_PORT: '0',
      LMTP_DOMAINS: 'example.com',
      ADMIN_HOST: '127.0.0.1',
      ADMIN_PORT: '0',
      ADMIN_ALLOW_NO_AUTH: 'true',
      LOG_LEVEL: 'info',
    },
    /"lmtpPort":(\d+),.*"adminPort":(\d+)/,
  )
  const port = Number(match[1])
  const warmUp = Math.min(500, MESSAGES)
  smtpSource(port, warmUp)
  const before = await cpuOfNodes(cluster)
  const rate = smtpSource(port, MESSAGES)
  const after = await cpuOfNodes(cluster)
  // Every recipient must have been delivered, or the figures are about failures.
  const metrics = await (await fetch(`http://127.0.0.1:${match[2]}/metrics`)).text()
  // summed over every series of class 2xx, whatever its other labels (route)
  const delivered = [...metrics.matchAll(/^lmtp_webhook_lmtp_recipient_replies_total\{[^}]*class="2xx"[^}]*\} (\d+)$/gm)].reduce((n, m) => n + Number(m[1]), 0)
  if (delivered !== (warmUp + MESSAGES) * RCPTS) throw new Error(`QUEUE_SHARDS=${shards}: ${delivered} of ${(warmUp + MESSAGES) * RCPTS} recipients got 2xx`)
  child.kill('SIGTERM')
  await once(child, 'exit')
  const used = after.map((a, i) => a - before[i]!)
  const total = used.reduce((x, y) => x + y, 0)
  return { shards, rate, shares: used.map((u) => u / total), redisUsPerMessage: total / MESSAGES }
}

async function main(): Promise<void> {
  const cluster = await redisCluster({ teardown: (fn) => teardowns.push(fn) }, PASSWORD, 3)
  const { match: hook } = await startChild(['--import', 'tsx', 'bench/e2e/receiver.ts'], {}, /^(\d+)\n/)
  const rows: Row[] = []
  for (const shards of [1, 3]) rows.push(await measure(cluster, Number(hook[1]), shards))
  process.stdout.write(`\n  ${MESSAGES} messages x ${RCPTS} recipients, 10 KB, ${SESSIONS} sessions, defer mode, 3 primaries\n`)
  process.stdout.write('  | QUEUE_SHARDS | msgs/s | share of Redis CPU per primary | busiest | Redis CPU per message (us) |\n')
  process.stdout.write('  | --- | --- | --- | --- | --- |\n')
  for (const r of rows) {
    const shares = r.shares.map((s) => `${(s * 100).toFixed(0)} %`).join(' / ')
    process.stdout.write(
      `  | ${r.shards} | ${r.rate.toFixed(0)} | ${shares} | ${(Math.max(...r.shares) * 100).toFixed(0)} % | ${r.redisUsPerMessage.toFixed(0)} |\n`,
    )
  }
  const sharded = rows[1]!
  const ok = Math.max(...sharded.shares) <= 0.5
  process.stdout.write(`  target: with 3 shards the busiest primary does at most 50 % of the work: ${ok ? 'met' : 'MISSED'}\n`)
  if (!ok) process.exitCode = 1
}

main()
  .catch((err: unknown) => {
    console.error(err)
    process.exitCode = 1
  })
  .finally(() => cleanup())
