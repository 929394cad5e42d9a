/**
 * The connector of every Sentinel connection (src/redis/connections.ts passes it as ioredis's
 * `Connector`; `duplicate()` copies options, so BullMQ's blocking duplicates use it too).
 *
 * ioredis's failover detector subscribes to `+switch-master` on the sentinels once a connection to
 * the primary is up, and on that message drops the connection so that the reconnect asks the
 * sentinels for the new primary. It is only replaced by the next successful connection: when the
 * primary dies, the detector of the dead connection stays subscribed while ioredis reconnects. If
 * the sentinels' `+switch-master` (each sentinel sends one, when it learns of the promotion)
 * arrives while a reconnect attempt is asking a sentinel where the primary is, the detector's
 * disconnect aborts that attempt, and ioredis treats an aborted connect as a closed client: status
 * `end`, no retry, every command fails with "Connection is closed." from then on. A process then
 * never talks to the promoted primary again without a restart (a worker that takes no job, a
 * listener whose writes all fail), and which of its connections are hit is a matter of timing.
 *
 * Here a detector lives exactly as long as the connection it watches: when that connection
 * closes, its detector is stopped. The reconnect that follows asks the sentinels anyway, and
 * nothing but the client itself (`disconnect()`, `quit()`) can abort it.
 */
import { SentinelConnector, type SentinelConnectionOptions } from 'ioredis'

/** The part of ioredis's SentinelConnector that holds the current connection's detector. */
interface DetectorSlot {
  failoverDetector: { cleanup(): void } | null
}

export class SentinelFailoverConnector extends SentinelConnector {
  /** ioredis constructs a `Connector` with the client's options, typed `unknown`. */
  constructor(options: unknown) {
    super(options as SentinelConnectionOptions)
  }

  override async connect(eventEmitter: Parameters<SentinelConnector['connect']>[0]): ReturnType<SentinelConnector['connect']> {
    const stream = await super.connect(eventEmitter)
    stream.once('close', () => {
      // The detector, if any, is the one this stream's connection started (ioredis starts it on
      // the stream's connect and replaces it only on the next one).
      const slot = this as unknown as DetectorSlot
      slot.failoverDetector?.cleanup()
      slot.failoverDetector = null
    })
    return stream
  }
}
