/**
 * A whole bridge on loopback with nothing outside: the Meta simulator (Graph API, signed webhooks, ICE-lite media),
 * the drachtio-server double with its fake PBX, and the daemon itself, built from a real Config.
 * The demo runs on it; so do the end-to-end tests.
 */
import type { Logger } from 'pino';
import { parseConfig, type Config } from '../config/index.js';
import { Daemon } from '../daemon/Daemon.js';
import { Metrics } from '../observability/index.js';
import { MetaSimulator } from './MetaSimulator.js';
import { startDrachtioDouble, type DrachtioDouble } from './drachtio/index.js';

export const DEMO_PAGE_ID = '106378625516323';
export const DEMO_PAGE_TOKEN = 'EAAdemo-page-token';
export const DEMO_APP_SECRET = 'demo-app-secret-0123456789';
export const DEMO_VERIFY_TOKEN = 'demo-verify-token';
export const DEMO_PSID = '5275811702471834';

export interface LoopbackBridge {
  sim: MetaSimulator;
  drachtio: DrachtioDouble;
  daemon: Daemon;
  metrics: Metrics;
  config: Config;
  close(): Promise<void>;
}

export interface LoopbackBridgeOptions {
  log: Logger;
  /** Codec preference toward the PBX. */
  codecs?: Array<'PCMU' | 'PCMA' | 'opus'>;
  /** Meta keeps telephone-event in its answers. Default false, as in Meta's sample answer. */
  telephoneEvent?: boolean;
  /** Merged over the generated config, section by section (one level deep). */
  config?: Record<string, Record<string, unknown>>;
  /** Routes (default: one default route to the fake PBX's `support` user). */
  routes?: unknown[];
  /** Meta's accept window (ms). */
  metaAcceptDeadlineMs?: number;
  /** Meta's accept answers carry a renegotiation offer with a second m=audio. */
  renegotiateOnAccept?: boolean;
  /** Meta's media sessions sit behind a relay that tests can make lossy (`session.impair`). Default false. */
  metaMediaRelay?: boolean;
}

function mergeSections(base: Record<string, unknown>, extra: Record<string, Record<string, unknown>> = {}): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(extra)) {
    out[key] = { ...((base[key] as Record<string, unknown> | undefined) ?? {}), ...value };
  }
  return out;
}

/** Where a drachtio-server's admin side listens. */
export interface DrachtioAddress {
  host: string;
  port: number;
  secret: string;
}

/** The simulated Meta and the bridge, without a drachtio-server of their own. */
export type LoopbackBridgeOn = Omit<LoopbackBridge, 'drachtio'>;

/**
 * The simulated Meta and the bridge on loopback, the bridge talking to the drachtio-server at `drachtio` (a real
 * one, or the double); the default route dials `target`.
 */
export async function startLoopbackBridgeOn(
  options: LoopbackBridgeOptions,
  drachtio: DrachtioAddress,
  target: string,
): Promise<LoopbackBridgeOn> {
  const { log } = options;
  const sim = await MetaSimulator.start({
    pages: { [DEMO_PAGE_ID]: DEMO_PAGE_TOKEN },
    appSecret: DEMO_APP_SECRET,
    log,
    telephoneEvent: options.telephoneEvent ?? false,
    renegotiateOnAccept: options.renegotiateOnAccept ?? false,
    mediaRelay: options.metaMediaRelay ?? false,
    ...(options.metaAcceptDeadlineMs !== undefined ? { acceptDeadlineMs: options.metaAcceptDeadlineMs } : {}),
  });
  try {
    const raw = mergeSections(
      {
        meta: { app_secret: DEMO_APP_SECRET, verify_token: DEMO_VERIFY_TOKEN, graph_base_url: sim.graphUrl, graph_timeout_ms: 3000 },
        pages: [{ id: DEMO_PAGE_ID, access_token: DEMO_PAGE_TOKEN, name: 'Demo page' }],
        webhook: { listen: { host: '127.0.0.1', port: 0 } },
        admin: { listen: { host: '127.0.0.1', port: 0 } },
        sip: {
          drachtio: { host: drachtio.host, port: drachtio.port, secret: drachtio.secret },
          acl: ['127.0.0.1/32'],
          default_page: DEMO_PAGE_ID,
        },
        routes: options.routes ?? [
          {
            name: 'default',
            match: {},
            targets: [target],
            target_timeout_ms: 5000,
            ...(options.codecs ? { codecs: options.codecs } : {}),
          },
        ],
        media: { threads: 1, workers: 1, rtp: { listen_ip: '127.0.0.1', min_port: 0, max_port: 0 } },
        messenger: { ice: { listen_ip: '127.0.0.1' }, ice_timeout_ms: 5000, dtls_timeout_ms: 5000 },
        // Off unless a test turns it on: here the simulated Meta, the PBX's RTP and the test itself share the bridge's
        // event loop, so its load signals measure them too.
        calls: { accept_deadline_ms: 10_000, connect_timeout_ms: 10_000, drain_timeout_ms: 2000, admission: { enabled: false } },
      },
      options.config,
    );
    const config = parseConfig(raw, {});
    const metrics = new Metrics();
    const daemon = await Daemon.start(config, { log, metrics, waitForSipMs: 5000 });
    sim.setWebhookUrl(daemon.webhookUrl);
    let closed = false;
    return {
      sim,
      daemon,
      metrics,
      config,
      async close() {
        if (closed) return;
        closed = true;
        await daemon.close();
        await sim.close();
      },
    };
  } catch (err) {
    await sim.close();
    throw err;
  }
}

export async function startLoopbackBridge(options: LoopbackBridgeOptions): Promise<LoopbackBridge> {
  const drachtio = await startDrachtioDouble();
  let bridge: LoopbackBridgeOn;
  try {
    bridge = await startLoopbackBridgeOn(options, drachtio, drachtio.pbx.uri('support'));
  } catch (err) {
    await drachtio.close();
    throw err;
  }
  let closed = false;
  return {
    ...bridge,
    drachtio,
    async close() {
      if (closed) return;
      closed = true;
      await bridge.close();
      await drachtio.close();
    },
  };
}
