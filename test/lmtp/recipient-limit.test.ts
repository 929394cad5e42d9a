import t from 'tap'
import { startServer } from '../helpers/lmtp.js'
import { codes, converse } from '../helpers/lmtp-client.js'

t.test('over the recipient limit: 452 4.5.3, earlier recipients kept and answered', async (t) => {
  const { port, received } = await startServer(t, undefined, { maxRecipients: 2 })
  const out = await converse(
    port,
    'LHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\nRCPT TO:<d@example.com>\r\nRCPT TO:<e@example.com>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n',
  )
  t.strictSame(codes(out), ['250', '250 2.1.0', '250 2.1.5', '250 2.1.5', '452 4.5.3', '452 4.5.3', '354', '250 2.0.0', '250 2.0.0', '221 2.0.0'])
  t.strictSame(
    received[0]!.envelope.recipients.map((r) => r.address),
    ['b@example.com', 'c@example.com'],
  )
})
