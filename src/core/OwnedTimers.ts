/**
 * Timers that one object owns and clears together when it closes, so none fires (or holds the process) afterwards.
 */
export class OwnedTimers {
  readonly #timers = new Set<NodeJS.Timeout>();

  /** Run `fire` after `ms`, unless cleared first. */
  after(ms: number, fire: () => void): NodeJS.Timeout {
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      fire();
    }, ms);
    this.#timers.add(timer);
    return timer;
  }

  /** Clear one timer (nothing for undefined or one already fired). */
  clear(timer: NodeJS.Timeout | undefined): void {
    if (timer === undefined) return;
    clearTimeout(timer);
    this.#timers.delete(timer);
  }

  /** Clear every timer. */
  clearAll(): void {
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
  }
}
