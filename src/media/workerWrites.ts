/**
 * Packets from node to a mediasoup 3.8.4 worker (`Producer.send` on a DirectTransport) are written into the worker's
 * payload channel, a Unix socket shared by every call on that worker, as two small writes each (a JSON notification,
 * then the packet). Each write is a socket buffer of its own, costing ~1.5 KB of the socket's ~200 KB send budget
 * and a system call, so the socket holds ~140 packets before node's stream starts queueing in memory, and a worker
 * that wakes up reads them two small messages at a time.
 *
 * Writes made during one event-loop turn (the packets read from every call's socket in that turn) are held back
 * (`cork`) and go out together right after the turn's I/O (`setImmediate`): one `writev`, a few large socket
 * buffers. Nothing waits longer than the rest of the turn.
 */
import type { Writable } from 'node:stream';
import type { types as ms } from 'mediasoup';

const corked = new WeakSet<Writable>();

/** The payload channel's socket behind a producer (mediasoup 3.8.4 internals; undefined if they change). */
function channelSocket(producer: ms.Producer): Writable | undefined {
  const channel = (producer as unknown as { _payloadChannel?: { _producerSocket?: unknown } })._payloadChannel;
  const socket = channel?._producerSocket as Writable | undefined;
  return typeof socket?.cork === 'function' && typeof socket.uncork === 'function' ? socket : undefined;
}

/** `producer.send(packet)`, batched with the other writes to the same worker in this event-loop turn. */
export function sendToWorker(producer: ms.Producer, packet: Buffer): void {
  const socket = channelSocket(producer);
  if (socket && !corked.has(socket) && !socket.destroyed) {
    corked.add(socket);
    socket.cork();
    setImmediate(() => {
      corked.delete(socket);
      socket.uncork();
    });
  }
  producer.send(packet);
}
