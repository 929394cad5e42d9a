/**
 * LHLO (RFC 2033 section 4.1) and the HELO/EHLO an SMTP client might send by mistake. STARTTLS is
 * announced while the session is in cleartext and a certificate is configured; AUTH only inside
 * TLS, when a users file is configured.
 */
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
  const lines = [o.hostname, 'PIPELINING', 'ENHANCEDSTATUSCODES', '8BITMIME', `SIZE ${o.maxMessageSize}`, 'SMTPUTF8', 'CHUNKING', 'BINARYMIME']
  if (o.tls !== null && s.tls === null) lines.push('STARTTLS')
  if (o.auth !== null && s.tls !== null) lines.push('AUTH PLAIN LOGIN')
  lines.push('XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE')
  s.send(reply(250, undefined, lines), false)
}

export function ehlo(s: LmtpSession): void {
  s.protocolError(R.useLhlo())
}
