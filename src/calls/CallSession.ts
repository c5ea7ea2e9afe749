/**
 * One call: its state machine, its two legs, its media, and the single place where it is torn down.
 *
 * States and the transitions allowed between them are the table below; every transition is logged with the call id.
 * Both flows are written as one linear async procedure each (`runUserInitiated`, `runBusinessInitiated`); outside
 * events (webhooks, SIP BYE/CANCEL, leg or media failure, deadlines) end the call through `end()`, which aborts the
 * procedure's pending step. A transfer (REFER from the PBX) is a third procedure (`#runTransfer`), run from `active`
 * through `transferring` and back: the Messenger leg is untouched, only the PBX dialog and media target change.
 */
import type { Logger } from 'pino';
import { GraphError, SipError } from '../core/errors.js';
import { REFUSALS, reasonOf, refusalForGraphError, refusalForMediaError, type SipRefusal } from './outcomes.js';
import { checkTransferTarget, defaultTransferHosts } from './transferPolicy.js';
import type {
  CallDirection,
  CallMedia,
  CallMediaStats,
  CallMetricsSink,
  CallOutcome,
  CallRoute,
  CallStatusEvent,
  ConnectEvent,
  DtmfEvent,
  GraphPort,
  IncomingCall,
  MediaEngine,
  MediaUpdateEvent,
  MessengerLeg,
  MessengerLegFactory,
  OutboundCallResult,
  SipDialog,
  SipPort,
  TerminateEvent,
  TransferRequest,
  TransferResult,
} from './ports.js';

export type CallState =
  | 'new'
  | 'inviting' // user_initiated: INVITE sent to the PBX
  | 'pbx_ringing' // user_initiated: PBX sent 18x
  | 'accepting' // user_initiated: PBX answered (or answer mode immediate), Graph accept under way
  | 'permission' // business_initiated: permission check under way
  | 'connecting' // business_initiated: Graph connect under way / sent
  | 'meta_ringing' // business_initiated: Meta said ringing; 180 sent to the PBX
  | 'media' // both legs answered; waiting for ICE/DTLS toward Meta
  | 'active' // audio bridged
  | 'transferring' // audio bridged; a REFER from the PBX is being carried out (INVITE to the new target)
  | 'ending'
  | 'ended';

/** state -> states it may move to. `ending` is reachable from every live state. */
export const TRANSITIONS: Readonly<Record<CallState, readonly CallState[]>> = {
  new: ['inviting', 'accepting', 'permission', 'connecting', 'ending'],
  inviting: ['pbx_ringing', 'accepting', 'ending'],
  pbx_ringing: ['accepting', 'ending'],
  accepting: ['inviting', 'pbx_ringing', 'media', 'ending'],
  permission: ['connecting', 'ending'],
  connecting: ['meta_ringing', 'media', 'ending'],
  meta_ringing: ['media', 'ending'],
  media: ['active', 'ending'],
  active: ['transferring', 'ending'],
  transferring: ['active', 'ending'],
  ending: ['ended'],
  ended: [],
};

export interface CallSessionDeps {
  sip: SipPort;
  media: MediaEngine;
  legs: MessengerLegFactory;
  graph: GraphPort;
  metrics?: CallMetricsSink;
  log: Logger;
  options: CallSessionOptions;
}

export interface CallSessionOptions {
  /** user_initiated: deadline from the connect webhook to Graph accept (ms); Meta's own limit is 60 s. */
  acceptDeadlineMs: number;
  /** business_initiated: deadline from Graph connect to Meta's `accepted` (ms). */
  connectTimeoutMs: number;
  /** Deadline for ICE+DTLS toward Meta once both sides answered (ms). */
  mediaConnectTimeoutMs: number;
  /** Deadline for a single Graph request (ms). */
  graphTimeoutMs: number;
  /** Caller-context header names added to INVITEs toward the PBX. */
  headers: { psid: string; pageId: string; callId: string };
  /** From user part of INVITEs toward the PBX. */
  fromUser: string;
  permissionCheck: boolean;
  requestPermissionOnDenied: boolean;
  /**
   * Digits from the person also go to the PBX as SIP INFO: 'auto' (default) when the PBX leg negotiated no
   * telephone-event (RTP cannot carry them as events), true for every digit, false never.
   */
  dtmfSipInfo?: boolean | 'auto';
  /** Transfers by REFER from the PBX. Absent: allowed to any host, with the default timeout. */
  transfer?: TransferOptions;
}

export interface TransferOptions {
  /** false: a REFER is answered 403. */
  enabled: boolean;
  /** Hosts (name or address, any port) a Refer-To may point at; absent: the hosts of the route's targets and the PBX the dialog is with. */
  allowedHosts?: readonly string[];
  /** How long the transfer target may ring when the call's route names no timeout (business-initiated), ms. */
  targetTimeoutMs: number;
}

/** Ring time of a transfer target when neither the route nor the options say (ms). */
const DEFAULT_TRANSFER_TIMEOUT_MS = 30_000;

/** A transfer under way. */
interface Transfer {
  /** The dialog the REFER came on (the transferor's). */
  from: SipDialog;
  request: TransferRequest;
  startedAt: number;
  /** Settles when the transfer is over, whatever its outcome (awaited by the teardown). */
  done?: Promise<void>;
}

