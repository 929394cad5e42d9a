/** A private redis-server on a unix socket in a temp dir, for tests that need persistence settings. */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { until } from './until.js'

export interface PrivateRedis {
  url: string
  dir: string
  /** The redis-server process now (to stop, freeze or kill it in a test). */
  pid: number
  /** Kills the process if it still runs and starts a new one on the same socket and directory. */
  restart(): Promise<void>
}

export async function privateRedis(t: { teardown: (fn: () => unknown) => void }, args: string[]): Promise<PrivateRedis> {
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
    child = spawn('redis-server', ['--port', '0', '--unixsocket', sock, '--save', '', '--dir', dir, ...args], { stdio: 'ignore' })
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
