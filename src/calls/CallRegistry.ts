import { InvalidStateError } from '../core/errors.js';
import type { CallSession } from './CallSession.js';

/** Told when a call becomes known under Meta's call id and when it leaves. Must not throw. */
export interface CallRegistryObserver {
  metaCallIdKnown(call: CallSession, metaCallId: string): void;
  removed(call: CallSession): void;
}

/**
 * The live calls of this process, indexed by our id and by Meta's call id.
 * Graceful drain waits on `whenEmpty()`.
 */
export class CallRegistry {
  readonly #byId = new Map<string, CallSession>();
  readonly #byMetaCallId = new Map<string, CallSession>();
  #emptyWaiters: Array<() => void> = [];
  readonly #observers = new Set<CallRegistryObserver>();

  /** Watch calls come and go (the cluster records ownership from this); returns the function that stops it. */
  observe(observer: CallRegistryObserver): () => void {
    this.#observers.add(observer);
    return () => this.#observers.delete(observer);
  }

  get size(): number {
    return this.#byId.size;
  }

  /** Whether a live call has this id. */
  has(id: string): boolean {
    return this.#byId.has(id);
  }

  /** Track a call; its id must be new (a second call under one id would hide the first from drain and close). */
  add(call: CallSession): void {
    if (this.#byId.has(call.id)) throw new InvalidStateError(`a call with id ${call.id} is already live`);
    this.#byId.set(call.id, call);
    if (call.metaCallId) this.bindMetaCallId(call, call.metaCallId);
  }

  /** Index a call under Meta's call id once it is known (business-initiated calls learn it from Graph connect). */
  bindMetaCallId(call: CallSession, metaCallId: string): void {
    this.#byMetaCallId.set(metaCallId, call);
    for (const observer of this.#observers) observer.metaCallIdKnown(call, metaCallId);
  }

  remove(call: CallSession): void {
    if (this.#byId.get(call.id) !== call) return;
    this.#byId.delete(call.id);
    if (call.metaCallId && this.#byMetaCallId.get(call.metaCallId) === call) {
      this.#byMetaCallId.delete(call.metaCallId);
    }
    for (const observer of this.#observers) observer.removed(call);
    if (this.#byId.size === 0) {
      const waiters = this.#emptyWaiters;
      this.#emptyWaiters = [];
      for (const resolve of waiters) resolve();
    }
  }

  byMetaCallId(metaCallId: string): CallSession | undefined {
    return this.#byMetaCallId.get(metaCallId);
  }

  all(): CallSession[] {
    return [...this.#byId.values()];
  }

  /** Resolves when no call is left (at once if none is). */
  whenEmpty(): Promise<void> {
    if (this.#byId.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#emptyWaiters.push(resolve));
  }
}
