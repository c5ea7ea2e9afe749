/**
 * What a call does with its media's quality: one-way audio events become a warning log line and a gauge while they
 * last; when the call ends, its final quality goes into the summary line and, for a call Meta accepted, to Meta's
 * call_metrics endpoint (once; a refusal is logged, never retried).
 */
import type { Logger } from 'pino';
import { callMetricsReport } from './callMetricsReport.js';
import type { CallMedia, CallMetricsSink, CallOutcome, CallQualityStats, GraphPort } from './ports.js';

export class CallQualityWatch {
  readonly #log: Logger;
  readonly #metrics: CallMetricsSink | undefined;
  /** The side silent now, while one-way audio is in progress. */
  #oneWay: 'messenger' | 'pbx' | undefined;
  /** The media's quality when the call ended, if its media ever bridged. */
  final: CallQualityStats | undefined;

  constructor(o: { log: Logger; metrics: CallMetricsSink | undefined }) {
    this.#log = o.log;
    this.#metrics = o.metrics;
  }

  attach(media: CallMedia): void {
    media.on('oneWayAudio', (event) => {
      if (event.active) {
        this.#oneWay = event.silentSide;
        this.#log.warn(
          { silentSide: event.silentSide, silentForMs: event.silentForMs },
          `one-way audio: nothing heard from the ${event.silentSide === 'pbx' ? 'PBX' : 'person in Messenger'} while the other side speaks`,
        );
      } else {
        if (this.#oneWay === undefined) return;
        this.#oneWay = undefined;
        this.#log.info({ silentSide: event.silentSide, silentForMs: event.silentForMs }, 'one-way audio over: audio is back');
      }
      this.#metrics?.oneWayAudio?.(event.silentSide, event.active);
    });
  }

  /** The call's media is being released: keep its last quality, and end a one-way audio still in progress. */
  ended(final: CallQualityStats | undefined): void {
    this.final = final;
    if (this.#oneWay !== undefined) this.#metrics?.oneWayAudio?.(this.#oneWay, false);
    this.#oneWay = undefined;
  }

  /** Meta's call_metrics for a call it accepted (when enabled and the Graph port can send it). */
  report(o: {
    graph: GraphPort;
    enabled: boolean;
    metaAccepted: boolean;
    pageId: string;
    metaCallId: string | undefined;
    outcome: CallOutcome;
    reason: string;
    endedAt: number;
    timeoutMs: number;
  }): void {
    const quality = this.final;
    if (!o.enabled || !o.metaAccepted || !o.metaCallId || !quality || !o.graph.submitCallMetrics) return;
    const report = callMetricsReport({ callId: o.metaCallId, outcome: o.outcome, reason: o.reason, endedAt: o.endedAt, quality });
    void o.graph.submitCallMetrics(o.pageId, report, AbortSignal.timeout(o.timeoutMs)).then(
      () => {
        this.#metrics?.callMetricsReport?.('ok');
        this.#log.debug('call metrics sent to Meta');
      },
      (err: unknown) => {
        this.#metrics?.callMetricsReport?.('error');
        this.#log.warn({ err }, 'call metrics not accepted by Meta (not retried)');
      },
    );
  }
}
