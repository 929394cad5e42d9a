/** The one webhook receiver of the tests: a real node:http server on 127.0.0.1, port 0. */
import http from 'node:http'
import type { AddressInfo, Socket } from 'node:net'

export interface ReceivedRequest {
  readonly method: string
  /** The request target (path and query), as the server saw it. */
  readonly url: string
  readonly headers: http.IncomingHttpHeaders
  readonly body: Buffer
  /** Date.now() when the body had arrived. */
  readonly at: number
}

/**
 * What the receiver answers: a status code, or a function that answers `res` itself (or never, to
 * hang like a slow consumer). `n` is the request's number, from 1.
 */
export type Behaviour = number | ((req: http.IncomingMessage, body: Buffer, res: http.ServerResponse, n: number) => void)

export interface Receiver {
  /** http://127.0.0.1:<port>/hook: what a route points at. */
  readonly url: string
  /** http://127.0.0.1:<port>: for tests that choose their own paths. */
  readonly origin: string
  readonly port: number
  readonly server: http.Server
  /** Every request with its body, in arrival order, recorded before `behave` runs. */
  readonly requests: ReceivedRequest[]
  /** TCP connections accepted so far. */
  connections(): number
  /** Closes the server and every connection (also done when the test ends). */
  close(): Promise<void>
}

export async function webhook(t: { teardown: (fn: () => unknown) => void }, behave: Behaviour): Promise<Receiver> {
  const requests: ReceivedRequest[] = []
  const sockets = new Set<Socket>()
  let connections = 0
  const server = http.createServer((req, res) => {
    const parts: Buffer[] = []
    req.on('data', (c: Buffer) => parts.push(c))
    req.on('end', () => {
      const body = Buffer.concat(parts)
      requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body, at: Date.now() })
      if (typeof behave === 'number') {
        res.statusCode = behave
        res.end()
      } else behave(req, body, res, requests.length)
    })
  })
  server.on('connection', (s: Socket) => {
    connections++
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
  const { port } = server.address() as AddressInfo
  let closing: Promise<void> | undefined
  const close = (): Promise<void> =>
    (closing ??= new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy()
      server.close(() => resolve())
    }))
  t.teardown(close)
  return {
    url: `http://127.0.0.1:${port}/hook`,
    origin: `http://127.0.0.1:${port}`,
    port,
    server,
    requests,
    connections: () => connections,
    close,
  }
}
