/**
 * LMTP throughput and memory, against peers measured in the same run.
 *
 * Throughput: Postfix's smtp-source drives the same load (`-L -d`, 10 sessions, 10 KB messages)
 * against three discarding LMTP servers, each in its own process: ours (bench/servers/ours.ts),
 * Postfix's smtp-sink -L, and nodemailer's smtp-server in LMTP mode. Each server is warmed up, then
 * the runs go round the servers three times and the median is kept; once with 1 recipient per
 * message and once with 5. Prints msgs/s and the ratios ours/smtp-sink and ours/smtp-server.
 *
 * TLS: the pipelining client does STARTTLS at the start of each session (as Postfix does with
 * `lmtp_tls_security_level = encrypt`) against ours and smtp-server, both with STARTTLS and the
 * same certificate (made by openssl for the run); smtp-sink cannot do TLS, so the peer is
 * smtp-server. Prints the ratio ours/smtp-server, and ours with TLS against ours in cleartext.
 *
 * Memory: peak RSS (the kernel's VmHWM) of our server process while 200 concurrent sessions each
 * send one message, with 1 MB and with 10 MB messages: the peak must not follow the message size.
 *
 * Usage: npm run bench -- lmtp [--messages 20000] [--sessions 10] [--size 10240] [--repeat 3]
 *                              [--skip-pipelined] [--skip-tls] [--skip-memory] [--profile]
 * --profile writes a CPU profile of our server to .bench/ (open it in Chrome DevTools).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { execFileSync } from 'node:child_process'
import { accessSync, constants, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import net from 'node:net'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { createInterface } from 'node:readline'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const SMTP_SOURCE = '/usr/sbin/smtp-source'
const SMTP_SINK = '/usr/sbin/smtp-sink'

const { values: opts } = parseArgs({
  options: {
    messages: { type: 'string', default: '20000' },
    sessions: { type: 'string', default: '10' },
    size: { type: 'string', default: '10240' },
    repeat: { type: 'string', default: '3' },
    'skip-memory': { type: 'boolean', default: false },
    'skip-pipelined': { type: 'boolean', default: false },
    'skip-tls': { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
  },
})

function positive(name: string, raw: string): number {
  const n = Number(raw)
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name}: expected a positive integer, got ${JSON.stringify(raw)}`)
  return n
}

const MESSAGES = positive('messages', opts.messages)
const SESSIONS = positive('sessions', opts.sessions)
const SIZE = positive('size', opts.size)
const REPEAT = positive('repeat', opts.repeat)

function requireTool(path: string, install: string): void {
  try {
    accessSync(path, constants.X_OK)
  } catch {
    throw new Error(`${path} is required by this benchmark and is not installed: install ${install}`)
  }
}

interface Running {
  readonly name: string
  readonly port: number
  readonly process: ChildProcess
}

/** Where bench/servers/tsconfig.json compiles to: a cache folder that neither git nor the linter reads. */
const BUILD = join(ROOT, 'node_modules', '.cache', 'lmtp-bench', 'build')

/**
 * Compiles the server scripts (and the parts of src/ they import) with tsc into BUILD, so
 * that the servers run as plain JavaScript, as the service does in production, not through tsx.
 */
async function build(): Promise<void> {
  const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc')
  const child = spawn(process.execPath, [tsc, '-p', join(ROOT, 'bench', 'servers', 'tsconfig.json')], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] })
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve))
  if (code !== 0) throw new Error(`compiling bench/servers failed (tsc exited with ${code})`)
  // Under node_modules the project's package.json no longer applies: mark the output as ES modules.
  writeFileSync(join(BUILD, 'package.json'), '{ "type": "module" }\n')
}

/** Starts a compiled server script in its own process and waits for the `{"port":N}` line it prints. */
async function startNode(name: string, script: string, args: string[] = [], nodeArgs: string[] = []): Promise<Running> {
  const child = spawn(process.execPath, [...nodeArgs, join(BUILD, script.replace(/\.ts$/, '.js')), ...args], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  const lines = createInterface({ input: child.stdout! })
  const port = await new Promise<number>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`${name} exited with ${code} before listening`)))
    lines.once('line', (line) => resolve((JSON.parse(line) as { port: number }).port))
  })
  child.removeAllListeners('exit')
  return { name, port, process: child }
}

