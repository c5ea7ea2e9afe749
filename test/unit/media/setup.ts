/**
 * Shared set-up for media tests: a real mediasoup worker pool and an engine on loopback.
 */
import { pino } from 'pino';
import type { Logger } from 'pino';
import { MediasoupMediaEngine } from '../../../src/media/MediasoupMediaEngine.js';
import type { MediasoupMediaEngineOptions } from '../../../src/media/MediasoupMediaEngine.js';
import { WorkerPool } from '../../../src/media/WorkerPool.js';
import type { PbxCodecName } from '../../../src/calls/ports.js';
import type { MediasoupCallMedia } from '../../../src/media/MediasoupCallMedia.js';
import { createRtpPeer } from '../../helpers/rtpPeer.js';
import type { RtpPeer } from '../../helpers/rtpPeer.js';
import { FakeMessengerLeg } from './fakeMessengerLeg.js';

export function testLogger(): Logger {
  return pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
}

/** A worker port range per test file (by process id) so parallel test files do not collide. */
export function workerPorts(): { rtcMinPort: number; rtcMaxPort: number } {
  const base = 40000 + (process.pid % 40) * 200;
  return { rtcMinPort: base, rtcMaxPort: base + 199 };
}

export async function createEngine(
  options: {
    size?: number;
    comedia?: boolean;
    /** Address of the PBX-facing RTP sockets. Default 127.0.0.1. */
    listenIp?: string;
    /** Calls' media made ahead (MediasoupMediaEngine's `preparedCalls`). Default 0. */
    preparedCalls?: number;
    /** Default: testLogger(). */
    log?: Logger;
    dtmf?: MediasoupMediaEngineOptions['dtmf'];
    oneWayAudioAfterMs?: number;
  } = {},
): Promise<{ pool: WorkerPool; engine: MediasoupMediaEngine; log: Logger }> {
  const log = options.log ?? testLogger();
  const pool = await WorkerPool.create({ log, size: options.size ?? 1, ...workerPorts(), restartDelayMs: 50 });
  const engine = new MediasoupMediaEngine({
    pool,
    log,
    rtp: { listenIp: options.listenIp ?? '127.0.0.1', minPort: 0, maxPort: 0, comedia: options.comedia ?? true },
    dtmf: options.dtmf,
    ...(options.oneWayAudioAfterMs !== undefined ? { oneWayAudioAfterMs: options.oneWayAudioAfterMs } : {}),
    ...(options.preparedCalls !== undefined ? { preparedCalls: options.preparedCalls } : {}),
  });
  return { pool, engine, log };
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Resolve when `check()` is true, polling every 20 ms; reject after `timeoutMs`. */
export async function until(check: () => boolean, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

export { analyzeTail } from '../../helpers/tone.js';

/** One bridged call: fake Meta leg, call media, RTP peer as the PBX (answering our offer), started. */
export async function setupCall(
  t: { teardown(fn: () => void): void },
  engine: MediasoupMediaEngine,
  log: Logger,
  options: {
    codec: PbxCodecName;
    metaTe?: { pt: number; clockRate: number };
    /** PBX telephone-event payload type (default 101); null: the PBX negotiates no telephone-event. */
    pbxTePt?: number | null;
    pbxTeClockRate?: number;
    /** The PBX peer's address (default 127.0.0.1; the engine's RTP address must be of the same family). */
    pbxAddress?: string;
    start?: boolean;
  },
): Promise<{ leg: FakeMessengerLeg; media: MediasoupCallMedia; peer: RtpPeer; offer: string }> {
  const leg = new FakeMessengerLeg({ telephoneEvent: options.metaTe });
  const media = await engine.createMediasoupCallMedia({
    callId: `call-${Math.random().toString(36).slice(2)}`,
    log,
    messenger: leg,
    codecs: [options.codec],
  });
  const peer = await createRtpPeer({
    codec: options.codec,
    tePt: options.pbxTePt === null ? undefined : (options.pbxTePt ?? 101),
    teClockRate: options.pbxTeClockRate,
    ...(options.pbxAddress !== undefined ? { address: options.pbxAddress } : {}),
  });
  t.teardown(() => {
    media.close();
    peer.close();
    leg.close();
  });
  const offer = media.createPbxOffer();
  peer.setRemote(options.pbxAddress ?? '127.0.0.1', media.pbxPort);
  media.applyPbxAnswer(peer.sdp());
  if (options.start !== false) media.start();
  return { leg, media, peer, offer };
}
