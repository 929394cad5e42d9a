/**
 * A route URL (url, recipientCheckUrl) whose host is written as a denied address is refused when
 * the route is created, naming the field: from the route parser, the admin API over a real socket,
 * the routes file (start-up fails) and a real process (exit 78). Every spelling the WHATWG URL
 * parser turns into a denied address counts, and the rules are the connect-time guard's, with
 * WEBHOOK_ALLOW_CIDRS / WEBHOOK_DENY_CIDRS. Names stay for connect time; stored routes still load.
 */
import t from 'tap'
import { Redis } from 'ioredis'
import { isAppError } from '../../src/errors.js'
import { DestinationGuard, addressToBigInt, hostAddress } from '../../src/delivery/guard.js'
import { WebhookClient } from '../../src/delivery/http.js'
import { parseRoute } from '../../src/routing/schema.js'
import { RouteStore } from '../../src/routing/store.js'
import { createLogger } from '../../src/logger.js'
import { cleanRedis, prefix, REDIS_URL, routesFile, startApp } from '../helpers/app.js'
import { startAdmin, TOKEN } from '../admin/helpers.js'
import { freePort } from '../helpers/net.js'
import { startService } from '../helpers/process.js'

/** Spellings of an IPv4 address that the WHATWG URL parser reads as that address. */
function ipv4Spellings(address: string): string[] {
  const parts = address.split('.').map(Number) as [number, number, number, number]
  const [a, b, c, d] = parts
  const n = ((a << 24) >>> 0) + (b << 16) + (c << 8) + d
  const fullWidth = (s: string): string => s.replace(/[0-9]/g, (x) => String.fromCharCode(0xff10 + Number(x))).replace(/\./g, '\uff0e')
  return [
    address,
    String(n),
    `0x${n.toString(16)}`,
    `0X${n.toString(16).toUpperCase()}`,
    `0${n.toString(8)}`,
    parts.map((p) => `0x${p.toString(16)}`).join('.'),
    parts.map((p) => `0${p.toString(8)}`).join('.'),
    `${a}.${b}.${(c << 8) + d}`,
    `${a}.${(b << 16) + (c << 8) + d}`,
    `0x${a.toString(16)}.${b}.0${c.toString(8)}.${d}`,
    `${address}.`,
    [...address].map((ch) => (ch === '.' ? '.' : `%${ch.charCodeAt(0).toString(16)}`)).join(''),
    fullWidth(address),
    address.replace(/\./g, '\u3002'),
    `[::ffff:${address}]`,
    `[::FFFF:${address}]`,
    `[0:0:0:0:0:ffff:${address}]`,
    `[::ffff:${((a << 8) + b).toString(16)}:${((c << 8) + d).toString(16)}]`,
  ]
}

const DENIED_V4 = ['169.254.169.254', '169.254.0.1', '0.0.0.0', '0.1.2.3']
const DENIED_V6: [string, string][] = [
  ['[fd00:ec2::254]', 'fd00:ec2::254'],
  ['[FD00:EC2:0:0:0:0:0:254]', 'fd00:ec2::254'],
  ['[fd00:0ec2::0254]', 'fd00:ec2::254'],
  ['[fe80::1]', 'fe80::1'],
  ['[FEBF::abcd]', 'febf::abcd'],
  ['[::]', '::'],
  ['[0:0:0:0:0:0:0:0]', '::'],
  ['[::0.0.0.0]', '::'],
]

/** [host as written, the address the URL parser makes of it] for every denied spelling. */
const deniedHosts: [string, string][] = [...DENIED_V4.flatMap((addr) => ipv4Spellings(addr).map((h): [string, string] => [h, addr])), ...DENIED_V6]

function refusal(def: Record<string, unknown>, guard?: DestinationGuard): { message: string; problems: string[] } | null {
  try {
    parseRoute(def, 'route', 'api', guard === undefined ? {} : { guard })
    return null
  } catch (err) {
    if (!isAppError(err, 'ROUTE_ERR_INVALID')) throw err
    return { message: err.message, problems: (err.details?.problems as string[]) ?? [] }
  }
}

t.test('the premise: the URL parser turns each spelling into the denied address', async (t) => {
  for (const [host, address] of deniedHosts) {
    const hostname = new URL(`http://${host}/hook`).hostname
    const literal = hostAddress(hostname)
    t.ok(literal !== null && addressToBigInt(literal) === addressToBigInt(address), `${JSON.stringify(host)} is ${hostname}, the address ${address}`)
  }
})

