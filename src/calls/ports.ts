/**
 * The ports the call controller talks through. `sip/`, `media/`, `messenger/`, `graph/` and `webhook/`
 * implement or produce these; `calls/` never imports those folders, only this file.
 */
import type { Logger } from 'pino';
import type { MessengerLegError, MediaError } from '../core/errors.js';
import type { TypedEmitter } from '../core/TypedEmitter.js';

// ---------------------------------------------------------------------------------------------------------------
// Events from Meta (produced by webhook/, already verified, validated and de-duplicated)
// ---------------------------------------------------------------------------------------------------------------

export interface SdpSession {
  sdpType: 'offer' | 'answer';
  sdp: string;
}

interface MetaEventBase {
  /** The Page the webhook entry was for (`entry[].id`). */
  pageId: string;
  /** Meta's call id (`calls[].id`). */
  callId: string;
  /** Unix seconds, as Meta sent it. */
  timestamp: number;
}

export interface ConnectEvent extends MetaEventBase {
  kind: 'connect';
  /** Caller: PSID for user_initiated calls. */
  from: string;
  /** Callee: page id for user_initiated calls. */
  to: string;
  direction: 'user_initiated' | 'business_initiated';
  /** Present only if Meta ever sends its own offer with connect (WhatsApp-style). */
  session?: SdpSession;
}

export interface CallStatusEvent extends MetaEventBase {
  kind: 'call_status';
  recipientId?: string;
  /** 'ringing' | 'accepted', or a value Meta adds later (logged, otherwise ignored). */
  status: string;
}

export interface MediaUpdateEvent extends MetaEventBase {
  kind: 'media_update';
  /** Meta's session.version; only the highest one seen is applied. */
  version: number;
  session: SdpSession;
}

export interface TerminateEvent extends MetaEventBase {
  kind: 'terminate';
  /** 'Completed' | 'Failed' */
  status?: string;
  startTime?: number;
  endTime?: number;
  /** Seconds, counted from when the business connected. */
  duration?: number;
}

export interface PermissionReplyEvent {
  kind: 'call_permission_reply';
  pageId: string;
  psid: string;
  timestamp: number;
  /** e.g. 'granted' | 'declined' (raw Meta text). */
  response?: string;
  /** Unix seconds when the permission expires, if Meta says. */
  expiresAt?: number;
  raw: unknown;
}

export type MetaCallEvent = ConnectEvent | CallStatusEvent | MediaUpdateEvent | TerminateEvent;
export type MetaEvent = MetaCallEvent | PermissionReplyEvent;

/** Where the webhook layer hands verified events. Must not throw and must return quickly. */
export interface MetaEventSink {
  handleMetaEvent(event: MetaEvent): void;
}

// ---------------------------------------------------------------------------------------------------------------
// Graph API (implemented by graph/GraphClient)
// ---------------------------------------------------------------------------------------------------------------

export interface AcceptResult {
  /** Meta's SDP answer to our offer. */
  sdpAnswer: string;
  /** Meta's renegotiation offer, to apply right after the answer (may be absent). */
  sdpRenegotiation?: string;
}

export interface ConnectResult {
  /** Meta's call id for the new business-initiated call. */
  callId: string;
  /** Meta's SDP answer, when it came with the connect response (else it comes with media_update). */
  sdpAnswer?: string;
}

export interface PermissionResult {
  /** True when the business may call this person now. */
  canCall: boolean;
  /** Unix seconds when the permission expires, if known. */
  expiresAt?: number;
  raw: unknown;
}

export interface TrackUpdate {
  msid?: string;
  label: string;
  status: 'enabled' | 'disabled';
}

export interface GraphPort {
  accept(pageId: string, callId: string, sdpOffer: string, signal?: AbortSignal): Promise<AcceptResult>;
  reject(pageId: string, callId: string, signal?: AbortSignal): Promise<void>;
  terminate(pageId: string, callId: string, signal?: AbortSignal): Promise<void>;
  connect(pageId: string, psid: string, sdpOffer: string, signal?: AbortSignal): Promise<ConnectResult>;
  checkPermission(pageId: string, psid: string, signal?: AbortSignal): Promise<PermissionResult>;
  /** Send the `calling_optin` permission request template message. */
  requestPermission(pageId: string, psid: string, signal?: AbortSignal): Promise<void>;
  /** Submit a call's quality to Meta after it ended (`POST /{page-id}/call_metrics`, docs/META-CALLING.md). */
  submitCallMetrics?(pageId: string, report: CallMetricsReport, signal?: AbortSignal): Promise<void>;
}

