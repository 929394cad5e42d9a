/**
 * /v1/deliveries: the delivery log, and replay or removal of dead letters, one at a time or by
 * filter (bulk.ts).
 *
 * A delivery is one recipient of one message through one route; its id is the job id: the
 * webhook-id the webhook saw in accept mode, `<webhook-id>.<transaction id>` in defer mode. Dead letters (accept mode, out of attempts or rejected after the
 * MTA was told "queued") are failed BullMQ jobs kept until an operator retries or deletes them.
 */
import type { Job } from 'bullmq'
import type { Static } from 'typebox'
import { attemptsOf, type DeliveryJobData, type DeliveryJobReturn } from '../delivery/queue.js'
import { decodeCursor, type Delivery, type DeliveryState } from '../delivery/log.js'
import type { AdminContext, AdminFastify } from './context.js'
import { adminError } from './errors.js'
import {
  BulkDeleteResultSchema,
  BulkFilterSchema,
  BulkRetryResultSchema,
  DeliveryDetailSchema,
  DeliveryIdParams,
  DeliveryListQuery,
  DeliveryListSchema,
  RetryResultSchema,
  errors,
  ref,
} from './schemas.js'
import { bulkDelete, bulkRetry, decodeBulkCursor, replay, type BulkFilter } from './bulk.js'

const TAGS = ['deliveries']

/** The log's state for a job the log has no record of (log turned off, or trimmed). */
function stateOfJob(state: string): DeliveryState {
  if (state === 'failed') return 'dead'
  if (state === 'completed') return 'delivered'
  return 'retrying'
}

function fromJob(job: Job<DeliveryJobData, DeliveryJobReturn>, state: string): Delivery {
  const iso = (ms: number | undefined) => new Date(ms ?? job.timestamp).toISOString()
  return {
    id: job.id!,
    recipient: job.data.rcpt,
    route: job.data.route,
    txn: job.data.txn,
    mode: job.data.mode,
    sender: null,
    messageId: null,
    state: stateOfJob(state),
    attempts: attemptsOf(job),
    createdAt: iso(job.timestamp),
    updatedAt: iso(job.finishedOn ?? job.processedOn),
    lastStatus: null,
    lastError: null,
    reply: null,
    reason: job.failedReason || null,
  }
}

const invalid = (part: 'query' | 'body', field: string, expected: string) =>
  adminError('ADMIN_ERR_VALIDATION', `${field}: expected ${expected}`, { part, problems: [`${field}: expected ${expected}`] })

/** An RFC 3339 time of a filter, in epoch ms. */
function time(part: 'query' | 'body', field: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined
  const ms = Date.parse(value)
  if (Number.isNaN(ms)) throw invalid(part, field, 'an RFC 3339 time such as 2024-05-01T12:00:00Z')
  return ms
}

/** since ≤ until, when both are given. */
function window(part: 'query' | 'body', since: number | undefined, until: number | undefined): void {
  if (since !== undefined && until !== undefined && since > until) throw invalid(part, 'until', 'a time at or after since')
}

