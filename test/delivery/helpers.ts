/**
 * Older names, kept for tests written against them. New tests use test/helpers/webhook.ts
 * (`webhook`) and test/helpers/net.ts (`freePort`).
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import { webhook, type ReceivedRequest } from '../helpers/webhook.js'
import { freePort } from '../helpers/net.js'

export type Received = ReceivedRequest

export interface TestServer {
  readonly server: Server
  /** http://127.0.0.1:<port>, without a path. */
  readonly url: string
  readonly port: number
  readonly received: Received[]
  connections(): number
}

/** `webhook()` with the handler's arguments in the older order and the origin as `url`. */
export async function startServer(
  t: { teardown: (fn: () => unknown) => void },
  handler: (req: IncomingMessage, res: ServerResponse, body: Buffer) => void,
): Promise<TestServer> {
  const r = await webhook(t, (req, body, res) => handler(req, res, body))
  return { server: r.server, url: r.origin, port: r.port, received: r.requests, connections: r.connections }
}

export const closedPort = freePort
