/** A private redis-server on a unix socket in a temp dir, for tests that need persistence settings. */
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { until } from './until.js'

export interface PrivateRedis {
  url: string
  dir: string
  /** The redis-server process (to stop, freeze or kill it in a test). */
  pid: number
}

export async function privateRedis(t: { teardown: (fn: () => unknown) => void }, args: string[]): Promise<PrivateRedis> {
  const dir = mkdtempSync(join(tmpdir(), 'lmtp-webhook-redis-'))
  const sock = join(dir, 'redis.sock')
  const child = spawn('redis-server', ['--port', '0', '--unixsocket', sock, '--save', '', '--dir', dir, ...args], { stdio: 'ignore' })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  t.teardown(async () => {
    child.kill('SIGCONT')
    child.kill('SIGKILL')
    await exited
    rmSync(dir, { recursive: true, force: true })
  })
  await until('the redis-server socket', () => existsSync(sock), 5_000, 50).catch(() => {
    throw new Error('redis-server did not start (is it installed?)')
  })
  return { url: `unix://${sock}`, dir, pid: child.pid! }
}
