/**
 * Admission by load: whether the bridge can take one more call without the live ones suffering.
 *
 * Load readings (event-loop delay and utilization of each thread, CPU of each mediasoup worker, late audio dropped)
 * arrive once per sample interval (`observe`). Each (signal, source) pair is smoothed (an exponential moving average)
 * and trips only after `tripSamples` smoothed samples in a row above its limit, so that one GC pause or one slow
 * sample does not refuse calls; once tripped it clears only after staying below `clearRatio` of the limit for
 * `clearAfterMs` (hysteresis: a bridge just under its limit does not flap between taking and refusing calls).
 *
 * Signals lag the calls that cause them (a call's media starts a few hundred ms after it is admitted, and smoothing
 * adds more), so a burst of calls would all be admitted before any signal rose. Two guards cover that gap: the
 * utilization signals are projected to include the calls admitted in the last `settleMs` (each assumed to cost what
 * the settled calls cost on average), and new calls are admitted at most `maxSetupsPerSecond` (a token bucket).
 *
 * With media threads (`usePlaces`) the decision is per thread, because a thread's readings reach the main thread only
 * with its next report: each thread's proportional signals are projected with the calls put on it that its last
 * report does not cover yet (`MediaPlace.pending`, each costing what one of its `carrying` calls costs, or what one
 * cost anywhere when it carries none), the call goes to the thread with the most headroom left (reserved there at
 * once, so the next decision counts it), and it is refused when no thread has room. A tripped signal of a thread
 * closes that thread only; one of the main thread closes all.
 *
 * Pure logic: no timers, no I/O; the clock is injected. The daemon's LoadMonitor feeds it.
 */
import type { AdmissionPort, AdmissionVerdict, LoadReading, LoadSignalKind, MediaPlace, MediaPlaces, RefusalReason } from './ports.js';
import { LOAD_SIGNAL_KINDS } from './ports.js';

export interface AdmissionLimits {
  /** Refuse by load at all (false: only `calls.max_concurrent` limits). */
  enabled: boolean;
  /** Per thread, 90th percentile of its timers' lateness in a sample (ms); null = not watched. */
  maxEventLoopDelayMs: number | null;
  /** Per thread, share of time spent running code (0-1); null = not watched. */
  maxEventLoopUtilization: number | null;
  /** Per mediasoup worker, share of one core (0-1); null = not watched. */
  maxMediaWorkerCpu: number | null;
  /** Late audio packets dropped per second, all calls; null = not watched. */
  maxLatePacketsPerSecond: number | null;
  /** Per thread, share of time it was ready to run but waited for a CPU (0-1); null = not watched. */
  maxCpuWait: number | null;
  /** New calls admitted per second at most (burst = the same number); null = no limit. */
  maxSetupsPerSecond: number | null;
  /** Time constant of the moving average (ms). */
  smoothingMs: number;
  /** Smoothed samples in a row above a limit before it trips. */
  tripSamples: number;
  /** A tripped signal clears below this share of its limit ... */
  clearRatio: number;
  /** ... held for this long (ms). */
  clearAfterMs: number;
  /** Calls admitted within this many ms are not yet in the signals (projected instead). */
  settleMs: number;
  /** Retry-After sent with a 503 (seconds). */
  retryAfterS: number;
}

export const DEFAULT_ADMISSION_LIMITS: Readonly<AdmissionLimits> = Object.freeze({
  enabled: true,
  maxEventLoopDelayMs: 40,
  maxEventLoopUtilization: 0.85,
  maxMediaWorkerCpu: 0.85,
  maxLatePacketsPerSecond: 1,
  maxCpuWait: 0.3,
  maxSetupsPerSecond: 10,
  smoothingMs: 1500,
  tripSamples: 2,
  clearRatio: 0.8,
  clearAfterMs: 3000,
  settleMs: 3000,
  retryAfterS: 5,
});

/** Headroom (share of a limit) within which two places count as equally free: then the one with fewer calls wins. */
const ROOM_TIE = 0.05;

/** Signals whose value grows in proportion to the calls carried (so they can be projected). */
const PROPORTIONAL: ReadonlySet<LoadSignalKind> = new Set(['event_loop_utilization', 'media_worker_cpu']);

const UNITS: Record<LoadSignalKind, (v: number) => string> = {
  event_loop_delay: (v) => `${v.toFixed(1)} ms`,
  event_loop_utilization: (v) => v.toFixed(2),
  media_worker_cpu: (v) => `${(v * 100).toFixed(0)} % of a core`,
  late_audio: (v) => `${v.toFixed(1)}/s`,
  cpu_wait: (v) => `${(v * 100).toFixed(0)} % of the time waiting for a CPU`,
};

