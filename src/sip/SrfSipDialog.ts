/**
 * SipDialog over a drachtio-srf Dialog: BYE both ways, re-INVITE/UPDATE answered through the controller's
 * handler, DTMF by SIP INFO, REFER (transfer: 202 and the NOTIFYs of its implicit subscription, RFC 3515),
 * session-timer refreshes (answering them, sending them when we are the refresher, and ending a session the PBX
 * stopped refreshing).
 */
import type { Logger } from 'pino';
import type { DtmfEvent, SipDialog, SipDialogEvents, TransferRequest } from '../calls/ports.js';
import { TypedEmitter } from '../core/TypedEmitter.js';
import { dtmfRelayBody, parseDtmfInfo } from './dtmfInfo.js';
import { decideAsUas, expiryDeadlineMs, type SessionTimer } from './sessionTimer.js';
import type { SrfDialog, SrfRequest, SrfResponse } from './srfTypes.js';

/** How long end() waits for the BYE's response before giving up on it (ms). */
const BYE_DEADLINE_MS = 10_000;
/** Digits waiting to go out as INFO; more are refused (a runaway source must not grow memory). */
const MAX_QUEUED_INFO = 32;
/** How long a NOTIFY waits for its response before the next one goes anyway (ms). */
const NOTIFY_DEADLINE_MS = 5_000;
/** Expiry we state for the REFER's implicit subscription (s); the final NOTIFY always comes well before. */
const REFER_SUBSCRIPTION_EXPIRES_S = 60;

/**
 * Headers a Refer-To URI may not set on the new INVITE: the dialog and transaction ones, and the body's
 * (RFC 3261 19.1.5: a UA ignores these when it forms a request from a URI).
 */
const URI_HEADERS_IGNORED = new Set([
  'call-id', 'i', 'cseq', 'from', 'f', 'to', 't', 'via', 'v', 'contact', 'm', 'max-forwards', 'record-route', 'route',
  'content-length', 'l', 'content-type', 'c', 'body',
]);

/** What a REFER's Refer-To says, or why it is unusable. */
export type ParsedReferTo =
  | { ok: true; target: string; headers: Record<string, string> }
  | { ok: false; reason: string };

/**
 * Parse a Refer-To header value (`<sip:b@host?Replaces=...>;params` or a bare `sip:b@host`): the URI without its
 * header part, and the embedded headers URI-decoded. Only sip: and sips: URIs are usable.
 */