t.test('url and recipientCheckUrl written as a denied address are refused, naming the field and the address', async (t) => {
  for (const [host] of deniedHosts) {
    const url = `http://${host}:8080/latest/meta-data/`
    const r = refusal({ id: 'r', match: 'a@example.com', url })
    t.ok(r, `url ${JSON.stringify(host)} is refused`)
    t.match(
      r?.problems[0],
      /^url: expected an http\(s\) URL whose host is not a denied address .*, whose host is the address \S+ \(inside default-denied range/,
    )
    const check = refusal({ id: 'r', match: 'a@example.com', url: 'https://hooks.example.net/in', recipientCheckUrl: url })
    t.match(check?.problems[0], /^recipientCheckUrl: expected an http\(s\) URL whose host is not a denied address/, `recipientCheckUrl ${JSON.stringify(host)}`)
  }
  const both = refusal({ id: 'r', match: 'a@example.com', url: 'http://0xA9FEA9FE/', recipientCheckUrl: 'http://2852039166/' })
  t.equal(both?.problems.length, 2, 'both fields are reported')
})

t.test('names, loopback and ordinary addresses are accepted at create', async (t) => {
  for (const url of [
    'http://metadata.google.internal/computeMetadata/v1/',
    'http://localhost:8080/hook',
    'http://127.0.0.1:8080/hook',
    'http://0x7f.1/hook',
    'http://[::1]/hook',
    'https://hooks.example.net/in',
    'http://192.0.2.10/in',
    'http://[2001:db8::1]/in',
    'http://169.254.169.254.example.net/',
  ]) {
    t.equal(refusal({ id: 'r', match: 'a@example.com', url }), null, url)
  }
})

t.test('WEBHOOK_ALLOW_CIDRS and WEBHOOK_DENY_CIDRS apply as at connect time', async (t) => {
  const deny = new DestinationGuard({ denyCidrs: ['10.0.0.0/8', '127.0.0.0/8'] })
  t.match(
    refusal({ id: 'r', match: 'a@example.com', url: 'http://012.1.2.3/' }, deny)?.problems[0],
    /the address 10\.1\.2\.3 \(inside denied range 10\.0\.0\.0\/8\)/,
  )
  t.match(refusal({ id: 'r', match: 'a@example.com', url: 'http://2130706433/' }, deny)?.problems[0], /the address 127\.0\.0\.1/)
  const narrow = new DestinationGuard({ allowCidrs: ['192.0.2.0/24'] })
  t.match(refusal({ id: 'r', match: 'a@example.com', url: 'http://198.51.100.1/' }, narrow)?.problems[0], /outside every allowed range/)
  t.equal(refusal({ id: 'r', match: 'a@example.com', url: 'http://192.0.2.1/' }, narrow), null)
  const metadata = new DestinationGuard({ allowCidrs: ['169.254.169.254/32'] })
  t.equal(refusal({ id: 'r', match: 'a@example.com', url: 'http://0xA9FEA9FE/' }, metadata), null, 'naming the address in the allow list opens it')
})

t.test('create-time refusal and connect-time refusal agree', async (t) => {
  const guard = new DestinationGuard({ denyCidrs: ['10.0.0.0/8'] })
  const client = new WebhookClient({ guard, connectTimeoutMs: 1000 })
  t.teardown(() => client.close())
  const closed = await freePort()
  // denied spellings never open a socket; the loopback ones reach a closed port
  const urls = [...deniedHosts.map(([h]) => `http://${h}:${closed}/`), `http://012.0.0.1:${closed}/`, `http://127.0.0.1:${closed}/`, `http://0x7f.1:${closed}/`]
  for (const url of urls) {
    const atCreate = refusal({ id: 'r', match: 'a@example.com', url }, guard) !== null
    const result = await client.attempt({ url, headers: {}, body: 'x', deadlineMs: 5000 })
    const atConnect = result.error?.code === 'HOOK_ERR_DESTINATION_DENIED'
    t.equal(atCreate, atConnect, `${url}: refused at create ${atCreate}, at connect ${atConnect} (${result.error?.code ?? result.status})`)
  }
})

t.test('the admin API refuses them with 400 naming the field, over a real socket', async (t) => {
  const { base } = await startAdmin(t, { WEBHOOK_DENY_CIDRS: '10.0.0.0/8' })
  const send = async (method: string, path: string, body: unknown) => {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    })
    return { status: res.status, body: (await res.json()) as { error?: { code: string; message: string; details?: { problems?: string[] } } } }
  }
  const metadata = await send('POST', '/v1/routes', { id: 'meta', match: 'a@example.com', url: 'http://[::ffff:169.254.169.254]/' })
  t.equal(metadata.status, 400)
  t.equal(metadata.body.error?.code, 'ADMIN_ERR_VALIDATION')
  t.match(metadata.body.error?.message, /^route \(id "meta"\): url: expected an http\(s\) URL whose host is not a denied address/)
  const check = await send('POST', '/v1/routes', {
    id: 'chk',
    match: 'b@example.com',
    url: 'https://hooks.example.net/',
    recipientCheckUrl: 'http://0xA9FEA9FE/check',
  })
  t.equal(check.status, 400)
  t.match(check.body.error?.details?.problems?.[0], /^recipientCheckUrl: /)
  const configured = await send('POST', '/v1/routes', { id: 'ten', match: 'c@example.com', url: 'http://167772161/' })
  t.equal(configured.status, 400, 'WEBHOOK_DENY_CIDRS applies')
  t.match(configured.body.error?.message, /10\.0\.0\.1 \(inside denied range 10\.0\.0\.0\/8\)/)

  const ok = await send('POST', '/v1/routes', { id: 'ok', match: 'd@example.com', url: 'http://metadata.google.internal/' })
  t.equal(ok.status, 201, 'a name is accepted (caught at connect time)')
  const replaced = await send('PUT', '/v1/routes/ok', { match: 'd@example.com', url: 'http://[fd00:ec2::254]/' })
  t.equal(replaced.status, 400, 'a replacement is checked too')
  t.match(replaced.body.error?.message, /url: .*fd00:ec2::254/)
})

