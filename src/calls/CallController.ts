/**
 * Turns Meta events and PBX INVITEs into CallSessions, routes later events to them, enforces the concurrency limit
 * and drain, and keeps the registry of live calls.
 */
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { CallRegistry } from './CallRegistry.js';
import { CallSession, type CallSessionOptions } from './CallSession.js';
import { META_REFUSALS, REFUSALS, reasonOf, refusalForAdmission, type MetaRefusal, type SipRefusal } from './outcomes.js';
import { SourceLimits, type SourceLimitSettings } from './SourceLimits.js';
import type {
  AdmissionPort,
  AdmissionVerdict,
  CallDirection,
  CallMetricsSink,
  CallRoute,
  ConnectEvent,
  GraphPort,
  IncomingCall,
  MediaEngine,
  MessengerLegFactory,
  MetaCallEvent,
  MetaEvent,
  MetaEventSink,
  PbxCodecName,
  SipPort,
  SrtpMode,
} from './ports.js';

export interface CallControllerOptions extends CallSessionOptions {
  /** Calls at once, both directions; more are refused at once (Meta reject / SIP 503). */
  maxConcurrent: number;
  /** Pages this deployment serves. */
  pageIds: ReadonlySet<string>;
  /** Page for business-initiated calls whose INVITE names none. */
  defaultPageId?: string;
  /** Routing rules for consumer-initiated calls (first match wins). */
  selectRoute: (pageId: string, psid: string) => CallRoute | undefined;
  /** Log a hash of the PSID instead of the PSID. */
  hashPsid: boolean;
  /** A connect webhook older than this is acknowledged and ignored (Meta's accept window is 60 s). */
  connectMaxAgeMs: number;
  /** Limits on INVITEs per source address; absent: none beyond `maxConcurrent`. */
  sourceLimits?: SourceLimitSettings;
  /** Codec preference toward the PBX for business-initiated calls (`media.codecs`; routes apply to consumer calls). */
  businessCodecs: PbxCodecName[];
  /** SRTP toward the PBX for calls the PBX places (`media.srtp`); default 'off'. */
  pbxSrtp?: SrtpMode;
}

export interface CallControllerDeps {
  sip: SipPort;
  media: MediaEngine;
  legs: MessengerLegFactory;
  graph: GraphPort;
  log: Logger;
  metrics?: CallMetricsSink;
  /** Admission by load (calls/Admission); without it only `maxConcurrent` limits. */
  admission?: AdmissionPort;
  options: CallControllerOptions;
  /** Asked before each new call (both directions): a refusal while something shared is missing (the cluster's Redis). */
  admit?: () => SipRefusal | undefined;
}

/** How long an event for a call id we do not know yet is kept (a webhook may beat Graph connect's response). */
const EARLY_EVENT_TTL_MS = 10_000;
const EARLY_EVENT_MAX = 1_000;
/** Events kept per unknown call id (a real call has a handful before its connect is known). */
const EARLY_EVENTS_PER_CALL = 16;

export class CallController implements MetaEventSink {
  readonly registry = new CallRegistry();
  readonly #deps: CallControllerDeps;
  #options: CallControllerOptions;
  readonly #log: Logger;
  #draining = false;
  #closed = false;
  readonly #early = new Map<string, { events: MetaCallEvent[]; expires: number }>();
  readonly #onInvite = (incoming: IncomingCall): void => this.#handleInvite(incoming);
  readonly #sources = new SourceLimits(() => this.#options.sourceLimits);

  constructor(deps: CallControllerDeps) {
    this.#deps = deps;
    this.#options = deps.options;
    this.#log = deps.log.child({ component: 'calls' });
    deps.sip.on('invite', this.#onInvite);
  }

  get draining(): boolean {
    return this.#draining;
  }

  get activeCalls(): number {
    return this.registry.size;
  }

  /** Replace routing, pages and limits (SIGHUP reload); live calls keep what they started with. */
  updateOptions(options: CallControllerOptions): void {
    this.#options = options;
  }

  // ------------------------------------------------------------------------------------------------------------
  // Meta events
  // ------------------------------------------------------------------------------------------------------------

  handleMetaEvent(event: MetaEvent): void {
    try {
      if (event.kind === 'call_permission_reply') {
        this.#log.info({ pageId: event.pageId, psid: this.#psidForLog(event.psid), response: event.response }, 'call permission reply');
        this.#deps.metrics?.permissionReply(event.response ?? 'unknown');
        return;
      }
      if (event.kind === 'connect' && event.direction === 'user_initiated') {
        this.#handleConnect(event);
        return;
      }
      const call = this.registry.byMetaCallId(event.callId);
      if (!call) {
        this.#keepEarly(event);
        return;
      }
      this.#dispatch(call, event);
    } catch (err) {
      this.#log.error({ err, callId: 'callId' in event ? event.callId : undefined }, 'event handling failed');
    }
  }

  #dispatch(call: CallSession, event: MetaCallEvent): void {
    switch (event.kind) {
      case 'call_status':
        call.onCallStatus(event);
        break;
      case 'media_update':
        call.onMediaUpdate(event);
        break;
      case 'terminate':
        call.onTerminate(event);
        break;
      case 'connect':
        call.log.debug('connect webhook for a business-initiated call');
        break;
    }
  }

