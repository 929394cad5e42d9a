/** XFORWARD (Postfix's extension: the original SMTP client), kept for the next transaction's envelope. */
import type { LmtpSession } from '../session.js'
import { decodeXtext } from '../address.js'
import type { XForward } from '../types.js'
import * as R from '../replies.js'

const XFORWARD_ATTRS = new Set(['NAME', 'ADDR', 'PORT', 'PROTO', 'HELO', 'IDENT', 'SOURCE'])

export function xforward(s: LmtpSession, args: string): void {
  if (s.lhlo === null) return s.protocolError(R.lhloFirst())
  if (s.txn) return s.protocolError(R.badSequence())
  const tokens = args.split(' ').filter((t) => t !== '')
  if (tokens.length === 0) return s.protocolError(R.xforwardSyntax())
  const update: XForward = {}
  for (const t of tokens) {
    const eq = t.indexOf('=')
    const key = eq === -1 ? '' : t.slice(0, eq).toUpperCase()
    if (!XFORWARD_ATTRS.has(key)) return s.protocolError(R.xforwardSyntax())
    const decoded = decodeXtext(t.slice(eq + 1))
    if (decoded === null) return s.protocolError(R.xforwardSyntax())
    const value = decoded === '[UNAVAILABLE]' || decoded === '[TEMPUNAVAIL]' ? undefined : decoded.slice(0, 255)
    update[key.toLowerCase() as keyof XForward] = value
  }
  s.xforward = { ...s.xforward, ...update }
  s.send(R.ok())
}