/** The body of Meta's call_metrics endpoint, as its Metrics page lists it. */
export interface CallMetricsReport {
  platform: 'messenger';
  call_id: string;
  end_call_reason: string;
  end_call_subreason?: string;
  /** Unix s. */
  call_ended_time: number;
  /** Unix s of the first audio packet from the person. */
  first_audio_packet_received_time?: number;
  audio_stats: Record<string, number>;
}

// ---------------------------------------------------------------------------------------------------------------
// Messenger leg (implemented by messenger/): full ICE (controlling), DTLS client, SRTP, BUNDLE, rtcp-mux
// ---------------------------------------------------------------------------------------------------------------

export interface MessengerNegotiated {
  /** Opus payload type in use toward Meta. */
  opusPt: number;
  /** telephone-event toward Meta, when Meta's SDP kept it. */
  telephoneEvent?: { pt: number; clockRate: number };
}

export interface MessengerLegEvents {
  /** ICE and DTLS are up; SRTP flows. */
  connected: [];
  /** One event, once: ICE, DTLS or consent failure. The leg is closed after it. */
  failed: [MessengerLegError];
  closed: [];
}

/** What Meta's RTCP reception reports say of the audio we send it. */
export interface RemoteReport {
  /** Fraction lost since Meta's previous report (0-1). */
  fractionLost: number;
  cumulativeLost: number;
  jitterMs: number;
  /** Mean round trip over the call (ms), from the far end's reports on our sender reports (RFC 3550 LSR/DLSR). */
  rttMs?: number;
}

/**
 * The leg as the call controller drives it: signalling only. Its audio (`RtpEndpoint`, in messenger/) stays with the
 * call's media, on the media thread that carries the call.
 */
export interface MessengerLeg extends TypedEmitter<MessengerLegEvents> {
  readonly closed: boolean;
  /** Our SDP offer (accept and connect both send it). */
  createOffer(): Promise<string>;
  /** Apply Meta's answer to our offer. Rejects with MessengerLegError('sdp') on an unusable answer. */
  applyAnswer(sdp: string): Promise<void>;
  /** Apply an offer from Meta (media_update, or a connect carrying an offer); returns our answer (setup:active). */
  applyOffer(sdp: string): Promise<string>;
  /** What was negotiated with Meta; undefined until an answer/offer was applied. */
  negotiated(): MessengerNegotiated | undefined;
  /** Resolves once connected; rejects with the leg's MessengerLegError, or on `signal`. */
  whenConnected(signal?: AbortSignal): Promise<void>;
  /** Meta's latest RTCP reception report about our stream, when the leg reads RTCP. */
  remoteReport?(): RemoteReport | undefined;
  /** Idempotent. */
  close(): void;
}

export interface MessengerLegFactory {
  create(options: { callId: string; log: Logger }): MessengerLeg;
}

// ---------------------------------------------------------------------------------------------------------------
// Media engine (implemented by media/): mediasoup router per call, PlainTransport toward the PBX, transcoder, DTMF
// ---------------------------------------------------------------------------------------------------------------

export type PbxCodecName = 'opus' | 'PCMU' | 'PCMA';

/**
 * SRTP (SDES keys) toward the PBX: 'off' plain RTP only (an RTP/SAVP offer is refused with 488); 'optional' answers
 * whichever the PBX offers and offers plain RTP; 'prefer' offers RTP/SAVP and takes a plain answer; 'required' offers
 * RTP/SAVP and refuses plain RTP (488, or the call fails when the PBX answers plain).
 */
export type SrtpMode = 'off' | 'optional' | 'prefer' | 'required';

export interface DtmfEvent {
  /** '0'-'9', '*', '#', 'A'-'D' */
  digit: string;
  durationMs: number;
}

