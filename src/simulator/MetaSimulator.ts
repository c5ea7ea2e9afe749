/**
 * Meta, simulated as a whole: the Graph API (GraphSimulator), the webhook sender signing like Meta, and Meta's
 * ICE-lite, DTLS-passive media servers (MetaMediaServer). The demo, `simulate-call` and the end-to-end tests drive
 * the bridge through it exactly as Meta would.
 */
import type { Logger } from 'pino';
import { TypedEmitter } from '../core/TypedEmitter.js';
import { GraphSimulator, type SimCall, type SimTerminateEvent } from './graph/index.js';
import { MetaMediaServer, type MetaMediaSession } from './media/MetaMediaServer.js';
import { WebhookSender } from './webhookSender.js';

export interface MetaSimulatorOptions {
  /** Page id -> access token the simulated Graph API accepts. */
  pages: Record<string, string>;
  /** The app secret webhooks are signed with. */
  appSecret: string;
  /** The bridge's webhook URL (can be set later with `setWebhookUrl`). */
  webhookUrl?: string;
  log: Logger;
  /** Address of the Graph API listener and of the media endpoint. Default 127.0.0.1. */
  host?: string;
  /** Graph API port; 0 = any. */
  port?: number;
  /** Keep telephone-event/48000 in Meta's answers (Meta's sample answer is Opus only). Default false. */
  telephoneEvent?: boolean;
  /** Meta's accept window (ms). Default 60000. */
  acceptDeadlineMs?: number;
  /** Port range of the simulated media servers. */
  rtcMinPort?: number;
  rtcMaxPort?: number;
  /** Shape of accept's `sdp_response` (Meta's examples show both). Default 'string'. */
  acceptAnswerShape?: 'string' | 'object';
  /**
   * Accept answers also carry `sdp_renegotiation`: a new offer from the media server with a second m=audio (one
   * recvonly, one sendonly), as seen from Meta. Default false.
   */
  renegotiateOnAccept?: boolean;
  /** Media sessions sit behind a relay that tests can make lossy (`session.impair`). Default false. */
  mediaRelay?: boolean;
}

export interface MetaSimulatorEvents {
  /** Meta answered the bridge's offer for this call: the media session exists (not yet connected). */
  media: [{ callId: string; session: MetaMediaSession }];
}

export class MetaSimulator extends TypedEmitter<MetaSimulatorEvents> {
  readonly graph: GraphSimulator;
  readonly mediaServer: MetaMediaServer;
  readonly webhooks: WebhookSender;
  /** `http://host:port` of the simulated Graph API (the bridge's `meta.graph_base_url`). */
  readonly graphUrl: string;
  readonly #sessions = new Map<string, MetaMediaSession>();
  readonly #log: Logger;
  #closed = false;

  private constructor(parts: { graph: GraphSimulator; mediaServer: MetaMediaServer; webhooks: WebhookSender; graphUrl: string; log: Logger }) {
    super();
    this.graph = parts.graph;
    this.mediaServer = parts.mediaServer;
    this.webhooks = parts.webhooks;
    this.graphUrl = parts.graphUrl;
    this.#log = parts.log;
  }

