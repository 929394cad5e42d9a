/** MAIL FROM (RFC 5321 section 4.1.1.2) with SIZE (RFC 1870), BODY (RFC 6152, RFC 3030) and SMTPUTF8 (RFC 6531). */
import type { LmtpSession } from '../session.js'
import { parseMailbox, parseParams, splitPathAndParams } from '../address.js'
import type { BodyType, Sender } from '../types.js'
import * as R from '../replies.js'

export function mail(s: LmtpSession, args: string): void | Promise<void> {
  if (s.lhlo === null) return s.protocolError(R.lhloFirst())
  if (s.txn) return s.protocolError(R.nestedMail())
  if (s.options.tls?.required && s.tls === null) return s.protocolError(R.tlsRequired())
  if (s.options.auth?.required && s.authUser === null) return s.protocolError(R.authRequired())
  const m = /^FROM:(.*)$/i.exec(args)
  const split = m ? splitPathAndParams(m[1]!) : null
  if (!split) return s.protocolError(R.mailSyntax())
  const params = parseParams(split.params)
  if (!params) return s.protocolError(R.paramSyntax())
  let size: number | undefined
  let body: BodyType | undefined
  let smtputf8 = false
  const seen = new Set<string>()
  for (const p of params) {
    if (seen.has(p.key)) return s.protocolError(R.paramSyntax())
    seen.add(p.key)
    if (p.key === 'SIZE') {
      if (p.value === undefined || !/^\d{1,20}$/.test(p.value)) return s.protocolError(R.paramSyntax())
      size = Number(p.value)
      if (size > s.options.maxMessageSize) return s.send(R.tooBig(s.options.maxMessageSize))
    } else if (p.key === 'BODY') {
      const v = p.value?.toUpperCase()
      if (v !== '7BIT' && v !== '8BITMIME' && v !== 'BINARYMIME') return s.protocolError(R.paramSyntax())
      body = v
    } else if (p.key === 'SMTPUTF8') {
      if (p.value !== undefined) return s.protocolError(R.paramSyntax())
      smtputf8 = true
    } else {
      return s.protocolError(R.unknownParam(p.key))
    }
  }
  const path = parseMailbox(split.path, true)
  if (path === 'address' || path === 'syntax') return s.send(R.badSender())
  if (!path.ascii && !smtputf8) return s.send(R.needSmtputf8())
  const sender: Sender = { address: path.address, size, body, smtputf8 }
  const accept = (): void => {
    s.openTransaction(sender)
    s.send(R.senderOk(path.address))
  }
  const handler = s.handler
  if (!handler.sender) return accept()
  return s.verdict(
    () => handler.sender!(sender, s.info, s.xforward),
    (r) => (r === undefined || r.code < 300 ? accept() : s.send(r)),
  )
}
