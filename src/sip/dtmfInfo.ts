/**
 * DTMF carried in SIP INFO bodies: `application/dtmf-relay` (`Signal=5\r\nDuration=160`) and
 * `application/dtmf` (the digit alone, sometimes with a duration line).
 */
import type { DtmfEvent } from '../calls/ports.js';

/** Duration used when the INFO names none (ms). */
export const DEFAULT_INFO_DTMF_DURATION_MS = 250;

const SIGNAL_CODES: Record<string, string> = { '10': '*', '11': '#', '12': 'A', '13': 'B', '14': 'C', '15': 'D' };

function normaliseDigit(raw: string): string | undefined {
  const v = raw.trim().toUpperCase();
  if (/^[0-9*#A-D]$/.test(v)) return v;
  return SIGNAL_CODES[v];
}

function parseDuration(raw: string | undefined): number {
  if (raw === undefined) return DEFAULT_INFO_DTMF_DURATION_MS;
  const n = Number(raw.trim());
  return Number.isFinite(n) && n > 0 && n <= 10_000 ? Math.round(n) : DEFAULT_INFO_DTMF_DURATION_MS;
}

/** The content types this module understands (lower-case, without parameters). */
export const DTMF_CONTENT_TYPES: readonly string[] = ['application/dtmf-relay', 'application/dtmf'];

/**
 * Parse an INFO body. Returns undefined when the content type is not a DTMF one;
 * throws when it is one but the body carries no digit.
 */
export function parseDtmfInfo(contentType: string | undefined, body: string): DtmfEvent | undefined {
  const type = (contentType ?? '').split(';')[0]!.trim().toLowerCase();
  if (!DTMF_CONTENT_TYPES.includes(type)) return undefined;
  const fields = new Map<string, string>();
  const lines = body.split(/\r?\n/).map((l) => l.trim()).filter((l) => l.length > 0);
  for (const line of lines) {
    const eq = line.indexOf('=');
    if (eq > 0) fields.set(line.slice(0, eq).trim().toLowerCase(), line.slice(eq + 1).trim());
  }
  let digit: string | undefined;
  if (fields.has('signal')) digit = normaliseDigit(fields.get('signal')!);
  else if (type === 'application/dtmf' && lines.length > 0 && !lines[0]!.includes('=')) digit = normaliseDigit(lines[0]!);
  if (digit === undefined) throw new Error(`no DTMF digit in ${type} body`);
  return { digit, durationMs: parseDuration(fields.get('duration')) };
}

/** The `application/dtmf-relay` body of an INFO carrying `event` (the form PBXs read: `Signal=5`, `Duration=160`). */
export function dtmfRelayBody(event: DtmfEvent): string {
  return `Signal=${event.digit}\r\nDuration=${Math.max(1, Math.round(event.durationMs))}\r\n`;
}
