/**
 * End-to-end benchmark: Postfix's `smtp-source -L -d` (10 KB messages, 10 sessions) → LMTP →
 * webhook receiver answering 200, for this service in defer mode and in accept mode, and for a
 * naive peer (nodemailer smtp-server + mailparser + undici POST per recipient, no queue, no
 * durability) measured in the same run. Prints msgs/s, latency from the end of the data to the
 * last reply at half the peak rate (p50/p99), and the ratios.
 *
 * Environment: BENCH_MESSAGES (default 3000 per run), BENCH_RUNS (default 3), BENCH_LATENCY_SECONDS (5),
 * BENCH_SYSTEMS (comma list of defer, accept, split, naive; default all), BENCH_RCPTS (default 1,5).
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, writeFileSync, existsSync, rmSync, statSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'

const MESSAGES = Number(process.env.BENCH_MESSAGES ?? 3000)
const RUNS = Number(process.env.BENCH_RUNS ?? 3)
const LATENCY_SECONDS = Number(process.env.BENCH_LATENCY_SECONDS ?? 5)
const SYSTEMS = (process.env.BENCH_SYSTEMS ?? 'defer,accept,split,naive').split(',')
const RCPTS = (process.env.BENCH_RCPTS ?? '1,5').split(',').map(Number)
const SESSIONS = 10
const SIZE = 10 * 1024
const ROOT = new URL('..', import.meta.url).pathname
const work = mkdtempSync(join(tmpdir(), 'lmtp-webhook-bench-'))
const children: ChildProcess[] = []

function cleanup(): void {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL')
  rmSync(work, { recursive: true, force: true })
}
process.on('exit', cleanup)
process.on('SIGINT', () => process.exit(130))

/** Starts a child and resolves with the first line matching `ready` on its stdout. */
async function startChild(
  command: string,
  args: string[],
  env: Record<string, string>,
  ready: RegExp,
): Promise<{ child: ChildProcess; match: RegExpMatchArray }> {
  const child = spawn(command, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] })
  children.push(child)
  let out = ''
  let err = ''
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()))
  return new Promise((resolve, reject) => {
    const onData = (c: Buffer): void => {
      out += c.toString()
      const m = ready.exec(out)
      if (m) {
        // keep draining so the child never blocks on a full pipe
        child.stdout!.off('data', onData)
        child.stdout!.on('data', () => {})
        resolve({ child, match: m })
      }
    }
    child.stdout!.on('data', onData)
    child.once('exit', (code) => reject(new Error(`${command} ${args.join(' ')} exited with ${code}: ${err}${out}`)))
  })
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return
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

