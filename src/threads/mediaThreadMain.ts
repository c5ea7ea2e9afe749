/**
 * Entry point of a media thread (node worker_threads). Applies the runtime patches of werift this thread's copy of
 * it needs, starts the thread's MediaRuntime (its own mediasoup workers, spawned from here) and serves the main
 * thread's requests until it is told to close or is terminated.
 */
import { parentPort, workerData } from 'node:worker_threads';
import pino from 'pino';
import { applyWeriftPatches } from '../messenger/werift/index.js';
import { startMediaRuntime } from './mediaRuntime.js';
import { MediasoupCensus } from './MediasoupCensus.js';
import { MediaThreadCounts, MediaThreadHost } from './MediaThreadHost.js';
import type { MainToThread, MediaThreadData, ThreadToMain } from './protocol.js';
import { toWire } from './wire.js';

const port = parentPort;
if (!port) throw new Error('mediaThreadMain runs only as a worker thread');
const data = workerData as MediaThreadData;
const post = (message: ThreadToMain): void => port.postMessage(message);

// Log lines go to the main thread's logger whole (one message per line, none per packet).
const log = pino({ level: data.logLevel, base: undefined, timestamp: false }, { write: (line: string) => post({ kind: 'event', ev: 'log', line }) });

let host: MediaThreadHost | undefined;
const pending: MainToThread[] = [];
port.on('message', (message: MainToThread | { op: 'close' }) => {
  if ('op' in message && message.op === 'close') {
    host?.close();
    port.close();
    return;
  }
  if (host) host.handle(message as MainToThread);
  else pending.push(message as MainToThread);
});

try {
  // Module state is per thread: each media thread patches its own copy of werift (the main thread already reported
  // what could not bind; a needed patch that cannot bind stops the thread's start here).
  log.debug({ ...applyWeriftPatches() }, 'dependency patches applied in the media thread');
  const census = await MediasoupCensus.start(data.settings.workerBin);
  const counts = new MediaThreadCounts();
  const runtime = await startMediaRuntime(data.settings, log, counts);
  host = new MediaThreadHost(runtime, { postMessage: post }, log, { statsIntervalMs: data.statsIntervalMs, index: data.index, census, counts });
  post({ kind: 'event', ev: 'ready', workerPids: runtime.pool.workers.map((w) => w.pid) });
  for (const message of pending.splice(0)) host.handle(message);
} catch (err) {
  post({ kind: 'event', ev: 'startFailed', error: toWire(err) });
  port.close();
}
