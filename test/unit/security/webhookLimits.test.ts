/**
 * The webhook port faces the internet: a client trickling its body (slowloris), one opening connections without end,
 * a signed POST carrying thousands of connects, a flood of events for one unknown call id, and label values chosen
 * by the sender. Each is bounded: closed within the timeout, refused past the cap, dropped and counted.
 */
import { createHmac } from 'node:crypto';
import net from 'node:net';
import t from 'tap';
import { pino } from 'pino';
import type { MetaEvent } from '../../../src/calls/ports.js';
import { buildWebhookApp, type WebhookLimits } from '../../../src/webhook/index.js';
import { Metrics } from '../../../src/observability/index.js';
import { ConfigSchema } from '../../../src/config/schema.js';

const APP_SECRET = 'secret-for-limits';
const PAGE = '106378625516323';
const sign = (body: string): string => `sha256=${createHmac('sha256', APP_SECRET).update(body).digest('hex')}`;

async function start(t: { teardown: (fn: () => unknown) => void }, limits: Partial<WebhookLimits>) {
  const events: MetaEvent[] = [];
  const metrics = new Metrics();
  const app = buildWebhookApp({
    settings: { appSecret: APP_SECRET, verifyToken: 'v', path: '/webhook', pageIds: [PAGE], limits },
    sink: { handleMetaEvent: (e) => void events.push(e) },
    log: pino({ level: 'silent' }),
    metrics,
  });
  t.teardown(() => app.close());
  await app.listen({ host: '127.0.0.1', port: 0 });
  const { port } = app.server.address() as net.AddressInfo;
  return { app, port, events, metrics };
}

/** Resolves with the ms until the server closed the socket (or `undefined` if it stayed open for `maxMs`). */
function closedWithin(socket: net.Socket, maxMs: number): Promise<number | undefined> {
  const started = Date.now();
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(undefined), maxMs);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(Date.now() - started);
    });
  });
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => resolve(socket));
    socket.on('error', () => undefined);
    socket.once('error', reject);
  });
}

t.test('a client trickling its body is cut off at the request timeout', async (t) => {
  const { port, events } = await start(t, { requestTimeoutMs: 1500, headersTimeoutMs: 1000 });
  const socket = await connect(port);
  t.teardown(() => socket.destroy());
  const body = JSON.stringify({ object: 'page', entry: [] });
  socket.write(`POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Hub-Signature-256: ${sign(body)}\r\nContent-Length: 100000\r\n\r\n`);
  // One byte every 200 ms would take 20 s for the body.
  const trickle = setInterval(() => socket.writable && socket.write('{'), 200);
  t.teardown(() => clearInterval(trickle));
  let answer = '';
  socket.on('data', (d) => (answer += d.toString()));
  const closedAfter = await closedWithin(socket, 10_000);
  clearInterval(trickle);
  t.ok(closedAfter !== undefined, `the connection is closed (after ${closedAfter} ms), not held for the 20 s the body would take`);
  t.ok((closedAfter ?? Infinity) < 1500 + 2000, 'within the request timeout and one deadline check');
  t.match(answer, /^HTTP\/1\.1 408/, 'with 408 Request Timeout');
  t.equal(events.length, 0);
});

t.test('headers that never end are cut off at the headers timeout', async (t) => {
  const { port } = await start(t, { requestTimeoutMs: 5000, headersTimeoutMs: 1000 });
  const socket = await connect(port);
  t.teardown(() => socket.destroy());
  socket.write('POST /webhook HTTP/1.1\r\nHost: x\r\n');
  const trickle = setInterval(() => socket.writable && socket.write('X-A: b\r\n'), 200);
  t.teardown(() => clearInterval(trickle));
  const closedAfter = await closedWithin(socket, 8000);
  clearInterval(trickle);
  t.ok(closedAfter !== undefined && closedAfter < 1000 + 2000, `closed after ${closedAfter} ms (headers timeout 1 s)`);
});

t.test('connections past the cap are closed at once; a slot frees when one closes', async (t) => {
  const { port } = await start(t, { maxConnections: 3, keepAliveTimeoutMs: 30_000, requestTimeoutMs: 30_000, headersTimeoutMs: 30_000 });
  const held = await Promise.all([0, 1, 2].map(() => connect(port)));
  t.teardown(() => held.forEach((s) => s.destroy()));
  await new Promise((r) => setTimeout(r, 100));
  const extra = await connect(port);
  t.teardown(() => extra.destroy());
  t.ok((await closedWithin(extra, 2000)) !== undefined, 'the fourth connection is closed by the server');
  held[0]!.destroy();
  await new Promise((r) => setTimeout(r, 100));
  const later = await connect(port);
  t.teardown(() => later.destroy());
  t.equal(await closedWithin(later, 300), undefined, 'after one closed, a new connection is served');
});

