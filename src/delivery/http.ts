/**
 * One webhook attempt over HTTP. `WebhookClient` owns an undici Agent (keep-alive, one pool per
 * origin, connect timeout, destination guard at connect time); `attempt()` sends one request
 * under one overall deadline that covers connect, headers and body, never follows redirects,
 * always consumes the response body and reads at most a capped amount of it. Network failures are
 * results, not exceptions, and nothing it reports contains request header values or secrets.
 */
import { readFileSync } from 'node:fs'
import { performance } from 'node:perf_hooks'
import { Agent, type Dispatcher } from 'undici'
import { AppError, isAppError } from '../errors.js'
import { truncateUtf8 } from '../lmtp/reply.js'
import { DestinationGuard, type GuardOptions } from './guard.js'

/** How much of a response body is read; past it the connection is closed. */
export const MAX_RESPONSE_BYTES = 64 * 1024
/** How much of the response body is kept as text for the delivery log. */
export const SNIPPET_BYTES = 1024

export type IncomingHttpHeaders = Dispatcher.ResponseData['headers']

export type AttemptErrorCode = 'HOOK_ERR_TIMEOUT' | 'HOOK_ERR_CONNECT' | 'HOOK_ERR_DESTINATION_DENIED' | 'HOOK_ERR_RESPONSE_TOO_LARGE' | 'HOOK_ERR_ABORTED'

export interface AttemptRequest {
  readonly url: string
  readonly method?: 'POST'
  /** Request headers; `user-agent` and `content-length` are set by the client. */
  readonly headers: Readonly<Record<string, string>>
  readonly body: Buffer | string
  /** Overall deadline of the attempt in milliseconds: connect + request + response headers + body. */
  readonly deadlineMs: number
  /** Cancels the attempt (shutdown); the result then carries HOOK_ERR_ABORTED. */
  readonly signal?: AbortSignal
}

export interface AttemptResult {
  /**
   * HTTP status when response headers arrived. It stays set when the body then failed (too large,
   * deadline hit while reading it): the status is the webhook's answer, the error says why there
   * is no body.
   */
  readonly status?: number
  readonly headers: IncomingHttpHeaders
  /** First 1 KiB of the response body, as UTF-8 text. */
  readonly bodySnippet: string
  /** The parsed body, when the response is JSON, complete and within the cap. */
  readonly json?: unknown
  readonly durationMs: number
  /** From `Retry-After` (seconds or HTTP date), in milliseconds from now. */
  readonly retryAfterMs?: number
  readonly error?: { readonly code: AttemptErrorCode; readonly message: string }
}

export interface WebhookClientOptions {
  /** Destination guard, or the options to build one (default: the default deny list only). */
  readonly guard?: DestinationGuard | GuardOptions
  /** TCP (and TLS) connect timeout, including DNS resolution. Default 5 s. */
  readonly connectTimeoutMs?: number
  /** Idle keep-alive sockets close after this long. Default 30 s. */
  readonly keepAliveTimeoutMs?: number
  /** Maximum sockets per origin. Default 64. */
  readonly connectionsPerOrigin?: number
  /** Response body cap. Default MAX_RESPONSE_BYTES (64 KiB). */
  readonly maxResponseBytes?: number
}

function findVersion(): string {
  // src/delivery/http.ts and dist/delivery/http.js both sit two levels under the package root
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { name?: unknown; version?: unknown }
    if (pkg.name === 'lmtp-webhook' && typeof pkg.version === 'string') return pkg.version
  } catch {
    // fall through
  }
  return '0.0.0'
}

export const USER_AGENT = `lmtp-webhook/${findVersion()}`

/** Parses `Retry-After` (delta-seconds or an HTTP date) into milliseconds from `now`. */
export function parseRetryAfter(value: string | string[] | undefined, now = Date.now()): number | undefined {
  const raw = Array.isArray(value) ? value[0] : value
  if (raw === undefined) return undefined
  const text = raw.trim()
  if (/^\d+$/.test(text)) return Number(text) * 1000
  if (!/[a-z]/i.test(text)) return undefined
  const at = Date.parse(text)
  return Number.isNaN(at) ? undefined : Math.max(0, at - now)
}

function isJson(contentType: string | string[] | undefined): boolean {
  const value = Array.isArray(contentType) ? contentType[0] : contentType
  return value !== undefined && /^\s*application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i.test(value)
}

