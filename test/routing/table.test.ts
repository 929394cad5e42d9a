import t from 'tap'
import { isAppError } from '../../src/errors.js'
import { matchesPattern, parsePattern, type PatternKind } from '../../src/routing/pattern.js'
import { parseRoute, type Route } from '../../src/routing/schema.js'
import { RouteTable } from '../../src/routing/table.js'

function route(id: string, match: string): Route {
  return parseRoute({ id, match, url: `http://127.0.0.1/${id}` }, id)
}

const ROUTES = [
  route('catch-all', '*'),
  route('sub-example', '*@*.example.com'),
  route('sub-eu', '*@*.eu.example.com'),
  route('domain', '*@example.com'),
  route('eu-domain', '*@eu.example.com'),
  route('sub-user', 'user+*@example.com'),
  route('exact-user', 'user@example.com'),
  route('exact-tagged', 'user+vip@example.com'),
  route('other-exact', 'Sales@Other.ORG'),
]

t.test('precedence: exact > subaddress > *@domain > *@*.domain (longest first) > *', async (t) => {
  const table = RouteTable.build(ROUTES)
  const cases: Array<[string, string | undefined]> = [
    ['user@example.com', 'exact-user'], // exact beats user+*@
    ['USER@Example.Com', 'exact-user'],
    ['user+vip@example.com', 'exact-tagged'], // exact beats user+*@
    ['user+news@example.com', 'sub-user'], // subaddress beats *@example.com
    ['someone@example.com', 'domain'],
    ['someone+x@example.com', 'domain'],
    ['a@eu.example.com', 'eu-domain'], // *@domain beats *@*.example.com
    ['a@fr.eu.example.com', 'sub-eu'], // longest suffix first
    ['a@x.fr.eu.example.com', 'sub-eu'],
    ['a@us.example.com', 'sub-example'],
    ['user@us.example.com', 'sub-example'], // user+*@example.com is not for subdomains
    ['sales@other.org', 'other-exact'],
    ['nobody@other.org', 'catch-all'],
    ['postmaster', 'catch-all'],
    ['a@example.com.', 'domain'],
  ]
  for (const [address, id] of cases) t.equal(table.lookup(address)?.id, id, `${address} → ${id}`)
})

t.test('without a catch-all an unmatched address has no route', async (t) => {
  const table = RouteTable.build(ROUTES.filter((r) => r.match !== '*'))
  t.equal(table.lookup('nobody@other.org'), undefined)
  t.equal(table.lookup('postmaster'), undefined)
  t.equal(table.lookup('a@example.org'), undefined)
  t.equal(table.lookup('a@com'), undefined)
})

/** The documented precedence, implemented by scanning every route (the reference). */
function scan(routes: readonly Route[], address: string): Route | undefined {
  const rank: Record<PatternKind, number> = { exact: 0, subaddress: 1, domain: 2, subdomain: 3, any: 4 }
  let best: { route: Route; rank: number; length: number } | undefined
  for (const r of routes) {
    const p = parsePattern(r.match)
    if (!matchesPattern(p, address)) continue
    const candidate = { route: r, rank: rank[p.kind], length: p.key.length }
    if (!best || candidate.rank < best.rank || (candidate.rank === best.rank && candidate.length > best.length)) best = candidate
  }
  return best?.route
}

t.test('lookup agrees with a scan of every pattern in precedence order', async (t) => {
  const labels = ['a', 'b', 'example', 'eu', 'x']
  const locals = ['user', 'user+tag', 'user+', 'other', 'a+b+c']
  const domains: string[] = []
  for (const a of labels) {
    domains.push(a)
    for (const b of labels) {
      domains.push(`${a}.${b}`)
      for (const c of labels) domains.push(`${a}.${b}.${c}`)
    }
  }
  const routes: Route[] = []
  let n = 0
  // a deterministic spread of patterns of every kind
  domains.forEach((d, i) => {
    if (i % 3 === 0) routes.push(route(`r${n++}`, `*@${d}`))
    if (i % 4 === 1) routes.push(route(`r${n++}`, `*@*.${d}`))
    if (i % 5 === 2) routes.push(route(`r${n++}`, `user+*@${d}`))
    if (i % 7 === 3) routes.push(route(`r${n++}`, `user+tag@${d}`))
    if (i % 11 === 4) routes.push(route(`r${n++}`, `other@${d}`))
  })
  for (const withCatchAll of [false, true]) {
    const list = withCatchAll ? [...routes, route('all', '*')] : routes
    const table = RouteTable.build(list)
    let mismatches = 0
    let matched = 0
    for (const d of domains) {
      for (const l of locals) {
        const address = `${l}@${d}`
        const expected = scan(list, address)?.id
        if (expected !== undefined) matched++
        if (table.lookup(address)?.id !== expected) {
          mismatches++
          t.equal(table.lookup(address)?.id, expected, address)
        }
      }
    }
    t.equal(mismatches, 0, `no lookup differs from the scan (${withCatchAll ? 'with' : 'without'} catch-all)`)
    t.ok(matched > 100, 'the comparison covers many matching addresses')
  }
})

t.test('the same pattern twice is a conflict, however it is spelled', async (t) => {
  const pairs: Array<[string, string]> = [
    ['user@example.com', 'USER@Example.com'],
    ['*@example.com', '*@EXAMPLE.COM.'],
    ['user+*@example.com', 'User+*@example.com'],
    ['*@*.example.com', '*@*.Example.com'],
    ['*', '*@*'],
  ]
  for (const [a, b] of pairs) {
    const err = t.throws(() => RouteTable.build([route('first', a), route('second', b)]))
    t.ok(isAppError(err, 'ROUTE_ERR_DUPLICATE'), `${a} and ${b} conflict`)
    t.match((err as Error).message, /route "second": match ".*" is already the pattern of route "first"/)
  }
  const err = t.throws(() => RouteTable.build([route('same', 'a@example.com'), route('same', 'b@example.com')]))
  t.ok(isAppError(err, 'ROUTE_ERR_DUPLICATE'), 'an id used twice is a conflict')
  t.match((err as Error).message, 'route id "same" is used twice')
})

t.test('different patterns over the same addresses are not conflicts', async (t) => {
  const table = RouteTable.build([route('a', 'user@example.com'), route('b', 'user+*@example.com'), route('c', '*@example.com'), route('d', '*@*.example.com')])
  t.equal(table.size, 4)
  t.equal(table.get('b')?.match, 'user+*@example.com')
  t.equal(table.byMatch('User+*@Example.com')?.id, 'b')
  t.same(
    table.routes.map((r) => r.id),
    ['a', 'b', 'c', 'd'],
    'routes keep their order',
  )
  t.ok(Object.isFrozen(table.routes), 'the route list cannot be changed')
})
