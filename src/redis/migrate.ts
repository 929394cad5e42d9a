/**
 * Start-up migration from the key layout of older versions (untagged names, see keys.ts).
 *
 * API routes are copied into the tagged keys when those do not exist yet, in one script, so replicas
 * starting together copy them once. The old keys are left as they were (a rollback still finds
 * them); docs/deployment.md says when to delete them. Older versions never ran on a cluster, so
 * there is nothing to migrate there. Queued jobs are not moved: DeliveryQueues drains the old queue
 * in place (src/delivery/queue.ts).
 */
import type { Logger } from 'pino'
import { isCluster, type RedisClient } from './connections.js'
import type { KeyLayout } from './keys.js'
import { publish } from './pubsub.js'
import { defineScript, runScript } from './scripts.js'

/**
 * KEYS[1..3] new routes hash, patterns hash, version; KEYS[4..6] the same of the old layout.
 * Returns the number of routes copied (0 when the new layout is in use already or nothing is there).
 * Outside a cluster a script may touch keys of any slot.
 */
const COPY_ROUTES = defineScript(
  'migrate-routes',
  `
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
local function copy(from, to)
  local all = redis.call('HGETALL', from)
  for i = 1, #all, 200 do
    redis.call('HSET', to, unpack(all, i, math.min(i + 199, #all)))
  end
  return #all / 2
end
local n = copy(KEYS[4], KEYS[1])
if n == 0 then return 0 end
copy(KEYS[5], KEYS[2])
redis.call('SET', KEYS[3], math.max(tonumber(redis.call('GET', KEYS[6]) or '0'), 1))
return n
`,
)

/** Copies the API routes an older version stored; returns how many. */
export async function migrateRoutes(client: RedisClient, layout: KeyLayout, log: Logger): Promise<number> {
  if (isCluster(client)) return 0
  const to = layout.routes
  const from = layout.legacy.routes
  const copied = await runScript<number>(client, COPY_ROUTES, [to.defs, to.patterns, to.version, from.defs, from.patterns, from.version], [])
  if (copied > 0) {
    log.warn(
      { routes: copied, from: from.defs, to: to.defs },
      'copied the API routes of an older key layout; the old keys are kept, delete them once no older version runs (docs/deployment.md)',
    )
    await publish(client, to.changed, '0').catch(() => undefined)
  }
  return copied
}
