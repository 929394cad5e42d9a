/**
 * The LMTP listeners as an operator configures them, over real sockets: a unix socket alone
 * (LMTP_SOCKET, LMTP_PORT=off) or next to TCP, a stale socket file replaced, any other file left
 * alone, the socket removed at close; and LMTP_PORT=25 refused by a real process with exit code
 * 78 and a message naming the variable.
 */
import t from 'tap'
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { routesFile, startApp, cleanRedis, prefix, REDIS_URL } from '../helpers/app.js'
import { converse, dataReplies, transaction } from '../helpers/lmtp-client.js'
import { startService } from '../helpers/process.js'
import { until } from '../helpers/until.js'
import { webhook } from '../helpers/webhook.js'
import { isAppError } from '../../src/errors.js'

function socketDir(t: { teardown: (fn: () => unknown) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'lmtp-webhook-socket-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

t.test('LMTP_SOCKET with LMTP_PORT=off: a whole transaction over the unix socket, and the socket is removed at close', async (t) => {
  const hook = await webhook(t, 200)
  const file = routesFile(t, `routes:\n  - { id: all, match: "*@example.com", url: "${hook.url}" }\n`)
  const path = join(socketDir(t), 'lmtp.sock')
  const { app, lmtpPort, lmtpSocket } = await startApp(t, { ROUTES_FILE: file, LMTP_PORT: 'off', LMTP_SOCKET: path })
  t.equal(lmtpPort, null, 'no TCP listener')
  t.equal(lmtpSocket, path)
  t.ok(statSync(path).isSocket(), 'the path is a unix socket')

  const out = await converse({ path }, transaction(['a@example.com', 'b@example.com'], 'over a unix socket'))
  t.match(out, /^220 lmtp\.test /, 'greeted')
  t.strictSame(
    dataReplies(out).map((l) => l.slice(0, 9)),
    ['250 2.0.0', '250 2.0.0'],
    'both recipients delivered',
  )
  t.equal(hook.requests.length, 2, 'the webhook got both')
  t.match(JSON.parse(hook.requests[0]!.body.toString()).message.subject, 'over a unix socket')

  await app.close()
  t.notOk(existsSync(path), 'the socket file is gone after close')
})

t.test('TCP and a unix socket at once both serve', async (t) => {
  const hook = await webhook(t, 200)
  const file = routesFile(t, `routes:\n  - { id: all, match: "*@example.com", url: "${hook.url}" }\n`)
  const path = join(socketDir(t), 'lmtp.sock')
  const { lmtpPort, lmtpSocket } = await startApp(t, { ROUTES_FILE: file, LMTP_SOCKET: path })
  t.ok(lmtpPort! > 0 && lmtpSocket === path)
  for (const target of [lmtpPort!, { path }]) {
    t.match(dataReplies(await converse(target, transaction(['a@example.com'])))[0], /^250 2\.0\.0 /, `delivered through ${JSON.stringify(target)}`)
  }
  t.equal(hook.requests.length, 2)
})

t.test('a stale socket file from an earlier run is replaced; any other file at the path is left alone', async (t) => {
  const dir = socketDir(t)
  const stale = join(dir, 'stale.sock')
  // what a process killed with SIGKILL leaves behind: the socket file, and no server
  const owner = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(stale)})`], { stdio: 'ignore' })
  await until('the other process to listen', () => existsSync(stale))
  owner.kill('SIGKILL')
  await once(owner, 'exit')
  t.ok(existsSync(stale) && statSync(stale).isSocket(), 'a socket file without a server is there')
  const { lmtpSocket } = await startApp(t, { LMTP_PORT: 'off', LMTP_SOCKET: stale })
  t.equal(lmtpSocket, stale)
  t.match(await converse({ path: stale }, 'QUIT\r\n'), /^220 [\s\S]*221 2\.0\.0/, 'the new listener serves on it')

  const regular = join(dir, 'not-a-socket')
  writeFileSync(regular, 'keep me')
  const err = await startApp(t, { LMTP_PORT: 'off', LMTP_SOCKET: regular }).then(
    () => null,
    (e: unknown) => e as NodeJS.ErrnoException,
  )
  t.equal(err?.code, 'EADDRINUSE', `start-up fails (${String(err)})`)
  t.notOk(isAppError(err), 'with the system error')
  t.equal(readFileSync(regular, 'utf8'), 'keep me', 'the file is not removed')
})

t.test('LMTP_PORT=25: a real process exits 78 with a message naming the variable and the RFC', async (t) => {
  const p = prefix()
  t.teardown(() => cleanRedis(p))
  const err = await startService(t, { REDIS_URL, REDIS_PREFIX: p, LMTP_PORT: '25' }).then(
    () => null,
    (e: unknown) => e as Error,
  )
  t.match(err?.message, /^service exited with 78: /, 'exit code 78 (EX_CONFIG)')
  t.match(
    err?.message,
    /lmtp-webhook: configuration error: LMTP_PORT: expected a port other than 25 \(RFC 2033 section 5 forbids LMTP on the SMTP port\), got "25"/,
  )
  t.notMatch(err?.message ?? '', /LMTP listening/, 'nothing was bound')
})
