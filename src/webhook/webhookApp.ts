/**
 * Meta's webhook endpoint: the subscription handshake (GET) and signed event deliveries (POST).
 * A verified POST is answered 200 before any work (Meta unsubscribes slow or failing endpoints); the events are
 * parsed, filtered and handed to the sink on the next turn of the event loop.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { MetaEvent, MetaEventSink } from '../calls/ports.js';
import type { Config } from '../config/schema.js';
import type { Metrics } from '../observability/Metrics.js';
import { EventFilter } from './EventFilter.js';
import { parseWebhookBody } from './parseEvents.js';

export interface WebhookSettings {
  /** Key of the X-Hub-Signature-256 HMAC. */
  appSecret: string;
  /** Echoed back by Meta in the subscription handshake. */
  verifyToken: string;
  /** Route path, default '/webhook'. */
  path?: string;
  /** Larger bodies get 413. Default 262144. */
  bodyLimitBytes?: number;
  /** Pages served; events for other pages are dropped. */
  pageIds: Iterable<string>;
  /**
   * Limits against slow or abusive clients (read once, at build time). A request (headers and body) must arrive
   * within `requestTimeoutMs` (default 10 s), its headers within `headersTimeoutMs` (default 5 s); an idle kept-alive
   * connection is closed after `keepAliveTimeoutMs` (default 5 s); at most `maxConnections` (default 256) are open at
   * once; a POST's events past `maxEventsPerPost` (default 100) are dropped and counted.
   */
  limits?: Partial<WebhookLimits>;
}

export interface WebhookLimits {
  requestTimeoutMs: number;
  headersTimeoutMs: number;
  keepAliveTimeoutMs: number;
  maxConnections: number;
  maxEventsPerPost: number;
}

export const DEFAULT_WEBHOOK_LIMITS: WebhookLimits = {
  requestTimeoutMs: 10_000,
  headersTimeoutMs: 5_000,
  keepAliveTimeoutMs: 5_000,
  maxConnections: 256,
  maxEventsPerPost: 100,
};

export interface WebhookAppOptions {
  /**
   * The settings, or a function returning the current ones (asked on every request, so a configuration reload
   * takes effect for secrets and pages; `path` and `bodyLimitBytes` are read once, at build time).
   */
  settings: WebhookSettings | (() => WebhookSettings);
  sink: MetaEventSink;
  log: Logger;
  /** Where the app counts webhooks (the daemon passes its Metrics). */
  metrics?: Pick<Metrics, 'webhook'>;
  /** Clock (ms) for staleness and dedupe expiry; tests move it. */
  now?: () => number;
  /** Dedupe memory (ms); default 15 min. */
  dedupeTtlMs?: number;
}

/** The webhook slice of the configuration. */
export function webhookSettingsFromConfig(config: Config): WebhookSettings {
  return {
    appSecret: config.meta.app_secret,
    verifyToken: config.meta.verify_token,
    path: config.webhook.path,
    bodyLimitBytes: config.webhook.body_limit_bytes,
    pageIds: config.pages.map((p) => p.id),
    limits: {
      requestTimeoutMs: config.webhook.request_timeout_ms,
      headersTimeoutMs: config.webhook.headers_timeout_ms,
      keepAliveTimeoutMs: config.webhook.keep_alive_timeout_ms,
      maxConnections: config.webhook.max_connections,
      maxEventsPerPost: config.webhook.max_events_per_post,
    },
  };
}

const SIGNATURE = /^sha256=([0-9a-fA-F]{64})$/;

/** Constant-time string equality (hashing first makes the lengths equal). */
function safeEqual(a: string, b: string): boolean {
  const ha = createHash('sha256').update(a).digest();
  const hb = createHash('sha256').update(b).digest();
  return timingSafeEqual(ha, hb) && a.length === b.length;
}

/** Verify `X-Hub-Signature-256` over the exact bytes received. */
export function verifySignature(
  rawBody: Buffer,
  header: string | undefined,
  appSecret: string,
): 'ok' | 'missing_signature' | 'bad_signature' {
  if (header === undefined || header === '') return 'missing_signature';
  const match = SIGNATURE.exec(header.trim());
  if (!match) return 'bad_signature';
  const given = Buffer.from(match[1]!, 'hex');
  const expected = createHmac('sha256', appSecret).update(rawBody).digest();
  return timingSafeEqual(given, expected) ? 'ok' : 'bad_signature';
}

