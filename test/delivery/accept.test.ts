import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { execFileSync } from 'node:child_process'
import { routesFile, startApp } from '../helpers/app.js'
import { privateRedis } from '../helpers/redis.js'
import { isAppError } from '../../src/errors.js'
import { attemptsOf } from '../../src/delivery/queue.js'
import { converse } from '../helpers/lmtp-client.js'
import { until } from '../helpers/until.js'
import { webhook } from '../helpers/webhook.js'

const LHLO = 'LHLO mta.test\r\n'
const message = (rcpt: string): string => LHLO + `MAIL FROM:<s@x.test>\r\nRCPT TO:<${rcpt}>\r\nDATA\r\nSubject: accept\r\n\r\nbody\r\n.\r\nQUIT\r\n`
const lastReply = (out: string): string =>
  out
    .split('\r\n')
    .filter((l) => l !== '')
    .slice(-2)[0]!

t.test('accept mode is refused at start-up on a Redis without AOF, naming the route and the opt-out', async (t) => {
  const hook = await webhook(t, 200)
  const file = routesFile(t, `routes:\n  - { id: durable, match: "*@example.com", url: "${hook.url}", mode: accept }\n`)
  const err = await startApp(t, { ROUTES_FILE: file }).then(
    () => null,
    (e: unknown) => e,
  )
  t.ok(isAppError(err, 'CONFIG_ERR_INVALID'), 'a configuration error')
  t.match((err as Error).message, /route "durable".*ALLOW_ACCEPT_WITHOUT_AOF/)
})

t.test('accept mode is refused on AOF with appendfsync everysec when WAITAOF is missing', async (t) => {
  const redis = await privateRedis(t, ['--appendonly', 'yes', '--appendfsync', 'everysec'])
  const hook = await webhook(t, 200)
  const file = routesFile(t, `routes:\n  - { id: durable, match: "*@example.com", url: "${hook.url}", mode: accept }\n`)
  const err = await startApp(t, { ROUTES_FILE: file, REDIS_URL: redis.url }).then(
    () => null,
    (e: unknown) => e,
  )
  // Redis >= 7.2 has WAITAOF and may start; older ones must refuse.
  const version = /v=(\d+)\.(\d+)/.exec(execFileSync('redis-server', ['--version'], { encoding: 'utf8' }))!
  const hasWaitaof = Number(version[1]) > 7 || (Number(version[1]) === 7 && Number(version[2]) >= 2)
  if (hasWaitaof) t.equal(err, null, 'starts: WAITAOF makes each accept-mode write durable')
  else t.match((err as Error)?.message, /route "durable"/, 'refused: nothing would make the write durable')
})

t.test('accept mode: a 503 gives 250 queued, and the retry reaches the webhook', async (t) => {
  const redis = await privateRedis(t, ['--appendonly', 'yes', '--appendfsync', 'always'])
  const hook = await webhook(t, (_req, _body, res, n) => {
    res.statusCode = n === 1 ? 503 : 200
    if (n === 1) res.setHeader('retry-after', '0')
    res.end()
  })
  const file = routesFile(
    t,
    `routes:\n  - { id: durable, match: "*@example.com", url: "${hook.url}", mode: accept, retry: { attempts: 3, backoff: 100ms, maxDelay: 1s } }\n`,
  )
  const { lmtpPort } = await startApp(t, { ROUTES_FILE: file, REDIS_URL: redis.url })
  const out = await converse(lmtpPort!, message('a@example.com'))
  t.match(lastReply(out), /^250 2\.0\.0 <a@example\.com> queued/)
  await until('the retry', () => hook.requests.length >= 2)
  t.equal(hook.requests[1]!.headers['webhook-id'], hook.requests[0]!.headers['webhook-id'], 'a retry keeps the webhook id')
})

t.test('accept mode: a webhook that keeps failing leaves a dead letter that is never auto-deleted', async (t) => {
  const redis = await privateRedis(t, ['--appendonly', 'yes', '--appendfsync', 'always'])
  const hook = await webhook(t, 500)
  const file = routesFile(
    t,
    `routes:\n  - { id: durable, match: "*@example.com", url: "${hook.url}", mode: accept, retry: { attempts: 2, backoff: 50ms, maxDelay: 100ms } }\n`,
  )
  const { lmtpPort, app } = await startApp(t, { ROUTES_FILE: file, REDIS_URL: redis.url })
  const out = await converse(lmtpPort!, message('a@example.com'))
  t.match(lastReply(out), /^250 2\.0\.0 .*queued/)
  const failed = await until('the dead letter', async () => {
    const jobs = await app.queues.getFailed()
    return jobs.length > 0 ? jobs : undefined
  })
  t.equal(hook.requests.length, 2, 'every attempt reached the webhook')
  t.equal(attemptsOf(failed[0]!), 2, 'both attempts counted, the first made by the listener')
  await sleep(300)
  t.equal((await app.queues.getFailed()).length, 1, 'the dead letter stays')
})

t.test('accept mode: a permanent refusal reaches the MTA and is also kept as a dead letter', async (t) => {
  const redis = await privateRedis(t, ['--appendonly', 'yes', '--appendfsync', 'always'])
  const hook = await webhook(t, 404)
  const file = routesFile(t, `routes:\n  - { id: durable, match: "*@example.com", url: "${hook.url}", mode: accept }\n`)
  const { lmtpPort, app } = await startApp(t, { ROUTES_FILE: file, REDIS_URL: redis.url })
  const out = await converse(lmtpPort!, message('a@example.com'))
  t.match(lastReply(out), /^550 5\.1\.1/, 'the MTA hears the refusal and bounces')
  // The worker cannot know whether the session passed the refusal on or had already answered
  // "queued"; keeping the job is what keeps the second case from losing the mail.
  const failed = await until('the dead letter', async () => {
    const jobs = await app.queues.getFailed()
    return jobs.length > 0 ? jobs : undefined
  })
  t.equal(failed.length, 1)
  t.equal(hook.requests.length, 1, 'a permanent refusal is not retried')
})

t.test('ALLOW_ACCEPT_WITHOUT_AOF lets accept mode start on a plain Redis', async (t) => {
  const hook = await webhook(t, 200)
  const file = routesFile(t, `routes:\n  - { id: durable, match: "*@example.com", url: "${hook.url}", mode: accept }\n`)
  const { lmtpPort } = await startApp(t, { ROUTES_FILE: file, ALLOW_ACCEPT_WITHOUT_AOF: 'true' })
  const out = await converse(lmtpPort!, message('a@example.com'))
  t.match(lastReply(out), /^250 2\.0\.0 .*delivered/)
})
