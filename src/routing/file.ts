/**
 * The routes file (ROUTES_FILE): YAML with a top-level `routes:` list. Its routes are read-only
 * for the admin API. Every error names the file, the route and the field.
 */
import { readFileSync } from 'node:fs'
import { parseDocument } from 'yaml'
import { AppError, isAppError } from '../errors.js'
import { parseRoute, type ParseRouteOptions, type Route } from './schema.js'

function fileError(path: string, message: string, cause?: unknown): AppError {
  return new AppError('ROUTE_ERR_INVALID', `${path}: ${message}`, { file: path }, { cause })
}

/** Parses the text of a routes file; `path` names it in messages. `options.guard`: see parseRoute. */
export function parseRoutesFile(text: string, path: string, options: ParseRouteOptions = {}): Route[] {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true })
  if (doc.errors.length > 0) {
    const first = doc.errors[0]!
    const where = first.linePos?.[0] ? `line ${first.linePos[0].line}, column ${first.linePos[0].col}: ` : ''
    throw fileError(path, `not valid YAML: ${where}${(first.message.split('\n')[0] ?? '').replace(/ at line \d+, column \d+:?$/, '')}`)
  }
  const top: unknown = doc.toJS({ maxAliasCount: 100 })
  if (top === null || top === undefined) return []
  if (typeof top !== 'object' || Array.isArray(top)) throw fileError(path, 'expected a map with a "routes" list at the top level')
  const unknown = Object.keys(top).filter((k) => k !== 'routes')
  if (unknown.length > 0) throw fileError(path, `${unknown[0]}: unknown top-level field (expected only "routes")`)
  const list = (top as { routes?: unknown }).routes
  if (list === null || list === undefined) return []
  if (!Array.isArray(list)) throw fileError(path, `routes: expected a list of routes, got ${typeof list}`)

  const routes: Route[] = []
  const ids = new Map<string, number>()
  const patterns = new Map<string, number>()
  for (let i = 0; i < list.length; i++) {
    const where = `routes[${i}]`
    let route: Route
    try {
      route = parseRoute(list[i], where, 'file', options)
    } catch (err) {
      if (isAppError(err)) throw new AppError(err.code, `${path}: ${err.message}`, { ...err.details, file: path }, { cause: err })
      throw err
    }
    const sameId = ids.get(route.id)
    if (sameId !== undefined) {
      throw new AppError('ROUTE_ERR_DUPLICATE', `${path}: ${where} (id "${route.id}"): id: already used by routes[${sameId}]`, {
        file: path,
        field: 'id',
        id: route.id,
      })
    }
    const samePattern = patterns.get(route.match)
    if (samePattern !== undefined) {
      throw new AppError(
        'ROUTE_ERR_DUPLICATE',
        `${path}: ${where} (id "${route.id}"): match: "${route.match}" is already the pattern of routes[${samePattern}] (id "${routes[samePattern]!.id}")`,
        {
          file: path,
          field: 'match',
          id: route.id,
          conflictingId: routes[samePattern]!.id,
        },
      )
    }
    ids.set(route.id, i)
    patterns.set(route.match, i)
    routes.push(route)
  }
  return routes
}

/** Reads and validates a routes file. Throws ROUTE_ERR_INVALID (or ROUTE_ERR_DUPLICATE) naming the file. */
export function loadRoutesFile(path: string, options: ParseRouteOptions = {}): Route[] {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    throw fileError(path, `cannot read the routes file (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, err)
  }
  return parseRoutesFile(text, path, options)
}
