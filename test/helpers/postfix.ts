/**
 * A private Postfix instance for end-to-end tests: its own configuration directory, queue
 * directory, data directory and maillog in a temp dir, smtpd on a loopback port, and mail for one
 * domain handed to lmtp-webhook over LMTP. Everything else (the bounces Postfix writes to the
 * sender, postmaster notices) goes to the discard transport, so nothing leaves the machine.
 *
 * Postfix must run as root here (the master process binds its port and switches to the `postfix`
 * user). The system Postfix is never started or touched, except that the private configuration
 * directory is listed in `alternate_config_directories` of the default main.cf for the lifetime
 * of the instance (the set-gid tools, postqueue and sendmail, accept `-c <dir>` from a user other
 * than root only then); the original main.cf, or its absence, is restored at teardown.
 */
import { execFile } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, chmodSync, unlinkSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { until } from './until.js'
import { freePort } from './net.js'

export const POSTFIX = '/usr/sbin/postfix'
export const DEFAULT_MAIN_CF = '/etc/postfix/main.cf'

/** Why Postfix cannot run here, or null when it can. */
/**
 * Why the Postfix tests cannot run here, or null. A missing Postfix is an error, not a reason to
 * skip (scripts/test installs it); only a developer running the suite without root is skipped.
 */
export function postfixUnavailable(): string | null {
  if (!existsSync(POSTFIX)) throw new Error(`${POSTFIX} is not installed: run scripts/test as root, or apt-get install postfix`)
  if (process.getuid?.() !== 0) return 'a private Postfix instance must be started as root'
  return null
}

export interface CommandResult {
  code: number
  output: string
}

/** Runs a command; never throws on a non-zero exit, returns the code and stdout+stderr. */
export function run(command: string, args: string[]): Promise<CommandResult> {
  return new Promise((resolve) => {
    execFile(command, args, { timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0
      resolve({ code, output: `${stdout}${stderr}` })
    })
  })
}

/** Older name, kept for tests written against it: see net.ts. */
export { freePort }

export interface PostfixOptions {
  /** The recipient domain Postfix relays to lmtp-webhook. */
  readonly domain: string
  /** lmtp-webhook's LMTP port on 127.0.0.1. */
  readonly lmtpPort: number
  /** Extra or replaced main.cf settings. */
  readonly main?: Readonly<Record<string, string>>
}

export interface Postfix {
  /** The instance's temp dir (config in `etc/`, queue in `spool/`, data in `data/`, `maillog`). */
  readonly dir: string
  readonly configDir: string
  readonly smtpPort: number
  /** The maillog as it is now. */
  log(): string
  /** Polls the maillog until `pattern` matches; throws with the log after `timeoutMs`. */
  waitForLog(pattern: RegExp, timeoutMs?: number): Promise<RegExpExecArray>
  /** `postqueue -p` for this instance. */
  queue(): Promise<string>
  stop(): Promise<void>
}

// Every service Postfix needs to receive, queue, relay over LMTP, bounce and discard; no chroot.
const MASTER_CF = (smtpPort: number): string =>
  `# service type  private unpriv  chroot  wakeup  maxproc command
127.0.0.1:${smtpPort} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
postlog   unix-dgram n  -       n       -       1       postlogd
`

