/**
 * Upgrading from the untagged key layout: what an older version left in Redis (API routes, a
 * stored transaction with an accept-mode job waiting, a dead letter) is written here the way that
 * version wrote it; the new version must keep the routes, deliver the waiting job and let the dead
 * letter be replayed, while new mail goes to the tagged layout.
 */
import t from 'tap'
import { createHash } from 'node:crypto'
import { Redis } from 'ioredis'
import { Queue, UnrecoverableError, Worker } from 'bullmq'
import { privateRedis } from '../helpers/redis.js'
import { until } from '../helpers/until.js'
import { prefix, startApp, webhook } from '../helpers/app.js'
import { startAdmin, transaction, dataReplies } from '../admin/helpers.js'
import { converse } from '../helpers/lmtp.js'
import { parseRoute, routeToDefinition } from '../../src/routing/schema.js'
import { messageParts, type StoredEnvelope } from '../../src/delivery/request.js'
import { deriveWebhookId } from '../../src/delivery/signing.js'
import { jobOptions, type DeliveryJobData } from '../../src/delivery/queue.js'
import { KeyLayout, QUEUE_NAME } from '../../src/redis/keys.js'

t.test('routes, a waiting job and a dead letter of the old layout survive the upgrade', async (t) => {
  const server = await privateRedis(t, ['--appendonly', 'yes', '--appendfsync', 'always'])
  const client = new Redis(server.url.slice('unix://'.length), { maxRetriesPerRequest: null })
  t.teardown(() => client.disconnect())
  const subjects: string[] = []
  const hook = await webhook(t, (_req, body, res) => {
    subjects.push((JSON.parse(body.toString()) as { message: { subject: string } }).message.subject)
    res.end()
  })
  const p = prefix()
  const route = parseRoute(
    { id: 'kept', match: '*@example.com', url: hook.url, mode: 'accept', retry: { attempts: 3, backoff: '50ms', maxDelay: '100ms' } },
    'route',
    'api',
  )

  // ---- what the older version left behind
  await client.hset(`${p}:routes`, 'kept', JSON.stringify(routeToDefinition(route)))
  await client.hset(`${p}:routes:patterns`, route.match, 'kept')
  await client.set(`${p}:routes:version`, '7')
  const oldQueue = new Queue<DeliveryJobData>(QUEUE_NAME, { connection: client, prefix: p })
  const store = async (txn: string, subject: string): Promise<{ id: string; data: DeliveryJobData }> => {
    const raw = Buffer.from(`Subject: ${subject}\r\nMessage-ID: <${txn}@x.test>\r\n\r\nbody\r\n`)
    const sha256 = createHash('sha256').update(raw).digest('hex')
    const envelope: StoredEnvelope = {
      mailFrom: 's@x.test',
      recipients: ['a@example.com'],
      lhlo: 'mta.test',
      clientAddress: '127.0.0.1',
      xforward: null,
      size: raw.length,
      receivedAt: new Date().toISOString(),
      sha256,
    }
    const fields: (string | Buffer)[] = ['raw', raw, 'env', JSON.stringify(envelope)]
    for (const [name, value] of await messageParts(raw, [route], sha256)) fields.push(name, value)
    await client.hset(`${p}:txn:${txn}`, ...fields)
    const webhookId = deriveWebhookId(sha256, 'a@example.com', 'kept')
    const data: DeliveryJobData = { webhookId, txn, rcpt: 'a@example.com', route: 'kept', mode: 'accept', replyTo: 'gone', replyBy: Date.now() }
    await oldQueue.add('kept', data, jobOptions(webhookId, route))
    return { id: webhookId, data }
  }
  const dead = await store('old-dead', 'dead before the upgrade')
  const oldWorker = new Worker(
    QUEUE_NAME,
    async () => {
      throw new UnrecoverableError('webhook answered 500')
    },
    { connection: client, prefix: p },
  )
  await until('the old version to dead-letter it', async () => (await oldQueue.getJobState(dead.id)) === 'failed')
  await oldWorker.close()
  const waiting = await store('old-waiting', 'waiting during the upgrade')
  t.equal(await oldQueue.getJobState(waiting.id), 'waiting')
  await oldQueue.close()

  // ---- the new version starts on it
  const { app, api, lmtpPort, base } = await startAdmin(t, { REDIS_URL: server.url }, {}, { prefix: p })
  const layout = new KeyLayout(p, 1)
  t.equal(app.routes.get('kept')?.mode, 'accept', 'the API route is there')
  t.equal(await client.hget(layout.routes.defs, 'kept'), await client.hget(`${p}:routes`, 'kept'), 'copied into the tagged layout')
  t.equal(await client.hget(layout.routes.patterns, route.match), 'kept')
  t.equal(Number(await client.get(layout.routes.version)), 7)
  t.equal(await client.exists(`${p}:routes`), 1, 'the old keys are kept (a rollback finds them)')
  t.same(
    app.queues.all.map((s) => s.label),
    ['0', 'legacy'],
    'the old queue is drained next to the new one',
  )

  await until('the job queued by the old version to be delivered', () => subjects.includes('waiting during the upgrade'))
  t.pass('delivered from the old queue, with its message from the old transaction key')
  const shown = await api({ method: 'GET', url: `/v1/deliveries/${dead.id}` })
  t.equal(shown.statusCode, 200)
  t.match(shown.json(), { state: 'dead', queueState: 'failed', reason: 'webhook answered 500' }, 'the old dead letter is visible')
  t.equal((await api({ method: 'POST', url: `/v1/deliveries/${dead.id}/retry` })).statusCode, 202, 'and can be replayed')
  await until('the replayed dead letter', () => subjects.includes('dead before the upgrade'))
  await until('its log record', async () => (await api({ method: 'GET', url: `/v1/deliveries/${dead.id}` })).json().state === 'delivered')

  const out = await converse(lmtpPort!, transaction(['new@example.com'], 'after the upgrade'))
  t.match(dataReplies(out), [/^250 /])
  await until('new mail to be delivered', () => subjects.includes('after the upgrade'))
  t.equal(await client.exists(...layout.legacy.queueMarkers.filter((k) => k.endsWith(':wait') || k.endsWith(':delayed'))), 0, 'nothing new in the old queue')
  const metrics = await (await fetch(`${base}/metrics`)).text()
  t.match(metrics, /lmtp_webhook_queue_shard_jobs\{shard="legacy",state="waiting"\} 0/, 'metrics show the old queue, empty now')

  // A second instance finds the routes migrated already and copies nothing.
  await client.hset(`${p}:routes`, 'late', JSON.stringify(routeToDefinition(parseRoute({ id: 'late', match: 'late@example.com', url: hook.url }, 'r', 'api'))))
  const second = await startApp(t, { REDIS_URL: server.url }, {}, { prefix: p, clean: false })
  t.equal(second.app.routes.get('late'), undefined, 'the migration ran once: a change made to the old keys afterwards is not copied')
  t.equal(second.app.routes.get('kept')?.id, 'kept')
})

t.test('a new installation has no old queue to drain', async (t) => {
  const { app } = await startApp(t, {})
  t.same(
    app.queues.all.map((s) => s.label),
    ['0'],
  )
})
