import t from 'tap'
import type { LookupAddress } from 'node:dns'
import { isAppError } from '../../src/errors.js'
import { DestinationGuard, addressToBigInt, parseCidr } from '../../src/delivery/guard.js'

t.test('addresses map into one 128-bit space', async (t) => {
  t.equal(addressToBigInt('0.0.0.1'), 0xffff00000001n)
  t.equal(addressToBigInt('::ffff:0.0.0.1'), 0xffff00000001n)
  t.equal(addressToBigInt('::ffff:a9fe:a9fe'), addressToBigInt('169.254.169.254'))
  t.equal(addressToBigInt('::1'), 1n)
  t.equal(addressToBigInt('::'), 0n)
  t.equal(addressToBigInt('fe80::1%eth0'), (0xfe80n << 112n) | 1n)
  t.equal(addressToBigInt('2001:db8:0:0:0:0:2:1'), addressToBigInt('2001:db8::2:1'))
  t.equal(addressToBigInt('1:2:3:4:5:6:7:8'), 0x00010002000300040005000600070008n)
  t.equal(addressToBigInt('64:ff9b::192.0.2.33'), (0x64n << 112n) | (0xff9bn << 96n) | 0xc0000221n)
  t.equal(addressToBigInt('example.com'), null)
  t.equal(addressToBigInt('256.1.1.1'), null)
})

t.test('parseCidr', async (t) => {
  t.same(parseCidr('10.1.2.3/8'), { text: '10.1.2.3/8', network: addressToBigInt('10.0.0.0'), bits: 104 })
  t.equal(parseCidr('192.0.2.7').bits, 128)
  t.equal(parseCidr('fd00::/8').bits, 8)
  t.equal(parseCidr('0.0.0.0/0').bits, 96)
  for (const bad of ['10.0.0.0/33', '::/129', 'example.com/8', '10.0.0.0/8/1', '10.0.0.0/-1', '', 'fe80::1%eth0/64']) {
    t.throws(() => parseCidr(bad, 'WEBHOOK_DENY_CIDRS'), { code: 'CONFIG_ERR_INVALID', message: /^WEBHOOK_DENY_CIDRS: expected a CIDR/ }, bad)
  }
})

const table: Array<{ name: string; allow?: string[]; deny?: string[]; cases: Record<string, boolean> }> = [
  {
    name: 'defaults',
    cases: {
      '169.254.169.254': false,
      '169.254.0.1': false,
      '::ffff:169.254.169.254': false,
      'fe80::1': false,
      'febf::1': false,
      'fec0::1': true,
      'fd00:ec2::254': false,
      'fd00:ec2::253': true,
      '0.0.0.0': false,
      '::': false,
      '127.0.0.1': true,
      '::1': true,
      '10.0.0.1': true,
      '93.184.215.14': true,
      '2001:db8::1': true,
    },
  },
  {
    name: 'extra deny',
    deny: ['127.0.0.0/8', '::1/128', '10.0.0.0/8'],
    cases: { '127.0.0.1': false, '127.255.1.2': false, '::ffff:127.0.0.1': false, '::1': false, '10.9.9.9': false, '11.0.0.1': true, '169.254.169.254': false },
  },
  {
    name: 'allow list narrows',
    allow: ['10.0.0.0/8', '2001:db8::/32'],
    cases: { '10.1.1.1': true, '::ffff:10.1.1.1': true, '11.0.0.1': false, '127.0.0.1': false, '2001:db8::5': true, '2001:db9::5': false },
  },
  {
    name: 'a broad allow entry does not open the default deny list',
    allow: ['0.0.0.0/0', '::/0'],
    cases: { '169.254.169.254': false, 'fe80::1': false, 'fd00:ec2::254': false, '8.8.8.8': true, '2001:db8::1': true },
  },
  {
    name: 'an allow entry inside a default deny entry opens exactly that',
    allow: ['169.254.10.0/24', '8.8.8.8/32'],
    cases: { '169.254.10.7': true, '169.254.169.254': false, '8.8.8.8': true, '8.8.4.4': false },
  },
  {
    name: 'extra deny beats allow',
    allow: ['10.0.0.0/8'],
    deny: ['10.1.0.0/16'],
    cases: { '10.2.0.1': true, '10.1.0.1': false },
  },
]

