/**
 * The one registry of error codes. Callers branch on `code`, never on message text.
 * LMTP_ERR_*: protocol engine; HOOK_ERR_*: webhook calls; ROUTE_ERR_*: routes;
 * CONFIG_ERR_*: start-up configuration; ADMIN_ERR_*: admin API; QUEUE_ERR_*: queue/Redis.
 */
export const ErrorCodes = {
  CONFIG_ERR_INVALID: 'Invalid configuration value',
  ROUTE_ERR_INVALID: 'Invalid route definition',
  ROUTE_ERR_DUPLICATE: 'Route id or pattern already in use',
  ROUTE_ERR_NOT_FOUND: 'Route not found',
  ROUTE_ERR_READ_ONLY: 'Route comes from the routes file and is read-only',
  LMTP_ERR_HANDLER_REPLY: 'Handler returned an invalid reply',
  LMTP_ERR_SHUTDOWN: 'Server is shutting down',
  LMTP_ERR_ABORTED: 'Transaction aborted before the end of the data',
  LMTP_ERR_SIZE: 'Message exceeds the size limit',
  HOOK_ERR_DESTINATION_DENIED: 'Webhook destination address is not allowed',
  HOOK_ERR_TIMEOUT: 'Webhook attempt exceeded its deadline',
  HOOK_ERR_CONNECT: 'Webhook connection failed',
  HOOK_ERR_RESPONSE_TOO_LARGE: 'Webhook response body exceeded the cap',
  HOOK_ERR_ABORTED: 'Webhook attempt was cancelled by the caller',
  QUEUE_ERR_MESSAGE_GONE: 'Stored message expired or was removed',
  QUEUE_ERR_NOT_DURABLE: 'Redis could not make the write durable',
  QUEUE_ERR_REDIS_UNREACHABLE: 'Redis could not be reached at start-up',
  ADMIN_ERR_UNAUTHORIZED: 'Missing or invalid bearer token',
  ADMIN_ERR_NOT_FOUND: 'Not found',
  ADMIN_ERR_VALIDATION: 'Request validation failed',
  ADMIN_ERR_CONFLICT: 'Conflict',
  ADMIN_ERR_READ_ONLY: 'Resource comes from the routes file and is read-only',
  ADMIN_ERR_NOT_DURABLE: 'Accept-mode routes need a durable Redis (AOF)',
  ADMIN_ERR_NOT_DEAD: 'Delivery is not dead-lettered',
  ADMIN_ERR_MESSAGE_GONE: 'Stored message of the delivery expired or was removed',
  ADMIN_ERR_PAYLOAD_TOO_LARGE: 'Request body exceeds the size limit',
  ADMIN_ERR_UNSUPPORTED_MEDIA_TYPE: 'Unsupported request content type',
  ADMIN_ERR_UNAVAILABLE: 'A backing service (Redis) is unavailable',
  ADMIN_ERR_INTERNAL: 'Internal error',
  ADMIN_ERR_BAD_REQUEST: 'Malformed HTTP request',
  ADMIN_ERR_METHOD_NOT_ALLOWED: 'Method not allowed on this path',
  ADMIN_ERR_TIMEOUT: 'Request not received in time',
  ADMIN_ERR_URI_TOO_LONG: 'Request path too long',
  ADMIN_ERR_EXPECTATION_FAILED: 'Unsupported Expect header',
  ADMIN_ERR_HEADERS_TOO_LARGE: 'Request headers too large',
} as const

export type ErrorCode = keyof typeof ErrorCodes

export class AppError extends Error {
  readonly code: ErrorCode
  readonly details: Record<string, unknown> | undefined

  constructor(code: ErrorCode, message?: string, details?: Record<string, unknown>, options?: { cause?: unknown }) {
    super(message ?? ErrorCodes[code], options)
    this.name = 'AppError'
    this.code = code
    this.details = details
  }
}

export function isAppError(err: unknown, code?: ErrorCode): err is AppError {
  return err instanceof AppError && (code === undefined || err.code === code)
}
