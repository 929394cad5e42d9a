/**
 * Write coalescing for a socket: the first write of an event-loop turn corks the socket, and the
 * turn's check phase uncorks it, so every write issued while the turn's I/O callbacks run leaves in
 * one writev(2). On loopback the system call and the wake-up of the peer cost more than the bytes;
 * a worker finishing several jobs in one turn, or a transaction stored with its jobs, pays once.
 *
 * Unlike a client-side pipeline it builds nothing per batch: the commands are written as they
 * come and Node's stream keeps them in order. The added delay is the rest of the current turn.
 */
import type { Socket } from 'node:net'

const installed = new WeakSet<Socket>()

export function coalesceWrites(socket: Socket): void {
  if (installed.has(socket)) return
  installed.add(socket)
  const write = socket.write
  let corked = false
  const uncork = (): void => {
    corked = false
    socket.uncork()
  }
  socket.write = function (this: Socket, ...args: unknown[]) {
    if (!corked) {
      corked = true
      socket.cork()
      setImmediate(uncork)
    }
    return (write as (...a: unknown[]) => boolean).apply(this, args)
  } as Socket['write']
}