function smtpSource(port: number, messages: number, rcpts: number): number {
  const args = [
    '-L',
    '-d',
    '-s',
    String(SESSIONS),
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
  execFileSync('smtp-source', args, { stdio: ['ignore', 'ignore', 'inherit'], timeout: 600_000 })
  return (messages * 1000) / (performance.now() - t0)
}

interface Latency {
  p50: number
  p99: number
  sent: number
  failed: number
}

async function paced(port: number, rate: number, rcpts: number): Promise<Latency> {
  const out = execFileSync(
    process.execPath,
    ['--import', 'tsx', 'bench/e2e/paced-client.ts', String(port), String(rate), String(SESSIONS), String(rcpts), String(LATENCY_SECONDS)],
    { cwd: ROOT, encoding: 'utf8', timeout: 600_000 },
  )
  const result = JSON.parse(out) as { sent: number; failed: number; latenciesMs: number[] }
  const sorted = result.latenciesMs.sort((a, b) => a - b)
  const at = (q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN
  return { p50: at(0.5), p99: at(0.99), sent: result.sent, failed: result.failed }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

interface Started {
  port: number
  child: ChildProcess
  /** The processes of the system under test (for their CPU time). */
  pids: number[]
  /** The Redis it uses, if any (for Redis's CPU time). */
  redisUrl?: string
  after?: () => Promise<void>
}

interface System {
  name: string
  start(): Promise<Started>
}

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

async function privateAofRedis(): Promise<{ url: string; child: ChildProcess }> {
  const dir = mkdtempSync(join(work, 'redis-'))
  const sock = join(dir, 'redis.sock')
  const child = spawn('redis-server', ['--port', '0', '--unixsocket', sock, '--save', '', '--dir', dir, '--appendonly', 'yes', '--appendfsync', 'always'], {
    stdio: 'ignore',
  })
  children.push(child)
  for (let i = 0; i < 100 && !existsSync(sock); i++) await sleep(50)
  return { url: `unix://${sock}`, child }
}

function serviceSystem(name: string, mode: 'defer' | 'accept', webhookUrl: string, split = false): System {
  return {
    name,
    async start() {
      const routes = join(work, `routes-${mode}.yaml`)
      writeFileSync(
        routes,
        `routes:\n  - { id: bench, match: "*@example.com", url: "${webhookUrl}", mode: ${mode}, secret: "whsec_${randomBytes(32).toString('base64')}" }\n`,
      )
      const redis = mode === 'accept' ? await privateAofRedis() : null
      const prefix = `bench-${randomBytes(4).toString('hex')}`
      const redisUrl = redis?.url ?? 'redis://127.0.0.1:6379'
      const env = {
        ROUTES_FILE: routes,
        REDIS_URL: redisUrl,
        REDIS_PREFIX: prefix,
        LMTP_HOST: '127.0.0.1',
        LMTP_PORT: '0',
        ADMIN_PORT: 'off',
        LMTP_DOMAINS: 'example.com',
        LOG_LEVEL: 'info',
        LMTP_MAX_CONNECTIONS: '2000',
      }
      // split: one listener process and one worker process (ROLE), so the service can use two cores
      const worker = split ? await startChild(process.execPath, ['dist/main.js'], { ...env, ROLE: 'worker', LMTP_PORT: 'off' }, /lmtp-webhook started/) : null
      const { child, match } = await startChild(process.execPath, ['dist/main.js'], { ...env, ROLE: split ? 'listener' : 'all' }, /"lmtpPort":(\d+)/)
      return {
        port: Number(match[1]),
        child,
        pids: [child.pid!, ...(worker ? [worker.child.pid!] : [])],
        redisUrl,
        async after() {
          if (worker) await stop(worker.child)
          if (redis) {
            redis.child.kill('SIGKILL')
            return
          }
          const client = new Redis(redisUrl)
          const keys = await client.keys(`${prefix}:*`)
          if (keys.length > 0) await client.del(...keys)
          await client.quit()
        },
      }
    },
  }
}

function naiveSystem(webhookUrl: string): System {
  return {
    name: 'naive peer (smtp-server + undici)',
    async start() {
      const { child, match } = await startChild(process.execPath, ['--import', 'tsx', 'bench/e2e/naive-peer.ts'], { WEBHOOK_URL: webhookUrl }, /^(\d+)\n/m)
      return { port: Number(match[1]), child, pids: [child.pid!] }
    },
  }
}

interface Row {
  system: string
  rcpts: number
  rate: number
  latency: Latency
  cpu: Cpu
}

async function measure(system: System, rcpts: number): Promise<Row> {
  const { port, child, pids, redisUrl, after } = await system.start()
  const redis = redisUrl ? new Redis(redisUrl) : null
  try {
    smtpSource(port, Math.min(500, MESSAGES), rcpts) // warm-up
    const rates: number[] = []
    const { cpu } = await cpuOf(pids, redis, MESSAGES * RUNS, () => {
      for (let i = 0; i < RUNS; i++) rates.push(smtpSource(port, MESSAGES, rcpts))
    })
    const rate = median(rates)
    const latency = await paced(port, Math.max(1, Math.round(rate / 2)), rcpts)
    process.stdout.write(
      `  ${system.name}, ${rcpts} rcpt: ${rate.toFixed(0)} msgs/s (runs ${rates.map((r) => r.toFixed(0)).join(', ')}), CPU per message ${cpu.machine.toFixed(0)} us machine = ${cpu.service.toFixed(0)} service + ${cpu.redis.toFixed(0)} Redis + the rest, at ${Math.round(rate / 2)} msgs/s p50 ${latency.p50.toFixed(1)} ms p99 ${latency.p99.toFixed(1)} ms${latency.failed ? `, ${latency.failed} failed` : ''}\n`,
    )
    return { system: system.name, rcpts, rate, latency, cpu }
  } finally {
    redis?.disconnect()
    await stop(child)
    await after?.()
  }
}

/**
 * BullMQ alone, in the service's flow (`e2e/queue-floor.ts`): the machine's CPU time per job, which
 * one job per recipient adds to whatever else a message costs.
 */
async function queueFloor(): Promise<Cpu> {
  const url = 'redis://127.0.0.1:6379'
  const jobs = Math.max(2000, MESSAGES)
  const { child } = await startChild(
    process.execPath,
    ['--import', 'tsx', 'bench/e2e/queue-floor.ts', url, `bench-floor-${randomBytes(4).toString('hex')}`, String(jobs), String(SESSIONS)],
    {},
    /^warm\n/m,
  )
  const redis = new Redis(url)
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
  }
}

async function main(): Promise<void> {
  ensureBuilt()
  const receiver = await startChild(process.execPath, ['--import', 'tsx', 'bench/e2e/receiver.ts'], {}, /^(\d+)\n/m)
  const webhookUrl = `http://127.0.0.1:${receiver.match[1]}/hook`
  const all: Record<string, System> = {
    defer: serviceSystem('lmtp-webhook defer', 'defer', webhookUrl),
    accept: serviceSystem('lmtp-webhook accept', 'accept', webhookUrl),
    split: serviceSystem('lmtp-webhook defer, listener + worker processes', 'defer', webhookUrl, true),
    naive: naiveSystem(webhookUrl),
  }
  const unknown = SYSTEMS.filter((s) => !(s in all))
  if (unknown.length > 0) throw new Error(`BENCH_SYSTEMS: unknown ${unknown.join(', ')} (known: ${Object.keys(all).join(', ')})`)
  if (!SYSTEMS.includes('naive')) SYSTEMS.push('naive') // the ratios need it
  const systems = SYSTEMS.map((s) => all[s]!)
  process.stdout.write(`end to end: smtp-source -L -d, ${SIZE / 1024} KB messages, ${SESSIONS} sessions, ${MESSAGES} messages x ${RUNS} runs (median)\n`)
  const rows: Row[] = []
  for (const rcpts of RCPTS) for (const s of systems) rows.push(await measure(s, rcpts))
  await stop(receiver.child)

  const floor = await queueFloor()
  process.stdout.write(
    `  BullMQ alone (add, worker with a no-op processor, finish; the service's flow): ${floor.machine.toFixed(0)} us of machine CPU per job = ${floor.service.toFixed(0)} Node + ${floor.redis.toFixed(0)} Redis + the rest\n`,
  )

  const find = (name: string, rcpts: number): Row => rows.find((r) => r.system.startsWith(name) && r.rcpts === rcpts)!
  process.stdout.write(
    '\n| system | rcpts | msgs/s | vs naive | p50 ms | p99 ms (at half peak) | CPU us/msg: machine | service | Redis |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n',
  )
  for (const r of rows) {
    const naive = find('naive', r.rcpts)
    process.stdout.write(
      `| ${r.system} | ${r.rcpts} | ${r.rate.toFixed(0)} | ${(r.rate / naive.rate).toFixed(2)}x | ${r.latency.p50.toFixed(1)} | ${r.latency.p99.toFixed(1)} | ${r.cpu.machine.toFixed(0)} | ${r.cpu.service.toFixed(0)} | ${r.cpu.redis.toFixed(0)} |\n`,
    )
  }
  // On a machine whose cores are all busy, messages per second follow the machine's CPU time per
  // message. One BullMQ job per recipient adds at least the floor per recipient to what the naive
  // peer spends, so even a service whose every other part cost what the peer's does could not do
  // better than this.
  process.stdout.write('\nceiling from the queue floor alone (naive peer machine CPU / (that + rcpts x floor)):')
  for (const rcpts of RCPTS) {
    const naive = find('naive', rcpts)
    process.stdout.write(` ${rcpts} rcpt ${(naive.cpu.machine / (naive.cpu.machine + rcpts * floor.machine)).toFixed(2)}x;`)
  }
  process.stdout.write('\n\ntargets: defer >= 0.75x naive, accept >= 1.0x naive, p99 <= 25 ms at half the peak rate\n')
  const missed: string[] = []
  for (const r of rows) {
    const target = r.system === 'lmtp-webhook defer' ? 0.75 : r.system === 'lmtp-webhook accept' ? 1.0 : null
    if (target === null) continue
    const ratio = r.rate / find('naive', r.rcpts).rate
    if (ratio < target) missed.push(`${r.system}, ${r.rcpts} rcpt: ${ratio.toFixed(2)}x < ${target}x`)
    if (r.latency.p99 > 25) missed.push(`${r.system}, ${r.rcpts} rcpt: p99 ${r.latency.p99.toFixed(1)} ms > 25 ms`)
  }
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
