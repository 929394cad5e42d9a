/**
 * Helpers for the route protection tests: two service instances on one Redis prefix (two
 * replicas), a webhook that counts the requests it has in flight, and LMTP conversations that
 * stop at RCPT.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { AppHooks } from '../../src/app.js'
import { cleanRedis, prefix as newPrefix, startApp, webhook, type Hook, type TestApp } from './app.js'
import { converse } from './lmtp.js'

/** Two instances sharing one prefix (one Redis keyspace): replicas of one deployment. */
export async function twoReplicas(
  t: { teardown: (fn: () => unknown) => void },
  env: Record<string, string>,
  hooks: [AppHooks, AppHooks] = [{}, {}],
): Promise<[TestApp, TestApp]> {
  const p = newPrefix()
  t.teardown(() => cleanRedis(p, env.REDIS_URL))
  const a = await startApp(t, env, hooks[0], { prefix: p, clean: false })
  const b = await startApp(t, env, hooks[1], { prefix: p, clean: false })
  return [a, b]
}

export interface CountingHook extends Hook {
  /** Requests in flight now. */
  inFlight(): number
  /** The most requests it ever had in flight at once. */
  highest(): number
  /** Changes how it answers from now on. */
  answer(status: number, delayMs?: number): void
}

/** A webhook that answers `status` after `delayMs` and counts concurrent requests. */
export async function countingHook(t: { teardown: (fn: () => unknown) => void }, status: number, delayMs = 0): Promise<CountingHook> {
  let current = 0
  let highest = 0
  let answer = { status, delayMs }
  const hook = await webhook(t, (_req: IncomingMessage, _body: Buffer, res: ServerResponse) => {
    current++
    highest = Math.max(highest, current)
    const { status: code, delayMs: wait } = answer
    setTimeout(() => {
      current--
      res.statusCode = code
      res.end()
    }, wait)
  })
  return Object.assign(hook, {
    inFlight: () => current,
    highest: () => highest,
    answer: (s: number, d = 0) => {
      answer = { status: s, delayMs: d }
    },
  })
}

/** The reply to one RCPT TO (the session ends with QUIT before any data). */
export async function rcptReply(lmtpPort: number, rcpt: string): Promise<string> {
  const out = await converse(lmtpPort, `LHLO mta.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<${rcpt}>\r\nQUIT\r\n`)
  const lines = out.split('\r\n').filter((l) => l !== '' && l[3] !== '-')
  return lines[lines.length - 2]!
}

/** A whole transaction for `rcpts`; the message carries `messageId`. */
export function message(rcpts: string[], messageId = `<${Math.random().toString(36).slice(2)}@x.test>`, from = 'sender@x.test'): string {
  return (
    `LHLO mta.test\r\nMAIL FROM:<${from}>\r\n` +
    rcpts.map((r) => `RCPT TO:<${r}>\r\n`).join('') +
    `DATA\r\nSubject: protection\r\nMessage-ID: ${messageId}\r\n\r\nhello\r\n.\r\nQUIT\r\n`
  )
}

/** Every reply line after the data (one per accepted recipient), without the closing 221. */
export function afterData(output: string): string[] {
  const lines = output.split('\r\n').filter((l) => l !== '')
  const start = lines.findIndex((l) => l.startsWith('354'))
  return start < 0 ? [] : lines.slice(start + 1, -1)
}
