/**
 * Prometheus metrics on a registry of their own (no global default registry: tests create many).
 * Methods are named for what happened; labels stay low-cardinality (no call ids, no PSIDs).
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { RtpDropReason } from '../core/rtp.js';
import { LOAD_SIGNAL_KINDS, type CallQualityStats, type LoadSignalKind, type RefusalReason } from '../calls/ports.js';

/** Every `reason` of msb_calls_refused_total (all exported at 0 from the start). */
export const REFUSAL_REASONS: readonly RefusalReason[] = ['capacity', 'setup_rate', ...LOAD_SIGNAL_KINDS];

export type WebhookResult =
  | 'accepted'
  | 'duplicate'
  | 'stale'
  | 'invalid'
  | 'unknown_page'
  | 'bad_signature'
  | 'missing_signature'
  | 'over_limit';

/** The `event` label of msb_webhooks_total: a fixed set (anything else from a webhook counts as `other`). */
const WEBHOOK_EVENTS = new Set(['(none)', 'connect', 'call_status', 'media_update', 'terminate', 'call_permission_reply', 'envelope', 'post']);

/** The `response` label of msb_permission_replies_total: a fixed set (anything else counts as `other`). */
const PERMISSION_RESPONSES = new Set(['approve', 'accept', 'granted', 'reject', 'decline', 'declined', 'denied', 'unknown']);

export type MediaDirection = 'to_pbx' | 'to_messenger';

export interface MetricsOptions {
  /** Also collect Node process metrics (CPU, memory, event loop lag). Default false. */
  processMetrics?: boolean;
}

const SETUP_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const GRAPH_BUCKETS = [0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10];
const JITTER_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16];
const DURATION_BUCKETS = [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600];

export class Metrics {
  readonly registry: Registry;

  readonly #callsStarted: Counter<'direction'>;
  readonly #callsEnded: Counter<'direction' | 'outcome'>;
  readonly #callsActive: Gauge<'direction'>;
  readonly #callDuration: Histogram<'direction'>;
  readonly #webhookToInvite: Histogram;
  readonly #pbxAnswerToAccept: Histogram;
  readonly #webhooks: Counter<'event' | 'result'>;
  readonly #graphRequests: Counter<'action' | 'result' | 'code'>;
  readonly #graphSeconds: Histogram<'action'>;
  readonly #sipResponses: Counter<'direction' | 'code'>;
  readonly #mediaPackets: Counter<'direction'>;
  readonly #mediaLost: Counter<'direction'>;
  readonly #mediaJitter: Histogram<'direction'>;
  readonly #transcoding: Gauge;
  readonly #workerRestarts: Counter;
  readonly #drachtioConnected: Gauge;
  readonly #permissionReplies: Counter<'response'>;
  readonly #dtmfDigits: Counter<'direction'>;
  readonly #transfers: Counter<'result'>;
  readonly #rtpDropped: Counter<'reason'>;
  readonly #callQuality: Record<'mos' | 'loss' | 'jitter' | 'rtt' | 'firstAudio', Histogram<'leg'>>;
  readonly #oneWayAudioCalls: Gauge<'silent_side'>;
  readonly #oneWayAudioTotal: Counter<'silent_side'>;
  readonly #callMetricsReports: Counter<'result'>;
  readonly #patchesDegraded: Gauge<'dependency' | 'patch'>;
  readonly #refused: Counter<'reason'>;
  readonly #load: Gauge<'signal'>;
  readonly #loadLimit: Gauge<'signal'>;
  readonly #refusingByLoad: Gauge;
  readonly #callEventsRefused: Counter<'state' | 'event'>;
  readonly #threadRestarts: Counter;
  readonly #threadCalls: Gauge<'thread'>;
  readonly #threadLoopDelay: Gauge<'thread'>;
  readonly #lateDropped: Counter;
  /** Late drops per thread as last reported (the reports carry totals since each thread started). */
  readonly #lateSeen = new Map<string, number>();