interface Ending {
  outcome: CallOutcome;
  reason: string;
  /**
   * What to tell Meta. 'auto': once any accept/connect in flight has settled, terminate an accepted call, reject an
   * unaccepted consumer-initiated one, nothing otherwise.
   */
  meta: 'reject' | 'terminate' | 'none' | 'auto';
  /** What to tell the PBX (a refusal only applies before the dialog exists). */
  sip: 'bye' | 'cancel' | 'refuse' | 'none';
  refusal?: SipRefusal;
}

/** Thrown inside a flow when `end()` aborted it; not an error of its own. */
class CallEnded extends Error {}

/** Set-up step durations for the call summary, to the microsecond. */
function roundedSteps(steps: { webhookToInviteMs?: number; pbxAnswerToAcceptMs?: number }): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [key, ms] of Object.entries(steps)) if (ms !== undefined) out[key] = Math.round(ms * 1000) / 1000;
  return out;
}

export class CallSession {
  readonly id: string;
  readonly direction: CallDirection;
  readonly pageId: string;
  readonly psid: string;
  readonly psidLabel: string;
  readonly log: Logger;
  readonly startedAt = Date.now();
  metaCallId: string | undefined;
  route: CallRoute | undefined;
  state: CallState = 'new';
  /** Resolves once the call is fully ended and released. */
  readonly done: Promise<void>;

  readonly #deps: CallSessionDeps;
  readonly #abort = new AbortController();
  #resolveDone!: () => void;
  #leg: MessengerLeg | undefined;
  #media: CallMedia | undefined;
  #dialog: SipDialog | undefined;
  #incoming: IncomingCall | undefined;
  #ending: Ending | undefined;
  #answeredAt: number | undefined;
  #sipStatus: number | undefined;
  /** Consumer-initiated set-up steps in ms (sub-millisecond): connect received -> INVITE, 200 OK -> accept. */
  #setupTiming: { webhookToInviteMs?: number; pbxAnswerToAcceptMs?: number } = {};
  #metaStatus: string | undefined;
  #mediaVersion = -1;
  /** Graph accept/connect has succeeded: Meta knows the call, so ending it needs terminate, not reject. */
  #metaAccepted = false;
  /** The accept/connect request in flight, if any. */
  #metaPending: Promise<void> | undefined;
  #statusWaiters = new Map<string, () => void>();
  #remoteAnswerApplied = false;
  #onRemoteAnswer: (() => void) | undefined;
  readonly #timers = new Set<NodeJS.Timeout>();
  #lastStats: CallMediaStats | undefined;
  #mediaStartedReported = false;
  #earlyMediaStarted = false;
  #transfer: Transfer | undefined;
  /** PBX dialogs a transfer replaced, until their BYE went out. */
  readonly #formerDialogs = new Set<SipDialog>();
  /** Transfers of this call, for the summary line. */
  readonly #transfers = { succeeded: 0, failed: 0, refused: 0, canceled: 0, lastTarget: undefined as string | undefined };

