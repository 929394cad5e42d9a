/**
 * End-to-end benchmark: Postfix's `smtp-source -L -d` (10 KB messages, 10 and 50 sessions, 1 and
 * 5 recipients) → LMTP → webhook receiver answering 200, for this service (defer, accept and async
 * mode; listener + worker processes) and two peers measured in the same run: the straightforward
 * BullMQ design (`e2e/bullmq-peer.ts`) and a parsing forwarder with no queue
 * (`e2e/forwarder-peer.ts`). Every system gets a private redis-server. Prints msgs/s (async: the
 * sustained rate, until the receiver has every delivery), the ratios to both peers, latency from
 * the end of the data to the last reply at half the peak rate (p50/p99), CPU per message
 * (machine, service, Redis), the queue floor and the ceiling it sets, a Markdown table, and the
 * targets; exits non-zero naming each target missed.
 *
 * Environment: BENCH_MESSAGES (default 3000 per run), BENCH_RUNS (3), BENCH_LATENCY_SECONDS (5),
 * BENCH_SYSTEMS (comma list of defer, accept, async, split, bullmq, forwarder; default all; the
 * two peers always run), BENCH_SESSIONS (default 10,50), BENCH_RCPTS (default 1,5).
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, writeFileSync, existsSync, rmSync, statSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import { Children } from './e2e/children.js'

const list = (value: string | undefined, fallback: string): string[] =>
  (value ?? fallback)
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
const MESSAGES = Number(process.env.BENCH_MESSAGES ?? 3000)
const RUNS = Number(process.env.BENCH_RUNS ?? 3)
const LATENCY_SECONDS = Number(process.env.BENCH_LATENCY_SECONDS ?? 5)
const SYSTEMS = list(process.env.BENCH_SYSTEMS, 'defer,accept,async,split,bullmq,forwarder')
const RCPTS = list(process.env.BENCH_RCPTS, '1,5').map(Number)
const SESSIONS = list(process.env.BENCH_SESSIONS, '10,50').map(Number)
const SIZE = 10 * 1024
/** How long the receiver's count may stand still before the missing deliveries count as lost. */
const STALL_MS = 15_000
const ROOT = new URL('..', import.meta.url).pathname
const SMTP_SOURCE = existsSync('/usr/sbin/smtp-source') ? '/usr/sbin/smtp-source' : 'smtp-source'
const work = mkdtempSync(join(tmpdir(), 'lmtp-webhook-bench-'))
const children = new Children(ROOT)

function cleanup(): void {
  children.killAll()
  rmSync(work, { recursive: true, force: true })
}
process.on('exit', cleanup)
process.on('SIGINT', () => process.exit(130))

const startChild = (command: string, args: string[], env: Record<string, string>, ready: RegExp) => children.start(command, args, env, ready)

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  child.kill('SIGTERM')
  await Promise.race([once(child, 'exit'), sleep(10_000).then(() => child.kill('SIGKILL'))])
}

function ensureBuilt(): void {
  const main = join(ROOT, 'dist/main.js')
  const newest = Math.max(
    ...execFileSync('find', [join(ROOT, 'src'), '-name', '*.ts', '-newer', existsSync(main) ? main : join(ROOT, 'package.json')], { encoding: 'utf8' })
      .split('\n')
      .filter(Boolean)
      .map((f) => statSync(f).mtimeMs),
    0,
  )
  if (!existsSync(main) || newest > 0) execFileSync('npm', ['run', 'build', '--silent'], { cwd: ROOT, stdio: 'inherit' })
}

/** Runs smtp-source to its end; returns how long it took, in ms. */
function smtpSource(port: number, messages: number, sessions: number, rcpts: number): number {
  const args = [
    '-L',
    '-d',
    '-s',
    String(sessions),
    '-m',
    String(messages),
    '-l',
    String(SIZE),
    '-r',
    String(rcpts),
    '-f',
    'sender@bench.test',
    '-t',
    'user@example.com',
    `127.0.0.1:${port}`,
  ]
  const t0 = performance.now()
  execFileSync(SMTP_SOURCE, args, { stdio: ['ignore', 'ignore', 'inherit'], timeout: 600_000 })
  return performance.now() - t0
}

