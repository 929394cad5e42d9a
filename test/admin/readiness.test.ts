/**
 * /readyz as a load balancer sees it, over real sockets: 503 while Redis does not answer (frozen
 * with SIGSTOP, its connections still open), 200 again once it answers; and at shutdown,
 * readiness turns 503 first while the LMTP listener still serves for SHUTDOWN_DELAY.
 */
import t from 'tap'
import { startAdmin } from './helpers.js'
import { privateRedis } from '../helpers/redis.js'
import { LmtpClient } from '../helpers/lmtp-client.js'
import { until } from '../helpers/until.js'
import { REDIS_PROBE } from '../../src/health.js'

interface Readiness {
  status: number
  body: { status: string; checks: { started: boolean; redis: boolean; lmtp: boolean } }
}

async function readyz(base: string): Promise<Readiness> {
  const res = await fetch(`${base}/readyz`)
  return { status: res.status, body: (await res.json()) as Readiness['body'] }
}

t.test('a frozen Redis makes /readyz answer 503 within the probe bound, and 200 once it answers again', async (t) => {
  const redis = await privateRedis(t, ['--appendonly', 'no'])
  const { base } = await startAdmin(t, { REDIS_URL: redis.url }, {}, { clean: false })
  t.same(await readyz(base), { status: 200, body: { status: 'ready', checks: { started: true, redis: true, lmtp: true } } }, 'ready while Redis answers')

  process.kill(redis.pid, 'SIGSTOP') // connections stay open; nothing answers
  t.teardown(() => process.kill(redis.pid, 'SIGCONT'))
  const frozenAt = Date.now()
  // Each /readyz answers at once (it reads the probe's last result); the bound is generous for a busy machine.
  const down = await until('/readyz to answer 503', async () => {
    const r = await readyz(base)
    return r.status === 503 ? r : null
  })
  t.comment(`503 after ${Date.now() - frozenAt} ms (documented bound ${REDIS_PROBE.intervalMs + REDIS_PROBE.timeoutMs} ms)`)
  t.same(down.body, { status: 'not ready', checks: { started: true, redis: false, lmtp: true } }, 'the body says Redis is the reason')
  t.equal((await readyz(base)).status, 503, 'and stays 503 while Redis is frozen')

  process.kill(redis.pid, 'SIGCONT')
  const up = await until('/readyz to answer 200 again', async () => {
    const r = await readyz(base)
    return r.status === 200 ? r : null
  })
  t.same(up.body.checks, { started: true, redis: true, lmtp: true }, 'ready again once Redis answers')
})

t.test('a Redis that is gone makes /readyz answer 503, and a restarted one 200', async (t) => {
  const redis = await privateRedis(t, ['--appendonly', 'no'])
  // ROLE=listener: a BullMQ worker whose Redis went away for seconds leaves timers running after
  // it closes, which would keep this test process alive; readiness is the same for every role.
  const { base } = await startAdmin(t, { REDIS_URL: redis.url, ROLE: 'listener' }, {}, { clean: false })
  t.equal((await readyz(base)).status, 200)
  process.kill(redis.pid, 'SIGKILL')
  const down = await until('/readyz to answer 503', async () => {
    const r = await readyz(base)
    return r.status === 503 ? r : null
  })
  t.equal(down.body.checks.redis, false)
  await redis.restart()
  const up = await until('/readyz to answer 200 again', async () => {
    const r = await readyz(base)
    return r.status === 200 ? r : null
  })
  t.equal(up.body.checks.redis, true, 'ready again once Redis is back')
})

t.test('shutdown: readiness turns 503 first, the listener keeps serving for SHUTDOWN_DELAY, then closes', async (t) => {
  const { base, app, lmtpPort } = await startAdmin(t, { SHUTDOWN_DELAY: '3s' })
  t.equal((await readyz(base)).status, 200)
  const closing = app.close()
  const notReady = await readyz(base)
  t.equal(notReady.status, 503, '503 as soon as shutdown begins')
  t.same(notReady.body.checks, { started: false, redis: true, lmtp: true }, 'the listener is still up')

  // A connection arriving during the delay (a load balancer that has not caught up) is served.
  const late = await LmtpClient.connect(lmtpPort!)
  t.match(late.greeting?.[0], /^220 /, 'a new connection is greeted while readiness is 503')
  t.strictSame(await late.send('LHLO mta.test\r\nQUIT\r\n', 2), ['250', '221 2.0.0'], 'and served')
  await late.closed

  await closing
  t.equal(await LmtpClient.open(lmtpPort!), null, 'after the delay the listener is closed')
})

t.test('a Redis connection closed for good makes /readyz answer 503, though Redis itself answers', async (t) => {
  const { base, app } = await startAdmin(t, {})
  t.equal((await readyz(base)).status, 200)
  // what ioredis does to a connection whose connect was cancelled (a failover announced mid-reconnect)
  for (const client of app.connections.ofRole('queue')) client.disconnect()
  const down = await until('/readyz to answer 503', async () => {
    const r = await readyz(base)
    return r.status === 503 ? r : null
  })
  t.same(down.body.checks, { started: true, redis: false, lmtp: true }, 'Redis is the reason')
  t.same(app.connections.closedForGood(), ['queue'], 'the queue connection is the one that closed')
})
