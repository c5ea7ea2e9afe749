/**
 * Bad webhook input, generated: broken JSON, wrong types, missing fields, huge strings, deep nesting, oversize
 * bodies, wrong, missing and truncated signatures, replays, unknown pages, terminate before connect, media_update
 * for unknown calls, out-of-order versions. The daemon answers each with the right status, processes nothing that
 * is not signed, never crashes, and a call in progress keeps its audio throughout.
 */
import { createHmac } from 'node:crypto';
import fc from 'fast-check';
import t from 'tap';
import { callItems, callsEnvelope, signPayload } from '../../src/simulator/webhookSender.js';
import { APP_SECRET, PAGE_ID, VERIFY_TOKEN, startHarness } from '../helpers/bridgeHarness.js';
import { assertNothingLeft, checkedFigure, audioFlows, audioWindow, baseline, leakCount, leftOver, recordFigures, startLiveCall } from '../helpers/reliability.js';

const BODY_LIMIT = 262_144;
const SEED = 20_261_126;

interface Case {
  category: string;
  method?: 'POST' | 'GET' | 'PUT';
  /** Query string for GET. */
  query?: string;
  body?: Buffer;
  signature?: string | undefined;
  expect: number;
  /** Meta call ids that must never reach the PBX or the Graph API. */
  mustNotProcess?: string[];
}

const nowSec = (): number => Math.floor(Date.now() / 1000);
const sign = (body: Buffer): string => signPayload(body, APP_SECRET);
const json = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));
const freshId = (n: number): string => `rel_${n}_${Math.random().toString(36).slice(2, 10)}`;

/** A well-formed connect for a call nobody knows: if it were processed, the PBX would see an INVITE. */
function validConnect(callId: string, pageId = PAGE_ID, timestamp = nowSec()): Buffer {
  return json(callsEnvelope(pageId, [callItems.connect({ callId, pageId, psid: '4242', timestamp })]));
}

