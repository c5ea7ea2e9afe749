/**
 * RFC 4733 DTMF: a receiver that turns packets into digits (de-duplicated by timestamp) and a sender that
 * writes events into an outgoing RTP stream, at whatever clock rate that stream negotiated.
 */
import type { RtpHeader, TelephoneEvent } from './rtp.js';
import { buildTelephoneEvent, digitToEvent, eventToDigit, tsDiff } from './rtp.js';

/** Interval between updates of a running event (ms); RFC 4733 suggests 50 ms, voice-frame pace is common. */
const UPDATE_INTERVAL_MS = 20;
/** End packets are sent this many times (RFC 4733 section 2.5.1.4). */
const END_REPEATS = 3;
/** Pause between queued digits (ms). */
const INTER_DIGIT_GAP_MS = 60;
/** A started event whose end never arrives is closed after this long without packets (ms). */
const RECEIVE_TIMEOUT_MS = 300;
/** Volume written into our events (-dBm0). */
const EVENT_VOLUME = 10;

export interface TelephoneEventReceiverHandlers {
  /** First packet of a new event. */
  begin(digit: string): void;
  /** The event ended (E bit, or timeout). Called exactly once per event. */
  end(digit: string, durationMs: number): void;
}

/**
 * Turns incoming telephone-event packets into begin/end calls. Repeated end packets and retransmissions are
 * recognised by their RTP timestamp (one timestamp = one event).
 */
export class TelephoneEventReceiver {
  readonly #clockRate: number;
  readonly #handlers: TelephoneEventReceiverHandlers;
  /** Timestamps of recently ended events. */
  readonly #ended: number[] = [];
  #current?: { timestamp: number; digit: string; duration: number; timer: NodeJS.Timeout };

  constructor(clockRate: number, handlers: TelephoneEventReceiverHandlers) {
    this.#clockRate = clockRate;
    this.#handlers = handlers;
  }

  get clockRate(): number {
    return this.#clockRate;
  }

