/**
 * AUTH (RFC 4954) with the PLAIN (RFC 4616) and LOGIN mechanisms, offered only inside TLS and only
 * when a users file is configured. A client address with too many recent failures is refused with
 * 454 4.7.0 before its credentials are even checked. Passwords are never logged: a failure logs
 * the mechanism, the name tried and the client address.
 */
import type { LmtpSession } from '../session.js'
import * as R from '../replies.js'

/** `Username:` and `Password:`, the prompts LOGIN clients expect. */
const USERNAME = Buffer.from('Username:').toString('base64')
const PASSWORD = Buffer.from('Password:').toString('base64')

/** Decodes strict base64 (RFC 4648, padded); null when the text is not. */
function decodeBase64(text: string): Buffer | null {
  if (text.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(text)) return null
  return Buffer.from(text, 'base64')
}

function utf8(buf: Buffer): string | null {
  const text = buf.toString('utf8')
  return text.includes('\ufffd') ? null : text
}

export function auth(s: LmtpSession, args: string): void | Promise<void> {
  const a = s.options.auth
  if (a === null) return s.protocolError(R.unknownCommand())
  if (s.lhlo === null) return s.protocolError(R.lhloFirst())
  if (s.tls === null) return s.protocolError(R.encryptionRequired())
  if (s.authUser !== null) return s.protocolError(R.alreadyAuthenticated())
  if (s.txn) return s.protocolError(R.badSequence())
  const words = args.split(' ')
  if (words.length > 2 || words[0] === '') return s.protocolError(R.authSyntax())
  const mechanism = words[0]!.toUpperCase()
  const initial = words[1]
  if (mechanism !== 'PLAIN' && mechanism !== 'LOGIN') return s.protocolError(R.authMechanism())
  if (a.limiter.blocked(s.remoteAddress)) {
    s.log.warn('AUTH refused: too many failures from this address')
    s.authResult('limited')
    return s.send(R.authLimited())
  }

  const check = async (name: string, password: string): Promise<void> => {
    if (await a.users.verify(name, password)) {
      a.limiter.succeed(s.remoteAddress)
      s.authUser = name
      s.log.debug({ user: name, mechanism }, 'authenticated')
      s.authResult('ok')
      s.send(R.authOk())
    } else {
      a.limiter.fail(s.remoteAddress)
      s.log.warn({ user: name, mechanism }, 'authentication failed')
      s.authResult('failed')
      s.send(R.authFailed())
    }
  }
  /** Reads one client response: cancelled (`*`), not base64, or its decoded octets. */
  const response = (line: string): Buffer | null => {
    if (line === '*') {
      s.send(R.authCancelled())
      return null
    }
    const decoded = decodeBase64(line)
    if (decoded === null) s.send(R.authBadBase64())
    return decoded
  }

  if (mechanism === 'PLAIN') {
    const plain = (line: string): void | Promise<void> => {
      const decoded = response(line)
      if (decoded === null) return
      // authzid NUL authcid NUL passwd; acting as another identity (authzid) is not supported.
      const parts = utf8(decoded)?.split('\0')
      if (parts === undefined || parts.length !== 3 || parts[1] === '' || (parts[0] !== '' && parts[0] !== parts[1])) {
        a.limiter.fail(s.remoteAddress)
        s.authResult('failed')
        return s.send(R.authFailed())
      }
      return check(parts[1]!, parts[2]!)
    }
    if (initial === undefined) {
      s.send(R.authChallenge(''), false)
      s.continuation = plain
      return
    }
    return plain(initial === '=' ? '' : initial)
  }

  // LOGIN: the name (possibly as the initial response), then the password, each base64.
  const password = (name: string) => (line: string) => {
    const decoded = response(line)
    if (decoded === null) return
    const text = utf8(decoded)
    if (text === null) {
      a.limiter.fail(s.remoteAddress)
      s.authResult('failed')
      return s.send(R.authFailed())
    }
    return check(name, text)
  }
  const username = (line: string): void => {
    const decoded = response(line)
    if (decoded === null) return
    const name = utf8(decoded)
    if (name === null || name === '') {
      a.limiter.fail(s.remoteAddress)
      s.authResult('failed')
      return s.send(R.authFailed())
    }
    s.send(R.authChallenge(PASSWORD), false)
    s.continuation = password(name)
  }
  if (initial === undefined) {
    s.send(R.authChallenge(USERNAME), false)
    s.continuation = username
    return
  }
  return username(initial)
}
