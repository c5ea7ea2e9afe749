/**
 * The one place that maps failures to what the far ends are told: SIP status + Reason text toward the PBX,
 * and the call outcome label for logs and metrics.
 */
import { GraphError, MediaError, MessengerLegError, SipError } from '../core/errors.js';
import type { AdmissionVerdict, CallOutcome } from './ports.js';

/** Meta's calling error: the person has not allowed calls from this page. */
const META_PERMISSION_MISSING = 2018391;

export interface SipRefusal {
  status: number;
  reason: string;
  outcome: CallOutcome;
  /** Retry-After header (seconds), for a 503 that says when to try again. */
  retryAfterS?: number;
}

export const REFUSALS = {
  draining: { status: 503, reason: 'bridge is draining', outcome: 'rejected_draining' },
  capacity: { status: 503, reason: 'bridge at capacity', outcome: 'rejected_capacity' },
  sipDown: { status: 503, reason: 'SIP leg not connected', outcome: 'sip_failed' },
  mediaDown: { status: 503, reason: 'no media worker available', outcome: 'media_failed' },
  clusterDown: { status: 503, reason: 'cluster store (Redis) unreachable', outcome: 'rejected_capacity' },
  noPsid: { status: 404, reason: 'no PSID in the request', outcome: 'rejected_unknown_page' },
  unknownPage: { status: 404, reason: 'unknown page', outcome: 'rejected_unknown_page' },
  noPermission: { status: 403, reason: 'no call permission from this person', outcome: 'rejected_no_permission' },
  metaTimeout: { status: 480, reason: 'no answer from Messenger', outcome: 'not_answered' },
  duplicateCallId: { status: 482, reason: 'Loop Detected: a call with this Call-ID is in progress', outcome: 'rejected_invalid' },
  sourceConcurrent: { status: 503, reason: 'too many calls from this source', outcome: 'rejected_capacity' },
  sourceRate: { status: 503, reason: 'too many INVITEs from this source', outcome: 'rejected_capacity' },
  metaEnded: { status: 487, reason: 'Messenger call ended', outcome: 'canceled' },
  messengerLegFailed: { status: 503, reason: 'Messenger media failed', outcome: 'media_failed' },
  mediaFailed: { status: 503, reason: 'media failed', outcome: 'media_failed' },
  bridgeError: { status: 500, reason: 'bridge error', outcome: 'media_failed' },
} as const satisfies Record<string, SipRefusal>;

/** Why a Messenger call is refused before it starts (Graph reject): its outcome label and the reason logged. */
export interface MetaRefusal {
  outcome: CallOutcome;
  reason: string;
}

/** Messenger calls the bridge cannot take (the same checks as for PBX INVITEs, told to Meta by a reject). */
export const META_REFUSALS = {
  draining: { outcome: 'rejected_draining', reason: 'bridge is draining' },
  sipDown: { outcome: 'sip_failed', reason: 'not connected to drachtio-server' },
  mediaDown: { outcome: 'media_failed', reason: 'no media worker available' },
  noRoute: { outcome: 'rejected_no_route', reason: 'no route matches this page and PSID' },
} as const satisfies Record<string, MetaRefusal>;

/** A call refused for count or load: what the PBX is told (503, Retry-After) and the outcome label. */
export function refusalForAdmission(verdict: Extract<AdmissionVerdict, { admit: false }>): SipRefusal {
  if (verdict.reason === 'capacity') return { ...REFUSALS.capacity, retryAfterS: verdict.retryAfterS };
  return { status: 503, reason: `bridge overloaded (${verdict.reason})`, outcome: 'rejected_overload', retryAfterS: verdict.retryAfterS };
}

/** The refusal of a call the bridge hangs up before it was answered (drain timeout, shutdown): 503 with `reason`. */
export function refusalForHangUp(reason: string): SipRefusal {
  return { status: 503, reason, outcome: 'canceled' };
}

/** A SIP status and reason without a call outcome: the answer to a REFER, or a transfer's final NOTIFY. */
export interface SipStatus {
  status: number;
  reason: string;
}

/** Answers to a REFER the bridge does not carry out (where it may send the caller: transferPolicy.ts). */
export const TRANSFER_REFUSALS = {
  disabled: { status: 403, reason: 'transfers are disabled' },
  inProgress: { status: 491, reason: 'a transfer is already in progress' },
  dialogReplaced: { status: 481, reason: 'dialog replaced by a transfer' },
  notBridged: { status: 491, reason: 'the call is not bridged yet' },
} as const satisfies Record<string, SipStatus>;

/** Answers to a REFER whose Refer-To the transfer rules (transferPolicy.ts) refuse, naming what they refused. */
export const TRANSFER_TARGET_REFUSALS = {
  host: { status: 403, reason: 'transfer target not allowed' },
  uriParameter: (name: string): SipStatus => ({ status: 403, reason: `transfer target URI parameter '${name}' not allowed` }),
  header: (name: string): SipStatus => ({ status: 403, reason: `header '${name}' may not be embedded in the Refer-To (only Replaces)` }),
} as const;

/** Final NOTIFYs of a transfer that failed on our side, or the target's failure as the transferor is told it. */
export const TRANSFER_FAILURES = {
  noMedia: { status: 500, reason: 'no media' },
  unusableAnswer: { status: 488, reason: 'Not Acceptable Here' },
} as const satisfies Record<string, SipStatus>;

/** The transferor's final NOTIFY for a transfer INVITE that failed with `err`. */
export function transferFailureFor(err: unknown): SipStatus {
  return err instanceof SipError ? { status: err.status, reason: err.reason } : { status: 500, reason: 'Server Internal Error' };
}

/** Map an error from Graph (permission check or connect) to the SIP refusal sent to the PBX. */
export function refusalForGraphError(err: unknown): SipRefusal {
  if (err instanceof GraphError) {
    if (err.metaCode === META_PERMISSION_MISSING) return REFUSALS.noPermission;
    if (err.httpStatus === 0 || err.retryable) {
      return { status: 503, reason: `Messenger API unavailable (${err.code})`, outcome: 'meta_error' };
    }
    return { status: 480, reason: `Messenger refused the call: ${err.message}`, outcome: 'meta_error' };
  }
  return { status: 503, reason: 'Messenger API error', outcome: 'meta_error' };
}

/** Map a media-side failure while answering a PBX offer. */
export function refusalForMediaError(err: unknown): SipRefusal {
  if (err instanceof MediaError && (err.code === 'NO_COMMON_CODEC' || err.code === 'SDP_INVALID' || err.code === 'SRTP_NEGOTIATION')) {
    return { status: 488, reason: err.message, outcome: 'media_failed' };
  }
  return { status: 503, reason: 'media setup failed', outcome: 'media_failed' };
}

/** Short machine-readable reason for an error, for the call summary. */
export function reasonOf(err: unknown): string {
  if (err instanceof SipError) return `sip ${err.status}`;
  if (err instanceof GraphError) return `graph ${err.code}${err.metaCode ? ` (${err.metaCode})` : ''}`;
  if (err instanceof MessengerLegError) return `messenger ${err.reason}`;
  if (err instanceof MediaError) return `media ${err.code}`;
  if (err instanceof Error) return err.message;
  return String(err);
}
