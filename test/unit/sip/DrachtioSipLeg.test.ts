import t from 'tap';
import { pino } from 'pino';
import { DrachtioSipLeg, type DrachtioSipLegOptions } from '../../../src/sip/DrachtioSipLeg.js';
import { SipError } from '../../../src/core/errors.js';
import type { IncomingCall, SipDialog } from '../../../src/calls/ports.js';
import { startDrachtioDouble, type DrachtioDouble } from '../../helpers/drachtio/index.js';

const log = pino({ level: process.env.LOG_LEVEL ?? 'silent' });

function sdp(port: number, direction = 'sendrecv', version = 1): string {
  return [
    'v=0',
    `o=- 4242 ${version} IN IP4 127.0.0.1`,
    's=-',
    'c=IN IP4 127.0.0.1',
    't=0 0',
    `m=audio ${port} RTP/AVP 0 101`,
    'a=rtpmap:0 PCMU/8000',
    'a=rtpmap:101 telephone-event/8000',
    `a=${direction}`,
    '',
  ].join('\r\n');
}

async function setup(
  t: { teardown: (fn: () => unknown) => void },
  extra: Partial<DrachtioSipLegOptions> = {},
): Promise<{ double: DrachtioDouble; leg: DrachtioSipLeg; responses: Array<[string, number]>; connections: boolean[] }> {
  const double = await startDrachtioDouble({ secret: 's3cret' });
  const responses: Array<[string, number]> = [];
  const connections: boolean[] = [];
  const leg = new DrachtioSipLeg({
    host: '127.0.0.1',
    port: double.port,
    secret: 's3cret',
    acl: ['127.0.0.1/32', '::1/128'],
    target: { psidFrom: 'request_uri', psidHeader: 'X-Messenger-PSID', pageHeader: 'X-Messenger-Page-ID' },
    fromUser: 'messenger',
    log,
    metrics: { sipResponse: (d, s) => responses.push([d, s]), drachtioConnection: (up) => connections.push(up) },
    reconnectMaxDelayMs: 200,
    ...extra,
  });
  t.teardown(async () => {
    leg.close();
    await double.close();
  });
  await leg.whenConnected(AbortSignal.timeout(5000));
  return { double, leg, responses, connections };
}

function outbound(double: DrachtioDouble, users: string[], extra: Partial<Parameters<DrachtioSipLeg['invite']>[0]> = {}) {
  return {
    targets: users.map((u) => double.pbx.uri(u)),
    headers: { 'X-Messenger-PSID': '1234567890', 'X-Messenger-Page-ID': '555' },
    sdp: sdp(40000),
    targetTimeoutMs: 3000,
    signal: AbortSignal.timeout(10_000),
    ...extra,
  };
}

t.test('connects to drachtio-server and registers for INVITE and OPTIONS', async (t) => {
  const { double, leg } = await setup(t);
  t.equal(leg.connected, true);
  const c2s = double.frames.filter((f) => f.direction === 'C->S').map((f) => f.payload.split('|').slice(1, 3).join('|'));
  t.ok(c2s.includes('authenticate|s3cret'), 'authenticated with the secret');
  t.ok(c2s.includes('route|invite'), 'route invite');
  t.ok(c2s.includes('route|options'), 'route options');
});

t.test('outbound INVITE: custom headers on the wire, 180 -> onProgress, 200 -> ACK and dialog, BYE from us', async (t) => {
  const { double, leg } = await setup(t);
  double.pbx.onInvite(async (inv) => {
    inv.ringing();
    await new Promise((r) => setTimeout(r, 50));
    await inv.answer(sdp(6000));
  });
  const progress: Array<[number, string]> = [];
  const result = await leg.invite(
    outbound(double, ['agents'], { from: { user: 'fb-123', displayName: 'Messenger Caller' }, onProgress: (s, tg) => progress.push([s, tg]) }),
  );
  t.same(progress, [[180, double.pbx.uri('agents')]], 'one 180 reported with its target');
  t.equal(result.status, 200);
  t.equal(result.target, double.pbx.uri('agents'));
  t.match(result.sdp, /m=audio 6000 /, 'the PBX answer SDP');

  const [invite] = double.sent({ method: 'INVITE' });
  t.ok(invite, 'INVITE on the wire');
  t.equal(invite!.uri, double.pbx.uri('agents'));
  t.equal(invite!.get('X-Messenger-PSID'), '1234567890');
  t.equal(invite!.get('X-Messenger-Page-ID'), '555');
  t.match(invite!.get('From')!, /^"Messenger Caller" <sip:fb-123@127\.0\.0\.1>;tag=/);
  t.match(invite!.body, /m=audio 40000 /);

  const pbxDialog = double.pbx.dialogs[0]!;
  await pbxDialog.waitForRequest('ACK');
  const acks = double.sent({ method: 'ACK' });
  t.equal(acks.length, 1, 'srf ACKed the 200');
  t.equal(acks[0]!.cseq.seq, invite!.cseq.seq, 'ACK has the INVITE CSeq');
  await result.dialog.end();
  await result.dialog.end();
  const bye = await pbxDialog.waitForBye();
  t.equal(bye.callId, invite!.callId, 'BYE in the same call');
  t.equal(double.sent({ method: 'BYE' }).length, 1, 'end() is idempotent: one BYE');
  t.equal(result.dialog.ended, true);
});

