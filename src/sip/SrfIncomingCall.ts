/**
 * An INVITE from the PBX that passed the ACL and digest auth, waiting for the controller's decision:
 * ring, answer (200 OK with our SDP -> SipDialog) or reject (final response with a Reason header).
 */
import type { Logger } from 'pino';
import type { IncomingCall, IncomingCallEvents, SipDialog } from '../calls/ports.js';
import { InvalidStateError, SipError } from '../core/errors.js';
import { TypedEmitter } from '../core/TypedEmitter.js';
import type { SessionTimer } from './sessionTimer.js';
import { SrfSipDialog, type SipMetrics } from './SrfSipDialog.js';
import type { Srf, SrfRequest, SrfResponse } from './srfTypes.js';

export interface SrfIncomingCallOptions {
  srf: Srf;
  req: SrfRequest;
  res: SrfResponse;
  psid: string | undefined;
  pageId: string | undefined;
  log: Logger;
  /** Headers for the 200 OK (session timer), and the timer they set up. */
  sessionTimer?: { timer: SessionTimer; responseHeaders: Record<string, string> };
  /** Where the call counts the responses it sends (and its dialog, those of its transactions). */
  metrics: SipMetrics;
  /** In-dialog requests from other sources than the INVITE's must pass this (the SIP ACL). */
  sourceAllowed?: (address: string) => boolean;
}

/** A `Reason` header value: `SIP;cause=486;text="busy"`. */
export function sipReasonHeader(status: number, text: string): string {
  return `SIP;cause=${status};text="${text.replace(/["\\\r\n]/g, ' ')}"`;
}

export class SrfIncomingCall extends TypedEmitter<IncomingCallEvents> implements IncomingCall {
  readonly sipCallId: string;
  readonly psid: string | undefined;
  readonly pageId: string | undefined;
  readonly sourceAddress: string;
  readonly sdp: string;
  readonly #srf: Srf;
  readonly #req: SrfRequest;
  readonly #res: SrfResponse;
  readonly #log: Logger;
  readonly #sessionTimer: SrfIncomingCallOptions['sessionTimer'];
  readonly #metrics: SipMetrics;
  readonly #sourceAllowed: SrfIncomingCallOptions['sourceAllowed'];
  #canceled = false;
  #rang = false;
  /** A final response was sent or is being sent (answer or reject). */
  #finalSent = false;

  constructor(options: SrfIncomingCallOptions) {
    super();
    this.#srf = options.srf;
    this.#req = options.req;
    this.#res = options.res;
    this.#log = options.log;
    this.#sessionTimer = options.sessionTimer;
    this.#metrics = options.metrics;
    this.#sourceAllowed = options.sourceAllowed;
    this.sipCallId = options.req.get('Call-ID') ?? '';
    this.psid = options.psid;
    this.pageId = options.pageId;
    this.sourceAddress = options.req.source_address;
    this.sdp = options.req.body ?? '';
    options.req.on('cancel', () => {
      if (this.#finalSent) return;
      this.#canceled = true;
      this.#finalSent = true;
      this.#log.info('CANCEL from the PBX');
      this.safeEmit('cancel');
    });
  }

  get canceled(): boolean {
    return this.#canceled;
  }

  ringing(): void {
    if (this.#rang || this.#finalSent) return;
    this.#rang = true;
    try {
      this.#res.send(180);
      this.#metrics.sipResponse('sent', 180);
    } catch (err) {
      this.#log.warn({ err }, 'sending 180 failed');
    }
  }

  async answer(sdp: string): Promise<SipDialog> {
    if (this.#canceled) throw new SipError(487, 'Request Terminated');
    if (this.#finalSent) throw new InvalidStateError('INVITE already answered or rejected');
    this.#finalSent = true;
    let dialog;
    try {
      dialog = await this.#srf.createUAS(this.#req, this.#res, {
        localSdp: sdp,
        headers: { ...(this.#sessionTimer?.responseHeaders ?? {}) },
      });
    } catch (err) {
      if (err instanceof Error && 'status' in err && typeof err.status === 'number') {
        throw new SipError(err.status, (err as Error & { reason?: string }).reason ?? err.message, { cause: err });
      }
      throw new SipError(500, 'answering the INVITE failed', { cause: err });
    }
    this.#metrics.sipResponse('sent', 200);
    this.#log.info('INVITE answered');
    return new SrfSipDialog({
      dialog,
      log: this.#log,
      sessionTimer: this.#sessionTimer?.timer,
      metrics: this.#metrics,
      peerAddress: this.sourceAddress,
      ...(this.#sourceAllowed ? { sourceAllowed: this.#sourceAllowed } : {}),
    });
  }

  reject(status: number, reason: string, retryAfterS?: number): void {
    if (this.#finalSent) {
      this.#log.debug({ status }, 'reject ignored: final response already sent');
      return;
    }
    this.#finalSent = true;
    try {
      const headers: Record<string, string> = { Reason: sipReasonHeader(status, reason) };
      if (retryAfterS !== undefined) headers['Retry-After'] = String(retryAfterS);
      this.#res.send(status, { headers });
      this.#metrics.sipResponse('sent', status);
      this.#log.info({ status, reason }, 'INVITE rejected');
    } catch (err) {
      this.#log.warn({ err, status }, 'sending the rejection failed');
    }
  }
}
