/**
 * ClusterNode against a real redis-server, without media: dedupe across instances, hand-over to the owner in order,
 * placement by headroom, a lost instance's calls ended toward Meta exactly once, and a Redis outage (gate, one log
 * line each way, reconnection).
 */
import pino from 'pino';
import { Registry } from 'prom-client';
import t from 'tap';
import { Redis } from 'ioredis';
import { CallRegistry } from '../../../src/calls/CallRegistry.js';
import type { GraphPort, MetaCallEvent, MetaEvent } from '../../../src/calls/ports.js';
import { ClusterMetrics, ClusterNode, type Headroom } from '../../../src/cluster/index.js';
import { ConfigSchema } from '../../../src/config/schema.js';
import { sleep, until } from '../../helpers/bridgeHarness.js';
import { RedisServer, redisServerMissing } from '../../helpers/redisServer.js';

const missing = redisServerMissing();
if (missing) t.comment(`SKIPPED LOUDLY: the cluster tests need a real redis-server. ${missing}`);

interface TestNode {
  node: ClusterNode;
  got: MetaEvent[];
  graph: Array<{ action: 'terminate' | 'reject'; callId: string }>;
  logs: Array<Record<string, unknown>>;
  metrics: Registry;
}

t.test('cluster node', { skip: missing ?? false }, async (t) => {
  const redis = await RedisServer.start();
  t.teardown(() => redis.close());
  const nodes: ClusterNode[] = [];
  const everyone: TestNode[] = [];
  t.teardown(() => Promise.all(nodes.map((n) => n.close())));

  const start = (id: string, headroom: Headroom = { hasRoom: () => true, load: () => 0 }): TestNode => {
    const got: MetaEvent[] = [];
    const graphCalls: TestNode['graph'] = [];
    const logs: Array<Record<string, unknown>> = [];
    const log = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) });
    const record = (action: 'terminate' | 'reject') => async (_pageId: string, callId: string): Promise<void> => {
      graphCalls.push({ action, callId });
    };
    const graph = { terminate: record('terminate'), reject: record('reject') } as unknown as GraphPort;
    const registry = new Registry();
    const config = ConfigSchema.shape.cluster.parse({
      enabled: true,
      instance_id: id,
      redis: { port: redis.port },
      heartbeat_ms: 100,
      peer_timeout_ms: 600,
    });
    const node = new ClusterNode({
      config,
      sink: { handleMetaEvent: (event) => void got.push(event) },
      registry: new CallRegistry(),
      graph,
      headroom,
      metrics: new ClusterMetrics(registry),
      log,
      graphTimeoutMs: 1000,
    });
    nodes.push(node);
    const made = { node, got, graph: graphCalls, logs, metrics: registry };
    everyone.push(made);
    return made;
  };
  const admin = new Redis({ host: '127.0.0.1', port: redis.port, maxRetriesPerRequest: 0 });
  admin.on('error', () => undefined); // the outage below: this test client's reconnect errors are expected
  t.teardown(() => admin.disconnect());
  const ready = (...list: TestNode[]): Promise<void[]> => Promise.all(list.map((n) => n.node.whenUp(AbortSignal.timeout(5000))));
  let stamp = 1_800_000_000;
  const terminate = (callId: string): MetaCallEvent => ({ kind: 'terminate', pageId: '1', callId, timestamp: stamp++, status: 'Completed' });
  const connect = (callId: string): MetaCallEvent => ({
    kind: 'connect',
    pageId: '1',
    callId,
    timestamp: Math.floor(Date.now() / 1000),
    from: '77',
    to: '1',
    direction: 'user_initiated',
  });

  const a = start('a');
  const b = start('b');
  await ready(a, b);

  await t.test('an event delivered to two instances is applied once', async (t) => {
    await admin.set('msb:call:dup-1', 'a');
    const event = terminate('dup-1');
    a.node.handleMetaEvent(event);
    b.node.handleMetaEvent({ ...event });
    await until(() => a.got.some((e) => e.kind === 'terminate' && e.callId === 'dup-1'), 3000, 'applied by the owner');
    await sleep(300);
    t.equal([...a.got, ...b.got].filter((e) => e.kind === 'terminate' && e.callId === 'dup-1').length, 1, 'applied once across instances');
    // Both deliveries race for the dedupe key: whichever instance lost counts the duplicate, the other none.
    const duplicates = async (n: TestNode): Promise<number> =>
      Number(/msb_cluster_webhooks_duplicate_total\{event="terminate"\} (\d+)/.exec(await n.metrics.metrics())?.[1] ?? 0);
    t.equal((await duplicates(a)) + (await duplicates(b)), 1, 'the second one counted as a duplicate');
  });

  await t.test('events for a call owned elsewhere reach the owner, in order', async (t) => {
    await admin.set('msb:call:fwd-1', 'b');
    const events = Array.from({ length: 20 }, () => terminate('fwd-1'));
    for (const event of events) a.node.handleMetaEvent(event);
    await until(() => b.got.filter((e) => e.kind === 'terminate' && e.callId === 'fwd-1').length === 20, 5000, 'all forwarded');
    t.same(
      b.got.filter((e) => e.kind === 'terminate' && e.callId === 'fwd-1').map((e) => e.timestamp),
      events.map((e) => e.timestamp),
      'the owner applied them in the order the receiver got them',
    );
    t.notOk(a.got.some((e) => e.kind === 'terminate' && e.callId === 'fwd-1'), 'the receiver did not apply them');
    t.match(await a.metrics.metrics(), /msb_cluster_webhooks_forwarded_total\{direction="sent",event="terminate"\} 20/);
    t.match(await b.metrics.metrics(), /msb_cluster_webhooks_forwarded_total\{direction="received",event="terminate"\} 20/);
    t.match(await b.metrics.metrics(), /msb_cluster_forward_latency_seconds_count 20/, 'forward latency observed per event');
  });

  await t.test('an event for a call nobody owns yet waits briefly for the owner (a webhook beating Graph connect)', async (t) => {
    const event = terminate('late-1');
    a.node.handleMetaEvent(event);
    await sleep(150);
    await admin.set('msb:call:late-1', 'b');
    await until(() => b.got.some((e) => e.kind === 'terminate' && e.callId === 'late-1'), 3000, 'forwarded once the owner is recorded');
    t.notOk(a.got.some((e) => e.kind === 'terminate' && e.callId === 'late-1'), 'not applied by the receiver');
  });

  await t.test('placement: a connect goes where there is room', async (t) => {
    // Only these two instances take part (the first two leave).
    await Promise.all([a.node.close(), b.node.close()]);
    let aRoom = false;
    let bRoom = true;
    const full = start('full', { hasRoom: () => aRoom, load: () => 1 });
    const spare = start('spare', { hasRoom: () => bRoom, load: () => 0.2 });
    await ready(full, spare);
    await sleep(300); // a heartbeat or two: each sees the other's headroom
    full.node.handleMetaEvent(connect('place-1'));
    await until(() => spare.got.some((e) => e.kind === 'connect' && e.callId === 'place-1'), 3000, 'handed to the instance with room');
    t.equal(await admin.get('msb:call:place-1'), 'spare', 'the instance that took it recorded itself as the owner');
    t.notOk(full.got.some((e) => e.kind === 'connect' && e.callId === 'place-1'), 'not taken by the full instance');

    // No room anywhere: the spare one fills up too.
    bRoom = false;
    await sleep(300);
    full.node.handleMetaEvent(connect('place-2'));
    await until(() => full.got.some((e) => e.kind === 'connect' && e.callId === 'place-2'), 3000, 'kept by the receiver');
    t.notOk(spare.got.some((e) => e.kind === 'connect' && e.callId === 'place-2'), 'not handed to a peer without room');
    t.match(await full.metrics.metrics(), /msb_cluster_connects_placed_total\{where="refused"\} 1/, 'no room anywhere: the controller refuses it');

    aRoom = true;
    full.node.handleMetaEvent(connect('place-3'));
    await until(() => full.got.some((e) => e.kind === 'connect' && e.callId === 'place-3'), 3000, 'taken where it landed');
    t.equal(await admin.get('msb:call:place-3'), 'full', 'ownership recorded before the controller acts');
  });

  await t.test('a lost instance: each of its calls ended toward Meta once, by one survivor', async (t) => {
    const s1 = start('s1');
    const s2 = start('s2');
    await ready(s1, s2);
    await admin.sadd('msb:members', 'gone');
    await admin.hset('msb:owned:gone', {
      'lost-accepted': JSON.stringify({ pageId: '1', direction: 'user_initiated', accepted: true }),
      'lost-ringing': JSON.stringify({ pageId: '1', direction: 'user_initiated', accepted: false }),
      'lost-business': JSON.stringify({ pageId: '1', direction: 'business_initiated', accepted: false }),
    });
    const all = (): TestNode['graph'] => everyone.flatMap((n) => n.graph);
    await until(() => all().length >= 3, 5000, 'the lost calls ended');
    await sleep(500);
    t.same(
      all().sort((x, y) => x.callId.localeCompare(y.callId)),
      [
        { action: 'terminate', callId: 'lost-accepted' },
        { action: 'terminate', callId: 'lost-business' },
        { action: 'reject', callId: 'lost-ringing' },
      ],
      'terminate for accepted and business calls, reject for a ringing one, each once',
    );
    t.equal(everyone.filter((n) => n.graph.length > 0).length, 1, 'one survivor did it all');
    t.equal(await admin.sismember('msb:members', 'gone'), 0, 'the lost instance is no longer a member');
    t.equal(await admin.exists('msb:owned:gone'), 0, 'its call records are gone');
  });

  await t.test('restarted with the same instance id: the calls of the previous run are ended toward Meta', async (t) => {
    await admin.hset('msb:owned:again', 'before-restart', JSON.stringify({ pageId: '1', direction: 'user_initiated', accepted: true }));
    const n = start('again');
    await ready(n);
    await until(() => n.graph.length > 0, 3000, 'ended');
    t.same(n.graph, [{ action: 'terminate', callId: 'before-restart' }], 'terminated once');
    t.equal(await admin.hexists('msb:owned:again', 'before-restart'), 0, 'no longer recorded as this instance\'s call');
  });

  await t.test('Redis unreachable: new calls refused, one log line each way, reconnects by itself', async (t) => {
    const n = start('outage');
    await ready(n);
    t.equal(n.node.admit(), undefined, 'new calls admitted while Redis is up');
    await redis.stop();
    await until(() => !n.node.up, 3000, 'down');
    t.match(n.node.admit(), { status: 503, outcome: 'rejected_capacity' }, 'new calls refused while Redis is down');
    await sleep(1500); // several reconnect attempts
    const down = n.logs.filter((l) => l.msg === 'cluster Redis unreachable: live calls go on, new calls are refused until it is back');
    t.equal(down.length, 1, 'one log line for the outage, not one per reconnect attempt');
    t.equal(down[0]?.level, 50, 'at error level');
    const event = terminate('own-during-outage');
    n.node.handleMetaEvent(event);
    await until(() => n.got.includes(event), 2000, 'applied locally');
    t.pass('an event is still applied by this instance while Redis is down');
    await redis.resume();
    await n.node.whenUp(AbortSignal.timeout(5000));
    t.equal(n.node.admit(), undefined, 'new calls admitted again');
    t.equal(n.logs.filter((l) => l.msg === 'cluster Redis reachable again: taking new calls').length, 1, 'one log line when it is back');
  });
});