interface SignalState {
  kind: LoadSignalKind;
  source: string;
  smoothed: number;
  /** The last reading as it came (projections start from the higher of it and `smoothed`). */
  last: number;
  /** Smoothed samples in a row above the limit. */
  above: number;
  tripped: boolean;
  /** Since when (ms) a tripped signal has been below the clear level. */
  belowSince: number | undefined;
}

/** One signal as the operator sees it (readyz, metrics). */
export interface SignalStatus {
  kind: LoadSignalKind;
  source: string;
  /** Smoothed value, in the kind's unit. */
  value: number;
  limit: number | null;
  tripped: boolean;
}

export interface AdmissionStatus {
  /** Refusing new calls by load now (a tripped signal; projections and the setup rate are per call, not here). */
  refusing: boolean;
  /** Kinds of the tripped signals. */
  reasons: LoadSignalKind[];
  /** Human-readable: which signal, where, how far over. */
  detail?: string;
  signals: SignalStatus[];
}

export class Admission implements AdmissionPort {
  #limits: AdmissionLimits;
  readonly #now: () => number;
  readonly #signals = new Map<string, SignalState>();
  /** When (ms) each call of the last `settleMs` was admitted, oldest first. */
  #recent: number[] = [];
  #tokens: number;
  #tokensAt: number;
  #places: MediaPlaces | undefined;
  /** Places found full by projection, until they have `clearRatio` of headroom again. */
  readonly #full = new Set<string>();
  /** What one call was last seen to cost, per proportional kind, on any place (for a place that carries none). */
  readonly #perCallCost = new Map<LoadSignalKind, number>();

  constructor(limits: Partial<AdmissionLimits> = {}, now: () => number = () => performance.now()) {
    this.#limits = { ...DEFAULT_ADMISSION_LIMITS, ...limits };
    this.#now = now;
    this.#tokens = this.#limits.maxSetupsPerSecond ?? 0;
    this.#tokensAt = now();
  }

  get limits(): Readonly<AdmissionLimits> {
    return this.#limits;
  }

  get retryAfterS(): number {
    return this.#limits.retryAfterS;
  }

  /** New limits (reload); the smoothed signals and their state are kept. */
  configure(limits: Partial<AdmissionLimits>): void {
    this.#limits = { ...DEFAULT_ADMISSION_LIMITS, ...limits };
    const max = this.#limits.maxSetupsPerSecond;
    if (max !== null) this.#tokens = Math.min(this.#tokens, max);
  }

  /** Decide per media thread (see the file's comment); undefined: one decision for the process. */
  usePlaces(places: MediaPlaces | undefined): void {
    this.#places = places;
  }

  /** The limit for a kind, or null when it is not watched. */
  limitOf(kind: LoadSignalKind): number | null {
    switch (kind) {
      case 'event_loop_delay':
        return this.#limits.maxEventLoopDelayMs;
      case 'event_loop_utilization':
        return this.#limits.maxEventLoopUtilization;
      case 'media_worker_cpu':
        return this.#limits.maxMediaWorkerCpu;
      case 'late_audio':
        return this.#limits.maxLatePacketsPerSecond;
      case 'cpu_wait':
        return this.#limits.maxCpuWait;
    }
  }

