/**
 * The one way the service runs its Lua scripts (BullMQ runs its own).
 *
 * A script is sent as EVALSHA and, when the server does not know it (NOSCRIPT: a restarted Redis,
 * a newly promoted replica, SCRIPT FLUSH, another cluster node), once more as EVAL. That retry is
 * sent after the commands issued behind the script, so a script whose effect must precede them is
 * declared `ordered` and always sent as EVAL: the transaction store uses it, because a job must
 * never reach Redis before its stored message.
 *
 * All of a script's keys must be in one slot (see keys.ts); on a cluster the client routes it by its
 * first key.
 */
import { createHash } from 'node:crypto'
import type { RedisClient } from './connections.js'

export interface LuaScript {
  readonly name: string
  readonly lua: string
  readonly sha: string
  /** Always EVAL: its effect must precede the commands sent after it on the same connection. */
  readonly ordered: boolean
}

export function defineScript(name: string, lua: string, options: { ordered?: boolean } = {}): LuaScript {
  return { name, lua, sha: createHash('sha1').update(lua).digest('hex'), ordered: options.ordered ?? false }
}

type Arg = string | Buffer | number

export async function runScript<T = unknown>(client: RedisClient, script: LuaScript, keys: readonly string[], args: readonly Arg[]): Promise<T> {
  if (script.ordered) return (await client.eval(script.lua, keys.length, ...keys, ...args)) as T
  try {
    return (await client.evalsha(script.sha, keys.length, ...keys, ...args)) as T
  } catch (err) {
    if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err
    return (await client.eval(script.lua, keys.length, ...keys, ...args)) as T
  }
}
