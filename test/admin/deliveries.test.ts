import t from 'tap'
import { Redis } from 'ioredis'
import { privateRedis } from '../helpers/redis.js'
import { TOKEN, startAdmin } from './helpers.js'
import { converse, dataReplies, transaction } from '../helpers/lmtp-client.js'
import { until } from '../helpers/until.js'
import { webhook } from '../helpers/webhook.js'

t.test('the delivery log shows delivered and deferred deliveries, filtered', async (t) => {
  const ok = await webhook(t, 200)
  const down = await webhook(t, 503)
  const { api, base, lmtpPort } = await startAdmin(t)
  await api({ method: 'POST', url: '/v1/routes', payload: { id: 'ok', match: 'ok@example.com', url: ok.url } })
  await api({ method: 'POST', url: '/v1/routes', payload: { id: 'down', match: 'down@example.com', url: down.url } })
  const out = await converse(lmtpPort!, transaction(['ok@example.com', 'down@example.com']))
  t.match(dataReplies(out), [/^250 /, /^451 /])

  const all = await until('two log entries', async () => {
    const res = await api({ method: 'GET', url: '/v1/deliveries' })
    return res.json().deliveries.length === 2 ? res.json() : null
  })
  t.equal(all.nextCursor, null)
  const byRoute = Object.fromEntries(all.deliveries.map((d: any) => [d.route, d]))
  t.equal(byRoute.ok.state, 'delivered')
  t.equal(byRoute.ok.recipient, 'ok@example.com')
  t.equal(byRoute.ok.lastStatus, 200)
  t.equal(byRoute.ok.attempts, 1)
  t.equal(byRoute.down.state, 'deferred', 'defer mode: the MTA was told 451 and will retry')
  t.equal(byRoute.down.lastStatus, 503)
  t.equal(byRoute.ok.txn, byRoute.down.txn)

  const delivered = await fetch(`${base}/v1/deliveries?state=delivered`, { headers: { authorization: `Bearer ${TOKEN}` } })
  t.same(
    ((await delivered.json()) as any).deliveries.map((d: any) => d.route),
    ['ok'],
  )
  const byRecipient = await api({ method: 'GET', url: '/v1/deliveries?recipient=DOWN@example.com' })
  t.same(
    byRecipient.json().deliveries.map((d: any) => d.route),
    ['down'],
    'recipient filter is case-insensitive',
  )
  const none = await api({ method: 'GET', url: '/v1/deliveries?route=ok&state=dead' })
  t.same(none.json().deliveries, [])

  const one = await api({ method: 'GET', url: `/v1/deliveries/${encodeURIComponent(byRoute.down.id)}` })
  t.equal(one.statusCode, 200)
  t.equal(one.json().attemptLog.length, 1)
  t.match(one.json().attemptLog[0], { attempt: 1, status: 503, error: null, outcome: 'temporary', reply: '451 4.3.0' })
  t.equal(one.json().queueState, null, 'defer-mode jobs leave the queue once attempted')

  const missing = await api({ method: 'GET', url: '/v1/deliveries/msg_nope' })
  t.equal(missing.statusCode, 404)
  t.equal(missing.json().error.code, 'ADMIN_ERR_NOT_FOUND')
  const badCursor = await api({ method: 'GET', url: '/v1/deliveries?cursor=abc' })
  t.equal(badCursor.statusCode, 400)
  t.match(badCursor.json().error.message, /^cursor: /)

  const removed = await fetch(`${base}/v1/deliveries/${encodeURIComponent(byRoute.ok.id)}`, { method: 'DELETE', headers: { authorization: `Bearer ${TOKEN}` } })
  t.equal(removed.status, 204)
  t.same(
    (await api({ method: 'GET', url: '/v1/deliveries' })).json().deliveries.map((d: any) => d.route),
    ['down'],
  )
  t.equal((await api({ method: 'DELETE', url: `/v1/deliveries/${encodeURIComponent(byRoute.ok.id)}` })).statusCode, 404)
})

