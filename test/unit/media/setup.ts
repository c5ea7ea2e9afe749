/**
 * Shared set-up for media tests: a real mediasoup worker pool and an engine on loopback.
 */
import { pino } from 'pino';
import type { Logger } from 'pino';
import { MediasoupMediaEngine } from '../../../src/media/MediasoupMediaEngine.js';
import type { MediasoupMediaEngineOptions } from '../../../src/media/MediasoupMediaEngine.js';
import { WorkerPool } from '../../../src/media/WorkerPool.js';
import { analyzeTone } from '../../../src/media/dsp/tone.js';

export function testLogger(): Logger {
  return pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
}

/** A worker port range per test file (by process id) so parallel test files do not collide. */
export function workerPorts(): { rtcMinPort: number; rtcMaxPort: number } {
  const base = 40000 + (process.pid % 40) * 200;
  return { rtcMinPort: base, rtcMaxPort: base + 199 };
}

export async function createEngine(
  options: { size?: number; dtmf?: MediasoupMediaEngineOptions['dtmf']; hooks?: MediasoupMediaEngineOptions['hooks'] } = {},
): Promise<{ pool: WorkerPool; engine: MediasoupMediaEngine; log: Logger }> {
  const log = testLogger();
  const pool = await WorkerPool.create({ log, size: options.size ?? 1, ...workerPorts(), restartDelayMs: 50 });
  const engine = new MediasoupMediaEngine({
    pool,
    log,
    rtp: { listenIp: '127.0.0.1', minPort: 0, maxPort: 0, comedia: true },
    dtmf: options.dtmf,
    hooks: options.hooks,
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

/** Analyse the last `seconds` of audio. */
export function analyzeTail(pcm: Int16Array, sampleRate: number, hz: number, seconds = 0.4): ReturnType<typeof analyzeTone> {
  const n = Math.min(pcm.length, Math.round(sampleRate * seconds));
  return analyzeTone(pcm.subarray(pcm.length - n), sampleRate, hz);
}
