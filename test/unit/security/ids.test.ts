/**
 * Ids from outside that would otherwise reach SIP headers: a signed webhook whose PSID, page id or call id carries
 * CRLF and a header of its own, and INVITEs whose Request-URI user or page header is not a Meta id. Each is refused
 * with a clear log line (and a 400 toward the PBX), and nothing reaches the PBX or the Graph API.
 */
import t from 'tap';
import { PAGE_ID, PSID, sleep, startHarness, until } from '../../helpers/bridgeHarness.js';
import { callItems, callsEnvelope } from '../../../src/simulator/webhookSender.js';
import { parseWebhookBody } from '../../../src/webhook/parseEvents.js';

const offer = ['v=0', 'o=pbx 1 1 IN IP4 127.0.0.1', 's=-', 'c=IN IP4 127.0.0.1', 't=0 0', 'm=audio 40000 RTP/AVP 0', 'a=rtpmap:0 PCMU/8000', ''].join('\r\n');

t.test('a signed connect with CRLF in the PSID never becomes an INVITE; the good item beside it does', async (t) => {
  const h = await startHarness({ captureLogs: true });
  t.teardown(() => h.close());
  const invites: string[] = [];
  h.drachtio.pbx.onInvite((invite) => {
    invites.push(invite.request.toString());
    invite.reject(486, 'Busy Here');
  });
  const evil = callItems.connect({ callId: 'c_evil_psid', pageId: PAGE_ID, psid: '5\r\nX-Evil: 1' });
  const evilCallId = callItems.connect({ callId: 'c_evil\r\nX-Evil: 1', pageId: PAGE_ID, psid: PSID });
  const good = callItems.connect({ callId: 'c_good_one', pageId: PAGE_ID, psid: PSID });
  const delivery = await h.sim.webhooks.send(callsEnvelope(PAGE_ID, [evil, evilCallId, good]));
  t.equal(delivery.status, 200, 'the POST is acknowledged (it is signed)');
  await until(() => invites.length === 1, 5000, 'the good call reaches the PBX');
  await sleep(300);
  t.equal(invites.length, 1, 'only the good item became an INVITE');
  t.notMatch(invites.join(''), /X-Evil/i, 'no injected header reached the PBX');
  const invalid = h.logs().filter((l) => /invalid/i.test(String(l.msg)) && JSON.stringify(l).includes('must be a numeric id'));
  t.ok(invalid.length > 0, 'the bad PSID is logged with the reason');
  t.ok(h.logs().some((l) => JSON.stringify(l).includes('must be a call id')), 'the bad call id is logged with the reason');
  const metrics = await h.daemon.metrics.text();
  t.match(metrics, /msb_webhooks_total\{event="connect",result="invalid"\} 2/, 'both counted invalid');
});

t.test('webhook ids: PSIDs and page ids are digits, call ids have no separators or controls', async (t) => {
  const parse = (item: Record<string, unknown>, pageId: unknown = PAGE_ID) =>
    parseWebhookBody({ object: 'page', entry: [{ id: pageId, time: 1, calls: [item] }] }, 1);
  const base = { id: 'c_1', event: 'connect', from: PSID, to: PAGE_ID, timestamp: 1, call_direction: 'user_initiated' };
  t.equal(parse(base).events.length, 1, 'a well-formed connect passes');
  for (const from of ['5\r\nX-Evil: 1', '12;x=y', '<sip:1@x>', '', '1'.repeat(33)]) {
    t.equal(parse({ ...base, from }).events.length, 0, `PSID ${JSON.stringify(from)} refused`);
  }
  for (const id of ['c\r\n1', 'c 1', 'c;1', 'c<1>', 'c,1', 'x'.repeat(257)]) {
    t.equal(parse({ ...base, id }).events.length, 0, `call id ${JSON.stringify(id.slice(0, 20))} refused`);
  }
  const badPage = parse(base, '106\r\nX: 1');
  t.equal(badPage.events.length, 0, 'a page id with CRLF refuses the entry');
  t.match(badPage.invalid[0]?.reason ?? '', /no page id/);
  t.equal(
    parse({ event: 'terminate', id: 'c_2\u0000', timestamp: 1 }).invalid.length,
    1,
    'a terminate with a control character in its call id is invalid',
  );
});

t.test('INVITEs whose Request-URI user or page header is not a Meta id: 400 with a reason, nothing reaches Meta', async (t) => {
  const h = await startHarness({ captureLogs: true });
  t.teardown(() => h.close());
  let requests = 0;
  h.sim.graph.events.on('request', () => requests++);
  const cases: Array<{ name: string; call: Parameters<typeof h.drachtio.pbx.call>[0]; reason: RegExp }> = [
    { name: 'CRLF, percent-encoded, in the user', call: { requestUri: 'sip:5%0D%0AX-Evil:%201@127.0.0.1', sdp: offer }, reason: /malformed PSID in the Request-URI user/ },
    { name: 'letters in the user', call: { user: 'service', sdp: offer }, reason: /malformed PSID/ },
    { name: 'a parameter-like user', call: { requestUri: 'sip:123%3Bmaddr%3D10.0.0.1@127.0.0.1', sdp: offer }, reason: /malformed PSID/ },
    { name: 'a page header with a separator', call: { user: PSID, sdp: offer, headers: { 'X-Messenger-Page-ID': '106378625516323;x' } }, reason: /malformed page id in X-Messenger-Page-ID/ },
  ];
  for (const c of cases) {
    const before = h.logs().length;
    const final = await h.drachtio.pbx.call(c.call).final;
    t.equal(final.status, 400, `${c.name}: 400`);
    t.match(final.response.get('reason') ?? '', c.reason, `${c.name}: the Reason says why`);
    await sleep(50);
    t.ok(
      h.logs().slice(before).some((l) => (l.level as number) >= 40 && c.reason.test(String(l.msg))),
      `${c.name}: logged`,
    );
  }
  t.equal(requests, 0, 'nothing reached the Graph API');
  t.equal(h.daemon.controller.registry.size, 0);
});

t.test('a call id from Graph connect with CRLF is refused (it would go into X-Messenger-Call-ID)', async (t) => {
  const { GraphClient } = await import('../../../src/graph/index.js');
  const { createGraphSimulator } = await import('../../../src/simulator/graph/index.js');
  const { Metrics } = await import('../../../src/observability/index.js');
  const { pino } = await import('pino');
  const sim = createGraphSimulator({ pages: { [PAGE_ID]: 'page-token' } });
  t.teardown(() => sim.close());
  const address = await sim.app.listen({ host: '127.0.0.1', port: 0 });
  const client = new GraphClient({ baseUrl: address, version: 'v23.0', pages: new Map([[PAGE_ID, 'page-token']]), timeoutMs: 2000, log: pino({ level: 'silent' }), metrics: new Metrics() });
  sim.setPermission(PAGE_ID, PSID, 'has_permission');
  sim.failNext('connect', { status: 200, body: { success: true, id: 'c_1\r\nX-Evil: 1', session: { sdp_response: { sdp_type: 'answer', sdp: 'v=0' } } } });
  await t.rejects(client.connect(PAGE_ID, PSID, 'v=0'), { code: 'GRAPH_BAD_RESPONSE', message: /malformed call id/ });
});
