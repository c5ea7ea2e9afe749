/** The numbers of a call's summary line and of its media metrics, and what a call reports once it is released. */
import type { Logger } from 'pino';
import type { CallSessionDeps } from './callOptions.js';
import type { CallQualityWatch } from './callQualityWatch.js';
import type { Ending } from './callState.js';
import { summaryQuality } from './callMetricsReport.js';
import type { CallDirection, CallMedia, CallMediaStats, CallMetricsSink, CallQualityStats, CallRoute, PbxCodecName } from './ports.js';

/** Set-up step durations for the call summary, to the microsecond. */
export function roundedSteps(steps: { webhookToInviteMs?: number; pbxAnswerToAcceptMs?: number }): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [key, ms] of Object.entries(steps)) if (ms !== undefined) out[key] = Math.round(ms * 1000) / 1000;
  return out;
}

/** Media counters of `now` since `prev` (jitter as measured now). */
export function statsDelta(now: CallMediaStats, prev: CallMediaStats | undefined): CallMediaStats {
  const diff = (a: CallMediaStats['toPbx'], b: CallMediaStats['toPbx'] | undefined): CallMediaStats['toPbx'] => ({
    packets: a.packets - (b?.packets ?? 0),
    lost: Math.max(0, a.lost - (b?.lost ?? 0)),
    jitterMs: a.jitterMs,
  });
  return { ...now, toPbx: diff(now.toPbx, prev?.toPbx), toMessenger: diff(now.toMessenger, prev?.toMessenger) };
}

/** The call as its summary names it. */
interface SummaryCall {
  direction: CallDirection;
  pageId: string;
  psidLabel: string;
  metaCallId: string | undefined;
  route: CallRoute | undefined;
  startedAt: number;
}

/** What the call knew when it ended. */
interface EndFacts {
  answeredAt: number | undefined;
  sipStatus: number | undefined;
  metaStatus: string | undefined;
  codec: PbxCodecName | undefined;
  srtp: CallMediaStats['srtp'];
  setupTiming: { webhookToInviteMs?: number; pbxAnswerToAcceptMs?: number };
  transfers: object | undefined;
}

/**
 * What a call reports once it is released: its outcome and duration in the metrics, its `call summary` line, and
 * (with calls.quality.report_to_meta, for a call Meta accepted) its quality to Meta.
 */
export function reportEndedCall(
  call: SummaryCall & { log: Logger },
  ending: Ending,
  facts: EndFacts & { metaAccepted: boolean; quality: CallQualityWatch | undefined },
  { metrics, graph, options }: Pick<CallSessionDeps, 'metrics' | 'graph' | 'options'>,
): void {
  const now = Date.now();
  const durationSeconds = facts.answeredAt ? (now - facts.answeredAt) / 1000 : 0;
  metrics?.callEnded(call.direction, ending.outcome, durationSeconds);
  const { metaAccepted, quality, ...end } = facts;
  const summary = callSummary(call, ending, { ...end, now, durationSeconds, ...(quality?.final ? { quality: quality.final } : {}) });
  call.log.info({ summary }, 'call summary');
  quality?.report({
    graph,
    enabled: options.reportCallMetrics === true,
    metaAccepted,
    pageId: call.pageId,
    metaCallId: call.metaCallId,
    outcome: ending.outcome,
    reason: ending.reason,
    endedAt: now,
    timeoutMs: options.graphTimeoutMs * 2,
  });
}

/** The fields of the `call summary` log line, one per call when it is released. */
function callSummary(
  call: SummaryCall,
  ending: Ending,
  end: EndFacts & { now: number; durationSeconds: number; quality?: CallQualityStats },
): Record<string, unknown> {
  return {
    direction: call.direction,
    pageId: call.pageId,
    psid: call.psidLabel,
    metaCallId: call.metaCallId,
    route: call.route?.name,
    outcome: ending.outcome,
    reason: ending.reason,
    sipStatus: end.sipStatus,
    metaStatus: end.metaStatus,
    codec: end.codec,
    ...(end.srtp ? { srtp: end.srtp } : {}),
    setupMs: end.answeredAt ? end.answeredAt - call.startedAt : undefined,
    ...(end.setupTiming.webhookToInviteMs !== undefined ? { setupSteps: roundedSteps(end.setupTiming) } : {}),
    ...(end.transfers ? { transfers: end.transfers } : {}),
    ...(end.quality ? { quality: summaryQuality(end.quality) } : {}),
    durationSeconds: Math.round(end.durationSeconds * 1000) / 1000,
    totalMs: end.now - call.startedAt,
  };
}

/** A call's media counters for metrics: once when bridging starts, every few seconds as deltas, once at the end. */
export class MediaStatsReporter {
  readonly #callId: string;
  readonly #media: CallMedia;
  readonly #metrics: CallMetricsSink | undefined;
  #last: CallMediaStats | undefined;
  #startedReported = false;

  constructor(callId: string, media: CallMedia, metrics: CallMetricsSink | undefined) {
    this.#callId = callId;
    this.#media = media;
    this.#metrics = metrics;
  }

  /** The media started bridging (reported once per call). */
  started(): void {
    if (this.#startedReported) return;
    this.#startedReported = true;
    this.#metrics?.mediaStarted?.(this.#callId, this.#media.stats().transcoding);
  }

  /** Counters since the call started; undefined once the media is closed. */
  total(): CallMediaStats | undefined {
    return this.#media.closed ? undefined : this.#media.stats();
  }

  /** Counters since the previous call; undefined once the media is closed. */
  delta(): CallMediaStats | undefined {
    const now = this.total();
    if (!now) return undefined;
    const prev = this.#last;
    this.#last = now;
    return statsDelta(now, prev);
  }

  /**
   * The last delta, reported as final, if the media ever started; returned then. Asked just before the media closes:
   * the counters are taken then (`finalStats` when the media has it, within `timeoutMs`; else, or when that fails,
   * `stats()`). Never rejects.
   */
  async final(timeoutMs: number, log: Logger): Promise<CallMediaStats | undefined> {
    const media = this.#media;
    if (media.closed || !this.#startedReported) return undefined;
    let now: CallMediaStats;
    try {
      now = media.finalStats ? await media.finalStats(timeoutMs) : media.stats();
    } catch (err) {
      log.warn({ err }, 'final media counters not received: the last reported ones are used');
      now = media.stats();
    }
    const prev = this.#last;
    this.#last = now;
    const last = statsDelta(now, prev);
    this.#metrics?.mediaStats?.(this.#callId, last, true);
    return last;
  }

}
