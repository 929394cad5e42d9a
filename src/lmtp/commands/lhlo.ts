/** LHLO (RFC 2033 section 4.1) and the HELO/EHLO an SMTP client might send by mistake. */
import type { LmtpSession } from '../session.js'
import { reply } from '../reply.js'
import * as R from '../replies.js'

export function lhlo(s: LmtpSession, args: string): void {
  const name = args.trim()
  if (name === '' || /\s/.test(name)) return s.protocolError(R.lhloSyntax())
  s.resetTransaction()
  s.xforward = {}
  s.lhlo = name
  const o = s.options
  s.send(
    reply(250, undefined, [
      o.hostname,
      'PIPELINING',
      'ENHANCEDSTATUSCODES',
      '8BITMIME',
      `SIZE ${o.maxMessageSize}`,
      'SMTPUTF8',
      'CHUNKING',
      'BINARYMIME',
      'XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE',
    ]),
    false,
  )
}

export function ehlo(s: LmtpSession): void {
  s.protocolError(R.useLhlo())
}