t.test('486 rejects with SipError(486) and the next target is not tried', async (t) => {
  const { double, leg, responses } = await setup(t);
  double.pbx.onInvite((inv) => inv.reject(486));
  const err = await leg.invite(outbound(double, ['busy', 'second'])).catch((e: unknown) => e);
  t.ok(err instanceof SipError, 'SipError');
  t.equal((err as SipError).status, 486);
  t.equal(double.pbx.invites.length, 1, 'second target not tried');
  t.equal(double.sent({ method: 'ACK' }).length, 1, 'the server ACKed the 486 on the wire');
  t.ok(responses.some(([d, s]) => d === 'received' && s === 486), 'metrics hook saw the 486');
});

t.test('503 from the first target tries the next one', async (t) => {
  const { double, leg } = await setup(t);
  double.pbx.onInvite(async (inv) => {
    if (inv.requestUri.includes('first')) inv.reject(503);
    else await inv.answer(sdp(6002));
  });
  const result = await leg.invite(outbound(double, ['first', 'second']));
  t.equal(result.target, double.pbx.uri('second'));
  t.same(
    double.pbx.invites.map((i) => i.requestUri),
    [double.pbx.uri('first'), double.pbx.uri('second')],
  );
  await result.dialog.end();
});

t.test('per-target timeout: CANCEL, then the next target', async (t) => {
  const { double, leg } = await setup(t);
  double.pbx.onInvite(async (inv) => {
    if (inv.requestUri.includes('slow')) inv.ringing();
    else await inv.answer(sdp(6004));
  });
  const result = await leg.invite(outbound(double, ['slow', 'fast'], { targetTimeoutMs: 300 }));
  t.equal(result.target, double.pbx.uri('fast'));
  const [slow] = double.pbx.invites;
  t.equal(slow!.canceled, true, 'the slow target saw CANCEL');
  const cancels = double.sent({ method: 'CANCEL' });
  t.equal(cancels.length, 1);
  t.equal(cancels[0]!.branch, slow!.request.branch, 'CANCEL in the INVITE transaction (same branch)');
  t.equal(double.received({ status: 487 }).length, 1, '487 for the slow INVITE');
  await result.dialog.end();
});

t.test('all targets time out: SipError(408)', async (t) => {
  const { double, leg } = await setup(t);
  double.pbx.onInvite((inv) => inv.ringing());
  const err = await leg.invite(outbound(double, ['a', 'b'], { targetTimeoutMs: 200 })).catch((e: unknown) => e);
  t.equal((err as SipError).status, 408);
  t.equal(double.sent({ method: 'CANCEL' }).length, 2);
});

t.test('abort: CANCEL and SipError(487); the next target is not tried', async (t) => {
  const { double, leg } = await setup(t);
  double.pbx.onInvite((inv) => inv.ringing());
  const controller = new AbortController();
  const p = leg.invite(outbound(double, ['ringing', 'other'], { signal: controller.signal }));
  const inv = await double.pbx.nextInvite();
  controller.abort();
  const err = await p.catch((e: unknown) => e);
  t.ok(err instanceof SipError);
  t.equal((err as SipError).status, 487);
  await inv.whenCanceled;
  t.equal(double.pbx.invites.length, 1, 'other target not tried');
});

