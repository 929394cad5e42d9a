import t, { type Test } from 'tap'
import net from 'node:net'
import { once } from 'node:events'
import { setImmediate as turn } from 'node:timers/promises'
import { Redis } from 'ioredis'
import { coalesceWrites } from '../../src/redis/coalesce.js'
import { until } from '../helpers/until.js'

async function pair(t: Test): Promise<{ client: net.Socket; received: () => string; chunks: () => number }> {
  let data = ''
  let chunks = 0
  const server = net.createServer((s) => {
    s.on('data', (c: Buffer) => {
      data += c.toString()
      chunks++
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1')
  await once(client, 'connect')
  t.teardown(() => {
    client.destroy()
    server.close()
  })
  return { client, received: () => data, chunks: () => chunks }
}

t.test('writes of one event-loop turn are held until the turn ends, then leave together, in order', async (t) => {
  const { client, received, chunks } = await pair(t)
  coalesceWrites(client)
  client.write('a')
  client.write('b')
  client.write(Buffer.from('c'))
  t.equal(client.writableCorked, 1, 'the socket is corked after the first write of the turn')
  t.equal(client.writableLength, 3, 'nothing has been handed to the kernel yet')
  await turn()
  t.equal(client.writableCorked, 0, 'uncorked once the turn is over')
  await until('the three writes to arrive', () => received().length >= 3)
  t.equal(received(), 'abc')
  t.equal(chunks(), 1, 'the server read the three writes as one segment')
})

t.test('order is kept across many turns, write callbacks run, installing twice changes nothing', async (t) => {
  const { client, received } = await pair(t)
  coalesceWrites(client)
  coalesceWrites(client)
  let expected = ''
  let callbacks = 0
  for (let i = 0; i < 200; i++) {
    const piece = `${i},`
    expected += piece
    client.write(piece, () => callbacks++)
    if (i % 7 === 0) await turn()
  }
  t.equal(client.writableCorked, 1, 'one cork per turn, not one per install')
  await turn()
  await until('every write to arrive', () => received().length >= expected.length)
  t.equal(received(), expected)
  t.equal(callbacks, 200)
})

t.test('an ioredis connection with coalesced writes keeps every reply with its command', async (t) => {
  const redis = new Redis('redis://127.0.0.1:6379', { lazyConnect: true })
  redis.on('connect', () => coalesceWrites(redis.stream as net.Socket))
  await redis.connect()
  const prefix = `test-coalesce-${process.pid}`
  t.teardown(async () => {
    await redis.del(`${prefix}:n`)
    redis.disconnect()
  })
  const replies = await Promise.all(Array.from({ length: 100 }, (_, i) => (i % 2 === 0 ? redis.incr(`${prefix}:n`) : redis.echo(`m${i}`))))
  t.same(
    replies,
    Array.from({ length: 100 }, (_, i) => (i % 2 === 0 ? i / 2 + 1 : `m${i}`)),
  )
})
