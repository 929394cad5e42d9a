/**
 * Who may connect, over real sockets from two loopback addresses (127.0.0.1 and 127.0.0.2):
 * LMTP_ALLOW_CIDRS, and the PROXY protocol (v1 and v2) from a trusted proxy and from an address
 * that is not trusted to send one.
 */
import t from 'tap'
import { capturedLogs } from '../helpers/logs.js'
import { acceptingHandler, defaultOptions, startServer, type Received } from '../helpers/lmtp.js'
import { LmtpServer } from '../../src/lmtp/server.js'
import { RawClient } from '../helpers/lmtp-tls.js'
import { Metrics } from '../../src/metrics.js'
import { parseProxyHeader, proxyHeaderStart, V2_SIGNATURE } from '../../src/lmtp/proxy.js'

const LHLO = 'LHLO client.test\r\n'
const TXN = 'MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n'
const TXN_CODES = ['250', '250 2.1.0', '250 2.1.5', '354', '250 2.0.0', '221 2.0.0']

/** A PROXY v2 header: PROXY (or LOCAL) over TCP4/TCP6, with an optional TLV. */
function v2(options: { command?: 'PROXY' | 'LOCAL'; family?: 4 | 6; src?: string; dst?: string; sport?: number; dport?: number; tlv?: Buffer }): Buffer {
  const family = options.family ?? 4
  let addresses: Buffer
  if (family === 4) {
    addresses = Buffer.alloc(12)
    Buffer.from((options.src ?? '192.0.2.10').split('.').map(Number)).copy(addresses, 0)
    Buffer.from((options.dst ?? '10.0.0.5').split('.').map(Number)).copy(addresses, 4)
    addresses.writeUInt16BE(options.sport ?? 40000, 8)
    addresses.writeUInt16BE(options.dport ?? 2424, 10)
  } else {
    addresses = Buffer.alloc(36)
    const groups = (a: string): number[] => {
      const [h = '', tl = ''] = a.split('::')
      const head = h ? h.split(':') : []
      const tail = tl ? tl.split(':') : []
      return [...head, ...Array<string>(8 - head.length - tail.length).fill('0'), ...tail].map((g) => parseInt(g, 16))
    }
    groups(options.src ?? '2001:db8::25').forEach((g, i) => addresses.writeUInt16BE(g, i * 2))
    groups(options.dst ?? '2001:db8::1').forEach((g, i) => addresses.writeUInt16BE(g, 16 + i * 2))
    addresses.writeUInt16BE(options.sport ?? 40001, 32)
    addresses.writeUInt16BE(options.dport ?? 2424, 34)
  }
  const body = Buffer.concat([addresses, options.tlv ?? Buffer.alloc(0)])
  const head = Buffer.alloc(4)
  head[0] = options.command === 'LOCAL' ? 0x20 : 0x21
  head[1] = family === 4 ? 0x11 : 0x21
  head.writeUInt16BE(body.length, 2)
  return Buffer.concat([V2_SIGNATURE, head, body])
}

async function counter(metrics: Metrics, event: string): Promise<number> {
  const values = (await metrics.registry.getSingleMetric('lmtp_webhook_lmtp_connections_total')!.get()).values
  return Number(values.find((v) => v.labels.event === event)?.value ?? NaN)
}

t.test('LMTP_ALLOW_CIDRS: a client from elsewhere gets 554 5.7.1 instead of the greeting and is closed', async (t) => {
  const metrics = new Metrics({ processMetrics: false })
  const { port, server } = await startServer(t, undefined, { allowCidrs: ['127.0.0.1/32', '::1'] }, metrics.lmtpObserver())
  const outsider = await RawClient.connect(port, { localAddress: '127.0.0.2' })
  await outsider.closed
  t.equal(outsider.output, '554 5.7.1 lmtp.test access denied\r\n', 'from 127.0.0.2: 554 5.7.1 and nothing else')
  t.equal(await counter(metrics, 'denied'), 1, 'counted as denied')
  const insider = await RawClient.connect(port)
  t.match(insider.output, /^220 lmtp\.test LMTP service ready/, 'from 127.0.0.1: the greeting')
  t.strictSame(await insider.send(LHLO + TXN, 6), TXN_CODES)
  t.equal(server.connections <= 1, true)
})

