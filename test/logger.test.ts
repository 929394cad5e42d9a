import t from 'tap'
import { capturedLogs } from './helpers/logs.js'
import { redactSecrets } from '../src/logger.js'

t.test('secrets never reach a log line, wherever the usual shapes put them', async (t) => {
  const { log, text } = capturedLogs('info')
  log.info({ secret: 'whsec_top', route: { id: 'r', secrets: ['whsec_nested'], headers: { authorization: 'Bearer nested', 'x-team': 'sales' } } }, 'route')
  log.info({ headers: { authorization: 'Bearer top', 'webhook-signature': 'v1,sig' } }, 'request')
  log.info({ req: { method: 'GET', headers: { authorization: 'Bearer admin' } } }, 'admin request')
  const out = text()
  for (const leaked of ['whsec_top', 'whsec_nested', 'Bearer nested', 'Bearer top', 'v1,sig', 'Bearer admin'])
    t.notOk(out.includes(leaked), `${leaked} is not logged`)
  t.match(out, /"x-team":"sales"/, 'other headers are kept')
  t.match(out, /"method":"GET"/)
  t.equal(out.match(/\[redacted\]/g)?.length, 6, 'each secret replaced where it was')
})

t.test('an object without secrets is passed through, not copied', async (t) => {
  const line = { job: 'j', status: 200, nested: { a: 1 } }
  t.equal(redactSecrets(line), line)
  const withSecret = { nested: { secret: 's' } }
  const scrubbed = redactSecrets(withSecret)
  t.not(scrubbed, withSecret)
  t.same(withSecret, { nested: { secret: 's' } }, 'the caller’s object is not changed')
  t.same(scrubbed, { nested: { secret: '[redacted]' } })
})
