/**
 * One 20 ms clock for every outgoing stream toward Meta of a thread (its media engine owns one), instead of one
 * interval per call: each call's own `setInterval` and the `setImmediate` it arms every tick made two timer
 * callbacks per call every 20 ms (5,000 a second at 50 calls, ~6 % of a media thread's CPU in passthrough), where
 * one clock makes two in all and calls each stream's `onFrame` from them.
 *
 * Timing is the same as a stream's own interval gave: every `intervalMs` the clock decides, after that turn's I/O
 * (`setImmediate`: packets queued meanwhile are read first), and calls every stream's `onFrame`. A tick that comes
 * more than 2.5 intervals after the previous one follows an event-loop stall: timers then run before the I/O that
 * queued up meanwhile, so that tick is skipped and the PBX's audio gets one more tick before silence fills in.
 * The interval runs only while a stream is registered.
 */

/** A stream the clock drives. */
export interface FrameListener {
  /** Called once per tick, after the turn's I/O. Must not throw (a throw is caught and the next listener runs). */
  onFrame(): void;
}

export class FrameClock {
  readonly #intervalMs: number;
  readonly #listeners = new Set<FrameListener>();
  readonly #onError: (err: unknown) => void;
  #timer: NodeJS.Timeout | undefined;
  #lastTickAt: number | undefined;
  #pending: NodeJS.Immediate | undefined;

  /**
   * @param intervalMs tick interval, ms (default 20: one Opus frame).
   * @param onError where a listener's throw goes (default: ignored; listeners are not meant to throw).
   */
  constructor(intervalMs = 20, onError: (err: unknown) => void = () => undefined) {
    this.#intervalMs = intervalMs;
    this.#onError = onError;
  }

  /** Streams registered. */
  get size(): number {
    return this.#listeners.size;
  }

  /** True while the interval runs (at least one stream registered). */
  get running(): boolean {
    return this.#timer !== undefined;
  }

  /** Register a stream; the interval starts with the first. Idempotent. */
  add(listener: FrameListener): void {
    this.#listeners.add(listener);
    if (this.#timer === undefined) {
      this.#lastTickAt = performance.now();
      this.#timer = setInterval(() => this.#tick(), this.#intervalMs);
    }
  }

  /** Unregister a stream; the interval stops with the last. Idempotent. */
  delete(listener: FrameListener): void {
    this.#listeners.delete(listener);
    if (this.#listeners.size > 0) return;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    if (this.#pending !== undefined) clearImmediate(this.#pending);
    this.#timer = undefined;
    this.#pending = undefined;
    this.#lastTickAt = undefined;
  }

  #tick(): void {
    const now = performance.now();
    const stalled = this.#lastTickAt !== undefined && now - this.#lastTickAt > this.#intervalMs * 2.5;
    this.#lastTickAt = now;
    if (stalled || this.#pending !== undefined) return;
    this.#pending = setImmediate(() => {
      this.#pending = undefined;
      for (const listener of this.#listeners) {
        try {
          listener.onFrame();
        } catch (err) {
          this.#onError(err);
        }
      }
    });
  }
}