export interface CallMediaEvents {
  /** The media path failed (worker died, transport closed under us). The call must end. */
  failed: [MediaError];
  /**
   * A digit crossed the bridge (for logs and metrics). `via` says how it went out on the destination leg:
   * RFC 4733 events, or in the audio ('inband': toward Meta as generated tones; toward a PBX that negotiated no
   * telephone-event, as the person's own tones, passed on unchanged, so a controller may also send it as SIP INFO),
   * or not at all ('none': Meta sent it as an RFC 4733 event and the PBX negotiated no telephone-event, so only SIP
   * INFO can carry it).
   */
  dtmf: [DtmfEvent & { direction: 'to_pbx' | 'to_messenger'; via?: 'rfc4733' | 'inband' | 'none' }];
  /**
   * One-way audio: no audio from `silentSide` for `silentForMs` while the other side speaks (`active` true when it
   * starts), or its audio came back (`active` false).
   */
  oneWayAudio: [{ silentSide: 'messenger' | 'pbx'; silentForMs: number; active: boolean }];
}

/** Quality of the audio received from one leg (media/quality/CallQuality.ts). */
export interface LegQualityStats {
  packets: number;
  lost: number;
  lossPct: number;
  jitterMs: number;
  rttMs?: number;
  /** Estimated MOS (simplified ITU-T G.107 E-model). */
  mos: number;
  /** ms from the start of bridging to the first audio from this leg. */
  firstAudioMs?: number;
}

export interface CallQualityStats {
  /** The person's audio as the bridge receives it from Meta (RTT from Meta's RTCP reports). */
  fromMessenger: LegQualityStats;
  /** The PBX's audio as the bridge receives it (RTT from the PBX's RTCP reports on our sender reports). */
  fromPbx: LegQualityStats;
  /** Meta's RTCP reports on the audio we send it. */
  atMessenger?: RemoteReport;
  /** The PBX's RTCP reports on the audio we send it. */
  atPbx?: RemoteReport;
  /** Unix ms of the first packet from Meta. */
  firstPacketFromMessengerAt?: number;
  /** The side silent now, when one-way audio is in progress. */
  oneWayAudio?: 'messenger' | 'pbx';
}

export interface CallMediaStats {
  codec?: string;
  /** SDES suite in use toward the PBX (absent: plain RTP). */
  srtp?: string;
  transcoding: boolean;
  toPbx: { packets: number; lost: number; jitterMs: number };
  toMessenger: { packets: number; lost: number; jitterMs: number };
  quality?: CallQualityStats;
}

export interface CallMedia extends TypedEmitter<CallMediaEvents> {
  readonly closed: boolean;
  /** Codec chosen toward the PBX once negotiated. */
  readonly pbxCodec: PbxCodecName | undefined;
  /** SDP offer toward the PBX (consumer-initiated INVITE), codecs in the configured preference. */
  createPbxOffer(): string;
  /** Apply the PBX's answer to our offer. Throws MediaError('NO_COMMON_CODEC' | 'SDP_INVALID'). */
  applyPbxAnswer(sdp: string): void;
  /** Answer an offer from the PBX (business-initiated INVITE, or re-INVITE: hold, unhold, new address). */
  answerPbxOffer(sdp: string): string;
  /**
   * Both sides are negotiated: bridge audio (and DTMF) between the Messenger leg and the PBX.
   * Idempotent; call again after any renegotiation on either side.
   */
  start(): void;
  /**
   * Start sending toward Meta before the PBX side is negotiated (silence, so that Meta, which drops calls that
   * receive nothing, keeps an accepted call while the PBX rings). Needs the Messenger leg negotiated; idempotent;
   * `start()` later bridges as usual.
   */
  startSendingToMessenger(): void;
  /** A digit from the PBX by SIP INFO: send it toward Meta (RFC 4733, or in-band tones). */
  sendDtmfToMessenger(event: DtmfEvent): void;
  stats(): CallMediaStats;
  /**
   * The counters as they are now, for the end of the call: asked just before `close()`, and answered from before the
   * close. Media on a media thread implements it (its `stats()` are the thread's last report, up to one report
   * interval old, which would leave out the call's last second and any RTCP report received in it).
   */
  finalStats?(timeoutMs: number): Promise<CallMediaStats>;
  /** Idempotent; frees the router, transports, ports and timers. */
  close(): void;
}

