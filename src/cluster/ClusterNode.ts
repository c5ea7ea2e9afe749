/**
 * One bridge instance's place in a cluster of bridges behind one webhook URL, sharing a Redis.
 *
 * - Ownership: the instance that takes a call records `call:<meta call id> -> instance` (and the call in its
 *   `owned:<instance>` hash) before acting on it, and refreshes both every heartbeat while the call lives.
 * - Any instance takes any webhook: the webhook layer answers 200 first; then an event for a call owned elsewhere is
 *   published on the owner's channel, and the owner applies it. Events of one call go through one queue per instance,
 *   so the owner gets them in the order this instance received them.
 * - Dedupe across instances: `SET seen:<event key> NX PX dedupe_ttl_ms` before routing.
 * - Placement: a consumer `connect` is taken here when `Headroom` says so, else handed to the least loaded live peer
 *   with room; with room nowhere it is taken here and refused (Graph reject) by the controller's capacity check.
 * - Liveness: `alive:<instance>` expires after `peer_timeout_ms` unless refreshed; a survivor that sees a member
 *   without it takes `reap:<instance>` (SET NX) and ends that instance's calls toward Meta, once.
 * - Redis unreachable: events of calls this instance owns are applied as before, new calls are refused (the gate),
 *   one log line when it goes and one when it is back; ioredis reconnects by itself.
 */
import { hostname } from 'node:os';
import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from 'pino';
import type { CallRegistry } from '../calls/CallRegistry.js';
import type { CallSession } from '../calls/CallSession.js';
import { REFUSALS, type SipRefusal } from '../calls/outcomes.js';
import type { CallDirection, GraphPort, MetaCallEvent, MetaEvent, MetaEventSink } from '../calls/ports.js';
import type { Config } from '../config/schema.js';
import { dedupeKey } from '../webhook/EventFilter.js';
import type { ClusterMetrics } from './ClusterMetrics.js';
import type { Headroom } from './Headroom.js';

export type ClusterConfig = Config['cluster'];

export interface ClusterNodeDeps {
  config: ClusterConfig;
  /** Where events this instance applies go (the call controller). */
  sink: MetaEventSink;
  /** This instance's live calls. */
  registry: CallRegistry;
  /** Ends a lost instance's calls toward Meta. */
  graph: GraphPort;
  headroom: Headroom;
  metrics: ClusterMetrics;
  log: Logger;
  /** Deadline of each Graph request made for a lost instance (ms). */
  graphTimeoutMs: number;
}

/** What an instance writes about each call it owns, for the survivor that may have to end it. */
interface OwnedCall {
  pageId: string;
  direction: CallDirection;
  /** Meta accepted it (ended with terminate); otherwise it is ended with reject. */
  accepted: boolean;
}

/** What an instance says about itself every heartbeat. */
interface PeerState {
  load: number;
  room: boolean;
}

/** An event handed from the instance that received it to the owner. */
interface Forward {
  from: string;
  /** Date.now() on the sender when published. */
  sentAt: number;
  /** A connect placed here because the receiver had no room: claim it, then apply it. */
  placed?: boolean;
  event: MetaCallEvent;
}

/** Waits for the owner of an event whose call is not recorded yet (a webhook may beat Graph connect's response). */
const OWNER_WAIT_STEPS_MS = [25, 50, 100, 200, 300, 400, 400, 500];
/** How long the lock on a lost instance's calls is held (ms); a reaper that dies lets another retry after it. */
const REAP_LOCK_MS = 60_000;
/** How long the mark "your calls were ended" waits for an instance cut off from Redis (ms). */
const REAPED_MARK_MS = 3_600_000;

const ACCEPTED_STATES: ReadonlySet<string> = new Set(['media', 'active', 'transferring']);

export function defaultInstanceId(): string {
  return `${hostname().replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 40)}-${process.pid}`;
}