export function buildWebhookApp(options: WebhookAppOptions): FastifyInstance {
  const { sink, metrics } = options;
  const current = (): WebhookSettings => (typeof options.settings === 'function' ? options.settings() : options.settings);
  const initial = current();
  const log = options.log.child({ component: 'webhook' });
  const path = initial.path ?? '/webhook';
  const bodyLimit = initial.bodyLimitBytes ?? 262_144;
  const now = options.now ?? Date.now;
  let knownPages: { from: Iterable<string>; set: Set<string> } | undefined;
  const isKnownPage = (pageId: string): boolean => {
    const pages = current().pageIds;
    if (knownPages?.from !== pages) knownPages = { from: pages, set: pages instanceof Set ? (pages as Set<string>) : new Set(pages) };
    return knownPages.set.has(pageId);
  };
  const filter = new EventFilter({ pageIds: isKnownPage, now, ttlMs: options.dedupeTtlMs });

  const limits: WebhookLimits = { ...DEFAULT_WEBHOOK_LIMITS, ...initial.limits };
  // A headers timeout at or above the request timeout would never fire first.
  const headersTimeout = Math.min(limits.headersTimeoutMs, limits.requestTimeoutMs);
  const app = Fastify({
    loggerInstance: log as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit,
    requestTimeout: limits.requestTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    // Node checks the request and headers deadlines on this interval (its default, 30 s, would let a slow client
    // hold a connection three times longer than configured).
    http: { headersTimeout, requestTimeout: limits.requestTimeoutMs, connectionsCheckingInterval: Math.min(1000, headersTimeout) },
  });
  app.server.headersTimeout = headersTimeout;
  app.server.maxConnections = limits.maxConnections;
  app.server.on('drop', (info?: { remoteAddress?: string }) => {
    log.warn({ ip: info?.remoteAddress, maxConnections: limits.maxConnections }, 'webhook connection refused: too many open');
  });

  // The signature covers the exact bytes Meta sent: keep them, parse JSON ourselves after verifying.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit }, (_req, body, done) => done(null, body));

  // Refused before our handler runs (fastify's body limit): still logged and counted.
  app.addHook('onResponse', async (req, reply) => {
    if (reply.statusCode === 413) {
      log.warn({ ip: req.ip, bytes: Number(req.headers['content-length'] ?? 0), limit: bodyLimit }, 'webhook POST refused: body too large');
      metrics?.webhook('post', 'invalid');
    }
  });

  app.get(path, async (req, reply) => {
    const q = req.query as Record<string, string | undefined>;
    const mode = q['hub.mode'];
    const token = q['hub.verify_token'] ?? '';
    const challenge = q['hub.challenge'] ?? '';
    if (mode === 'subscribe' && safeEqual(token, current().verifyToken)) {
      log.info('webhook subscription verified');
      return reply.code(200).type('text/plain').send(challenge);
    }
    log.warn({ ip: req.ip, mode }, 'webhook handshake refused');
    return reply.code(403).type('text/plain').send('Forbidden');
  });

  const deliver = (event: MetaEvent): void => {
    try {
      sink.handleMetaEvent(event);
    } catch (err) {
      log.error({ err, kind: event.kind }, 'event sink threw');
    }
  };

  const processBody = (body: unknown): void => {
    const parsed = parseWebhookBody(body, Math.floor(now() / 1000));
    if (parsed.events.length > limits.maxEventsPerPost) {
      const dropped = parsed.events.splice(limits.maxEventsPerPost);
      log.warn({ events: dropped.length + limits.maxEventsPerPost, limit: limits.maxEventsPerPost }, 'webhook POST carried too many events: the rest dropped');
      for (const event of dropped) metrics?.webhook(event.kind, 'over_limit');
    }
    for (const problem of parsed.invalid) {
      log.warn({ event: problem.event, where: problem.where, reason: problem.reason }, 'invalid webhook item dropped');
      metrics?.webhook(problem.event, 'invalid');
    }
    for (const item of parsed.ignored) {
      log.debug({ event: item.event, where: item.where, reason: item.reason }, 'webhook item ignored');
    }
    for (const event of parsed.events) {
      const verdict = filter.check(event);
      metrics?.webhook(event.kind, verdict);
      const ids = event.kind === 'call_permission_reply' ? { pageId: event.pageId } : { pageId: event.pageId, callId: event.callId };
      if (verdict === 'accepted') {
        log.debug({ kind: event.kind, ...ids }, 'webhook event accepted');
        deliver(event);
      } else if (verdict === 'unknown_page') {
        log.warn({ kind: event.kind, ...ids }, 'webhook event for an unknown page dropped');
      } else {
        log.info({ kind: event.kind, ...ids, verdict }, 'webhook event dropped');
      }
    }
  };

  app.post(path, async (req, reply) => {
    const raw = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    const header = req.headers['x-hub-signature-256'];
    const verdict = verifySignature(raw, Array.isArray(header) ? header[0] : header, current().appSecret);
    if (verdict !== 'ok') {
      log.warn({ ip: req.ip, bytes: raw.length, reason: verdict }, 'webhook POST refused: signature');
      metrics?.webhook('post', verdict);
      return reply
        .code(verdict === 'missing_signature' ? 401 : 403)
        .type('text/plain')
        .send(verdict === 'missing_signature' ? 'Unauthorized' : 'Forbidden');
    }
    let body: unknown;
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch (err) {
      log.warn({ ip: req.ip, bytes: raw.length, err: (err as Error).message }, 'signed webhook body is not JSON');
      metrics?.webhook('post', 'invalid');
      return reply.code(400).type('text/plain').send('Bad Request');
    }
    setImmediate(() => {
      try {
        processBody(body);
      } catch (err) {
        log.error({ err }, 'webhook processing failed');
      }
    });
    return reply.code(200).type('text/plain').send('EVENT_RECEIVED');
  });

  return app;
}
