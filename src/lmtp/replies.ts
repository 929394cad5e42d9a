/**
 * Every reply the protocol engine itself produces, in one place: code, enhanced code (RFC 3463)
 * and text. Handlers never see this file; the session never builds reply text anywhere else.
 */
import { reply, type Reply } from './reply.js'

export const greeting = (host: string): Reply => reply(220, undefined, `${host} LMTP service ready`)
export const bye = (host: string): Reply => reply(221, '2.0.0', `${host} closing connection`)
export const ok = (): Reply => reply(250, '2.0.0', 'OK')
export const senderOk = (address: string): Reply => reply(250, '2.1.0', `Sender <${address}> OK`)
export const recipientOk = (address: string): Reply => reply(250, '2.1.5', `Recipient <${address}> OK`)
export const chunkOk = (size: number): Reply => reply(250, '2.0.0', `${size} octets received`)
export const cannotVrfy = (): Reply => reply(252, '2.5.0', 'Cannot VRFY user; send some mail and delivery will be attempted')
export const help = (): Reply => reply(214, '2.0.0', ['Commands: LHLO MAIL RCPT DATA BDAT RSET NOOP VRFY HELP QUIT XFORWARD', 'See RFC 2033 (LMTP)'])
export const startData = (): Reply => reply(354, undefined, 'Start mail input; end with <CRLF>.<CRLF>')

export const shuttingDown = (host: string): Reply => reply(421, '4.3.2', `${host} service shutting down, closing connection`)
export const idleTimeout = (host: string): Reply => reply(421, '4.4.2', `${host} timeout, closing connection`)
export const tooManyConnections = (host: string): Reply => reply(421, '4.7.0', `${host} too many connections, try again later`)
export const tooManyErrors = (host: string): Reply => reply(421, '4.7.0', `${host} too many errors, closing connection`)
export const closingOutOfSync = (host: string): Reply => reply(421, '4.5.0', `${host} cannot stay in sync with the client, closing connection`)
export const localError = (): Reply => reply(451, '4.3.0', 'Temporary local error, try again later')
export const tooManyRecipients = (): Reply => reply(452, '4.5.3', 'Too many recipients')

export const unknownCommand = (): Reply => reply(500, '5.5.1', 'Command unrecognized')
export const emptyCommand = (): Reply => reply(500, '5.5.2', 'Empty command')
export const useLhlo = (): Reply => reply(500, '5.5.1', 'This is an LMTP server: use LHLO')
export const lineTooLong = (): Reply => reply(500, '5.5.2', 'Line too long')
export const bareLf = (): Reply => reply(500, '5.5.2', 'Command line must end with CRLF')
export const controlCharacters = (): Reply => reply(500, '5.5.2', 'Control characters are not allowed in a command')
export const invalidUtf8 = (): Reply => reply(500, '5.5.2', 'Command is not valid UTF-8')

export const lhloSyntax = (): Reply => reply(501, '5.5.4', 'Syntax: LHLO <hostname>')
export const mailSyntax = (): Reply => reply(501, '5.5.2', 'Syntax: MAIL FROM:<address> [parameters]')
export const rcptSyntax = (): Reply => reply(501, '5.5.2', 'Syntax: RCPT TO:<address>')
export const paramSyntax = (): Reply => reply(501, '5.5.4', 'Invalid parameter syntax or value')
export const noArguments = (): Reply => reply(501, '5.5.4', 'No arguments allowed')
export const vrfySyntax = (): Reply => reply(501, '5.5.4', 'Syntax: VRFY <address>')
export const bdatSyntax = (): Reply => reply(501, '5.5.4', 'Syntax: BDAT <size> [LAST]')
export const xforwardSyntax = (): Reply => reply(501, '5.5.4', 'Syntax: XFORWARD attribute=value ... (NAME ADDR PORT PROTO HELO IDENT SOURCE)')

export const lhloFirst = (): Reply => reply(503, '5.5.1', 'Send LHLO first')
export const nestedMail = (): Reply => reply(503, '5.5.1', 'Sender already specified')
export const needMail = (): Reply => reply(503, '5.5.1', 'Need MAIL command first')
export const noRecipients = (): Reply => reply(503, '5.5.1', 'No valid recipients')
export const badSequence = (): Reply => reply(503, '5.5.1', 'Bad sequence of commands')
export const binaryNeedsBdat = (): Reply => reply(503, '5.5.1', 'BODY=BINARYMIME requires BDAT')

export const domainNotAccepted = (domain: string): Reply => reply(550, '5.1.2', `Domain ${domain} is not accepted here`)
export const tooBig = (max: number): Reply => reply(552, '5.3.4', `Message size exceeds the limit of ${max} octets`)
export const badSender = (): Reply => reply(553, '5.1.7', 'Invalid sender address syntax')
export const badRecipient = (): Reply => reply(553, '5.1.3', 'Invalid recipient address syntax')
export const needSmtputf8 = (): Reply => reply(553, '5.6.7', 'Non-ASCII address requires the SMTPUTF8 parameter')
export const unknownParam = (key: string): Reply => reply(555, '5.5.4', `Unsupported parameter ${key}`)