t.test('BYE from the PBX on an outbound call emits bye', async (t) => {
  const { double, leg } = await setup(t);
  double.pbx.onInvite(async (inv) => {
    await inv.answer(sdp(6006));
  });
  const { dialog } = await leg.invite(outbound(double, ['x']));
  const bye = dialog.waitFor('bye', AbortSignal.timeout(3000));
  await new Promise((r) => setTimeout(r, 20));
  const res = await double.pbx.dialogs[0]!.bye();
  await bye;
  t.equal(res.status, 200, 'BYE answered 200');
  t.equal(dialog.ended, true);
});

function waitInvite(leg: DrachtioSipLeg): Promise<IncomingCall> {
  return leg.waitFor('invite', AbortSignal.timeout(3000)).then(([call]) => call);
}

t.test('inbound INVITE from outside the ACL: 403 with Reason, no invite event', async (t) => {
  const { double, leg } = await setup(t, { acl: ['10.0.0.0/8'] });
  let invited = false;
  leg.on('invite', () => (invited = true));
  const call = double.pbx.call({ user: '1234', sdp: sdp(7000) });
  const final = await call.final;
  t.equal(final.status, 403);
  t.match(final.response.get('Reason')!, /^SIP;cause=403;text="source not allowed"$/);
  t.equal(invited, false);
});

t.test('inbound INVITE: target PSID from the Request-URI, page from the header, answer, BYE both ways', async (t) => {
  const { double, leg } = await setup(t);
  const incoming = waitInvite(leg);
  const call = double.pbx.call({ user: '24680', headers: { 'X-Messenger-Page-ID': '777' }, sdp: sdp(7002) });
  const inc = await incoming;
  t.equal(inc.psid, '24680');
  t.equal(inc.pageId, '777');
  t.equal(inc.sourceAddress, '127.0.0.1');
  t.match(inc.sdp, /m=audio 7002 /);
  t.ok(inc.sipCallId.length > 0);
  t.ok(double.sent({ status: 100 }).length >= 1, 'the server sent 100 Trying');
  inc.ringing();
  inc.ringing();
  await call.waitForProvisional(180);
  const dialog = await inc.answer(sdp(40002));
  const final = await call.final;
  t.equal(final.status, 200);
  t.match(final.sdp, /m=audio 40002 /, 'our SDP in the 200');
  t.equal(double.sent({ status: 180 }).length, 1, 'one 180');
  const bye = dialog.waitFor('bye', AbortSignal.timeout(3000));
  await final.dialog!.bye();
  await bye;
  t.equal(dialog.ended, true);

  // And the other way round on a second call: we hang up.
  const incoming2 = waitInvite(leg);
  const call2 = double.pbx.call({ user: '13579', sdp: sdp(7004) });
  const dialog2 = await (await incoming2).answer(sdp(40004));
  const final2 = await call2.final;
  await dialog2.end();
  const byeAtPbx = await final2.dialog!.waitForBye();
  t.equal(byeAtPbx.callId, final2.response.callId);
});

t.test('inbound INVITE: PSID from a header when so configured', async (t) => {
  const { double, leg } = await setup(t, {
    target: { psidFrom: 'header', psidHeader: 'X-Target-PSID', pageHeader: 'X-Target-Page' },
  });
  const incoming = waitInvite(leg);
  double.pbx.call({ user: 'ignored', headers: { 'X-Target-PSID': '9999', 'X-Target-Page': '42' }, sdp: sdp(7006) });
  const inc = await incoming;
  t.equal(inc.psid, '9999');
  t.equal(inc.pageId, '42');
  inc.reject(480, 'test over');
});

t.test('inbound reject: final response with a Reason header', async (t) => {
  const { double, leg } = await setup(t);
  leg.on('invite', (call) => call.reject(403, 'no calling permission'));
  const final = await double.pbx.call({ user: '1', sdp: sdp(7008) }).final;
  t.equal(final.status, 403);
  t.equal(final.response.get('Reason'), 'SIP;cause=403;text="no calling permission"');
});

t.test('inbound CANCEL: cancel event, 487 to the PBX, answer refused', async (t) => {
  const { double, leg } = await setup(t);
  const incoming = waitInvite(leg);
  const call = double.pbx.call({ user: '2', sdp: sdp(7010) });
  const inc = await incoming;
  inc.ringing();
  await call.waitForProvisional(180);
  const canceled = inc.waitFor('cancel', AbortSignal.timeout(3000));
  call.cancel();
  await canceled;
  t.equal(inc.canceled, true);
  const final = await call.final;
  t.equal(final.status, 487);
  const err = await inc.answer(sdp(1)).catch((e: unknown) => e);
  t.equal((err as SipError).status, 487);
});

