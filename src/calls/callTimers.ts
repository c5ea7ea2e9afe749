/**
 * The waits of one call's flows: every one has a deadline on a timer the call owns (cleared when the call ends), and
 * every step of a flow gives up as soon as the call has ended.
 */
import { OwnedTimers } from '../core/OwnedTimers.js';
import { CallEnded } from './callState.js';

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

/** Await a step of a flow; rejects with CallEnded as soon as `ended` aborts (the call ended meanwhile). */
export function untilEnded<T>(ended: AbortSignal, promise: Promise<T>): Promise<T> {
  if (ended.aborted) {
    // The step's own outcome no longer matters: the call has ended.
    promise.catch(() => undefined);
    return Promise.reject(new CallEnded());
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(new CallEnded());
    ended.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        ended.removeEventListener('abort', onAbort);
        if (ended.aborted) reject(new CallEnded());
        else resolve(value);
      },
      (err: unknown) => {
        ended.removeEventListener('abort', onAbort);
        reject(ended.aborted ? new CallEnded() : err);
      },
    );
  });
}
