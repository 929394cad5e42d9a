/**
 * Every error the admin API answers has one shape, `{ "error": { code, message, details? } }`,
 * and a stable ADMIN_ERR_* code. This module maps what handlers, the route store, Fastify
 * (validation, body limit, content type, bad URLs, over-long path parameters) and Redis throw
 * onto that shape, and what Node's HTTP parser rejects before any request exists.
 */
import type { FastifyError } from 'fastify'
import { STATUS_CODES } from 'node:http'
import { AppError, ErrorCodes, isAppError, type ErrorCode } from '../errors.js'

export interface ErrorBody {
  readonly error: { readonly code: string; readonly message: string; readonly details?: Record<string, unknown> }
}

export interface MappedError {
  readonly status: number
  readonly body: ErrorBody
  /** Unexpected: log it. */
  readonly internal: boolean
}

/** HTTP status of each admin error code. */
export const ADMIN_STATUS = {
  ADMIN_ERR_VALIDATION: 400,
  ADMIN_ERR_BAD_REQUEST: 400,
  ADMIN_ERR_UNAUTHORIZED: 401,
  ADMIN_ERR_NOT_FOUND: 404,
  ADMIN_ERR_METHOD_NOT_ALLOWED: 405,
  ADMIN_ERR_TIMEOUT: 408,
  ADMIN_ERR_CONFLICT: 409,
  ADMIN_ERR_READ_ONLY: 409,
  ADMIN_ERR_NOT_DURABLE: 409,
  ADMIN_ERR_NOT_DEAD: 409,
  ADMIN_ERR_MESSAGE_GONE: 410,
  ADMIN_ERR_PAYLOAD_TOO_LARGE: 413,
  ADMIN_ERR_URI_TOO_LONG: 414,
  ADMIN_ERR_UNSUPPORTED_MEDIA_TYPE: 415,
  ADMIN_ERR_EXPECTATION_FAILED: 417,
  ADMIN_ERR_HEADERS_TOO_LARGE: 431,
  ADMIN_ERR_INTERNAL: 500,
  ADMIN_ERR_UNAVAILABLE: 503,
} as const satisfies Partial<Record<ErrorCode, number>>

export type AdminErrorCode = keyof typeof ADMIN_STATUS

/** Route store errors and the admin codes they become. */
const ROUTE_ERRORS: Partial<Record<ErrorCode, AdminErrorCode>> = {
  ROUTE_ERR_INVALID: 'ADMIN_ERR_VALIDATION',
  ROUTE_ERR_DUPLICATE: 'ADMIN_ERR_CONFLICT',
  ROUTE_ERR_NOT_FOUND: 'ADMIN_ERR_NOT_FOUND',
  ROUTE_ERR_READ_ONLY: 'ADMIN_ERR_READ_ONLY',
}

export function adminError(code: AdminErrorCode, message: string, details?: Record<string, unknown>): AppError {
  return new AppError(code, message, details)
}

function body(code: AdminErrorCode, message: string, details?: Record<string, unknown>): MappedError {
  return {
    status: ADMIN_STATUS[code],
    body: { error: { code, message, ...(details === undefined ? {} : { details }) } },
    internal: code === 'ADMIN_ERR_INTERNAL',
  }
}

interface SchemaError {
  readonly instancePath?: string
  readonly keyword?: string
  readonly message?: string
  readonly params?: Record<string, unknown>
}

/** `state: expected one of delivered, ...` — one line per field, the field named first. */
export function validationProblems(part: string, errors: readonly SchemaError[]): string[] {
  const lines: string[] = []
  for (const e of errors) {
    if (e.keyword === 'additionalProperties') continue // reported at the property itself
    const path = (e.instancePath ?? '')
      .split('/')
      .filter((s) => s !== '')
      .join('.')
    const field = path === '' ? part : path
    if (e.keyword === 'boolean') {
      lines.push(`${field}: unknown ${part === 'querystring' ? 'query parameter' : 'field'}`)
    } else if (e.keyword === 'enum' && Array.isArray(e.params?.allowedValues)) {
      lines.push(`${field}: expected one of ${(e.params.allowedValues as unknown[]).join(', ')}`)
    } else if (e.keyword === 'required' && Array.isArray(e.params?.requiredProperties)) {
      for (const name of e.params.requiredProperties as string[]) lines.push(`${path === '' ? name : `${path}.${name}`}: required`)
    } else {
      lines.push(`${field}: ${e.message ?? 'invalid'}`)
    }
  }
  return lines.length > 0 ? lines : [`${part}: invalid`]
}