t.test('inbound INVITE with nobody listening: 503', async (t) => {
  const { double } = await setup(t);
  const final = await double.pbx.call({ user: '3', sdp: sdp(7012) }).final;
  t.equal(final.status, 503);
});

t.test('inbound INVITE without SDP (late offer): 488', async (t) => {
  const { double, leg } = await setup(t);
  let invited = false;
  leg.on('invite', () => (invited = true));
  const final = await double.pbx.call({ user: '4' }).final;
  t.equal(final.status, 488);
  t.match(final.response.get('Reason')!, /late offer/);
  t.equal(invited, false);
});

t.test('digest auth: 401 challenge, then the INVITE with credentials passes', async (t) => {
  const { double, leg } = await setup(t, { digest: { realm: 'bridge', username: 'pbx', password: 'hunter2' } });
  const invites: IncomingCall[] = [];
  leg.on('invite', (c) => {
    invites.push(c);
    c.reject(486, 'busy');
  });
  const noAuth = await double.pbx.call({ user: '5', sdp: sdp(7014) }).final;
  t.equal(noAuth.status, 401);
  t.match(noAuth.response.get('WWW-Authenticate')!, /^Digest realm="bridge", nonce="[^"]+", algorithm=MD5, qop="auth"$/);
  t.equal(invites.length, 0);

  const wrong = await double.pbx.call({ user: '5', sdp: sdp(7014), auth: { username: 'pbx', password: 'nope' } }).final;
  t.equal(wrong.status, 401, 'wrong password challenged again');
  t.equal(invites.length, 0);

  const good = double.pbx.call({ user: '5', sdp: sdp(7014), auth: { username: 'pbx', password: 'hunter2' } });
  const final = await good.final;
  t.equal(good.invites.length, 2, 'second INVITE carried Authorization');
  t.match(good.invites[1]!.get('Authorization')!, /^Digest username="pbx"/);
  t.equal(final.status, 486, 'got through to the controller');
  t.equal(invites.length, 1);
});

t.test('OPTIONS: 200 with Allow and Accept', async (t) => {
  const { double } = await setup(t);
  const res = await double.pbx.options();
  t.equal(res.status, 200);
  t.match(res.get('Allow')!, /INVITE/);
  t.match(res.get('Allow')!, /INFO/);
  t.match(res.get('Accept')!, /application\/sdp/);
});

async function establishInbound(double: DrachtioDouble, leg: DrachtioSipLeg): Promise<{ dialog: SipDialog; pbx: import('../../helpers/drachtio/index.js').PbxDialog }> {
  const incoming = waitInvite(leg);
  const call = double.pbx.call({ user: '6', sdp: sdp(7016) });
  const dialog = await (await incoming).answer(sdp(40006));
  const final = await call.final;
  return { dialog, pbx: final.dialog! };
}

t.test('re-INVITE (hold): the handler gets the offer, the PBX gets our answer in a 200', async (t) => {
  const { double, leg } = await setup(t);
  const { dialog, pbx } = await establishInbound(double, leg);
  const offers: string[] = [];
  dialog.setReinviteHandler((offer) => {
    offers.push(offer);
    return sdp(40006, 'recvonly', 2);
  });
  const res = await pbx.reinvite(sdp(7016, 'sendonly', 2));
  t.equal(res.status, 200);
  t.equal(offers.length, 1);
  t.match(offers[0]!, /a=sendonly/);
  t.match(res.body, /a=recvonly/, 'our answer');
  t.equal(res.get('Content-Type'), 'application/sdp');

  // A refresh (same o= version) is answered with the current SDP, without bothering the handler.
  const refresh = await pbx.reinvite(sdp(7016, 'sendonly', 2));
  t.equal(refresh.status, 200);
  t.equal(offers.length, 1, 'handler not called for a refresh');
  t.match(refresh.body, /a=recvonly/);

  // A handler that throws refuses the offer with 488.
  dialog.setReinviteHandler(() => {
    throw new Error('no common codec');
  });
  const refused = await pbx.reinvite(sdp(7018, 'sendrecv', 3));
  t.equal(refused.status, 488);
  t.equal(dialog.ended, false, 'the call survives a refused offer');
  await dialog.end();
});

