/**
 * What handing a webhook event to the instance that owns the call costs, and how many forwards per second one
 * instance sustains. `npx tsx bench/cluster.ts [--events N] [--calls C]`
 *
 * A real redis-server on a loopback port (started here, killed at the end) and two ClusterNodes, A and B, in this
 * process. Every event goes into A's `handleMetaEvent` and is timed until a sink receives it:
 * - local: the call is owned by A: dedupe (SET NX) + owner lookup (GET) + applied by A;
 * - forward (pub/sub): owned by B: the same, plus PUBLISH on B's channel and B's subscriber receiving it;
 * - forward (HTTP): the alternative measured for comparison: after the same dedupe and lookup, A POSTs the event to
 *   an HTTP listener of B with an HMAC-SHA256 header (keep-alive), B verifies it and applies it.
 * Latency: events one at a time (p50/p99). Rate: `--events` events over `--calls` calls sent at once.
 * Both instances share one event loop here, so each number includes both sides' work.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import pino from 'pino';
import { Registry } from 'prom-client';
import { CallRegistry } from '../src/calls/CallRegistry.js';
import type { GraphPort, MetaCallEvent, MetaEvent, MetaEventSink } from '../src/calls/ports.js';
import { ClusterMetrics, ClusterNode } from '../src/cluster/index.js';
import { ConfigSchema } from '../src/config/schema.js';
import { RedisServer } from '../test/helpers/redisServer.js';
import { markdownTable, renderBlock, startRun, writeGeneratedSection } from './lib/report.js';

const { values } = parseArgs({
  options: {
    events: { type: 'string', default: '20000' },
    calls: { type: 'string', default: '200' },
    /** Also put the table into BENCHMARKS.md (bench/lib/report.ts), between its markers. */
    write: { type: 'boolean', default: false },
  },
});
const run = startRun('bench/cluster.ts');
const EVENTS = Number(values.events);
const CALLS = Number(values.calls);
const SEQUENTIAL = 2000;
const SECRET = 'bench-forward-secret';

const log = pino({ level: 'silent' });
const redis = await RedisServer.start();
const prefix = 'bench:';

/** Resolves the waiter of each event id when a sink gets it. */
const waiting = new Map<string, () => void>();
const arrived = (event: MetaEvent): void => {
  if (event.kind !== 'terminate') return;
  const key = `${event.callId}|${event.timestamp}`;
  waiting.get(key)?.();
  waiting.delete(key);
};
const sink: MetaEventSink = { handleMetaEvent: arrived };
const unusedGraph = new Proxy({}, { get: () => () => Promise.reject(new Error('not used in the bench')) }) as GraphPort;

function node(id: string): ClusterNode {
  const config = ConfigSchema.shape.cluster.parse({ enabled: true, instance_id: id, redis: { port: redis.port, key_prefix: prefix } });
  return new ClusterNode({
    config,
    sink,
    registry: new CallRegistry(),
    graph: unusedGraph,
    headroom: { hasRoom: () => true, load: () => 0 },
    metrics: new ClusterMetrics(new Registry()),
    log,
    graphTimeoutMs: 1000,
  });
}

const a = node('bench-a');
const b = node('bench-b');
await Promise.all([a.whenUp(AbortSignal.timeout(10_000)), b.whenUp(AbortSignal.timeout(10_000))]);
const admin = new Redis({ port: redis.port, host: '127.0.0.1' });
for (let i = 0; i < CALLS; i++) {
  await admin.set(`${prefix}call:a-${i}`, 'bench-a');
  await admin.set(`${prefix}call:b-${i}`, 'bench-b');
}