export function deliveriesApi(ctx: AdminContext) {
  const notFound = (id: string) => adminError('ADMIN_ERR_NOT_FOUND', `delivery "${id}" not found`, { id })
  const bulkFilter = (body: Static<typeof BulkFilterSchema>): BulkFilter => {
    if (body.cursor !== undefined && decodeBulkCursor(body.cursor) === null) throw invalid('body', 'cursor', 'the nextCursor of a previous call')
    const since = time('body', 'since', body.since)
    const until = time('body', 'until', body.until)
    window('body', since, until)
    return { route: body.route, state: body.state ?? 'dead', recipient: body.recipient, since, until, limit: body.limit ?? 100, cursor: body.cursor }
  }

  return async (app: AdminFastify): Promise<void> => {
    app.get(
      '/v1/deliveries',
      {
        schema: {
          tags: TAGS,
          summary: 'List deliveries',
          description:
            'Newest first (by first attempt). Filters combine. Follow nextCursor for more; the log keeps DELIVERY_LOG_MAX deliveries, each for DELIVERY_LOG_TTL after its last change.',
          querystring: DeliveryListQuery,
          response: { 200: DeliveryListSchema, ...errors(400, 401) },
        },
      },
      async (req) => {
        const q = req.query
        if (q.cursor !== undefined && decodeCursor(q.cursor) === null) {
          throw adminError('ADMIN_ERR_VALIDATION', 'cursor: expected the nextCursor of a previous page', {
            part: 'query',
            problems: ['cursor: expected the nextCursor of a previous page'],
          })
        }
        const since = time('query', 'since', q.since)
        const until = time('query', 'until', q.until)
        window('query', since, until)
        return ctx.deliveries.list({
          recipient: q.recipient,
          route: q.route,
          state: q.state,
          since,
          until,
          sender: q.sender === '<>' ? '' : q.sender,
          messageId: q.messageId,
          txn: q.txn,
          limit: q.limit ?? 50,
          cursor: q.cursor,
        })
      },
    )

    app.get(
      '/v1/deliveries/:id',
      {
        schema: {
          tags: TAGS,
          summary: 'Read a delivery with its attempts',
          params: DeliveryIdParams,
          response: { 200: ref(DeliveryDetailSchema), ...errors(401, 404) },
        },
      },
      async (req) => {
        const id = req.params.id
        const [record, job] = await Promise.all([ctx.deliveries.get(id), ctx.queues.getJob(id)])
        const queueState = job ? await job.getState() : null
        const live = queueState === null || queueState === 'unknown' ? null : queueState
        if (record) return { ...record, attemptLog: [...record.attemptLog], queueState: live }
        if (job && live) return { ...fromJob(job, live), attemptLog: [], queueState: live }
        throw notFound(id)
      },
    )

    app.post(
      '/v1/deliveries/:id/retry',
      {
        schema: {
          tags: TAGS,
          summary: 'Replay a dead letter',
          description:
            "Queues the dead-lettered delivery again with the route's full retry schedule. 409 ADMIN_ERR_NOT_DEAD when it is not dead; 410 ADMIN_ERR_MESSAGE_GONE when its stored message has expired (MESSAGE_TTL); 409 ADMIN_ERR_CONFLICT when its route no longer exists.",
          params: DeliveryIdParams,
          response: { 202: RetryResultSchema, ...errors(401, 404, 409, 410) },
        },
      },
      async (req, res) => {
        const id = req.params.id
        const found = await ctx.queues.findJob(id)
        if (!found) throw notFound(id)
        await replay(ctx, found)
        return res.code(202).send({ id, state: 'retrying' as const })
      },
    )

    app.post(
      '/v1/deliveries/retry',
      {
        schema: {
          tags: TAGS,
          summary: 'Replay deliveries by filter',
          description:
            "state dead (the default): replays every matching dead letter with its route's full retry schedule, as POST /v1/deliveries/{id}/retry does. state retrying: attempts the matching accept- and async-mode deliveries that wait for their next retry now. Filters combine. One call examines at most 1000 queued deliveries and acts on at most `limit`; follow nextCursor until it is null. Safe to repeat: what was replayed is no longer dead.",
          body: BulkFilterSchema,
          response: { 200: ref(BulkRetryResultSchema), ...errors(400, 401, 413, 415) },
        },
      },
      async (req) => bulkRetry(ctx, bulkFilter(req.body)),
    )

    app.post(
      '/v1/deliveries/delete',
      {
        schema: {
          tags: TAGS,
          summary: 'Delete deliveries by filter',
          description:
            'Removes the matching dead letters (state dead, the default) or waiting deliveries (state retrying) from the queue, with their log records: they are never attempted again. Bounded and cursor-based like POST /v1/deliveries/retry.',
          body: BulkFilterSchema,
          response: { 200: ref(BulkDeleteResultSchema), ...errors(400, 401, 413, 415) },
        },
      },
      async (req) => bulkDelete(ctx, bulkFilter(req.body)),
    )

    app.delete(
      '/v1/deliveries/:id',
      {
        schema: {
          tags: TAGS,
          summary: 'Delete a delivery',
          description:
            'Removes its log record and, when it is still queued (a dead letter, or waiting for a retry), its job: it will not be attempted again. 409 while an attempt is running.',
          params: DeliveryIdParams,
          response: { 204: { type: 'null', description: 'Deleted.' }, ...errors(401, 404, 409) },
        },
      },
      async (req, res) => {
        const id = req.params.id
        const job = await ctx.queues.getJob(id)
        let removed = false
        if (job) {
          const state = await job.getState()
          if (state === 'active')
            throw adminError('ADMIN_ERR_CONFLICT', `delivery "${id}" is being attempted now; try again when the attempt is over`, { id, state })
          if (state !== 'unknown') {
            await job.remove()
            removed = true
          }
        }
        if (!(await ctx.deliveries.delete(id)) && !removed) throw notFound(id)
        return res.code(204).send(null)
      },
    )
  }
}
