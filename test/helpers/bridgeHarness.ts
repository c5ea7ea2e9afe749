/**
 * A whole bridge on loopback for end-to-end tests: the Meta simulator (Graph API, signed webhooks, ICE-lite media),
 * the drachtio-server double with its fake PBX, and the daemon itself, built from a real Config.
 */
import pino, { type Logger } from 'pino';
import sdpTransform from 'sdp-transform';
import { parseConfig, type Config } from '../../src/config/index.js';
import { Daemon } from '../../src/daemon/Daemon.js';
import { Metrics } from '../../src/observability/index.js';
import { MetaSimulator } from '../../src/simulator/MetaSimulator.js';
import { startDrachtioDouble, type DrachtioDouble } from './drachtio/index.js';

export const PAGE_ID = '106378625516323';
export const PAGE_TOKEN = 'EAAtest-page-token-not-a-secret';
export const APP_SECRET = 'test-app-secret-0123456789';
export const VERIFY_TOKEN = 'test-verify-token';
export const PSID = '5275811702471834';

export interface Harness {
  sim: MetaSimulator;
  drachtio: DrachtioDouble;
  daemon: Daemon;
  metrics: Metrics;
  config: Config;
  log: Logger;
  /** Parsed JSON log lines of the bridge (with `captureLogs`). */
  logs(): Array<Record<string, unknown>>;
  close(): Promise<void>;
}

export interface HarnessOptions {
  /** Codec preference toward the PBX. */
  codecs?: Array<'PCMU' | 'PCMA' | 'opus'>;
  /** Meta keeps telephone-event in its answers. */
  telephoneEvent?: boolean;
  /** Merged over the generated config (top-level sections replaced key by key one level deep). */
  config?: Record<string, Record<string, unknown>>;
  /** Routes (default: one default route to the fake PBX). */
  routes?: unknown[];
  /** Meta's accept window (ms). */
  metaAcceptDeadlineMs?: number;
  /** Keep the bridge's JSON log lines (info and up) for assertions: `harness.logs()`. */
  captureLogs?: boolean;
}

function mergeSections(base: Record<string, unknown>, extra: Record<string, Record<string, unknown>> = {}): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(extra)) {
    out[key] = { ...((base[key] as Record<string, unknown> | undefined) ?? {}), ...value };
  }
  return out;
}

export async function startHarness(options: HarnessOptions = {}): Promise<Harness> {
  const lines: string[] = [];
  const log = options.captureLogs
    ? pino({ level: 'info' }, { write: (line: string) => void lines.push(line) })
    : pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
  const sim = await MetaSimulator.start({
    pages: { [PAGE_ID]: PAGE_TOKEN },
    appSecret: APP_SECRET,
    log,
    telephoneEvent: options.telephoneEvent ?? false,
    ...(options.metaAcceptDeadlineMs !== undefined ? { acceptDeadlineMs: options.metaAcceptDeadlineMs } : {}),
  });
  const drachtio = await startDrachtioDouble();
  const raw = mergeSections(
    {
      meta: { app_secret: APP_SECRET, verify_token: VERIFY_TOKEN, graph_base_url: sim.graphUrl, graph_timeout_ms: 3000 },
      pages: [{ id: PAGE_ID, access_token: PAGE_TOKEN, name: 'Test page' }],
      webhook: { listen: { host: '127.0.0.1', port: 0 } },
      admin: { listen: { host: '127.0.0.1', port: 0 } },
      sip: {
        drachtio: { host: drachtio.host, port: drachtio.port, secret: drachtio.secret },
        acl: ['127.0.0.1/32'],
        default_page: PAGE_ID,
      },
      routes: options.routes ?? [
        {
          name: 'default',
          match: {},
          targets: [drachtio.pbx.uri('support')],
          target_timeout_ms: 5000,
          ...(options.codecs ? { codecs: options.codecs } : {}),
        },
      ],
      media: { workers: 1, rtp: { listen_ip: '127.0.0.1', min_port: 0, max_port: 0 } },
      messenger: { ice: { listen_ip: '127.0.0.1' }, ice_timeout_ms: 5000, dtls_timeout_ms: 5000 },
      calls: { accept_deadline_ms: 10_000, connect_timeout_ms: 10_000, drain_timeout_ms: 2000 },
      logging: { level: 'silent' },
    },
    options.config,
  );
  const config = parseConfig(raw, {});
  const metrics = new Metrics();
  let daemon: Daemon;
  try {
    daemon = await Daemon.start(config, { log, metrics, waitForSipMs: 5000 });
  } catch (err) {
    await sim.close();
    await drachtio.close();
    throw err;
  }
  sim.setWebhookUrl(daemon.webhookUrl);
  let closed = false;
  return {
    sim,
    drachtio,
    daemon,
    metrics,
    config,
    log,
    logs: () => lines.map((line) => JSON.parse(line) as Record<string, unknown>),
    async close() {
      if (closed) return;
      closed = true;
      await daemon.close();
      await sim.close();
      await drachtio.close();
    },
  };
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