  #keepEarly(event: MetaCallEvent): void {
    if (event.kind === 'terminate' || event.kind === 'call_status' || event.kind === 'media_update' || event.kind === 'connect') {
      const now = Date.now();
      for (const [id, entry] of this.#early) if (entry.expires < now) this.#early.delete(id);
      if (this.#early.size >= EARLY_EVENT_MAX) {
        this.#log.warn({ callId: event.callId, kind: event.kind }, 'event for an unknown call dropped (buffer full)');
        return;
      }
      const entry = this.#early.get(event.callId) ?? { events: [], expires: now + EARLY_EVENT_TTL_MS };
      if (entry.events.length >= EARLY_EVENTS_PER_CALL) {
        this.#log.warn({ callId: event.callId, kind: event.kind }, 'event for an unknown call dropped (too many for that call)');
        return;
      }
      entry.events.push(event);
      this.#early.set(event.callId, entry);
      this.#log.info({ callId: event.callId, kind: event.kind }, 'event for a call this process does not know (kept briefly)');
    }
  }

  #handleConnect(event: ConnectEvent): void {
    const opts = this.#options;
    const receivedAt = Date.now();
    if (this.registry.byMetaCallId(event.callId)) {
      this.#log.debug({ callId: event.callId }, 'connect for a known call ignored');
      return;
    }
    const ageMs = receivedAt - event.timestamp * 1000;
    if (ageMs > opts.connectMaxAgeMs) {
      this.#log.warn({ callId: event.callId, ageMs }, 'connect older than the accept window ignored');
      return;
    }
    const psid = event.from;
    const pageId = event.pageId;
    const refuse = (refusal: MetaRefusal): void => this.#rejectConnect(event, refusal);
    if (this.#closed || this.#draining) return refuse(META_REFUSALS.draining);
    const gate = this.#deps.admit?.();
    if (gate) return refuse(gate);
    const refusal = this.#admissionRefusal();
    if (refusal) return refuse({ outcome: refusalForAdmission(refusal).outcome, reason: refusal.detail });
    if (!this.#deps.sip.connected) return refuse(META_REFUSALS.sipDown);
    if (!this.#deps.media.healthy) return refuse(META_REFUSALS.mediaDown);
    const route = opts.selectRoute(pageId, psid);
    if (!route) return refuse(META_REFUSALS.noRoute);

    const call = this.#newCall('user_initiated', event.callId, pageId, psid, event.callId);
    call.log.info({ route: route.name, from: this.#psidForLog(psid) }, 'incoming Messenger call');
    this.#track(call);
    void call.runUserInitiated(event, route, receivedAt);
    this.#replayEarly(call, event.callId);
  }

  #rejectConnect(event: ConnectEvent, { outcome, reason }: MetaRefusal): void {
    const log = this.#log.child({ callId: event.callId, direction: 'user_initiated', pageId: event.pageId });
    log.warn({ outcome, reason }, 'refusing Messenger call');
    this.#deps.metrics?.callStarted('user_initiated');
    this.#deps.metrics?.callEnded('user_initiated', outcome, 0);
    this.#deps.graph
      .reject(event.pageId, event.callId, AbortSignal.timeout(this.#options.graphTimeoutMs * 2))
      .then(
        () => log.info({ action: 'reject' }, 'Meta reject sent'),
        (err: unknown) => log.warn({ err }, 'Graph reject failed'),
      )
      .finally(() =>
        log.info(
          { summary: { direction: 'user_initiated', pageId: event.pageId, psid: this.#psidForLog(event.from), outcome, reason, metaCallId: event.callId } },
          'call summary',
        ),
      );
  }

  // ------------------------------------------------------------------------------------------------------------
  // PBX INVITEs
  // ------------------------------------------------------------------------------------------------------------

  #handleInvite(incoming: IncomingCall): void {
    const opts = this.#options;
    const pageId = incoming.pageId ?? opts.defaultPageId;
    const refuse = (refusal: SipRefusal, detail?: string): void => {
      const log = this.#log.child({ sipCallId: incoming.sipCallId, direction: 'business_initiated' });
      log.warn({ status: refusal.status, reason: refusal.reason, detail, source: incoming.sourceAddress }, 'refusing INVITE from the PBX');
      this.#deps.metrics?.callStarted('business_initiated');
      this.#deps.metrics?.callEnded('business_initiated', refusal.outcome, 0);
      incoming.reject(refusal.status, refusal.reason, refusal.retryAfterS);
      const summary = { direction: 'business_initiated', outcome: refusal.outcome, sipStatus: refusal.status, reason: detail ?? refusal.reason, sipCallId: incoming.sipCallId };
      log.info({ summary }, 'call summary');
    };
    try {
      if (this.#closed || this.#draining) return refuse(REFUSALS.draining);
      if (this.registry.has(`b-${incoming.sipCallId}`)) return refuse(REFUSALS.duplicateCallId);
      const limited = this.#sources.check(incoming.sourceAddress);
      if (limited) return refuse(limited === 'rate' ? REFUSALS.sourceRate : REFUSALS.sourceConcurrent, incoming.sourceAddress);
      const gate = this.#deps.admit?.();
      if (gate) return refuse(gate);
      const refusal = this.#admissionRefusal();
      if (refusal) return refuse(refusalForAdmission(refusal), refusal.detail);
      if (!this.#deps.media.healthy) return refuse(REFUSALS.mediaDown);
      if (!incoming.psid) return refuse(REFUSALS.noPsid);
      if (!pageId || !opts.pageIds.has(pageId)) return refuse(REFUSALS.unknownPage, `page ${pageId ?? '(none)'}`);
    } catch (err) {
      this.#log.error({ err }, 'INVITE handling failed');
      return;
    }
    const call = this.#newCall('business_initiated', `b-${incoming.sipCallId}`, pageId, incoming.psid, undefined);
    call.route = {
      name: 'outbound',
      targets: [],
      targetTimeoutMs: 0,
      codecs: [...opts.businessCodecs],
      answerMode: 'on_pbx_answer',
      srtp: opts.pbxSrtp ?? 'off',
    };
    call.log.info({ to: this.#psidForLog(incoming.psid), source: incoming.sourceAddress }, 'outgoing Messenger call from the PBX');
    this.#track(call);
    this.#sources.hold(incoming.sourceAddress, call.done);
    void call.runBusinessInitiated(incoming, (metaCallId) => {
      this.registry.bindMetaCallId(call, metaCallId);
      this.#replayEarly(call, metaCallId);
    });
  }

  /**
   * Count and load admission, the same for both directions: undefined takes the call; a refusal (`max_concurrent`,
   * or the load signals of calls/Admission) is counted by reason.
   */
  #admissionRefusal(): Extract<AdmissionVerdict, { admit: false }> | undefined {
    const max = this.#options.maxConcurrent;
    const verdict: AdmissionVerdict =
      this.registry.size >= max
        ? { admit: false, reason: 'capacity', detail: `at capacity (${max} calls)`, retryAfterS: this.#deps.admission?.retryAfterS ?? 5 }
        : (this.#deps.admission?.admit(this.registry.size) ?? { admit: true });
    if (verdict.admit) return undefined;
    this.#deps.metrics?.callRefused?.(verdict.reason);
    return verdict;
  }

  // ------------------------------------------------------------------------------------------------------------
  // Lifecycle
  // ------------------------------------------------------------------------------------------------------------

  /**
   * Refuse new calls, let live ones finish for up to `timeoutMs`, then hang up the rest.
   * Resolves when no call is left.
   */
  async drain(timeoutMs: number): Promise<void> {
    this.#draining = true;
    this.#log.info({ activeCalls: this.registry.size, timeoutMs }, 'draining: new calls are refused');
    if (this.registry.size === 0) return;
    const timer = setTimeout(() => {
      this.#log.warn({ activeCalls: this.registry.size }, 'drain timeout: ending the remaining calls');
      for (const call of this.registry.all()) call.hangUp('bridge shutting down');
    }, timeoutMs);
    await this.registry.whenEmpty();
    clearTimeout(timer);
  }

  /** Hang up every call now and stop taking new ones. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#deps.sip.off('invite', this.#onInvite);
    for (const call of this.registry.all()) call.hangUp('bridge shutting down');
    await this.registry.whenEmpty();
    this.#early.clear();
  }

  // ------------------------------------------------------------------------------------------------------------

  #newCall(direction: CallDirection, id: string, pageId: string, psid: string, metaCallId: string | undefined): CallSession {
    const opts = this.#options;
    const log = this.#deps.log.child({ callId: id, direction, pageId, psid: this.#psidForLog(psid) });
    return new CallSession({
      id,
      direction,
      pageId,
      psid,
      psidLabel: this.#psidForLog(psid),
      metaCallId,
      deps: { sip: this.#deps.sip, media: this.#deps.media, legs: this.#deps.legs, graph: this.#deps.graph, metrics: this.#deps.metrics, log, options: opts },
    });
  }

  #track(call: CallSession): void {
    this.registry.add(call);
    this.#deps.metrics?.callStarted(call.direction);
    void call.done.then(() => this.registry.remove(call));
  }

  #replayEarly(call: CallSession, metaCallId: string): void {
    const entry = this.#early.get(metaCallId);
    if (!entry) return;
    this.#early.delete(metaCallId);
    for (const event of entry.events) {
      if (event.kind === 'connect') continue;
      try {
        this.#dispatch(call, event);
      } catch (err) {
        call.log.warn({ err: reasonOf(err) }, 'replaying an early event failed');
      }
    }
  }

  #psidForLog(psid: string): string {
    if (!this.#options.hashPsid) return psid;
    return `sha256:${createHash('sha256').update(psid).digest('hex').slice(0, 16)}`;
  }
}

