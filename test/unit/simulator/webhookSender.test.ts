import t from 'tap';
import { createHmac } from 'node:crypto';
import Fastify from 'fastify';
import { pino } from 'pino';
import type { MetaEvent } from '../../../src/calls/ports.js';
import { buildWebhookApp } from '../../../src/webhook/index.js';
import { WebhookSender, callItems, callsEnvelope, metaJson } from '../../../src/simulator/webhookSender.js';

const PAGE = '106378625516323';
const SECRET = 'sender-secret';

interface Hit {
  raw: Buffer;
  signature: string;
}

/** A receiver answering the given statuses in turn (then 200), keeping the raw bytes. */
async function receiver(t: { teardown: (fn: () => unknown) => void }, statuses: number[] = []) {
  const app = Fastify();
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
  const hits: Hit[] = [];
  app.post('/hook', async (req, reply) => {
    hits.push({ raw: req.body as Buffer, signature: String(req.headers['x-hub-signature-256']) });
    return reply.code(statuses.shift() ?? 200).send('EVENT_RECEIVED');
  });
  t.teardown(() => app.close());
  const url = `${await app.listen({ host: '127.0.0.1', port: 0 })}/hook`;
  return { url, hits };
}

const expectedSignature = (raw: Buffer): string => `sha256=${createHmac('sha256', SECRET).update(raw).digest('hex')}`;

t.test('signs the exact bytes it sends, with Meta\'s escaping', async (t) => {
  const { url, hits } = await receiver(t);
  const sender = new WebhookSender({ url, appSecret: SECRET });
  const sdp = 'v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\ns=Café\r\n';
  const result = await sender.mediaUpdate(PAGE, { callId: 'c1', version: 1, sdp, timestamp: 1 });
  t.equal(result.delivered, true);
  t.equal(result.attempts, 1);
  t.equal(hits.length, 1);
  const raw = hits[0]!.raw;
  t.equal(hits[0]!.signature, expectedSignature(raw));
  const text = raw.toString('utf8');
  t.ok(text.includes('UDP\\/TLS\\/RTP\\/SAVPF'), 'slashes escaped');
  t.ok(text.includes('Caf\\u00e9'), 'non-ASCII escaped');
  t.same(JSON.parse(text), callsEnvelope(PAGE, [callItems.mediaUpdate({ callId: 'c1', version: 1, sdp, timestamp: 1 })], JSON.parse(text).entry[0].time));
  t.not(text, JSON.stringify(JSON.parse(text)), 'a receiver re-serializing the JSON would compute another signature');
});

t.test('retries until a 200, byte for byte', async (t) => {
  const { url, hits } = await receiver(t, [500, 503]);
  const sender = new WebhookSender({ url, appSecret: SECRET, attempts: 5, baseDelayMs: 5 });
  const result = await sender.terminate(PAGE, { callId: 'c1', status: 'Completed', duration: 3 });
  t.equal(result.delivered, true);
  t.equal(result.attempts, 3);
  t.equal(hits.length, 3);
  t.ok(hits.every((h) => h.raw.equals(hits[0]!.raw) && h.signature === hits[0]!.signature));
});

t.test('gives up after the configured attempts', async (t) => {
  const { url, hits } = await receiver(t, [500, 500, 500, 500, 500]);
  const sender = new WebhookSender({ url, appSecret: SECRET, attempts: 3, baseDelayMs: 5 });
  const result = await sender.callStatus(PAGE, { callId: 'c1', psid: '1', status: 'ringing' });
  t.equal(result.delivered, false);
  t.equal(result.status, 500);
  t.equal(hits.length, 3);

  const down = new WebhookSender({ url: 'http://127.0.0.1:9/hook', appSecret: SECRET, attempts: 2, baseDelayMs: 5 });
  const refused = await down.connect({ callId: 'c', pageId: PAGE, psid: '1' });
  t.equal(refused.delivered, false);
  t.equal(refused.status, 0);
});

t.test('duplicate and replay resend the same bytes and signature', async (t) => {
  const { url, hits } = await receiver(t);
  const sender = new WebhookSender({ url, appSecret: SECRET });
  await sender.duplicate(callsEnvelope(PAGE, [callItems.callStatus({ callId: 'c1', psid: '1', status: 'accepted' })]));
  await sender.connect({ callId: 'c2', pageId: PAGE, psid: '1' });
  await sender.replay(1);
  await sender.replay(2);
  t.equal(hits.length, 5);
  t.ok(hits[0]!.raw.equals(hits[1]!.raw));
  t.ok(hits[2]!.raw.equals(hits[3]!.raw), 'replay(1) is the last payload');
  t.ok(hits[4]!.raw.equals(hits[2]!.raw), 'replay(2) counts the replay itself as the last one');
  await t.rejects(new WebhookSender({ url, appSecret: SECRET }).replay(), /nothing to replay/);
});

t.test('terminate without a connected business sends an empty duration, as Meta documents', async (t) => {
  const item = callItems.terminate({ callId: 'c', status: 'Failed', startTime: 10, endTime: 20 });
  t.same(item, { id: 'c', event: 'terminate', timestamp: 20, status: 'Failed', start_time: 10, end_time: 20, duration: '' });
  t.equal(metaJson({ a: 'x/y' }), '{"a":"x\\/y"}');
  t.equal(metaJson({ a: 'x/y' }, false), '{"a":"x/y"}');
});

t.test('duplicates, replays and reordered batches through the bridge\'s webhook endpoint', async (t) => {
  const received: MetaEvent[] = [];
  const hook = buildWebhookApp({
    settings: { appSecret: SECRET, verifyToken: 'v', pageIds: [PAGE] },
    sink: { handleMetaEvent: (e) => received.push(e) },
    log: pino({ level: 'silent' }),
  });
  t.teardown(() => hook.close());
  const url = `${await hook.listen({ host: '127.0.0.1', port: 0 })}/webhook`;
  const sender = new WebhookSender({ url, appSecret: SECRET });
  const now = Math.floor(Date.now() / 1000);
  const items = [
    callItems.connect({ callId: 'c1', pageId: PAGE, psid: '77', timestamp: now - 2 }),
    callItems.callStatus({ callId: 'c1', psid: '77', status: 'ringing', timestamp: now - 1 }),
    callItems.terminate({ callId: 'c1', status: 'Completed', timestamp: now }),
  ];
  t.equal((await sender.sendCallsReordered(PAGE, items)).delivered, true);
  await sender.replay();
  await sender.duplicate(callsEnvelope(PAGE, [items[1]!]));
  const wrong = new WebhookSender({ url, appSecret: 'not-the-secret', attempts: 1 });
  t.equal((await wrong.connect({ callId: 'c9', pageId: PAGE, psid: '1' })).status, 403);
  await new Promise((resolve) => setTimeout(resolve, 50));
  t.same(
    received.map((e) => e.kind),
    ['connect', 'call_status', 'terminate'],
    'oldest first, each once, forged one refused',
  );
});
