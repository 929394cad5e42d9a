/**
 * The end-to-end path every Redis topology must carry, run against the topology `env` names (see
 * test/helpers/redis.ts for the launchers): two instances on one prefix; routes created through
 * the admin API of one are used by the other; LMTP in, webhooks out, one reply per recipient;
 * accept-mode retry; a dead letter replayed through the admin API; a route deleted on one instance
 * is refused by the other.
 */
import type { Test } from 'tap'
import { converse } from './lmtp.js'
import { prefix, webhook } from './app.js'
import { dataReplies, startAdmin, transaction, until, type AdminTestApp } from '../admin/helpers.js'

export interface EndToEnd {
  readonly a: AdminTestApp
  readonly b: AdminTestApp
}

export async function endToEnd(t: Test, env: Record<string, string>): Promise<EndToEnd> {
  const p = prefix()
  const ok = await webhook(t, 200)
  const gone = await webhook(t, 410)
  const flaky = await webhook(t, (_req, _body, res, n) => {
    res.statusCode = n === 1 ? 503 : 200
    res.end()
  })
  let healthy = false
  const down = await webhook(t, (_req, _body, res) => {
    res.statusCode = healthy ? 200 : 500
    res.end()
  })
  const a = await startAdmin(t, env, {}, { prefix: p })
  const b = await startAdmin(t, env, {}, { prefix: p })
  t.equal(a.app.durability.durable, true, 'the topology is durable (accept mode allowed)')

  const routes = [
    { id: 'ok', match: 'ok@example.com', url: ok.url },
    { id: 'gone', match: 'gone@example.com', url: gone.url },
    { id: 'retry', match: 'retry@example.com', url: flaky.url, mode: 'accept', retry: { attempts: 3, backoff: '100ms', maxDelay: '200ms' } },
    { id: 'dead', match: 'dead@example.com', url: down.url, mode: 'accept', retry: { attempts: 2, backoff: '50ms', maxDelay: '100ms' } },
  ]
  for (const route of routes) t.equal((await a.api({ method: 'POST', url: '/v1/routes', payload: route })).statusCode, 201, `route ${route.id} created on a`)
  await until('b to see the routes created on a', () => routes.every((r) => b.app.routes.get(r.id) !== undefined))
  t.pass('a route change on one instance reaches the other')

  const out = await converse(b.lmtpPort!, transaction(['ok@example.com', 'gone@example.com', 'retry@example.com', 'dead@example.com']))
  t.match(
    dataReplies(out),
    [/^250 2\.0\.0 <ok@example\.com> delivered/, /^550 /, /^250 2\.0\.0 <retry@example\.com> queued/, /^250 2\.0\.0 <dead@example\.com> queued/],
    'one reply per recipient, from its own webhook',
  )
  t.equal(ok.requests.length, 1)
  t.equal(gone.requests.length, 1)

  await until('the accept-mode retry', () => flaky.requests.length >= 2)
  t.equal(flaky.requests[1]!.headers['webhook-id'], flaky.requests[0]!.headers['webhook-id'], 'the retry keeps the webhook id')
  const retried = await until('the retried delivery to be logged delivered', async () => {
    const list = (await a.api({ method: 'GET', url: '/v1/deliveries?recipient=retry@example.com' })).json().deliveries
    return list[0]?.state === 'delivered' ? list[0] : null
  })
  t.equal(retried.attempts, 2)

  const dead = await until('the dead letter', async () => (await a.api({ method: 'GET', url: '/v1/deliveries?state=dead' })).json().deliveries[0])
  t.match(dead, { recipient: 'dead@example.com', route: 'dead', attempts: 2 })
  t.equal(down.requests.length, 2, 'every attempt reached the webhook')
  healthy = true
  const replay = await b.api({ method: 'POST', url: `/v1/deliveries/${encodeURIComponent(dead.id)}/retry` })
  t.equal(replay.statusCode, 202, 'the dead letter is replayed through the admin API of the other instance')
  await until(
    'the replay to be delivered',
    async () => (await a.api({ method: 'GET', url: `/v1/deliveries/${encodeURIComponent(dead.id)}` })).json().state === 'delivered',
  )
  t.equal(down.requests.length, 3)
  t.equal(down.requests[2]!.headers['webhook-id'], down.requests[0]!.headers['webhook-id'], 'the replay carries the same webhook id')

  t.equal((await b.api({ method: 'DELETE', url: '/v1/routes/gone' })).statusCode, 204)
  await until('a to drop the route deleted on b', () => a.app.routes.get('gone') === undefined)
  const after = await converse(a.lmtpPort!, transaction(['gone@example.com']))
  t.match(after, /550 5\.1\.1 <gone@example\.com>: no such recipient here/, 'a refuses the recipient of the deleted route')
  return { a, b }
}
