/** The commands without state of their own: RSET, NOOP, VRFY, HELP, QUIT (RFC 5321 section 4.1.1). */
import type { LmtpSession } from '../session.js'
import * as R from '../replies.js'

export function rset(s: LmtpSession, args: string): void {
  if (args.trim() !== '') return s.protocolError(R.noArguments())
  s.resetTransaction()
  s.xforward = {}
  s.send(R.ok())
  if (s.draining) s.closeWith(R.shuttingDown(s.options.hostname))
}

export function noop(s: LmtpSession): void {
  s.send(R.ok())
}

export function vrfy(s: LmtpSession, args: string): void {
  if (args.trim() === '') return s.protocolError(R.vrfySyntax())
  s.send(R.cannotVrfy())
}

export function help(s: LmtpSession): void {
  s.send(R.help())
}

export function quit(s: LmtpSession): void {
  s.abortMessage('quit')
  s.txn = null
  s.send(R.bye(s.options.hostname))
  s.flush()
  s.quitting = true
  s.endSocket()
}