  constructor(options: MetricsOptions = {}) {
    const registers = [(this.registry = new Registry())];
    if (options.processMetrics) collectDefaultMetrics({ register: this.registry, prefix: 'msb_' });
    this.#callsStarted = new Counter({
      name: 'msb_calls_started_total',
      help: 'Calls started, by direction (user_initiated | business_initiated)',
      labelNames: ['direction'],
      registers,
    });
    this.#callsEnded = new Counter({
      name: 'msb_calls_ended_total',
      help: 'Calls ended, by direction and outcome',
      labelNames: ['direction', 'outcome'],
      registers,
    });
    this.#callsActive = new Gauge({
      name: 'msb_calls_active',
      help: 'Calls in progress, by direction',
      labelNames: ['direction'],
      registers,
    });
    this.#callDuration = new Histogram({
      name: 'msb_call_duration_seconds',
      help: 'Duration of ended calls (seconds)',
      labelNames: ['direction'],
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.#webhookToInvite = new Histogram({
      name: 'msb_setup_webhook_to_invite_seconds',
      help: 'connect webhook received -> INVITE sent to the PBX (seconds)',
      buckets: SETUP_BUCKETS,
      registers,
    });
    this.#pbxAnswerToAccept = new Histogram({
      name: 'msb_setup_pbx_answer_to_accept_seconds',
      help: 'PBX 200 OK -> Graph accept sent (seconds)',
      buckets: SETUP_BUCKETS,
      registers,
    });
    this.#webhooks = new Counter({
      name: 'msb_webhooks_total',
      help: 'Webhook events (or whole POSTs for signature failures), by event and result',
      labelNames: ['event', 'result'],
      registers,
    });
    this.#graphRequests = new Counter({
      name: 'msb_graph_requests_total',
      help: 'Graph API requests, by action, result (ok | error | timeout | network) and Meta error code',
      labelNames: ['action', 'result', 'code'],
      registers,
    });
    this.#graphSeconds = new Histogram({
      name: 'msb_graph_request_seconds',
      help: 'Graph API request latency (seconds), by action',
      labelNames: ['action'],
      buckets: GRAPH_BUCKETS,
      registers,
    });
    this.#sipResponses = new Counter({
      name: 'msb_sip_responses_total',
      help: 'Final SIP responses, by direction (sent | received) and status code',
      labelNames: ['direction', 'code'],
      registers,
    });
    this.#mediaPackets = new Counter({
      name: 'msb_media_packets_total',
      help: 'RTP packets forwarded, by direction',
      labelNames: ['direction'],
      registers,
    });
    this.#mediaLost = new Counter({
      name: 'msb_media_packets_lost_total',
      help: 'RTP packets lost, by direction',
      labelNames: ['direction'],
      registers,
    });
    this.#mediaJitter = new Histogram({
      name: 'msb_media_jitter_seconds',
      help: 'Interarrival jitter samples (seconds), by direction',
      labelNames: ['direction'],
      buckets: JITTER_BUCKETS,
      registers,
    });
    this.#transcoding = new Gauge({
      name: 'msb_transcoding_sessions',
      help: 'Calls currently transcoding between Opus and G.711',
      registers,
    });
    this.#workerRestarts = new Counter({
      name: 'msb_worker_restarts_total',
      help: 'Media workers that died and were replaced',
      registers,
    });
    this.#drachtioConnected = new Gauge({
      name: 'msb_drachtio_connected',
      help: '1 while connected to drachtio-server',
      registers,
    });
    this.#permissionReplies = new Counter({
      name: 'msb_permission_replies_total',
      help: 'call_permission_reply webhooks, by response',
      labelNames: ['response'],
      registers,
    });
    this.#dtmfDigits = new Counter({
      name: 'msb_dtmf_digits_total',
      help: 'DTMF digits bridged, by direction (to_pbx | to_messenger)',
      labelNames: ['direction'],
      registers,
    });
    this.#threadRestarts = new Counter({
      name: 'msb_media_thread_restarts_total',
      help: 'Media threads that died and were replaced',
      registers,
    });
    this.#threadCalls = new Gauge({
      name: 'msb_media_thread_calls',
      help: 'Calls whose media a media thread carries, by thread',
      labelNames: ['thread'],
      registers,
    });
    this.#threadLoopDelay = new Gauge({
      name: 'msb_media_thread_event_loop_delay_seconds',
      help: "A media thread's event-loop delay over its last report (90th percentile, as msb_load reads it), by thread",
      labelNames: ['thread'],
      registers,
    });
    this.#lateDropped = new Counter({
      name: 'msb_media_late_packets_dropped_total',
      help: 'Audio packets dropped because the bridge read or forwarded them too late (a media path that fell behind)',
      registers,
    });
    this.#transfers = new Counter({
      name: 'msb_transfers_total',
      help: 'Transfers by REFER from the PBX, by result (succeeded | failed | refused | canceled)',
      labelNames: ['result'],
      registers,
    });
    // Call quality: one observation per call and leg when it ends (no per-call labels).
    const leg = (name: string, help: string, buckets: number[]): Histogram<'leg'> =>
      new Histogram({ name, help: `${help}, per call, by leg (from_messenger | from_pbx: the audio the bridge received from it)`, labelNames: ['leg'], buckets, registers });
    this.#callQuality = {
      mos: leg('msb_call_mos', 'Estimated MOS (simplified ITU-T G.107 E-model)', [1, 2, 2.5, 3, 3.5, 3.8, 4, 4.2, 4.4, 4.5]),
      loss: leg('msb_call_loss_ratio', 'Share of RTP packets lost', [0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5]),
      jitter: leg('msb_call_jitter_seconds', 'Interarrival jitter at the end of the call (seconds)', JITTER_BUCKETS),
      rtt: leg('msb_call_rtt_seconds', 'Round-trip time from RTCP reports (seconds)', [0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1]),
      firstAudio: leg('msb_call_first_audio_seconds', 'Time from the start of bridging to the first audio (seconds)', [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10]),
    };
    this.#oneWayAudioCalls = new Gauge({
      name: 'msb_one_way_audio_calls',
      help: 'Calls in one-way audio now (no audio from silent_side while the other side speaks)',
      labelNames: ['silent_side'],
      registers,
    });
    this.#oneWayAudioTotal = new Counter({
      name: 'msb_one_way_audio_total',
      help: 'One-way audio episodes, by silent side (messenger | pbx)',
      labelNames: ['silent_side'],
      registers,
    });
    this.#callMetricsReports = new Counter({
      name: 'msb_call_metrics_reports_total',
      help: "Call metrics reports sent to Meta's call_metrics endpoint, by result (ok | error)",
      labelNames: ['result'],
      registers,
    });
    this.#rtpDropped = new Counter({
      name: 'msb_rtp_dropped_total',
      help: 'Packets dropped on PBX-facing RTP ports, by reason (wrong_source | before_sdp | malformed | srtp_auth | srtp_replay | srtp_expired)',
      labelNames: ['reason'],
      registers,
    });
    this.#callEventsRefused = new Counter({
      name: 'msb_call_events_refused_total',
      help: 'Events the call state machine refused in the state the call was in (nothing changed), by state and event',
      labelNames: ['state', 'event'],
      registers,
    });
    this.#patchesDegraded = new Gauge({
      name: 'msb_dependency_patch_degraded',
      help: '1 for each runtime optimisation of a dependency that could not bind to the installed version (the bridge runs without it)',
      labelNames: ['dependency', 'patch'],
      registers,
    });
    this.#refused = new Counter({
      name: 'msb_calls_refused_total',
      help: 'New calls refused for count or load, by reason (capacity | setup_rate | event_loop_delay | event_loop_utilization | media_worker_cpu | late_audio | cpu_wait)',
      labelNames: ['reason'],
      registers,
    });
    for (const reason of REFUSAL_REASONS) this.#refused.inc({ reason }, 0);
    this.#load = new Gauge({
      name: 'msb_load',
      help: 'Smoothed load signals, the highest over threads or workers: event_loop_delay (ms), event_loop_utilization (0-1), media_worker_cpu (share of a core), late_audio (packets/s), cpu_wait (share of time a thread waited for a CPU)',
      labelNames: ['signal'],
      registers,
    });
    this.#loadLimit = new Gauge({
      name: 'msb_load_limit',
      help: 'Limit of each load signal above which new calls are refused (absent when not watched)',
      labelNames: ['signal'],
      registers,
    });
    this.#refusingByLoad = new Gauge({
      name: 'msb_admission_refusing',
      help: '1 while new calls are refused because a load signal is over its limit',
      registers,
    });
  }

  /** A call was taken on (also counts it active until `callEnded`). */
  callStarted(direction: string): void {
    this.#callsStarted.inc({ direction });
    this.#callsActive.inc({ direction });
  }

  /** A call started with `callStarted` ended. */
  callEnded(direction: string, outcome: string, durationSeconds: number): void {
    this.#callsEnded.inc({ direction, outcome });
    this.#callsActive.dec({ direction });
    if (durationSeconds > 0) this.#callDuration.observe({ direction }, durationSeconds);
  }

  /** connect webhook received -> INVITE sent (seconds). */
  webhookToInvite(seconds: number): void {
    this.#webhookToInvite.observe(seconds);
  }

  /** PBX 200 OK received -> Graph accept sent (seconds). */
  pbxAnswerToAccept(seconds: number): void {
    this.#pbxAnswerToAccept.observe(seconds);
  }

  /** One webhook event handled (or one POST refused, with event 'post'). */
  webhook(event: string, result: WebhookResult): void {
    this.#webhooks.inc({ event: WEBHOOK_EVENTS.has(event) ? event : 'other', result });
  }

  /** One Graph API request finished. `code` is Meta's error code, an HTTP status, or '' on success. */
  graphRequest(action: string, result: 'ok' | 'error' | 'timeout' | 'network', code: string | number, seconds: number): void {
    this.#graphRequests.inc({ action, result, code: String(code) });
    this.#graphSeconds.observe({ action }, seconds);
  }

  /** A final SIP response sent to or received from the PBX. */
  sipResponse(direction: 'sent' | 'received', code: number): void {
    this.#sipResponses.inc({ direction, code: String(code) });
  }

  /** Packets forwarded since the last report (deltas, not totals). */
  mediaPackets(direction: MediaDirection, packets: number, lost = 0): void {
    if (packets > 0) this.#mediaPackets.inc({ direction }, packets);
    if (lost > 0) this.#mediaLost.inc({ direction }, lost);
  }

  mediaJitter(direction: MediaDirection, seconds: number): void {
    this.#mediaJitter.observe({ direction }, seconds);
  }

  transcodingStarted(): void {
    this.#transcoding.inc();
  }

  transcodingEnded(): void {
    this.#transcoding.dec();
  }

  workerRestarted(count = 1): void {
    this.#workerRestarts.inc(count);
  }

  mediaThreadRestarted(): void {
    this.#threadRestarts.inc();
  }

  /**
   * A media thread's periodic load report; `lateDropped` is its total since it started (a smaller total than the
   * last one: the thread was replaced and counts from zero).
   */
  mediaThreadLoad(thread: number, load: { calls: number; eventLoopDelayMs: number; lateDropped: number }): void {
    const label = String(thread);
    this.#threadCalls.set({ thread: label }, load.calls);
    this.#threadLoopDelay.set({ thread: label }, load.eventLoopDelayMs / 1000);
    const before = this.#lateSeen.get(label) ?? 0;
    const added = load.lateDropped >= before ? load.lateDropped - before : load.lateDropped;
    if (added > 0) this.#lateDropped.inc(added);
    this.#lateSeen.set(label, load.lateDropped);
  }

  drachtioConnection(connected: boolean): void {
    this.#drachtioConnected.set(connected ? 1 : 0);
  }

  /** A call_permission_reply arrived; `response` comes from the webhook, so it is mapped onto a fixed label set. */
  permissionReply(response: string): void {
    this.#permissionReplies.inc({ response: PERMISSION_RESPONSES.has(response) ? response : 'other' });
  }

  dtmf(direction: MediaDirection): void {
    this.#dtmfDigits.inc({ direction });
  }

  /** A transfer (REFER from the PBX) ended with `result`. */
  transfer(result: 'succeeded' | 'failed' | 'refused' | 'canceled'): void {
    this.#transfers.inc({ result });
  }

  /** A call's quality at its end, per leg. */
  callQuality(quality: CallQualityStats): void {
    for (const [label, q] of [
      ['from_messenger', quality.fromMessenger],
      ['from_pbx', quality.fromPbx],
    ] as const) {
      if (q.packets === 0) continue;
      const h = this.#callQuality;
      h.mos.observe({ leg: label }, q.mos);
      h.loss.observe({ leg: label }, q.lossPct / 100);
      h.jitter.observe({ leg: label }, q.jitterMs / 1000);
      if (q.rttMs !== undefined) h.rtt.observe({ leg: label }, q.rttMs / 1000);
      if (q.firstAudioMs !== undefined) h.firstAudio.observe({ leg: label }, q.firstAudioMs / 1000);
    }
  }

  /** One-way audio started (`active`) or ended on a call. */
  oneWayAudio(silentSide: 'messenger' | 'pbx', active: boolean): void {
    if (active) {
      this.#oneWayAudioCalls.inc({ silent_side: silentSide });
      this.#oneWayAudioTotal.inc({ silent_side: silentSide });
    } else {
      this.#oneWayAudioCalls.dec({ silent_side: silentSide });
    }
  }

  callMetricsReport(result: 'ok' | 'error'): void {
    this.#callMetricsReports.inc({ result });
  }

  /** A packet on a PBX-facing RTP port was dropped. */
  rtpDropped(reason: RtpDropReason, count = 1): void {
    this.#rtpDropped.inc({ reason }, count);
  }

  /** The call state machine refused `event` in `state`. */
  callEventRefused(state: string, event: string): void {
    this.#callEventsRefused.inc({ state, event });
  }

  /** A runtime optimisation of `dependency` could not bind at start: the bridge runs without it. */
  dependencyPatchDegraded(dependency: string, patch: string): void {
    this.#patchesDegraded.set({ dependency, patch }, 1);
  }

  /** A new call was refused for count or load. */
  callRefused(reason: RefusalReason): void {
    this.#refused.inc({ reason });
  }

  /** The load signals after a sample: highest smoothed value and limit of each, and whether calls are refused. */
  load(values: ReadonlyMap<LoadSignalKind, number>, limits: (kind: LoadSignalKind) => number | null, refusing: boolean): void {
    for (const kind of LOAD_SIGNAL_KINDS) {
      const value = values.get(kind);
      if (value === undefined) this.#load.remove({ signal: kind });
      else this.#load.set({ signal: kind }, value);
      const limit = limits(kind);
      if (limit === null) this.#loadLimit.remove({ signal: kind });
      else this.#loadLimit.set({ signal: kind }, limit);
    }
    this.#refusingByLoad.set(refusing ? 1 : 0);
  }

  /** The Prometheus text exposition. */
  text(): Promise<string> {
    return this.registry.metrics();
  }
}