function deepNest(depth: number): string {
  return `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;
}

/** Any JSON value, for fields that expect something else. */
const wrongValue = fc.oneof(
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.string({ maxLength: 20 }),
  fc.array(fc.integer(), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 5 }), fc.integer(), { maxKeys: 3 }),
);

/** A call item with one field given a wrong type or removed. */
const brokenItem = fc
  .record({
    event: fc.constantFrom('connect', 'call_status', 'media_update', 'terminate', 'bogus', ''),
    field: fc.constantFrom('id', 'from', 'to', 'timestamp', 'call_direction', 'session', 'call_status', 'status', 'event'),
    value: wrongValue,
    remove: fc.boolean(),
  })
  .map(({ event, field, value, remove }) => {
    const item: Record<string, unknown> = {
      ...callItems.connect({ callId: 'x', pageId: PAGE_ID, psid: '4242' }),
      event,
      call_status: 'ringing',
      session: { version: 1, sdp_renegotiation: { sdp_type: 'offer', sdp: 'v=0' } },
    };
    if (remove) delete item[field];
    else item[field] = value;
    return item;
  });

/** Envelopes of the wrong shape. */
const brokenEnvelope = fc.oneof(
  wrongValue,
  fc.record({ object: wrongValue, entry: wrongValue }),
  fc.record({ object: fc.constant('page'), entry: fc.array(fc.record({ id: wrongValue, time: wrongValue, calls: wrongValue }), { maxLength: 3 }) }),
  fc.record({ object: fc.constant('page'), entry: fc.array(fc.record({ id: fc.constant(PAGE_ID), calls: fc.array(brokenItem, { minLength: 1, maxLength: 4 }) }), { minLength: 1, maxLength: 2 }) }),
);

function buildCases(liveCallId: string): { cases: Case[]; replays: Array<{ callId: string; body: Buffer }> } {
  const cases: Case[] = [];
  let n = 0;
  const rnd = { seed: SEED };

  // Broken JSON, signed correctly: 400.
  for (const text of fc.sample(fc.string({ minLength: 1, maxLength: 200 }), { numRuns: 150, ...rnd })) {
    const body = Buffer.from(`{"object":"page","entry":[${text}`);
    cases.push({ category: 'broken JSON (signed)', body, signature: sign(body), expect: 400 });
  }
  for (const bytes of fc.sample(fc.uint8Array({ minLength: 1, maxLength: 300 }), { numRuns: 50, ...rnd })) {
    const body = Buffer.concat([Buffer.from('\xff{'), Buffer.from(bytes)]);
    cases.push({ category: 'broken JSON (signed)', body, signature: sign(body), expect: 400 });
  }

  // Wrong types, missing fields, wrong shapes: acknowledged (Meta would retry otherwise), dropped item by item.
  for (const envelope of fc.sample(brokenEnvelope, { numRuns: 250, ...rnd })) {
    const body = json(envelope);
    cases.push({ category: 'wrong types / missing fields (signed)', body, signature: sign(body), expect: 200 });
  }

  // Huge strings under the limit, deep nesting.
  for (const size of fc.sample(fc.integer({ min: 1_000, max: BODY_LIMIT - 1_000 }), { numRuns: 20, ...rnd })) {
    const body = json(callsEnvelope(PAGE_ID, [{ ...callItems.terminate({ callId: 'x'.repeat(size - 200), status: 'Completed' }), status: 'y' }]));
    cases.push({ category: 'huge strings (signed)', body, signature: sign(body), expect: 200 });
  }
  for (const depth of fc.sample(fc.integer({ min: 100, max: 40_000 }), { numRuns: 20, ...rnd })) {
    const body = Buffer.from(`{"object":"page","entry":[{"id":"${PAGE_ID}","calls":[{"event":"connect","id":${deepNest(depth)}}]}]}`);
    if (body.length >= BODY_LIMIT) continue;
    cases.push({ category: 'deep nesting (signed)', body, signature: sign(body), expect: 200 });
  }

  // Oversize: 413 whatever the signature.
  for (const extra of fc.sample(fc.integer({ min: 1, max: 300_000 }), { numRuns: 20, ...rnd })) {
    const body = Buffer.alloc(BODY_LIMIT + extra, 0x20);
    cases.push({ category: 'oversize body', body, signature: extra % 2 ? sign(body) : undefined, expect: 413 });
  }

  // Signatures: missing (401), wrong, truncated, other secret, malformed (403). Bodies are valid connects, so any
  // processing would show up as an INVITE or a Graph request.
  for (const kind of fc.sample(fc.constantFrom('missing', 'empty', 'wrong', 'truncated', 'other-secret', 'no-prefix', 'sha1', 'garbage', 'flipped'), { numRuns: 300, ...rnd })) {
    const callId = freshId(n++);
    const body = validConnect(callId);
    const good = sign(body);
    const signature = {
      missing: undefined,
      empty: '',
      wrong: `sha256=${'0'.repeat(64)}`,
      truncated: good.slice(0, 7 + Math.floor(Math.random() * 63)),
      'other-secret': `sha256=${createHmac('sha256', 'not-the-secret').update(body).digest('hex')}`,
      'no-prefix': good.slice(7),
      sha1: `sha1=${createHmac('sha1', APP_SECRET).update(body).digest('hex')}`,
      garbage: `sha256=${'zz'.repeat(32)}`,
      flipped: `sha256=${(good.slice(7, 8) === 'a' ? 'b' : 'a')}${good.slice(8)}`,
    }[kind];
    cases.push({
      category: `signature ${kind}`,
      body,
      signature,
      expect: kind === 'missing' || kind === 'empty' ? 401 : 403,
      mustNotProcess: [callId],
    });
  }

  // Events for pages we do not serve, terminate before connect, media_update and call_status for unknown calls,
  // connects older than the accept window: acknowledged, never reach the PBX or Graph.
  for (let i = 0; i < 60; i++) {
    const callId = freshId(n++);
    const body = validConnect(callId, `9${i}00000000`);
    cases.push({ category: 'event for an unknown page', body, signature: sign(body), expect: 200, mustNotProcess: [callId] });
  }
  for (let i = 0; i < 60; i++) {
    const callId = freshId(n++);
    const body = json(callsEnvelope(PAGE_ID, [callItems.terminate({ callId, status: 'Completed' })]));
    cases.push({ category: 'terminate before connect', body, signature: sign(body), expect: 200, mustNotProcess: [callId] });
  }
  for (let i = 0; i < 60; i++) {
    const callId = freshId(n++);
    const body = json(callsEnvelope(PAGE_ID, [callItems.mediaUpdate({ callId, version: i, sdp: 'v=0\r\n' })]));
    cases.push({ category: 'media_update for an unknown call', body, signature: sign(body), expect: 200, mustNotProcess: [callId] });
  }
  for (let i = 0; i < 30; i++) {
    const callId = freshId(n++);
    const body = validConnect(callId, PAGE_ID, nowSec() - 120 - i);
    cases.push({ category: 'connect older than the accept window', body, signature: sign(body), expect: 200, mustNotProcess: [callId] });
  }
  // Out-of-order media_update versions for the live call, carrying SDP that cannot be applied: stale ones are
  // dropped, newer ones fail to apply; the call keeps its audio either way.
  for (const version of fc.sample(fc.integer({ min: 1, max: 50 }), { numRuns: 40, ...rnd })) {
    const body = json(callsEnvelope(PAGE_ID, [callItems.mediaUpdate({ callId: liveCallId, version, sdp: `v=0\r\ngarbage ${version}\r\n` })]));
    cases.push({ category: 'out-of-order media_update for the live call', body, signature: sign(body), expect: 200 });
  }

  // Handshake: wrong token, wrong mode, nothing: 403. Other methods: 404.
  for (const q of fc.sample(fc.record({ mode: fc.constantFrom('subscribe', 'unsubscribe', ''), token: fc.string({ maxLength: 30 }) }), { numRuns: 40, ...rnd })) {
    if (q.mode === 'subscribe' && q.token === VERIFY_TOKEN) continue;
    const query = new URLSearchParams({ 'hub.mode': q.mode, 'hub.verify_token': q.token, 'hub.challenge': '12345' }).toString();
    cases.push({ category: 'handshake with a wrong token', method: 'GET', query, expect: 403 });
  }
  for (let i = 0; i < 10; i++) {
    const body = validConnect(freshId(n++));
    cases.push({ category: 'wrong method', method: 'PUT', body, signature: sign(body), expect: 404 });
  }

  // Replays of valid signed bodies (sent first, then again byte for byte): 200, processed once.
  const replays: Array<{ callId: string; body: Buffer }> = [];
  for (let i = 0; i < 30; i++) {
    const callId = freshId(n++);
    replays.push({ callId, body: json(callsEnvelope(PAGE_ID, [callItems.terminate({ callId, status: 'Completed', timestamp: nowSec() })])) });
  }
  return { cases, replays };
}

async function send(url: string, c: Case): Promise<number> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (c.signature !== undefined) headers['x-hub-signature-256'] = c.signature;
  const target = c.query ? `${url}?${c.query}` : url;
  try {
    const res = await fetch(target, {
      method: c.method ?? 'POST',
      headers,
      ...(c.method === 'GET' ? {} : { body: c.body }),
      signal: AbortSignal.timeout(10_000),
    });
    await res.arrayBuffer();
    return res.status;
  } catch (err) {
    // An oversize body may be refused before it is fully sent: the 413 is then lost with the connection.
    if (c.expect === 413) return 413;
    throw err;
  }
}

t.test('a barrage of bad webhooks: right statuses, nothing unsigned processed, the live call keeps its audio', async (t) => {
  const started = Date.now();
  const h = await startHarness({ codecs: ['PCMU'], captureLogs: true });
  t.teardown(() => h.close());
  const base = await baseline(h);
  const live = await startLiveCall(h);
  t.teardown(() => live.close());

  const graphRequests: Array<{ action: string; body?: unknown }> = [];
  h.sim.graph.events.on('request', (r) => graphRequests.push({ action: r.action }));
  const invitesBefore = h.drachtio.sent({ method: 'INVITE' }).length;
  const { cases, replays } = buildCases(live.callId);

  const window = audioWindow(live);
  const wrong: string[] = [];
  const byCategory = new Map<string, number>();
  const concurrency = 8;
  for (let i = 0; i < cases.length; i += concurrency) {
    const batch = cases.slice(i, i + concurrency);
    const statuses = await Promise.all(batch.map((c) => send(h.daemon.webhookUrl, c)));
    batch.forEach((c, j) => {
      byCategory.set(c.category, (byCategory.get(c.category) ?? 0) + 1);
      if (statuses[j] !== c.expect) wrong.push(`${c.category}: got ${statuses[j]}, expected ${c.expect}`);
    });
  }
  let replayed = 0;
  for (const { body } of replays) {
    for (let k = 0; k < 2; k++) {
      const status = await send(h.daemon.webhookUrl, { category: 'replay', body, signature: sign(body), expect: 200 });
      if (status !== 200) wrong.push(`replay: got ${status}`);
      replayed++;
    }
  }
  const audio = window.check();
  const total = cases.length + replayed;

  t.same(wrong, [], 'every input answered with the right status');
  // A well-formed handshake still works after all that.
  const challenge = await fetch(`${h.daemon.webhookUrl}?hub.mode=subscribe&hub.verify_token=${VERIFY_TOKEN}&hub.challenge=777`);
  t.equal(await challenge.text(), '777', 'the endpoint still answers the handshake');

  // Nothing that was unsigned, for an unknown page, stale or for an unknown call reached the PBX or Graph.
  await new Promise((resolve) => setTimeout(resolve, 500));
  t.equal(h.drachtio.sent({ method: 'INVITE' }).length, invitesBefore, 'no INVITE caused by the barrage');
  t.same(graphRequests.map((r) => r.action), [], 'no Graph request caused by the barrage');

  // Replays: each body is sent twice; its event is accepted the first time and dropped as a duplicate the second.
  // Only the replays' own call ids count (other cases also produce duplicate verdicts).
  const duplicatesPerReplay = new Map(replays.map(({ callId }) => [callId, 0]));
  for (const l of h.logs()) {
    if (l.msg !== 'webhook event dropped' || l.verdict !== 'duplicate' || typeof l.callId !== 'string') continue;
    const seen = duplicatesPerReplay.get(l.callId);
    if (seen !== undefined) duplicatesPerReplay.set(l.callId, seen + 1);
  }
  const replaysDroppedOnce = [...duplicatesPerReplay.values()].filter((n) => n === 1).length;
  const refused = h.logs().filter((l) => l.msg === 'webhook POST refused: signature').length;
  const refusedCases = cases.filter((c) => c.expect === 401 || c.expect === 403).filter((c) => c.method !== 'GET').length;
  t.equal(refused, refusedCases, 'every refused signature has a log line');

  // The live call kept its audio during the barrage. The fake PBX's RTP sender shares this process with the
  // barrage and sends less while the event loop is busy, so what counts is that the bridge forwarded what each
  // side sent, and that the tone came through.
  const { packets } = audio;
  t.ok(packets.pbxSent > 0 && packets.metaSent > 0, `both sides kept sending (${JSON.stringify(packets)})`);
  const percentOf = (part: number, whole: number): number => Number(((100 * part) / Math.max(1, whole)).toFixed(1));
  const toMeta = checkedFigure(
    t,
    'live call: packets forwarded PBX -> Meta during the barrage (% of those sent)',
    percentOf(packets.metaReceived, packets.pbxSent),
    '>=',
    90,
    `${packets.metaReceived} of ${packets.pbxSent}`,
  );
  const toPbx = checkedFigure(
    t,
    'live call: packets forwarded Meta -> PBX during the barrage (% of those sent)',
    percentOf(packets.pbxReceived, packets.metaSent),
    '>=',
    90,
    `${packets.pbxReceived} of ${packets.metaSent}`,
  );
  t.ok(audio.atPbx, 'the tone from Meta was heard at the PBX during the barrage');
  const after = await audioFlows(live, 1000);
  t.ok(after.atPbx && after.atMeta, `tone heard both ways after the barrage (${JSON.stringify(after)})`);
  t.equal(h.daemon.controller.registry.size, 1, 'the live call is still up');
  t.equal(h.sim.call(live.callId)?.state, 'accepted', 'Meta still has the call');

  const ended = h.sim.waitForEnd(live.callId, 5000);
  h.sim.hangUp(live.callId);
  await ended;
  await live.dialog.waitForBye(3000);
  live.close();
  const left = await leftOver(h, base);
  assertNothingLeft(t, left, 'after the barrage');

  recordFigures('webhookInput', {
    title: 'Webhook input',
    figures: [
      checkedFigure(t, 'bad inputs sent', total, '>=', 1000),
      ...[...byCategory.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([k, v]): [string, number] => [`  ${k}`, v]),
      ['  replays (each sent twice)', replayed],
      checkedFigure(t, '  replays dropped as a duplicate exactly once', replaysDroppedOnce, '==', replays.length, `of ${replays.length}`),
      checkedFigure(t, 'wrong statuses', wrong.length, '==', 0),
      checkedFigure(t, 'unsigned or unknown inputs processed (INVITEs caused)', h.drachtio.sent({ method: 'INVITE' }).length - invitesBefore, '==', 0),
      toMeta,
      toPbx,
      checkedFigure(t, 'leaks found', leakCount(left), '==', 0),
      ['seconds', Math.round((Date.now() - started) / 1000)],
    ],
  });
});

t.test('terminate before connect, then the connect: the call ends at once and nothing is left', async (t) => {
  const h = await startHarness({ codecs: ['PCMU'] });
  t.teardown(() => h.close());
  const base = await baseline(h);
  const invites: string[] = [];
  h.drachtio.pbx.onInvite((invite) => {
    invites.push(invite.requestUri);
    invite.reject(486, 'Busy Here');
  });
  const rounds = 10;
  for (let i = 0; i < rounds; i++) {
    const callId = freshId(i);
    const terminate = json(callsEnvelope(PAGE_ID, [callItems.terminate({ callId, status: 'Failed' })]));
    t.equal(await send(h.daemon.webhookUrl, { category: 'terminate', body: terminate, signature: sign(terminate), expect: 200 }), 200);
    const connect = validConnect(callId);
    t.equal(await send(h.daemon.webhookUrl, { category: 'connect', body: connect, signature: sign(connect), expect: 200 }), 200);
  }
  const left = await leftOver(h, base);
  assertNothingLeft(t, left, 'after connects whose terminate came first');
  t.equal(invites.length, 0, 'no INVITE for calls Meta had already ended');
});
