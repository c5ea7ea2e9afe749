/**
 * What the webhook layer drops before the call controller sees an event: events for pages we do not serve,
 * Meta's retries and duplicates, media updates older than one already seen, and connects past the accept window.
 * Memory is bounded: entries expire after `ttlMs` and the oldest go first beyond `maxEntries`.
 */
import type { MetaEvent } from '../calls/ports.js';

export type FilterVerdict = 'accepted' | 'duplicate' | 'stale' | 'unknown_page';

/** Meta's accept window: a connect older than this cannot be accepted any more. */
export const CONNECT_MAX_AGE_SECONDS = 60;

/** A Map with per-entry expiry and a size cap; insertion order is age order. */
export class TtlCache<V> {
  readonly #entries = new Map<string, { value: V; expiresAt: number }>();
  readonly #ttlMs: number;
  readonly #maxEntries: number;
  readonly #now: () => number;

  constructor(options: { ttlMs: number; maxEntries: number; now?: () => number }) {
    this.#ttlMs = options.ttlMs;
    this.#maxEntries = options.maxEntries;
    this.#now = options.now ?? Date.now;
  }

  get size(): number {
    return this.#entries.size;
  }

  get(key: string): V | undefined {
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    if (entry.expiresAt <= this.#now()) {
      this.#entries.delete(key);
      return undefined;
    }
    return entry.value;
  }

  has(key: string): boolean {
    return this.get(key) !== undefined;
  }

  set(key: string, value: V): void {
    this.#entries.delete(key);
    this.#entries.set(key, { value, expiresAt: this.#now() + this.#ttlMs });
    this.#prune();
  }

  #prune(): void {
    const now = this.#now();
    for (const [key, entry] of this.#entries) {
      // Oldest first: stop at the first live entry once under the cap.
      if (entry.expiresAt > now && this.#entries.size <= this.#maxEntries) break;
      this.#entries.delete(key);
    }
  }
}

export interface EventFilterOptions {
  /**
   * Pages served; events for others are dropped. A Set is used by reference (it may change later),
   * a function is asked for every event.
   */
  pageIds: Iterable<string> | ((pageId: string) => boolean);
  /** How long a seen event is remembered (ms). Default 15 min. */
  ttlMs?: number;
  /** Cap on remembered events. Default 20000. */
  maxEntries?: number;
  /** Clock (ms), for tests. */
  now?: () => number;
}

/** What makes two deliveries the same event (Meta retries byte-identical items). */
export function dedupeKey(event: MetaEvent): string {
  switch (event.kind) {
    case 'connect':
      return `${event.callId}|connect|${event.timestamp}`;
    case 'call_status':
      return `${event.callId}|call_status|${event.timestamp}|${event.status}`;
    case 'media_update':
      return `${event.callId}|media_update|${event.timestamp}|${event.version}`;
    case 'terminate':
      return `${event.callId}|terminate|${event.timestamp}|${event.status ?? ''}`;
    case 'call_permission_reply':
      return `${event.pageId}|${event.psid}|call_permission_reply|${event.timestamp}|${event.response ?? ''}`;
  }
}

export class EventFilter {
  readonly #isKnownPage: (pageId: string) => boolean;
  readonly #seen: TtlCache<true>;
  readonly #mediaVersions: TtlCache<number>;
  readonly #now: () => number;

  constructor(options: EventFilterOptions) {
    const pages = options.pageIds;
    if (typeof pages === 'function') this.#isKnownPage = pages;
    else {
      const set = pages instanceof Set ? (pages as Set<string>) : new Set(pages);
      this.#isKnownPage = (pageId) => set.has(pageId);
    }
    this.#now = options.now ?? Date.now;
    const cache = { ttlMs: options.ttlMs ?? 15 * 60_000, maxEntries: options.maxEntries ?? 20_000, now: this.#now };
    this.#seen = new TtlCache(cache);
    this.#mediaVersions = new TtlCache(cache);
  }

  /** Decide, and remember the event when it is accepted or a duplicate. */
  check(event: MetaEvent): FilterVerdict {
    if (!this.#isKnownPage(event.pageId)) return 'unknown_page';
    const key = dedupeKey(event);
    if (this.#seen.has(key)) return 'duplicate';
    if (event.kind === 'connect' && this.#now() / 1000 - event.timestamp > CONNECT_MAX_AGE_SECONDS) {
      this.#seen.set(key, true);
      return 'stale';
    }
    if (event.kind === 'media_update') {
      const newest = this.#mediaVersions.get(event.callId);
      if (newest !== undefined && event.version <= newest) return 'stale';
      this.#mediaVersions.set(event.callId, event.version);
    }
    this.#seen.set(key, true);
    return 'accepted';
  }
}