function mainCf(dir: string, options: PostfixOptions): string {
  const settings: Record<string, string> = {
    compatibility_level: '3.6',
    queue_directory: join(dir, 'spool'),
    data_directory: join(dir, 'data'),
    maillog_file: join(dir, 'maillog'),
    maillog_file_prefixes: dir,
    myhostname: 'mx.e2e.test',
    mydomain: 'e2e.test',
    myorigin: '$myhostname',
    inet_interfaces: 'loopback-only',
    inet_protocols: 'ipv4',
    mynetworks: '127.0.0.0/8',
    // Nothing is delivered locally.
    mydestination: '',
    local_recipient_maps: '',
    alias_maps: '',
    alias_database: '',
    biff: 'no',
    // Every recipient of the domain is accepted and handed to lmtp-webhook, which decides.
    relay_domains: options.domain,
    relay_recipient_maps: '',
    transport_maps: `inline:{ ${options.domain}=lmtp:inet:127.0.0.1:${options.lmtpPort} }`,
    // Everything else, bounces to the sender included, stays on this machine.
    default_transport: 'discard',
    relay_transport: 'discard',
    // No DNS: the client's name is not looked up, and every next hop is an address.
    smtpd_peername_lookup: 'no',
    smtp_dns_support_level: 'disabled',
    lmtp_dns_support_level: 'disabled',
    lmtp_host_lookup: 'native',
    lmtp_send_xforward_command: 'yes',
    // Retry deferred mail within seconds.
    queue_run_delay: '1s',
    minimal_backoff_time: '1s',
    maximal_backoff_time: '2s',
    ...options.main,
  }
  return (
    Object.entries(settings)
      .map(([k, v]) => `${k} = ${v}`.trimEnd())
      .join('\n') + '\n'
  )
}

/**
 * Lists `configDir` in alternate_config_directories of the default main.cf and returns the
 * function that restores that file exactly as it was (or removes it when there was none).
 */
async function allowConfigDirectory(configDir: string): Promise<() => void> {
  const existed = existsSync(DEFAULT_MAIN_CF)
  const original = existed ? readFileSync(DEFAULT_MAIN_CF) : null
  const restore = (): void => {
    if (original !== null) writeFileSync(DEFAULT_MAIN_CF, original)
    else if (existsSync(DEFAULT_MAIN_CF)) unlinkSync(DEFAULT_MAIN_CF)
  }
  if (!existed) writeFileSync(DEFAULT_MAIN_CF, '')
  const current = (await run('postconf', ['-h', 'alternate_config_directories'])).output.trim()
  const value = current === '' ? configDir : `${current}, ${configDir}`
  const set = await run('postconf', ['-e', `alternate_config_directories = ${value}`])
  if (set.code !== 0) {
    restore()
    throw new Error(`postconf -e alternate_config_directories failed: ${set.output}`)
  }
  return restore
}

async function isRunning(configDir: string): Promise<boolean> {
  return (await run(POSTFIX, ['-c', configDir, 'status'])).code === 0
}

/** Waits for smtpd's 220 greeting on the port. */
function waitForSmtpd(port: number, timeoutMs: number): Promise<boolean> {
  const greeted = (): Promise<boolean> =>
    new Promise<boolean>((resolve) => {
      const socket = net.connect({ port, host: '127.0.0.1' })
      socket.once('data', (c: Buffer) => {
        resolve(c.toString().startsWith('220'))
        socket.end('QUIT\r\n')
      })
      socket.once('error', () => resolve(false))
    })
  return until("smtpd's greeting", greeted, timeoutMs, 100).then(
    () => true,
    () => false,
  )
}