t.test('a routes file with such a route stops start-up, naming the file, the route and the field', async (t) => {
  const file = routesFile(
    t,
    'routes:\n  - { id: ok, match: "a@example.com", url: "https://hooks.example.net/" }\n  - { id: meta, match: "*@example.com", url: "http://0251.0376.0251.0376/" }\n',
  )
  const err = await startApp(t, { ROUTES_FILE: file }).then(
    () => null,
    (e: unknown) => e,
  )
  t.ok(isAppError(err, 'ROUTE_ERR_INVALID'), String(err))
  t.match((err as Error).message, new RegExp(`^${file.replace(/[.]/g, '\\.')}: routes\\[1\\] \\(id "meta"\\): url: .*169\\.254\\.169\\.254`))

  const allowed = routesFile(t, 'routes:\n  - { id: meta, match: "*@example.com", url: "http://0251.0376.0251.0376/" }\n')
  const app = await startApp(t, { ROUTES_FILE: allowed, WEBHOOK_ALLOW_CIDRS: '169.254.169.254/32' })
  t.equal(app.app.routes.get('meta')?.url, 'http://169.254.169.254/', 'allowed by WEBHOOK_ALLOW_CIDRS, the same file starts')
})

t.test('a real process exits 78 with a message naming the field', async (t) => {
  const file = routesFile(t, 'routes:\n  - { id: meta, match: "*@example.com", url: "http://[::ffff:a9fe:a9fe]/" }\n')
  const p = prefix()
  t.teardown(() => cleanRedis(p))
  const child = startService(t, { REDIS_URL, REDIS_PREFIX: p, ROUTES_FILE: file, LMTP_DOMAINS: 'example.com' }, 20_000)
  const err = await child.then(
    () => null,
    (e: unknown) => e as Error,
  )
  t.match(err?.message, /service exited with 78/)
  t.match(err?.message, /routes\[0\] \(id "meta"\): url: expected an http\(s\) URL whose host is not a denied address/)
})

t.test('routes already stored keep loading when the rules change', async (t) => {
  const p = prefix()
  const redis = new Redis(REDIS_URL)
  t.teardown(async () => {
    await cleanRedis(p)
    await redis.quit()
  })
  const logger = createLogger('silent')
  const open = (guard: DestinationGuard) => RouteStore.open({ redis, prefix: p, logger, reloadIntervalMs: 3_600_000, guard })
  const before = await open(new DestinationGuard())
  await before.create({ id: 'ten', match: 'a@example.com', url: 'http://10.0.0.1/hook' })
  await before.close()
  const after = await open(new DestinationGuard({ denyCidrs: ['10.0.0.0/8'] }))
  t.teardown(() => after.close())
  t.equal(after.get('ten')?.url, 'http://10.0.0.1/hook', 'the stored route still routes (its calls are refused at connect time)')
  await t.rejects(after.create({ id: 'ten2', match: 'b@example.com', url: 'http://10.0.0.2/hook' }), { code: 'ROUTE_ERR_INVALID' }, 'a new one is refused')
})
