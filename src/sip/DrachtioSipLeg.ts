/**
 * The SIP leg: a drachtio-srf client of drachtio-server. Places INVITEs toward the PBX (targets in turn,
 * per-target timeout, CANCEL on abort) and receives INVITEs from it (ACL, digest auth, target PSID/page),
 * answers OPTIONS, and keeps the connection to drachtio-server up (srf reconnects with backoff).
 */
import type { Logger } from 'pino';
import type {
  OutboundCallOptions,
  OutboundCallResult,
  SipPort,
  SipPortEvents,
} from '../calls/ports.js';
import { InvalidStateError, SipError } from '../core/errors.js';
import { isNumericId } from '../core/ids.js';
import { TypedEmitter } from '../core/TypedEmitter.js';
import { createAcl, type Acl } from './acl.js';
import { DigestAuthenticator, type DigestCredentials } from './digest.js';
import { shouldTryNextTarget } from './routing.js';
import { PendingInvites } from './duplicateInvites.js';
import { decideAsUac, decideAsUas } from './sessionTimer.js';
import { SrfIncomingCall, sipReasonHeader } from './SrfIncomingCall.js';
import { SrfSipDialog, type SipMetrics } from './SrfSipDialog.js';
import { SrfConstructor, stopSrf } from './srfConnection.js';
import type { Srf, SrfDialog, SrfRequest, SrfResponse } from './srfTypes.js';

export type { SipMetrics, SipResponseDirection } from './SrfSipDialog.js';

/** What the SIP leg counts: the SIP responses (as its dialogs do), and whether drachtio-server is connected. */
export interface SipLegMetrics extends SipMetrics {
  drachtioConnection(connected: boolean): void;
}

export interface DrachtioSipLegOptions {
  /** drachtio-server admin address. */
  host: string;
  port: number;
  secret: string;
  /** CIDRs (IPv4 and IPv6) allowed to send INVITEs and OPTIONS. */
  acl: readonly string[];
  /** When set, INVITEs must pass digest auth (401 challenge). */
  digest?: DigestCredentials;
  /** Where business-initiated INVITEs name the person and the page. */
  target: { psidFrom: 'request_uri' | 'header'; psidHeader: string; pageHeader: string };
  /** User part of our From on INVITEs to the PBX (unless the call names one). */
  fromUser: string;
  log: Logger;
  /** Where the SIP leg counts what it does (the daemon passes its Metrics). */
  metrics?: SipLegMetrics;
  /** Longest wait between reconnect attempts to drachtio-server (ms). Default 5000. */
  reconnectMaxDelayMs?: number;
  /** After a CANCEL, how long to wait for the INVITE's final response before giving up on it (ms). Default 4000. */
  cancelGraceMs?: number;
}

/** Methods we answer, for Allow headers. */
export const ALLOWED_METHODS = 'INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE';
export const ACCEPTED_CONTENT = 'application/sdp, application/dtmf-relay, application/dtmf';

type SrfSipError = Error & { status?: number; reason?: string };

function toSipError(err: unknown): SipError {
  if (err instanceof SipError) return err;
  const e = err as SrfSipError;
  if (e && typeof e.status === 'number') return new SipError(e.status, e.reason ?? e.message, { cause: err });
  return new SipError(503, 'request to drachtio-server failed', { cause: err });
}

/** The user part of a SIP URI (`sip:123@host` -> `123`), percent-decoded. */
export function uriUser(uri: string): string | undefined {
  const m = /^sips?:([^@;?]+)@/i.exec(uri.trim().replace(/^<|>$/g, ''));
  if (!m) return undefined;
  try {
    return decodeURIComponent(m[1]!);
  } catch {
    return m[1];
  }
}

/** Host of the first SIP endpoint in drachtio's hostport list (`udp/127.0.0.1:5060,tcp/...`). */
function hostFromHostport(hostport: string | undefined): string | undefined {
  const first = hostport?.split(',')[0];
  const m = first ? /^[a-z]+\/(\[[^\]]+\]|[^:]+)(?::\d+)?$/i.exec(first.trim()) : null;
  return m?.[1];
}

