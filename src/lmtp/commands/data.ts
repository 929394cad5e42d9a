/** DATA (RFC 2033 section 4.2) and BDAT (RFC 3030): they start the message; the session streams it. */
import type { LmtpSession } from '../session.js'
import type { Reply } from '../reply.js'
import * as R from '../replies.js'

export function data(s: LmtpSession, args: string): void {
  const txn = s.txn
  if (!txn) return s.protocolError(s.lhlo === null ? R.lhloFirst() : R.needMail())
  if (args.trim() !== '') return s.protocolError(R.noArguments())
  if (txn.usedBdat) return s.protocolError(R.badSequence())
  if (txn.recipients.length === 0) return s.protocolError(R.noRecipients())
  if (txn.sender.body === 'BINARYMIME') return s.protocolError(R.binaryNeedsBdat())
  s.send(R.startData(), false)
  s.parser.startData()
  s.setTimer(s.options.dataTimeoutMs)
  s.beginMessage(txn)
}

export function bdat(s: LmtpSession, args: string): void {
  const m = /^(\d{1,15})(?: +(LAST))? *$/i.exec(args)
  if (!m) {
    // Without a size the chunk cannot be skipped: the session would lose sync, so close it.
    s.send(R.bdatSyntax())
    return s.closeWith(R.closingOutOfSync(s.options.hostname))
  }
  const size = Number(m[1])
  const last = m[2] !== undefined
  const txn = s.txn
  let rejectWith: Reply | null = null
  if (!txn) rejectWith = s.lhlo === null ? R.lhloFirst() : R.needMail()
  else if (txn.recipients.length === 0) rejectWith = R.noRecipients()
  else if (txn.message && !txn.usedBdat) rejectWith = R.badSequence()
  s.bdat = { last, size, reject: rejectWith }
  s.parser.startBdat(size)
  if (rejectWith) {
    s.errors++
    return
  }
  s.setTimer(s.options.dataTimeoutMs)
  if (!txn!.message) {
    txn!.usedBdat = true
    s.beginMessage(txn!)
  }
}
