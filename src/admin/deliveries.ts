/**
 * /v1/deliveries: the delivery log, and replay or removal of dead letters.
 *
 * A delivery is one recipient of one message through one route; its id is the job id: the
 * webhook-id the webhook saw in accept mode, `<webhook-id>.<transaction id>` in defer mode. Dead letters (accept mode, out of attempts or rejected after the
 * MTA was told "queued") are failed BullMQ jobs kept until an operator retries or deletes them.
 */
import type { Job } from 'bullmq'
import type { DeliveryJobData, DeliveryJobReturn } from '../delivery/queue.js'
import { decodeCursor, type Delivery, type DeliveryState } from '../delivery/log.js'
import type { AdminContext, AdminFastify } from './context.js'
import { adminError } from './errors.js'
import { DeliveryDetailSchema, DeliveryIdParams, DeliveryListQuery, DeliveryListSchema, RetryResultSchema, errors, ref } from './schemas.js'

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
    state: stateOfJob(state),
    attempts: job.attemptsMade,
    createdAt: iso(job.timestamp),
    updatedAt: iso(job.finishedOn ?? job.processedOn),
    lastStatus: null,
    lastError: null,
    reply: null,
    reason: job.failedReason || null,
  }
}

export function deliveriesApi(ctx: AdminContext) {
  const notFound = (id: string) => adminError('ADMIN_ERR_NOT_FOUND', `delivery "${id}" not found`, { id })

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
        return ctx.deliveries.list({ recipient: q.recipient, route: q.route, state: q.state, limit: q.limit ?? 50, cursor: q.cursor })
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
        const { job, shard } = found
        const state = await job.getState()
        if (state !== 'failed') throw adminError('ADMIN_ERR_NOT_DEAD', `delivery "${id}" is not dead-lettered (its job is ${state})`, { id, state })
        if (!ctx.routes.get(job.data.route)) {
          throw adminError('ADMIN_ERR_CONFLICT', `delivery "${id}": its route "${job.data.route}" no longer exists; create it again to replay`, {
            id,
            route: job.data.route,
          })
        }
        if (!(await shard.store.touch(job.data.txn, ctx.config.delivery.messageTtlMs))) {
          throw adminError('ADMIN_ERR_MESSAGE_GONE', `delivery "${id}": its stored message has expired (MESSAGE_TTL) or was removed; it cannot be replayed`, {
            id,
            txn: job.data.txn,
          })
        }
        const ref = { id, txn: job.data.txn, rcpt: job.data.rcpt, route: job.data.route, mode: job.data.mode }
        // Logged first, so an attempt that follows at once is not overwritten by this state.
        const log = ctx.deliveries.in(shard.keys)
        await log.setState(ref, 'retrying')
        try {
          await job.retry('failed', { resetAttemptsMade: true })
        } catch (err) {
          await log.setState(ref, 'dead')
          throw err
        }
        return res.code(202).send({ id, state: 'retrying' as const })
      },
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