  constructor(init: {
    id: string;
    direction: CallDirection;
    pageId: string;
    psid: string;
    /** The PSID as logs show it (hashed when configured). */
    psidLabel?: string;
    metaCallId?: string;
    deps: CallSessionDeps;
  }) {
    this.id = init.id;
    this.direction = init.direction;
    this.pageId = init.pageId;
    this.psid = init.psid;
    this.psidLabel = init.psidLabel ?? init.psid;
    this.metaCallId = init.metaCallId;
    this.#deps = init.deps;
    this.log = init.deps.log;
    this.done = new Promise((resolve) => (this.#resolveDone = resolve));
  }

  get ended(): boolean {
    return this.state === 'ending' || this.state === 'ended';
  }

  // ------------------------------------------------------------------------------------------------------------
  // Consumer-initiated: connect webhook -> offer -> INVITE -> PBX 200 -> Graph accept -> Meta answer -> bridged
  // ------------------------------------------------------------------------------------------------------------

  async runUserInitiated(event: ConnectEvent, route: CallRoute, receivedAt: number): Promise<void> {
    this.route = route;
    const { sip, graph, metrics } = this.#deps;
    const opts = this.#deps.options;
    const deadline = receivedAt + opts.acceptDeadlineMs;
    // receivedAt has millisecond resolution; step durations use the monotonic clock from here on.
    const receivedPerf = performance.now() - Math.max(0, Date.now() - receivedAt);
    try {
      // The Messenger offer (ICE gathering, certificate) and the PBX-side media (mediasoup round trips) are
      // independent: build them at the same time.
      let offering: Promise<string> | undefined;
      const { leg, media } = await this.#setUpMedia(route, (created) => {
        offering = created.createOffer();
        offering.catch(() => undefined);
      });
      const offer = await this.#step(offering!);
      const pbxOffer = media.createPbxOffer();

      if (route.answerMode === 'immediate') {
        this.#transition('accepting', 'answer mode immediate');
        await this.#accept(offer);
        // Meta drops an accepted call that receives nothing (~20 s): silence until the PBX's (early) media flows.
        media.startSendingToMessenger();
      }

      this.#transition('inviting', `to ${route.targets.join(', ')}`);
      const remainingMs = Math.max(1, deadline - Date.now());
      const inviteAbort = AbortSignal.any([this.#abort.signal, this.#deadline(remainingMs)]);
      this.#setupTiming.webhookToInviteMs = performance.now() - receivedPerf;
      metrics?.webhookToInvite(this.#setupTiming.webhookToInviteMs / 1000);
      let result;
      /** The SDP of the PBX's last 18x that carried one (early media; the 200 OK may then carry none). */
      let earlySdp: string | undefined;
      try {
        result = await sip.invite({
          targets: route.targets,
          headers: {
            [opts.headers.psid]: this.psid,
            [opts.headers.pageId]: this.pageId,
            [opts.headers.callId]: event.callId,
          },
          from: { user: opts.fromUser },
          sdp: pbxOffer,
          targetTimeoutMs: route.targetTimeoutMs,
          signal: inviteAbort,
          onProgress: (status, target, sdp) => {
            this.log.info({ status, target, earlyMedia: sdp !== undefined }, 'PBX is ringing');
            if (this.state === 'inviting') this.#transition('pbx_ringing', `${status} from ${target}`);
            if (sdp !== undefined) earlySdp = this.#onEarlyMedia(media, sdp, target) ?? earlySdp;
          },
        });
      } catch (err) {
        if (this.ended) throw new CallEnded();
        const timedOut = inviteAbort.aborted && !this.#abort.signal.aborted;
        const status = err instanceof SipError ? err.status : undefined;
        this.#sipStatus = status;
        this.end({
          outcome: timedOut ? 'pbx_timeout' : 'rejected_pbx',
          reason: timedOut ? `PBX did not answer within ${opts.acceptDeadlineMs} ms` : `PBX refused: ${reasonOf(err)}`,
          meta: 'auto',
          sip: 'none',
        });
        return;
      }
      if (this.ended) {
        // Ended while the 200 OK was on its way: the dialog exists now, so it needs its BYE.
        await result.dialog.end().catch((err: unknown) => this.log.warn({ err }, 'BYE failed'));
        throw new CallEnded();
      }
      this.#sipStatus = result.status;
      this.#adoptDialog(result.dialog);
      this.log.info({ target: result.target, status: result.status }, 'PBX answered');
      const pbxAnsweredAt = performance.now();
      try {
        // A 200 OK after early media repeats the answer, or (with 100rel) carries none: the 18x's then stands.
        media.applyPbxAnswer(result.sdp.trim() !== '' ? result.sdp : (earlySdp ?? result.sdp));
      } catch (err) {
        this.end({ outcome: 'media_failed', reason: reasonOf(err), meta: 'reject', sip: 'bye' });
        return;
      }

      if (!this.#metaAccepted) {
        this.#transition('accepting', 'PBX answered');
        this.#setupTiming.pbxAnswerToAcceptMs = performance.now() - pbxAnsweredAt;
        metrics?.pbxAnswerToAccept(this.#setupTiming.pbxAnswerToAcceptMs / 1000);
        await this.#accept(offer);
      }
      media.start();
      this.#reportMediaStarted(media);
      await this.#connectMedia(leg);
    } catch (err) {
      this.#failFromFlow(err);
    }
  }

  /**
   * Early media (the SDP of a 183/180 from the PBX): once Meta has accepted (answer mode immediate), the person hears
   * the PBX's ringback or announcements before it answers; before that the SDP is only kept for the 200 OK. Returns
   * the SDP when it was usable; an unusable one is logged and ignored (the 200 OK's decides).
   */
  #onEarlyMedia(media: CallMedia, sdp: string, target: string): string | undefined {
    if (!this.#metaAccepted || this.ended) return sdp;
    try {
      media.applyPbxAnswer(sdp);
      media.start();
    } catch (err) {
      this.log.warn({ err, target }, 'early media SDP from the PBX not usable: ignored');
      return undefined;
    }
    if (!this.#earlyMediaStarted) {
      this.#earlyMediaStarted = true;
      this.log.info({ target, codec: media.pbxCodec }, 'early media from the PBX bridged to Meta');
      this.#reportMediaStarted(media);
    }
    return sdp;
  }

  async #accept(offer: string): Promise<void> {
    const { graph } = this.#deps;
    const leg = this.#leg!;
    let accepted;
    try {
      const pending = graph.accept(this.pageId, this.metaCallId!, offer, this.#graphSignal());
      this.#metaPending = pending.then(
        () => {
          this.#metaAccepted = true;
        },
        () => undefined,
      );
      accepted = await this.#step(pending);
    } catch (err) {
      if (err instanceof CallEnded) throw err;
      this.#metaStatus = err instanceof GraphError ? `accept failed: ${err.code}` : 'accept failed';
      this.end({
        outcome: 'meta_error',
        reason: `Graph accept failed: ${reasonOf(err)}`,
        meta: 'reject',
        sip: this.#dialog ? 'bye' : 'cancel',
      });
      throw new CallEnded();
    }
    this.#metaAccepted = true;
    this.#metaStatus = 'accepted';
    this.#answeredAt ??= Date.now();
    await this.#step(leg.applyAnswer(accepted.sdpAnswer));
    if (accepted.sdpRenegotiation) {
      this.log.info('applying the renegotiation offer that came with accept');
      await this.#step(leg.applyOffer(accepted.sdpRenegotiation));
    }
    this.#remoteAnswerApplied = true;
  }

  // ------------------------------------------------------------------------------------------------------------
  // Business-initiated: INVITE from the PBX -> permission -> Graph connect -> ringing (180) -> accepted (200 OK)
  // ------------------------------------------------------------------------------------------------------------

  async runBusinessInitiated(incoming: IncomingCall, bindMetaCallId: (id: string) => void): Promise<void> {
    this.#incoming = incoming;
    const { graph } = this.#deps;
    const opts = this.#deps.options;
    incoming.on('cancel', () => {
      this.end({
        outcome: 'canceled',
        reason: 'PBX sent CANCEL',
        meta: 'auto',
        sip: 'none',
      });
    });
    try {
      if (opts.permissionCheck) {
        this.#transition('permission', `psid ${this.psid}`);
        let permission;
        try {
          permission = await this.#step(graph.checkPermission(this.pageId, this.psid, this.#graphSignal()));
        } catch (err) {
          if (err instanceof CallEnded) throw err;
          const refusal = refusalForGraphError(err);
          this.end({ outcome: refusal.outcome, reason: `permission check failed: ${reasonOf(err)}`, meta: 'none', sip: 'refuse', refusal });
          return;
        }
        if (!permission.canCall) {
          if (opts.requestPermissionOnDenied) {
            void graph
              .requestPermission(this.pageId, this.psid, this.#graphSignal())
              .then(() => this.log.info('sent a call permission request to the person'))
              .catch((err: unknown) => this.log.warn({ err }, 'call permission request failed'));
          }
          this.end({
            outcome: 'rejected_no_permission',
            reason: 'the person has not granted call permission',
            meta: 'none',
            sip: 'refuse',
            refusal: REFUSALS.noPermission,
          });
          return;
        }
      }

      const { leg, media } = await this.#setUpMedia(this.route!);
      let pbxAnswer: string;
      try {
        pbxAnswer = media.answerPbxOffer(incoming.sdp);
      } catch (err) {
        const refusal = refusalForMediaError(err);
        this.end({ outcome: refusal.outcome, reason: reasonOf(err), meta: 'none', sip: 'refuse', refusal });
        return;
      }
      const offer = await this.#step(leg.createOffer());

      this.#transition('connecting', 'Graph connect');
      let connected;
      try {
        const pending = graph.connect(this.pageId, this.psid, offer, this.#graphSignal());
        this.#metaPending = pending.then(
          (result) => {
            // Recorded even if the call ended meanwhile (CANCEL): Meta's call then needs its terminate.
            this.metaCallId = result.callId;
            this.#metaAccepted = true;
          },
          () => undefined,
        );
        connected = await this.#step(pending);
      } catch (err) {
        if (err instanceof CallEnded) throw err;
        const refusal = refusalForGraphError(err);
        this.#metaStatus = err instanceof GraphError ? `connect failed: ${err.code}` : 'connect failed';
        this.end({ outcome: refusal.outcome, reason: `Graph connect failed: ${reasonOf(err)}`, meta: 'none', sip: 'refuse', refusal });
        return;
      }
      this.metaCallId = connected.callId;
      this.#metaAccepted = true;
      this.#metaStatus = 'connected';
      this.log.info({ metaCallId: connected.callId }, 'Meta call created');
      bindMetaCallId(connected.callId);
      if (connected.sdpAnswer) {
        await this.#step(leg.applyAnswer(connected.sdpAnswer));
        this.#remoteAnswerApplied = true;
      }

      await this.#step(this.#waitStatus('accepted', opts.connectTimeoutMs)).catch((err: unknown) => {
        if (err instanceof CallEnded) throw err;
        this.end({
          outcome: 'not_answered',
          reason: `the person did not answer within ${opts.connectTimeoutMs} ms`,
          meta: 'terminate',
          sip: 'refuse',
          refusal: REFUSALS.metaTimeout,
        });
        throw new CallEnded();
      });
      this.#metaStatus = 'accepted';
      this.#answeredAt = Date.now();
      if (!this.#remoteAnswerApplied) {
        await this.#step(this.#waitRemoteAnswer(opts.mediaConnectTimeoutMs));
      }
      const dialog = await this.#step(incoming.answer(pbxAnswer));
      this.#sipStatus = 200;
      this.#adoptDialog(dialog);
      media.start();
      this.#reportMediaStarted(media);
      await this.#connectMedia(leg);
    } catch (err) {
      this.#failFromFlow(err);
    }
  }

  // ------------------------------------------------------------------------------------------------------------
  // Events routed in by the controller
  // ------------------------------------------------------------------------------------------------------------

  onCallStatus(event: CallStatusEvent): void {
    this.log.info({ status: event.status }, 'call_status from Meta');
    if (event.status === 'ringing' && this.state === 'connecting') {
      this.#transition('meta_ringing', 'Meta: ringing');
      this.#metaStatus = 'ringing';
      this.#incoming?.ringing();
    }
    this.#statusWaiters.get(event.status)?.();
  }

  onMediaUpdate(event: MediaUpdateEvent): void {
    if (event.version <= this.#mediaVersion) {
      this.log.debug({ version: event.version, newest: this.#mediaVersion }, 'stale media_update ignored');
      return;
    }
    this.#mediaVersion = event.version;
    const leg = this.#leg;
    if (!leg || this.ended) return;
    const apply =
      event.session.sdpType === 'offer' ? leg.applyOffer(event.session.sdp).then(() => undefined) : leg.applyAnswer(event.session.sdp);
    apply
      .then(() => {
        this.log.info({ version: event.version, sdpType: event.session.sdpType }, 'media_update applied');
        this.#remoteAnswerApplied = true;
        this.#onRemoteAnswer?.();
        if (this.#media && (this.state === 'media' || this.state === 'active' || this.state === 'transferring')) this.#media.start();
      })
      .catch((err: unknown) => {
        this.log.warn({ err, version: event.version }, 'media_update could not be applied');
      });
  }

  onTerminate(event: TerminateEvent): void {
    this.#metaStatus = `terminated ${event.status ?? ''}`.trim();
    this.end({
      outcome: this.#answeredAt ? 'completed' : 'canceled',
      reason: `Meta terminated the call (${event.status ?? 'no status'})`,
      meta: 'none',
      sip: this.#dialog ? 'bye' : this.#incoming ? 'refuse' : 'cancel',
      refusal: { status: 487, reason: 'Messenger call ended', outcome: 'canceled' },
    });
  }

  /** End the call from outside (drain timeout, shutdown). */
  hangUp(reason: string): void {
    this.end({
      outcome: this.#answeredAt ? 'completed' : 'canceled',
      reason,
      meta: 'auto',
      sip: this.#dialog ? 'bye' : this.#incoming ? 'refuse' : 'cancel',
      refusal: { status: 503, reason, outcome: 'canceled' },
    });
  }

  /** Media counters since the call started; undefined without media. */
  mediaStats(): CallMediaStats | undefined {
    const media = this.#media;
    return media && !media.closed ? media.stats() : undefined;
  }

  /** Media counters since the previous call of this method (for metrics); undefined without media. */
  takeMediaStatsDelta(): CallMediaStats | undefined {
    const media = this.#media;
    if (!media || media.closed) return undefined;
    const now = media.stats();
    const prev = this.#lastStats;
    this.#lastStats = now;
    const diff = (a: CallMediaStats['toPbx'], b: CallMediaStats['toPbx'] | undefined): CallMediaStats['toPbx'] => ({
      packets: a.packets - (b?.packets ?? 0),
      lost: Math.max(0, a.lost - (b?.lost ?? 0)),
      jitterMs: a.jitterMs,
    });
    return { ...now, toPbx: diff(now.toPbx, prev?.toPbx), toMessenger: diff(now.toMessenger, prev?.toMessenger) };
  }

  // ------------------------------------------------------------------------------------------------------------
  // Teardown: the one place
  // ------------------------------------------------------------------------------------------------------------

  /** End the call once; later calls are ignored. Releases everything and resolves `done`. */
  end(ending: Ending): void {
    if (this.#ending) return;
    this.#ending = ending;
    this.#transition('ending', ending.reason);
    this.#abort.abort(new CallEnded(ending.reason));
    void this.#release(ending).finally(() => {
      this.#transition('ended', ending.outcome);
      this.#writeSummary(ending);
      this.#resolveDone();
    });
  }

  async #release(ending: Ending): Promise<void> {
    const { graph } = this.#deps;
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    const lastStats = this.takeMediaStatsDelta();
    if (lastStats && this.#mediaStartedReported) this.#deps.metrics?.mediaStats?.(this.id, lastStats, true);
    this.#media?.close();
    this.#leg?.close();

    const tasks: Promise<unknown>[] = [];
    if (ending.sip === 'bye' && this.#dialog && !this.#dialog.ended) {
      tasks.push(this.#dialog.end().catch((err: unknown) => this.log.warn({ err }, 'BYE failed')));
    } else if (ending.sip === 'refuse' && this.#incoming && !this.#dialog && !this.#incoming.canceled) {
      const refusal = ending.refusal ?? { status: 500, reason: ending.reason };
      this.#sipStatus = refusal.status;
      this.#incoming.reject(refusal.status, refusal.reason);
    } else if (ending.sip === 'refuse' && this.#dialog && !this.#dialog.ended) {
      tasks.push(this.#dialog.end().catch((err: unknown) => this.log.warn({ err }, 'BYE failed')));
    }
    // 'cancel': the pending INVITE is cancelled by the abort signal given to sip.invite().
    for (const former of this.#formerDialogs) {
      if (!former.ended) tasks.push(former.end().catch((err: unknown) => this.log.warn({ err }, 'BYE failed')));
    }
    // A transfer's pending INVITE is cancelled by the same abort; wait until it settled (a 200 crossing the CANCEL
    // is hung up by the SIP port).
    if (this.#transfer?.done) tasks.push(this.#transfer.done);

    let action = ending.meta;
    if (action === 'auto') {
      // An accept/connect still in flight decides whether Meta needs reject or terminate.
      await this.#metaPending?.catch(() => undefined);
      action = this.#metaAccepted ? 'terminate' : this.direction === 'user_initiated' ? 'reject' : 'none';
    }
    if (this.metaCallId && action !== 'none') {
      const signal = AbortSignal.timeout(this.#deps.options.graphTimeoutMs * 2);
      const call =
        action === 'reject'
          ? graph.reject(this.pageId, this.metaCallId, signal)
          : graph.terminate(this.pageId, this.metaCallId, signal);
      tasks.push(
        call.then(
          () => {
            this.#metaStatus = action === 'reject' ? 'rejected' : 'terminated';
            this.log.info({ action }, `Meta ${action} sent`);
          },
          (err: unknown) => this.log.warn({ err, action }, `Graph ${action} failed`),
        ),
      );
    }
    await Promise.allSettled(tasks);
  }

  #writeSummary(ending: Ending): void {
    const now = Date.now();
    const durationSeconds = this.#answeredAt ? (now - this.#answeredAt) / 1000 : 0;
    const srtp = this.#media?.stats().srtp;
    this.#deps.metrics?.callEnded(this.direction, ending.outcome, durationSeconds);
    this.log.info(
      {
        summary: {
          direction: this.direction,
          pageId: this.pageId,
          psid: this.psidLabel,
          metaCallId: this.metaCallId,
          route: this.route?.name,
          outcome: ending.outcome,
          reason: ending.reason,
          sipStatus: this.#sipStatus,
          metaStatus: this.#metaStatus,
          codec: this.#media?.pbxCodec,
          ...(srtp ? { srtp } : {}),
          setupMs: this.#answeredAt ? this.#answeredAt - this.startedAt : undefined,
          ...(this.#setupTiming.webhookToInviteMs !== undefined ? { setupSteps: roundedSteps(this.#setupTiming) } : {}),
          ...(this.#transferCount() > 0 ? { transfers: { ...this.#transfers } } : {}),
          durationSeconds: Math.round(durationSeconds * 1000) / 1000,
          totalMs: now - this.startedAt,
        },
      },
      'call summary',
    );
  }

  // ------------------------------------------------------------------------------------------------------------
  // Transfer: REFER from the PBX -> 202, NOTIFY 100 -> INVITE to the target -> its 200 -> media re-targeted,
  // NOTIFY 200, BYE to the transferor. A failure leaves the call with the transferor (NOTIFY of the failure).
  // ------------------------------------------------------------------------------------------------------------

  #onTransferRequest(dialog: SipDialog, request: TransferRequest): void {
    const settings = this.#deps.options.transfer;
    const attended = Object.keys(request.headers).some((name) => name.toLowerCase() === 'replaces');
    this.log.info({ target: request.target, referredBy: request.referredBy, attended }, 'REFER received');
    const refuse = (status: number, reason: string): void => {
      this.log.warn({ target: request.target, status, reason, state: this.state }, 'REFER refused');
      this.#transfers.refused++;
      this.#deps.metrics?.transfer?.('refused');
      request.reject(status, reason);
    };
    if (settings && !settings.enabled) return refuse(403, 'transfers are disabled');
    if (this.#transfer) return refuse(491, 'a transfer is already in progress');
    if (dialog !== this.#dialog) return refuse(481, 'dialog replaced by a transfer');
    if (this.state !== 'active') return refuse(491, 'the call is not bridged yet');
    const allowed = settings?.allowedHosts ?? defaultTransferHosts(this.route?.targets ?? [], dialog.peerAddress);
    const verdict = checkTransferTarget(request.target, request.headers, allowed);
    if (!verdict.ok) return refuse(verdict.status, verdict.reason);
    request.accept();
    const transfer: Transfer = { from: dialog, request, startedAt: Date.now() };
    this.#transfer = transfer;
    this.#transfers.lastTarget = request.target;
    this.#transition('transferring', `REFER to ${request.target}`);
    transfer.done = this.#runTransfer(transfer)
      .catch((err: unknown) => this.log.error({ err }, 'transfer failed unexpectedly'))
      .finally(() => {
        if (this.#transfer === transfer) this.#transfer = undefined;
      });
  }

  async #runTransfer(transfer: Transfer): Promise<void> {
    const { sip } = this.#deps;
    const opts = this.#deps.options;
    const { request } = transfer;
    const media = this.#media;
    if (!media || media.closed) {
      await this.#transferFailed(transfer, 500, 'no media');
      return;
    }
    const headers: Record<string, string> = {
      ...request.headers,
      ...(request.referredBy ? { 'Referred-By': request.referredBy } : {}),
      [opts.headers.psid]: this.psid,
      [opts.headers.pageId]: this.pageId,
      ...(this.metaCallId ? { [opts.headers.callId]: this.metaCallId } : {}),
    };
    const targetTimeoutMs = this.route?.targetTimeoutMs || opts.transfer?.targetTimeoutMs || DEFAULT_TRANSFER_TIMEOUT_MS;
    let result: OutboundCallResult;
    try {
      const sdp = media.createPbxOffer();
      this.log.info({ target: request.target, targetTimeoutMs }, 'transfer: INVITE sent');
      result = await sip.invite({
        targets: [request.target],
        headers,
        from: { user: opts.fromUser },
        sdp,
        targetTimeoutMs,
        signal: this.#abort.signal,
        onProgress: (status, target) => this.log.info({ status, target }, 'transfer target is ringing'),
      });
    } catch (err) {
      if (this.ended) {
        this.#transferOver(transfer, 'canceled', { reason: 'the call ended during the transfer' });
        return;
      }
      const status = err instanceof SipError ? err.status : 500;
      const reason = err instanceof SipError ? err.reason : 'Server Internal Error';
      await this.#transferFailed(transfer, status, reason);
      return;
    }
    if (this.ended) {
      // Ended while the 200 OK was on its way: that dialog needs its BYE too.
      await result.dialog.end().catch((err: unknown) => this.log.warn({ err }, 'BYE failed'));
      this.#transferOver(transfer, 'canceled', { reason: 'the call ended during the transfer' });
      return;
    }
    const previousCodec = media.pbxCodec;
    try {
      media.applyPbxAnswer(result.sdp);
      media.start();
    } catch (err) {
      this.log.warn({ err, target: result.target }, 'transfer target answered with an unusable SDP: hanging it up');
      await result.dialog.end().catch((byeErr: unknown) => this.log.warn({ err: byeErr }, 'BYE failed'));
      await this.#transferFailed(transfer, 488, 'Not Acceptable Here');
      return;
    }
    const transferor = transfer.from;
    this.#formerDialogs.add(transferor);
    this.#adoptDialog(result.dialog);
    this.#transferOver(transfer, 'succeeded', { codec: media.pbxCodec, previousCodec });
    this.#transition('active', `transferred to ${result.target}`);
    await request.notifyFinal(200, 'OK');
    if (!transferor.ended) {
      this.log.info('transfer: BYE to the transferor');
      await transferor.end().catch((err: unknown) => this.log.warn({ err }, 'BYE failed'));
    }
    this.#formerDialogs.delete(transferor);
  }

  /** The transfer target did not take the call: it stays with the transferor, whose media were never moved. */
  async #transferFailed(transfer: Transfer, status: number, reason: string): Promise<void> {
    if (this.ended) {
      // The call ended while the failure was being handled (a BYE to a target with an unusable answer).
      this.#transferOver(transfer, 'canceled', { reason: 'the call ended during the transfer', status });
      return;
    }
    this.#transferOver(transfer, 'failed', { status, reason });
    if (transfer.from.ended) {
      this.end({
        outcome: 'completed',
        reason: `transfer failed (${status}) after the transferor hung up`,
        meta: 'auto',
        sip: 'none',
      });
      return;
    }
    this.#transition('active', `transfer failed (${status}); the call stays with the transferor`);
    await transfer.request.notifyFinal(status, reason);
  }

  #transferOver(transfer: Transfer, result: TransferResult, detail: Record<string, unknown>): void {
    if (this.#transfer === transfer) this.#transfer = undefined;
    this.#transfers[result]++;
    this.#deps.metrics?.transfer?.(result);
    this.log.info(
      { target: transfer.request.target, result, ms: Date.now() - transfer.startedAt, ...detail },
      `transfer ${result}`,
    );
  }

  #transferCount(): number {
    const t = this.#transfers;
    return t.succeeded + t.failed + t.refused + t.canceled;
  }

  // ------------------------------------------------------------------------------------------------------------
  // Helpers
  // ------------------------------------------------------------------------------------------------------------

  /** `onLeg` runs as soon as the Messenger leg exists, while the call media is still being created. */
  async #setUpMedia(route: CallRoute, onLeg?: (leg: MessengerLeg) => void): Promise<{ leg: MessengerLeg; media: CallMedia }> {
    const { legs, media: engine } = this.#deps;
    const leg = legs.create({ callId: this.id, log: this.log });
    this.#leg = leg;
    leg.on('failed', (err) => {
      this.end({
        outcome: 'media_failed',
        reason: `Messenger leg failed (${err.reason}): ${err.message}`,
        meta: 'auto',
        sip: this.#dialog ? 'bye' : this.#incoming ? 'refuse' : 'cancel',
        refusal: { status: 503, reason: 'Messenger media failed', outcome: 'media_failed' },
      });
    });
    let media: CallMedia;
    const creating = engine.createCallMedia({
      callId: this.id,
      log: this.log,
      messenger: leg,
      codecs: route.codecs,
      ...(route.srtp ? { srtp: route.srtp } : {}),
    });
    onLeg?.(leg);
    try {
      media = await this.#step(creating);
    } catch (err) {
      if (err instanceof CallEnded) {
        // Ended while the media was being created: it is nobody's yet, so close it once it exists.
        creating.then((late) => late.close(), () => undefined);
        throw err;
      }
      this.end({
        outcome: 'media_failed',
        reason: `media setup failed: ${reasonOf(err)}`,
        meta: this.direction === 'user_initiated' ? 'reject' : 'none',
        sip: 'refuse',
        refusal: REFUSALS.mediaDown,
      });
      throw new CallEnded();
    }
    if (this.ended) {
      media.close();
      throw new CallEnded();
    }
    this.#media = media;
    media.on('failed', (err) => {
      this.end({
        outcome: 'media_failed',
        reason: `media failed: ${err.code}: ${err.message}`,
        meta: 'auto',
        sip: this.#dialog ? 'bye' : this.#incoming ? 'refuse' : 'cancel',
        refusal: { status: 503, reason: 'media failed', outcome: 'media_failed' },
      });
    });
    media.on('dtmf', (event) => {
      const viaInfo = event.direction === 'to_pbx' && this.#wantsSipInfo(event.via);
      this.log.info(
        { digit: event.digit, direction: event.direction, durationMs: event.durationMs, via: viaInfo ? `${event.via}+info` : event.via },
        'DTMF',
      );
      this.#deps.metrics?.dtmf(event.direction);
      if (viaInfo) this.#sendDtmfInfo({ digit: event.digit, durationMs: event.durationMs });
      else if (event.via === 'none') {
        this.log.warn({ digit: event.digit }, 'digit lost: the PBX negotiated no telephone-event and SIP INFO is off (media.dtmf.sip_info)');
      }
    });
    return { leg, media };
  }

  #wantsSipInfo(via: 'rfc4733' | 'inband' | 'none' | undefined): boolean {
    const setting = this.#deps.options.dtmfSipInfo ?? 'auto';
    return setting === 'auto' ? via === 'inband' || via === 'none' : setting;
  }

  #sendDtmfInfo(event: DtmfEvent): void {
    const dialog = this.#dialog;
    if (!dialog || dialog.ended) {
      this.log.warn({ digit: event.digit }, 'digit for SIP INFO arrived before the PBX dialog exists: not sent');
      return;
    }
    dialog.sendDtmf(event).then(
      () => this.log.debug({ digit: event.digit }, 'DTMF INFO answered'),
      (err: unknown) => this.log.warn({ err, digit: event.digit }, 'DTMF INFO to the PBX failed'),
    );
  }

  #reportMediaStarted(media: CallMedia): void {
    if (this.#mediaStartedReported) return;
    this.#mediaStartedReported = true;
    this.#deps.metrics?.mediaStarted?.(this.id, media.stats().transcoding);
  }

  #adoptDialog(dialog: SipDialog): void {
    this.#dialog = dialog;
    dialog.on('bye', () => {
      if (dialog !== this.#dialog) return; // a dialog a transfer replaced
      if (this.#transfer?.from === dialog) {
        this.log.info({ target: this.#transfer.request.target }, 'the transferor hung up during the transfer: the call waits for its outcome');
        return;
      }
      this.end({
        outcome: 'completed',
        reason: 'PBX hung up (BYE)',
        meta: 'auto',
        sip: 'none',
      });
    });
    dialog.on('dtmf', (event) => {
      if (dialog === this.#dialog) this.#media?.sendDtmfToMessenger(event);
    });
    dialog.setTransferHandler((request) => this.#onTransferRequest(dialog, request));
    dialog.setReinviteHandler((offer) => {
      const media = this.#media;
      if (!media) throw new Error('no media');
      if (dialog !== this.#dialog) throw new Error('dialog replaced by a transfer');
      const answer = media.answerPbxOffer(offer);
      this.log.info('re-INVITE from the PBX applied');
      media.start();
      return answer;
    });
  }

  async #connectMedia(leg: MessengerLeg): Promise<void> {
    this.#transition('media', 'waiting for ICE/DTLS toward Meta');
    const timeout = this.#deadline(this.#deps.options.mediaConnectTimeoutMs);
    try {
      await this.#step(leg.whenConnected(AbortSignal.any([this.#abort.signal, timeout])));
    } catch (err) {
      if (err instanceof CallEnded || this.ended) throw new CallEnded();
      this.end({
        outcome: 'media_failed',
        reason: timeout.aborted ? 'Messenger media did not connect in time' : `Messenger leg: ${reasonOf(err)}`,
        meta: 'terminate',
        sip: 'bye',
      });
      throw new CallEnded();
    }
    this.#transition('active', 'audio bridged');
  }

  /** Await a step of a flow; rejects with CallEnded as soon as the call is ended meanwhile. */
  #step<T>(promise: Promise<T>): Promise<T> {
    const signal = this.#abort.signal;
    if (signal.aborted) {
      promise.catch(() => undefined);
      return Promise.reject(new CallEnded());
    }
    return new Promise<T>((resolve, reject) => {
      const onAbort = (): void => reject(new CallEnded());
      signal.addEventListener('abort', onAbort, { once: true });
      promise.then(
        (value) => {
          signal.removeEventListener('abort', onAbort);
          if (signal.aborted) reject(new CallEnded());
          else resolve(value);
        },
        (err: unknown) => {
          signal.removeEventListener('abort', onAbort);
          reject(signal.aborted ? new CallEnded() : err);
        },
      );
    });
  }

  /** An AbortSignal that fires after `ms`, on a timer the call owns (cleared when the call ends). */
  #deadline(ms: number): AbortSignal {
    const controller = new AbortController();
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      controller.abort(new Error(`deadline of ${ms} ms passed`));
    }, ms);
    this.#timers.add(timer);
    return controller.signal;
  }

  #graphSignal(): AbortSignal {
    return AbortSignal.timeout(this.#deps.options.graphTimeoutMs);
  }

  #waitStatus(status: string, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#timers.delete(timer);
        this.#statusWaiters.delete(status);
        reject(new Error(`timed out waiting for call_status ${status}`));
      }, timeoutMs);
      this.#timers.add(timer);
      this.#statusWaiters.set(status, () => {
        clearTimeout(timer);
        this.#timers.delete(timer);
        this.#statusWaiters.delete(status);
        resolve();
      });
    });
  }

  #waitRemoteAnswer(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#timers.delete(timer);
        reject(new Error('no SDP answer from Meta'));
      }, timeoutMs);
      this.#timers.add(timer);
      this.#onRemoteAnswer = () => {
        clearTimeout(timer);
        this.#timers.delete(timer);
        this.#onRemoteAnswer = undefined;
        resolve();
      };
    });
  }

  #failFromFlow(err: unknown): void {
    if (err instanceof CallEnded || this.ended) return;
    this.log.error({ err }, 'call failed');
    this.end({
      outcome: 'media_failed',
      reason: reasonOf(err),
      meta: 'auto',
      sip: this.#dialog ? 'bye' : this.#incoming ? 'refuse' : 'cancel',
      refusal: { status: 500, reason: 'bridge error', outcome: 'media_failed' },
    });
  }

  #transition(to: CallState, why: string): void {
    const from = this.state;
    if (from === to) return;
    if (!TRANSITIONS[from].includes(to)) {
      this.log.warn({ from, to, why }, 'unexpected call state transition');
    }
    this.state = to;
    this.log.info({ from, to, why }, `call ${from} -> ${to}`);
  }
}
