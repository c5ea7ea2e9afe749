/**
 * A small bounded pool of per-call resources made ahead of calls (a router with its transports and RTP socket, an
 * ICE agent with its candidates gathered), so that a new call takes a ready one instead of waiting for it.
 *
 * Every take starts making a replacement in the background. Items that stopped being usable while they waited (their
 * worker died) are dropped and replaced. Failures to make one are retried with a growing delay. `close()` frees what
 * the pool holds and whatever is still being made when it arrives; the pool never holds more than `size` items.
 */
import type { Logger } from 'pino';

export interface MediaPoolOptions<T> {
  /** Items kept ready; 0 disables the pool (`take` then always returns undefined). */
  size: number;
  /** Makes one item. */
  create(): Promise<T>;
  /** Frees an item the pool will not hand out (pool closed, item no longer usable). Must not throw. */
  destroy(item: T): void;
  /** False once an item can no longer be used (its worker died, its sockets closed). Default: always usable. */
  usable?(item: T): boolean;
  log: Logger;
  /** What the items are, for logs (e.g. 'call media'). */
  what: string;
  /** Delay before the first retry after a failed `create` (ms); it doubles on each failure, up to 32x. Default 200. */
  retryDelayMs?: number;
}

/** Pool counters (for logs, metrics and tests). */
export interface MediaPoolStats {
  /** Items ready now. */
  ready: number;
  /** Items being made. */
  creating: number;
  /** Takes served from the pool. */
  hits: number;
  /** Takes that found the pool empty. */
  misses: number;
  /** Items dropped because they were no longer usable. */
  dropped: number;
  /** Failed `create` calls. */
  failures: number;
}

export class MediaPool<T> {
  readonly #o: MediaPoolOptions<T>;
  readonly #log: Logger;
  readonly #size: number;
  #items: T[] = [];
  #creating = 0;
  #closed = false;
  #retryTimer: NodeJS.Timeout | undefined;
  #refillSoon: NodeJS.Immediate | undefined;
  /** Consecutive failures, for the retry delay. */
  #failuresInARow = 0;
  #waiters: Array<() => void> = [];
  readonly #stats = { hits: 0, misses: 0, dropped: 0, failures: 0 };

  constructor(options: MediaPoolOptions<T>) {
    if (!Number.isInteger(options.size) || options.size < 0) throw new RangeError(`invalid pool size ${options.size}`);
    this.#o = options;
    this.#size = options.size;
    this.#log = options.log;
    this.#refill();
  }

  /** Maximum number of items kept ready. */
  get size(): number {
    return this.#size;
  }

  get closed(): boolean {
    return this.#closed;
  }

  stats(): MediaPoolStats {
    return { ready: this.#items.length, creating: this.#creating, ...this.#stats };
  }

  /**
   * Resolves once the pool is full, or as soon as making an item failed, or the pool closed: for start-up, so that
   * the first calls find it ready without blocking start-up on a resource that cannot be made.
   */
  whenReady(): Promise<void> {
    if (this.#closed || this.#items.length >= this.#size) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  /**
   * Take a ready item, or undefined when there is none. `pick` chooses among the usable items (index into the list
   * given; default the oldest). A replacement is started in the background.
   */
  take(pick?: (items: readonly T[]) => number): T | undefined {
    if (this.#closed || this.#size === 0) return undefined;
    this.#dropUnusable();
    let item: T | undefined;
    if (this.#items.length > 0) {
      const index = pick ? pick(this.#items) : 0;
      const at = index >= 0 && index < this.#items.length ? index : 0;
      item = this.#items.splice(at, 1)[0];
    }
    if (item === undefined) this.#stats.misses++;
    else this.#stats.hits++;
    // Not now: the replacement's first steps would run before the taker's own continuation, on its call's path.
    this.#refillSoon ??= setImmediate(() => {
      this.#refillSoon = undefined;
      this.#refill();
    });
    return item;
  }

  /**
   * Drop the items that are no longer usable (call after a worker died) and start replacing them at once, without
   * waiting for a pending retry delay (call after a worker came back).
   */
  prune(): void {
    if (this.#closed) return;
    this.#dropUnusable();
    if (this.#retryTimer !== undefined) {
      clearTimeout(this.#retryTimer);
      this.#retryTimer = undefined;
    }
    this.#refill();
  }

  /** Free every item held; items still being made are freed when they arrive. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#retryTimer !== undefined) clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    if (this.#refillSoon !== undefined) clearImmediate(this.#refillSoon);
    this.#refillSoon = undefined;
    const items = this.#items;
    this.#items = [];
    for (const item of items) this.#destroy(item);
    this.#wake();
    this.#log.debug({ freed: items.length, stats: this.stats() }, `${this.#o.what} pool closed`);
  }

  #usable(item: T): boolean {
    try {
      return this.#o.usable ? this.#o.usable(item) : true;
    } catch {
      return false;
    }
  }

  #destroy(item: T): void {
    try {
      this.#o.destroy(item);
    } catch (err) {
      this.#log.warn({ err }, `could not free a prepared ${this.#o.what}`);
    }
  }

  #dropUnusable(): void {
    const keep: T[] = [];
    for (const item of this.#items) {
      if (this.#usable(item)) keep.push(item);
      else {
        this.#stats.dropped++;
        this.#destroy(item);
      }
    }
    this.#items = keep;
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const resolve of waiters) resolve();
  }

  #refill(): void {
    if (this.#closed || this.#retryTimer !== undefined) return;
    while (this.#items.length + this.#creating < this.#size) {
      this.#creating++;
      Promise.resolve()
        .then(() => this.#o.create())
        .then(
          (item) => this.#arrived(item),
          (err: unknown) => this.#failed(err),
        );
    }
  }

  #arrived(item: T): void {
    this.#creating--;
    if (this.#closed) {
      this.#destroy(item);
      return;
    }
    if (!this.#usable(item)) {
      // Made on a worker that died meanwhile: try again, but as a failure (a dying worker must not make us spin).
      this.#destroy(item);
      this.#failed(new Error(`a prepared ${this.#o.what} was unusable on arrival`), false);
      return;
    }
    this.#failuresInARow = 0;
    this.#items.push(item);
    if (this.#items.length >= this.#size) this.#wake();
  }

  #failed(err: unknown, stillCounted = true): void {
    if (stillCounted) this.#creating--;
    if (this.#closed) return;
    this.#stats.failures++;
    this.#failuresInARow++;
    const n = this.#failuresInARow;
    // One line for the first failure of a run and then at powers of two: a dead worker slot must not flood the log.
    if ((n & (n - 1)) === 0) this.#log.warn({ err, failuresInARow: n }, `could not prepare a ${this.#o.what}; retrying`);
    this.#wake();
    if (this.#retryTimer !== undefined) return;
    const delay = (this.#o.retryDelayMs ?? 200) * 2 ** Math.min(n - 1, 5);
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#refill();
    }, delay);
    this.#retryTimer.unref();
  }
}
