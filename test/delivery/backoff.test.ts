import t from 'tap'
import { backoffDelay } from '../../src/delivery/queue.js'

t.test('exponential backoff with jitter between half and all of each step', async (t) => {
  const low = () => 0
  const high = () => 0.999999
  t.equal(backoffDelay(1, 1000, 60_000, undefined, low), 500)
  t.equal(backoffDelay(1, 1000, 60_000, undefined, high), 1000)
  t.equal(backoffDelay(3, 1000, 60_000, undefined, low), 2000)
  t.equal(backoffDelay(3, 1000, 60_000, undefined, high), 4000)
})

t.test('capped by the route maxDelay', async (t) => {
  t.equal(
    backoffDelay(20, 1000, 60_000, undefined, () => 0.999999),
    60_000,
  )
})

t.test('never sooner than Retry-After, never later than maxDelay', async (t) => {
  t.equal(
    backoffDelay(1, 1000, 60_000, 30_000, () => 0),
    30_000,
  )
  t.equal(
    backoffDelay(1, 1000, 60_000, 3_600_000, () => 0),
    60_000,
  )
  t.equal(
    backoffDelay(5, 1000, 60_000, 10, () => 0),
    8000,
  )
})
