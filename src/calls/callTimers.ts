/**
 * The waits of one call's flows: every one has a deadline on a timer the call owns (cleared when the call ends).
 * Every step of a flow gives up as soon as the call has ended: callFlow.ts.
 */
import { OwnedTimers } from '../core/OwnedTimers.js';

export class CallTimers {
  readonly #timers = new OwnedTimers();

  /** An AbortSignal that fires after `ms`. */
  deadline(ms: number): AbortSignal {
    const controller = new AbortController();
    this.#timers.after(ms, () => controller.abort(new Error(`deadline of ${ms} ms passed`)));
    return controller.signal;
  }

  /**
   * A wait for something the call is told about later (a webhook, an SDP answer): `promise` resolves on the first
   * `resolve()`, or rejects with `timeoutMessage` after `ms`.
   */
  waiter(ms: number, timeoutMessage: string): { promise: Promise<void>; resolve: () => void } {
    let resolve!: () => void;
    const promise = new Promise<void>((res, reject) => {
      const timer = this.#timers.after(ms, () => reject(new Error(timeoutMessage)));
      resolve = () => {
        this.#timers.clear(timer);
        res();
      };
    });
    return { promise, resolve };
  }

  /** Clear every timer (the call ended). */
  clear(): void {
    this.#timers.clearAll();
  }
}