export async function startPostfix(t: { teardown: (fn: () => unknown) => void }, options: PostfixOptions): Promise<Postfix> {
  const dir = mkdtempSync(join(tmpdir(), 'lmtp-webhook-postfix-'))
  // Postfix's daemons run as the postfix user and must reach the queue directory.
  chmodSync(dir, 0o755)
  const configDir = join(dir, 'etc')
  mkdirSync(configDir, { mode: 0o755 })
  mkdirSync(join(dir, 'spool'), { mode: 0o755 })
  const smtpPort = await freePort()
  writeFileSync(join(configDir, 'main.cf'), mainCf(dir, options))
  writeFileSync(join(configDir, 'master.cf'), MASTER_CF(smtpPort))
  const logFile = join(dir, 'maillog')
  const log = (): string => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : '')

  const restoreMainCf = await allowConfigDirectory(configDir)
  let stopped = false
  const stop = async (): Promise<void> => {
    if (stopped) return
    stopped = true
    try {
      await run(POSTFIX, ['-c', configDir, 'stop'])
      // `postfix stop` signals the master and returns; wait until it has let go of its lock.
      await until('the master to stop', async () => !(await isRunning(configDir)), 10_000, 50).catch(() => {})
    } finally {
      restoreMainCf()
      rmSync(dir, { recursive: true, force: true })
    }
  }
  t.teardown(() => stop().catch(() => {}))

  // script(1) gives postfix a terminal, so start-up errors are printed rather than only logged.
  const started = await run('script', ['-qc', `${POSTFIX} -c ${configDir} start`, '/dev/null'])
  if (started.code !== 0 || !(await waitForSmtpd(smtpPort, 20_000))) {
    throw new Error(`postfix did not start (exit ${started.code}): ${started.output}\n${log()}`)
  }

  return {
    dir,
    configDir,
    smtpPort,
    log,
    waitForLog(pattern, timeoutMs = 60_000) {
      return until(`the maillog to match ${pattern}`, () => pattern.exec(log()), timeoutMs, 100).catch(() => {
        throw new Error(`maillog never matched ${pattern}:\n${log()}`)
      })
    },
    async queue() {
      return (await run('postqueue', ['-c', configDir, '-p'])).output
    },
    stop,
  }
}

export interface Submission {
  /** Postfix's queue id from `250 2.0.0 Ok: queued as <id>`. */
  readonly queueId: string
  readonly transcript: readonly string[]
}

/** Sends one message through an SMTP server (EHLO, MAIL, RCPT..., DATA, QUIT), one command at a time. */
export async function submit(port: number, mail: { helo: string; from: string; to: readonly string[]; message: string }): Promise<Submission> {
  const socket = net.connect({ port, host: '127.0.0.1' })
  const transcript: string[] = []
  const lines: string[] = []
  const waiting: (() => void)[] = []
  let closed = false
  const wake = (): void => {
    for (const w of waiting.splice(0)) w()
  }
  createInterface({ input: socket, crlfDelay: Infinity }).on('line', (line) => {
    lines.push(line)
    wake()
  })
  socket.on('error', () => {})
  socket.on('close', () => {
    closed = true
    wake()
  })
  const read = async (): Promise<string> => {
    const reply: string[] = []
    for (;;) {
      while (lines.length === 0) {
        if (closed) throw new Error(`connection closed; transcript:\n${transcript.join('\n')}`)
        await new Promise<void>((resolve) => waiting.push(resolve))
      }
      const line = lines.shift()!
      transcript.push(`S: ${line}`)
      reply.push(line)
      if (!/^\d{3}-/.test(line)) return reply.join('\n')
    }
  }
  const expect = async (code: string): Promise<string> => {
    const reply = await read()
    if (!reply.startsWith(code)) throw new Error(`expected ${code}, got "${reply}"; transcript:\n${transcript.join('\n')}`)
    return reply
  }
  const send = (line: string): void => {
    transcript.push(`C: ${line}`)
    socket.write(`${line}\r\n`)
  }
  try {
    await expect('220')
    send(`EHLO ${mail.helo}`)
    await expect('250')
    send(`MAIL FROM:<${mail.from}>`)
    await expect('250')
    for (const rcpt of mail.to) {
      send(`RCPT TO:<${rcpt}>`)
      await expect('250')
    }
    send('DATA')
    await expect('354')
    const body = mail.message.replace(/\r?\n/g, '\r\n').replace(/^\./gm, '..')
    socket.write(body.endsWith('\r\n') ? body : `${body}\r\n`)
    send('.')
    const queued = await expect('250')
    const id = /queued as ([0-9A-Za-z]+)/.exec(queued)
    if (!id) throw new Error(`no queue id in "${queued}"`)
    send('QUIT')
    await expect('221')
    return { queueId: id[1]!, transcript }
  } finally {
    socket.destroy()
  }
}