for (const row of table) {
  t.test(`check: ${row.name}`, async (t) => {
    const guard = new DestinationGuard({ allowCidrs: row.allow ?? [], denyCidrs: row.deny ?? [] })
    for (const [address, allowed] of Object.entries(row.cases)) t.equal(guard.check(address).allowed, allowed, address)
  })
}

t.test('a refusal says why', async (t) => {
  const guard = new DestinationGuard({ allowCidrs: ['10.0.0.0/8'], denyCidrs: ['10.1.0.0/16'] })
  t.same(guard.check('10.1.2.3'), { allowed: false, reason: 'inside denied range 10.1.0.0/16' })
  t.same(guard.check('11.0.0.1'), { allowed: false, reason: 'outside every allowed range' })
  t.same(guard.check('not-an-ip'), { allowed: false, reason: 'not an IP address' })
  const err = guard.refusal('hooks.example', '10.1.2.3')
  t.ok(isAppError(err, 'HOOK_ERR_DESTINATION_DENIED'))
  t.equal(err?.message, 'webhook destination hooks.example (10.1.2.3) is not allowed: inside denied range 10.1.0.0/16')
  t.equal(guard.refusal('10.2.0.1', '10.2.0.1'), null)
})

// A resolver answering from a fixed table, so the lookup rules can be shown without DNS traffic.
function resolverOf(records: Record<string, LookupAddress[]>) {
  return (hostname: string, _options: unknown, callback: (err: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void): void => {
    const found = records[hostname]
    if (found) callback(null, found)
    else callback(Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' }), [])
  }
}

function lookup(guard: DestinationGuard, hostname: string, all: boolean): Promise<{ err: unknown; address: unknown; family: unknown }> {
  return new Promise((resolve) => guard.lookup(hostname, { all } as never, (err, address, family) => resolve({ err, address, family })))
}

t.test('lookup checks every resolved address', async (t) => {
  const guard = new DestinationGuard(
    {},
    resolverOf({
      'public.test': [
        { address: '192.0.2.10', family: 4 },
        { address: '2001:db8::10', family: 6 },
      ],
      'mixed.test': [
        { address: '192.0.2.10', family: 4 },
        { address: '169.254.169.254', family: 4 },
      ],
      'mapped.test': [{ address: '::ffff:169.254.169.254', family: 6 }],
    }),
  )
  const one = await lookup(guard, 'public.test', false)
  t.same(one, { err: null, address: '192.0.2.10', family: 4 })
  const all = await lookup(guard, 'public.test', true)
  t.same(all.address, [
    { address: '192.0.2.10', family: 4 },
    { address: '2001:db8::10', family: 6 },
  ])

  const mixed = await lookup(guard, 'mixed.test', true)
  t.ok(isAppError(mixed.err, 'HOOK_ERR_DESTINATION_DENIED'), 'one forbidden address refuses the name')
  t.match((mixed.err as Error).message, /mixed\.test \(169\.254\.169\.254\)/)
  t.ok(isAppError((await lookup(guard, 'mapped.test', false)).err, 'HOOK_ERR_DESTINATION_DENIED'))
  t.match((await lookup(guard, 'missing.test', false)).err, { code: 'ENOTFOUND' }, 'resolver errors pass through')
})

t.test('lookup through the system resolver: localhost', async (t) => {
  const open = await lookup(new DestinationGuard(), 'localhost', true)
  t.equal(open.err, null)
  const closed = await lookup(new DestinationGuard({ denyCidrs: ['127.0.0.0/8', '::1/128'] }), 'localhost', true)
  t.ok(isAppError(closed.err, 'HOOK_ERR_DESTINATION_DENIED'))
})