export function parseReferTo(value: string | undefined): ParsedReferTo {
  const raw = value?.trim();
  if (!raw) return { ok: false, reason: 'no Refer-To' };
  let uri: string;
  const angle = /<([^>]*)>/.exec(raw);
  if (angle) uri = angle[1]!.trim();
  else if (/^sips?:/i.test(raw)) uri = raw.split(/[\s;]/)[0]!;
  else uri = raw;
  if (!/^sips?:[^\s?]+$/i.test(uri.split('?')[0]!)) return { ok: false, reason: 'Refer-To is not a sip: or sips: URI' };
  const q = uri.indexOf('?');
  const target = q < 0 ? uri : uri.slice(0, q);
  const headers: Record<string, string> = {};
  if (q >= 0) {
    for (const part of uri.slice(q + 1).split('&')) {
      if (!part) continue;
      const eq = part.indexOf('=');
      let name: string;
      let headerValue: string;
      try {
        name = decodeURIComponent(eq < 0 ? part : part.slice(0, eq)).trim();
        headerValue = eq < 0 ? '' : decodeURIComponent(part.slice(eq + 1));
      } catch {
        return { ok: false, reason: 'Refer-To has a malformed header part' };
      }
      if (!/^[A-Za-z0-9!%'*+.^_`|~-]+$/.test(name) || /[\r\n]/.test(headerValue)) {
        return { ok: false, reason: 'Refer-To has a malformed header part' };
      }
      if (URI_HEADERS_IGNORED.has(name.toLowerCase())) continue;
      headers[name] = headerValue;
    }
  }
  return { ok: true, target, headers };
}

/** The sipfrag body of a transfer NOTIFY: the status line of the new target's response. */
export function sipfragBody(status: number, reason: string): string {
  return `SIP/2.0 ${status} ${reason.replace(/[\r\n]/g, ' ')}\r\n`;
}

export type SipResponseDirection = 'sent' | 'received';

/** What the SIP leg counts: every SIP response sent or received on INVITE transactions and OPTIONS (status code). */
export interface SipMetrics {
  sipResponse(direction: SipResponseDirection, status: number): void;
}

export interface SrfSipDialogOptions {
  dialog: SrfDialog;
  log: Logger;
  /** Session timer negotiated in the dialog-creating transaction, if any. */
  sessionTimer?: SessionTimer;
  /** Where the dialog counts the SIP responses of its transactions. */
  metrics?: SipMetrics;
  /** Where the PBX side of the dialog sent its INVITE or 200 OK from. */
  peerAddress?: string;
  /**
   * Sources besides `peerAddress` whose in-dialog requests (re-INVITE, UPDATE, INFO, REFER) are taken: the SIP ACL.
   * Others are answered 403 (drachtio routes in-dialog requests by Call-ID and tags alone, whoever sends them).
   * Default: any source.
   */
  sourceAllowed?: (address: string) => boolean;
}

/** `o=` session id and version: equal in two offers means "nothing changed" (a session refresh). */
function originKey(sdp: string): string | undefined {
  const m = /^o=\S+ (\S+) (\S+) /m.exec(sdp);
  return m ? `${m[1]} ${m[2]}` : undefined;
}

function reasonHeader(status: number, text: string): string {
  return `SIP;cause=${status};text="${text.replace(/["\\\r\n]/g, ' ')}"`;
}

export class SrfSipDialog extends TypedEmitter<SipDialogEvents> implements SipDialog {
  readonly id: string;
  readonly peerAddress: string | undefined;
  readonly #sourceAllowed: ((address: string) => boolean) | undefined;
  readonly #dialog: SrfDialog;
  readonly #log: Logger;
  readonly #metrics: SipMetrics | undefined;
  #ended = false;
  #endPromise: Promise<void> | undefined;
  #reinviteHandler: ((offer: string) => string) | undefined;
  #transferHandler: ((request: TransferRequest) => void) | undefined;
  /** The last NOTIFY sent or queued: each waits for the one before, so the transferor sees them in order. */
  #notifyChain: Promise<void> = Promise.resolve();
  #remoteSdp: string;
  #localSdp: string;
  #sessionTimer: SessionTimer | undefined;
  #sessionTimeout: NodeJS.Timeout | undefined;
  /** The last INFO sent or queued: each waits for the one before (order kept, one transaction at a time). */
  #infoChain: Promise<void> = Promise.resolve();
  #infoQueued = 0;

  constructor(options: SrfSipDialogOptions) {
    super();
    this.#dialog = options.dialog;
    this.id = options.dialog.id;
    this.peerAddress = options.peerAddress;
    this.#sourceAllowed = options.sourceAllowed;
    this.#log = options.log.child({ sipDialogId: this.id });
    this.#metrics = options.metrics;
    this.#remoteSdp = options.dialog.remote.sdp ?? '';
    this.#localSdp = options.dialog.local.sdp ?? '';
    this.#sessionTimer = options.sessionTimer;

    const dialog = this.#dialog;
    dialog.on('destroy', () => this.#onRemoteBye());
    // No 'hold'/'unhold'/'refresh' listeners: with them srf would answer re-INVITEs itself (wire quirk 9).
    dialog.on('modify', (req: SrfRequest, res: SrfResponse) => this.#fromPeer(req, res) && this.#onReinvite(req, res));
    dialog.on('update', (req: SrfRequest, res: SrfResponse) => this.#fromPeer(req, res) && this.#onReinvite(req, res));
    dialog.on('info', (req: SrfRequest, res: SrfResponse) => this.#fromPeer(req, res) && this.#onInfo(req, res));
    dialog.on('refer', (req: SrfRequest, res: SrfResponse) => this.#fromPeer(req, res) && this.#onRefer(req, res));
    this.#armSessionTimer();
  }

  get ended(): boolean {
    return this.#ended;
  }

  /** The session timer in force, if any (for logs and tests). */
  get sessionTimer(): SessionTimer | undefined {
    return this.#sessionTimer;
  }

  setReinviteHandler(handler: (offer: string) => string): void {
    this.#reinviteHandler = handler;
  }

  setTransferHandler(handler: (request: TransferRequest) => void): void {
    this.#transferHandler = handler;
  }

  sendDtmf(event: DtmfEvent): Promise<void> {
    if (this.#ended) return Promise.reject(new Error('dialog ended'));
    if (this.#infoQueued >= MAX_QUEUED_INFO) return Promise.reject(new Error(`more than ${MAX_QUEUED_INFO} INFOs waiting`));
    this.#infoQueued++;
    const send = async (): Promise<void> => {
      try {
        if (this.#ended) throw new Error('dialog ended');
        const res = await this.#dialog.request({
          method: 'INFO',
          headers: { 'Content-Type': 'application/dtmf-relay' },
          body: dtmfRelayBody(event),
        });
        this.#metrics?.sipResponse('received', res.status);
        if (res.status < 200 || res.status >= 300) throw new Error(`INFO answered ${res.status}`);
        this.#log.debug({ digit: event.digit, durationMs: event.durationMs }, 'DTMF sent by INFO');
      } finally {
        this.#infoQueued--;
      }
    };
    const result = this.#infoChain.then(send);
    // The chain only keeps INFOs in order; the caller gets this one's failure through `result`.
    this.#infoChain = result.catch(() => undefined);
    return result;
  }

  end(): Promise<void> {
    if (this.#endPromise) return this.#endPromise;
    if (this.#ended) return Promise.resolve();
    this.#ended = true;
    this.#clearSessionTimer();
    this.#log.debug('sending BYE');
    const bye = this.#dialog.destroy().then(
      () => undefined,
      (err: unknown) => this.#log.warn({ err }, 'BYE failed'),
    );
    this.#endPromise = this.#withDeadline(bye, BYE_DEADLINE_MS, 'no response to BYE');
    return this.#endPromise;
  }

  /** `pending` (which never rejects), or after `ms` a warning `message` and resolved anyway. */
  #withDeadline(pending: Promise<void>, ms: number, message: string): Promise<void> {
    let deadline: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => {
      deadline = setTimeout(() => {
        this.#log.warn({ deadlineMs: ms }, message);
        resolve();
      }, ms);
    });
    return Promise.race([pending, timeout]).finally(() => clearTimeout(deadline));
  }

  #send(res: SrfResponse, status: number, opts?: { headers?: Record<string, string>; body?: string }): void {
    try {
      res.send(status, opts ?? {});
      this.#metrics?.sipResponse('sent', status);
    } catch (err) {
      this.#log.warn({ err, status }, 'sending response failed');
    }
  }

  #onRemoteBye(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#clearSessionTimer();
    this.#log.info('BYE from the PBX');
    this.safeEmit('bye');
  }

  /** Whether an in-dialog request comes from the dialog's peer or the ACL; answers 403 otherwise. */
  #fromPeer(req: SrfRequest, res: SrfResponse): boolean {
    const source = req.source_address;
    if (!this.#sourceAllowed || source === this.peerAddress || this.#sourceAllowed(source)) return true;
    this.#log.warn({ method: req.method, source, peer: this.peerAddress }, 'in-dialog request from a source that is not the dialog\'s peer refused');
    this.#send(res, 403, { headers: { Reason: reasonHeader(403, 'source not allowed') } });
    return false;
  }

  #onReinvite(req: SrfRequest, res: SrfResponse): void {
    const method = req.method;
    const offer = req.body ?? '';
    const decision = decideAsUas({
      sessionExpires: req.get('Session-Expires') ?? req.get('x'),
      minSe: req.get('Min-SE'),
      supported: req.get('Supported') ?? req.get('k'),
    });
    if (decision.kind === 'too_small') {
      this.#send(res, 422, { headers: { 'Min-SE': String(decision.minSe) } });
      return;
    }
    const timerHeaders = decision.kind === 'timer' ? decision.responseHeaders : {};
    if (decision.kind === 'timer') this.#sessionTimer = decision.timer;
    this.#armSessionTimer();

    const isRefresh = offer.trim() === '' || (originKey(offer) !== undefined && originKey(offer) === originKey(this.#remoteSdp));
    if (isRefresh) {
      this.#log.debug({ method }, 'session refresh');
      // An UPDATE without SDP is answered without SDP; a re-INVITE always carries our current description.
      const withBody = method === 'INVITE' || offer.trim() !== '';
      this.#send(res, 200, {
        headers: withBody
          ? { ...timerHeaders, 'Content-Type': 'application/sdp', Contact: this.#dialog.local.contact }
          : timerHeaders,
        body: withBody ? this.#localSdp : undefined,
      });
      return;
    }

    const handler = this.#reinviteHandler;
    let answer: string;
    try {
      if (!handler) throw new Error('no re-INVITE handler');
      answer = handler(offer);
    } catch (err) {
      this.#log.warn({ err, method }, 're-INVITE offer refused');
      this.#send(res, 488, { headers: { Reason: reasonHeader(488, (err as Error)?.message ?? 'offer not acceptable') } });
      return;
    }
    this.#remoteSdp = offer;
    this.#localSdp = answer;
    this.#dialog.local.sdp = answer;
    this.#log.info({ method }, 'remote offer answered');
    this.#send(res, 200, {
      headers: { ...timerHeaders, 'Content-Type': 'application/sdp', Contact: this.#dialog.local.contact },
      body: answer,
    });
  }

  #onInfo(req: SrfRequest, res: SrfResponse): void {
    const contentType = req.get('Content-Type') ?? req.get('c');
    let event;
    try {
      event = parseDtmfInfo(contentType, req.body ?? '');
    } catch (err) {
      this.#log.warn({ err, contentType }, 'malformed DTMF INFO');
      this.#send(res, 400);
      return;
    }
    this.#send(res, 200);
    if (event) {
      this.#log.debug({ digit: event.digit, durationMs: event.durationMs }, 'DTMF by INFO');
      this.safeEmit('dtmf', event);
    } else {
      this.#log.debug({ contentType }, 'INFO ignored');
    }
  }

  #onRefer(req: SrfRequest, res: SrfResponse): void {
    const handler = this.#transferHandler;
    if (!handler) {
      this.#send(res, 501);
      return;
    }
    const referTo = parseReferTo(req.get('Refer-To') ?? req.get('r'));
    if (!referTo.ok) {
      this.#log.warn({ referTo: req.get('Refer-To') ?? req.get('r'), reason: referTo.reason }, 'REFER refused');
      this.#send(res, 400, { headers: { Reason: reasonHeader(400, referTo.reason) } });
      return;
    }
    let answered = false;
    // RFC 4488: the transferor may ask for no implicit subscription; then it gets no NOTIFY at all.
    const noSubscription = /^\s*false\s*$/i.test(req.get('Refer-Sub') ?? '');
    const request: TransferRequest = {
      target: referTo.target,
      headers: referTo.headers,
      referredBy: req.get('Referred-By') ?? req.get('b'),
      accept: () => {
        if (answered) return;
        answered = true;
        if (noSubscription) {
          this.#send(res, 202, { headers: { 'Refer-Sub': 'false' } });
          return;
        }
        this.#send(res, 202);
        void this.#notify('active', sipfragBody(100, 'Trying'));
      },
      reject: (status, reason) => {
        if (answered) return;
        answered = true;
        this.#send(res, status, { headers: { Reason: reasonHeader(status, reason) } });
      },
      notifyFinal: (status, reason) =>
        noSubscription ? Promise.resolve() : this.#notify('terminated', sipfragBody(status, reason)),
    };
    try {
      handler(request);
    } catch (err) {
      this.#log.warn({ err }, 'REFER handler failed');
      request.reject(500, 'transfer failed');
    }
  }

  /** A NOTIFY of the REFER's implicit subscription, after the ones before it; never rejects. */
  #notify(state: 'active' | 'terminated', body: string): Promise<void> {
    const send = async (): Promise<void> => {
      if (this.#ended) {
        this.#log.debug({ state }, 'NOTIFY not sent: the dialog has ended');
        return;
      }
      const request = this.#dialog
        .request({
          method: 'NOTIFY',
          headers: {
            Event: 'refer',
            'Subscription-State': state === 'active' ? `active;expires=${REFER_SUBSCRIPTION_EXPIRES_S}` : 'terminated;reason=noresource',
            'Content-Type': 'message/sipfrag;version=2.0',
          },
          body: body,
        })
        .then(
          (res) => {
            this.#metrics?.sipResponse('received', res.status);
            this.#log.debug({ state, status: res.status, sipfrag: body.trim() }, 'NOTIFY answered');
          },
          (err: unknown) => this.#log.warn({ err, state }, 'NOTIFY failed'),
        );
      await this.#withDeadline(request, NOTIFY_DEADLINE_MS, 'no response to NOTIFY');
    };
    const result = this.#notifyChain.then(send);
    this.#notifyChain = result;
    return result;
  }

  #clearSessionTimer(): void {
    if (this.#sessionTimeout) clearTimeout(this.#sessionTimeout);
    this.#sessionTimeout = undefined;
  }

  /** (Re)start the session timer after the dialog was created or refreshed. */
  #armSessionTimer(): void {
    this.#clearSessionTimer();
    const timer = this.#sessionTimer;
    if (!timer || this.#ended) return;
    if (timer.refresher === 'them') {
      this.#sessionTimeout = setTimeout(() => {
        this.#log.warn({ expiresSec: timer.expiresSec }, 'session expired without refresh: ending the call');
        void this.end();
        this.safeEmit('bye');
      }, expiryDeadlineMs(timer.expiresSec));
    } else {
      this.#sessionTimeout = setTimeout(() => void this.#refresh(timer), (timer.expiresSec * 1000) / 2);
    }
  }

  /** We are the refresher: re-INVITE with our unchanged description. A failed refresh ends the call. */
  async #refresh(timer: SessionTimer): Promise<void> {
    if (this.#ended) return;
    try {
      this.#log.debug({ expiresSec: timer.expiresSec }, 'sending session refresh');
      const sdp = await this.#dialog.modify(this.#localSdp, {
        headers: {
          'Session-Expires': `${timer.expiresSec};refresher=uac`,
          Supported: 'timer',
          Contact: this.#dialog.local.contact,
        },
      });
      if (sdp) this.#remoteSdp = sdp;
      this.#armSessionTimer();
    } catch (err) {
      if (this.#ended) return;
      this.#log.warn({ err }, 'session refresh failed: ending the call');
      void this.end();
      this.safeEmit('bye');
    }
  }
}
