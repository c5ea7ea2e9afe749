/**
 * The cluster's metrics, on the bridge's registry: `msb_cluster_*`, per instance (every instance exports its own).
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

/** A forward is a Redis PUBLISH and a message on a subscribed connection: milliseconds, not seconds. */
const FORWARD_BUCKETS = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];

export type ForwardDirection = 'sent' | 'received' | 'undelivered';

export class ClusterMetrics {
  readonly #forwarded: Counter<'direction' | 'event'>;
  readonly #forwardSeconds: Histogram;
  readonly #ownedCalls: Gauge;
  readonly #peers: Gauge;
  readonly #redisUp: Gauge;
  readonly #duplicates: Counter<'event'>;
  readonly #reaped: Counter<'action' | 'result'>;
  readonly #placed: Counter<'where'>;

  constructor(registry: Registry) {
    const registers = [registry];
    this.#forwarded = new Counter({
      name: 'msb_cluster_webhooks_forwarded_total',
      help: 'Webhook events handed between instances: sent to the owner, received from another instance, or undelivered (no owner listening)',
      labelNames: ['direction', 'event'],
      registers,
    });
    this.#forwardSeconds = new Histogram({
      name: 'msb_cluster_forward_latency_seconds',
      help: 'Time from the receiving instance handing a webhook event on to the owner getting it (seconds; clocks of both hosts)',
      buckets: FORWARD_BUCKETS,
      registers,
    });
    this.#ownedCalls = new Gauge({ name: 'msb_cluster_owned_calls', help: 'Calls this instance owns in the cluster', registers });
    this.#peers = new Gauge({ name: 'msb_cluster_peers_seen', help: 'Live instances seen at the last heartbeat, this one included', registers });
    this.#redisUp = new Gauge({ name: 'msb_cluster_redis_up', help: '1 while the cluster Redis is reachable', registers });
    this.#duplicates = new Counter({
      name: 'msb_cluster_webhooks_duplicate_total',
      help: 'Webhook events another instance had already taken (dedupe in Redis)',
      labelNames: ['event'],
      registers,
    });
    this.#reaped = new Counter({
      name: 'msb_cluster_calls_reaped_total',
      help: 'Calls of a lost instance ended toward Meta by this instance, by Graph action and result',
      labelNames: ['action', 'result'],
      registers,
    });
    this.#placed = new Counter({
      name: 'msb_cluster_connects_placed_total',
      help: 'Consumer connects by where they went: taken here, handed to a peer with headroom, or refused (no headroom anywhere)',
      labelNames: ['where'],
      registers,
    });
    this.#redisUp.set(0);
  }

  forwarded(direction: ForwardDirection, event: string): void {
    this.#forwarded.inc({ direction, event });
  }

  forwardLatency(seconds: number): void {
    this.#forwardSeconds.observe(Math.max(0, seconds));
  }

  ownedCalls(count: number): void {
    this.#ownedCalls.set(count);
  }

  peersSeen(count: number): void {
    this.#peers.set(count);
  }

  redisUp(up: boolean): void {
    this.#redisUp.set(up ? 1 : 0);
  }

  duplicate(event: string): void {
    this.#duplicates.inc({ event });
  }

  reaped(action: 'terminate' | 'reject', result: 'ok' | 'failed'): void {
    this.#reaped.inc({ action, result });
  }

  placed(where: 'local' | 'peer' | 'refused'): void {
    this.#placed.inc({ where });
  }
}
