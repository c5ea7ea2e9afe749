import t from 'tap';
import { pino } from 'pino';
import type { MetaEvent } from '../../../src/calls/ports.js';
import { buildWebhookApp } from '../../../src/webhook/index.js';
import { createGraphSimulator, offerProblem, cannedAnswer, type GraphSimulatorOptions } from '../../../src/simulator/graph/index.js';
import { WebhookSender } from '../../../src/simulator/webhookSender.js';

const PAGE = '106378625516323';
const PSID = '5275811702471834';
const TOKEN = 'page-token';
const auth = { authorization: `Bearer ${TOKEN}` };
const OFFER = [
  'v=0',
  'o=- 1 2 IN IP4 127.0.0.1',
  's=-',
  't=0 0',
  'm=audio 9 UDP/TLS/RTP/SAVPF 111',
  'a=ice-ufrag:abcd',
  'a=ice-pwd:abcdefghijklmnopqrstuvwx',
  'a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF',
  'a=mid:audio0',
  '',
].join('\r\n');

function sim(t: { teardown: (fn: () => unknown) => void }, options: Partial<GraphSimulatorOptions> = {}) {
  const s = createGraphSimulator({ pages: { [PAGE]: TOKEN }, ...options });
  t.teardown(() => s.close());
  const calls = (body: unknown, headers: Record<string, string> = auth, version = 'v23.0') =>
    s.app.inject({ method: 'POST', url: `/${version}/${PAGE}/calls`, headers, payload: body as Record<string, unknown> });
  return { s, calls };
}

t.test('tokens and versions are checked with Meta\'s error bodies', async (t) => {
  const { calls } = sim(t);
  const missing = await calls({ action: 'reject', call_id: 'x' }, {});
  t.equal(missing.statusCode, 400);
  t.match(missing.json(), { error: { type: 'OAuthException', code: 104, message: String, fbtrace_id: String } });
  const wrong = await calls({ action: 'reject', call_id: 'x' }, { authorization: 'Bearer nope' });
  t.equal(wrong.json().error.code, 190);
  const version = await calls({ action: 'reject', call_id: 'x' }, auth, 'v23');
  t.equal(version.json().error.code, 2500);
  t.equal((await calls({ action: 'dance', call_id: 'x' })).json().error.code, 100);
  t.equal((await calls({ action: 'reject', call_id: 'x', platform: 'whatsapp' })).json().error.code, 100);
  t.equal((await calls({ action: 'reject', call_id: 'x' })).json().error.code, 2018389, 'unknown call');
});

t.test('the SDP offer is validated like Meta: v=0, m=audio, fingerprint, ice-ufrag', async (t) => {
  t.equal(offerProblem(OFFER), undefined);
  t.match(offerProblem(OFFER.replace('v=0', 'v=1')), /v=0/);
  t.match(offerProblem(OFFER.replace('m=audio', 'm=video')), /m=audio/);
  t.match(offerProblem(OFFER.replace(/a=fingerprint[^\r]*\r\n/, '')), /fingerprint/);
  t.match(offerProblem(OFFER.replace(/a=ice-ufrag[^\r]*\r\n/, '')), /ice-ufrag/);
  t.match(offerProblem(undefined), /missing/);

  const { s, calls } = sim(t);
  const callId = s.startConsumerCall({ pageId: PAGE, psid: PSID });
  const bad = await calls({ platform: 'messenger', call_id: callId, action: 'accept', session: { sdp_type: 'offer', sdp: OFFER.replace(/a=ice-ufrag[^\r]*\r\n/, '') } });
  t.equal(bad.json().error.code, 2018390);
  const answerType = await calls({ platform: 'messenger', call_id: callId, action: 'accept', session: { sdp_type: 'answer', sdp: OFFER } });
  t.equal(answerType.json().error.code, 2018390);
  t.equal(s.calls.get(callId)?.state, 'ringing', 'a refused accept leaves the call ringing');
});

t.test('the canned answer looks like Meta\'s', async (t) => {
  const answer = cannedAnswer(OFFER);
  for (const re of [/^v=0\r\n/, /\r\na=ice-lite\r\n/, /m=audio \d+ UDP\/TLS\/RTP\/SAVPF 111\r\n/, /a=fingerprint:sha-256 ([0-9A-F]{2}:){31}[0-9A-F]{2}/, /a=setup:passive/, /a=mid:audio0/, /typ host/, /tcptype passive/]) {
    t.match(answer, re);
  }
  t.notMatch(answer, /telephone-event/, 'Opus only, as in Meta\'s sample');
});

