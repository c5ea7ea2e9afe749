/**
 * SIP session timers (RFC 4028): reading Session-Expires / Min-SE and deciding who refreshes.
 * drachtio-srf 5.0.29 has no session-timer support of its own, so the dialog wrapper runs the timers.
 */

/** RFC 4028's floor for Session-Expires and Min-SE (seconds). */
export const MIN_SESSION_EXPIRES_SEC = 90;

export interface SessionTimer {
  /** Session interval (seconds). */
  expiresSec: number;
  /** Who sends refreshes: we do ('us') or the PBX does ('them'). */
  refresher: 'us' | 'them';
}

export interface SessionExpiresHeader {
  deltaSec: number;
  refresher?: 'uac' | 'uas';
}

/** Parse `Session-Expires: 1800;refresher=uac` (also the compact form `x:` carries the same value). */
export function parseSessionExpires(value: string | undefined): SessionExpiresHeader | undefined {
  if (!value) return undefined;
  const [delta, ...params] = value.split(';').map((p) => p.trim());
  if (!delta || !/^\d+$/.test(delta)) return undefined;
  const out: SessionExpiresHeader = { deltaSec: Number(delta) };
  for (const p of params) {
    const [k, v] = p.split('=').map((s) => s.trim().toLowerCase());
    if (k === 'refresher' && (v === 'uac' || v === 'uas')) out.refresher = v;
  }
  return out;
}

function supportsTimer(supported: string | undefined): boolean {
  return (supported ?? '')
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .includes('timer');
}

export type InviteSessionDecision =
  | { kind: 'none' }
  /** Answer 422 Session Interval Too Small with this Min-SE. */
  | { kind: 'too_small'; minSe: number }
  | { kind: 'timer'; timer: SessionTimer; responseHeaders: Record<string, string> };

/**
 * We are the UAS of an INVITE (initial or re-INVITE) from the PBX: what to answer about session timers.
 * The PBX's choice of refresher is honoured; when it does not support timers, we refresh (RFC 4028 section 9).
 */
export function decideAsUas(headers: {
  sessionExpires?: string;
  minSe?: string;
  supported?: string;
}): InviteSessionDecision {
  const se = parseSessionExpires(headers.sessionExpires);
  if (!se) return { kind: 'none' };
  if (se.deltaSec < MIN_SESSION_EXPIRES_SEC) return { kind: 'too_small', minSe: MIN_SESSION_EXPIRES_SEC };
  const timerSupported = supportsTimer(headers.supported);
  const refresher = se.refresher ?? (timerSupported ? 'uac' : 'uas');
  const responseHeaders: Record<string, string> = {
    'Session-Expires': `${se.deltaSec};refresher=${refresher}`,
  };
  if (timerSupported) responseHeaders['Require'] = 'timer';
  return { kind: 'timer', timer: { expiresSec: se.deltaSec, refresher: refresher === 'uas' ? 'us' : 'them' }, responseHeaders };
}

/** We are the UAC and got a 2xx: the timer the PBX chose (refresher=uac means us). */
export function decideAsUac(sessionExpires: string | undefined): SessionTimer | undefined {
  const se = parseSessionExpires(sessionExpires);
  if (!se || se.deltaSec < MIN_SESSION_EXPIRES_SEC) return undefined;
  return { expiresSec: se.deltaSec, refresher: se.refresher === 'uac' ? 'us' : 'them' };
}

/** When the non-refresher gives up on a session that was not refreshed (ms after the last refresh). */
export function expiryDeadlineMs(expiresSec: number): number {
  return (expiresSec - Math.min(32, expiresSec / 3)) * 1000;
}
