/**
 * One call: its state machine, its two legs, its media, and the single place where it is torn down.
 *
 * The state machine is the table in callState.ts: every state change is an event applied through `#machine`, which
 * refuses (logs and counts) an event the table does not allow in the current state. Both flows are written as one
 * linear async procedure each (`runUserInitiated`, `runBusinessInitiated`); outside events (webhooks, SIP BYE/CANCEL,
 * leg or media failure, deadlines) end the call through `end()`, which aborts the procedure's pending step. A flow
 * leaves once the call has ended in one way only: by throwing `CallEnded` (`#flow.stop` ends the call and throws it; a
 * step interrupted by an end from outside throws it), caught once at the flow's end (callFlow.ts). The media and the
 * leg toward Meta are set up and released by callLegs.ts. A transfer (REFER from the PBX) is its own procedure
 * (transfer.ts), run from `active` through `transferring` and back.
 */
import type { Logger } from 'pino';
import { GraphError, SipError } from '../core/errors.js';
import { CallEnded, CallStateMachine, sipTeardownFor, type CallState, type Ending } from './callState.js';
import { CallTimers } from './callTimers.js';
import { CallFlow } from './callFlow.js';
import { CallLegs } from './callLegs.js';
import { MetaSide } from './metaSide.js';
import type { CallSessionDeps } from './callOptions.js';
import { reportEndedCall } from './callSummary.js';
import { REFUSALS, reasonOf, refusalForGraphError, refusalForHangUp, refusalForMediaError } from './outcomes.js';
import type {
  CallDirection,
  CallMedia,
  CallMediaStats,
  CallRoute,
  CallStatusEvent,
  ConnectEvent,
  IncomingCall,
  MediaUpdateEvent,
  MessengerLeg,
  SipDialog,
  TerminateEvent,
} from './ports.js';
import { PbxDialogs } from './pbxDialogs.js';
import { CallTransfers, type TransferHost } from './transfer.js';

