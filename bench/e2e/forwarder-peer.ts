/**
 * The forwarder peer of the end-to-end benchmark, a parsing forwarder with no queue: nodemailer's
 * smtp-server in LMTP mode that parses each message with mailparser and POSTs it to the webhook
 * with undici, once per recipient, and answers with the status. No queue, no store, no
 * durability. Prints its port on stdout.
 */
import { SMTPServer } from 'smtp-server'
import { simpleParser } from 'mailparser'
import { Agent, request } from 'undici'

const webhook = process.env.WEBHOOK_URL!
const dispatcher = new Agent({ connections: 64, keepAliveTimeout: 30_000 })

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
        const message = JSON.stringify({ subject: parsed.subject, text: parsed.text, html: parsed.html, headers: [...parsed.headerLines] })
        const results = await Promise.all(
          session.envelope.rcptTo.map(async (rcpt) => {
            const body = `{"envelope":{"mailFrom":${JSON.stringify(session.envelope.mailFrom ? session.envelope.mailFrom.address : '')},"rcptTo":${JSON.stringify(rcpt.address)}},"message":${message}}`
            try {
              const res = await request(webhook, { method: 'POST', body, headers: { 'content-type': 'application/json' }, dispatcher })
              await res.body.dump()
              return res.statusCode < 300 ? `<${rcpt.address}> delivered` : new Error(`webhook answered ${res.statusCode}`)
            } catch (err) {
              return err as Error
            }
          }),
        )
        callback(null, results as never)
      })().catch((err: Error) => callback(err))
    })
  },
})
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${(server.server.address() as { port: number }).port}\n`)
})
