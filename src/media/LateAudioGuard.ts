/**
 * Drops audio that arrives too late to be worth playing, so that a media path that fell behind (an event loop or a
 * worker starved of CPU, a queue in front of it) catches up instead of delivering seconds-old audio for good.
 *
 * Every queue between the network and us (a socket's receive buffer holds ~5 s of one call's packets, the pipe to
 * the mediasoup worker and its write queue hold more) delays packets without losing them. A reader that falls behind
 * then spends its CPU on audio nobody can use, stays behind while the load lasts and hands the far end a latency that
 * only grows. Real-time audio that late is worth less than silence: drop it, and the time it would have cost goes to
 * the packets that are still on time.
 *
 * Lateness is measured against the stream's own clock: the transit time (arrival minus RTP timestamp) of the fastest
 * packet seen is the baseline; a packet whose transit exceeds it by more than `maxLateMs` is late. Being late is
 * not enough to be dropped, since a sender whose media clock runs slow (a timer-paced one on a busy machine) or that
 * resumes after a pause without advancing its timestamps looks late too, its packets spaced as usual. What gives a
 * queue away is that its packets come out of it back to back: only a late packet that arrived much closer to the
 * previous one than their timestamps are apart is dropped. Late packets that keep their spacing move the baseline
 * (after three in a row, or at once with the marker bit of a new talkspurt). A stream whose packets stay late for
 * `rebaseAfterMs` is taken as it is rather than dropped for ever.
 */

/**
 * Packets later than this (ms, against the stream's fastest transit) are dropped. Far beyond network jitter and
 * what a jitter buffer holds; well above the event-loop stalls of a busy machine (a few hundred ms), whose audio is
 * still worth delivering (an in-band digit in it, for one).
 */
export const MAX_LATE_MS = 1000;
/** A stream late for this long (ms of arrivals, all dropped) is accepted at its new delay. */
export const REBASE_AFTER_MS = 1000;
/** How fast the baseline may rise when no faster packet comes (ms per ms of arrivals: 1 %). */
const BASELINE_CREEP = 0.01;
/** A packet that arrived within this share of its timestamp distance from the previous one came out of a queue. */
const BURST_SHARE = 0.5;
/** Late packets in a row at their usual spacing that make the stream's new delay the baseline. */
const PACED_LATE_TO_REBASE = 3;
/** Drops are reported at most this often (ms). */
const REPORT_INTERVAL_MS = 5000;

export interface LateAudioReport {
  /** Packets dropped since the last report. */
  dropped: number;
  /** The latest of them, ms behind the stream's fastest transit. */
  maxLateMs: number;
}

/** A running count of late packets dropped, shared by many guards (all calls of a media engine), for load admission. */
export interface LateAudioTally {
  dropped: number;
}

export interface LateAudioGuardOptions {
  /** RTP clock of the stream (Hz). */
  clockRate: number;
  /** Default `MAX_LATE_MS`. */
  maxLateMs?: number;
  /** Default `REBASE_AFTER_MS`. */
  rebaseAfterMs?: number;
  /** Called on the first drop, then at most every 5 s while drops go on (never from a timer). */
  onDrops?(report: LateAudioReport): void;
  /** Clock in ms; default `performance.now()`. */
  now?(): number;
  /** Also counted here (shared across calls). */
  tally?: LateAudioTally;
}

export class LateAudioGuard {
  readonly #maxLateMs: number;
  readonly #rebaseAfterMs: number;
  readonly #onDrops: ((report: LateAudioReport) => void) | undefined;
  readonly #now: () => number;
  readonly #tally: LateAudioTally | undefined;
  #clockRate: number;
  #ssrc: number | undefined;
  #lastTs = 0;
  /** Timestamp unwrapped past 32 bits, in clock units. */
  #extTs = 0;
  /** Fastest transit (ms), raised slowly by `BASELINE_CREEP`. */
  #baseline = 0;
  #lastAt = 0;
  /** Arrival time of the first packet of the current run of late packets. */
  #lateSince: number | undefined;
  /** Late packets in a row that kept their spacing. */
  #pacedLate = 0;
  #dropped = 0;
  #unreported = 0;
  #unreportedMaxLate = 0;
  #reportedAt = -Infinity;

  constructor(options: LateAudioGuardOptions) {
    this.#clockRate = options.clockRate;
    this.#maxLateMs = options.maxLateMs ?? MAX_LATE_MS;
    this.#rebaseAfterMs = options.rebaseAfterMs ?? REBASE_AFTER_MS;
    this.#onDrops = options.onDrops;
    this.#now = options.now ?? (() => performance.now());
    this.#tally = options.tally;
  }

  /** Packets dropped so far. */
  get dropped(): number {
    return this.#dropped;
  }

  /** A new clock rate (codec change) starts the measurement again. */
  setClockRate(clockRate: number): void {
    if (clockRate === this.#clockRate) return;
    this.#clockRate = clockRate;
    this.reset();
  }

  /** Forget the stream (the next packet starts a new baseline). */
  reset(): void {
    this.#ssrc = undefined;
    this.#lateSince = undefined;
    this.#pacedLate = 0;
  }

  /** True when the packet is on time and should be passed on; false when it is late and must be dropped. */
  admit(ssrc: number, timestamp: number, marker = false): boolean {
    const now = this.#now();
    if (this.#ssrc !== ssrc) {
      this.#ssrc = ssrc;
      this.#lastTs = timestamp;
      this.#extTs = 0;
      this.#baseline = now;
      this.#lastAt = now;
      this.#lateSince = undefined;
      this.#pacedLate = 0;
      return true;
    }
    const tsDelta = (timestamp - this.#lastTs) | 0;
    this.#extTs += tsDelta;
    this.#lastTs = timestamp;
    const transit = now - (this.#extTs * 1000) / this.#clockRate;
    const elapsed = Math.max(0, now - this.#lastAt);
    this.#lastAt = now;
    if (transit <= this.#baseline) this.#baseline = transit;
    else this.#baseline += Math.min(transit - this.#baseline, elapsed * BASELINE_CREEP);
    const late = transit - this.#baseline;
    if (late <= this.#maxLateMs) {
      this.#lateSince = undefined;
      this.#pacedLate = 0;
      return true;
    }
    this.#lateSince ??= now;
    const queued = elapsed < ((tsDelta * 1000) / this.#clockRate) * BURST_SHARE;
    if (!queued) this.#pacedLate++;
    if (marker || this.#pacedLate >= PACED_LATE_TO_REBASE || now - this.#lateSince >= this.#rebaseAfterMs) {
      this.#baseline = transit;
      this.#lateSince = undefined;
      this.#pacedLate = 0;
      return true;
    }
    if (!queued) return true;
    this.#pacedLate = 0;
    this.#drop(now, late);
    return false;
  }

  #drop(now: number, late: number): void {
    this.#dropped++;
    if (this.#tally) this.#tally.dropped++;
    this.#unreported++;
    this.#unreportedMaxLate = Math.max(this.#unreportedMaxLate, late);
    if (now - this.#reportedAt < REPORT_INTERVAL_MS) return;
    this.#reportedAt = now;
    const report = { dropped: this.#unreported, maxLateMs: Math.round(this.#unreportedMaxLate) };
    this.#unreported = 0;
    this.#unreportedMaxLate = 0;
    this.#onDrops?.(report);
  }
}