export type { CallState } from './callState.js';
export type { CallSessionDeps, CallSessionOptions } from './callOptions.js';
export type { TransferOptions } from './transfer.js';

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
  /** Resolves once the call is fully ended and released. */
  readonly done: Promise<void>;

  readonly #deps: CallSessionDeps;
  readonly #abort = new AbortController();
  readonly #timers = new CallTimers();
  readonly #meta = new MetaSide(this.#timers);
  readonly #machine: CallStateMachine;
  readonly #flow: CallFlow;
  readonly #legs: CallLegs;
  readonly #transfers: CallTransfers;
  #resolveDone!: () => void;
  readonly #dialogs: PbxDialogs;
  #incoming: IncomingCall | undefined;
  #ending: Ending | undefined;
  #answeredAt: number | undefined;
  #sipStatus: number | undefined;
  /** Consumer-initiated set-up steps in ms (sub-millisecond): connect received -> INVITE, 200 OK -> accept. */
  #setupTiming: { webhookToInviteMs?: number; pbxAnswerToAcceptMs?: number } = {};
  #earlyMediaStarted = false;

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
    this.#machine = new CallStateMachine(this.log, init.deps.metrics);
    const ended = (): boolean => this.ended;
    const end = (ending: Ending): void => this.end(ending);
    this.#flow = new CallFlow({ log: this.log, signal: this.#abort.signal, ended, end });
    const dialog = (): SipDialog | undefined => this.#dialogs.current;
    this.#legs = new CallLegs({ id: this.id, log: this.log, direction: this.direction, deps: init.deps, flow: this.#flow, ended, end, dialog });
    this.#dialogs = new PbxDialogs(this.log, {
      bye: (dialog) => {
        if (this.#transfers.transferor !== dialog) return this.end({ outcome: 'completed', reason: 'PBX hung up (BYE)', meta: 'auto', sip: 'none' });
        this.log.info({ target: this.#transfers.target }, 'the transferor hung up during the transfer: the call waits for its outcome');
      },
      dtmf: (event) => this.#legs.media?.sendDtmfToMessenger(event),
      refer: (dialog, request) => this.#transfers.onRequest(dialog, request),
      reinvite: (offer) => {
        const media = this.#legs.media;
        if (!media) throw new Error('no media');
        const answer = media.answerPbxOffer(offer);
        this.log.info('re-INVITE from the PBX applied');
        media.start();
        return answer;
      },
    });
    const { sip, metrics, options } = init.deps;
    this.#transfers = new CallTransfers(this.#transferHost(), { sip, metrics, options: options.transfer, fromUser: options.fromUser });
  }

  get state(): CallState {
    return this.#machine.state;
  }

  get ended(): boolean {
    return this.state === 'ending' || this.state === 'ended';
  }

  // --- Consumer-initiated: connect webhook -> offer -> INVITE -> PBX 200 -> Graph accept -> Meta answer -> bridged

  async runUserInitiated(event: ConnectEvent, route: CallRoute, receivedAt: number): Promise<void> {
    this.route = route;
    const { sip, metrics } = this.#deps;
    const opts = this.#deps.options;
    const deadline = receivedAt + opts.acceptDeadlineMs;
    // receivedAt has millisecond resolution; step durations use the monotonic clock from here on.
    const receivedPerf = performance.now() - Math.max(0, Date.now() - receivedAt);
    try {
      // The Messenger offer (ICE gathering, certificate) and the PBX-side media (mediasoup round trips) are
      // independent: build them at the same time.
      let offering: Promise<string> | undefined;
      const { leg, media } = await this.#legs.setUp(route, (created) => {
        offering = created.createOffer();
        // Its failure is awaited (and handled) below once the media exists; this only keeps it from floating.
        offering.catch(() => undefined);
      });
      const offer = await this.#flow.step(offering!);
      const pbxOffer = media.createPbxOffer();

      if (route.answerMode === 'immediate') {
        this.#machine.apply('accept', 'answer mode immediate');
        await this.#accept(offer);
        // Meta drops an accepted call that receives nothing (~20 s): silence until the PBX's (early) media flows.
        media.startSendingToMessenger();
      }

      this.#machine.apply('invite', `to ${route.targets.join(', ')}`);
      const remainingMs = Math.max(1, deadline - Date.now());
      const inviteAbort = AbortSignal.any([this.#abort.signal, this.#timers.deadline(remainingMs)]);
      this.#setupTiming.webhookToInviteMs = performance.now() - receivedPerf;
      metrics?.webhookToInvite(this.#setupTiming.webhookToInviteMs / 1000);
      let result;
      /** The SDP of the PBX's last 18x that carried one (early media; the 200 OK may then carry none). */
      let earlySdp: string | undefined;
      try {
        result = await sip.invite({
          targets: route.targets,
          headers: this.#callerHeaders(event.callId),
          from: { user: opts.fromUser },
          sdp: pbxOffer,
          targetTimeoutMs: route.targetTimeoutMs,
          signal: inviteAbort,
          onProgress: (status, target, sdp) => {
            this.log.info({ status, target, earlyMedia: sdp !== undefined }, 'PBX is ringing');
            this.#machine.apply('pbx_ringing', `${status} from ${target}`);
            if (sdp !== undefined) earlySdp = this.#onEarlyMedia(media, sdp, target) ?? earlySdp;
          },
        });
      } catch (err) {
        this.#flow.leaveIfEnded();
        const timedOut = inviteAbort.aborted && !this.#abort.signal.aborted;
        this.#sipStatus = err instanceof SipError ? err.status : undefined;
        this.#flow.stop({
          outcome: timedOut ? 'pbx_timeout' : 'rejected_pbx',
          reason: timedOut ? `PBX did not answer within ${opts.acceptDeadlineMs} ms` : `PBX refused: ${reasonOf(err)}`,
          meta: 'auto',
          sip: 'none',
        });
      }
      if (this.ended) {
        // Ended while the 200 OK was on its way: the dialog exists now, so it needs its BYE.
        await this.#dialogs.hangUp(result.dialog);
        throw new CallEnded();
      }
      this.#sipStatus = result.status;
      this.#dialogs.adopt(result.dialog);
      this.log.info({ target: result.target, status: result.status }, 'PBX answered');
      const pbxAnsweredAt = performance.now();
      try {
        // A 200 OK after early media repeats the answer, or (with 100rel) carries none: the 18x's then stands.
        media.applyPbxAnswer(result.sdp.trim() !== '' ? result.sdp : (earlySdp ?? result.sdp));
      } catch (err) {
        this.#flow.stop({ outcome: 'media_failed', reason: reasonOf(err), meta: 'reject', sip: 'bye' });
      }

      if (!this.#meta.accepted) {
        this.#machine.apply('accept', 'PBX answered');
        this.#setupTiming.pbxAnswerToAcceptMs = performance.now() - pbxAnsweredAt;
        metrics?.pbxAnswerToAccept(this.#setupTiming.pbxAnswerToAcceptMs / 1000);
        await this.#accept(offer);
      }
      media.start();
      this.#legs.stats?.started();
      await this.#connectMedia(leg);
    } catch (err) {
      this.#flow.caught(err);
    }
  }

  /**
   * Early media (the SDP of a 183/180 from the PBX): once Meta has accepted (answer mode immediate), the person hears
   * the PBX's ringback or announcements before it answers; before that the SDP is only kept for the 200 OK. Returns
   * the SDP when it was usable; an unusable one is logged and ignored (the 200 OK's decides).
   */
  #onEarlyMedia(media: CallMedia, sdp: string, target: string): string | undefined {
    if (!this.#meta.accepted || this.ended) return sdp;
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
      this.#legs.stats?.started();
    }
    return sdp;
  }

  async #accept(offer: string): Promise<void> {
    const leg = this.#legs.leg!;
    const accepting = this.#meta.track(this.#deps.graph.accept(this.pageId, this.metaCallId!, offer, this.#graphSignal()));
    const accepted = await this.#flow.stepOr(accepting, (err) => {
      this.#meta.status = err instanceof GraphError ? `accept failed: ${err.code}` : 'accept failed';
      return { outcome: 'meta_error', reason: `Graph accept failed: ${reasonOf(err)}`, meta: 'reject', sip: 'auto' };
    });
    this.#meta.accepted = true;
    this.#meta.status = 'accepted';
    this.#answeredAt ??= Date.now();
    await this.#flow.step(leg.applyAnswer(accepted.sdpAnswer));
    if (accepted.sdpRenegotiation) {
      this.log.info('applying the renegotiation offer that came with accept');
      await this.#flow.step(leg.applyOffer(accepted.sdpRenegotiation));
    }
    this.#meta.remoteAnswered();
  }

  // --- Business-initiated: INVITE from the PBX -> permission -> Graph connect -> ringing (180) -> accepted (200 OK)

  async runBusinessInitiated(incoming: IncomingCall, bindMetaCallId: (id: string) => void): Promise<void> {
    this.#incoming = incoming;
    const { graph } = this.#deps;
    const opts = this.#deps.options;
    incoming.on('cancel', () => this.end({ outcome: 'canceled', reason: 'PBX sent CANCEL', meta: 'auto', sip: 'none' }));
    try {
      if (opts.permissionCheck) await this.#checkPermission();

      const { leg, media } = await this.#legs.setUp(this.route!);
      let pbxAnswer: string;
      try {
        pbxAnswer = media.answerPbxOffer(incoming.sdp);
      } catch (err) {
        const refusal = refusalForMediaError(err);
        this.#flow.stop({ outcome: refusal.outcome, reason: reasonOf(err), meta: 'none', sip: 'refuse', refusal });
      }
      const offer = await this.#flow.step(leg.createOffer());

      this.#machine.apply('connect', 'Graph connect');
      // The call id is recorded even if the call ended meanwhile (CANCEL): Meta's call then needs its terminate.
      const connecting = this.#meta.track(graph.connect(this.pageId, this.psid, offer, this.#graphSignal()), (result) => {
        this.metaCallId = result.callId;
      });
      const connected = await this.#flow.stepOr(connecting, (err) => {
        const refusal = refusalForGraphError(err);
        this.#meta.status = err instanceof GraphError ? `connect failed: ${err.code}` : 'connect failed';
        return { outcome: refusal.outcome, reason: `Graph connect failed: ${reasonOf(err)}`, meta: 'none', sip: 'refuse', refusal };
      });
      this.metaCallId = connected.callId;
      this.#meta.accepted = true;
      this.#meta.status = 'connected';
      this.log.info({ metaCallId: connected.callId }, 'Meta call created');
      bindMetaCallId(connected.callId);
      if (connected.sdpAnswer) {
        await this.#flow.step(leg.applyAnswer(connected.sdpAnswer));
        this.#meta.remoteAnswered();
      }

      await this.#flow.stepOr(this.#meta.waitStatus('accepted', opts.connectTimeoutMs), () => ({
        outcome: 'not_answered',
        reason: `the person did not answer within ${opts.connectTimeoutMs} ms`,
        meta: 'terminate',
        sip: 'refuse',
        refusal: REFUSALS.metaTimeout,
      }));
      this.#meta.status = 'accepted';
      this.#answeredAt = Date.now();
      if (!this.#meta.remoteAnswerApplied) await this.#flow.step(this.#meta.waitRemoteAnswer(opts.mediaConnectTimeoutMs));
      const dialog = await this.#flow.step(incoming.answer(pbxAnswer));
      this.#sipStatus = 200;
      this.#dialogs.adopt(dialog);
      media.start();
      this.#legs.stats?.started();
      await this.#connectMedia(leg);
    } catch (err) {
      this.#flow.caught(err);
    }
  }

  /** Meta's call permission for the person; without it the INVITE is refused (and permission asked, if configured). */
  async #checkPermission(): Promise<void> {
    const { graph, options } = this.#deps;
    this.#machine.apply('check_permission', `psid ${this.psidLabel}`);
    const permission = await this.#flow.stepOr(graph.checkPermission(this.pageId, this.psid, this.#graphSignal()), (err) => {
      const refusal = refusalForGraphError(err);
      return { outcome: refusal.outcome, reason: `permission check failed: ${reasonOf(err)}`, meta: 'none', sip: 'refuse', refusal };
    });
    if (permission.canCall) return;
    if (options.requestPermissionOnDenied) {
      void graph
        .requestPermission(this.pageId, this.psid, this.#graphSignal())
        .then(() => this.log.info('sent a call permission request to the person'))
        .catch((err: unknown) => this.log.warn({ err }, 'call permission request failed'));
    }
    this.#flow.stop({
      outcome: 'rejected_no_permission',
      reason: 'the person has not granted call permission',
      meta: 'none',
      sip: 'refuse',
      refusal: REFUSALS.noPermission,
    });
  }

  // --- Events routed in by the controller

  onCallStatus(event: CallStatusEvent): void {
    this.log.info({ status: event.status }, 'call_status from Meta');
    if (event.status === 'ringing' && this.#machine.apply('meta_ringing', 'Meta: ringing')) {
      this.#meta.status = 'ringing';
      this.#incoming?.ringing();
    }
    this.#meta.statusArrived(event.status);
  }

  onMediaUpdate(event: MediaUpdateEvent): void {
    const leg = this.#legs.leg;
    const applying = this.#meta.applyMediaUpdate(event, this.ended ? undefined : leg, this.log);
    void applying.then((applied) => {
      if (applied && this.#legs.media && (this.state === 'media' || this.state === 'active' || this.state === 'transferring')) this.#legs.media.start();
    });
  }

  onTerminate(event: TerminateEvent): void {
    this.#meta.status = `terminated ${event.status ?? ''}`.trim();
    const reason = `Meta terminated the call (${event.status ?? 'no status'})`;
    this.end({ outcome: this.#answeredAt ? 'completed' : 'canceled', reason, meta: 'none', sip: 'auto', refusal: REFUSALS.metaEnded });
  }

  /** End the call from outside (drain timeout, shutdown). */
  hangUp(reason: string): void {
    this.end({ outcome: this.#answeredAt ? 'completed' : 'canceled', reason, meta: 'auto', sip: 'auto', refusal: refusalForHangUp(reason) });
  }

  /** Media counters since the call started; undefined without media. */
  mediaStats(): CallMediaStats | undefined {
    return this.#legs.stats?.total();
  }

  /** Media counters since the previous call of this method (for metrics); undefined without media. */
  takeMediaStatsDelta(): CallMediaStats | undefined {
    return this.#legs.stats?.delta();
  }

  // --- Teardown: the one place

  /** End the call once; later calls are ignored. Releases everything and resolves `done`. */
  end(ending: Ending): void {
    if (this.#ending) return;
    const sip = ending.sip === 'auto' ? sipTeardownFor({ hasDialog: this.#dialogs.current !== undefined, hasIncomingInvite: this.#incoming !== undefined }) : ending.sip;
    const decided = { ...ending, sip };
    this.#ending = decided;
    this.#machine.apply('end', ending.reason);
    this.#abort.abort(new CallEnded(ending.reason));
    void this.#release(decided).finally(() => {
      this.#machine.apply('released', ending.outcome);
      this.#writeSummary(decided);
      this.#resolveDone();
    });
  }

  async #release(ending: Ending): Promise<void> {
    this.#timers.clear();
    const legsClosed = this.#legs.close();

    const tasks: Promise<unknown>[] = [legsClosed];
    const dialog = this.#dialogs.current;
    if (ending.sip === 'refuse' && this.#incoming && !dialog && !this.#incoming.canceled) {
      const refusal = ending.refusal ?? REFUSALS.bridgeError;
      this.#sipStatus = refusal.status;
      this.#incoming.reject(refusal.status, refusal.reason);
    } else if ((ending.sip === 'bye' || ending.sip === 'refuse') && dialog) {
      tasks.push(this.#dialogs.hangUp(dialog));
    }
    // 'cancel': the pending INVITE is cancelled by the abort signal given to sip.invite().
    tasks.push(...this.#dialogs.hangUpFormer());
    // A transfer's pending INVITE is cancelled by the same abort; wait until it settled (a 200 crossing the CANCEL
    // is hung up by the SIP port).
    const transfer = this.#transfers.settled;
    if (transfer) tasks.push(transfer);
    const action = ending.meta === 'auto' ? await this.#meta.teardownAction(this.direction) : ending.meta;
    if (this.metaCallId && action !== 'none') {
      const { graph, options } = this.#deps;
      tasks.push(this.#meta.end(graph, { pageId: this.pageId, callId: this.metaCallId, action, timeoutMs: options.graphTimeoutMs * 2, log: this.log }));
    }
    await Promise.allSettled(tasks);
  }

  #writeSummary(ending: Ending): void {
    const media = this.#legs.media;
    const facts = {
      answeredAt: this.#answeredAt,
      sipStatus: this.#sipStatus,
      metaStatus: this.#meta.status,
      metaAccepted: this.#meta.accepted,
      codec: media?.pbxCodec,
      srtp: media?.stats().srtp,
      setupTiming: this.#setupTiming,
      transfers: this.#transfers.summary(),
      quality: this.#legs.quality,
    };
    reportEndedCall(this, ending, facts, this.#deps);
  }

  // --- Helpers

  /** The call as its transfers see it. */
  #transferHost(): TransferHost {
    return {
      log: this.log,
      signal: this.#abort.signal,
      state: () => this.state,
      ended: () => this.ended,
      media: () => this.#legs.media,
      dialogs: this.#dialogs,
      routeTargetTimeoutMs: () => this.route?.targetTimeoutMs,
      routeTargets: () => this.route?.targets ?? [],
      callerHeaders: () => this.#callerHeaders(this.metaCallId),
      permits: (event, why) => this.#machine.permits(event, why),
      apply: (event, why) => this.#machine.apply(event, why),
      end: (ending) => this.end(ending),
    };
  }

  /** The caller-context headers on every INVITE toward the PBX (the Meta call id once there is one). */
  #callerHeaders(metaCallId: string | undefined): Record<string, string> {
    const names = this.#deps.options.headers;
    return { [names.psid]: this.psid, [names.pageId]: this.pageId, ...(metaCallId ? { [names.callId]: metaCallId } : {}) };
  }

  async #connectMedia(leg: MessengerLeg): Promise<void> {
    this.#machine.apply('answered', 'waiting for ICE/DTLS toward Meta');
    const timeout = this.#timers.deadline(this.#deps.options.mediaConnectTimeoutMs);
    await this.#flow.stepOr(leg.whenConnected(AbortSignal.any([this.#abort.signal, timeout])), (err) => ({
      outcome: 'media_failed',
      reason: timeout.aborted ? 'Messenger media did not connect in time' : `Messenger leg: ${reasonOf(err)}`,
      meta: 'terminate',
      sip: 'bye',
    }));
    this.#machine.apply('media_connected', 'audio bridged');
  }

  #graphSignal(): AbortSignal {
    return AbortSignal.timeout(this.#deps.options.graphTimeoutMs);
  }
}