t.test('PROXY v1 and v2 from a trusted proxy: the client it names is the client everywhere', async (t) => {
  const { port, received } = await startServer(t, undefined, { proxy: { trustedCidrs: ['127.0.0.1/32'] } })
  const cases: [string, Buffer | string, string, number][] = [
    ['v1 TCP4', 'PROXY TCP4 192.0.2.10 10.0.0.5 40000 2424\r\n', '192.0.2.10', 40000],
    ['v1 TCP6', 'PROXY TCP6 2001:db8::25 2001:db8::1 40001 2424\r\n', '2001:db8::25', 40001],
    ['v2 TCP4', v2({ src: '198.51.100.7', sport: 51000 }), '198.51.100.7', 51000],
    [
      'v2 TCP6 with a TLV',
      v2({ family: 6, src: '2001:db8:0:1::9', sport: 52000, tlv: Buffer.from([0x04, 0x00, 0x03, 0x61, 0x62, 0x63]) }),
      '2001:db8:0:1::9',
      52000,
    ],
    ['v1 UNKNOWN (the proxy itself)', 'PROXY UNKNOWN\r\n', '127.0.0.1', -1],
    ['v2 LOCAL (a health check)', v2({ command: 'LOCAL' }), '127.0.0.1', -1],
  ]
  for (const [what, header, address, remotePort] of cases) {
    const c = await RawClient.connect(port, { preamble: header })
    t.strictSame(await c.send(LHLO + TXN, 6), TXN_CODES, `${what}: served`)
    const session = received.at(-1)!.envelope.session
    t.equal(session.remoteAddress, address, `${what}: client address ${address}`)
    if (remotePort >= 0) t.equal(session.remotePort, remotePort, `${what}: client port`)
    t.equal(session.peerAddress, '127.0.0.1', `${what}: the proxy is the peer`)
  }
  // A header that arrives one octet at a time, with the client's first command right behind it.
  const header = Buffer.from('PROXY TCP4 192.0.2.77 10.0.0.5 40000 2424\r\n')
  const c = await RawClient.connect(port, { noGreeting: true })
  for (const b of header) {
    c.socket.write(Buffer.from([b]))
    await new Promise((r) => setImmediate(r))
  }
  await c.until(1)
  t.strictSame(await c.send(LHLO + TXN, 6), TXN_CODES, 'a header in pieces')
  t.equal(received.at(-1)!.envelope.session.remoteAddress, '192.0.2.77')
})

t.test('PROXY: the logs name the client the header named, and the proxy as the peer', async (t) => {
  const { log, text } = capturedLogs('debug')
  const received: Received[] = []
  const server = new LmtpServer({ ...defaultOptions, proxy: { trustedCidrs: ['127.0.0.1/32'] } }, acceptingHandler(received), log)
  const port = (await server.listen({ host: '127.0.0.1', port: 0 })) as number
  t.teardown(() => server.close(100))
  const c = await RawClient.connect(port, { preamble: 'PROXY TCP4 192.0.2.10 10.0.0.5 40000 2424\r\n' })
  t.strictSame(await c.send(LHLO + TXN, 6), TXN_CODES)
  await c.closed
  while (!text().includes('connection closed')) await new Promise((r) => setTimeout(r, 10))
  const lines = text()
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => typeof l.session === 'string')
  t.ok(lines.length >= 2, 'the session logged')
  t.ok(
    lines.every((l) => l.remote === '192.0.2.10'),
    'every session line names the MTA, not the proxy',
  )
  t.match(
    lines.find((l) => l.msg === 'connection opened'),
    { remote: '192.0.2.10', peer: '127.0.0.1' },
  )
})

t.test('PROXY from a trusted proxy: a missing or invalid header closes the connection without a greeting', async (t) => {
  const metrics = new Metrics({ processMetrics: false })
  const { port, received } = await startServer(t, undefined, { proxy: { trustedCidrs: ['127.0.0.0/30'] } }, metrics.lmtpObserver())
  const bad: [string, Buffer | string][] = [
    ['no header, LMTP at once', LHLO],
    ['v1 with a bad address', 'PROXY TCP4 192.0.2.300 10.0.0.5 40000 2424\r\n'],
    ['v1 with the wrong family', 'PROXY TCP4 2001:db8::1 10.0.0.5 40000 2424\r\n'],
    ['v1 without CRLF', 'PROXY TCP4 192.0.2.1 10.0.0.5 40000 2424\n'],
    ['v2 of another version', Buffer.concat([V2_SIGNATURE, Buffer.from([0x31, 0x11, 0x00, 0x0c]), Buffer.alloc(12)])],
    ['v2 UDP', Buffer.concat([V2_SIGNATURE, Buffer.from([0x21, 0x12, 0x00, 0x0c]), Buffer.alloc(12)])],
  ]
  for (const [what, header] of bad) {
    const c = await RawClient.connect(port, { preamble: header, noGreeting: true, localAddress: '127.0.0.2' })
    await c.closed
    t.equal(c.output, '', `${what}: closed, nothing written`)
  }
  t.equal(await counter(metrics, 'denied'), bad.length)
  t.equal(received.length, 0)
})