t.test('call state machine: accept once, reject only while ringing, terminate after accept', async (t) => {
  const answers: string[] = [];
  const { s, calls } = sim(t, {
    answerOffer: async ({ callId, sdp }) => {
      answers.push(callId);
      return cannedAnswer(sdp);
    },
  });
  const ended: string[] = [];
  s.events.on('terminate', (e) => ended.push(`${e.callId}:${e.by}:${e.status}:${e.call.endReason}`));

  const a = s.startConsumerCall({ pageId: PAGE, psid: PSID });
  const body = { platform: 'messenger', call_id: a, action: 'accept', session: { sdp_type: 'offer', sdp: OFFER } };
  const ok = await calls(body);
  t.equal(ok.statusCode, 200);
  t.equal(ok.json().success, true);
  t.match(ok.json().session.sdp_response, /a=ice-lite/);
  t.same(answers, [a], 'answerOffer supplied the answer');
  t.equal((await calls(body)).json().error.code, 2018392, 'already accepted');
  t.equal((await calls({ call_id: a, action: 'reject' })).json().error.code, 2018392);
  t.equal((await calls({ call_id: a, action: 'terminate' })).json().success, true);
  t.equal((await calls({ call_id: a, action: 'terminate' })).json().error.code, 2018394, 'already ended');
  t.equal(s.calls.get(a)?.state, 'terminated');

  const b = s.startConsumerCall({ pageId: PAGE, psid: PSID });
  t.equal((await calls({ call_id: b, action: 'terminate' })).json().error.code, 100, 'reject, not terminate, before accept');
  t.equal((await calls({ call_id: b, action: 'reject' })).json().success, true);
  t.equal((await calls({ call_id: b, action: 'reject' })).json().error.code, 2018393, 'already rejected');
  t.equal((await calls({ ...body, call_id: b })).json().error.code, 2018393);

  t.same(ended, [`${a}:business:Completed:Completed`, `${b}:business:Completed:Rejected`]);
});

t.test('an accept answer may carry a renegotiation offer', async (t) => {
  for (const shape of ['string', 'object'] as const) {
    const { s, calls } = sim(t, { acceptAnswerShape: shape, renegotiateOnAccept: async ({ answer }) => answer.replace('a=sendrecv', 'a=sendonly') });
    const a = s.startConsumerCall({ pageId: PAGE, psid: PSID });
    const r = (await calls({ call_id: a, action: 'accept', session: { sdp_type: 'offer', sdp: OFFER } })).json();
    const reoffer = shape === 'string' ? r.session.sdp_renegotiation : r.session.sdp_renegotiation.sdp;
    t.match(reoffer, /a=sendonly/, shape);
    if (shape === 'object') t.equal(r.session.sdp_renegotiation.sdp_type, 'offer');
    t.equal(s.calls.get(a)?.mediaVersion, 1);
  }
});

t.test('the person hanging up ends the call with a duration', async (t) => {
  const { s, calls } = sim(t);
  const a = s.startConsumerCall({ pageId: PAGE, psid: PSID });
  await calls({ call_id: a, action: 'accept', session: { sdp_type: 'offer', sdp: OFFER } });
  const ended = s.events.waitFor('terminate');
  s.hangUp(a);
  const [e] = await ended;
  t.equal(e.by, 'consumer');
  t.equal(e.status, 'Completed');
  t.equal(typeof e.duration, 'number');
  s.hangUp(a);
  t.equal(s.calls.get(a)?.endReason, 'Completed', 'hanging up twice changes nothing');
});

t.test('failNext injects one fault, then normal service', async (t) => {
  const { s, calls } = sim(t);
  const a = s.startConsumerCall({ pageId: PAGE, psid: PSID });
  s.failNext('reject', { status: 500, body: { error: { message: 'boom', type: 'OAuthException', code: 1 } } });
  const failed = await calls({ call_id: a, action: 'reject' });
  t.equal(failed.statusCode, 500);
  t.equal(failed.json().error.code, 1);
  s.failNext('reject', { delayMs: 100 });
  const started = Date.now();
  const ok = await calls({ call_id: a, action: 'reject' });
  t.equal(ok.json().success, true);
  t.ok(Date.now() - started >= 90, 'delayed');
});

