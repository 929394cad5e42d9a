/**
 * The floor of one BullMQ job per recipient, in the service's own flow: SESSIONS producers each
 * add a job and wait until an in-process worker (no-op processor) has finished it, then add the
 * next; JOBS in all. Same queue options and connection set-up as the service (three connections,
 * writes coalesced per event-loop turn). Prints {"jobs", "cpuUs"} with this process's CPU time over
 * the measured part; the caller measures Redis and the machine around it.
 *
 * argv: redis URL, key prefix, jobs, sessions
 */
import type { Socket } from 'node:net'
import { cpuUsage } from 'node:process'
import { Redis } from 'ioredis'
import { Queue, Worker } from 'bullmq'
import { coalesceWrites } from '../../src/redis/coalesce.js'

const [url = 'redis://127.0.0.1:6379', prefix = 'bench-floor', jobsArg = '5000', sessionsArg = '10'] = process.argv.slice(2)
const JOBS = Number(jobsArg)
const SESSIONS = Number(sessionsArg)

function connection(worker: boolean): Redis {
  const redis = new Redis(url, { maxRetriesPerRequest: worker ? null : 2, lazyConnect: true })
  redis.on('connect', () => coalesceWrites(redis.stream as Socket))
  return redis
}

const queueRedis = connection(false)
const workerRedis = connection(true)
await Promise.all([queueRedis.connect(), workerRedis.connect()])
const queue = new Queue('floor', { connection: queueRedis, prefix })
const waiting = new Map<string, () => void>()
const worker = new Worker(
  'floor',
  async (job) => {
    waiting.get(job.id!)?.()
    return { outcome: 'delivered' }
  },
  { connection: workerRedis, prefix, concurrency: 64, autorun: false },
)
void worker.run()
await worker.waitUntilReady()

let next = 0
async function session(count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    const id = `j${next++}`
    const done = new Promise<void>((resolve) => waiting.set(id, resolve))
    await queue.add(
      'floor',
      { txn: id, rcpt: 'user@example.com', route: 'bench', mode: 'defer', replyTo: 'x', replyBy: Date.now() + 30_000 },
      { jobId: id, attempts: 1, removeOnComplete: true, removeOnFail: true },
    )
    await done
    waiting.delete(id)
  }
}

await Promise.all(Array.from({ length: SESSIONS }, () => session(200))) // warm-up
process.stdout.write('warm\n')
await new Promise<void>((resolve) => process.stdin.once('data', () => resolve()))
const before = cpuUsage()
await Promise.all(Array.from({ length: SESSIONS }, () => session(Math.ceil(JOBS / SESSIONS))))
const used = cpuUsage(before)
process.stdout.write(`${JSON.stringify({ jobs: SESSIONS * Math.ceil(JOBS / SESSIONS), cpuUs: used.user + used.system })}\n`)
await worker.close()
await queue.obliterate({ force: true })
await queue.close()
queueRedis.disconnect()
workerRedis.disconnect()