export class ClusterNode implements MetaEventSink {
  /** This instance's name in the cluster. */
  readonly instanceId: string;
  readonly #deps: ClusterNodeDeps;
  readonly #log: Logger;
  readonly #cmd: Redis;
  readonly #sub: Redis;
  readonly #prefix: string;
  readonly #chains = new Map<string, Promise<void>>();
  /** Live peers (this instance excluded) as of the last heartbeat. */
  #peers = new Map<string, PeerState>();
  #up = false;
  /** The subscriber listens on this instance's channel (since its last connection). */
  #subscribed = false;
  #upSince = 0;
  #downLogged = false;
  #ticking = false;
  /** The first heartbeat of this process went through (calls of a previous run with this id were looked at). */
  #joined = false;
  /** Lost instances whose calls this instance is ending now. */
  readonly #reaping = new Set<string>();
  #timer: NodeJS.Timeout | undefined;
  #unobserve: (() => void) | undefined;
  #closed = false;

  constructor(deps: ClusterNodeDeps) {
    this.#deps = deps;
    const { config } = deps;
    this.instanceId = config.instance_id ?? defaultInstanceId();
    this.#prefix = config.redis.key_prefix;
    this.#log = deps.log.child({ component: 'cluster', instance: this.instanceId });
    const base: RedisOptions = {
      host: config.redis.host,
      port: config.redis.port,
      db: config.redis.db,
      ...(config.redis.password !== undefined ? { password: config.redis.password } : {}),
      connectTimeout: 2000,
      // Reconnect forever, quickly at first; never more than a second apart.
      retryStrategy: (times) => Math.min(100 * times, 1000),
      connectionName: `msb-${this.instanceId}`,
    };
    // Commands fail at once while disconnected (no queue that replays stale ownership later) and within a deadline.
    this.#cmd = new Redis({ ...base, enableOfflineQueue: false, maxRetriesPerRequest: 0, commandTimeout: config.redis.command_timeout_ms });
    // The subscriber subscribes on each (re)connection itself: ioredis 6.0.0's autoResubscribe sends its SUBSCRIBE
    // without handling a rejection, so a connection lost during it would end the process (unhandled rejection).
    this.#sub = new Redis({ ...base, autoResubscribe: false, maxRetriesPerRequest: null });
    for (const client of [this.#cmd, this.#sub]) {
      client.on('ready', () => this.#linkChanged());
      client.on('close', () => this.#linkChanged());
      client.on('error', (err: Error) => this.#linkError(err));
    }
    this.#sub.on('ready', () => this.#subscribe());
    this.#sub.on('close', () => (this.#subscribed = false));
    this.#sub.on('message', (_channel: string, message: string) => this.#received(message));
    this.#unobserve = deps.registry.observe({
      metaCallIdKnown: (call, metaCallId) => this.#recordOwned(call, metaCallId),
      removed: (call) => this.#forgetOwned(call),
    });
    this.#timer = setInterval(() => this.#tick(), config.heartbeat_ms);
    this.#timer.unref();
  }

  /** True while Redis is reachable: new calls may be taken. */
  get up(): boolean {
    return this.#up;
  }

  /** The controller's gate: new calls are refused while the cluster cannot record who owns them. */
  admit(): SipRefusal | undefined {
    return this.#up ? undefined : REFUSALS.clusterDown;
  }

  /** Resolves once Redis is reachable (or rejects at the signal). */
  async whenUp(signal: AbortSignal): Promise<void> {
    while (!this.#up) {
      signal.throwIfAborted();
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  // ------------------------------------------------------------------------------------------------------------
  // Webhook events
  // ------------------------------------------------------------------------------------------------------------

  handleMetaEvent(event: MetaEvent): void {
    if (event.kind === 'call_permission_reply') {
      const key = dedupeKey(event);
      this.#enqueue(`permission:${event.pageId}`, async () => {
        if (await this.#firstSeen(key, event.kind)) this.#deliver(event);
      });
      return;
    }
    this.#enqueue(event.callId, () => this.#route(event));
  }

  async #route(event: MetaCallEvent): Promise<void> {
    // Without Redis: what this instance owns goes on; a new call reaches the controller, whose gate refuses it.
    if (!this.#up) return this.#deliver(event);
    if (!(await this.#firstSeen(dedupeKey(event), event.kind))) return;
    if (this.#deps.registry.byMetaCallId(event.callId)) return this.#deliver(event);
    if (event.kind === 'connect' && event.direction === 'user_initiated') return this.#place(event);
    const owner = await this.#ownerOf(event.callId);
    if (owner === undefined || owner === this.instanceId) return this.#deliver(event);
    await this.#forward(owner, { from: this.instanceId, sentAt: Date.now(), event });
  }

  /** Take the connect here, or hand it to the least loaded live peer with room. */
  async #place(event: MetaCallEvent): Promise<void> {
    const { headroom, metrics } = this.#deps;
    if (headroom.hasRoom()) {
      metrics.placed('local');
      return this.#claimAndDeliver(event);
    }
    let best: [string, PeerState] | undefined;
    for (const peer of this.#peers) {
      if (peer[1].room && (best === undefined || peer[1].load < best[1].load)) best = peer;
    }
    if (best) {
      metrics.placed('peer');
      this.#log.info({ callId: event.callId, to: best[0], load: best[1].load }, 'no room here: connect handed to the least loaded instance');
      await this.#forward(best[0], { from: this.instanceId, sentAt: Date.now(), placed: true, event });
      return;
    }
    metrics.placed('refused');
    this.#log.warn({ callId: event.callId, peers: this.#peers.size }, 'no instance has room for the call: refusing it');
    this.#deliver(event);
  }

  /** Record ownership (before acting), then apply. A call someone else already owns is left to it. */
  async #claimAndDeliver(event: MetaCallEvent): Promise<void> {
    try {
      const claimed = await this.#cmd.set(this.#key('call', event.callId), this.instanceId, 'PX', this.#deps.config.ownership_ttl_ms, 'NX');
      if (claimed === null) {
        const owner = await this.#cmd.get(this.#key('call', event.callId));
        if (owner !== null && owner !== this.instanceId) {
          this.#log.warn({ callId: event.callId, owner }, 'connect for a call another instance owns ignored');
          return;
        }
      }
    } catch (err) {
      // Redis failing right now: the call is taken anyway, and recorded by the next heartbeat.
      this.#log.warn({ err, callId: event.callId }, 'recording call ownership failed');
    }
    this.#deliver(event);
  }

  /** The owner of a call; waits briefly when none is recorded yet. */
  async #ownerOf(callId: string): Promise<string | undefined> {
    for (let step = 0; ; step++) {
      try {
        const owner = await this.#cmd.get(this.#key('call', callId));
        if (owner !== null) return owner;
      } catch (err) {
        this.#log.debug({ err, callId }, 'owner lookup failed');
        return undefined;
      }
      const wait = OWNER_WAIT_STEPS_MS[step];
      if (wait === undefined || this.#closed) return undefined;
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }

  /** True when no instance took this event before (SET NX); true as well when Redis cannot say. */
  async #firstSeen(key: string, kind: string): Promise<boolean> {
    try {
      const set = await this.#cmd.set(this.#key('seen', key), this.instanceId, 'PX', this.#deps.config.dedupe_ttl_ms, 'NX');
      if (set !== null) return true;
      this.#deps.metrics.duplicate(kind);
      this.#log.info({ kind, key }, 'webhook event already taken by an instance: dropped');
      return false;
    } catch (err) {
      this.#log.debug({ err, kind }, 'dedupe in Redis failed; applying the event');
      return true;
    }
  }

  async #forward(owner: string, forward: Forward): Promise<void> {
    const { metrics } = this.#deps;
    const { event } = forward;
    try {
      const listeners = await this.#cmd.publish(this.#channel(owner), JSON.stringify(forward));
      if (listeners > 0) {
        metrics.forwarded('sent', event.kind);
        this.#log.debug({ callId: event.callId, kind: event.kind, owner }, 'webhook event handed to the owner');
        return;
      }
      metrics.forwarded('undelivered', event.kind);
      this.#log.warn({ callId: event.callId, kind: event.kind, owner }, 'owner of the call is not listening: event dropped (a lost instance has its calls ended by a survivor)');
    } catch (err) {
      metrics.forwarded('undelivered', event.kind);
      this.#log.warn({ err, callId: event.callId, kind: event.kind, owner }, 'handing the event to its owner failed');
    }
  }

  #received(message: string): void {
    let forward: Forward;
    try {
      forward = JSON.parse(message) as Forward;
      if (typeof forward.event?.callId !== 'string' || typeof forward.event.kind !== 'string' || typeof forward.sentAt !== 'number') {
        throw new Error('not a forwarded event');
      }
    } catch (err) {
      this.#log.warn({ err, bytes: message.length }, 'malformed message on the cluster channel ignored');
      return;
    }
    const { event } = forward;
    this.#deps.metrics.forwarded('received', event.kind);
    this.#deps.metrics.forwardLatency((Date.now() - forward.sentAt) / 1000);
    this.#log.debug({ callId: event.callId, kind: event.kind, from: forward.from }, 'webhook event from another instance');
    this.#enqueue(event.callId, async () => {
      if (forward.placed) await this.#claimAndDeliver(event);
      else this.#deliver(event);
    });
  }

