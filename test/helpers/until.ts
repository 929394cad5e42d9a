/** The one way tests wait for something the system reaches on its own: poll, never sleep-and-hope. */
import { setTimeout as sleep } from 'node:timers/promises'

export type Truthy<T> = Exclude<T, undefined | null | false | 0 | ''>

/**
 * Polls `probe` every `stepMs` until it returns something truthy, and returns that. Throws, naming
 * `what` and the bound, when `ms` passed first (a failed test, not a hang).
 */
export async function until<T>(what: string, probe: () => Promise<T> | T, ms = 10_000, stepMs = 25): Promise<Truthy<T>> {
  const end = Date.now() + ms
  for (;;) {
    const v = await probe()
    if (v) return v as Truthy<T>
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await sleep(stepMs)
  }
}
