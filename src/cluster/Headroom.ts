/**
 * Whether an instance can take one more call, and how loaded it is, as the cluster's placement asks it.
 * Calls against `calls.max_concurrent`, and the load admission (calls/Admission) when it is refusing.
 */
export interface Headroom {
  /** True when this instance would take one more call now. */
  hasRoom(): boolean;
  /** Comparable across instances: 0 = idle, 1 = full. The least loaded live instance gets a call placed elsewhere. */
  load(): number;
}

/**
 * Headroom from the number of live calls against a limit (both read on every question: a reload changes the limit),
 * and from the load admission's state: while it refuses calls (a signal over its limit) there is no room and the
 * load counts as full. `refusing` must not consume anything (admission's `status()`, not its `admit()`).
 */
export class CallCountHeadroom implements Headroom {
  readonly #calls: () => number;
  readonly #max: () => number;
  readonly #refusing: () => boolean;

  constructor(calls: () => number, max: () => number, refusing: () => boolean = () => false) {
    this.#calls = calls;
    this.#max = max;
    this.#refusing = refusing;
  }

  hasRoom(): boolean {
    return this.#calls() < this.#max() && !this.#refusing();
  }

  load(): number {
    const max = this.#max();
    if (max <= 0 || this.#refusing()) return 1;
    return Math.min(1, this.#calls() / max);
  }
}