export interface MediaEngine {
  /** At least one worker is alive. */
  readonly healthy: boolean;
  createCallMedia(options: {
    callId: string;
    log: Logger;
    messenger: MessengerLeg;
    /** Preference order toward the PBX (route's, else config default). */
    codecs: PbxCodecName[];
    /** SRTP toward the PBX (route's, else `media.srtp`); default 'off'. */
    srtp?: SrtpMode;
  }): Promise<CallMedia>;
}

// ---------------------------------------------------------------------------------------------------------------
// SIP (implemented by sip/ over drachtio-srf)
// ---------------------------------------------------------------------------------------------------------------

export interface SipDialogEvents {
  /** The far end sent BYE. */
  bye: [];
  /** SIP INFO with a DTMF digit (application/dtmf-relay or application/dtmf). */
  dtmf: [DtmfEvent];
}

/**
 * A REFER from the PBX (RFC 3515) whose Refer-To is a sip: or sips: URI; REFERs without a usable Refer-To were
 * already answered 400. The handler answers it once: `accept()` or `reject()`.
 */
export interface TransferRequest {
  /** The Refer-To URI without its header part (`?Replaces=...`), e.g. `sip:agent-b@pbx.example`. */
  readonly target: string;
  /** Headers embedded in the Refer-To URI, URI-decoded (attended transfer: `Replaces`). Go on the new INVITE. */
  readonly headers: Readonly<Record<string, string>>;
  /** The REFER's Referred-By header, if it had one. */
  readonly referredBy?: string;
  /** 202 Accepted, then NOTIFY `SIP/2.0 100 Trying` (subscription active). */
  accept(): void;
  /** A final error response instead of 202 (403, 491 ...), with a Reason header. */
  reject(status: number, reason: string): void;
  /**
   * The last NOTIFY: the new target's final status as sipfrag (`SIP/2.0 486 Busy Here`), subscription terminated.
   * Resolves when the transferor answered it (or it could not be sent: the dialog ended); never rejects.
   */
  notifyFinal(status: number, reason: string): Promise<void>;
}

export interface SipDialog extends TypedEmitter<SipDialogEvents> {
  readonly id: string;
  readonly ended: boolean;
  /** The address the PBX side of the dialog sent its INVITE or 200 OK from (a default transfer host). */
  readonly peerAddress?: string;
  /**
   * Handler for re-INVITEs (hold, unhold, new address): gets the PBX's offer, returns our answer.
   * Throwing answers 488.
   */
  setReinviteHandler(handler: (offer: string) => string): void;
  /** Handler for REFERs (transfer). Without one a REFER is answered 501. A throwing handler answers 500. */
  setTransferHandler(handler: (request: TransferRequest) => void): void;
  /**
   * Send a digit as SIP INFO (`application/dtmf-relay`). INFOs go one at a time, in order; resolves when the PBX
   * answered 2xx, rejects otherwise (or when the dialog has ended).
   */
  sendDtmf(event: DtmfEvent): Promise<void>;
  /** Send BYE (idempotent). */
  end(): Promise<void>;
}

export interface OutboundCallOptions {
  /** SIP URIs tried in turn on failure or timeout. */
  targets: string[];
  /** Extra headers (caller context). */
  headers: Record<string, string>;
  /** From user part, display name. */
  from?: { user: string; displayName?: string };
  sdp: string;
  /** Per-target timeout before CANCEL and the next target (ms). */
  targetTimeoutMs: number;
  /** Aborting CANCELs the pending INVITE; the promise rejects with SipError(487). */
  signal: AbortSignal;
  /** 18x provisional responses; `sdp` is the early-media answer a 183 (or 180) carried, if any. */
  onProgress?: (status: number, target: string, sdp?: string) => void;
}

export interface OutboundCallResult {
  dialog: SipDialog;
  /** The PBX's SDP answer. */
  sdp: string;
  /** The target that answered. */
  target: string;
  status: number;
}

export interface IncomingCallEvents {
  /** The PBX sent CANCEL before we answered. */
  cancel: [];
}