  static async start(options: MetaSimulatorOptions): Promise<MetaSimulator> {
    const host = options.host ?? '127.0.0.1';
    const log = options.log.child({ component: 'meta-simulator' });
    const mediaServer = await MetaMediaServer.create({
      listenIp: host,
      log,
      relay: options.mediaRelay ?? false,
      ...(options.rtcMinPort !== undefined ? { rtcMinPort: options.rtcMinPort } : {}),
      ...(options.rtcMaxPort !== undefined ? { rtcMaxPort: options.rtcMaxPort } : {}),
    });
    const webhooks = new WebhookSender({
      url: options.webhookUrl ?? 'http://127.0.0.1:1/webhook',
      appSecret: options.appSecret,
      log,
      attempts: 4,
      baseDelayMs: 100,
      timeoutMs: 5_000,
    });
    let sim: MetaSimulator | undefined;
    const graph = new GraphSimulator({
      pages: options.pages,
      log,
      webhooks,
      ...(options.acceptDeadlineMs !== undefined ? { acceptDeadlineMs: options.acceptDeadlineMs } : {}),
      ...(options.acceptAnswerShape !== undefined ? { acceptAnswerShape: options.acceptAnswerShape } : {}),
      ...(options.renegotiateOnAccept
        ? {
            renegotiateOnAccept: async ({ callId }: { callId: string }) =>
              sim?.session(callId)?.renegotiationOffer({ secondMLine: true }),
          }
        : {}),
      answerOffer: async ({ callId, sdp }) => {
        const { sdp: answer, session } = await mediaServer.answerOffer(sdp, { telephoneEvent: options.telephoneEvent ?? false });
        if (sim) sim.#adopt(callId, session);
        return answer;
      },
    });
    try {
      const address = await graph.app.listen({ host, port: options.port ?? 0 });
      sim = new MetaSimulator({ graph, mediaServer, webhooks, graphUrl: address, log });
      const started = sim;
      graph.events.on('terminate', (event: SimTerminateEvent) => started.session(event.callId)?.close());
      return sim;
    } catch (err) {
      mediaServer.close();
      await graph.close();
      throw err;
    }
  }

  /** Where webhooks go (the bridge's webhook URL). */
  setWebhookUrl(url: string): void {
    this.webhooks.url = url;
  }

  /** Deliver webhooks round-robin across several bridges (each attempt to the next one); empty: back to one URL. */
  setWebhookUrls(urls: string[]): void {
    this.webhooks.urls = [...urls];
  }

  get webhookUrl(): string {
    return this.webhooks.url;
  }

  /** A person calls the page from Messenger: Meta sends `connect`. Returns Meta's call id. */
  placeCall(o: { pageId: string; psid: string }): string {
    return this.graph.startConsumerCall(o);
  }

  /** The media session Meta opened for this call (after accept/connect), if any. */
  session(callId: string): MetaMediaSession | undefined {
    return this.#sessions.get(callId);
  }

  /** Resolves with the media session once Meta answered the bridge's offer for `callId`. */
  waitForSession(callId: string, timeoutMs = 10_000): Promise<MetaMediaSession> {
    const existing = this.#sessions.get(callId);
    if (existing) return Promise.resolve(existing);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off('media', onMedia);
        reject(new Error(`no media session for call ${callId} within ${timeoutMs} ms`));
      }, timeoutMs);
      const onMedia = (e: { callId: string; session: MetaMediaSession }): void => {
        if (e.callId !== callId) return;
        clearTimeout(timer);
        this.off('media', onMedia);
        resolve(e.session);
      };
      this.on('media', onMedia);
    });
  }

  /** Resolves when the simulated call ends (terminate, for any reason). */
  waitForEnd(callId: string, timeoutMs = 10_000): Promise<SimTerminateEvent> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.graph.events.off('terminate', onEnd);
        reject(new Error(`call ${callId} did not end within ${timeoutMs} ms`));
      }, timeoutMs);
      const onEnd = (e: SimTerminateEvent): void => {
        if (e.callId !== callId) return;
        clearTimeout(timer);
        this.graph.events.off('terminate', onEnd);
        resolve(e);
      };
      this.graph.events.on('terminate', onEnd);
    });
  }

  /** The simulated call record. */
  call(callId: string): SimCall | undefined {
    return this.graph.calls.get(callId);
  }

  /** The person hangs up. */
  hangUp(callId: string): void {
    this.graph.hangUp(callId);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const session of this.#sessions.values()) session.close();
    this.#sessions.clear();
    await this.graph.close();
    this.mediaServer.close();
    this.removeAllListeners();
  }

  #adopt(callId: string, session: MetaMediaSession): void {
    this.#sessions.set(callId, session);
    session.on('closed', () => {
      if (this.#sessions.get(callId) === session) this.#sessions.delete(callId);
    });
    this.#log.debug({ callId }, 'media session opened');
    this.safeEmit('media', { callId, session });
  }
}
