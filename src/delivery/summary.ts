/**
 * What the delivery log shows of a stored transaction besides the recipient: its sender and its
 * Message-ID, read from the fields a worker loads anyway (the envelope, and the message JSON or
 * the raw message). Cheap: the Message-ID is the first member of the stored message JSON, and
 * for the raw format only the header section is read.
 */
import type { Route } from '../routing/schema.js'
import { parseHeaderFields } from './payload.js'
import { requiredFields } from './request.js'

export interface StoredSummary {
  /** Reverse path; '' for the null sender. */
  readonly sender: string
  /** Message-ID with its angle brackets, or null when the message has none. */
  readonly messageId: string | null
}

const LEADING_MESSAGE_ID = /^\{"messageId":("(?:[^"\\]|\\.)*"|null)/

/** `fields` are the values of `requiredFields(route)`, in that order, none missing. */
export function storedSummary(route: Route, fields: readonly (Buffer | null)[]): StoredSummary {
  const names = requiredFields(route)
  let sender = ''
  try {
    sender = (JSON.parse(fields[0]!.toString('utf8')) as { mailFrom?: unknown }).mailFrom as string
  } catch {
    // an unreadable envelope fails the request build too; the log just has no sender
  }
  let messageId: string | null = null
  const json = names.findIndex((n) => n.startsWith('json:'))
  if (json >= 0) {
    const m = LEADING_MESSAGE_ID.exec(fields[json]!.subarray(0, 1024).toString('utf8'))
    if (m) messageId = JSON.parse(m[1]!) as string | null
  } else {
    const raw = fields[names.indexOf('raw')]
    const field = raw ? parseHeaderFields(raw).find((f) => f.name.toLowerCase() === 'message-id') : undefined
    messageId = field ? field.value : null
  }
  return { sender: typeof sender === 'string' ? sender : '', messageId: messageId === '' ? null : messageId }
}
