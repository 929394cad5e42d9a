/**
 * STARTTLS (RFC 3207). Offered only when a certificate is configured and the session is not yet
 * encrypted. The session itself does the switch (`LmtpSession.startTls`): it drops any input the
 * client pipelined after this command and, once the handshake completes, starts over as if the
 * connection were new (the client must send LHLO again).
 */
import type { SecureContext } from 'node:tls'
import type { LmtpSession } from '../session.js'
import * as R from '../replies.js'

export function starttls(s: LmtpSession, args: string): void {
  const tls = s.options.tls
  if (tls === null) return s.protocolError(R.unknownCommand())
  if (args.trim() !== '') return s.protocolError(R.noArguments())
  if (s.tls !== null) return s.protocolError(R.alreadyTls())
  if (s.lhlo === null) return s.protocolError(R.lhloFirst())
  if (s.txn) return s.protocolError(R.badSequence())
  let context: SecureContext
  try {
    context = tls.credentials.context()
  } catch (err) {
    s.log.error({ err }, 'no TLS context')
    return s.send(R.tlsUnavailable())
  }
  s.send(R.readyForTls())
  s.startTls(context, tls.clientCert)
}