  /**
   * One sample's readings (all sources), covering `elapsedMs`. A source missing from a sample (a worker that died,
   * a thread that ended) is forgotten.
   */
  observe(readings: readonly LoadReading[], elapsedMs: number): void {
    const now = this.#now();
    const alpha = 1 - Math.exp(-Math.max(0, elapsedMs) / Math.max(1, this.#limits.smoothingMs));
    const seen = new Set<string>();
    for (const reading of readings) {
      if (!Number.isFinite(reading.value)) continue;
      const key = `${reading.kind}\u0000${reading.source}`;
      seen.add(key);
      let state = this.#signals.get(key);
      if (!state) {
        state = { kind: reading.kind, source: reading.source, smoothed: reading.value, last: reading.value, above: 0, tripped: false, belowSince: undefined };
        this.#signals.set(key, state);
      } else {
        state.smoothed += alpha * (reading.value - state.smoothed);
        state.last = reading.value;
      }
      this.#step(state, now);
    }
    for (const key of this.#signals.keys()) if (!seen.has(key)) this.#signals.delete(key);
  }

  #step(state: SignalState, now: number): void {
    const limit = this.limitOf(state.kind);
    if (limit === null) {
      state.above = 0;
      state.tripped = false;
      state.belowSince = undefined;
      return;
    }
    state.above = state.smoothed > limit ? state.above + 1 : 0;
    if (!state.tripped) {
      if (state.above >= this.#limits.tripSamples) {
        state.tripped = true;
        state.belowSince = undefined;
      }
      return;
    }
    if (state.smoothed >= limit * this.#limits.clearRatio) {
      state.belowSince = undefined;
      return;
    }
    state.belowSince ??= now;
    if (now - state.belowSince >= this.#limits.clearAfterMs) {
      state.tripped = false;
      state.belowSince = undefined;
    }
  }

  admit(activeCalls: number): AdmissionVerdict {
    const limits = this.#limits;
    if (!limits.enabled) return { admit: true };
    const now = this.#now();
    const places = this.#readyPlaces();
    const tripped = this.#worstTripped(places);
    if (tripped) return this.#refuse(tripped.kind, describe(tripped, this.limitOf(tripped.kind)));

    let place: MediaPlace | undefined;
    if (places) {
      const choice = this.#choosePlace(places, true);
      if ('refusal' in choice) return choice.refusal;
      place = choice.place;
    } else {
      const projected = this.#projectedRefusal(activeCalls, now);
      if (projected) return projected;
    }

    const max = limits.maxSetupsPerSecond;
    if (max !== null) {
      this.#tokens = Math.min(max, this.#tokens + ((now - this.#tokensAt) / 1000) * max);
      this.#tokensAt = now;
      if (this.#tokens < 1) return this.#refuse('setup_rate', `more than ${max} new calls per second`);
      this.#tokens -= 1;
    }
    this.#recent.push(now);
    if (place) this.#places?.reserve(place.index);
    return { admit: true };
  }

  /** The media threads serving now; undefined without threads (or with none up: then the process decides as one). */
  #readyPlaces(): MediaPlace[] | undefined {
    const places = this.#places?.places().filter((p) => p.ready);
    return places && places.length > 0 ? places : undefined;
  }

  /** The place's own signals: its thread's, and its mediasoup workers' (`<source>/...`). */
  #signalsOf(place: MediaPlace): SignalState[] {
    const prefix = `${place.source}/`;
    return [...this.#signals.values()].filter((s) => s.source === place.source || s.source.startsWith(prefix));
  }

  /**
   * The place with the most headroom for one more call, or the refusal when none has room. With `project` false only
   * tripped signals count (what a sample's status reports without a call at hand).
   */
  #choosePlace(places: MediaPlace[], project: boolean): { place: MediaPlace } | { refusal: Extract<AdmissionVerdict, { admit: false }> } {
    const fits: Array<{ place: MediaPlace; room: number }> = [];
    let refusal: { room: number; verdict: Extract<AdmissionVerdict, { admit: false }> } | undefined;
    const worse = (room: number, verdict: Extract<AdmissionVerdict, { admit: false }>): void => {
      if (!refusal || room > refusal.room) refusal = { room, verdict };
    };
    for (const place of places) {
      const signals = this.#signalsOf(place);
      const tripped = signals.find((s) => s.tripped && this.limitOf(s.kind) !== null);
      if (tripped) {
        // Full too: once its signal clears, the place still needs the headroom below to take calls again.
        this.#full.add(place.source);
        worse(-Infinity, this.#refuse(tripped.kind, describe(tripped, this.limitOf(tripped.kind))));
        continue;
      }
      let room = 1;
      let binding: Extract<AdmissionVerdict, { admit: false }> | undefined;
      for (const state of project ? signals : []) {
        const limit = this.limitOf(state.kind);
        if (limit === null || limit <= 0 || !PROPORTIONAL.has(state.kind)) continue;
        const value = Math.max(state.smoothed, state.last);
        if (place.carrying > 0) this.#perCallCost.set(state.kind, value / place.carrying);
        const perCall = place.carrying > 0 ? value / place.carrying : (this.#perCallCost.get(state.kind) ?? 0);
        const projected = value + perCall * (place.pending + 1);
        const signalRoom = (limit - projected) / limit;
        if (signalRoom >= room) continue;
        room = signalRoom;
        const unit = UNITS[state.kind];
        binding = this.#refuse(
          state.kind,
          `${state.kind} on ${state.source} ${unit(value)} with ${place.carrying} calls, ` +
            `${unit(projected)} projected with ${place.pending + 1} more (limit ${unit(limit)})`,
        );
      }
      // Hysteresis, as for a tripped signal: a place found full takes calls again only once one more call would
      // leave it under `clearRatio` of the limit (a place at its limit does not flap between taking and refusing).
      const needed = this.#full.has(place.source) ? 1 - this.#limits.clearRatio : 0;
      if (project) {
        if (room < needed) this.#full.add(place.source);
        else this.#full.delete(place.source);
      }
      if (room < needed && binding) worse(room, binding);
      else fits.push({ place, room });
    }
    if (fits.length === 0) return { refusal: refusal!.verdict };
    // The most headroom; among places about as free (readings are noisy), the one carrying the fewest calls.
    const most = Math.max(...fits.map((f) => f.room));
    const calls = (p: MediaPlace): number => p.carrying + p.pending;
    const near = fits.filter((f) => f.room >= most - ROOM_TIE);
    return { place: near.reduce((a, b) => (calls(b.place) < calls(a.place) ? b : a)).place };
  }

  /**
   * The refusal when one more call, with those admitted in the last `settleMs` (not yet in the signals), would take
   * a proportional signal over its limit; undefined otherwise.
   */
  #projectedRefusal(activeCalls: number, now: number): Extract<AdmissionVerdict, { admit: false }> | undefined {
    while (this.#recent.length > 0 && now - this.#recent[0]! >= this.#limits.settleMs) this.#recent.shift();
    const recent = Math.min(this.#recent.length, activeCalls);
    const settled = activeCalls - recent;
    if (settled <= 0) return undefined;
    for (const state of this.#signals.values()) {
      const limit = this.limitOf(state.kind);
      if (limit === null || !PROPORTIONAL.has(state.kind)) continue;
      // Attributes all of the load to the settled calls: pessimistic at low counts, where it does not matter.
      const projected = (state.smoothed * (activeCalls + 1)) / settled;
      if (projected > limit) {
        const unit = UNITS[state.kind];
        return this.#refuse(
          state.kind,
          `${state.kind} on ${state.source} ${unit(state.smoothed)} with ${settled} settled calls, ` +
            `${unit(projected)} projected with ${recent + 1} more (limit ${unit(limit)})`,
        );
      }
    }
    return undefined;
  }

  #refuse(reason: RefusalReason, detail: string): Extract<AdmissionVerdict, { admit: false }> {
    return { admit: false, reason, detail, retryAfterS: this.#limits.retryAfterS };
  }

  /**
   * The tripped signal furthest over its limit (relative), if any; with `places`, only signals of no place (the main
   * thread's): a place's own close that place only.
   */
  #worstTripped(places?: MediaPlace[]): SignalState | undefined {
    let worst: SignalState | undefined;
    let worstRatio = 0;
    const placed = (state: SignalState): boolean =>
      places?.some((p) => state.source === p.source || state.source.startsWith(`${p.source}/`)) ?? false;
    for (const state of this.#signals.values()) {
      const limit = this.limitOf(state.kind);
      if (!state.tripped || limit === null || placed(state)) continue;
      const ratio = limit > 0 ? state.smoothed / limit : Infinity;
      if (!worst || ratio > worstRatio) {
        worst = state;
        worstRatio = ratio;
      }
    }
    return worst;
  }

  /**
   * What readiness reports. With `activeCalls`, a call that would be refused by projection also counts as refusing
   * (a load balancer asking /readyz wants to know whether the next call would be taken).
   */
  status(activeCalls?: number): AdmissionStatus {
    const signals = [...this.#signals.values()]
      .map((s) => ({ kind: s.kind, source: s.source, value: s.smoothed, limit: this.limitOf(s.kind), tripped: s.tripped }))
      .sort((a, b) => LOAD_SIGNAL_KINDS.indexOf(a.kind) - LOAD_SIGNAL_KINDS.indexOf(b.kind) || a.source.localeCompare(b.source));
    const enabled = this.#limits.enabled;
    const reasons = enabled ? [...new Set(signals.filter((s) => s.tripped).map((s) => s.kind))] : [];
    const places = enabled ? this.#readyPlaces() : undefined;
    const worst = enabled ? this.#worstTripped(places) : undefined;
    if (worst) return { refusing: true, reasons, detail: describe(worst, this.limitOf(worst.kind)), signals };
    if (places) {
      const choice = this.#choosePlace(places, activeCalls !== undefined);
      if (!('refusal' in choice)) return { refusing: false, reasons: [], signals };
      return { refusing: true, reasons: [...new Set([...reasons, choice.refusal.reason as LoadSignalKind])], detail: choice.refusal.detail, signals };
    }
    const projected = enabled && activeCalls !== undefined ? this.#projectedRefusal(activeCalls, this.#now()) : undefined;
    if (projected && projected.reason !== 'capacity' && projected.reason !== 'setup_rate') {
      return { refusing: true, reasons: [projected.reason], detail: projected.detail, signals };
    }
    return { refusing: false, reasons: [], signals };
  }

  /** The highest smoothed value of each kind, over its sources (for gauges). */
  highest(): Map<LoadSignalKind, number> {
    const out = new Map<LoadSignalKind, number>();
    for (const s of this.#signals.values()) out.set(s.kind, Math.max(out.get(s.kind) ?? -Infinity, s.smoothed));
    return out;
  }
}

function describe(state: SignalState, limit: number | null): string {
  const unit = UNITS[state.kind];
  return `${state.kind} on ${state.source} ${unit(state.smoothed)} (limit ${limit === null ? 'none' : unit(limit)})`;
}