export interface IncomingCall extends TypedEmitter<IncomingCallEvents> {
  /** SIP Call-ID. */
  readonly sipCallId: string;
  /** Target PSID, from the Request-URI user part or the configured header. */
  readonly psid: string | undefined;
  /** Target page id, from the configured header, else undefined (the controller applies the default page). */
  readonly pageId: string | undefined;
  readonly sourceAddress: string;
  /** The PBX's SDP offer (may be empty: late offer is not supported and is refused with 488). */
  readonly sdp: string;
  readonly canceled: boolean;
  /** 180 Ringing (once). */
  ringing(): void;
  /** 200 OK with our SDP answer; resolves with the dialog once ACKed or sent. */
  answer(sdp: string): Promise<SipDialog>;
  /** Final error response with a Reason header (and a Retry-After header, in seconds, when given). */
  reject(status: number, reason: string, retryAfterS?: number): void;
}

export interface SipPortEvents {
  /** A new INVITE that passed the ACL and digest auth. */
  invite: [IncomingCall];
  /** Connection to drachtio-server went up or down. */
  connection: [boolean];
}

export interface SipPort extends TypedEmitter<SipPortEvents> {
  /** Connected to drachtio-server. */
  readonly connected: boolean;
  /** Send an INVITE to the targets in turn. Rejects with SipError (final status of the last target). */
  invite(options: OutboundCallOptions): Promise<OutboundCallResult>;
}

// ---------------------------------------------------------------------------------------------------------------
// Routing and metrics, as the controller sees them (the daemon adapts config/ and observability/ to these)
// ---------------------------------------------------------------------------------------------------------------

export interface CallRoute {
  name: string;
  /** SIP URIs tried in turn. */
  targets: string[];
  /** Per-target ring timeout before the next target (ms). */
  targetTimeoutMs: number;
  /** Codec preference toward the PBX. */
  codecs: PbxCodecName[];
  /** 'on_pbx_answer': accept toward Meta when the PBX answers (default); 'immediate': accept at once. */
  answerMode: 'on_pbx_answer' | 'immediate';
  /** SRTP toward the PBX (SDES); default 'off'. */
  srtp?: SrtpMode;
}

export type CallDirection = 'user_initiated' | 'business_initiated';

/** How a call ended, for metrics labels and the summary line. */
export type CallOutcome =
  | 'completed'
  | 'rejected_no_route'
  | 'rejected_capacity'
  | 'rejected_overload'
  | 'rejected_draining'
  | 'rejected_pbx'
  | 'rejected_no_permission'
  | 'rejected_unknown_page'
  | 'rejected_invalid'
  | 'pbx_timeout'
  | 'canceled'
  | 'meta_error'
  | 'media_failed'
  | 'sip_failed'
  | 'not_answered';

export type TransferResult = 'succeeded' | 'failed' | 'refused' | 'canceled';

export interface CallMetricsSink {
  callStarted(direction: CallDirection): void;
  callEnded(direction: CallDirection, outcome: CallOutcome, durationSeconds: number): void;
  /** connect webhook received -> INVITE sent (seconds). */
  webhookToInvite(seconds: number): void;
  /** PBX 200 OK received -> Graph accept sent (seconds). */
  pbxAnswerToAccept(seconds: number): void;
  dtmf(direction: 'to_pbx' | 'to_messenger'): void;
  permissionReply(response: string): void;
  /**
   * A transfer (REFER from the PBX) ended: 'succeeded' (the new target answered), 'failed' (it did not),
   * 'refused' (the REFER was answered with an error), 'canceled' (the call ended during the transfer).
   */
  transfer?(result: TransferResult): void;
  /** A new call was refused for load or count (before any call state was made). */
  callRefused?(reason: RefusalReason): void;
  /** Media of a call started bridging (once per call); `transcoding` is false for Opus passthrough. */
  mediaStarted?(callId: string, transcoding: boolean): void;
  /** Media counters of a call since its previous report; `final` on the last report, when the call ends. */
  mediaStats?(callId: string, delta: CallMediaStats, final: boolean): void;
  /** The call state machine refused `event` in `state` (calls/callState.ts): nothing changed. */
  callEventRefused(state: string, event: string): void;
  /** One-way audio started (`active`) or ended (audio back, or the call ended) on a call. */
  oneWayAudio?(silentSide: 'messenger' | 'pbx', active: boolean): void;
  /** A call metrics report to Meta was answered (ok) or failed (error). */
  callMetricsReport?(result: 'ok' | 'error'): void;
}

