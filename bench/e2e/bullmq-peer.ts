/**
 * The BullMQ peer of the end-to-end benchmark: the straightforward design of this service, written
 * the libraries' documented way. nodemailer's smtp-server in LMTP mode; each message parsed once
 * with mailparser; one BullMQ job per recipient (`queue.add`) carrying the parsed payload (the
 * same fields the forwarder peer POSTs); each recipient waits with `job.waitUntilFinished` on a
 * `QueueEvents`; an in-process `Worker` (concurrency 64) POSTs the payload with undici and returns
 * the status. The LMTP reply for each recipient follows from it: 2xx → 250, anything else, an
 * error or no answer within the timeout → 451. Prints its port on stdout; on SIGTERM it closes
 * and obliterates its queue.
 *
 * Environment: WEBHOOK_URL, REDIS_PATH (a unix socket), QUEUE (queue name and key prefix, unique
 * to the run), TIMEOUT_MS (default 30000).
 */
import { SMTPServer } from 'smtp-server'
import { simpleParser } from 'mailparser'
import { Agent, request } from 'undici'
import { Queue, QueueEvents, Worker, type ConnectionOptions } from 'bullmq'

const webhook = process.env.WEBHOOK_URL!
const name = process.env.QUEUE ?? 'bench-bullmq-peer'
const timeoutMs = Number(process.env.TIMEOUT_MS ?? 30_000)
const connection: ConnectionOptions = { path: process.env.REDIS_PATH! }
const dispatcher = new Agent({ connections: 64, keepAliveTimeout: 30_000 })

interface Payload {
  envelope: { mailFrom: string; rcptTo: string }
  message: { subject: string | undefined; text: string | undefined; html: string | false | undefined; headers: { key: string; line: string }[] }
}

const queue = new Queue<Payload, number>(name, { connection, prefix: name })
const queueEvents = new QueueEvents(name, { connection, prefix: name })
const worker = new Worker<Payload, number>(
  name,
  async (job) => {
    const res = await request(webhook, { method: 'POST', body: JSON.stringify(job.data), headers: { 'content-type': 'application/json' }, dispatcher })
    await res.body.dump()
    return res.statusCode
  },
  { connection, prefix: name, concurrency: 64 },
)
// every waiting recipient listens for the queue's 'closing'
queue.setMaxListeners(0)
await Promise.all([queue.waitUntilReady(), queueEvents.waitUntilReady(), worker.waitUntilReady()])

function tempfail(message: string): Error {
  return Object.assign(new Error(message), { responseCode: 451 })
}

const server = new SMTPServer({
  lmtp: true,
  authOptional: true,
  disabledCommands: ['AUTH', 'STARTTLS'],
  logger: false,
  size: 25 * 1024 * 1024,
  onData(stream, session, callback) {
    const parts: Buffer[] = []
    stream.on('data', (c: Buffer) => parts.push(c))
    stream.on('end', () => {
      const raw = Buffer.concat(parts)
      void (async () => {
        const parsed = await simpleParser(raw)
        const message = { subject: parsed.subject, text: parsed.text, html: parsed.html, headers: [...parsed.headerLines] }
        const mailFrom = session.envelope.mailFrom ? session.envelope.mailFrom.address : ''
        const results = await Promise.all(
          session.envelope.rcptTo.map(async (rcpt) => {
            try {
              const job = await queue.add(
                'deliver',
                { envelope: { mailFrom, rcptTo: rcpt.address }, message },
                { attempts: 1, removeOnComplete: { count: 1000 }, removeOnFail: { count: 1000 } },
              )
              const status = (await job.waitUntilFinished(queueEvents, timeoutMs)) as number
              return status >= 200 && status < 300 ? `<${rcpt.address}> delivered` : tempfail(`webhook answered ${status}`)
            } catch (err) {
              return tempfail((err as Error).message)
            }
          }),
        )
        callback(null, results as never)
      })().catch((err: Error) => callback(tempfail(err.message)))
    })
  },
})
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${(server.server.address() as { port: number }).port}\n`)
})

process.once('SIGTERM', () => {
  void (async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()))
    await worker.close()
    await queueEvents.close()
    await queue.obliterate({ force: true })
    await queue.close()
    await dispatcher.close()
    process.exit(0)
  })()
})
