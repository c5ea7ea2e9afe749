/**
 * Per-source limits on INVITEs from the PBX side: calls in progress from one address, and INVITEs per second from
 * it (a token bucket). One misbehaving or compromised host then cannot take every call slot of the bridge.
 */

export interface SourceLimitSettings {
  /** Calls in progress from one source address. */
  maxConcurrent: number;
  /** INVITEs per second from one source address, sustained. */
  perSecond: number;
  /** INVITEs one source may send at once before `perSecond` applies. */
  burst: number;
}

/** Sources kept without live calls before idle ones are forgotten. */
const PRUNE_ABOVE = 1_000;

export class SourceLimits {
  readonly #settings: () => SourceLimitSettings | undefined;
  readonly #now: () => number;
  readonly #live = new Map<string, number>();
  readonly #buckets = new Map<string, { tokens: number; at: number }>();

  /** `settings` is asked on every check, so that a reload applies (undefined: no limit); `now` in ms. */
  constructor(settings: () => SourceLimitSettings | undefined, now: () => number = () => performance.now()) {
    this.#settings = settings;
    this.#now = now;
  }

  /**
   * Why a new call from `source` is refused now (`rate` or `concurrent`), or undefined: then the INVITE has used one
   * token of the source's rate, and the caller must `hold` the call's slot.
   */
  check(source: string): 'rate' | 'concurrent' | undefined {
    const limits = this.#settings();
    if (!limits) return undefined;
    const now = this.#now();
    if (this.#buckets.size > PRUNE_ABOVE) this.#prune(limits, now);
    const bucket = this.#buckets.get(source) ?? { tokens: limits.burst, at: now };
    bucket.tokens = Math.min(limits.burst, bucket.tokens + ((now - bucket.at) / 1000) * limits.perSecond);
    bucket.at = now;
    this.#buckets.set(source, bucket);
    if (bucket.tokens < 1) return 'rate';
    bucket.tokens -= 1;
    if ((this.#live.get(source) ?? 0) >= limits.maxConcurrent) return 'concurrent';
    return undefined;
  }

  /** Count a call from `source` until `done` settles. */
  hold(source: string, done: Promise<unknown>): void {
    this.#live.set(source, (this.#live.get(source) ?? 0) + 1);
    const release = (): void => {
      const left = (this.#live.get(source) ?? 1) - 1;
      if (left > 0) this.#live.set(source, left);
      else this.#live.delete(source);
    };
    done.then(release, release);
  }

  /** Calls in progress from `source`. */
  live(source: string): number {
    return this.#live.get(source) ?? 0;
  }

  #prune(limits: SourceLimitSettings, now: number): void {
    for (const [source, bucket] of this.#buckets) {
      const full = bucket.tokens + ((now - bucket.at) / 1000) * limits.perSecond >= limits.burst;
      if (full && !this.#live.has(source)) this.#buckets.delete(source);
    }
  }
}