  onPacket(header: RtpHeader, event: TelephoneEvent): void {
    const digit = eventToDigit(event.event);
    if (digit === undefined) return;
    if (this.#ended.some((ts) => ts === header.timestamp)) return;
    const current = this.#current;
    if (current && current.timestamp !== header.timestamp) {
      // A newer event started before the old one's end arrived.
      if (tsDiff(header.timestamp, current.timestamp) < 0) return;
      this.#finish();
    }
    if (!this.#current) {
      this.#current = {
        timestamp: header.timestamp,
        digit,
        duration: event.duration,
        timer: setTimeout(() => this.#finish(), RECEIVE_TIMEOUT_MS),
      };
      this.#handlers.begin(digit);
    } else {
      this.#current.duration = Math.max(this.#current.duration, event.duration);
      this.#current.timer.refresh();
    }
    if (event.end) this.#finish();
  }

  close(): void {
    if (this.#current) clearTimeout(this.#current.timer);
    this.#current = undefined;
  }

  #finish(): void {
    const current = this.#current;
    if (!current) return;
    clearTimeout(current.timer);
    this.#current = undefined;
    this.#ended.push(current.timestamp);
    if (this.#ended.length > 16) this.#ended.shift();
    this.#handlers.end(current.digit, Math.round((current.duration * 1000) / this.#clockRate));
  }
}

export interface TelephoneEventSenderOptions {
  /** The telephone-event clock rate negotiated on this stream (Hz); durations are written in its units. */
  clockRate: number;
  /** The RTP timestamp an event starting now gets (the audio stream's current timestamp). */
  timestampNow(): number;
  /** Write one telephone-event packet into the stream. */
  emit(payload: Buffer, marker: boolean, timestamp: number): void;
  /** An event started (the stream should pause its audio until `onIdle`). */
  onBusy?(): void;
  onIdle?(): void;
}

interface QueuedDigit {
  digit: string;
  durationMs?: number;
}

/**
 * Sends RFC 4733 events into one outgoing stream. Digits are played one at a time: `play` queues a digit of
 * known duration; `begin`/`end` relay a live event whose duration is known only at its end.
 */
export class TelephoneEventSender {
  readonly #options: TelephoneEventSenderOptions;
  readonly #queue: QueuedDigit[] = [];
  readonly #timers = new Set<NodeJS.Timeout>();
  #current?: { event: number; timestamp: number; startedAt: number; update: NodeJS.Timeout; live: boolean };
  #ending = false;
  #closed = false;

  constructor(options: TelephoneEventSenderOptions) {
    this.#options = options;
  }

  /** An event is being sent (including its end packets). */
  get active(): boolean {
    return this.#current !== undefined || this.#ending;
  }

  /** Queue a digit of known duration (ms). Unknown digits are ignored and return false. */
  play(digit: string, durationMs: number): boolean {
    if (this.#closed || digitToEvent(digit) === undefined) return false;
    this.#queue.push({ digit, durationMs: Math.max(40, Math.min(durationMs, 5000)) });
    this.#next();
    return true;
  }

  /** Start relaying a live digit now (or queue it when another digit is playing). */
  begin(digit: string): boolean {
    if (this.#closed || digitToEvent(digit) === undefined) return false;
    this.#queue.push({ digit });
    this.#next();
    return true;
  }

  /** End the live digit started by `begin` (or, if it is still queued, give it its duration). */
  end(digit: string, durationMs: number): void {
    const queued = this.#queue.find((q) => q.digit === digit && q.durationMs === undefined);
    if (queued) {
      queued.durationMs = Math.max(40, durationMs);
      return;
    }
    const current = this.#current;
    if (current && current.live && eventToDigit(current.event) === digit) {
      const elapsedMs = performance.now() - current.startedAt;
      // The source's duration is the truth; finish at once when our copy already ran that long.
      if (elapsedMs >= durationMs) this.#finish(durationMs);
      else this.#after(durationMs - elapsedMs, () => this.#finish(durationMs));
    }
  }

  close(): void {
    this.#closed = true;
    this.#queue.length = 0;
    if (this.#current) clearInterval(this.#current.update);
    this.#current = undefined;
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
  }

  #after(ms: number, fn: () => void): void {
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      if (!this.#closed) fn();
    }, ms);
    this.#timers.add(timer);
  }

  #units(ms: number): number {
    return Math.round((ms * this.#options.clockRate) / 1000);
  }

  #next(): void {
    if (this.active || this.#closed) return;
    const next = this.#queue.shift();
    if (!next) return;
    const event = digitToEvent(next.digit)!;
    const timestamp = this.#options.timestampNow() >>> 0;
    const startedAt = performance.now();
    this.#options.onBusy?.();
    this.#options.emit(buildTelephoneEvent({ event, end: false, volume: EVENT_VOLUME, duration: 0 }), true, timestamp);
    const update = setInterval(() => {
      const elapsed = performance.now() - startedAt;
      this.#options.emit(
        buildTelephoneEvent({ event, end: false, volume: EVENT_VOLUME, duration: this.#units(elapsed) }),
        false,
        timestamp,
      );
    }, UPDATE_INTERVAL_MS);
    this.#current = { event, timestamp, startedAt, update, live: next.durationMs === undefined };
    if (next.durationMs !== undefined) {
      const durationMs = next.durationMs;
      this.#after(durationMs, () => this.#finish(durationMs));
    }
  }

  #finish(durationMs: number): void {
    const current = this.#current;
    if (!current) return;
    clearInterval(current.update);
    this.#current = undefined;
    this.#ending = true;
    const payload = buildTelephoneEvent({
      event: current.event,
      end: true,
      volume: EVENT_VOLUME,
      duration: this.#units(durationMs),
    });
    this.#options.emit(payload, false, current.timestamp);
    let sent = 1;
    const repeat = (): void => {
      this.#options.emit(payload, false, current.timestamp);
      sent++;
      if (sent < END_REPEATS) this.#after(UPDATE_INTERVAL_MS, repeat);
      else {
        this.#ending = false;
        this.#options.onIdle?.();
        this.#after(INTER_DIGIT_GAP_MS, () => this.#next());
      }
    };
    this.#after(UPDATE_INTERVAL_MS, repeat);
  }
}