t.test('a signed POST with 1,500 connects: only the first max_events_per_post are handled, the rest counted', async (t) => {
  const { app, events, metrics } = await start(t, { maxEventsPerPost: 100 });
  const now = Math.floor(Date.now() / 1000);
  const calls = Array.from({ length: 1500 }, (_, i) => ({
    id: `c_flood_${i}`, event: 'connect', from: String(1000 + i), to: PAGE, timestamp: now, call_direction: 'user_initiated',
  }));
  const payload = JSON.stringify({ object: 'page', entry: [{ id: PAGE, time: now, calls }] });
  const res = await app.inject({ method: 'POST', url: '/webhook', headers: { 'content-type': 'application/json', 'x-hub-signature-256': sign(payload) }, payload });
  t.equal(res.statusCode, 200);
  await new Promise((r) => setTimeout(r, 50));
  t.equal(events.length, 100, 'the first 100 reach the controller');
  t.match(await metrics.text(), /msb_webhooks_total\{event="connect",result="over_limit"\} 1400/);
});

t.test('metric labels from webhook input stay in a fixed set', async (t) => {
  const { app, metrics } = await start(t, {});
  const now = Math.floor(Date.now() / 1000);
  const weird = Array.from({ length: 20 }, (_, i) => `resp_${i}_${Math.random()}`);
  const messaging = weird.map((response) => ({ sender: { id: '5275811702471834' }, recipient: { id: PAGE }, timestamp: now, call_permission_reply: { response } }));
  const payload = JSON.stringify({ object: 'page', entry: [{ id: PAGE, time: now, messaging }] });
  await app.inject({ method: 'POST', url: '/webhook', headers: { 'content-type': 'application/json', 'x-hub-signature-256': sign(payload) }, payload });
  await new Promise((r) => setTimeout(r, 50));
  metrics.permissionReply('approve');
  for (const r of weird) metrics.permissionReply(r);
  metrics.webhook('"}\nmsb_fake 1', 'invalid');
  const text = await metrics.text();
  t.notMatch(text, /resp_\d/, 'no label value chosen by the sender');
  t.match(text, /msb_permission_replies_total\{response="other"\} 20/);
  t.match(text, /msb_webhooks_total\{event="other",result="invalid"\} 1/);
});

t.test('the webhook limits have defaults in the configuration', async (t) => {
  const config = ConfigSchema.parse({ meta: { app_secret: 'a', verify_token: 'b' }, pages: [{ id: PAGE, access_token: 't' }] });
  t.same(
    {
      request: config.webhook.request_timeout_ms,
      headers: config.webhook.headers_timeout_ms,
      keepAlive: config.webhook.keep_alive_timeout_ms,
      connections: config.webhook.max_connections,
      events: config.webhook.max_events_per_post,
    },
    { request: 10_000, headers: 5_000, keepAlive: 5_000, connections: 256, events: 100 },
  );
});

t.test('events for one unknown call id: only the first 16 are kept for it, the rest dropped and logged', async (t) => {
  const lines: Array<{ msg?: string }> = [];
  const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as { msg?: string }) });
  const { FakeSip, FakeGraph, FakeMediaEngine, FakeLegs, controllerOptions } = await import('../../helpers/callFakes.js');
  const { CallController } = await import('../../../src/calls/CallController.js');
  const controller = new CallController({ sip: new FakeSip(), graph: new FakeGraph(), media: new FakeMediaEngine(), legs: new FakeLegs(), log, options: controllerOptions() });
  t.teardown(() => controller.close());
  const now = Math.floor(Date.now() / 1000);
  for (let v = 0; v < 500; v++) {
    controller.handleMetaEvent({ kind: 'media_update', pageId: '100', callId: 'c_unknown', timestamp: now, version: v, session: { sdpType: 'offer', sdp: 'v=0' } });
  }
  t.equal(lines.filter((l) => l.msg === 'event for a call this process does not know (kept briefly)').length, 16, '16 kept');
  t.equal(lines.filter((l) => l.msg === 'event for an unknown call dropped (too many for that call)').length, 484, 'the rest dropped, each logged');
});
