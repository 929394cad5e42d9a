/** RCPT TO (RFC 5321 section 4.1.1.3): syntax, the domain list, the recipient limit, the handler's verdict. */
import type { LmtpSession } from '../session.js'
import { parseMailbox, parseParams, splitPathAndParams } from '../address.js'
import type { Reply } from '../reply.js'
import * as R from '../replies.js'

export function rcpt(s: LmtpSession, args: string): void | Promise<void> {
  const txn = s.txn
  if (!txn) return s.protocolError(s.lhlo === null ? R.lhloFirst() : R.needMail())
  if (txn.message) return s.protocolError(R.badSequence())
  const m = /^TO:(.*)$/i.exec(args)
  const split = m ? splitPathAndParams(m[1]!) : null
  if (!split) return s.protocolError(R.rcptSyntax())
  const params = parseParams(split.params)
  if (!params) return s.protocolError(R.paramSyntax())
  if (params.length > 0) return s.protocolError(R.unknownParam(params[0]!.key))
  const path = parseMailbox(split.path, false)
  if (path === 'address' || path === 'syntax') return s.send(R.badRecipient())
  if (!path.ascii && !txn.sender.smtputf8) return s.send(R.needSmtputf8())
  const domains = s.options.domains
  if (path.domain !== '' && !domains.has('*') && !domains.has(path.domain)) return s.send(R.domainNotAccepted(path.domain))
  if (txn.recipients.length >= s.options.maxRecipients) return s.send(R.tooManyRecipients())
  const accept = (context?: unknown, r?: Reply): void => {
    if (s.txn !== txn) return
    txn.recipients.push({ address: path.address, domain: path.domain, index: txn.recipients.length, context })
    s.send(r ?? R.recipientOk(path.address))
  }
  const handler = s.handler
  if (!handler.recipient) return accept()
  return s.verdict(
    () => handler.recipient!({ address: path.address, domain: path.domain }, txn.sender, s.info),
    (v) => {
      const r = v?.reply
      if (r === undefined || r.code < 300) accept(v?.context, r)
      else s.send(r)
    },
    (v) => v?.reply,
  )
}