const PART_NAMES: Record<string, string> = { querystring: 'query', params: 'path', body: 'body', headers: 'headers' }

function isRedisUnavailable(err: unknown): boolean {
  const e = err as { name?: unknown; message?: unknown }
  return (
    e?.name === 'MaxRetriesPerRequestError' || (typeof e?.message === 'string' && /Connection is closed|Stream isn't writeable|ECONNREFUSED/.test(e.message))
  )
}

/** The status and body to answer for any error. */
export function mapError(err: unknown): MappedError {
  if (isAppError(err)) {
    if (err.code in ADMIN_STATUS) return body(err.code as AdminErrorCode, err.message, err.details)
    const mapped = ROUTE_ERRORS[err.code]
    if (mapped) return body(mapped, err.message, err.details)
  }
  const fe = err as FastifyError & { validation?: SchemaError[]; validationContext?: string }
  if (Array.isArray(fe?.validation)) {
    const part = fe.validationContext ?? 'body'
    const problems = validationProblems(part, fe.validation)
    const where = PART_NAMES[part] ?? part
    return body('ADMIN_ERR_VALIDATION', `${where}: ${problems.join('; ')}`, { part: where, problems })
  }
  switch (fe?.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return body('ADMIN_ERR_PAYLOAD_TOO_LARGE', 'body: larger than the limit of the admin API')
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return body('ADMIN_ERR_UNSUPPORTED_MEDIA_TYPE', 'body: expected content-type application/json')
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return body('ADMIN_ERR_VALIDATION', 'body: expected a JSON document, got an empty body', { part: 'body' })
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return body('ADMIN_ERR_VALIDATION', 'body: expected a JSON document, got invalid JSON', { part: 'body' })
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return body('ADMIN_ERR_BAD_REQUEST', 'body: its size does not match content-length')
    case 'FST_ERR_BAD_URL':
      return body('ADMIN_ERR_BAD_REQUEST', 'path: invalid percent-encoding')
    case 'FST_ERR_MAX_PARAM_LENGTH':
      return body('ADMIN_ERR_URI_TOO_LONG', `path: a path parameter is longer than ${MAX_PARAM_LENGTH} characters`)
  }
  if (isRedisUnavailable(err)) return body('ADMIN_ERR_UNAVAILABLE', 'Redis is unavailable, try again later')
  const status = typeof fe?.statusCode === 'number' ? fe.statusCode : 500
  const byStatus = BY_STATUS[status] ?? (status >= 400 && status < 500 ? 'ADMIN_ERR_BAD_REQUEST' : undefined)
  if (byStatus !== undefined && byStatus !== 'ADMIN_ERR_INTERNAL') {
    return body(byStatus, typeof fe.message === 'string' && fe.message !== '' ? fe.message : ErrorCodes[byStatus])
  }
  return body('ADMIN_ERR_INTERNAL', 'internal error (see the service log)')
}

/** The router's limit on one path parameter (Fastify's `maxParamLength`). */
export const MAX_PARAM_LENGTH = 100

/** Any other framework error: the code of its status (the first code listed for it). */
const BY_STATUS: Partial<Record<number, AdminErrorCode>> = {}
for (const [code, status] of Object.entries(ADMIN_STATUS) as [AdminErrorCode, number][]) {
  if (code !== 'ADMIN_ERR_VALIDATION') BY_STATUS[status] ??= code
}

/**
 * What Node's HTTP parser rejects ('clientError': a malformed request line or header, headers
 * over the size limit, headers not received in time): there is no request, so the caller writes
 * `rawResponse` to the socket.
 */
export function mapClientError(err: { code?: string }): MappedError {
  if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') return body('ADMIN_ERR_TIMEOUT', 'request: the request line and headers did not arrive in time')
  if (err.code === 'HPE_HEADER_OVERFLOW') return body('ADMIN_ERR_HEADERS_TOO_LARGE', 'headers: the request line and headers exceed 16 KiB')
  return body('ADMIN_ERR_BAD_REQUEST', `request: not a valid HTTP/1.1 request${err.code?.startsWith('HPE_') ? ` (${err.code})` : ''}`)
}

/** A whole HTTP/1.1 response carrying `mapped`, closing the connection. */
export function rawResponse(mapped: MappedError): string {
  const json = JSON.stringify(mapped.body)
  return (
    `HTTP/1.1 ${mapped.status} ${STATUS_CODES[mapped.status] ?? 'Error'}\r\n` +
    `content-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(json)}\r\nconnection: close\r\n\r\n${json}`
  )
}