async function freePort(): Promise<number> {
  const probe = net.createServer()
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', () => resolve()))
  const port = (probe.address() as net.AddressInfo).port
  await new Promise<void>((resolve) => probe.close(() => resolve()))
  return port
}

async function waitForListener(port: number, child: ChildProcess, name: string): Promise<void> {
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${name} exited with ${child.exitCode}`)
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ port, host: '127.0.0.1' })
      s.once('connect', () => {
        s.destroy()
        resolve(true)
      })
      s.once('error', () => resolve(false))
    })
    if (ok) return
    await new Promise((r) => setTimeout(r, 20))
  }
}

/** Postfix's smtp-sink in LMTP mode; as root it must drop privileges with -u. */
async function startSmtpSink(): Promise<Running> {
  const port = await freePort()
  const args = ['-L', '-m', '1024']
  if (process.getuid?.() === 0) args.push('-u', 'nobody')
  const child = spawn(SMTP_SINK, [...args, `127.0.0.1:${port}`, '1024'], { stdio: ['ignore', 'ignore', 'inherit'] })
  await waitForListener(port, child, 'smtp-sink')
  return { name: 'smtp-sink', port, process: child }
}

async function stop(server: Running): Promise<void> {
  if (server.process.exitCode !== null || server.process.signalCode !== null) return
  const exited = new Promise((resolve) => server.process.once('exit', resolve))
  server.process.kill('SIGTERM')
  await exited
}

/** CPU time (user + system) a process has used so far, in seconds, from /proc. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // utime and stime are fields 14 and 15 of /proc/<pid>/stat, in clock ticks (100 per second on Linux).
  return (Number(fields[11]) + Number(fields[12])) / 100
}

/** One smtp-source run; resolves with messages per second (wall time of the whole run). */
async function load(port: number, messages: number, recipients: number, sessions = SESSIONS, size = SIZE, keep = true): Promise<number> {
  const args = [
    '-L',
    '-s',
    String(sessions),
    '-m',
    String(messages),
    '-r',
    String(recipients),
    '-l',
    String(size),
    '-M',
    'bench.test',
    '-f',
    'sender@example.org',
    '-t',
    'rcpt@example.com',
  ]
  if (keep) args.push('-d')
  const started = process.hrtime.bigint()
  const child = spawn(SMTP_SOURCE, [...args, `127.0.0.1:${port}`], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve))
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  if (code !== 0) throw new Error(`smtp-source exited with ${code}: ${stderr.trim()}`)
  return messages / seconds
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]!
}

/** Peak and current resident set of a process, in bytes, from /proc. */
function memory(pid: number): { peak: number; current: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kb = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024
  return { peak: kb('VmHWM'), current: kb('VmRSS') }
}

const fmt = (n: number, digits = 0): string => n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })
const mib = (n: number): string => `${fmt(n / (1024 * 1024), 1)} MiB`

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)))
  const line = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ')
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n')
}

/** Pipelined load from bench/servers/pipelining-client.ts; resolves with messages per second. */
async function pipelinedLoad(port: number, messages: number, recipients: number, starttls = false): Promise<number> {
  const script = join(BUILD, 'bench', 'servers', 'pipelining-client.js')
  const args = [script, String(port), String(SESSIONS), String(messages), String(recipients), String(SIZE), ...(starttls ? ['starttls'] : [])]
  const child = spawn(process.execPath, args, {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()))
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve))
  if (code !== 0) throw new Error(`pipelining client exited with ${code}: ${stderr.trim()}`)
  return Number(stdout.trim())
}

type Load = (port: number, messages: number, recipients: number) => Promise<number>

interface Sample {
  /** Messages per second over the whole run. */
  rate: number
  /** CPU time of the server process per message, in microseconds. */
  cpu: number
}

async function measure(server: Running, load: Load, messages: number, recipients: number): Promise<Sample> {
  const pid = server.process.pid!
  const before = cpuSeconds(pid)
  const rate = await load(server.port, messages, recipients)
  return { rate, cpu: ((cpuSeconds(pid) - before) / messages) * 1e6 }
}

/**
 * Runs one load against every server, for 1 and 5 recipients per message; prints the rates, the
 * ratios and the server CPU per message. Returns the ratios (ours/smtp-sink, ours/smtp-server).
 */
async function compare(servers: readonly Running[], title: string, load: Load): Promise<{ vsSink: number; vsPeer: number }[]> {
  const rows: string[][] = []
  const ratios: { vsSink: number; vsPeer: number }[] = []
  for (const recipients of [1, 5]) {
    const samples = new Map<string, Sample[]>(servers.map((s) => [s.name, []]))
    for (const s of servers) await load(s.port, Math.max(200, Math.floor(MESSAGES / 10)), recipients) // warm-up
    // Round-robin, so that a busy moment of the machine does not fall on one server only.
    for (let round = 0; round < REPEAT; round++) {
      for (const s of servers) samples.get(s.name)!.push(await measure(s, load, MESSAGES, recipients))
    }
    const rate = (name: string): number => median(samples.get(name)!.map((x) => x.rate))
    const cpu = (name: string): number => median(samples.get(name)!.map((x) => x.cpu))
    const r = { vsSink: rate('ours') / rate('smtp-sink'), vsPeer: rate('ours') / rate('smtp-server') }
    ratios.push(r)
    rows.push([
      String(recipients),
      fmt(rate('ours')),
      fmt(rate('smtp-sink')),
      fmt(rate('smtp-server')),
      fmt(r.vsSink, 2),
      fmt(r.vsPeer, 2),
      `${fmt(cpu('ours'))} / ${fmt(cpu('smtp-sink'))} / ${fmt(cpu('smtp-server'))}`,
    ])
    const runs = [...samples].map(([name, x]) => `${name} ${x.map((y) => fmt(y.rate)).join('/')}`).join('; ')
    process.stderr.write(`  ${title}, ${recipients} rcpt, msgs/s per run: ${runs}\n`)
  }
  console.log(`\n${title}: ${SESSIONS} sessions, ${fmt(SIZE)}-octet messages, ${fmt(MESSAGES)} messages, median of ${REPEAT}`)
  console.log(
    table(
      ['rcpt/msg', 'ours msg/s', 'smtp-sink msg/s', 'smtp-server msg/s', 'ours/smtp-sink', 'ours/smtp-server', 'server CPU us/msg (ours / sink / server)'],
      rows,
    ),
  )
  return ratios
}

async function throughput(): Promise<boolean> {
  const profileDir = join(ROOT, '.bench')
  if (opts.profile) mkdirSync(profileDir, { recursive: true })
  const servers = [
    await startNode('ours', 'bench/servers/ours.ts', [], opts.profile ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []),
    await startSmtpSink(),
    await startNode('smtp-server', 'bench/servers/smtp-server.ts'),
  ]
  let met: boolean
  try {
    const lockstep = await compare(servers, 'smtp-source -L -d (no pipelining: one round trip per command)', (port, m, r) => load(port, m, r))
    met = lockstep.every((r) => r.vsSink >= 0.7 && r.vsPeer >= 1.2)
    console.log(`targets on this load: ours/smtp-sink >= 0.70, ours/smtp-server >= 1.20: ${met ? 'met' : 'NOT met'}`)
    if (!opts['skip-pipelined']) await compare(servers, 'pipelining client (MAIL+RCPT+DATA in one write, as Postfix lmtp does)', pipelinedLoad)
  } finally {
    for (const s of servers) await stop(s)
  }
  if (opts.profile) console.log(`CPU profile of our server written to ${profileDir}`)
  return met
}

/** A self-signed certificate for the TLS run, made by openssl in a temp dir. */
function certificate(): { dir: string; cert: string; key: string } {
  const dir = mkdtempSync(join(tmpdir(), 'lmtp-bench-tls-'))
  const cert = join(dir, 'cert.pem')
  const key = join(dir, 'key.pem')
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=bench.test', '-keyout', key, '-out', cert],
    {
      stdio: 'ignore',
    },
  )
  return { dir, cert, key }
}

/**
 * The pipelining client with STARTTLS against ours and smtp-server with STARTTLS, and against ours
 * in cleartext for the cost of TLS itself; 1 and 5 recipients, round-robin, median of REPEAT.
 */
async function tlsThroughput(): Promise<void> {
  const { dir, cert, key } = certificate()
  const servers = [
    { ...(await startNode('ours', 'bench/servers/ours.ts', [String(64 * 1024 * 1024), '--tls', cert, key])), tls: true },
    { ...(await startNode('smtp-server', 'bench/servers/smtp-server.ts', [String(64 * 1024 * 1024), '--tls', cert, key])), tls: true },
    { ...(await startNode('ours cleartext', 'bench/servers/ours.ts')), tls: false },
  ]
  const rows: string[][] = []
  try {
    for (const recipients of [1, 5]) {
      const samples = new Map<string, Sample[]>(servers.map((s) => [s.name, []]))
      for (const s of servers) await pipelinedLoad(s.port, Math.max(200, Math.floor(MESSAGES / 10)), recipients, s.tls) // warm-up
      for (let round = 0; round < REPEAT; round++) {
        for (const s of servers) samples.get(s.name)!.push(await measure(s, (port, m, r) => pipelinedLoad(port, m, r, s.tls), MESSAGES, recipients))
      }
      const rate = (name: string): number => median(samples.get(name)!.map((x) => x.rate))
      const cpu = (name: string): number => median(samples.get(name)!.map((x) => x.cpu))
      rows.push([
        String(recipients),
        fmt(rate('ours')),
        fmt(rate('smtp-server')),
        fmt(rate('ours cleartext')),
        fmt(rate('ours') / rate('smtp-server'), 2),
        fmt(rate('ours') / rate('ours cleartext'), 2),
        `${fmt(cpu('ours'))} / ${fmt(cpu('smtp-server'))} / ${fmt(cpu('ours cleartext'))}`,
      ])
      const runs = [...samples].map(([name, x]) => `${name} ${x.map((y) => fmt(y.rate)).join('/')}`).join('; ')
      process.stderr.write(`  STARTTLS, ${recipients} rcpt, msgs/s per run: ${runs}\n`)
    }
  } finally {
    for (const s of servers) await stop(s)
    rmSync(dir, { recursive: true, force: true })
  }
  console.log(
    `\npipelining client with STARTTLS (TLS 1.3, P-256 certificate): ${SESSIONS} sessions, ${fmt(SIZE)}-octet messages, ${fmt(MESSAGES)} messages, median of ${REPEAT}`,
  )
  console.log(
    table(
      [
        'rcpt/msg',
        'ours TLS msg/s',
        'smtp-server TLS msg/s',
        'ours cleartext msg/s',
        'ours/smtp-server (TLS)',
        'ours TLS/cleartext',
        'server CPU us/msg (ours TLS / server TLS / ours clear)',
      ],
      rows,
    ),
  )
}

async function peakMemory(): Promise<void> {
  const sessions = 200
  const rows: string[][] = []
  for (const size of [1_000_000, 10_000_000]) {
    const server = await startNode('ours', 'bench/servers/ours.ts', [String(64 * 1024 * 1024)])
    try {
      const pid = server.process.pid!
      await load(server.port, 20, 1, 4, 1000, false) // load the code paths once
      const before = memory(pid).current
      const rate = await load(server.port, sessions, 1, sessions, size, false)
      const { peak } = memory(pid)
      rows.push([`${fmt(size / 1e6)} MB`, mib(before), mib(peak), mib(peak - before), `${fmt((rate * size) / (1024 * 1024))} MiB/s`])
    } finally {
      await stop(server)
    }
  }
  console.log(`\nPeak RSS of our server: ${sessions} concurrent sessions, one message each (smtp-source -L -s ${sessions} -m ${sessions} -l SIZE)`)
  console.log(table(['message', 'RSS before', 'peak RSS', 'peak - before', 'throughput'], rows))
}

requireTool(SMTP_SOURCE, 'Postfix (apt-get install postfix)')
requireTool(SMTP_SINK, 'Postfix (apt-get install postfix)')
await build()
const met = await throughput()
if (!opts['skip-tls']) await tlsThroughput()
if (!opts['skip-memory']) await peakMemory()
if (!met) process.exitCode = 1