t.test('permissions: documented answer, expiry, request limit', async (t) => {
  const { s } = sim(t, { defaultPermission: 'no_permission' });
  const get = async () =>
    (await s.app.inject({ method: 'GET', url: `/v23.0/${PAGE}/messenger_call_permissions?psid=${PSID}`, headers: auth })).json();
  t.match(await get(), { permission: { status: 'no_permission' }, actions: [{ action_name: 'send_call_permission_request', can_perform: true }, { action_name: 'start_call', can_perform: false }] });
  s.setPermission(PAGE, PSID, 'temporary_permission', Math.floor(Date.now() / 1000) - 1);
  t.equal((await get()).permission.status, 'no_permission', 'expired');
  s.setPermission(PAGE, PSID, 'has_permission');
  t.equal((await get()).actions[1].can_perform, true);

  const request = () =>
    s.app.inject({
      method: 'POST',
      url: `/v23.0/${PAGE}/messages`,
      headers: auth,
      payload: { recipient: { id: PSID }, message: { attachment: { type: 'template', payload: { template_type: 'calling_optin' } } } },
    });
  t.match((await request()).json(), { recipient: { id: PSID }, message_id: String });
  await request();
  t.equal((await request()).json().error.code, 2018396);
  t.equal((await get()).actions[0].can_perform, false);
});

t.test('with a webhook sender, Meta\'s webhooks reach the bridge\'s webhook endpoint', async (t) => {
  const received: MetaEvent[] = [];
  let waiter: (() => void) | undefined;
  const hook = buildWebhookApp({
    settings: { appSecret: 'app-secret', verifyToken: 'v', pageIds: [PAGE] },
    sink: {
      handleMetaEvent: (e) => {
        received.push(e);
        waiter?.();
      },
    },
    log: pino({ level: 'silent' }),
  });
  t.teardown(() => hook.close());
  const url = `${await hook.listen({ host: '127.0.0.1', port: 0 })}/webhook`;
  const next = async (count: number): Promise<void> => {
    const deadline = Date.now() + 8000;
    while (received.length < count && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        waiter = resolve;
        setTimeout(resolve, 50);
      });
    }
  };
  const webhooks = new WebhookSender({ url, appSecret: 'app-secret', attempts: 2, baseDelayMs: 10 });
  const { s, calls } = sim(t, { webhooks, acceptDeadlineMs: 1500 });

  const a = s.startConsumerCall({ pageId: PAGE, psid: PSID });
  await next(1);
  t.match(received[0], { kind: 'connect', callId: a, from: PSID, to: PAGE, direction: 'user_initiated' });
  await next(2);
  t.match(received[1], { kind: 'terminate', callId: a, status: 'Failed' }, 'Not Answered after the accept window');
  t.equal(received[1]?.kind === 'terminate' ? received[1].duration : 'x', undefined);

  const connected = await calls({ platform: 'messenger', to: PSID, action: 'connect', session: { sdp_type: 'offer', sdp: OFFER } });
  const b = connected.json().id as string;
  t.match(connected.json().session.sdp_response, { sdp_type: 'answer', sdp: /a=ice-lite/ });
  await next(3);
  t.match(received[2], { kind: 'connect', callId: b, from: PAGE, to: PSID, direction: 'business_initiated' });
  s.consumerRinging(b);
  await next(4);
  s.consumerAccept(b);
  await next(5);
  const version = s.sendMediaUpdate(b, OFFER);
  await next(6);
  s.hangUp(b);
  await next(7);
  s.replyPermission(PAGE, PSID, 'approve');
  await next(8);
  t.same(
    received.slice(3).map((e) => (e.kind === 'call_status' ? `${e.kind}:${e.status}` : e.kind)),
    ['call_status:ringing', 'call_status:accepted', 'media_update', 'terminate', 'call_permission_reply'],
  );
  t.match(received[5], { kind: 'media_update', callId: b, version, session: { sdpType: 'offer', sdp: OFFER } });
  t.match(received[6], { kind: 'terminate', callId: b, status: 'Completed', duration: Number });
  t.match(received[7], { kind: 'call_permission_reply', pageId: PAGE, psid: PSID, response: 'approve' });
});

t.test('ended calls are forgotten beyond a bound, live ones never', async (t) => {
  const { s } = sim(t);
  const live = s.startConsumerCall({ pageId: PAGE, psid: PSID });
  const first = s.startConsumerCall({ pageId: PAGE, psid: PSID });
  s.hangUp(first);
  for (let i = 0; i < 1100; i++) s.hangUp(s.startConsumerCall({ pageId: PAGE, psid: PSID }));
  t.equal(s.calls.size, 1001, '1000 ended calls and the live one');
  t.ok(s.calls.has(live));
  t.notOk(s.calls.has(first), 'the oldest ended call went first');
});
