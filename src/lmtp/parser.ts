/**
 * The LMTP input parser: bytes in, protocol events out. It knows nothing of commands or state; the
 * session tells it which mode to read in (command lines, DATA, or a BDAT chunk of n octets).
 *
 * Line policy (documented in docs/lmtp.md):
 * - Only CRLF ends a line. In command mode a line ending in a bare LF is reported as `bareLf` and the
 *   session rejects it. In DATA a bare CR or bare LF is ordinary data: it is passed through unchanged,
 *   never starts a line, so it never takes part in dot-unstuffing or in the end-of-data marker.
 *   `\n.\n`, `\n.\r\n` and `\r.\r\n` therefore never end the data (the SMTP smuggling family).
 * - A command line longer than the limit is reported once as `too-long` when its LF arrives; its bytes
 *   are dropped as they come, so memory never grows with the line. Once more than `maxDiscard`
 *   octets of one line have been dropped, `abandoned` is reported instead (at once, without waiting
 *   for an LF that may never come) and the session closes the connection.
 *
 * Data segments are zero-copy views (`subarray`) of the received chunks.
 */

export type ParserEvent =
  | { readonly type: 'line'; readonly line: Buffer; readonly bareLf: boolean }
  | { readonly type: 'too-long' }
  | { readonly type: 'abandoned' }
  | { readonly type: 'data'; readonly chunk: Buffer }
  | { readonly type: 'end' }

type Mode = 'command' | 'data' | 'bdat'

/** DATA scanner states. */
const enum D {
  /** Just after CRLF (or at the start of the data). */
  LineStart,
  /** Inside a line, previous octet not CR. */
  Mid,
  /** Inside a line, previous octet CR. */
  Cr,
  /** A line started with '.', which was dropped. */
  Dot,
  /** '.' then CR at the start of a line: one LF away from the end. */
  DotCr,
}

const CR = 0x0d
const LF = 0x0a
const DOT = 0x2e
const CR_BUF = Buffer.from([CR])

export class LmtpParser {
  private chunks: Buffer[] = []
  private offset = 0
  private queued = 0
  private mode: Mode = 'command'
  private dstate: D = D.LineStart
  /** A CR that ended the previous chunk in state DotCr and has not been emitted yet. */
  private heldCr = false
  private bdatLeft = 0
  private discarding = false
  /** Octets of the current over-long line dropped so far. */
  private discarded = 0

  constructor(
    private readonly maxLineLength: number,
    private readonly maxDiscard = Number.MAX_SAFE_INTEGER,
  ) {}

  /** Octets received and not yet parsed. */
  get buffered(): number {
    return this.queued
  }

  get currentMode(): Mode {
    return this.mode
  }

  /** True while a command line has started and not yet ended (octets buffered, or an over-long line being dropped). */
  get partialLine(): boolean {
    return this.mode === 'command' && (this.queued > 0 || this.discarding)
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return
    this.chunks.push(chunk)
    this.queued += chunk.length
  }

  /** Read the message of a DATA command, up to and excluding the end-of-data line. */
  startData(): void {
    this.mode = 'data'
    this.dstate = D.LineStart
    this.heldCr = false
  }

  /** Read exactly `size` octets (a BDAT chunk), then report `end`. */
  startBdat(size: number): void {
    this.mode = 'bdat'
    this.bdatLeft = size
  }

  /** Drops everything buffered and any line being dropped (input that must never be read, as after STARTTLS). */
  discardInput(): void {
    this.clear()
    this.discarding = false
    this.discarded = 0
  }

  /** Drops everything buffered (the connection is closing). */
  clear(): void {
    this.chunks = []
    this.offset = 0
    this.queued = 0
  }

  next(): ParserEvent | null {
    switch (this.mode) {
      case 'command':
        return this.nextLine()
      case 'data':
        return this.nextData()
      case 'bdat':
        return this.nextBdat()
    }
  }

  private consume(n: number): void {
    this.queued -= n
    let left = n
    while (left > 0) {
      const head = this.chunks[0]!
      const avail = head.length - this.offset
      if (left < avail) {
        this.offset += left
        return
      }
      left -= avail
      this.chunks.shift()
      this.offset = 0
    }
  }