interface Latency {
  p50: number
  p99: number
  sent: number
  failed: number
}

async function paced(port: number, rate: number, sessions: number, rcpts: number): Promise<Latency> {
  const out = execFileSync(
    process.execPath,
    ['--import', 'tsx', 'bench/e2e/paced-client.ts', String(port), String(rate), String(sessions), String(rcpts), String(LATENCY_SECONDS)],
    { cwd: ROOT, encoding: 'utf8', timeout: 600_000 },
  )
  const result = JSON.parse(out) as { sent: number; failed: number; latenciesMs: number[] }
  const sorted = result.latenciesMs.sort((a, b) => a - b)
  const at = (q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN
  return { p50: at(0.5), p99: at(0.99), sent: result.sent, failed: result.failed }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

/** The webhook receiver's count of POSTs (`GET /count`). */
class Receiver {
  constructor(readonly port: number) {}
  get url(): string {
    return `http://127.0.0.1:${this.port}/hook`
  }
  async count(): Promise<number> {
    const res = await fetch(`http://127.0.0.1:${this.port}/count`)
    return Number(await res.text())
  }
  /**
   * Waits until the count reaches `target`, and returns how many are missing: none, or those
   * still missing when the count has not moved for `stallMs`.
   */
  async drained(target: number, stallMs = STALL_MS): Promise<number> {
    let last = await this.count()
    let since = performance.now()
    while (last < target) {
      await sleep(10)
      const now = await this.count()
      if (now !== last) {
        last = now
        since = performance.now()
      } else if (performance.now() - since > stallMs) break
    }
    return Math.max(0, target - last)
  }
}

/** A redis-server of the bench's own, on a unix socket in a temp dir. */
interface PrivateRedis {
  path: string
  url: string
  child: ChildProcess
  close(): void
}

async function privateRedis(durable: boolean): Promise<PrivateRedis> {
  const dir = mkdtempSync(join(work, 'redis-'))
  const path = join(dir, 'redis.sock')
  const persistence = durable ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no']
  const child = spawn('redis-server', ['--port', '0', '--unixsocket', path, '--save', '', '--dir', dir, ...persistence], { stdio: 'ignore' })
  children.all.push(child)
  for (let i = 0; i < 100 && !existsSync(path); i++) await sleep(50)
  if (!existsSync(path)) throw new Error('redis-server did not start')
  return {
    path,
    url: `unix://${path}`,
    child,
    close() {
      child.kill('SIGKILL')
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

interface Started {
  port: number
  child: ChildProcess
  /** The processes of the system under test (for their CPU time). */
  pids: number[]
  /** The socket of the Redis it uses, if any (for Redis's CPU time). */
  redisPath?: string
  after(): Promise<void>
}

interface System {
  /** Its name in BENCH_SYSTEMS. */
  key: string
  label: string
  /** Its rate is the sustained one: until the receiver has every delivery, not until the last reply. */
  sustained?: boolean
  start(): Promise<Started>
}

/** The service refused the route's mode at start: an older build. */
class Unsupported extends Error {}

/** CPU time, in microseconds, of the whole machine (busy, all cores), of processes and of a Redis. */
const TICK_US = 1e6 / 100 // USER_HZ
function machineBusyUs(): number {
  const [user, nice, system, , , irq, softirq] = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.split(/\s+/).slice(1).map(Number) as number[]
  return (user! + nice! + system! + irq! + softirq!) * TICK_US
}
function processCpuUs(pids: number[]): number {
  let total = 0
  for (const pid of pids) {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ') // from field 3 (state) on
    total += (Number(fields[11]) + Number(fields[12])) * TICK_US // utime, stime
  }
  return total
}
async function redisCpuUs(client: Redis | null): Promise<number> {
  if (!client) return 0
  const info = await client.info('cpu')
  return [...info.matchAll(/^used_cpu_(?:sys|user):([\d.]+)/gm)].reduce((sum, m) => sum + Number(m[1]) * 1e6, 0)
}

interface Cpu {
  /** Per message, in microseconds. */
  machine: number
  service: number
  redis: number
}

/** Runs `work` and returns what it consumed, per unit of `units`. */
async function cpuOf<T>(pids: number[], redis: Redis | null, units: number, work: () => T | Promise<T>): Promise<{ value: T; cpu: Cpu }> {
  const m0 = machineBusyUs()
  const p0 = processCpuUs(pids)
  const r0 = await redisCpuUs(redis)
  const value = await work()
  const cpu = { machine: (machineBusyUs() - m0) / units, service: (processCpuUs(pids) - p0) / units, redis: ((await redisCpuUs(redis)) - r0) / units }
  return { value, cpu }
}

function serviceSystem(key: string, label: string, mode: 'defer' | 'accept' | 'async', webhookUrl: string, split = false): System {
  return {
    key,
    label,
    sustained: mode === 'async',
    async start() {
      const routes = join(work, `routes-${key}.yaml`)
      writeFileSync(
        routes,
        `routes:\n  - { id: bench, match: "*@example.com", url: "${webhookUrl}", mode: ${mode}, secret: "whsec_${randomBytes(32).toString('base64')}" }\n`,
      )
      // defer on a Redis that keeps nothing; accept and async on one that fsyncs every write
      const redis = await privateRedis(mode !== 'defer')
      const env = {
        ROUTES_FILE: routes,
        REDIS_URL: redis.url,
        REDIS_PREFIX: `bench-${randomBytes(4).toString('hex')}`,
        LMTP_HOST: '127.0.0.1',
        LMTP_PORT: '0',
        ADMIN_PORT: 'off',
        LMTP_DOMAINS: 'example.com',
        LOG_LEVEL: 'info',
        LMTP_MAX_CONNECTIONS: '2000',
      }
      let worker: { child: ChildProcess } | null = null
      try {
        // split: one listener process and one worker process (ROLE), so the service can use two cores
        if (split) worker = await startChild(process.execPath, ['dist/main.js'], { ...env, ROLE: 'worker', LMTP_PORT: 'off' }, /lmtp-webhook started/)
        const { child, match } = await startChild(process.execPath, ['dist/main.js'], { ...env, ROLE: split ? 'listener' : 'all' }, /"lmtpPort":(\d+)/)
        return {
          port: Number(match[1]),
          child,
          pids: [child.pid!, ...(worker ? [worker.child.pid!] : [])],
          redisPath: redis.path,
          async after() {
            if (worker) await stop(worker.child)
            redis.close()
          },
        }
      } catch (err) {
        if (worker) await stop(worker.child)
        redis.close()
        const message = (err as Error).message
        if (/\bmode\b[^\n]*\basync\b/.test(message) && mode === 'async') throw new Unsupported(message)
        throw err
      }
    },
  }
}

function forwarderSystem(webhookUrl: string): System {
  return {
    key: 'forwarder',
    label: 'forwarder peer (no queue)',
    async start() {
      const { child, match } = await startChild(process.execPath, ['--import', 'tsx', 'bench/e2e/forwarder-peer.ts'], { WEBHOOK_URL: webhookUrl }, /^(\d+)\n/m)
      return { port: Number(match[1]), child, pids: [child.pid!], after: async () => {} }
    },
  }
}

function bullmqSystem(webhookUrl: string): System {
  return {
    key: 'bullmq',
    label: 'BullMQ peer',
    async start() {
      const redis = await privateRedis(false)
      try {
        const { child, match } = await startChild(
          process.execPath,
          ['--import', 'tsx', 'bench/e2e/bullmq-peer.ts'],
          { WEBHOOK_URL: webhookUrl, REDIS_PATH: redis.path, QUEUE: `bench-bullmq-${randomBytes(4).toString('hex')}` },
          /^(\d+)\n/m,
        )
        return {
          port: Number(match[1]),
          child,
          pids: [child.pid!],
          redisPath: redis.path,
          async after() {
            redis.close()
          },
        }
      } catch (err) {
        redis.close()
        throw err
      }
    },
  }
}

interface Row {
  key: string
  label: string
  sessions: number
  rcpts: number
  /** msgs/s: until the last reply, or for a sustained system until the last delivery. */
  rate: number
  rates: number[]
  /** msgs/s until the last reply and until the last delivery (medians). */
  replyRate: number
  drainedRate: number
  latency: Latency
  cpu: Cpu
  /** Deliveries the receiver never got. */
  lost: number
}

async function measure(system: System, receiver: Receiver, sessions: number, rcpts: number): Promise<Row> {
  const { port, child, pids, redisPath, after } = await system.start()
  const redis = redisPath ? new Redis({ path: redisPath }) : null
  try {
    let lost = 0
    const warm = Math.min(500, MESSAGES)
    let base = await receiver.count()
    smtpSource(port, warm, sessions, rcpts)
    lost += await receiver.drained(base + warm * rcpts)
    const replyRates: number[] = []
    const drainedRates: number[] = []
    // CPU time over the runs and the deliveries they queued, every one of them
    const { cpu } = await cpuOf(pids, redis, MESSAGES * RUNS, async () => {
      for (let i = 0; i < RUNS; i++) {
        base = await receiver.count()
        const t0 = performance.now()
        replyRates.push((MESSAGES * 1000) / smtpSource(port, MESSAGES, sessions, rcpts))
        lost += await receiver.drained(base + MESSAGES * rcpts)
        drainedRates.push((MESSAGES * 1000) / (performance.now() - t0))
      }
    })
    const rates = system.sustained ? drainedRates : replyRates
    const rate = median(rates)
    base = await receiver.count()
    const latency = await paced(port, Math.max(1, Math.round(rate / 2)), sessions, rcpts)
    await receiver.drained(base + latency.sent * rcpts, 5_000) // let the queue empty before the next system
    const row: Row = {
      key: system.key,
      label: system.label,
      sessions,
      rcpts,
      rate,
      rates,
      replyRate: median(replyRates),
      drainedRate: median(drainedRates),
      latency,
      cpu,
      lost,
    }
    const rateText = system.sustained ? `${rate.toFixed(0)} msgs/s sustained (replies at ${row.replyRate.toFixed(0)} msgs/s)` : `${rate.toFixed(0)} msgs/s`
    process.stdout.write(
      `  ${system.label}, ${sessions} sessions, ${rcpts} rcpt: ${rateText} (runs ${rates.map((r) => r.toFixed(0)).join(', ')}), CPU per message ${cpu.machine.toFixed(0)} us machine = ${cpu.service.toFixed(0)} service + ${cpu.redis.toFixed(0)} Redis + the rest, at ${Math.round(rate / 2)} msgs/s p50 ${latency.p50.toFixed(1)} ms p99 ${latency.p99.toFixed(1)} ms${latency.failed ? `, ${latency.failed} failed` : ''}${lost ? `, ${lost} deliveries lost` : ''}\n`,
    )
    return row
  } finally {
    redis?.disconnect()
    await stop(child)
    await after()
  }
}

/**
 * BullMQ alone, in the service's flow (`e2e/queue-floor.ts`), on a private Redis: the machine's
 * CPU time per job, which one job per recipient adds to whatever else a message costs.
 */
async function queueFloor(): Promise<Cpu> {
  const redisServer = await privateRedis(false)
  const jobs = Math.max(2000, MESSAGES)
  const { child } = await startChild(
    process.execPath,
    ['--import', 'tsx', 'bench/e2e/queue-floor.ts', redisServer.path, `bench-floor-${randomBytes(4).toString('hex')}`, String(jobs), '10'],
    {},
    /^warm\n/m,
  )
  const redis = new Redis({ path: redisServer.path })
  try {
    let out = ''
    const { cpu } = await cpuOf([child.pid!], redis, jobs, async () => {
      const done = new Promise<void>((resolve) => {
        child.stdout!.on('data', (c: Buffer) => {
          out += c.toString()
          if (out.includes('}\n')) resolve()
        })
      })
      child.stdin!.write('go\n')
      await done
    })
    const reported = JSON.parse(out.slice(out.indexOf('{'))) as { jobs: number; cpuUs: number }
    return { machine: cpu.machine, service: reported.cpuUs / reported.jobs, redis: cpu.redis }
  } finally {
    redis.disconnect()
    await Promise.race([once(child, 'exit'), sleep(10_000)])
    await stop(child)
    redisServer.close()
  }
}

interface Target {
  text: string
  /** What was measured against it, or null when it passes. */
  miss: string | null
}

function targets(rows: Row[]): Target[] {
  const find = (key: string, sessions: number, rcpts: number): Row | undefined =>
    rows.find((r) => r.key === key && r.sessions === sessions && r.rcpts === rcpts)
  const out: Target[] = []
  const ratio = (what: string, a: Row | undefined, b: Row | undefined, min: number): void => {
    if (!a || !b) return
    const x = a.rate / b.rate
    out.push({ text: `${what} >= ${min}x: ${x.toFixed(2)}x`, miss: x < min ? `${what}: ${x.toFixed(2)}x < ${min}x` : null })
  }
  for (const sessions of SESSIONS) {
    for (const rcpts of RCPTS) {
      const at = `${sessions} sessions, ${rcpts} rcpt`
      const defer = find('defer', sessions, rcpts)
      const forwarder = find('forwarder', sessions, rcpts)
      ratio(`defer / BullMQ peer, ${at}`, defer, find('bullmq', sessions, rcpts), 1.5)
      ratio(`defer / forwarder, ${at}`, defer, forwarder, rcpts === 1 ? 0.75 : 0.6)
      ratio(`accept / defer, ${at}`, find('accept', sessions, rcpts), defer, 0.7)
      ratio(`async sustained / defer, ${at}`, find('async', sessions, rcpts), defer, 1.0)
      if (defer && forwarder) {
        const max = 1.5 * forwarder.latency.p50
        out.push({
          text: `defer p50 <= 1.5x forwarder's (${max.toFixed(1)} ms), ${at}: ${defer.latency.p50.toFixed(1)} ms`,
          miss:
            defer.latency.p50 > max ? `defer p50, ${at}: ${defer.latency.p50.toFixed(1)} ms > 1.5x forwarder's ${forwarder.latency.p50.toFixed(1)} ms` : null,
        })
      }
      if (defer) {
        out.push({
          text: `defer p99 <= 10 ms, ${at}: ${defer.latency.p99.toFixed(1)} ms`,
          miss: defer.latency.p99 > 10 ? `defer p99, ${at}: ${defer.latency.p99.toFixed(1)} ms > 10 ms` : null,
        })
      }
    }
  }
  for (const r of rows) {
    if (r.lost > 0)
      out.push({
        text: `${r.label}, ${r.sessions} sessions, ${r.rcpts} rcpt: every delivery arrives`,
        miss: `${r.label}, ${r.sessions} sessions, ${r.rcpts} rcpt: ${r.lost} deliveries lost`,
      })
    if (r.latency.failed > 0 && r.key !== 'forwarder' && r.key !== 'bullmq') {
      out.push({
        text: `${r.label}: every paced message 250`,
        miss: `${r.label}, ${r.sessions} sessions, ${r.rcpts} rcpt: ${r.latency.failed} paced messages not 250`,
      })
    }
  }
  return out
}

async function main(): Promise<void> {
  ensureBuilt()
  const started = await startChild(process.execPath, ['--import', 'tsx', 'bench/e2e/receiver.ts'], {}, /^(\d+)\n/m)
  const receiver = new Receiver(Number(started.match[1]))
  const all: Record<string, System> = {
    defer: serviceSystem('defer', 'lmtp-webhook defer', 'defer', receiver.url),
    accept: serviceSystem('accept', 'lmtp-webhook accept', 'accept', receiver.url),
    async: serviceSystem('async', 'lmtp-webhook async (sustained)', 'async', receiver.url),
    split: serviceSystem('split', 'lmtp-webhook defer, listener + worker processes', 'defer', receiver.url, true),
    bullmq: bullmqSystem(receiver.url),
    forwarder: forwarderSystem(receiver.url),
  }
  const unknown = SYSTEMS.filter((s) => !(s in all))
  if (unknown.length > 0) throw new Error(`BENCH_SYSTEMS: unknown ${unknown.join(', ')} (known: ${Object.keys(all).join(', ')})`)
  for (const peer of ['bullmq', 'forwarder']) if (!SYSTEMS.includes(peer)) SYSTEMS.push(peer) // the ratios need them
  let systems = SYSTEMS.map((s) => all[s]!)
  process.stdout.write(
    `end to end: smtp-source -L -d, ${SIZE / 1024} KB messages, ${SESSIONS.join(' and ')} sessions, ${RCPTS.join(' and ')} rcpts, ${MESSAGES} messages x ${RUNS} runs (median)\n`,
  )
  const rows: Row[] = []
  const unsupported: string[] = []
  for (const sessions of SESSIONS) {
    for (const rcpts of RCPTS) {
      for (const s of systems) {
        try {
          rows.push(await measure(s, receiver, sessions, rcpts))
        } catch (err) {
          if (!(err instanceof Unsupported)) throw err
          process.stdout.write(`  ${s.key}: not supported by this build\n`)
          unsupported.push(s.key)
          systems = systems.filter((x) => x !== s)
        }
      }
    }
  }
  await stop(started.child)

  const floor = await queueFloor()
  process.stdout.write(
    `  BullMQ alone (add, worker with a no-op processor, finish; the service's flow): ${floor.machine.toFixed(0)} us of machine CPU per job = ${floor.service.toFixed(0)} Node + ${floor.redis.toFixed(0)} Redis + the rest\n`,
  )

  const find = (key: string, sessions: number, rcpts: number): Row | undefined =>
    rows.find((r) => r.key === key && r.sessions === sessions && r.rcpts === rcpts)
  const vs = (r: Row, key: string): string => {
    const peer = find(key, r.sessions, r.rcpts)
    return peer ? `${(r.rate / peer.rate).toFixed(2)}x` : '-'
  }
  process.stdout.write(
    '\n| system | sessions | rcpts | msgs/s | vs BullMQ peer | vs forwarder | p50 ms | p99 ms | CPU us/msg: machine | service | Redis |\n' +
      '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n',
  )
  for (const r of rows) {
    process.stdout.write(
      `| ${r.label} | ${r.sessions} | ${r.rcpts} | ${r.rate.toFixed(0)} | ${vs(r, 'bullmq')} | ${vs(r, 'forwarder')} | ${r.latency.p50.toFixed(1)} | ${r.latency.p99.toFixed(1)} | ${r.cpu.machine.toFixed(0)} | ${r.cpu.service.toFixed(0)} | ${r.cpu.redis.toFixed(0)} |\n`,
    )
  }
  process.stdout.write('\np50/p99: from the end of the data to the last reply, at half the peak rate; async: msgs/s until the receiver has every delivery\n')
  // On a machine whose cores are all busy, messages per second follow the machine's CPU time per
  // message. One BullMQ job per recipient adds at least the floor per recipient to what the
  // forwarder spends, so even a service whose every other part cost what the forwarder's does
  // could not do better than this.
  process.stdout.write('\nceiling from the queue floor alone (forwarder machine CPU / (that + rcpts x floor)):')
  for (const sessions of SESSIONS) {
    for (const rcpts of RCPTS) {
      const forwarder = find('forwarder', sessions, rcpts)
      if (forwarder)
        process.stdout.write(` ${sessions} sessions ${rcpts} rcpt ${(forwarder.cpu.machine / (forwarder.cpu.machine + rcpts * floor.machine)).toFixed(2)}x;`)
    }
  }
  process.stdout.write('\n\ntargets:\n')
  const results = targets(rows)
  for (const t of results) process.stdout.write(`  ${t.miss ? 'MISSED' : 'met   '} ${t.text}\n`)
  for (const key of unsupported) process.stdout.write(`  ${key}: not supported by this build, its targets skipped\n`)
  const missed = results.filter((t) => t.miss).map((t) => t.miss!)
  if (missed.length > 0) {
    process.stdout.write(`missed: ${missed.join('; ')}\n`)
    process.exitCode = 1
  }
}

main().then(
  () => process.exit(process.exitCode ?? 0),
  (err: unknown) => {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`)
    process.exit(1)
  },
)
