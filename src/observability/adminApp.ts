/**
 * The operations endpoints: /metrics, /healthz, /readyz. No listen(): the daemon listens, tests inject().
 */
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Metrics } from './Metrics.js';

export interface Readiness {
  ready: boolean;
  checks: Record<string, boolean>;
  /** Admission by load: refusing new calls now, and why (the body of /readyz says it). */
  load?: { refusing: boolean; reasons: string[]; detail?: string };
}

export interface AdminAppOptions {
  metrics: Metrics;
  /** Called on each /readyz. */
  readiness: () => Readiness;
  log?: Logger;
}

export function buildAdminApp(options: AdminAppOptions): FastifyInstance {
  const app = Fastify({
    loggerInstance: options.log?.child({ component: 'admin' }) as FastifyBaseLogger | undefined,
    logController: new LogController({ disableRequestLogging: true }),
  });
  app.get('/metrics', async (_req, reply) => {
    const text = await options.metrics.registry.metrics();
    return reply.type(options.metrics.registry.contentType).send(text);
  });
  app.get('/healthz', async (_req, reply) => reply.type('text/plain').send('ok'));
  app.get('/readyz', async (_req, reply) => {
    let state: Readiness;
    try {
      state = options.readiness();
    } catch (err) {
      options.log?.warn({ err }, 'readiness check threw');
      state = { ready: false, checks: { readiness: false } };
    }
    return reply.code(state.ready ? 200 : 503).send(state);
  });
  return app;
}
