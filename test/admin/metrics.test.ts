import t from 'tap'
import { Redis } from 'ioredis'
import { Queue } from 'bullmq'
import { Metrics } from '../../src/metrics.js'
import { startAdmin } from './helpers.js'
import { converse, dataReplies, transaction } from '../helpers/lmtp-client.js'
import { freePort } from '../helpers/net.js'
import { until } from '../helpers/until.js'
import { webhook } from '../helpers/webhook.js'

/** The value of one sample in Prometheus text, or undefined. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`)
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (!m || m[1] !== name) continue
    const have = (m[2] ?? '').split(',').filter((s) => s !== '')
    if (wanted.every((w) => have.includes(w)) && have.length === wanted.length) return Number(m[3])
  }
  return undefined
}

t.test('/metrics counts connections, transactions, replies, attempts and queue depth', async (t) => {
  const ok = await webhook(t, 200)
  const down = await webhook(t, 503)
  const { api, base, lmtpPort } = await startAdmin(t)
  await api({ method: 'POST', url: '/v1/routes', payload: { id: 'ok', match: 'ok@example.com', url: ok.url } })
  await api({ method: 'POST', url: '/v1/routes', payload: { id: 'down', match: 'down@example.com', url: down.url } })
  const out = await converse(lmtpPort!, transaction(['ok@example.com', 'down@example.com', 'nobody@example.com']))
  t.match(dataReplies(out), [/^250 /, /^451 /])

  const text = await until('the closed connection to be counted', async () => {
    const res = await fetch(`${base}/metrics`)
    const body = await res.text()
    t.match(res.headers.get('content-type'), /^text\/plain/)
    return sample(body, 'lmtp_webhook_lmtp_connections_total', { event: 'close' }) === 1 ? body : null
  })
  t.equal(sample(text, 'lmtp_webhook_lmtp_connections_total', { event: 'open' }), 1)
  t.equal(sample(text, 'lmtp_webhook_lmtp_connections_open'), 0)
  t.equal(sample(text, 'lmtp_webhook_lmtp_transactions_total'), 1)
  t.equal(sample(text, 'lmtp_webhook_lmtp_recipient_replies_total', { route: 'ok', class: '2xx' }), 1)
  t.equal(sample(text, 'lmtp_webhook_lmtp_recipient_replies_total', { route: 'down', class: '4xx' }), 1)
  t.notMatch(text, /lmtp_webhook_lmtp_recipient_replies_total\{[^}]*class="5xx"/, 'RCPT refusals are not final replies after the data')
  t.equal(sample(text, 'lmtp_webhook_webhook_attempts_total', { route: 'ok', status_class: '2xx', outcome: 'delivered' }), 1)
  t.equal(sample(text, 'lmtp_webhook_webhook_attempts_total', { route: 'down', status_class: '5xx', outcome: 'temporary' }), 1)
  t.equal(sample(text, 'lmtp_webhook_webhook_attempt_duration_seconds_count', { route: 'ok', status_class: '2xx' }), 1)
  t.equal(sample(text, 'lmtp_webhook_route_circuit_state', { route: 'down', state: 'closed' }), 1, 'one failure does not open the circuit')
  t.equal(sample(text, 'lmtp_webhook_route_circuit_state', { route: 'down', state: 'open' }), 0)
  t.equal(sample(text, 'lmtp_webhook_route_paused', { route: 'ok' }), 0)
  t.equal(sample(text, 'lmtp_webhook_reply_timeouts_total', { mode: 'defer' }), 0)
  t.equal(sample(text, 'lmtp_webhook_queue_jobs', { state: 'failed' }), 0)
  t.equal(sample(text, 'lmtp_webhook_queue_jobs', { state: 'waiting' }), 0)
  t.equal(sample(text, 'lmtp_webhook_queue_shard_jobs', { shard: '0', state: 'failed' }), 0, 'one shard by default')
  t.equal(sample(text, 'lmtp_webhook_redis_errors_total'), 0)
  t.ok(sample(text, 'process_cpu_user_seconds_total') !== undefined, 'process metrics are there too, under their standard names')
  t.ok(sample(text, 'nodejs_eventloop_lag_seconds') !== undefined)
  t.notMatch(text, /^lmtp_webhook_(process|nodejs)_/m, 'not under the service prefix')
})

t.test('a webhook slower than REPLY_TIMEOUT counts a reply timeout', async (t) => {
  let release: () => void = () => {}
  const slow = await webhook(t, (_req, _body, res) => {
    release = () => res.end()
  })
  const { api, base, lmtpPort } = await startAdmin(t, { REPLY_TIMEOUT: '200ms' })
  await api({ method: 'POST', url: '/v1/routes', payload: { id: 'slow', match: 'slow@example.com', url: slow.url } })
  const out = await converse(lmtpPort!, transaction(['slow@example.com']))
  t.match(dataReplies(out)[0], /^451 4\.3\.0/)
  release()
  const text = await (await fetch(`${base}/metrics`)).text()
  t.equal(sample(text, 'lmtp_webhook_reply_timeouts_total', { mode: 'defer' }), 1)
})

t.test('a scrape still answers when Redis is unreachable, without a stale queue depth', async (t) => {
  // a loopback port nothing listens on
  const port = await freePort()

  const redis = new Redis({ host: '127.0.0.1', port, maxRetriesPerRequest: 0, retryStrategy: () => null, lazyConnect: true })
  redis.on('error', () => {})
  const queue = new Queue('deliveries', { connection: redis })
  queue.on('error', () => {})
  t.teardown(async () => {
    await queue.close().catch(() => {})
    redis.disconnect()
  })
  const metrics = new Metrics({ processMetrics: false })
  metrics.trackQueue({ countsByShard: async (...states) => [{ shard: '0', counts: await queue.getJobCounts(...states) }] })
  metrics.queueJobs.set({ state: 'failed' }, 7)
  const { body } = await metrics.render()
  t.equal(sample(body, 'lmtp_webhook_queue_jobs', { state: 'failed' }), undefined, 'no stale depth')
  t.equal(sample(body, 'lmtp_webhook_queue_shard_jobs', { shard: '0', state: 'failed' }), undefined, 'no stale depth per shard')
  t.equal(sample(body, 'lmtp_webhook_lmtp_transactions_total'), 0, 'the other metrics are there')
})
