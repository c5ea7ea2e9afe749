import { EventEmitter } from 'node:events';

/** An event map: event name -> argument tuple (an interface of tuples). */
export type EventMap<E> = { [K in keyof E]: unknown[] };

/**
 * EventEmitter with a typed event map, after mediasoup's EnhancedEventEmitter.
 * `safeEmit` never lets a listener's exception escape into the emitter (habit 8).
 */
export class TypedEmitter<E extends EventMap<E>> {
  readonly #ee = new EventEmitter();

  constructor() {
    this.#ee.setMaxListeners(Infinity);
  }

  on<K extends keyof E & string>(event: K, listener: (...args: E[K]) => void): this {
    this.#ee.on(event, listener as (...args: unknown[]) => void);
    return this;
  }

  once<K extends keyof E & string>(event: K, listener: (...args: E[K]) => void): this {
    this.#ee.once(event, listener as (...args: unknown[]) => void);
    return this;
  }

  off<K extends keyof E & string>(event: K, listener: (...args: E[K]) => void): this {
    this.#ee.off(event, listener as (...args: unknown[]) => void);
    return this;
  }

  removeAllListeners<K extends keyof E & string>(event?: K): this {
    if (event === undefined) this.#ee.removeAllListeners();
    else this.#ee.removeAllListeners(event);
    return this;
  }

  listenerCount<K extends keyof E & string>(event: K): number {
    return this.#ee.listenerCount(event);
  }

  /** Emit; a throwing listener is reported on `process` as a warning, never thrown to the caller. */
  safeEmit<K extends keyof E & string>(event: K, ...args: E[K]): boolean {
    try {
      return this.#ee.emit(event, ...args);
    } catch (err) {
      process.emitWarning(`listener for '${event}' threw: ${(err as Error)?.stack ?? String(err)}`);
      return true;
    }
  }

  /** Resolve with the event's arguments, or reject when `signal` aborts. */
  waitFor<K extends keyof E & string>(event: K, signal?: AbortSignal): Promise<E[K]> {
    return new Promise((resolve, reject) => {
      const onEvent = (...args: E[K]): void => {
        signal?.removeEventListener('abort', onAbort);
        resolve(args);
      };
      const onAbort = (): void => {
        this.off(event, onEvent);
        reject(signal?.reason ?? new Error(`aborted waiting for '${event}'`));
      };
      if (signal?.aborted) {
        onAbort();
        return;
      }
      this.once(event, onEvent);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}