t.test('INFO application/dtmf-relay and application/dtmf -> dtmf events, 200', async (t) => {
  const { double, leg } = await setup(t);
  const { dialog, pbx } = await establishInbound(double, leg);
  const digits: Array<{ digit: string; durationMs: number }> = [];
  dialog.on('dtmf', (e) => digits.push(e));
  const r1 = await pbx.info('application/dtmf-relay', 'Signal=5\r\nDuration=160\r\n');
  const r2 = await pbx.info('application/dtmf', '#');
  const r3 = await pbx.info('application/dtmf-relay', 'Duration=100\r\n');
  t.equal(r1.status, 200);
  t.equal(r2.status, 200);
  t.equal(r3.status, 400, 'no digit: 400');
  t.same(digits, [
    { digit: '5', durationMs: 160 },
    { digit: '#', durationMs: 250 },
  ]);
  await dialog.end();
});

t.test('session timer: Session-Expires from the PBX is honoured in the 200 and refreshes are answered', async (t) => {
  const { double, leg } = await setup(t);
  const incoming = waitInvite(leg);
  const call = double.pbx.call({
    user: '7',
    sdp: sdp(7020),
    headers: { 'Session-Expires': '1800;refresher=uac', Supported: 'timer', 'Min-SE': '90' },
  });
  const dialog = await (await incoming).answer(sdp(40008));
  const final = await call.final;
  t.equal(final.response.get('Session-Expires'), '1800;refresher=uac');
  t.equal(final.response.get('Require'), 'timer');
  const update = await final.dialog!.update({ headers: { 'Session-Expires': '1800;refresher=uac' } });
  t.equal(update.status, 200, 'UPDATE refresh answered');
  t.equal(update.get('Session-Expires'), '1800;refresher=uac');
  t.equal(update.body, '', 'no SDP in the answer to an UPDATE without SDP');
  const small = await double.pbx.call({ user: '7', sdp: sdp(7022), headers: { 'Session-Expires': '30' } }).final;
  t.equal(small.status, 422);
  t.equal(small.response.get('Min-SE'), '90');
  await dialog.end();
});

t.test('connection to drachtio-server lost and back: connected flag, events, reconnect, calls work again', async (t) => {
  const { double, leg, connections } = await setup(t);
  t.same(connections, [false, true], 'the metrics saw the leg start disconnected, then connect');
  const events: boolean[] = [];
  leg.on('connection', (up) => events.push(up));
  await double.stop();
  await leg.waitFor('connection', AbortSignal.timeout(3000));
  t.equal(leg.connected, false);
  const err = await leg.invite(outbound(double, ['x'])).catch((e: unknown) => e);
  t.equal((err as SipError).status, 503, 'INVITE while disconnected fails at once with 503');
  await double.restart();
  await leg.whenConnected(AbortSignal.timeout(5000));
  t.same(events, [false, true]);
  t.same(connections, [false, true, false, true], 'and the loss and the reconnect');
  double.pbx.onInvite(async (inv) => {
    await inv.answer(sdp(6010));
  });
  const result = await leg.invite(outbound(double, ['again']));
  t.equal(result.status, 200, 'calls work after the reconnect');
  await result.dialog.end();
});

t.test('close() is idempotent and fails pending INVITEs with 503', async (t) => {
  const { double, leg } = await setup(t);
  double.pbx.onInvite((inv) => inv.ringing());
  const p = leg.invite(outbound(double, ['x']));
  await double.pbx.nextInvite();
  leg.close();
  leg.close();
  const err = await p.catch((e: unknown) => e);
  t.equal((err as SipError).status, 503);
  t.equal(leg.connected, false);
  t.equal(leg.closed, true);
});

t.test('drachtio-server not up at start: the leg keeps trying and connects when it appears', async (t) => {
  const double = await startDrachtioDouble({ secret: 's3cret' });
  await double.stop();
  const leg = new DrachtioSipLeg({
    host: '127.0.0.1',
    port: double.port,
    secret: 's3cret',
    acl: ['127.0.0.1/32'],
    target: { psidFrom: 'request_uri', psidHeader: 'X-PSID', pageHeader: 'X-Page' },
    fromUser: 'm',
    log,
    reconnectMaxDelayMs: 200,
  });
  t.teardown(async () => {
    leg.close();
    await double.close();
  });
  await new Promise((r) => setTimeout(r, 300));
  t.equal(leg.connected, false);
  await double.restart();
  await leg.whenConnected(AbortSignal.timeout(5000));
  t.equal(leg.connected, true);
});

