/**
 * The built service as the container runs it: `npm run build` into a fresh directory, then
 * `node dist/main.js` as the unprivileged user `nobody`, with the environment the Helm chart sets
 * (default values), no HOME, a private TMPDIR, files it cannot write, and the chart's Secret files.
 * A user's checks: /healthz and /readyz answer, the LMTP greeting arrives, SIGTERM stops it cleanly.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { chmodSync, chownSync, copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { createInterface } from 'node:readline'
import { Redis } from 'ioredis'
import { request } from 'undici'
import { ROOT, chartEnvironment, chartValues, withOverrides } from './helpers.js'
import { LmtpClient } from '../helpers/lmtp-client.js'
import { freePort } from '../helpers/net.js'

const NOBODY = 65534
const asRoot = process.getuid?.() === 0

async function run(command: string, args: string[], cwd: string): Promise<void> {
  const child = spawn(command, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout.on('data', (c: Buffer) => (output += c.toString()))
  child.stderr.on('data', (c: Buffer) => (output += c.toString()))
  const [code] = await once(child, 'exit')
  if (code !== 0) throw new Error(`${command} ${args.join(' ')} exited with ${code}:\n${output}`)
}

async function readableByNobody(path: string): Promise<boolean> {
  const child = spawn('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', '--', 'test', '-r', path], { stdio: 'ignore' })
  const [code] = await once(child, 'exit')
  return code === 0
}

t.test('dist/main.js runs as nobody with the chart environment', async (t) => {
  const work = mkdtempSync(join(tmpdir(), 'lmtp-webhook-runtime-'))
  t.teardown(() => rmSync(work, { recursive: true, force: true }))
  chmodSync(work, 0o755)

  // The image's /app: package.json, production node_modules, dist/ - all owned by root.
  const app = join(work, 'app')
  mkdirSync(app, { mode: 0o755 })
  copyFileSync(join(ROOT, 'package.json'), join(app, 'package.json'))
  if (!asRoot || (await readableByNobody(join(ROOT, 'node_modules', 'yaml', 'package.json')))) {
    symlinkSync(join(ROOT, 'node_modules'), join(app, 'node_modules'))
  } else {
    // the checkout sits where nobody cannot reach (such as under /root): give it its own copy
    await run('cp', ['-a', join(ROOT, 'node_modules'), join(app, 'node_modules')], ROOT)
  }
  await run('npm', ['run', 'build', '--silent', '--', '--outDir', join(app, 'dist')], ROOT)
  t.ok(existsSync(join(app, 'dist', 'main.js')), 'npm run build produces dist/main.js')
  // The dashboard's static files, copied as the Dockerfile does.
  cpSync(join(ROOT, 'ui'), join(app, 'ui'), { recursive: true })

  // The chart's Secret, mounted read-only.
  const secret = join(work, 'secret')
  mkdirSync(secret, { mode: 0o755 })
  const token = randomBytes(24).toString('hex')
  writeFileSync(join(secret, 'admin-tokens'), token, { mode: 0o444 })
  writeFileSync(join(secret, 'routes.yaml'), 'routes: []\n', { mode: 0o444 })

  // The emptyDir at /tmp: the only place the process may write.
  const scratch = join(work, 'tmp')
  mkdirSync(scratch, { mode: 0o700 })
  if (asRoot) chownSync(scratch, NOBODY, NOBODY)

  const prefix = `test-${randomBytes(6).toString('hex')}`
  const redis = new Redis('redis://127.0.0.1:6379', { lazyConnect: true })
  await redis.connect()
  t.teardown(async () => {
    let cursor = '0'
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000)
      if (keys.length > 0) await redis.del(...keys)
      cursor = next
    } while (cursor !== '0')
    await redis.quit()
  })

  const [lmtpPort, adminPort] = [await freePort(), await freePort()]
  const chart = chartEnvironment(withOverrides(chartValues(), { adminTokens: [token] }))
  t.same(chart.fromSecret, ['REDIS_URL', 'EVENTS_SECRET', 'SENDER_CHECK_SECRET'])
  // No HOME: the image's user has none.
  const env: Record<string, string> = { PATH: process.env.PATH ?? '/usr/bin:/bin', NODE_ENV: 'production' }
  for (const [name, value] of Object.entries(chart.env)) env[name] = value.replace('/etc/lmtp-webhook/secret', secret)
  Object.assign(env, {
    REDIS_URL: 'redis://127.0.0.1:6379',
    REDIS_PREFIX: prefix,
    TMPDIR: scratch,
    LMTP_HOST: '127.0.0.1',
    ADMIN_HOST: '127.0.0.1',
    LMTP_PORT: String(lmtpPort),
    ADMIN_PORT: String(adminPort),
  })

  // `env -i` hands node exactly this environment: the test runner adds its own NODE_OPTIONS to
  // every child it sees spawned, and the container has none of that.
  const clean = ['/usr/bin/env', '-i', ...Object.entries(env).map(([k, v]) => `${k}=${v}`), process.execPath, 'dist/main.js']
  const argv = asRoot ? ['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', '--no-new-privs', '--', ...clean] : clean
  const child = spawn(argv[0] as string, argv.slice(1), { cwd: app, stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  let stderr = ''
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
  const logs: Array<Record<string, unknown>> = []
  const started = new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout }).on('line', (line) => {
      try {
        const entry = JSON.parse(line) as Record<string, unknown>
        logs.push(entry)
        if (entry.msg === 'lmtp-webhook started') resolve()
      } catch {
        logs.push({ raw: line })
      }
    })
    child.once('exit', (code) => reject(new Error(`dist/main.js exited with ${code} before starting:\n${stderr}`)))
  })
  await started

  if (asRoot) {
    const status = readFileSync(`/proc/${child.pid}/status`, 'utf8')
    t.match(status, new RegExp(`^Uid:\\s+${NOBODY}\\s+${NOBODY}\\s+${NOBODY}\\s+${NOBODY}$`, 'm'), 'the process runs as nobody')
  }

  const health = await request(`http://127.0.0.1:${adminPort}/healthz`)
  t.equal(health.statusCode, 200, '/healthz answers 200')
  await health.body.dump()
  const ready = await request(`http://127.0.0.1:${adminPort}/readyz`)
  t.equal(ready.statusCode, 200, '/readyz answers 200')
  await ready.body.dump()
  const ui = await request(`http://127.0.0.1:${adminPort}/ui`)
  t.equal(ui.statusCode, 200, 'the compiled server finds the dashboard next to dist/')
  t.match(await ui.body.text(), /<script type="module" src="ui\/app\.js">/)

  const lmtp = await LmtpClient.connect(lmtpPort)
  t.match(lmtp.greeting?.[0], /^220 /, 'the LMTP greeting arrives')
  await lmtp.write('LHLO runtime.test\r\n')
  t.match((await lmtp.next())?.at(-1), /^250 /, 'LHLO is answered')
  await lmtp.write('QUIT\r\n')
  t.match((await lmtp.next())?.[0], /^221 /)
  lmtp.destroy()

  child.kill('SIGTERM')
  const [code] = await once(child, 'exit')
  t.equal(code, 0, 'SIGTERM stops it with exit code 0')
  if (code !== 0) t.comment(stderr)
  t.ok(
    logs.some((l) => l.msg === 'stopped'),
    'the shutdown is logged',
  )
})
