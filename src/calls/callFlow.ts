/**
 * How a call's flows wait and leave. Every step a flow awaits gives up as soon as the call has ended; a flow leaves
 * once the call has ended in one way only: by throwing `CallEnded` (`stop` ends the call and throws it; a step
 * interrupted by an end from outside throws it), caught once at the flow's end by `caught`.
 */
import type { Logger } from 'pino';
import { CallEnded, type Ending } from './callState.js';
import { REFUSALS, reasonOf } from './outcomes.js';

/** What the flows need from their call. */
export interface FlowHost {
  readonly log: Logger;
  /** Aborts when the call ends. */
  readonly signal: AbortSignal;
  ended(): boolean;
  end(ending: Ending): void;
}

export class CallFlow {
  readonly #host: FlowHost;

  constructor(host: FlowHost) {
    this.#host = host;
  }

  /** Await a step of a flow; rejects with CallEnded as soon as the call is ended meanwhile. */
  step<T>(promise: Promise<T>): Promise<T> {
    return untilEnded(this.#host.signal, promise);
  }

  /** `step`, and when the step itself fails: end the call as `failed(err)` says and leave the flow. */
  async stepOr<T>(promise: Promise<T>, failed: (err: unknown) => Ending): Promise<T> {
    try {
      return await this.step(promise);
    } catch (err) {
      if (err instanceof CallEnded) throw err;
      this.stop(failed(err));
    }
  }

  /** End the call and leave the flow that decided it (the flow's catch ends there). */
  stop(ending: Ending): never {
    this.#host.end(ending);
    throw new CallEnded(ending.reason);
  }

  /** Leave the flow if the call has ended meanwhile (the end came from outside: its teardown is under way). */
  leaveIfEnded(): void {
    if (this.#host.ended()) throw new CallEnded();
  }

  /** The one catch at the end of each flow: a CallEnded is the flow's normal way out; anything else is a bug. */
  caught(err: unknown): void {
    if (err instanceof CallEnded || this.#host.ended()) return;
    this.#host.log.error({ err }, 'call failed');
    this.#host.end({ outcome: 'media_failed', reason: reasonOf(err), meta: 'auto', sip: 'auto', refusal: REFUSALS.bridgeError });
  }
}

/** Await a step of a flow; rejects with CallEnded as soon as `ended` aborts (the call ended meanwhile). */
function untilEnded<T>(ended: AbortSignal, promise: Promise<T>): Promise<T> {
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
