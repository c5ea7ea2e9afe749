/**
 * The logger factory: pino with secrets redacted wherever they appear in a logged object (habit 4).
 */
import { createHash } from 'node:crypto';
import { pino, type DestinationStream, type Logger, type LevelWithSilent } from 'pino';

/** Keys whose values never reach a log line, at any of the first few levels of nesting. */
const SECRET_KEYS = [
  'authorization',
  'Authorization',
  'access_token',
  'accessToken',
  'app_secret',
  'appSecret',
  'verify_token',
  'verifyToken',
  'password',
  'secret',
  'token',
  '"x-hub-signature-256"',
];

function redactPaths(): string[] {
  const paths: string[] = [];
  for (const key of SECRET_KEYS) {
    const tail = key.startsWith('"') ? `[${key}]` : `.${key}`;
    const bare = key.startsWith('"') ? `[${key}]` : key;
    paths.push(bare, `*${tail}`, `*.*${tail}`, `*.*.*${tail}`);
  }
  return paths;
}

export interface LoggerOptions {
  /** Default 'info'. */
  level?: LevelWithSilent;
  /** Human-readable output through pino-pretty (development only). Default false: JSON lines. */
  pretty?: boolean;
  /** Where lines go; default stdout. Tests pass a stream to read lines back. */
  destination?: DestinationStream;
  /** Base fields on every line (default: pid and hostname are omitted; add a `service` name instead). */
  base?: Record<string, unknown>;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const pinoOptions = {
    level: options.level ?? 'info',
    base: options.base ?? { service: 'messenger-sip-bridge' },
    redact: { paths: redactPaths(), censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label: string) => ({ level: label }) },
  };
  if (options.pretty && options.destination === undefined) {
    return pino({
      ...pinoOptions,
      transport: { target: 'pino-pretty', options: { translateTime: 'SYS:HH:MM:ss.l', ignore: 'service' } },
    });
  }
  return options.destination ? pino(pinoOptions, options.destination) : pino(pinoOptions);
}

/** Stable short pseudonym for a PSID (first 12 hex digits of its SHA-256). */
export function hashPsid(psid: string): string {
  return createHash('sha256').update(psid).digest('hex').slice(0, 12);
}

export interface CallLogContext {
  callId: string;
  direction?: string;
  pageId?: string;
  psid?: string;
  /** Log a hash of the PSID instead of the PSID (config `logging.hash_psid`). */
  hashPsid?: boolean;
}

/** A child logger carrying one call's context on every line. */
export function callLogger(log: Logger, ctx: CallLogContext): Logger {
  const bindings: Record<string, string> = { component: 'calls', callId: ctx.callId };
  if (ctx.direction !== undefined) bindings.direction = ctx.direction;
  if (ctx.pageId !== undefined) bindings.pageId = ctx.pageId;
  if (ctx.psid !== undefined) bindings.psid = ctx.hashPsid ? hashPsid(ctx.psid) : ctx.psid;
  return log.child(bindings);
}