t.test('accept mode: a delivery that fails until dead is replayed from the API once the webhook recovers', async (t) => {
  const redis = await privateRedis(t, ['--appendonly', 'yes', '--appendfsync', 'always'])
  let healthy = false
  const hook = await webhook(t, (_req, _body, res) => {
    res.statusCode = healthy ? 200 : 503
    res.end(healthy ? 'thanks' : 'down for maintenance')
  })
  const { api, base, lmtpPort, app } = await startAdmin(t, { REDIS_URL: redis.url })
  t.equal(app.durability.durable, true, 'AOF with appendfsync always is durable')
  const created = await api({
    method: 'POST',
    url: '/v1/routes',
    payload: { id: 'acc', match: '*@example.com', url: hook.url, mode: 'accept', retry: { attempts: 2, backoff: '100ms', maxDelay: '1s' } },
  })
  t.equal(created.statusCode, 201, created.body)

  const out = await converse(lmtpPort!, transaction(['dead@example.com']))
  t.match(dataReplies(out)[0], /^250 2\.0\.0 <dead@example\.com> queued/)
  const dead = await until('the dead letter', async () => (await api({ method: 'GET', url: '/v1/deliveries?state=dead' })).json().deliveries[0])
  t.equal(dead.recipient, 'dead@example.com')
  t.equal(dead.route, 'acc')
  t.equal(dead.attempts, 2)
  t.match(dead.reason, /503/)
  const detail = (await api({ method: 'GET', url: `/v1/deliveries/${dead.id}` })).json()
  t.equal(detail.queueState, 'failed', 'kept in the queue as a failed job')
  t.same(
    detail.attemptLog.map((a: any) => [a.attempt, a.status, a.response]),
    [
      [1, 503, 'down for maintenance'],
      [2, 503, 'down for maintenance'],
    ],
  )
  t.equal(hook.requests.length, 2)

  healthy = true
  const retried = await fetch(`${base}/v1/deliveries/${dead.id}/retry`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` } })
  t.equal(retried.status, 202)
  t.same(await retried.json(), { id: dead.id, state: 'retrying' })
  const done = await until('the replay', async () => {
    const d = (await api({ method: 'GET', url: `/v1/deliveries/${dead.id}` })).json()
    return d.state === 'delivered' ? d : null
  })
  t.equal(done.attempts, 3)
  t.equal(done.lastStatus, 200)
  t.equal(hook.requests.length, 3)
  t.equal(hook.requests[2]!.headers['webhook-id'], hook.requests[0]!.headers['webhook-id'], 'the replay carries the same webhook-id')
  t.equal(done.queueState, null, 'delivered jobs leave the queue')
  const again = await api({ method: 'POST', url: `/v1/deliveries/${dead.id}/retry` })
  t.equal(again.statusCode, 404, 'nothing left to replay')

  // A dead letter whose stored message expired cannot be replayed.
  healthy = false
  await converse(lmtpPort!, transaction(['expired@example.com']))
  const second = await until(
    'the second dead letter',
    async () => (await api({ method: 'GET', url: '/v1/deliveries?state=dead&recipient=expired@example.com' })).json().deliveries[0],
  )
  const client = new Redis(redis.url)
  t.teardown(() => client.quit())
  t.equal(await client.del(app.keys.shards[0]!.txn(second.txn)), 1)
  const gone = await api({ method: 'POST', url: `/v1/deliveries/${second.id}/retry` })
  t.equal(gone.statusCode, 410)
  t.equal(gone.json().error.code, 'ADMIN_ERR_MESSAGE_GONE')
  t.equal((await api({ method: 'GET', url: `/v1/deliveries/${second.id}` })).json().state, 'dead', 'still dead')

  const deleted = await api({ method: 'DELETE', url: `/v1/deliveries/${second.id}` })
  t.equal(deleted.statusCode, 204)
  t.equal(await app.queues.getJob(second.id), undefined, 'the dead letter left the queue')
  t.equal((await api({ method: 'GET', url: `/v1/deliveries/${second.id}` })).statusCode, 404)
})

t.test('a delivery waiting for its next retry is not dead: 409, and deleting it cancels it', async (t) => {
  const redis = await privateRedis(t, ['--appendonly', 'yes', '--appendfsync', 'always'])
  const hook = await webhook(t, 503)
  const { api, lmtpPort, app } = await startAdmin(t, { REDIS_URL: redis.url })
  await api({
    method: 'POST',
    url: '/v1/routes',
    payload: { id: 'slow', match: '*@example.com', url: hook.url, mode: 'accept', retry: { attempts: 5, backoff: '1h', maxDelay: '2h' } },
  })
  await converse(lmtpPort!, transaction(['later@example.com']))
  const waiting = await until('the first attempt', async () => (await api({ method: 'GET', url: '/v1/deliveries?state=retrying' })).json().deliveries[0])
  await until('the job to wait for its retry', async () => (await app.queues.getJob(waiting.id))?.getState().then((s: string) => s === 'delayed'))
  const res = await api({ method: 'POST', url: `/v1/deliveries/${waiting.id}/retry` })
  t.equal(res.statusCode, 409)
  t.equal(res.json().error.code, 'ADMIN_ERR_NOT_DEAD')
  t.equal(res.json().error.details.state, 'delayed')
  const deleted = await api({ method: 'DELETE', url: `/v1/deliveries/${waiting.id}` })
  t.equal(deleted.statusCode, 204)
  t.equal(await app.queues.getJob(waiting.id), undefined, 'the pending retry is cancelled')
})

t.test('with the log turned off (DELIVERY_LOG_MAX=0) a queued delivery is still shown from its job', async (t) => {
  const redis = await privateRedis(t, ['--appendonly', 'yes', '--appendfsync', 'always'])
  const hook = await webhook(t, 503)
  const { api, lmtpPort, app } = await startAdmin(t, { REDIS_URL: redis.url, DELIVERY_LOG_MAX: '0' })
  await api({
    method: 'POST',
    url: '/v1/routes',
    payload: { id: 'nolog', match: '*@example.com', url: hook.url, mode: 'accept', retry: { attempts: 5, backoff: '1h', maxDelay: '2h' } },
  })
  await converse(lmtpPort!, transaction(['quiet@example.com']))
  const job = await until('the job to wait for its retry', async () => (await app.queues.getJobs(['delayed']))[0])
  t.same((await api({ method: 'GET', url: '/v1/deliveries' })).json(), { deliveries: [], nextCursor: null }, 'nothing logged')
  const shown = await api({ method: 'GET', url: `/v1/deliveries/${job.id}` })
  t.equal(shown.statusCode, 200)
  t.match(shown.json(), { id: job.id, recipient: 'quiet@example.com', route: 'nolog', state: 'retrying', attempts: 1, queueState: 'delayed', attemptLog: [] })
})
