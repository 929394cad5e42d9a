/**
 * docker/compose.yaml as `docker-compose config` resolves it, and the demo's pieces agreeing with
 * each other: Redis with AOF, the service's environment accepted by src/config.ts, the routes file
 * mounted where ROUTES_FILE points, routes that reach the demo receiver with the secret it knows,
 * and a Postfix main.cf (checked with the real postconf/postmap) relaying the demo domain to the
 * service's LMTP port.
 */
import t, { type Test } from 'tap'
import { execFile } from 'node:child_process'
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { parse as parseYaml } from 'yaml'
import { loadConfig } from '../../src/config.js'
import { parseRoutesFile } from '../../src/routing/file.js'
import { ROOT, readText, readYaml } from './helpers.js'

const run = promisify(execFile)

interface Volume {
  type: string
  source: string
  target: string
  read_only?: boolean
}
interface Service {
  image?: string
  build?: { context: string; dockerfile?: string }
  command?: string[]
  environment?: Record<string, string>
  volumes?: Array<string | Volume>
  ports?: unknown[]
  user?: string
  read_only?: boolean
  tmpfs?: string[]
  cap_drop?: string[]
  depends_on?: Record<string, { condition: string }>
}
interface Route {
  id: string
  match: string
  url: string
  secret?: string
  secrets?: string[]
}

/** Runs a tool that scripts/test installs; fails with what to install when it is missing. */
async function tool(t: Test, file: string, args: string[], pkg: string): Promise<{ stdout: string; stderr: string }> {
  try {
    return await run(file, args, { cwd: ROOT })
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string }
    if (e.code === 'ENOENT') t.fail(`${file} is missing: install the Debian package ${pkg} (scripts/test does)`)
    throw new Error(`${file} ${args.join(' ')} failed: ${e.stderr ?? e.message}`, { cause: err })
  }
}

/** Volume entries in the long form docker-compose config prints, short forms parsed too. */
function volumes(service: Service): Volume[] {
  return (service.volumes ?? []).map((v) => {
    if (typeof v !== 'string') return v
    const [source = '', target = '', mode] = v.split(':')
    const readOnly = mode === 'ro'
    if (!source.includes('/')) return { type: 'volume', source, target, read_only: readOnly }
    return { type: 'bind', source: source.startsWith('/') ? source : join(ROOT, 'docker', source), target, read_only: readOnly }
  })
}

