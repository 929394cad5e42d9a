import t from 'tap'
import { startServer } from '../helpers/lmtp.js'
import { codes, converse } from '../helpers/lmtp-client.js'

const LHLO = 'LHLO client.test\r\n'
const L = '250' // the LHLO reply's last line (no enhanced code, RFC 2034)

interface Case {
  name: string
  input: string
  expect: string[]
  bodies?: string[]
}

const cases: Case[] = [
  {
    name: 'one recipient, one reply after the data',
    input: LHLO + 'MAIL FROM:<a@x.test>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nSubject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n',
    expect: [L, '250 2.1.0', '250 2.1.5', '354', '250 2.0.0', '221 2.0.0'],
    bodies: ['Subject: hi\r\n\r\nbody\r\n'],
  },
  {
    name: 'duplicate recipients are kept and each gets its own reply',
    input: LHLO + 'MAIL FROM:<a@x.test>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<B@EXAMPLE.COM>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n',
    expect: [L, '250 2.1.0', '250 2.1.5', '250 2.1.5', '250 2.1.5', '354', '250 2.0.0', '250 2.0.0', '250 2.0.0', '221 2.0.0'],
  },
  {
    name: 'rejected recipients get no reply after the data',
    input: LHLO + 'MAIL FROM:<>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<c@other.test>\r\nRCPT TO:<d@example.org>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n',
    expect: [L, '250 2.1.0', '250 2.1.5', '550 5.1.2', '250 2.1.5', '354', '250 2.0.0', '250 2.0.0', '221 2.0.0'],
  },
  {
    name: 'Postmaster without a domain is accepted',
    input: LHLO + 'MAIL FROM:<>\r\nRCPT TO:<Postmaster>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n',
    expect: [L, '250 2.1.0', '250 2.1.5', '354', '250 2.0.0', '221 2.0.0'],
  },
  {
    name: 'DATA with no accepted recipient gets 503 and no 354',
    input: LHLO + 'MAIL FROM:<>\r\nRCPT TO:<c@other.test>\r\nDATA\r\nQUIT\r\n',
    expect: [L, '250 2.1.0', '550 5.1.2', '503 5.5.1', '221 2.0.0'],
  },
  {
    name: 'HELO and EHLO get 500 and the session goes on',
    input: 'HELO x\r\nEHLO x\r\n' + LHLO + 'QUIT\r\n',
    expect: ['500 5.5.1', '500 5.5.1', L, '221 2.0.0'],
  },
  { name: 'LHLO without a name gets 501', input: 'LHLO\r\nLHLO \r\nQUIT\r\n', expect: ['501 5.5.4', '501 5.5.4', '221 2.0.0'] },
  {
    name: 'commands are case-insensitive',
    input: 'lhlo x\r\nmail from:<a@x.test>\r\nrcpt to:<b@example.com>\r\nnoop\r\nrset\r\nquit\r\n',
    expect: [L, '250 2.1.0', '250 2.1.5', '250 2.0.0', '250 2.0.0', '221 2.0.0'],
  },
  {
    name: 'MAIL before LHLO is refused',
    input: 'MAIL FROM:<a@x.test>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nQUIT\r\n',
    expect: ['503 5.5.1', '503 5.5.1', '503 5.5.1', '221 2.0.0'],
  },
  {
    name: 'a second MAIL in a transaction gets 503',
    input: LHLO + 'MAIL FROM:<a@x.test>\r\nMAIL FROM:<a@x.test>\r\nQUIT\r\n',
    expect: [L, '250 2.1.0', '503 5.5.1', '221 2.0.0'],
  },
  {
    name: 'MAIL parameters: SIZE, BODY, SMTPUTF8; unknown 555; bad values 501',
    input:
      LHLO +
      'MAIL FROM:<a@x.test> SIZE=100 BODY=8BITMIME SMTPUTF8\r\nRSET\r\n' +
      'MAIL FROM:<a@x.test> SIZE=99999999999\r\n' +
      'MAIL FROM:<a@x.test> FOO=bar\r\n' +
      'MAIL FROM:<a@x.test> BODY=9BIT\r\n' +
      'MAIL FROM:<a@x.test> SIZE=abc\r\n' +
      'MAIL FROM:<a@x.test> SIZE=1 SIZE=2\r\n' +
      'MAIL FROM:<a@x.test> BODY=BINARYMIME\r\nRSET\r\nQUIT\r\n',
    expect: [L, '250 2.1.0', '250 2.0.0', '552 5.3.4', '555 5.5.4', '501 5.5.4', '501 5.5.4', '501 5.5.4', '250 2.1.0', '250 2.0.0', '221 2.0.0'],
  },
  {
    name: 'MAIL syntax errors',
    input: LHLO + 'MAIL\r\nMAIL FROM:a@x.test\r\nMAIL FROM:<a@x.test\r\nMAIL FROM:<not an address>\r\nMAIL FROM:<@>\r\nQUIT\r\n',
    expect: [L, '501 5.5.2', '501 5.5.2', '501 5.5.2', '553 5.1.7', '553 5.1.7', '221 2.0.0'],
  },
  {
    name: 'MAIL FROM with a space after the colon and a source route is accepted',
    input: LHLO + 'MAIL FROM: <@relay.test:a@x.test>\r\nQUIT\r\n',
    expect: [L, '250 2.1.0', '221 2.0.0'],
  },
  {
    name: 'RCPT before MAIL, bad syntax, unknown parameter',
    input: LHLO + 'RCPT TO:<b@example.com>\r\nMAIL FROM:<>\r\nRCPT <b@example.com>\r\nRCPT TO:<b>\r\nRCPT TO:<b@example.com> NOTIFY=NEVER\r\nQUIT\r\n',
    expect: [L, '503 5.5.1', '250 2.1.0', '501 5.5.2', '553 5.1.3', '555 5.5.4', '221 2.0.0'],
  },
  {
    name: 'non-ASCII addresses need SMTPUTF8',
    input:
      LHLO +
      'MAIL FROM:<jörg@x.test>\r\nMAIL FROM:<jörg@x.test> SMTPUTF8\r\nRCPT TO:<bé@example.com>\r\nRSET\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<bé@example.com>\r\nQUIT\r\n',
    expect: [L, '553 5.6.7', '250 2.1.0', '250 2.1.5', '250 2.0.0', '250 2.1.0', '553 5.6.7', '221 2.0.0'],
  },
  {
    name: 'RSET, NOOP, VRFY, HELP, unknown commands',
    input: LHLO + 'RSET\r\nNOOP hello\r\nVRFY someone\r\nVRFY\r\nHELP\r\nFOO\r\nSTARTTLS\r\nRSET x\r\nQUIT\r\n',
    expect: [L, '250 2.0.0', '250 2.0.0', '252 2.5.0', '501 5.5.4', '214 2.0.0', '500 5.5.1', '500 5.5.1', '501 5.5.4', '221 2.0.0'],
  },
  {
    name: 'XFORWARD before MAIL is accepted, inside a transaction refused, bad attributes 501',
    input: LHLO + 'XFORWARD NAME=mx.test ADDR=192.0.2.1 PROTO=ESMTP HELO=mx.test\r\nXFORWARD FOO=1\r\nMAIL FROM:<>\r\nXFORWARD NAME=x\r\nQUIT\r\n',
    expect: [L, '250 2.0.0', '501 5.5.4', '250 2.1.0', '503 5.5.1', '221 2.0.0'],
  },
  {
    name: 'empty body',
    input: LHLO + 'MAIL FROM:<>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n.\r\nQUIT\r\n',
    expect: [L, '250 2.1.0', '250 2.1.5', '354', '250 2.0.0', '221 2.0.0'],
    bodies: [''],
  },
  {
    name: 'dot-unstuffing, including the first line',
    input: LHLO + 'MAIL FROM:<>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n..first\r\nmid\r\n...\r\n..\r\n.x\r\n.\r\nQUIT\r\n',
    expect: [L, '250 2.1.0', '250 2.1.5', '354', '250 2.0.0', '221 2.0.0'],
    bodies: ['.first\r\nmid\r\n..\r\n.\r\nx\r\n'],
  },
  {
    name: 'smuggling: \\n.\\n does not end the data and the smuggled MAIL never runs',
    input: LHLO + 'MAIL FROM:<>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nA\n.\nMAIL FROM:<evil@x.test>\r\nB\r\n.\r\nQUIT\r\n',
    expect: [L, '250 2.1.0', '250 2.1.5', '354', '250 2.0.0', '221 2.0.0'],
    bodies: ['A\n.\nMAIL FROM:<evil@x.test>\r\nB\r\n'],
  },
  {
    name: 'smuggling: \\n.\\r\\n does not end the data',
    input: LHLO + 'MAIL FROM:<>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nA\n.\r\nRCPT TO:<evil@example.com>\r\n.\r\nQUIT\r\n',
    expect: [L, '250 2.1.0', '250 2.1.5', '354', '250 2.0.0', '221 2.0.0'],
    bodies: ['A\n.\r\nRCPT TO:<evil@example.com>\r\n'],
  },
  {
    name: 'smuggling: \\r.\\r\\n does not end the data',
    input: LHLO + 'MAIL FROM:<>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nA\r.\r\nQUIT\r\n.\r\nQUIT\r\n',
    expect: [L, '250 2.1.0', '250 2.1.5', '354', '250 2.0.0', '221 2.0.0'],
    bodies: ['A\r.\r\nQUIT\r\n'],
  },
  {
    name: 'smuggling: \\r\\n.\\r (no LF) does not end the data',
    input: LHLO + 'MAIL FROM:<>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nA\r\n.\rNOOP\r\n.\r\nQUIT\r\n',
    expect: [L, '250 2.1.0', '250 2.1.5', '354', '250 2.0.0', '221 2.0.0'],
    bodies: ['A\r\n\rNOOP\r\n'],
  },
  {
    name: 'bare LF in a command line gets 500 and the session stays in sync',
    input: LHLO + 'NOOP\nNOOP\r\nQUIT\r\n',
    expect: [L, '500 5.5.2', '250 2.0.0', '221 2.0.0'],
  },
  {
    name: 'control characters and NUL in a command line',
    input: LHLO + 'NOOP\u0000x\r\nNO\rOP\r\nQUIT\r\n',
    expect: [L, '500 5.5.2', '500 5.5.2', '221 2.0.0'],
  },
  {
    name: 'a long command line gets 500 5.5.2 and the rest of it is discarded',
    input: LHLO + 'NOOP ' + 'x'.repeat(10_000) + '\r\nNOOP\r\nQUIT\r\n',
    expect: [L, '500 5.5.2', '250 2.0.0', '221 2.0.0'],
  },
  {
    name: 'pipelined transaction followed by . and QUIT in the same segment',
    input:
      LHLO +
      'MAIL FROM:<a@x.test>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\nDATA\r\nhello\r\n.\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<d@example.com>\r\nDATA\r\nsecond\r\n.\r\nQUIT\r\n',
    expect: [L, '250 2.1.0', '250 2.1.5', '250 2.1.5', '354', '250 2.0.0', '250 2.0.0', '250 2.1.0', '250 2.1.5', '354', '250 2.0.0', '221 2.0.0'],
    bodies: ['hello\r\n', 'second\r\n'],
  },
  {
    name: 'BDAT chunks are read exactly, without unstuffing',
    input: LHLO + 'MAIL FROM:<> BODY=BINARYMIME\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\nBDAT 7\r\n..\r\n\r\n\nBDAT 5 LAST\r\n.\r\nQUQUIT\r\n',
    expect: [L, '250 2.1.0', '250 2.1.5', '250 2.1.5', '250 2.0.0', '250 2.0.0', '250 2.0.0', '221 2.0.0'],
    bodies: ['..\r\n\r\n\n.\r\nQU'],
  },
  {
    name: 'BDAT 0 LAST ends the message',
    input: LHLO + 'MAIL FROM:<>\r\nRCPT TO:<b@example.com>\r\nBDAT 3\r\nabcBDAT 0 LAST\r\nQUIT\r\n',
    expect: [L, '250 2.1.0', '250 2.1.5', '250 2.0.0', '250 2.0.0', '221 2.0.0'],
    bodies: ['abc'],
  },
  {
    name: 'a rejected BDAT chunk is still read to its end',
    input: LHLO + 'BDAT 10 LAST\r\nQUIT\r\nQUITMAIL FROM:<>\r\nRCPT TO:<c@other.test>\r\nBDAT 6 LAST\r\nQUIT\r\nNOOP\r\nQUIT\r\n',
    expect: [L, '503 5.5.1', '250 2.1.0', '550 5.1.2', '503 5.5.1', '250 2.0.0', '221 2.0.0'],
  },
  {
    name: 'DATA after BDAT and BINARYMIME with DATA are refused',
    input: LHLO + 'MAIL FROM:<> BODY=BINARYMIME\r\nRCPT TO:<b@example.com>\r\nDATA\r\nBDAT 1\r\nxDATA\r\nRSET\r\nQUIT\r\n',
    expect: [L, '250 2.1.0', '250 2.1.5', '503 5.5.1', '250 2.0.0', '503 5.5.1', '250 2.0.0', '221 2.0.0'],
  },
  {
    name: 'RSET drops the transaction and nothing is delivered',
    input: LHLO + 'MAIL FROM:<>\r\nRCPT TO:<b@example.com>\r\nBDAT 3\r\nabcRSET\r\nQUIT\r\n',
    expect: [L, '250 2.1.0', '250 2.1.5', '250 2.0.0', '250 2.0.0', '221 2.0.0'],
    bodies: [],
  },
]

for (const c of cases) {
  for (const piece of [undefined, 1, 7]) {
    t.test(`${c.name}${piece ? ` (${piece}-byte writes)` : ''}`, async (t) => {
      const { port, received } = await startServer(t)
      const out = await converse(port, c.input, { pieceSize: piece })
      t.strictSame(codes(out), c.expect, out)
      if (c.bodies) {
        t.strictSame(
          received.filter((r) => !r.error).map((r) => r.body.toString('utf8')),
          c.bodies,
        )
      }
    })
  }
}
