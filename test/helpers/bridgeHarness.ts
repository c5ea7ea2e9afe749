/**
 * A whole bridge on loopback for end-to-end tests (src/simulator/loopbackBridge.ts), plus small test utilities.
 */
import pino, { type Logger } from 'pino';
import sdpTransform from 'sdp-transform';
import {
  DEMO_APP_SECRET,
  DEMO_PAGE_ID,
  DEMO_PAGE_TOKEN,
  DEMO_PSID,
  DEMO_VERIFY_TOKEN,
  startLoopbackBridge,
  type LoopbackBridge,
  type LoopbackBridgeOptions,
} from '../../src/simulator/loopbackBridge.js';

export const PAGE_ID = DEMO_PAGE_ID;
export const PAGE_TOKEN = DEMO_PAGE_TOKEN;
export const APP_SECRET = DEMO_APP_SECRET;
export const VERIFY_TOKEN = DEMO_VERIFY_TOKEN;
export const PSID = DEMO_PSID;

export interface Harness extends LoopbackBridge {
  log: Logger;
  /** Parsed JSON log lines of the bridge (with `captureLogs`). */
  logs(): Array<Record<string, unknown>>;
}

export interface HarnessOptions extends Omit<LoopbackBridgeOptions, 'log'> {
  /** Keep the bridge's JSON log lines (info and up) for assertions: `harness.logs()`. */
  captureLogs?: boolean;
}

export async function startHarness(options: HarnessOptions = {}): Promise<Harness> {
  const lines: string[] = [];
  const log = options.captureLogs
    ? pino({ level: 'info' }, { write: (line: string) => void lines.push(line) })
    : pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
  const bridge = await startLoopbackBridge({ ...options, log });
  return Object.assign(bridge, {
    log,
    logs: () => lines.map((line) => JSON.parse(line) as Record<string, unknown>),
  });
}

/** The RTP address and port an SDP body points at. */
export function sdpTarget(sdp: string): { address: string; port: number } {
  const parsed = sdpTransform.parse(sdp);
  const audio = parsed.media.find((m) => m.type === 'audio');
  const address = audio?.connection?.ip ?? parsed.connection?.ip;
  if (!audio || !address) throw new Error(`SDP without audio address:\n${sdp}`);
  return { address, port: audio.port };
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export async function until<T>(fn: () => T | undefined | false, timeoutMs = 5000, what = 'condition'): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = fn();
    if (value) return value;
    if (Date.now() > end) throw new Error(`${what} not met within ${timeoutMs} ms`);
    await sleep(10);
  }
}

/** A business-initiated call from the fake PBX with `sdp`, accepted by the person: Meta's call id and the PBX's final response. */
export async function acceptedBusinessCall(h: Harness, sdp: string) {
  const connectSeen = h.sim.graph.events.waitFor('connect');
  const call = h.drachtio.pbx.call({ user: PSID, sdp });
  const [connect] = await connectSeen;
  h.sim.graph.consumerAccept(connect.callId);
  return { callId: connect.callId, final: await call.final };
}
