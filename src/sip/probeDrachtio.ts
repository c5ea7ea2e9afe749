/**
 * One connection attempt to drachtio-server, for `doctor`: reachable? our secret accepted? Within a deadline, then
 * disconnected. Nothing is retried: the answer is about this moment.
 */
import type { Logger } from 'pino';
import { SrfConstructor, stopSrf } from './srfConnection.js';

export type DrachtioProbe =
  | { ok: true; hostport: string }
  | { ok: false; problem: 'unreachable' | 'refused_secret' | 'timeout' | 'error'; detail: string };

export async function probeDrachtio(options: { host: string; port: number; secret: string; timeoutMs: number; log: Logger }): Promise<DrachtioProbe> {
  const srf = new SrfConstructor();
  let connected = false;
  const result = await new Promise<DrachtioProbe>((resolve) => {
    const timer = setTimeout(
      () => resolve({ ok: false, problem: 'timeout', detail: `no answer within ${options.timeoutMs} ms` }),
      options.timeoutMs,
    );
    const done = (r: DrachtioProbe): void => {
      clearTimeout(timer);
      resolve(r);
    };
    srf.on('connect', (err: Error | null, hostport?: string) => {
      if (err) done({ ok: false, problem: 'refused_secret', detail: err.message });
      else {
        connected = true;
        done({ ok: true, hostport: hostport ?? '' });
      }
    });
    srf.on('error', (err: NodeJS.ErrnoException) => {
      const unreachable = err.code === 'ECONNREFUSED' || err.code === 'EHOSTUNREACH' || err.code === 'ENETUNREACH' || err.code === 'ENOTFOUND';
      done({ ok: false, problem: unreachable ? 'unreachable' : 'error', detail: err.code ?? err.message });
    });
    // The connection's end after a refused secret is not an error for this one attempt.
    srf.on('close', () => undefined);
    srf.connect({ host: options.host, port: options.port, secret: options.secret, reconnect: { maxAttempts: 1 } });
  });
  stopSrf(srf, connected, options.log);
  return result;
}
