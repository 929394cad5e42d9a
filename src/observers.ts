/**
 * Observers and hooks (metrics, the delivery log, embedding code, tests) watch the delivery path;
 * they must never change it. `guardHook` and `guardObserver` wrap them so that a hook that throws
 * (or returns a promise that rejects) is logged and ignored: at warn the first time each hook
 * fails, at debug after that, so a hook that fails on every message cannot flood the log.
 */
import type { Logger } from 'pino'

type Hook<A extends unknown[]> = (...args: A) => unknown

export function guardHook<A extends unknown[]>(name: string, hook: Hook<A>, log: Logger): (...args: A) => void {
  let failures = 0
  const failed = (err: unknown): void => {
    failures++
    if (failures === 1) log.warn({ err, hook: name }, 'observer hook failed; ignored (its later failures are logged at debug)')
    else log.debug({ err, hook: name, failures }, 'observer hook failed; ignored')
  }
  return (...args) => {
    try {
      const result = hook(...args)
      if (result instanceof Promise) result.catch(failed)
    } catch (err) {
      failed(err)
    }
  }
}

/** The observer with each of its methods guarded (`name.method` in the log). */
export function guardObserver<T extends object>(name: string, observer: T, log: Logger): T {
  const guarded: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(observer)) {
    guarded[key] = typeof value === 'function' ? guardHook(`${name}.${key}`, (value as Hook<unknown[]>).bind(observer), log) : value
  }
  return guarded as T
}