t.test('close() while reconnecting stops the retries', async (t) => {
  const { double, leg } = await setup(t);
  await double.stop();
  await leg.waitFor('connection', AbortSignal.timeout(3000));
  leg.close();
  await double.restart();
  await new Promise((r) => setTimeout(r, 600));
  t.equal(double.server.clientCount, 0, 'no connection after close');
  t.equal(leg.connected, false);
});

t.test('ACL on IPv6 sources: ::1 allowed by ::1/128, 192.0.2.7 refused', async (t) => {
  const { double, leg } = await setup(t, { acl: ['::1/128'] });
  const sources: string[] = [];
  leg.on('invite', (call) => {
    sources.push(call.sourceAddress);
    call.reject(486, 'busy');
  });
  const v6 = await double.pbx.call({ user: '1', sdp: sdp(7030), source: { address: '::1', port: 5070 } }).final;
  t.equal(v6.status, 486, 'reached the controller');
  const v4 = await double.pbx.call({ user: '1', sdp: sdp(7030), source: { address: '192.0.2.7', port: 5070 } }).final;
  t.equal(v4.status, 403);
  t.same(sources, ['::1']);
});

t.test('a 200 that crosses our CANCEL is hung up with BYE and the attempt still fails', async (t) => {
  const { double, leg } = await setup(t);
  double.pbx.onInvite((inv) => inv.ringing());
  // The PBX answers at the moment our CANCEL reaches it, so its 200 is on the way back when srf gets there.
  const pbx = double.pbx;
  const original = pbx.fromServer.bind(pbx);
  pbx.fromServer = (msg, from) => {
    if (msg.kind === 'request' && msg.method === 'CANCEL') {
      const inv = pbx.invites.find((i) => i.request.callId === msg.callId)!;
      void inv.answer(sdp(6020)).catch(() => undefined);
    }
    original(msg, from);
  };
  const err = await leg.invite(outbound(double, ['late'], { targetTimeoutMs: 200 })).catch((e: unknown) => e);
  t.equal((err as SipError).status, 408, 'the timeout is what the caller sees');
  const dialog = await (async () => {
    for (let i = 0; i < 100 && pbx.dialogs.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    return pbx.dialogs[0]!;
  })();
  const bye = await dialog.waitForBye(3000);
  t.equal(bye.callId, pbx.invites[0]!.request.callId, 'BYE for the call that was answered late');
});

t.test('whenConnected() rejects when the leg is closed while waiting', async (t) => {
  const double = await startDrachtioDouble({ secret: 's3cret' });
  await double.stop();
  const leg = new DrachtioSipLeg({
    host: '127.0.0.1',
    port: double.port,
    secret: 's3cret',
    acl: [],
    target: { psidFrom: 'request_uri', psidHeader: 'a', pageHeader: 'b' },
    fromUser: 'm',
    log,
  });
  const waiting = leg.whenConnected();
  setTimeout(() => leg.close(), 50);
  await t.rejects(waiting, { code: 'INVALID_STATE' });
  await double.close();
});

t.test('a wrong secret is logged once at error level although srf keeps reconnecting', async (t) => {
  const double = await startDrachtioDouble({ secret: 's3cret' });
  const lines: Array<{ level: number; msg: string }> = [];
  const captured = pino({ level: 'debug' }, { write: (s: string) => lines.push(JSON.parse(s) as { level: number; msg: string }) });
  const leg = new DrachtioSipLeg({
    host: '127.0.0.1',
    port: double.port,
    secret: 'not-the-secret',
    acl: ['127.0.0.1/32'],
    target: { psidFrom: 'request_uri', psidHeader: 'X-PSID', pageHeader: 'X-Page' },
    fromUser: 'm',
    log: captured,
  });
  t.teardown(async () => {
    leg.close();
    await double.close();
  });
  const refusals = (): Array<{ level: number; msg: string }> => lines.filter((l) => /refused our credentials/.test(l.msg));
  const deadline = Date.now() + 5000;
  while (refusals().length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  t.ok(refusals().length >= 3, `srf retried (${refusals().length} refusals)`);
  t.equal(refusals().filter((l) => l.level >= 50).length, 1, 'one error line');
  t.equal(leg.connected, false);
});
