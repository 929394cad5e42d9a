/**
 * LmtpParser alone: every input of the table gives the same events whether it arrives whole, one
 * byte at a time, or in random pieces, and those events are the expected ones. The driver plays the
 * session's part: after a `DATA` line it switches to data mode, after `BDAT n` it reads n octets.
 */
import t from 'tap'
import { LmtpParser, type ParserEvent } from '../../src/lmtp/parser.js'

/** Events in a comparable form; consecutive data events are joined into one. */
type Event = ['line', string] | ['bare-lf', string] | ['too-long'] | ['data', string] | ['end']

const MAX_LINE = 32

function drive(pieces: readonly Buffer[]): Event[] {
  const parser = new LmtpParser(MAX_LINE)
  const events: Event[] = []
  const add = (e: ParserEvent): void => {
    switch (e.type) {
      case 'line': {
        const line = e.line.toString('latin1')
        events.push([e.bareLf ? 'bare-lf' : 'line', line])
        const bdat = /^BDAT (\d+)/.exec(line)
        if (line === 'DATA') parser.startData()
        else if (bdat) parser.startBdat(Number(bdat[1]))
        return
      }
      case 'data': {
        const last = events[events.length - 1]
        if (last?.[0] === 'data') last[1] += e.chunk.toString('latin1')
        else events.push(['data', e.chunk.toString('latin1')])
        return
      }
      case 'too-long':
        events.push(['too-long'])
        return
      case 'end':
        events.push(['end'])
    }
  }
  for (const piece of pieces) {
    parser.push(piece)
    for (let e = parser.next(); e !== null; e = parser.next()) add(e)
  }
  return events
}

function split(input: Buffer, sizes: () => number): Buffer[] {
  const out: Buffer[] = []
  for (let i = 0; i < input.length;) {
    const n = Math.max(1, sizes())
    out.push(input.subarray(i, i + n))
    i += n
  }
  return out
}

/** A small deterministic generator so that a failure can be replayed. */
function lcg(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    return s / 0x100000000
  }
}

interface Case {
  name: string
  input: string
  expect: Event[]
}

const long = 'NOOP ' + 'x'.repeat(MAX_LINE)