export class DrachtioSipLeg extends TypedEmitter<SipPortEvents> implements SipPort {
  readonly #options: DrachtioSipLegOptions;
  readonly #log: Logger;
  readonly #srf: Srf;
  #acl: Acl;
  #digest: DigestAuthenticator | undefined;
  /** The SIP leg's metrics, given to its dialogs and incoming calls too; a failing metric is logged, never thrown. */
  readonly #metrics: SipMetrics;
  readonly #countConnection: (connected: boolean) => void;
  /** Fail functions of pending outbound attempts (connection lost, leg closed). */
  readonly #pending = new Set<(err: SipError) => void>();
  /** Incoming INVITEs not answered finally yet, by Call-ID. */
  readonly #pendingInvites: PendingInvites;
  /** Aborted by close(), so that waits on the leg end with it. */
  readonly #closing = new AbortController();
  #connected = false;
  #closed = false;
  #localHost: string | undefined;
  /** The credentials refusal was logged at error level since the last successful connection. */
  #refusedLogged = false;

  constructor(options: DrachtioSipLegOptions) {
    super();
    this.#options = options;
    this.#log = options.log.child({ component: 'sip' });
    this.#acl = createAcl(options.acl);
    this.#digest = options.digest ? new DigestAuthenticator({ credentials: options.digest }) : undefined;
    this.#pendingInvites = new PendingInvites(this.#log);
    const metrics = options.metrics;
    const count = (what: string, counted: (into: SipLegMetrics) => void): void => {
      try {
        if (metrics) counted(metrics);
      } catch (err) {
        this.#log.warn({ err }, `${what} metric failed`);
      }
    };
    this.#metrics = { sipResponse: (direction, status) => count('SIP response', (into) => into.sipResponse(direction, status)) };
    this.#countConnection = (connected) => count('drachtio connection', (into) => into.drachtioConnection(connected));
    this.#countConnection(false);

    const srf = new SrfConstructor();
    this.#srf = srf;
    srf.on('connect', (err: Error | null, hostport?: string) => this.#onConnect(err, hostport));
    srf.on('close', () => this.#setConnected(false));
    srf.on('error', (err: Error) => {
      if (!this.#closed) this.#log.warn({ err: { message: err.message, code: (err as NodeJS.ErrnoException).code } }, 'drachtio connection error');
    });
    srf.on('reconnecting', (info: { delay: number; attempt: number }) => {
      if (!this.#closed) this.#log.debug(info, 'reconnecting to drachtio-server');
    });
    srf.invite((req, res) => this.#onInvite(req, res));
    srf.options((req, res) => this.#onOptions(req, res));
    srf.connect({
      host: options.host,
      port: options.port,
      secret: options.secret,
      reconnect: { retryMaxDelay: options.reconnectMaxDelayMs ?? 5000 },
    });
    this.#log.info({ host: options.host, port: options.port }, 'connecting to drachtio-server');
  }

  /**
   * Replace the ACL and digest credentials (configuration reload): the next request is checked against the new
   * ones, including in-dialog requests of calls in progress. Throws ConfigError on a bad CIDR (nothing changes).
   */
  updateSecurity(security: { acl: readonly string[]; digest?: DigestCredentials }): void {
    const acl = createAcl(security.acl);
    this.#acl = acl;
    this.#digest = security.digest ? new DigestAuthenticator({ credentials: security.digest }) : undefined;
    this.#log.info({ acl: acl.blocks, digest: security.digest !== undefined }, 'SIP ACL and digest credentials applied');
  }

  get connected(): boolean {
    return this.#connected;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Resolves once connected (at once if already); rejects on `signal` or close. */
  async whenConnected(signal?: AbortSignal): Promise<void> {
    if (this.#closed) throw new InvalidStateError('SIP leg closed');
    if (this.#connected) return;
    const both = signal ? AbortSignal.any([signal, this.#closing.signal]) : this.#closing.signal;
    for (;;) {
      const [up] = await this.waitFor('connection', both).catch((err: unknown) => {
        throw this.#closed ? new InvalidStateError('SIP leg closed') : err;
      });
      if (up) return;
    }
  }

  /** Disconnect from drachtio-server and fail pending INVITEs with 503. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const err = new SipError(503, 'SIP leg closed');
    for (const fail of [...this.#pending]) fail(err);
    const wasConnected = this.#connected;
    this.#connected = false;
    this.#disconnectSrf(wasConnected);
    this.#log.info('SIP leg closed');
    this.#closing.abort();
    this.removeAllListeners();
  }

  #disconnectSrf(connected: boolean): void {
    stopSrf(this.#srf, connected, this.#log);
  }

  #onConnect(err: Error | null, hostport?: string): void {
    if (this.#closed) {
      // A connect attempt that was under way when we closed: drop it.
      if (!err) this.#disconnectSrf(true);
      return;
    }
    if (err) {
      // drachtio-server closes the connection after a wrong secret and srf reconnects at once, several times a
      // second: say it once at error level (again after a successful connection), the repeats at debug.
      if (!this.#refusedLogged) this.#log.error({ err: { message: err.message } }, 'drachtio-server refused our credentials');
      else this.#log.debug({ err: { message: err.message } }, 'drachtio-server refused our credentials again');
      this.#refusedLogged = true;
      return;
    }
    this.#refusedLogged = false;
    this.#localHost = hostFromHostport(hostport) ?? this.#localHost;
    this.#log.info({ hostport }, 'connected to drachtio-server');
    this.#setConnected(true);
  }

  #setConnected(up: boolean): void {
    if (this.#closed || this.#connected === up) return;
    this.#connected = up;
    this.#countConnection(up);
    if (!up) {
      this.#log.warn('connection to drachtio-server lost');
      const err = new SipError(503, 'connection to drachtio-server lost');
      for (const fail of [...this.#pending]) fail(err);
    }
    this.safeEmit('connection', up);
  }

  // -------------------------------------------------------------------------------------------------------------
  // Outbound
  // -------------------------------------------------------------------------------------------------------------

  async invite(options: OutboundCallOptions): Promise<OutboundCallResult> {
    if (this.#closed) throw new SipError(503, 'SIP leg closed');
    if (options.targets.length === 0) throw new SipError(404, 'no targets');
    const log = this.#log.child({ sipDirection: 'outbound' });
    let last: SipError | undefined;
    for (const [index, target] of options.targets.entries()) {
      if (options.signal.aborted) throw new SipError(487, 'Request Terminated');
      if (!this.#connected) throw new SipError(503, 'not connected to drachtio-server');
      try {
        return await this.#tryTarget(target, options, log.child({ target, attempt: index + 1 }));
      } catch (err) {
        last = toSipError(err);
        if (options.signal.aborted || last.status === 487) throw last;
        if (!shouldTryNextTarget(last.status) || this.#closed) {
          log.info({ target, status: last.status }, 'INVITE failed; not trying further targets');
          throw last;
        }
        log.info({ target, status: last.status, remaining: options.targets.length - index - 1 }, 'INVITE failed');
      }
    }
    throw last ?? new SipError(500, 'no target answered');
  }

  #fromHeader(from: OutboundCallOptions['from']): string {
    const user = from?.user ?? this.#options.fromUser;
    const host = this.#localHost ?? 'localhost';
    const uri = `<sip:${encodeURIComponent(user)}@${host}>`;
    const name = from?.displayName?.replace(/["\\\r\n]/g, '');
    return name ? `"${name}" ${uri}` : uri;
  }

  #tryTarget(target: string, options: OutboundCallOptions, log: Logger): Promise<OutboundCallResult> {
    const cancelGraceMs = this.#options.cancelGraceMs ?? 4000;
    return new Promise<OutboundCallResult>((resolve, reject) => {
      let sentRequest: SrfRequest | undefined;
      let cancelWith: SipError | undefined;
      let cancelSent = false;
      let settled = false;
      let graceTimer: NodeJS.Timeout | undefined;

      const cleanup = (): void => {
        clearTimeout(targetTimer);
        if (graceTimer) clearTimeout(graceTimer);
        options.signal.removeEventListener('abort', onAbort);
        this.#pending.delete(fail);
      };
      const settle = (fn: () => void): void => {
        if (settled) return;
        settled = true;
        cleanup();
        fn();
      };
      const fail = (err: SipError): void => settle(() => reject(err));

      const sendCancel = (): void => {
        if (!sentRequest || cancelSent) return;
        cancelSent = true;
        try {
          sentRequest.cancel((err) => {
            if (err) log.warn({ err }, 'CANCEL failed');
          });
        } catch (err) {
          log.warn({ err }, 'CANCEL failed');
        }
        // The final response (487) normally settles the attempt; do not wait for it forever.
        graceTimer = setTimeout(() => fail(cancelWith ?? new SipError(487, 'Request Terminated')), cancelGraceMs);
      };
      const cancel = (err: SipError): void => {
        if (settled || cancelWith) return;
        cancelWith = err;
        log.info({ status: err.status }, 'canceling INVITE');
        sendCancel();
      };

      const targetTimer = setTimeout(
        () => cancel(new SipError(408, 'Request Timeout (no answer from target)')),
        options.targetTimeoutMs,
      );
      const onAbort = (): void => cancel(new SipError(487, 'Request Terminated'));
      options.signal.addEventListener('abort', onAbort, { once: true });
      this.#pending.add(fail);

      const headers: Record<string, string> = { From: this.#fromHeader(options.from), ...options.headers };
      log.info('sending INVITE');
      let promise: Promise<SrfDialog>;
      try {
        promise = this.#srf.createUAC(
          target,
          { headers, localSdp: options.sdp },
          {
            cbRequest: (err, req) => {
              if (err || !req) return;
              sentRequest = req;
              if (cancelWith) sendCancel();
            },
            cbProvisional: (res) => {
              this.#metrics.sipResponse('received', res.status);
              if (res.status <= 100 || cancelWith || settled) return;
              const isSdp = /application\/sdp/i.test(res.get('Content-Type') ?? res.get('c') ?? '');
              const sdp = isSdp && res.body && res.body.trim() !== '' ? res.body : undefined;
              log.debug({ status: res.status, earlySdp: sdp !== undefined }, 'provisional response');
              try {
                options.onProgress?.(res.status, target, sdp);
              } catch (err) {
                log.warn({ err }, 'onProgress threw');
              }
            },
          },
        );
      } catch (err) {
        fail(toSipError(err));
        return;
      }
      promise.then(
        (dialog) => {
          this.#metrics.sipResponse('received', 200);
          if (settled || cancelWith) {
            // The 200 crossed our CANCEL (or we gave up waiting): the PBX has a call up, hang it up.
            log.info('200 OK after CANCEL: sending BYE');
            dialog.destroy().catch((err: unknown) => log.warn({ err }, 'BYE after late 200 failed'));
            fail(cancelWith ?? new SipError(487, 'Request Terminated'));
            return;
          }
          const sessionTimer = decideAsUac(dialog.res?.get?.('Session-Expires') ?? dialog.res?.get?.('x'));
          log.info({ sessionTimer }, 'INVITE answered');
          const sipDialog = new SrfSipDialog({
            dialog,
            log,
            sessionTimer,
            metrics: this.#metrics,
            peerAddress: (dialog.res as { source_address?: string } | undefined)?.source_address,
            sourceAllowed: (address) => this.#acl.allows(address),
          });
          settle(() => resolve({ dialog: sipDialog, sdp: dialog.remote.sdp, target, status: 200 }));
        },
        (err: unknown) => {
          const sipErr = toSipError(err);
          if (sipErr.cause === err && typeof (err as SrfSipError).status === 'number') {
            this.#metrics.sipResponse('received', sipErr.status);
          }
          fail(cancelWith ?? sipErr);
        },
      );
    });
  }

  // -------------------------------------------------------------------------------------------------------------
  // Inbound
  // -------------------------------------------------------------------------------------------------------------

  #respond(res: SrfResponse, status: number, headers?: Record<string, string>): void {
    try {
      res.send(status, headers ? { headers } : {});
      this.#metrics.sipResponse('sent', status);
    } catch (err) {
      this.#log.warn({ err, status }, 'sending response failed');
    }
  }

  #onOptions(req: SrfRequest, res: SrfResponse): void {
    if (!this.#acl.allows(req.source_address)) {
      this.#log.warn({ source: req.source_address }, 'OPTIONS from a source outside the ACL');
      this.#respond(res, 403, { Reason: sipReasonHeader(403, 'source not allowed') });
      return;
    }
    this.#respond(res, 200, { Allow: ALLOWED_METHODS, Accept: ACCEPTED_CONTENT });
  }

  #onInvite(req: SrfRequest, res: SrfResponse): void {
    const source = req.source_address;
    const sipCallId = req.get('Call-ID') ?? '';
    const log = this.#log.child({ sipDirection: 'inbound', sipCallId, source });

    if (!req.isNewInvite) {
      // A re-INVITE srf did not match to a dialog of ours (e.g. from before a restart).
      this.#respond(res, 481);
      return;
    }
    if (!this.#acl.allows(source)) {
      log.warn('INVITE from a source outside the ACL');
      this.#respond(res, 403, { Reason: sipReasonHeader(403, 'source not allowed') });
      return;
    }
    if (this.#pendingInvites.get(sipCallId)) {
      log.warn('INVITE with the Call-ID of an INVITE in progress refused');
      this.#respond(res, 482, { Reason: sipReasonHeader(482, 'a call with this Call-ID is in progress') });
      this.#pendingInvites.restore(sipCallId);
      return;
    }
    if (this.#digest) {
      const verdict = this.#digest.verify(req.get('Authorization'), 'INVITE', req.uri);
      if (!verdict.ok) {
        if (verdict.reason === 'missing') log.debug('challenging INVITE');
        else log.warn({ reason: verdict.reason, stale: verdict.stale }, 'INVITE failed digest auth');
        this.#respond(res, 401, { 'WWW-Authenticate': this.#digest.challenge(verdict.stale) });
        return;
      }
    }
    if (!req.body || req.body.trim() === '') {
      log.warn('INVITE without SDP (late offer is not supported)');
      this.#respond(res, 488, { Reason: sipReasonHeader(488, 'late offer (INVITE without SDP) not supported') });
      return;
    }
    const timer = decideAsUas({
      sessionExpires: req.get('Session-Expires') ?? req.get('x'),
      minSe: req.get('Min-SE'),
      supported: req.get('Supported') ?? req.get('k'),
    });
    if (timer.kind === 'too_small') {
      this.#respond(res, 422, { 'Min-SE': String(timer.minSe) });
      return;
    }
    if (this.listenerCount('invite') === 0) {
      log.warn('INVITE with nobody to take it');
      this.#respond(res, 503, { Reason: sipReasonHeader(503, 'not ready') });
      return;
    }
    const { psidFrom, psidHeader, pageHeader } = this.#options.target;
    const psid = psidFrom === 'request_uri' ? uriUser(req.uri) : req.get(psidHeader)?.trim() || undefined;
    const pageId = req.get(pageHeader)?.trim() || undefined;
    // Both go into Graph requests and, for the PSID, SIP headers of later requests: only Meta's numeric ids pass. A
    // page id of digits that is not ours is the controller's 404.
    const malformed =
      psid !== undefined && !isNumericId(psid)
        ? `malformed PSID in the ${psidFrom === 'request_uri' ? 'Request-URI user' : psidHeader} (Meta's ids are digits)`
        : pageId !== undefined && !/^\d+$/.test(pageId)
          ? `malformed page id in ${pageHeader} (Meta's ids are digits)`
          : undefined;
    if (malformed) {
      log.warn(`INVITE refused: ${malformed}`);
      this.#respond(res, 400, { Reason: sipReasonHeader(400, malformed) });
      return;
    }
    log.info({ pageId }, 'INVITE from the PBX');
    this.#pendingInvites.track(sipCallId, req, res);
    const call = new SrfIncomingCall({
      srf: this.#srf,
      req,
      res,
      psid,
      pageId,
      log,
      sessionTimer: timer.kind === 'timer' ? timer : undefined,
      metrics: this.#metrics,
      sourceAllowed: (address) => this.#acl.allows(address),
    });
    this.safeEmit('invite', call);
  }
}