  private nextLine(): ParserEvent | null {
    let scanned = 0
    for (let i = 0; i < this.chunks.length; i++) {
      const chunk = this.chunks[i]!
      const start = i === 0 ? this.offset : 0
      const lf = chunk.indexOf(LF, start)
      if (lf === -1) {
        scanned += chunk.length - start
        continue
      }
      const length = scanned + (lf - start) + 1
      if (this.discarding || length > this.maxLineLength) {
        this.consume(length)
        const total = this.discarded + length
        this.discarding = false
        this.discarded = 0
        return total > this.maxDiscard ? { type: 'abandoned' } : { type: 'too-long' }
      }
      let line: Buffer
      if (i === 0) {
        line = chunk.subarray(start, lf + 1)
      } else {
        const parts = [this.chunks[0]!.subarray(this.offset)]
        for (let j = 1; j < i; j++) parts.push(this.chunks[j]!)
        parts.push(chunk.subarray(0, lf + 1))
        line = Buffer.concat(parts, length)
      }
      this.consume(length)
      const bareLf = line.length < 2 || line[line.length - 2] !== CR
      return { type: 'line', line: line.subarray(0, line.length - (bareLf ? 1 : 2)), bareLf }
    }
    if (this.discarding || scanned > this.maxLineLength) {
      // Over the limit and still no LF: drop what we have, remember to report it when the LF comes.
      this.discarding = true
      this.discarded += this.queued
      this.clear()
      if (this.discarded > this.maxDiscard) {
        this.discarding = false
        this.discarded = 0
        return { type: 'abandoned' }
      }
    }
    return null
  }

  private nextBdat(): ParserEvent | null {
    if (this.bdatLeft === 0) {
      this.mode = 'command'
      return { type: 'end' }
    }
    const head = this.chunks[0]
    if (head === undefined) return null
    const n = Math.min(head.length - this.offset, this.bdatLeft)
    const chunk = head.subarray(this.offset, this.offset + n)
    this.consume(n)
    this.bdatLeft -= n
    return { type: 'data', chunk }
  }

  private nextData(): ParserEvent | null {
    for (;;) {
      const buf = this.chunks[0]
      if (buf === undefined) return null
      const start = this.offset
      const n = buf.length
      let i = start
      let st = this.dstate
      while (i < n) {
        if (st === D.Mid) {
          const cr = buf.indexOf(CR, i)
          if (cr === -1) {
            i = n
            break
          }
          i = cr + 1
          st = D.Cr
        } else if (st === D.Cr) {
          if (buf[i] === LF) {
            i++
            st = D.LineStart
          } else {
            st = D.Mid
          }
        } else if (st === D.LineStart) {
          if (buf[i] === DOT) {
            // Drop the leading dot: emit what precedes it, continue after it.
            this.dstate = D.Dot
            this.consume(i + 1 - start)
            if (i > start) return { type: 'data', chunk: buf.subarray(start, i) }
            st = D.Dot
            break
          }
          st = D.Mid
        } else if (st === D.Dot) {
          if (buf[i] === CR) {
            i++
            st = D.DotCr
          } else {
            st = D.Mid
          }
        } else {
          // DotCr
          if (buf[i] === LF) {
            // End of data. The bytes since `start` are only the CR of the ".\r\n" line.
            this.consume(i + 1 - start)
            this.mode = 'command'
            this.heldCr = false
            return { type: 'end' }
          }
          st = D.Mid
          if (this.heldCr) {
            // The CR after the dot arrived in an earlier chunk and was held back: emit it now.
            this.heldCr = false
            this.dstate = st
            return { type: 'data', chunk: CR_BUF }
          }
        }
      }
      if (i < n) continue // a dot was dropped at the very start of the segment: rescan from there
      this.dstate = st
      let end = n
      if (st === D.DotCr) {
        // Hold the CR back: if the next octet is LF it belongs to the end-of-data marker.
        end = n - 1
        this.heldCr = true
      }
      this.consume(n - start)
      if (end > start) return { type: 'data', chunk: buf.subarray(start, end) }
    }
  }
}