/** Walks an error's cause chain for an undici or node error code. */
function codesOf(err: unknown): string[] {
  const codes: string[] = []
  for (let e = err as { code?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 5; e = e.cause as typeof e, depth++) {
    if (typeof e.code === 'string') codes.push(e.code)
  }
  return codes
}

function findAppError(err: unknown): AppError | undefined {
  for (let e = err as { cause?: unknown } | undefined, depth = 0; e && depth < 5; e = e.cause as typeof e, depth++) {
    if (isAppError(e)) return e
  }
  return undefined
}

function describe(err: unknown): string {
  const e = err as { message?: unknown; code?: unknown }
  const message = typeof e?.message === 'string' && e.message !== '' ? e.message : String(err)
  return typeof e?.code === 'string' && !message.includes(e.code) ? `${e.code}: ${message}` : message
}

export class WebhookClient {
  readonly guard: DestinationGuard
  readonly #agent: Agent
  readonly #maxResponseBytes: number

  constructor(options: WebhookClientOptions = {}) {
    this.guard = options.guard instanceof DestinationGuard ? options.guard : new DestinationGuard(options.guard ?? {})
    this.#maxResponseBytes = options.maxResponseBytes ?? MAX_RESPONSE_BYTES
    this.#agent = new Agent({
      connections: options.connectionsPerOrigin ?? 64,
      keepAliveTimeout: options.keepAliveTimeoutMs ?? 30_000,
      connect: this.guard.connector({ timeout: options.connectTimeoutMs ?? 5_000 }),
    })
  }

  /** One HTTP attempt. Resolves with the result of every network outcome; never rejects for one. */
  async attempt(request: AttemptRequest): Promise<AttemptResult> {
    const started = performance.now()
    const elapsed = (): number => Math.round((performance.now() - started) * 1000) / 1000
    const deadline = new AbortController()
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      deadline.abort(new AppError('HOOK_ERR_TIMEOUT', `webhook attempt exceeded its ${request.deadlineMs} ms deadline`))
    }, request.deadlineMs)
    // the caller's signal (often one per process, for shutdown) is forwarded, never combined, so
    // nothing of this attempt stays attached to it afterwards
    const onCallerAbort = (): void => deadline.abort(request.signal?.reason)
    request.signal?.addEventListener('abort', onCallerAbort, { once: true })
    const signal = deadline.signal

    let status: number | undefined
    let headers: IncomingHttpHeaders = {}
    let snippet = Buffer.alloc(0)
    const fail = (code: AttemptErrorCode, message: string): AttemptResult => ({
      ...(status === undefined ? {} : { status }),
      headers,
      bodySnippet: snippetText(snippet),
      durationMs: elapsed(),
      ...retryAfter(headers, status),
      error: { code, message },
    })
    const failure = (err: unknown): AttemptResult => {
      if (timedOut)
        return fail(
          'HOOK_ERR_TIMEOUT',
          `webhook attempt exceeded its ${request.deadlineMs} ms deadline${status === undefined ? '' : ' while reading the response body'}`,
        )
      if (request.signal?.aborted) return fail('HOOK_ERR_ABORTED', 'webhook attempt was cancelled')
      const appError = findAppError(err)
      if (appError?.code === 'HOOK_ERR_DESTINATION_DENIED') return fail('HOOK_ERR_DESTINATION_DENIED', appError.message)
      const codes = codesOf(err)
      if (codes.includes('UND_ERR_CONNECT_TIMEOUT')) return fail('HOOK_ERR_CONNECT', 'connect timeout')
      return fail('HOOK_ERR_CONNECT', describe(err))
    }

    try {
      let url: URL
      try {
        url = new URL(request.url)
      } catch {
        return fail('HOOK_ERR_CONNECT', 'invalid webhook URL')
      }
      if (url.protocol !== 'http:' && url.protocol !== 'https:') return fail('HOOK_ERR_CONNECT', `unsupported URL scheme ${url.protocol}`)
      if (request.signal?.aborted) return failure(request.signal.reason)

      const options: Dispatcher.RequestOptions & { maxRedirections: 0 } = {
        origin: url.origin,
        path: url.pathname + url.search,
        method: request.method ?? 'POST',
        headers: { ...request.headers, 'user-agent': USER_AGENT },
        body: request.body,
        signal,
        // a 3xx is a failure to report, never a redirect to follow
        maxRedirections: 0,
      }
      const response = await this.#agent.request(options)
      status = response.statusCode
      headers = response.headers

      const chunks: Buffer[] = []
      let received = 0
      let tooLarge = false
      try {
        for await (const chunk of response.body as AsyncIterable<Buffer>) {
          received += chunk.length
          if (received > this.#maxResponseBytes) {
            const room = this.#maxResponseBytes - (received - chunk.length)
            if (room > 0) chunks.push(chunk.subarray(0, room))
            tooLarge = true
            break
          }
          chunks.push(chunk)
        }
      } finally {
        // breaking out of the loop destroys the body; an unread body closes its socket too
        if (!response.body.destroyed) response.body.destroy()
      }
      const body = Buffer.concat(chunks)
      snippet = body.subarray(0, SNIPPET_BYTES)
      if (tooLarge) return fail('HOOK_ERR_RESPONSE_TOO_LARGE', `webhook response body exceeded ${this.#maxResponseBytes} bytes`)

      let json: unknown
      if (isJson(headers['content-type']) && body.length > 0) {
        try {
          json = JSON.parse(body.toString('utf8'))
        } catch {
          json = undefined
        }
      }
      return {
        status,
        headers,
        bodySnippet: snippetText(snippet),
        ...(json === undefined ? {} : { json }),
        durationMs: elapsed(),
        ...retryAfter(headers, status),
      }
    } catch (err) {
      return failure(err)
    } finally {
      clearTimeout(timer)
      request.signal?.removeEventListener('abort', onCallerAbort)
    }
  }

  /** Closes every pooled connection; in-flight attempts finish first. */
  async close(): Promise<void> {
    await this.#agent.close()
  }

  /** Closes at once, failing in-flight attempts. */
  async destroy(): Promise<void> {
    await this.#agent.destroy()
  }
}

function snippetText(bytes: Buffer): string {
  return truncateUtf8(bytes.toString('utf8'), SNIPPET_BYTES)
}

function retryAfter(headers: IncomingHttpHeaders, status: number | undefined): { retryAfterMs?: number } {
  if (status === undefined) return {}
  const ms = parseRetryAfter(headers['retry-after'])
  return ms === undefined ? {} : { retryAfterMs: ms }
}