// The HTTP alternative: B's listener verifies an HMAC over the body and applies the event.
const http = createServer((req: IncomingMessage, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    const given = Buffer.from(String(req.headers['x-msb-signature'] ?? ''), 'hex');
    const expected = createHmac('sha256', SECRET).update(body).digest();
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      res.writeHead(403).end();
      return;
    }
    res.writeHead(204).end();
    arrived(JSON.parse(body.toString('utf8')) as MetaEvent);
  });
});
await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
const httpUrl = `http://127.0.0.1:${(http.address() as AddressInfo).port}/forward`;
const forwardHttp = async (event: MetaCallEvent): Promise<void> => {
  // The same Redis work as the pub/sub path before the hand-over: dedupe and owner lookup.
  await admin.set(`${prefix}seen:http|${event.callId}|${event.timestamp}`, '1', 'PX', 60_000, 'NX');
  await admin.get(`${prefix}call:${event.callId}`);
  const body = JSON.stringify(event);
  const response = await fetch(httpUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-msb-signature': createHmac('sha256', SECRET).update(body).digest('hex') },
    body,
  });
  await response.arrayBuffer();
};

let stamp = 1;
function terminate(callId: string): MetaCallEvent {
  return { kind: 'terminate', pageId: '1', callId, timestamp: stamp++, status: 'Completed' };
}
function whenArrived(event: MetaCallEvent): Promise<void> {
  return new Promise((resolve) => waiting.set(`${event.callId}|${event.timestamp}`, resolve));
}

async function latency(owner: 'a' | 'b', via: 'pubsub' | 'http'): Promise<{ p50: number; p99: number }> {
  const samples: number[] = [];
  for (let i = 0; i < SEQUENTIAL; i++) {
    const event = terminate(`${owner}-${i % CALLS}`);
    const done = whenArrived(event);
    const start = process.hrtime.bigint();
    if (via === 'http') void forwardHttp(event);
    else a.handleMetaEvent(event);
    await done;
    samples.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
  samples.sort((x, y) => x - y);
  return { p50: samples[Math.floor(samples.length * 0.5)]!, p99: samples[Math.floor(samples.length * 0.99)]! };
}

async function rate(owner: 'a' | 'b', via: 'pubsub' | 'http'): Promise<number> {
  const events = Array.from({ length: EVENTS }, (_, i) => terminate(`${owner}-${i % CALLS}`));
  const all = Promise.all(events.map(whenArrived));
  const start = process.hrtime.bigint();
  if (via === 'http') {
    // At most CALLS requests in flight, as many as there are calls (each call's events go in order).
    let next = 0;
    await Promise.all(Array.from({ length: CALLS }, async () => {
      while (next < events.length) await forwardHttp(events[next++]!);
    }));
  } else {
    for (const event of events) a.handleMetaEvent(event);
  }
  await all;
  return EVENTS / (Number(process.hrtime.bigint() - start) / 1e9);
}

const rows: Array<[string, { p50: number; p99: number }, number]> = [];
for (const [label, owner, via] of [
  ['local (A owns the call)', 'a', 'pubsub'],
  ['forward, Redis pub/sub (B owns it)', 'b', 'pubsub'],
  ['forward, HTTP + HMAC (B owns it)', 'b', 'http'],
] as const) {
  await latency(owner, via); // warm-up
  rows.push([label, await latency(owner, via), await rate(owner, via)]);
}

const body = [
  `${SEQUENTIAL} sequential events for latency, ${EVENTS} events over ${CALLS} calls for rate.`,
  '',
  ...markdownTable(
    ['path', 'p50', 'p99', 'events/s'],
    rows.map(([label, l, r]) => [label, `${l.p50.toFixed(2)} ms`, `${l.p99.toFixed(2)} ms`, Math.round(r)]),
  ),
];
process.stdout.write(`cluster forward bench: ${body.join('\n')}\n`);
if (values.write) process.stdout.write(`written into ${writeGeneratedSection('BENCHMARKS.md', 'bench/cluster.ts', renderBlock(run, body))}\n`);

admin.disconnect();
http.close();
await Promise.all([a.close(), b.close()]);
await redis.close();
