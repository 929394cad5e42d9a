export { LmtpServer, type LmtpServerOptions, type ListenTarget, type ServerObserver } from './server.js'
export { formatReply, reply, sanitizeText, type Reply } from './reply.js'
export type { Envelope, LmtpHandler, Recipient, RecipientVerdict, Sender, SessionInfo, TlsInfo, Verdict, XForward } from './types.js'
