/** Runs the service as a real process (src/main.ts through tsx) and finds its ports in its logs. */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { until } from './until.js'

export interface ServiceProcess {
  child: ChildProcess
  lmtpPort: number
  adminPort: number | null
  output: () => string
  exited: Promise<number | null>
}

export async function startService(t: { teardown: (fn: () => unknown) => void }, env: Record<string, string>, timeoutMs = 20_000): Promise<ServiceProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    env: { PATH: process.env.PATH ?? '', LOG_LEVEL: 'info', LMTP_HOST: '127.0.0.1', LMTP_PORT: '0', ADMIN_PORT: 'off', SHUTDOWN_DELAY: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()))
  child.stderr!.on('data', (c: Buffer) => (out += c.toString()))
  const exited = once(child, 'exit').then(([code]) => code as number | null)
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL')
      await exited
    }
  })
  const line = await until(
    'the start-up line',
    () => {
      if (child.exitCode !== null) throw new Error(`service exited with ${child.exitCode}: ${out}`)
      return out.split('\n').find((l) => l.includes('"msg":"lmtp-webhook started"'))
    },
    timeoutMs,
    50,
  ).catch((err: unknown) => {
    throw child.exitCode !== null ? err : new Error(`service did not start: ${out}`)
  })
  const info = JSON.parse(line) as { lmtpPort: number; adminPort: number | null }
  return { child, lmtpPort: info.lmtpPort, adminPort: info.adminPort, output: () => out, exited }
}