t.test('docker-compose config accepts docker/compose.yaml', async (t) => {
  const { stdout } = await tool(t, 'docker-compose', ['-f', 'docker/compose.yaml', 'config'], 'docker-compose')
  const config = parseYaml(stdout) as { services: Record<string, Service> }
  const services = config.services
  t.same(Object.keys(services).sort(), ['demo-receiver', 'lmtp-webhook', 'postfix', 'redis'])

  t.test('redis keeps an append-only file', async (t) => {
    const command = (services.redis?.command ?? []).join(' ')
    t.match(command, /--appendonly yes/)
    t.match(command, /--appendfsync everysec/)
    t.match(command, /--maxmemory-policy noeviction/, 'BullMQ keys are never evicted')
    t.ok(
      volumes(services.redis as Service).some((v) => v.target === '/data'),
      'the AOF lives on a volume',
    )
  })

  const app = services['lmtp-webhook'] as Service
  const env = app.environment ?? {}

  t.test('the service is built from the repository Dockerfile and hardened', async (t) => {
    t.equal(app.build?.context, ROOT.replace(/\/$/, ''))
    t.equal(app.build?.dockerfile ?? 'Dockerfile', 'Dockerfile')
    t.equal(app.read_only, true, 'read-only root filesystem')
    t.same(app.tmpfs, ['/tmp'], 'only /tmp is writable')
    t.same(app.cap_drop, ['ALL'])
    t.equal(app.depends_on?.redis?.condition, 'service_healthy', 'starts once Redis answers')
  })

  t.test('its environment is a configuration src/config.ts accepts', async (t) => {
    const routes = volumes(app).find((v) => v.target === env.ROUTES_FILE)
    t.ok(routes, `a volume is mounted at ROUTES_FILE (${env.ROUTES_FILE})`)
    t.equal(routes?.source, join(ROOT, 'docker', 'routes.example.yaml'))
    t.equal(routes?.read_only, true)
    const config = loadConfig({ ...env, ROUTES_FILE: routes?.source })
    t.equal(config.redis.url, 'redis://redis:6379', 'Redis is the compose service')
    t.same(config.lmtp.domains, ['example.test'])
    t.equal(config.admin.tokens.length, 1)
  })

  t.test('the routes reach the demo receiver with the secret it checks', async (t) => {
    const file = readYaml('docker', 'routes.example.yaml') as { routes: Route[] }
    t.equal(
      parseRoutesFile(readText('docker', 'routes.example.yaml'), 'routes.example.yaml').length,
      file.routes.length,
      'the service accepts every route of the file',
    )
    const receiver = services['demo-receiver'] as Service
    const known = (receiver.environment?.WEBHOOK_SECRET ?? '').split(/[\s,]+/)
    t.ok(file.routes.length > 0)
    for (const route of file.routes) {
      const url = new URL(route.url)
      t.equal(url.hostname, 'demo-receiver', `${route.id}: calls the demo receiver service`)
      t.equal(url.port, receiver.environment?.PORT, `${route.id}: on the port it listens on`)
      for (const secret of route.secrets ?? [route.secret])
        t.ok(secret !== undefined && known.includes(secret), `${route.id}: signs with a secret the receiver knows`)
      t.match(route.match, /@example\.test$|^\*$/, `${route.id}: serves the demo domain`)
    }
    t.same(
      volumes(receiver).map((v) => [v.source, v.target]),
      [[join(ROOT, 'docker', 'demo-receiver'), '/app']],
    )
    t.equal(receiver.command?.at(-1), '/app/server.mjs')
  })

  t.test('Postfix relays the demo domain to the service over LMTP', async (t) => {
    const postfix = services.postfix as Service
    t.equal(postfix.build?.context, join(ROOT, 'docker', 'postfix'))
    const dir = mkdtempSync(join(tmpdir(), 'postfix-conf-'))
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    copyFileSync(join(ROOT, 'docker', 'postfix', 'main.cf'), join(dir, 'main.cf'))
    copyFileSync('/usr/share/postfix/master.cf.dist', join(dir, 'master.cf'))
    const checked = await tool(t, '/usr/sbin/postconf', ['-c', dir, '-n'], 'postfix')
    t.equal(checked.stderr, '', 'postconf knows every parameter of main.cf (no "unused parameter" warning)')
    const setting = async (name: string): Promise<string> => (await tool(t, '/usr/sbin/postconf', ['-c', dir, '-h', name], 'postfix')).stdout.trim()
    t.equal(await setting('relay_domains'), 'example.test')
    t.equal(await setting('relay_recipient_maps'), '', 'every recipient is passed on; lmtp-webhook answers for unknown ones')
    t.equal(await setting('lmtp_send_xforward_command'), 'yes')
    const transport = (await tool(t, '/usr/sbin/postmap', ['-c', dir, '-q', 'example.test', await setting('transport_maps')], 'postfix')).stdout.trim()
    const lmtpPort = env.LMTP_PORT ?? '2424'
    t.equal(transport, `lmtp:inet:lmtp-webhook:${lmtpPort}`, 'the demo domain goes to the lmtp-webhook service on its LMTP port')
    t.ok(env.LMTP_DOMAINS?.split(',').includes('example.test'), 'and the service accepts that domain')
  })
})

t.test('the postfix image starts Postfix in the foreground without chroot', async (t) => {
  const dockerfile = readText('docker', 'postfix', 'Dockerfile')
  t.match(dockerfile, /^FROM debian:bookworm-slim$/m)
  t.match(dockerfile, /COPY main\.cf \/etc\/postfix\/main\.cf/)
  t.match(dockerfile, /postconf -F '\*\/\*\/chroot = n'/)
  t.match(dockerfile, /^CMD \["postfix", "start-fg"\]$/m)
  t.match(readText('docker', 'postfix', 'main.cf'), /^maillog_file = \/dev\/stdout$/m, 'logs reach docker logs')
})
