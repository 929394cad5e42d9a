/**
 * A compiled, immutable route table. `lookup` never scans the routes: exact, subaddress and
 * domain patterns are map look-ups, subdomain patterns one look-up per label of the address's
 * domain, so its cost does not grow with the number of routes.
 *
 * Precedence, most specific first:
 *   1. exact address             support@example.com
 *   2. subaddress                user+*@example.com (for user@ and user+anything@)
 *   3. domain                    *@example.com
 *   4. subdomain, longest first  *@*.eu.example.com before *@*.example.com
 *   5. catch-all                 *
 */
import { AppError } from '../errors.js'
import { addressParts, baseLocal, parsePattern, type PatternKind } from './pattern.js'
import type { Route } from './schema.js'

export class RouteTable {
  /** Routes in the order given. */
  readonly routes: readonly Route[]
  /** Store version the table was built from (0 for a table of file routes only). */
  readonly version: number
  private readonly byId: ReadonlyMap<string, Route>
  private readonly byPattern: ReadonlyMap<string, Route>
  private readonly exact = new Map<string, Route>()
  private readonly subaddress = new Map<string, Route>()
  private readonly domain = new Map<string, Route>()
  private readonly subdomain = new Map<string, Route>()
  private readonly any: Route | undefined

  private constructor(routes: readonly Route[], version: number) {
    const byId = new Map<string, Route>()
    const byPattern = new Map<string, Route>()
    let any: Route | undefined
    for (const route of routes) {
      const taken = byId.get(route.id)
      if (taken) throw new AppError('ROUTE_ERR_DUPLICATE', `route id "${route.id}" is used twice`, { field: 'id', id: route.id })
      const pattern = parsePattern(route.match, `route "${route.id}": match`)
      const other = byPattern.get(pattern.text)
      if (other) {
        throw new AppError('ROUTE_ERR_DUPLICATE', `route "${route.id}": match "${pattern.text}" is already the pattern of route "${other.id}"`, {
          field: 'match',
          id: route.id,
          conflictingId: other.id,
        })
      }
      byId.set(route.id, route)
      byPattern.set(pattern.text, route)
      if (pattern.kind === 'any') any = route
      else this.mapFor(pattern.kind).set(pattern.key, route)
    }
    this.routes = Object.freeze([...routes])
    this.version = version
    this.byId = byId
    this.byPattern = byPattern
    this.any = any
  }

  /**
   * Builds a table; throws ROUTE_ERR_DUPLICATE when two routes share an id or a pattern
   * (after normalisation) and ROUTE_ERR_INVALID for a pattern that does not parse.
   */
  static build(routes: readonly Route[], version = 0): RouteTable {
    return new RouteTable(routes, version)
  }

  private mapFor(kind: Exclude<PatternKind, 'any'>): Map<string, Route> {
    switch (kind) {
      case 'exact':
        return this.exact
      case 'subaddress':
        return this.subaddress
      case 'domain':
        return this.domain
      case 'subdomain':
        return this.subdomain
    }
  }

  get size(): number {
    return this.routes.length
  }

  /** The route serving a recipient address, by the precedence above; `undefined` when none does. */
  lookup(address: string): Route | undefined {
    const { address: normal, local, domain } = addressParts(address)
    if (domain === '') return this.exact.get(normal) ?? this.any
    const found =
      this.exact.get(normal) ?? (this.subaddress.size > 0 ? this.subaddress.get(`${baseLocal(local)}@${domain}`) : undefined) ?? this.domain.get(domain)
    if (found) return found
    if (this.subdomain.size > 0) {
      for (let dot = domain.indexOf('.'); dot >= 0; dot = domain.indexOf('.', dot + 1)) {
        const route = this.subdomain.get(domain.slice(dot + 1))
        if (route) return route
      }
    }
    return this.any
  }

  get(id: string): Route | undefined {
    return this.byId.get(id)
  }

  /** The route whose pattern is the same as `match` after normalisation. */
  byMatch(match: string): Route | undefined {
    return this.byPattern.get(parsePattern(match).text)
  }
}
