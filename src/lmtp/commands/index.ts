/**
 * The command table: verb → handler. Each command lives in its own file (or with the commands of
 * its family) and works on the session through the state and helpers `LmtpSession` exposes.
 * A handler returns nothing when it has finished (its replies queued), or a promise when it waits
 * for the delivery handler; the session's pump waits for that promise before the next command.
 */
import type { LmtpSession } from '../session.js'
import { ehlo, lhlo } from './lhlo.js'
import { mail } from './mail.js'
import { rcpt } from './rcpt.js'
import { bdat, data } from './data.js'
import { help, noop, quit, rset, vrfy } from './basic.js'
import { xforward } from './xforward.js'
import { starttls } from './starttls.js'
import { auth } from './auth.js'

export type Command = (session: LmtpSession, args: string) => void | Promise<void>

export const COMMANDS: Readonly<Record<string, Command>> = {
  LHLO: lhlo,
  HELO: ehlo,
  EHLO: ehlo,
  MAIL: mail,
  RCPT: rcpt,
  DATA: data,
  BDAT: bdat,
  RSET: rset,
  NOOP: noop,
  VRFY: vrfy,
  HELP: help,
  QUIT: quit,
  XFORWARD: xforward,
  STARTTLS: starttls,
  AUTH: auth,
}
