/**
 * Routing rules for consumer-initiated calls: which PBX targets an INVITE goes to, chosen from the Page
 * and the caller's PSID. Pure functions, no I/O.
 */
import type { PbxCodecName } from '../calls/ports.js';

export interface RouteMatch {
  /** Matches calls to this Page only. */
  page_id?: string;
  /** Matches calls from these PSIDs only. */
  psids?: readonly string[];
}

export interface Route {
  name: string;
  /** Both optional; an empty match is a default route. */
  match: RouteMatch;
  /** SIP URIs tried in turn. */
  targets: readonly string[];
  /** Per-target ring timeout before CANCEL and the next target (ms). */
  targetTimeoutMs: number;
  /** Codec preference toward the PBX. */
  codecs: readonly PbxCodecName[];
  /** 'on_pbx_answer': accept toward Meta when the PBX answers; 'immediate': accept at once, the PBX rings. */
  answerMode: 'on_pbx_answer' | 'immediate';
}

/** The first route (in order) whose every given condition holds; an empty match matches everything. */
export function selectRoute<R extends Route>(
  routes: readonly R[],
  call: { pageId: string; psid: string },
): R | undefined {
  return routes.find((route) => {
    const { page_id: pageId, psids } = route.match;
    if (pageId !== undefined && pageId !== call.pageId) return false;
    if (psids !== undefined && !psids.includes(call.psid)) return false;
    return true;
  });
}

/**
 * Final statuses after which the next target is NOT tried: the callee (or the whole network) has decided.
 * 486 Busy Here counts as busy: ringing another phone for a person who is busy on this one is a surprise.
 * Everything else (408 and our own per-target timeout, 404/480, 5xx, other 4xx/6xx) tries the next target.
 */
export const FINAL_FOR_ALL_TARGETS: ReadonlySet<number> = new Set([486, 487, 600, 603, 604, 606]);

/** Whether a failed attempt with `status` should move on to the next target. */
export function shouldTryNextTarget(status: number): boolean {
  return status >= 300 && !FINAL_FOR_ALL_TARGETS.has(status);
}
