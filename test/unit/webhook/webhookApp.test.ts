import t from 'tap';
import { createHmac } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import type { MetaEvent } from '../../../src/calls/ports.js';
import { buildWebhookApp, parseWebhookBody, TtlCache, EventFilter } from '../../../src/webhook/index.js';
import { Metrics } from '../../../src/observability/index.js';

const fixturesDir = fileURLToPath(new URL('../../fixtures/webhooks/', import.meta.url));
const fixture = (name: string): Record<string, unknown> =>
  JSON.parse(readFileSync(`${fixturesDir}${name}.json`, 'utf8')) as Record<string, unknown>;

const APP_SECRET = 'test-app-secret';
const PAGE = '106378625516323';
const PSID = '5275811702471834';
const CALL = 'c_M5YPhGE5jm0L_PMQdScLlYJlR7tU_f0rgXiTQ';
/** Fixture timestamps are 1671644824..1671644944; the clock sits a few seconds after the connect. */
const FIXTURE_NOW_MS = 1671644830_000;

const sign = (body: Buffer | string, secret = APP_SECRET): string =>
  `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;

const settle = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 20));

function setup(t: { teardown: (fn: () => unknown) => void }, opts: { now?: () => number; bodyLimitBytes?: number; sinkThrows?: boolean } = {}) {
  const events: MetaEvent[] = [];
  const metrics = new Metrics();
  const app = buildWebhookApp({
    settings: {
      appSecret: APP_SECRET,
      verifyToken: 'the-verify-token',
      path: '/webhook',
      bodyLimitBytes: opts.bodyLimitBytes ?? 262_144,
      pageIds: [PAGE],
    },
    sink: {
      handleMetaEvent: (e) => {
        events.push(e);
        if (opts.sinkThrows) throw new Error('sink failure');
      },
    },
    log: pino({ level: 'silent' }),
    metrics,
    now: opts.now ?? (() => FIXTURE_NOW_MS),
  });
  t.teardown(() => app.close());
  const post = (body: unknown, headers: Record<string, string> = {}) => {
    const payload = typeof body === 'string' ? body : JSON.stringify(body);
    return app.inject({
      method: 'POST',
      url: '/webhook',
      headers: { 'content-type': 'application/json', 'x-hub-signature-256': sign(payload), ...headers },
      payload,
    });
  };
  const counter = async (event: string, result: string): Promise<number> => {
    const m = await metrics.registry.getSingleMetric('msb_webhooks_total')?.get();
    return m?.values.find((v) => v.labels.event === event && v.labels.result === result)?.value ?? 0;
  };
  return { app, events, post, counter };
}


t.test('handshake echoes the challenge only for the right token', async (t) => {
  const { app } = setup(t);
  const ok = await app.inject({
    method: 'GET',
    url: '/webhook?hub.mode=subscribe&hub.verify_token=the-verify-token&hub.challenge=1158201444',
  });
  t.equal(ok.statusCode, 200);
  t.equal(ok.body, '1158201444');
  t.match(ok.headers['content-type'], /^text\/plain/);

  for (const url of [
    '/webhook?hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1',
    '/webhook?hub.mode=subscribe&hub.verify_token=the-verify-token-&hub.challenge=1',
    '/webhook?hub.mode=unsubscribe&hub.verify_token=the-verify-token&hub.challenge=1',
    '/webhook?hub.challenge=1',
  ]) {
    const r = await app.inject({ method: 'GET', url });
    t.equal(r.statusCode, 403, url);
    t.not(r.body, '1');
  }
});

t.test('a correctly signed POST is answered 200 and delivered', async (t) => {
  const { events, post, counter } = setup(t);
  const r = await post(fixture('connect'));
  t.equal(r.statusCode, 200);
  t.equal(r.body, 'EVENT_RECEIVED');
  await settle();
  t.same(events, [
    {
      kind: 'connect',
      pageId: PAGE,
      callId: CALL,
      timestamp: 1671644824,
      from: PSID,
      to: PAGE,
      direction: 'user_initiated',
    },
  ]);
  t.equal(await counter('connect', 'accepted'), 1);
});

t.test('signature missing, malformed, wrong key, or body tampered: refused, nothing processed', async (t) => {
  const { app, events, counter } = setup(t);
  const payload = JSON.stringify(fixture('connect'));
  const send = (headers: Record<string, string>, body = payload) =>
    app.inject({ method: 'POST', url: '/webhook', headers: { 'content-type': 'application/json', ...headers }, payload: body });

  t.equal((await send({})).statusCode, 401, 'missing');
  t.equal((await send({ 'x-hub-signature-256': 'sha1=abc' })).statusCode, 403, 'malformed');
  t.equal((await send({ 'x-hub-signature-256': 'sha256=' + 'z'.repeat(64) })).statusCode, 403, 'not hex');
  t.equal((await send({ 'x-hub-signature-256': sign(payload, 'other-secret') })).statusCode, 403, 'wrong key');
  // Flip one byte of the body after signing: a digit of the timestamp.
  const tampered = payload.replace('1671644824', '1671644825');
  t.not(tampered, payload);
  t.equal((await send({ 'x-hub-signature-256': sign(payload) }, tampered)).statusCode, 403, 'tampered');
  await settle();
  t.same(events, []);
  t.equal(await counter('post', 'missing_signature'), 1);
  t.equal(await counter('post', 'bad_signature'), 4);
});

t.test('the signature covers the exact bytes, whatever the content type or spacing', async (t) => {
  const { app, events } = setup(t);
  const payload = JSON.stringify(fixture('terminate'), null, 3);
  const r = await app.inject({
    method: 'POST',
    url: '/webhook',
    headers: { 'content-type': 'text/plain', 'x-hub-signature-256': sign(payload) },
    payload,
  });
  t.equal(r.statusCode, 200);
  await settle();
  t.equal(events.length, 1);
});

t.test('every fixture parses to typed events', async (t) => {
  const files = readdirSync(fixturesDir).filter((f) => f.endsWith('.json'));
  t.ok(files.length >= 10);
  for (const file of files) {
    const parsed = parseWebhookBody(JSON.parse(readFileSync(`${fixturesDir}${file}`, 'utf8')), 1671644830);
    t.same(parsed.invalid, [], `${file}: no invalid items`);
    t.equal(parsed.events.length, 1, `${file}: one event`);
  }

  const [status] = parseWebhookBody(fixture('call_status_ringing')).events;
  t.same(status, { kind: 'call_status', pageId: PAGE, callId: CALL, timestamp: 1671644824, status: 'ringing', recipientId: PSID });

  const [media] = parseWebhookBody(fixture('media_update')).events;
  t.equal(media?.kind, 'media_update');
  if (media?.kind === 'media_update') {
    t.equal(media.version, 1);
    t.equal(media.session.sdpType, 'offer');
    t.match(media.session.sdp, /^v=0\r\n/);
    t.match(media.session.sdp, /a=ice-lite/);
  }

  const [term] = parseWebhookBody(fixture('terminate')).events;
  t.same(term, {
    kind: 'terminate',
    pageId: PAGE,
    callId: CALL,
    timestamp: 1671644944,
    status: 'Completed',
    startTime: 1671644824,
    endTime: 1671644944,
    duration: 120,
  });
  const [failed] = parseWebhookBody(fixture('terminate_failed_not_connected')).events;
  t.equal(failed?.kind === 'terminate' ? failed.duration : 'x', undefined, 'empty duration means none');

  const [biz] = parseWebhookBody(fixture('connect_business_initiated')).events;
  t.equal(biz?.kind === 'connect' ? biz.direction : undefined, 'business_initiated');

  for (const name of ['call_permission_reply', 'call_permission_reply_changes', 'call_permission_reply_entry_level']) {
    const [reply] = parseWebhookBody(fixture(name)).events;
    t.equal(reply?.kind, 'call_permission_reply', name);
    if (reply?.kind === 'call_permission_reply') {
      t.equal(reply.pageId, PAGE, `${name} page`);
      t.equal(reply.psid, PSID, `${name} psid`);
      t.equal(reply.timestamp, 1671644824, `${name} timestamp`);
      t.ok(reply.response === 'approve' || reply.response === 'reject', `${name} response`);
    }
  }
  const [approve] = parseWebhookBody(fixture('call_permission_reply')).events;
  t.equal(approve?.kind === 'call_permission_reply' ? approve.expiresAt : 0, 1672249624, 'string expiration parsed');
});

t.test('SDP given as a bare string and millisecond timestamps are tolerated', async (t) => {
  const body = {
    object: 'page',
    entry: [
      {
        id: PAGE,
        time: 1,
        calls: [{ id: CALL, event: 'media_update', timestamp: 1671644826000, session: { version: '3', sdp_renegotiation: 'v=0\r\n' } }],
      },
    ],
  };
  const [ev] = parseWebhookBody(body).events;
  t.same(ev, { kind: 'media_update', pageId: PAGE, callId: CALL, timestamp: 1671644826, version: 3, session: { sdpType: 'offer', sdp: 'v=0\r\n' } });
});

t.test('a batch with a bad item still delivers the good ones, oldest first', async (t) => {
  const { events, post, counter } = setup(t);
  const body = {
    object: 'page',
    entry: [
      {
        id: PAGE,
        time: 1671644830,
        calls: [
          { id: 'c2', event: 'terminate', timestamp: 1671644829, status: 'Completed' },
          { id: 'c3', event: 'connect', timestamp: 1671644828 /* no from/to/direction */ },
          { id: 'c1', event: 'connect', from: PSID, to: PAGE, timestamp: 1671644827, call_direction: 'user_initiated', extra: { x: 1 } },
          { id: 'c4', event: 'video_upgrade', timestamp: 1671644827 },
          'not an object',
        ],
      },
    ],
  };
  const r = await post(body);
  t.equal(r.statusCode, 200);
  await settle();
  t.same(
    events.map((e) => (e.kind === 'call_permission_reply' ? e.kind : `${e.kind}:${e.callId}`)),
    ['connect:c1', 'terminate:c2'],
  );
  t.equal(await counter('connect', 'invalid'), 1);
  t.equal(await counter('(none)', 'invalid'), 1);
});

t.test('retries and duplicates are delivered once', async (t) => {
  const { events, post, counter } = setup(t);
  const body = fixture('call_status_ringing');
  await post(body);
  await post(body);
  const doubled = fixture('terminate');
  const entry = (doubled.entry as Record<string, unknown[]>[])[0]!;
  entry.calls!.push(entry.calls![0]);
  await post(doubled);
  await settle();
  t.same(
    events.map((e) => e.kind),
    ['call_status', 'terminate'],
    'each event delivered once: the retry and the duplicate item dropped',
  );
  t.equal(await counter('call_status', 'duplicate'), 1, 'the retried call_status counted as a duplicate');
  t.equal(await counter('terminate', 'duplicate'), 1, 'the repeated terminate item counted as a duplicate');
});

t.test('media_update: only versions above the newest seen are delivered', async (t) => {
  const { events, post, counter } = setup(t);
  const mu = (version: number, timestamp: number) => ({
    object: 'page',
    entry: [{ id: PAGE, time: timestamp, calls: [{ id: CALL, event: 'media_update', timestamp, session: { version, sdp_renegotiation: { sdp_type: 'offer', sdp: `v=0\r\no=- ${version}\r\n` } } }] }],
  });
  await post(mu(2, 1671644827));
  await post(mu(1, 1671644826));
  await post(mu(2, 1671644828));
  await post(mu(3, 1671644829));
  await settle();
  t.same(
    events.map((e) => (e.kind === 'media_update' ? e.version : -1)),
    [2, 3],
  );
  t.equal(await counter('media_update', 'stale'), 2);
});

t.test('a connect older than 60 s is acknowledged and ignored', async (t) => {
  let now = FIXTURE_NOW_MS + 120_000;
  const { events, post, counter } = setup(t, { now: () => now });
  const r = await post(fixture('connect'));
  t.equal(r.statusCode, 200, 'still acknowledged so Meta stops retrying');
  await settle();
  t.same(events, []);
  t.equal(await counter('connect', 'stale'), 1);
  now = FIXTURE_NOW_MS;
  await post(fixture('terminate'));
  await settle();
  t.equal(events.length, 1, 'other events are not subject to the accept window');
});

t.test('events for pages not configured are dropped and counted', async (t) => {
  const { events, post, counter } = setup(t);
  const body = JSON.parse(JSON.stringify(fixture('connect')).replaceAll(PAGE, '999999')) as unknown;
  t.equal((await post(body)).statusCode, 200);
  await settle();
  t.same(events, []);
  t.equal(await counter('connect', 'unknown_page'), 1);
});

t.test('an oversize body is refused with 413', async (t) => {
  const { events, post, counter } = setup(t, { bodyLimitBytes: 2048 });
  const body = { ...fixture('connect'), padding: 'x'.repeat(4096) };
  const r = await post(body);
  t.equal(r.statusCode, 413);
  await settle();
  t.same(events, []);
  t.equal(await counter('post', 'invalid'), 1);
  t.equal((await post(fixture('connect'))).statusCode, 200, 'a normal body right after is fine');
});

t.test('many concurrent deliveries: every one acknowledged, every event delivered once', async (t) => {
  const { events, post } = setup(t);
  const bodies = Array.from({ length: 200 }, (_, i) => ({
    object: 'page',
    entry: [{ id: PAGE, time: 1671644830, calls: [{ id: `c${i % 100}`, event: 'call_status', timestamp: 1671644829, recipient_id: PSID, call_status: 'ringing' }] }],
  }));
  const replies = await Promise.all(bodies.map((b) => post(b)));
  t.ok(replies.every((r) => r.statusCode === 200 && r.body === 'EVENT_RECEIVED'));
  await settle();
  t.equal(events.length, 100, 'each call once: the second half were retries');
  t.equal(new Set(events.map((e) => (e.kind === 'call_status' ? e.callId : ''))).size, 100);
});

t.test('a signed body that is not JSON gets 400', async (t) => {
  const { events, post } = setup(t);
  const r = await post('{"object": "page", "entry": [');
  t.equal(r.statusCode, 400);
  await settle();
  t.same(events, []);
});

t.test('unknown envelopes and fields are tolerated', async (t) => {
  const { events, post } = setup(t);
  t.equal((await post({ object: 'instagram', entry: [] })).statusCode, 200);
  t.equal((await post({ object: 'page', entry: [{ id: PAGE, time: 1, messaging: [{ message: { text: 'hi' } }], changes: [{ field: 'feed', value: {} }] }] })).statusCode, 200);
  await settle();
  t.same(events, []);
});

t.test('a throwing sink never breaks the endpoint', async (t) => {
  const { events, post } = setup(t, { sinkThrows: true });
  t.equal((await post(fixture('call_status_ringing'))).statusCode, 200);
  t.equal((await post(fixture('call_status_accepted'))).statusCode, 200);
  await settle();
  t.equal(events.length, 2);
});

t.test('the dedupe memory is bounded and expires', async (t) => {
  let now = 0;
  const cache = new TtlCache<true>({ ttlMs: 1000, maxEntries: 100, now: () => now });
  for (let i = 0; i < 1000; i++) cache.set(`k${i}`, true);
  t.equal(cache.size, 100);
  t.ok(cache.has('k999'));
  t.notOk(cache.has('k0'));
  now = 1001;
  t.notOk(cache.has('k999'), 'expired');
  cache.set('fresh', true);
  t.equal(cache.size, 1, 'expired entries pruned on insert');

  now = 10_000_000;
  const filter = new EventFilter({ pageIds: [PAGE], now: () => now, maxEntries: 50 });
  let accepted = 0;
  for (let i = 0; i < 500; i++) {
    if (filter.check({ kind: 'call_status', pageId: PAGE, callId: `c${i}`, timestamp: 1, status: 'ringing' }) === 'accepted') accepted++;
  }
  t.equal(accepted, 500, 'distinct events all pass while memory stays capped');
});

t.test('settings given as a function follow a configuration reload', async (t) => {
  let settings = { appSecret: 'old-secret', verifyToken: 'old-token', pageIds: ['111'] as Iterable<string> };
  const events: MetaEvent[] = [];
  const app = buildWebhookApp({
    settings: () => settings,
    sink: { handleMetaEvent: (e) => events.push(e) },
    log: pino({ level: 'silent' }),
    now: () => FIXTURE_NOW_MS,
  });
  t.teardown(() => app.close());
  const send = (body: unknown, secret: string) => {
    const payload = JSON.stringify(body);
    return app.inject({ method: 'POST', url: '/webhook', headers: { 'x-hub-signature-256': sign(payload, secret) }, payload });
  };
  t.equal((await send(fixture('call_status_ringing'), 'old-secret')).statusCode, 200);
  await settle();
  settings = { appSecret: 'new-secret', verifyToken: 'new-token', pageIds: ['111', PAGE] };
  t.equal((await send(fixture('call_status_accepted'), 'old-secret')).statusCode, 403, 'old secret refused after reload');
  t.equal((await send(fixture('call_status_accepted'), 'new-secret')).statusCode, 200);
  const hs = await app.inject({ method: 'GET', url: '/webhook?hub.mode=subscribe&hub.verify_token=new-token&hub.challenge=ok' });
  t.equal(hs.body, 'ok');
  await settle();
  t.same(
    events.map((e) => (e.kind === 'call_status' ? e.status : e.kind)),
    ['accepted'],
    'the page added by the reload is served; before it, the page was unknown',
  );
});
