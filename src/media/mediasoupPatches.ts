/**
 * The one door to the runtime patch of mediasoup: `applyMediasoupPatches()`, called by the daemon at start.
 *
 * Packets from node to a mediasoup 3.8.4 worker (`Producer.send` on a DirectTransport) are written into the worker's
 * payload channel, a Unix socket shared by every call on that worker, as two small writes each (a JSON notification,
 * then the packet). Each write is a socket buffer of its own, costing ~1.5 KB of the socket's ~200 KB send budget
 * and a system call, so the socket holds ~140 packets before node's stream starts queueing in memory, and a worker
 * that wakes up reads them two small messages at a time.
 *
 * Writes made during one event-loop turn (the packets read from every call's socket in that turn) are held back
 * (`cork`) and go out together right after the turn's I/O (`setImmediate`): one `writev`, a few large socket
 * buffers. Nothing waits longer than the rest of the turn.
 *
 * This reaches mediasoup's private `producer._payloadChannel._producerSocket`. It is an optimisation: when the
 * installed mediasoup is not 3.8.4 or a probe producer does not write through that socket, the door reports it as
 * degraded (the daemon logs one warning and sets a metric) and `sendToWorker` is plain `producer.send`.
 */
import { createRequire } from 'node:module';
import { PassThrough, type Writable } from 'node:stream';
import { EventEmitter } from 'node:events';
import type { types as ms } from 'mediasoup';
import { expectVersion, installedVersion, reasonOf, type PatchReport } from '../core/dependencyPatch.js';
import { DependencyPatchError } from '../core/errors.js';

/** The mediasoup version the payload-channel batching was written for and checked against. */
export const MEDIASOUP_PATCHED_VERSION = '3.8.4';
const BATCHING_PATCH = 'payload channel write batching';

const corked = new WeakSet<Writable>();
let batching = false;
let report: PatchReport | undefined;

/** The payload channel's socket behind a producer (mediasoup 3.8.4 internals; undefined if they change). */
function channelSocket(producer: ms.Producer): Writable | undefined {
  const channel = (producer as unknown as { _payloadChannel?: { _producerSocket?: unknown } })._payloadChannel;
  const socket = channel?._producerSocket as Writable | undefined;
  return typeof socket?.cork === 'function' && typeof socket.uncork === 'function' ? socket : undefined;
}

/**
 * Build a Producer on a payload channel over an in-memory socket (no worker), send one packet, and check that it is
 * written to that socket and that `channelSocket` finds it. Throws `DependencyPatchError` otherwise.
 */
function probePayloadChannel(): void {
  const require = createRequire(import.meta.url);
  const { PayloadChannel } = require('mediasoup/lib/PayloadChannel.js') as typeof import('mediasoup/lib/PayloadChannel.js');
  const { Producer } = require('mediasoup/lib/Producer.js') as typeof import('mediasoup/lib/Producer.js');
  const producerSocket = new PassThrough();
  const consumerSocket = new PassThrough();
  const written: Buffer[] = [];
  producerSocket.on('data', (chunk: Buffer) => written.push(chunk));
  const payloadChannel = new PayloadChannel({ producerSocket, consumerSocket });
  try {
    const producer = new Producer({
      internal: { routerId: 'probe', transportId: 'probe', producerId: 'probe' },
      data: { kind: 'audio', rtpParameters: { codecs: [] }, type: 'simple', consumableRtpParameters: { codecs: [] } },
      channel: new EventEmitter(),
      payloadChannel,
      appData: {},
      paused: false,
    } as unknown as ConstructorParameters<typeof Producer>[0]) as unknown as ms.Producer;
    if (channelSocket(producer) !== producerSocket) {
      throw new DependencyPatchError('mediasoup', 'Producer._payloadChannel._producerSocket is not the payload channel socket');
    }
    producer.send(Buffer.from([0x80, 0, 0, 1]));
    // PassThrough delivers 'data' synchronously on write when flowing.
    if (written.length === 0) {
      throw new DependencyPatchError('mediasoup', 'Producer.send does not write to the payload channel socket');
    }
  } finally {
    payloadChannel.close();
  }
}

/**
 * Check mediasoup's version and probe the payload channel, without patching: the report says whether the batching
 * can bind (`applied`) or not and why (`degraded`).
 * @param options.installedVersion the version to check instead of the installed one (tests of the mismatch path).
 */
export function checkMediasoupPatches(options: { installedVersion?: string } = {}): PatchReport {
  const version = options.installedVersion ?? installedVersion('mediasoup');
  const checked: PatchReport = { dependency: 'mediasoup', version, applied: [], degraded: [] };
  try {
    expectVersion('mediasoup', version, MEDIASOUP_PATCHED_VERSION);
    probePayloadChannel();
    checked.applied.push(BATCHING_PATCH);
  } catch (err) {
    checked.degraded.push({ patch: BATCHING_PATCH, reason: reasonOf(err) });
  }
  return checked;
}

/**
 * Check (`checkMediasoupPatches`), then turn write batching on when it can bind. Never throws for a mismatch (the
 * batching is an optimisation): the report lists it under `degraded`. Idempotent: later calls return the first report.
 */
export function applyMediasoupPatches(): PatchReport {
  if (report) return report;
  report = checkMediasoupPatches();
  batching = report.applied.includes(BATCHING_PATCH);
  return report;
}

/** `producer.send(packet)`, batched with the other writes to the same worker in this event-loop turn. */
export function sendToWorker(producer: ms.Producer, packet: Buffer): void {
  const socket = batching ? channelSocket(producer) : undefined;
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
