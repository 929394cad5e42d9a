/**
 * Route lookup: the compiled RouteTable against a linear scan of the same routes, in the same run.
 *
 * The scan is a fair peer: patterns are parsed once up front and the address is split once per
 * lookup; it walks every route and keeps the most specific match by the documented precedence.
 * Both must give the same route for every address, which is checked before timing.
 *
 * Routes: a mix of exact, user+*@, *@domain and *@*.domain patterns plus a catch-all. Addresses:
 * a mix that hits each kind, and misses that fall through to the catch-all.
 *
 * Usage: npm run bench -- routing [--routes 10000] [--addresses 1000] [--repeat 5]
 *    or: npx tsx bench/routing.ts [same options]
 */
import { parseArgs } from 'node:util'
import { addressParts, baseLocal, parsePattern, type Pattern, type PatternKind } from '../src/routing/pattern.js'
import { parseRoute, type Route } from '../src/routing/schema.js'
import { RouteTable } from '../src/routing/table.js'

const { values: opts } = parseArgs({
  options: {
    routes: { type: 'string', default: '10000' },
    addresses: { type: 'string', default: '1000' },
    repeat: { type: 'string', default: '5' },
  },
})

function positive(name: string, raw: string): number {
  const n = Number(raw)
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name}: expected a positive integer, got ${JSON.stringify(raw)}`)
  return n
}

const ROUTES = positive('routes', opts.routes)
const ADDRESSES = positive('addresses', opts.addresses)
const REPEAT = positive('repeat', opts.repeat)

function buildRoutes(n: number): Route[] {
  const routes: Route[] = []
  const add = (match: string): void => {
    routes.push(parseRoute({ id: `r${routes.length}`, match, url: 'http://127.0.0.1:9/hook' }, `routes[${routes.length}]`))
  }
  for (let i = 0; routes.length < n - 1; i++) {
    switch (i % 4) {
      case 0:
        add(`user${i}@tenant${i % 500}.example.com`)
        break
      case 1:
        add(`team${i}+*@tenant${i % 500}.example.com`)
        break
      case 2:
        add(`*@dept${i}.example.org`)
        break
      case 3:
        add(`*@*.zone${i}.example.net`)
        break
    }
  }
  add('*')
  return routes
}

function buildAddresses(n: number, routeCount: number): string[] {
  const out: string[] = []
  for (let i = 0; out.length < n; i++) {
    const j = (i * 7919) % routeCount // spread over the routes
    const k = j - (j % 4)
    switch (i % 5) {
      case 0:
        out.push(`User${k}@Tenant${k % 500}.example.com`)
        break
      case 1:
        out.push(`team${k + 1}+news@tenant${(k + 1) % 500}.example.com`)
        break
      case 2:
        out.push(`anyone@dept${k + 2}.example.org`)
        break
      case 3:
        out.push(`a@mx.eu.zone${k + 3}.example.net`)
        break
      case 4:
        out.push(`nobody${i}@unrouted.example`)
        break
    }
  }
  return out
}

const RANK: Record<PatternKind, number> = { exact: 0, subaddress: 1, domain: 2, subdomain: 3, any: 4 }

/** The peer: one pass over every route, keeping the most specific match. */
function linearScan(compiled: ReadonlyArray<{ route: Route; pattern: Pattern }>): (address: string) => Route | undefined {
  return (address) => {
    const { address: normal, local, domain } = addressParts(address)
    const subKey = `${baseLocal(local)}@${domain}`
    let best: Route | undefined
    let bestRank = 5
    let bestLength = -1
    for (const { route, pattern } of compiled) {
      let hit: boolean
      switch (pattern.kind) {
        case 'exact':
          hit = normal === pattern.key
          break
        case 'subaddress':
          hit = subKey === pattern.key
          break
        case 'domain':
          hit = domain === pattern.key
          break
        case 'subdomain':
          hit = domain.length > pattern.key.length && domain.endsWith(pattern.key) && domain[domain.length - pattern.key.length - 1] === '.'
          break
        case 'any':
          hit = true
          break
      }
      if (!hit) continue
      const rank = RANK[pattern.kind]
      if (rank < bestRank || (rank === bestRank && pattern.key.length > bestLength)) {
        best = route
        bestRank = rank
        bestLength = pattern.key.length
      }
    }
    return best
  }
}

/** Lookups per second: runs whole passes over the addresses for at least `minMs`. */
function measure(lookup: (address: string) => Route | undefined, addresses: readonly string[], minMs: number): number {
  let sink = 0
  let count = 0
  const start = process.hrtime.bigint()
  let elapsedMs = 0
  while (elapsedMs < minMs) {
    for (const a of addresses) if (lookup(a) !== undefined) sink++
    count += addresses.length
    elapsedMs = Number(process.hrtime.bigint() - start) / 1e6
  }
  if (sink !== count) throw new Error('every address must have a route (the catch-all)')
  return (count / elapsedMs) * 1000
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]!
}

const fmt = (n: number): string => Math.round(n).toLocaleString('en-US')

const routes = buildRoutes(ROUTES)
const addresses = buildAddresses(ADDRESSES, ROUTES)
const buildStart = process.hrtime.bigint()
const table = RouteTable.build(routes)
const buildMs = Number(process.hrtime.bigint() - buildStart) / 1e6
const scan = linearScan(routes.map((route) => ({ route, pattern: parsePattern(route.match) })))

// Same answers before any timing.
const kinds = new Map<string, number>()
for (const a of addresses) {
  const fromTable = table.lookup(a)
  if (fromTable !== scan(a)) throw new Error(`table and scan disagree for ${a}: ${fromTable?.id} vs ${scan(a)?.id}`)
  const kind = parsePattern(fromTable!.match).kind
  kinds.set(kind, (kinds.get(kind) ?? 0) + 1)
}

const tableRates: number[] = []
const scanRates: number[] = []
measure(table.lookup.bind(table), addresses, 200) // warm-up
measure(scan, addresses, 200)
for (let i = 0; i < REPEAT; i++) {
  tableRates.push(measure(table.lookup.bind(table), addresses, 300))
  scanRates.push(measure(scan, addresses, 300))
}
const tableRate = median(tableRates)
const scanRate = median(scanRates)

console.log(`routing: ${ROUTES} routes, ${addresses.length} addresses (${[...kinds].map(([k, n]) => `${k} ${n}`).join(', ')}), median of ${REPEAT}`)
console.log(`  table build        ${buildMs.toFixed(1)} ms`)
console.log(`  RouteTable.lookup  ${fmt(tableRate)} lookups/s`)
console.log(`  linear scan        ${fmt(scanRate)} lookups/s`)
console.log(`  ratio table/scan   ${(tableRate / scanRate).toFixed(0)}x`)