  #deliver(event: MetaEvent): void {
    try {
      this.#deps.sink.handleMetaEvent(event);
    } catch (err) {
      this.#log.error({ err, kind: event.kind }, 'event sink threw');
    }
  }

  /** Run tasks of one key one after the other (events of one call stay in order). */
  #enqueue(key: string, task: () => Promise<void>): void {
    const previous = this.#chains.get(key) ?? Promise.resolve();
    const next = previous.then(task).catch((err: unknown) => this.#log.error({ err, key }, 'cluster event routing failed'));
    this.#chains.set(key, next);
    void next.then(() => {
      if (this.#chains.get(key) === next) this.#chains.delete(key);
    });
  }

  // ------------------------------------------------------------------------------------------------------------
  // Ownership of this instance's calls
  // ------------------------------------------------------------------------------------------------------------

  #owned(call: CallSession): OwnedCall {
    return { pageId: call.pageId, direction: call.direction, accepted: ACCEPTED_STATES.has(call.state) };
  }

  #recordOwned(call: CallSession, metaCallId: string): void {
    this.#deps.metrics.ownedCalls(this.#deps.registry.size);
    if (!this.#up) return;
    this.#cmd
      .multi()
      .set(this.#key('call', metaCallId), this.instanceId, 'PX', this.#deps.config.ownership_ttl_ms)
      .hset(this.#key('owned', this.instanceId), metaCallId, JSON.stringify(this.#owned(call)))
      .exec()
      .catch((err: unknown) => call.log.warn({ err }, 'recording call ownership failed (the next heartbeat retries)'));
  }

  #forgetOwned(call: CallSession): void {
    this.#deps.metrics.ownedCalls(this.#deps.registry.size);
    if (!this.#up || !call.metaCallId) return;
    this.#cmd
      .multi()
      .del(this.#key('call', call.metaCallId))
      .hdel(this.#key('owned', this.instanceId), call.metaCallId)
      .exec()
      .catch((err: unknown) => call.log.debug({ err }, 'forgetting call ownership failed (it expires)'));
  }

  // ------------------------------------------------------------------------------------------------------------
  // Heartbeat, peers, lost instances
  // ------------------------------------------------------------------------------------------------------------

  #tick(): void {
    if (!this.#up || this.#ticking || this.#closed) return;
    this.#ticking = true;
    this.#heartbeat()
      .catch((err: unknown) => this.#log.debug({ err }, 'heartbeat failed'))
      .finally(() => (this.#ticking = false));
  }

  async #heartbeat(): Promise<void> {
    const { config, headroom, registry, metrics } = this.#deps;
    const me = this.instanceId;
    if (!this.#joined) {
      await this.#endPreviousRun();
      this.#joined = true;
    }
    const state: PeerState = { load: headroom.load(), room: headroom.hasRoom() };
    const calls = registry.all().filter((call) => call.metaCallId !== undefined);
    const owned: Record<string, string> = {};
    const tx = this.#cmd
      .multi()
      .set(this.#key('alive', me), JSON.stringify(state), 'PX', config.peer_timeout_ms)
      .sadd(this.#key('members'), me)
      .del(this.#key('owned', me));
    for (const call of calls) {
      tx.set(this.#key('call', call.metaCallId!), me, 'PX', config.ownership_ttl_ms);
      owned[call.metaCallId!] = JSON.stringify(this.#owned(call));
    }
    if (calls.length > 0) tx.hset(this.#key('owned', me), owned);
    tx.get(this.#key('reaped', me));
    tx.smembers(this.#key('members'));
    const results = (await tx.exec()) ?? [];
    const reapedMark = results.at(-2)?.[1];
    const members = (results.at(-1)?.[1] as string[] | undefined) ?? [];
    metrics.ownedCalls(registry.size);
    if (typeof reapedMark === 'string') await this.#reapedWhileAway();

    const others = members.filter((id) => id !== me);
    const states = others.length > 0 ? await this.#cmd.mget(others.map((id) => this.#key('alive', id))) : [];
    const peers = new Map<string, PeerState>();
    const lost: string[] = [];
    others.forEach((id, i) => {
      const raw = states[i];
      if (raw === null || raw === undefined) lost.push(id);
      else peers.set(id, parsePeerState(raw));
    });
    this.#peers = peers;
    metrics.peersSeen(peers.size + 1);
    // Just back from an outage, the others may not have written their heartbeat yet: wait one peer timeout.
    if (Date.now() - this.#upSince < config.peer_timeout_ms) return;
    // Not awaited: ending calls waits on Graph, and this instance's own heartbeat must go on meanwhile (else the
    // others would take it for lost in turn).
    for (const id of lost) {
      if (this.#reaping.has(id)) continue;
      this.#reaping.add(id);
      void this.#reap(id)
        .catch((err: unknown) => this.#log.warn({ err, lost: id }, 'ending a lost instance\'s calls failed (retried when its lock expires)'))
        .finally(() => this.#reaping.delete(id));
    }
  }

  /** End a lost instance's calls toward Meta, once across survivors. */
  async #reap(lostId: string): Promise<void> {
    const lock = await this.#cmd.set(this.#key('reap', lostId), this.instanceId, 'PX', REAP_LOCK_MS, 'NX');
    if (lock === null) return;
    const calls = await this.#cmd.hgetall(this.#key('owned', lostId));
    const entries = Object.entries(calls);
    this.#log.warn({ lost: lostId, calls: entries.length }, 'instance lost: ending its calls toward Meta');
    await Promise.all(entries.map(([callId, raw]) => this.#endLostCall(lostId, callId, raw)));
    const tx = this.#cmd
      .multi()
      .del(this.#key('owned', lostId))
      .srem(this.#key('members'), lostId)
      .set(this.#key('reaped', lostId), this.instanceId, 'PX', REAPED_MARK_MS);
    for (const [callId] of entries) tx.del(this.#key('call', callId));
    await tx.exec();
  }

  async #endLostCall(lostId: string, callId: string, raw: string): Promise<void> {
    const { graph, metrics, graphTimeoutMs } = this.#deps;
    let owned: OwnedCall;
    try {
      owned = JSON.parse(raw) as OwnedCall;
    } catch {
      this.#log.warn({ lost: lostId, callId }, 'unreadable call record of a lost instance skipped');
      return;
    }
    // An accepted call (and any business-initiated one) is terminated; one still ringing is rejected. Meta refuses the
    // wrong one with an error, so the other is tried next (the accept may have gone out just before the loss).
    const first: 'terminate' | 'reject' = owned.accepted || owned.direction === 'business_initiated' ? 'terminate' : 'reject';
    const order: Array<'terminate' | 'reject'> = owned.direction === 'business_initiated' ? [first] : [first, first === 'terminate' ? 'reject' : 'terminate'];
    const log = this.#log.child({ lost: lostId, callId, pageId: owned.pageId, direction: owned.direction });
    for (const action of order) {
      try {
        await graph[action](owned.pageId, callId, AbortSignal.timeout(graphTimeoutMs));
        metrics.reaped(action, 'ok');
        log.info({ action }, 'call of a lost instance ended toward Meta');
        return;
      } catch (err) {
        metrics.reaped(action, 'failed');
        log.warn({ err, action }, 'ending a lost instance\'s call toward Meta failed');
      }
    }
  }

  /**
   * Calls recorded under this instance id before this process started: a previous run with the same `instance_id`
   * (restarted within `peer_timeout_ms`, so never seen as lost) left them, and nobody else will end them toward Meta.
   */
  async #endPreviousRun(): Promise<void> {
    const me = this.instanceId;
    const previous = Object.entries(await this.#cmd.hgetall(this.#key('owned', me))).filter(
      ([callId]) => !this.#deps.registry.byMetaCallId(callId),
    );
    if (previous.length === 0) return;
    this.#log.warn({ calls: previous.length }, 'calls left by a previous run of this instance: ending them toward Meta');
    await Promise.all(previous.map(([callId, raw]) => this.#endLostCall(me, callId, raw)));
  }

  /** This instance was taken for lost (cut off from Redis too long): its calls were ended toward Meta. */
  async #reapedWhileAway(): Promise<void> {
    const calls = this.#deps.registry.all();
    this.#log.error({ calls: calls.length }, 'this instance was taken for lost while cut off from Redis: its calls were ended toward Meta; hanging them up');
    for (const call of calls) call.hangUp('ended by the cluster while this instance was cut off from Redis');
    await this.#cmd.del(this.#key('reaped', this.instanceId));
  }

  // ------------------------------------------------------------------------------------------------------------
  // Redis link
  // ------------------------------------------------------------------------------------------------------------

  #subscribe(): void {
    this.#sub.subscribe(this.#channel(this.instanceId)).then(
      () => {
        this.#subscribed = true;
        this.#linkChanged();
      },
      (err: unknown) => this.#log.debug({ err }, 'subscribing to this instance\'s channel failed (retried on reconnect)'),
    );
  }

  #linkChanged(): void {
    const up = !this.#closed && this.#cmd.status === 'ready' && this.#sub.status === 'ready' && this.#subscribed;
    if (up === this.#up) return;
    this.#up = up;
    this.#deps.metrics.redisUp(up);
    const where = { redis: `${this.#deps.config.redis.host}:${this.#deps.config.redis.port}` };
    if (up) {
      this.#upSince = Date.now();
      if (this.#downLogged) this.#log.info(where, 'cluster Redis reachable again: taking new calls');
      else this.#log.info(where, 'cluster Redis connected');
      this.#downLogged = false;
      this.#tick();
    } else if (!this.#closed && !this.#downLogged) {
      this.#downLogged = true;
      this.#log.error(where, 'cluster Redis unreachable: live calls go on, new calls are refused until it is back');
    }
  }

  #linkError(err: Error): void {
    // ioredis reports every failed reconnect; the transition is logged once by #linkChanged.
    if (!this.#downLogged && !this.#up && !this.#closed) {
      this.#downLogged = true;
      this.#log.error({ err, redis: `${this.#deps.config.redis.host}:${this.#deps.config.redis.port}` }, 'cluster Redis unreachable: live calls go on, new calls are refused until it is back');
    } else {
      this.#log.debug({ err }, 'cluster Redis error');
    }
  }

  #key(kind: string, id?: string): string {
    return id === undefined ? `${this.#prefix}${kind}` : `${this.#prefix}${kind}:${id}`;
  }

  #channel(instanceId: string): string {
    return `${this.#prefix}to:${instanceId}`;
  }

  /** Leave the cluster: say so in Redis (best effort, within the command deadline) and disconnect. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    const wasUp = this.#up;
    this.#closed = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#unobserve?.();
    await Promise.allSettled([...this.#chains.values()]);
    if (wasUp) {
      await this.#cmd
        .multi()
        .del(this.#key('alive', this.instanceId))
        .srem(this.#key('members'), this.instanceId)
        .del(this.#key('owned', this.instanceId))
        .exec()
        .catch((err: unknown) => this.#log.debug({ err }, 'leaving the cluster in Redis failed'));
    }
    this.#up = false;
    this.#cmd.disconnect();
    this.#sub.disconnect();
    this.#log.info('left the cluster');
  }
}

function parsePeerState(raw: string): PeerState {
  try {
    const value = JSON.parse(raw) as Partial<PeerState>;
    return { load: typeof value.load === 'number' ? value.load : 1, room: value.room === true };
  } catch {
    return { load: 1, room: false };
  }
}
