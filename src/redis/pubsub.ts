/**
 * Publish/subscribe over the topology in use. Standalone and Sentinel use PUBLISH/SUBSCRIBE (Redis
 * 6.2 has nothing else); a cluster uses sharded pub/sub (SPUBLISH/SSUBSCRIBE, Redis 7): a message
 * goes only to the primary that owns its channel's slot instead of being broadcast to every node,
 * which is what lets one result channel per process scale with the cluster.
 *
 * One subscriber connection per process serves every channel (the route store's and the result
 * channel's). ioredis subscribes again after a reconnect, and on a cluster when slots move.
 */
import { isCluster, type RedisClient } from './connections.js'

export type MessageHandler = (message: Buffer) => void

/** The command that publishes on `client`'s topology; Lua scripts take it as an argument. */
export function publishCommand(client: RedisClient): 'PUBLISH' | 'SPUBLISH' {
  return isCluster(client) ? 'SPUBLISH' : 'PUBLISH'
}

export function publish(client: RedisClient, channel: string, message: string | Buffer): Promise<number> {
  return (isCluster(client) ? client.spublish(channel, message) : client.publish(channel, message)) as Promise<number>
}

export class PubSub {
  private readonly handlers = new Map<string, Set<MessageHandler>>()
  private readonly readyListeners = new Set<() => void>()
  private readonly sharded: boolean
  private closed = false

  /**
   * `subscriber` is a connection used for nothing else (a cluster one must be opened with sharded
   * subscribers, as RedisConnections does for the `subscriber` role). `owned`: closed with this.
   */
  constructor(
    readonly subscriber: RedisClient,
    private readonly owned = true,
  ) {
    this.sharded = isCluster(subscriber)
    const onMessage = (channel: Buffer, message: Buffer): void => {
      const handlers = this.handlers.get(channel.toString())
      if (handlers) for (const h of handlers) h(message)
    }
    subscriber.on(this.sharded ? 'smessageBuffer' : 'messageBuffer', onMessage)
    // After a reconnect (and resubscription) a part may have missed messages: tell it.
    subscriber.on(this.sharded ? 'subscribersReady' : 'ready', () => {
      for (const listener of this.readyListeners) listener()
    })
  }

  /** A PubSub on a new connection like `client`'s (sharded on a cluster), closed with it. */
  static over(client: RedisClient): PubSub {
    return new PubSub(isCluster(client) ? client.duplicate(undefined, { shardedSubscribers: true }) : client.duplicate())
  }

  /** Calls `handler` with every message on `channel` until `unsubscribe`. */
  async subscribe(channel: string, handler: MessageHandler): Promise<void> {
    let set = this.handlers.get(channel)
    if (!set) {
      set = new Set()
      this.handlers.set(channel, set)
    }
    const first = set.size === 0
    set.add(handler)
    if (!first) return
    try {
      await (this.sharded ? this.subscriber.ssubscribe(channel) : this.subscriber.subscribe(channel))
    } catch (err) {
      this.handlers.delete(channel)
      throw err
    }
  }

  async unsubscribe(channel: string, handler: MessageHandler): Promise<void> {
    const set = this.handlers.get(channel)
    if (!set?.delete(handler) || set.size > 0) return
    this.handlers.delete(channel)
    if (this.closed || this.subscriber.status !== 'ready') return
    await (this.sharded ? this.subscriber.sunsubscribe(channel) : this.subscriber.unsubscribe(channel)).catch(() => undefined)
  }

  /** `listener` runs each time the subscriber is connected again; returns a function that stops it. */
  onReconnect(listener: () => void): () => void {
    this.readyListeners.add(listener)
    return () => this.readyListeners.delete(listener)
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.handlers.clear()
    this.readyListeners.clear()
    if (this.owned) this.subscriber.disconnect()
  }
}
