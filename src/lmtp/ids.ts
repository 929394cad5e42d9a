/** Ids of sessions and transactions: unique per process start (random prefix), cheap to make (a counter). */
import { randomBytes } from 'node:crypto'

const ID_PREFIX = randomBytes(4).toString('hex')
let counter = 0

export function newId(): string {
  counter = (counter + 1) % 0x10000000000
  return ID_PREFIX + counter.toString(36).padStart(8, '0')
}