t.test('PROXY from an address that is not trusted: served as itself; a header it sends is refused', async (t) => {
  const metrics = new Metrics({ processMetrics: false })
  const { port, received } = await startServer(t, undefined, { proxy: { trustedCidrs: ['127.0.0.1/32'] } }, metrics.lmtpObserver())
  for (const [what, header] of [
    ['v1', 'PROXY TCP4 192.0.2.10 10.0.0.5 40000 2424\r\n'],
    ['v2', v2({ src: '192.0.2.10' })],
  ] as const) {
    const c = await RawClient.connect(port, { localAddress: '127.0.0.2', noGreeting: true })
    await c.until(1)
    c.socket.write(Buffer.concat([Buffer.from(header), Buffer.from(LHLO + TXN)]))
    await c.closed
    t.strictSame(c.codes(), ['220', '554 5.7.1'], `${what} header from 127.0.0.2: 554 5.7.1, and nothing behind it runs`)
  }
  t.equal(received.length, 0, 'nothing delivered with a spoofed address')
  const direct = await RawClient.connect(port, { localAddress: '127.0.0.2' })
  t.strictSame(await direct.send(LHLO + TXN, 6), TXN_CODES, 'without a header it is an ordinary client')
  t.equal(received.at(-1)!.envelope.session.remoteAddress, '127.0.0.2', 'with its own address')
})

t.test('PROXY and the allowlist: the allowlist applies to the client the proxy names', async (t) => {
  const { port, received } = await startServer(t, undefined, { proxy: { trustedCidrs: ['127.0.0.1/32'] }, allowCidrs: ['192.0.2.0/24'] })
  const allowed = await RawClient.connect(port, { preamble: 'PROXY TCP4 192.0.2.10 10.0.0.5 40000 2424\r\n' })
  t.strictSame(await allowed.send(LHLO + TXN, 6), TXN_CODES, 'a client in 192.0.2.0/24 through the proxy is served')
  const denied = await RawClient.connect(port, { preamble: 'PROXY TCP4 198.51.100.7 10.0.0.5 40000 2424\r\n' })
  await denied.closed
  t.equal(denied.output, '554 5.7.1 lmtp.test access denied\r\n', 'a client outside it is denied, though the proxy itself is trusted')
  const local = await RawClient.connect(port, { preamble: 'PROXY UNKNOWN\r\n' })
  await local.closed
  t.equal(local.output, '554 5.7.1 lmtp.test access denied\r\n', 'UNKNOWN is the proxy itself, which is outside the allowlist')
  t.equal(received.length, 1)
})

t.test('PROXY header parser', async (t) => {
  t.equal(proxyHeaderStart(Buffer.from('PRO')), 'maybe')
  t.equal(proxyHeaderStart(Buffer.from('LHLO x\r\n')), 'no')
  t.equal(proxyHeaderStart(V2_SIGNATURE.subarray(0, 5)), 'maybe')
  t.equal(proxyHeaderStart(Buffer.from('\r\n')), 'maybe', 'an empty line could still be a v2 signature')
  t.match(parseProxyHeader(Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nLHLO')), {
    status: 'ok',
    length: 32,
    client: { address: '1.2.3.4', port: 1 },
    version: 1,
  })
  t.match(parseProxyHeader(Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n')), { status: 'invalid' })
  t.match(parseProxyHeader(Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n')), { status: 'invalid' }, 'a port with a leading zero')
  t.match(parseProxyHeader(Buffer.from('PROXY ' + 'x'.repeat(120))), { status: 'invalid' }, 'no CRLF within 107 octets')
  const h = v2({ family: 6, src: '::ffff:192.0.2.1' })
  t.match(parseProxyHeader(h.subarray(0, 20)), { status: 'incomplete' })
  t.match(parseProxyHeader(h), { status: 'ok', length: h.length, version: 2 })
  const huge = Buffer.concat([V2_SIGNATURE, Buffer.from([0x21, 0x11, 0xff, 0xff])])
  t.match(parseProxyHeader(huge), { status: 'invalid', reason: /at most 4096/ }, 'a length past the cap is refused before it arrives')
})