// ---------------------------------------------------------------------------------------------------------------
// Admission by load (calls/Admission decides; observability/LoadMonitor and the media engine read the signals)
// ---------------------------------------------------------------------------------------------------------------

/**
 * What a load reading measures. A fixed set: each is a label value of `msb_calls_refused_total{reason}`.
 * - `event_loop_delay`: how late a thread's timers ran in the last sample (ms, 90th percentile).
 * - `event_loop_utilization`: share of the last sample a thread spent running code (0-1).
 * - `media_worker_cpu`: CPU of one mediasoup worker process in the last sample (share of one core, 0-1+).
 * - `late_audio`: audio packets dropped for arriving too late (LateAudioGuard), per second.
 * - `cpu_wait`: share of the last sample a thread was ready to run but waited for a CPU (0-1; Linux schedstat): the
 *   machine as a whole is full (other processes on the same cores), which the thread's own signals barely show.
 */
export type LoadSignalKind = 'event_loop_delay' | 'event_loop_utilization' | 'media_worker_cpu' | 'late_audio' | 'cpu_wait';

export const LOAD_SIGNAL_KINDS: readonly LoadSignalKind[] = ['event_loop_delay', 'event_loop_utilization', 'media_worker_cpu', 'late_audio', 'cpu_wait'];

/** One reading of one signal from one source (a thread, a worker process, the whole media path). */
export interface LoadReading {
  kind: LoadSignalKind;
  /** Where it was read: 'main', 'media-thread-1', 'mediasoup-worker-0', 'all calls'. Stable across samples. */
  source: string;
  /** In the kind's unit (see LoadSignalKind). */
  value: number;
}

/**
 * A source of load readings, asked once per sample interval. Media threads, workers and anything else that can
 * tell the bridge is falling behind implement it; the daemon adds them to its LoadMonitor.
 */
export interface LoadSignalSource {
  /** Readings for the time since the previous call (`elapsedMs` of it). Must not throw and must return quickly. */
  read(elapsedMs: number): LoadReading[];
  /** Stop measuring (idempotent). */
  close?(): void;
}

/** Why a call is refused for load or count (fixed set: the `reason` label of `msb_calls_refused_total`). */
export type RefusalReason = 'capacity' | 'setup_rate' | LoadSignalKind;

export type AdmissionVerdict =
  | { admit: true }
  | {
      admit: false;
      reason: RefusalReason;
      /** For logs and the summary line, e.g. `event_loop_utilization on main 0.91 (limit 0.85)`. */
      detail: string;
      /** Seconds the far end should wait before trying again (SIP Retry-After). */
      retryAfterS: number;
    };

/**
 * One place a call's media can be put (a media thread), as admission sees it: the load readings whose source is
 * `source` (or starts with `source/`) are the place's own, and tell what its `carrying` calls cost.
 */
export interface MediaPlace {
  index: number;
  /** Source name of the place's readings ('media-thread-0'); its mediasoup workers' are 'media-thread-0/...'. */
  source: string;
  /** Serving calls now. */
  ready: boolean;
  /** Calls whose whole cost is in the place's last readings. */
  carrying: number;
  /** Calls placed or reserved on the place and not yet in `carrying` (their cost is still to come). */
  pending: number;
}

/**
 * Where calls' media goes, for admission: each place's figures, and a reservation for the call just admitted
 * (the next call's media is put on the place reserved first, so admission and placement agree).
 */
export interface MediaPlaces {
  places(): MediaPlace[];
  reserve(index: number): void;
}

/** What the controller asks before taking a call (after its own checks of draining and `max_concurrent`). */
export interface AdmissionPort {
  /** Decide for one new call, `activeCalls` being the calls held now; an admitted call counts toward the setup rate. */
  admit(activeCalls: number): AdmissionVerdict;
  /** Retry-After (seconds) for refusals the controller makes itself (`max_concurrent`). */
  readonly retryAfterS: number;
}