const cases: Case[] = [
  {
    name: 'command lines',
    input: 'LHLO a\r\nNOOP\r\n',
    expect: [
      ['line', 'LHLO a'],
      ['line', 'NOOP'],
    ],
  },
  { name: 'an incomplete line is not an event', input: 'LHLO a\r\nNOO', expect: [['line', 'LHLO a']] },
  {
    name: 'empty line',
    input: '\r\nNOOP\r\n',
    expect: [
      ['line', ''],
      ['line', 'NOOP'],
    ],
  },
  {
    name: 'bare LF ends a line and is flagged',
    input: 'NOOP\nQUIT\r\n',
    expect: [
      ['bare-lf', 'NOOP'],
      ['line', 'QUIT'],
    ],
  },
  { name: 'a bare CR stays inside the line', input: 'NO\rOP\r\n', expect: [['line', 'NO\rOP']] },
  {
    name: 'line of exactly the limit (CRLF included)',
    input: 'x'.repeat(MAX_LINE - 2) + '\r\nNOOP\r\n',
    expect: [
      ['line', 'x'.repeat(MAX_LINE - 2)],
      ['line', 'NOOP'],
    ],
  },
  { name: 'line one octet over the limit', input: 'x'.repeat(MAX_LINE - 1) + '\r\nNOOP\r\n', expect: [['too-long'], ['line', 'NOOP']] },
  { name: 'long line reported once, then the next line', input: long + long + '\r\nNOOP\r\n', expect: [['too-long'], ['line', 'NOOP']] },
  { name: 'two long lines in a row', input: long + '\r\n' + long + '\n', expect: [['too-long'], ['too-long']] },
  {
    name: 'DATA with dot-unstuffing and the end marker',
    input: 'DATA\r\n..a\r\nb\r\n..\r\n.\r\nQUIT\r\n',
    expect: [['line', 'DATA'], ['data', '.a\r\nb\r\n.\r\n'], ['end'], ['line', 'QUIT']],
  },
  { name: 'empty message', input: 'DATA\r\n.\r\nNOOP\r\n', expect: [['line', 'DATA'], ['end'], ['line', 'NOOP']] },
  {
    name: 'bare LF and bare CR are data, never line starts',
    input: 'DATA\r\nA\n.\nB\r.\r\nC\n.\r\nD\r\n.\r\n',
    expect: [['line', 'DATA'], ['data', 'A\n.\nB\r.\r\nC\n.\r\nD\r\n'], ['end']],
  },
  {
    name: 'dot then CR then not LF keeps the CR',
    input: 'DATA\r\n.\rX\r\n.\r\r\n.\r\n',
    expect: [['line', 'DATA'], ['data', '\rX\r\n\r\r\n'], ['end']],
  },
  {
    name: 'CRLF CRLF dot: an empty line before the end',
    input: 'DATA\r\nx\r\n\r\n.\r\nNOOP\r\n',
    expect: [['line', 'DATA'], ['data', 'x\r\n\r\n'], ['end'], ['line', 'NOOP']],
  },
  {
    name: 'a line of dots',
    input: 'DATA\r\n...\r\n....x\r\n.\r\n',
    expect: [['line', 'DATA'], ['data', '..\r\n...x\r\n'], ['end']],
  },
  {
    name: 'long lines inside DATA are not limited',
    input: 'DATA\r\n' + 'y'.repeat(MAX_LINE * 4) + '\r\n.\r\n',
    expect: [['line', 'DATA'], ['data', 'y'.repeat(MAX_LINE * 4) + '\r\n'], ['end']],
  },
  {
    name: 'BDAT reads exactly n octets, no unstuffing, no end marker',
    input: 'BDAT 9\r\n.\r\n..\r\n\nBDAT 0 LAST\r\nNOOP\r\n',
    expect: [['line', 'BDAT 9'], ['data', '.\r\n..\r\n\nB'], ['end'], ['line', 'DAT 0 LAST'], ['line', 'NOOP']],
  },
  {
    name: 'BDAT 0 ends at once',
    input: 'BDAT 0 LAST\r\nQUIT\r\n',
    expect: [['line', 'BDAT 0 LAST'], ['end'], ['line', 'QUIT']],
  },
  {
    name: 'two BDAT chunks then DATA',
    input: 'BDAT 3\r\nabcBDAT 2 LAST\r\n\r\nDATA\r\nz\r\n.\r\n',
    expect: [['line', 'BDAT 3'], ['data', 'abc'], ['end'], ['line', 'BDAT 2 LAST'], ['data', '\r\n'], ['end'], ['line', 'DATA'], ['data', 'z\r\n'], ['end']],
  },
  {
    name: 'pipelined transactions in one segment',
    input: 'MAIL FROM:<>\r\nDATA\r\n1\r\n.\r\nMAIL FROM:<>\r\nDATA\r\n2\r\n.\r\nQUIT\r\n',
    expect: [
      ['line', 'MAIL FROM:<>'],
      ['line', 'DATA'],
      ['data', '1\r\n'],
      ['end'],
      ['line', 'MAIL FROM:<>'],
      ['line', 'DATA'],
      ['data', '2\r\n'],
      ['end'],
      ['line', 'QUIT'],
    ],
  },
  {
    name: 'non-ASCII octets pass through',
    input: 'DATA\r\n\u00e9\u00ff\u0000\r\n.\r\n',
    expect: [['line', 'DATA'], ['data', '\u00e9\u00ff\u0000\r\n'], ['end']],
  },
]

for (const c of cases) {
  t.test(c.name, async (t) => {
    const input = Buffer.from(c.input, 'latin1')
    const whole = drive([input])
    t.strictSame(whole, c.expect, 'whole input')
    t.strictSame(drive(split(input, () => 1)), whole, 'one byte at a time')
    const differing: { seed: number; events: Event[] }[] = []
    for (let seed = 1; seed <= 20; seed++) {
      const rnd = lcg(seed)
      const events = drive(split(input, () => 1 + Math.floor(rnd() * 6)))
      if (JSON.stringify(events) !== JSON.stringify(whole)) differing.push({ seed, events })
    }
    t.strictSame(differing, [], 'random pieces of 1 to 6 octets (20 seeds)')
  })
}

t.test('a long line without LF does not stay buffered', async (t) => {
  const parser = new LmtpParser(MAX_LINE)
  let events = 0
  for (let i = 0; i < 1000; i++) {
    parser.push(Buffer.alloc(1024, 0x78))
    if (parser.next() !== null) events++
  }
  t.equal(events, 0, 'no event before the LF')
  t.ok(parser.buffered <= 1024, `buffered ${parser.buffered} octets after 1000 KiB`)
  parser.push(Buffer.from('\r\nNOOP\r\n'))
  t.strictSame(parser.next(), { type: 'too-long' })
  t.same(parser.next(), { type: 'line', line: Buffer.from('NOOP'), bareLf: false })
})
