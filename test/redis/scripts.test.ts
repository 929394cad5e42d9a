/**
 * Lua scripts (src/redis/scripts.ts): the transaction store's script is sent as EVAL so its effect
 * always precedes the jobs sent behind it, even when the server knows BullMQ's scripts but not
 * ours (a script cache flushed or evicted, a node that never ran it): an EVALSHA answered NOSCRIPT
 * would be retried after the jobs had been added.
 */
import t from 'tap'
import { Redis } from 'ioredis'
import { Queue } from 'bullmq'
import { privateRedis } from '../helpers/redis.js'
import { until } from '../helpers/until.js'
import { routesFile, startApp, webhook } from '../helpers/app.js'
import { converse } from '../helpers/lmtp.js'
import { dataReplies, transaction } from '../admin/helpers.js'
import { defineScript, runScript } from '../../src/redis/scripts.js'

t.test('a transaction is in Redis before its first job, even when only BullMQ scripts are cached', async (t) => {
  const redis = await privateRedis(t, ['--notify-keyspace-events', 'Eh'])
  const url = redis.url.slice('unix://'.length)
  const hook = await webhook(t, 200)
  const file = routesFile(t, `routes:\n  - { id: all, match: "*@example.com", url: "${hook.url}" }\n`)
  const { lmtpPort, prefix } = await startApp(t, { REDIS_URL: redis.url, ROUTES_FILE: file, ROLE: 'listener', REPLY_TIMEOUT: '200ms' })

  const admin = new Redis(url)
  const events = new Redis(url)
  t.teardown(() => {
    admin.disconnect()
    events.disconnect()
  })
  // The server forgets every script, then learns BullMQ's job-adding script from another queue.
  await admin.script('FLUSH')
  const other = new Queue('warm-up', { connection: admin, prefix: 'elsewhere' })
  await other.add('x', {})
  await other.close()
  const written: string[] = []
  events.on('message', (_channel: string, key: string) => {
    if (key.startsWith(`${prefix}:`)) written.push(key)
  })
  await events.subscribe('__keyevent@0__:hset')

  const out = await converse(lmtpPort!, transaction(['a@example.com', 'b@example.com'], 'order'))
  t.match(dataReplies(out), [/^451 /, /^451 /], 'no worker: both deferred (the order is what this test is about)')
  const isJob = (k: string): boolean => /:deliveries:[^:]+$/.test(k)
  await until('the keyspace events of the transaction and its jobs', () => written.some((k) => /:txn:/.test(k)) && written.filter(isJob).length === 2)
  const first = written.findIndex((k) => /:txn:/.test(k))
  t.ok(first < written.findIndex(isJob), `the transaction was written before any job (${written.join(', ')})`)
})

t.test('an unordered script is loaded by EVAL when the server does not know it, then runs by EVALSHA', async (t) => {
  const redis = await privateRedis(t, [])
  const client = new Redis(redis.url.slice('unix://'.length))
  t.teardown(() => client.disconnect())
  const script = defineScript('echo-key', "return {KEYS[1], ARGV[1], redis.sha1hex('')}")
  await client.script('FLUSH')
  t.same(await runScript(client, script, ['k'], ['v']), ['k', 'v', 'da39a3ee5e6b4b0d3255bfef95601890afd80709'])
  t.same(await client.script('EXISTS', script.sha), [1], 'cached by the EVAL')
  t.same(await runScript(client, script, ['k2'], ['v2']), ['k2', 'v2', 'da39a3ee5e6b4b0d3255bfef95601890afd80709'])
})
