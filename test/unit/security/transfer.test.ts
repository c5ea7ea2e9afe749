/**
 * REFER as a relay: a Refer-To outside the PBX (the default used to be "any host"), one that passes an allow-list by
 * host while `maddr` or `transport` sends it elsewhere, headers embedded in the Refer-To that would go out on the
 * bridge's INVITE (caller-ID spoofing, credentials toward a trunk), and in-dialog REFER / re-INVITE / UPDATE / INFO
 * from a source that is not the dialog's peer. Each is refused, logged and counted; no INVITE goes out.
 */
import t from 'tap';
import { pino } from 'pino';
import { checkTransferTarget, defaultTransferHosts } from '../../../src/calls/transferPolicy.js';
import { SrfSipDialog } from '../../../src/sip/SrfSipDialog.js';
import type { SrfDialog, SrfRequest, SrfResponse } from '../../../src/sip/srfTypes.js';
import type { TransferRequest } from '../../../src/calls/ports.js';
import { connectEvent, fakeController, pollUntil } from '../../helpers/callFakes.js';
import { FakeSrfDialog } from '../../helpers/srfDialogFake.js';

async function bridged(overrides: Parameters<typeof fakeController>[0] = {}) {
  const ctx = fakeController(overrides);
  ctx.controller.handleMetaEvent(connectEvent());
  const invite = await ctx.sip.inviteArrived.promise;
  const agentA = invite.answer('v=0 agent-a PCMU');
  const call = await pollUntil(() => ctx.controller.registry.byMetaCallId('c1'));
  await pollUntil(() => call.state === 'active');
  return { ...ctx, agentA, call };
}

t.test('by default a REFER may only go to the route\'s target hosts and the PBX the dialog is with', async (t) => {
  const ctx = await bridged();
  t.teardown(() => ctx.controller.close());
  const out = ctx.agentA.refer('sip:+4420790000@trunk.attacker.example');
  t.same(out.response, { status: 403, reason: 'transfer target not allowed' }, 'an outside host is refused');
  t.equal(ctx.sip.invites.length, 1, 'no INVITE went out');
  t.same(ctx.metrics.transfers, ['refused']);
  const route = ctx.agentA.refer('sip:queue@127.0.0.1:5080');
  t.equal(route.response?.status, 202, "a host of the route's targets is allowed");
});

t.test('maddr, transport and other routing parameters are refused, even on an allowed host', async (t) => {
  const ctx = await bridged({ transfer: { enabled: true, allowedHosts: ['10.0.0.5'], targetTimeoutMs: 5000 } });
  t.teardown(() => ctx.controller.close());
  for (const target of ['sip:1000@10.0.0.5;maddr=198.51.100.7', 'sip:1000@10.0.0.5;transport=tcp', 'sip:1000@10.0.0.5;lr', 'sip:1000@10.0.0.5;user=phone;MADDR=198.51.100.7']) {
    const refer = ctx.agentA.refer(target);
    t.equal(refer.response?.status, 403, `${target}: 403`);
    t.match(refer.response?.reason ?? '', /URI parameter '(maddr|transport|lr)' not allowed/);
  }
  t.equal(ctx.sip.invites.length, 1, 'no INVITE went out');
  t.equal(ctx.agentA.refer('sip:1000@10.0.0.5;user=phone').response?.status, 202, 'user=phone is fine');
});

t.test('only Replaces (and Require: replaces) may be embedded in a Refer-To', async (t) => {
  const ctx = await bridged();
  t.teardown(() => ctx.controller.close());
  for (const headers of <Array<Record<string, string>>>[
    { 'P-Asserted-Identity': '<sip:+18005551234@trunk>' },
    { 'Proxy-Authorization': 'Digest username="pbx"' },
    { Replaces: 'x@y;to-tag=1;from-tag=2', 'Remote-Party-ID': '<sip:911@x>' },
    { Require: 'replaces, 100rel' },
  ]) {
    const refer = ctx.agentA.refer('sip:agent-b@10.0.0.7', { headers });
    t.equal(refer.response?.status, 403, `${Object.keys(headers).join(', ')}: 403`);
    t.match(refer.response?.reason ?? '', /may not be embedded/);
  }
  t.equal(ctx.sip.invites.length, 1, 'no INVITE went out');
  const attended = ctx.agentA.refer('sip:agent-b@10.0.0.7', { headers: { Replaces: 'x@y;to-tag=1;from-tag=2', Require: 'replaces' } });
  t.equal(attended.response?.status, 202, 'an attended transfer still works');
  const toB = await pollUntil(() => ctx.sip.invites[1]);
  t.same(Object.keys(toB.options.headers).filter((h) => !h.startsWith('X-Messenger')).sort(), ['Replaces', 'Require']);
});

t.test('transferPolicy: defaults and host matching', async (t) => {
  t.same(defaultTransferHosts(['sip:a@10.0.0.5:5080', 'sips:b@[2001:DB8::1]:5061', 'sip:c@PBX.example.com'], '::ffff:10.0.0.9'), [
    '10.0.0.5',
    '2001:db8::1',
    'pbx.example.com',
    '10.0.0.9',
  ]);
  t.same(checkTransferTarget('sip:b@[2001:db8::1]:5061', {}, ['2001:db8::1']), { ok: true });
  t.equal(checkTransferTarget('sip:b@10.0.0.55', {}, ['10.0.0.5']).ok, false, 'no prefix match');
  t.equal(checkTransferTarget('tel:+1555', {}, ['10.0.0.5']).ok, false);
});

function inDialog(fake: FakeSrfDialog, event: string, method: string, source: string, headers: Record<string, string>, body = ''): Promise<number> {
  return new Promise((resolve) => {
    const lower = new Map(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
    const req = { method, body, source_address: source, get: (n: string) => lower.get(n.toLowerCase()), has: (n: string) => lower.has(n.toLowerCase()) };
    const res = { send: (status: number) => resolve(status) };
    fake.emit(event, req as unknown as SrfRequest, res as unknown as SrfResponse);
  });
}

t.test("in-dialog REFER, re-INVITE, UPDATE and INFO from a source that is not the dialog's peer nor in the ACL: 403", async (t) => {
  const lines: Array<Record<string, unknown>> = [];
  const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
  const fake = new FakeSrfDialog();
  const dialog = new SrfSipDialog({ dialog: fake as unknown as SrfDialog, log, peerAddress: '10.0.0.5', sourceAllowed: (a) => a === '10.0.0.6' });
  t.teardown(() => dialog.end());
  const transfers: TransferRequest[] = [];
  const offers: string[] = [];
  const digits: string[] = [];
  dialog.setTransferHandler((r) => {
    transfers.push(r);
    r.accept();
  });
  dialog.setReinviteHandler((offer) => (offers.push(offer), 'v=0 answer'));
  dialog.on('dtmf', (e) => void digits.push(e.digit));
  const offer = 'v=0\r\no=pbx 9 9 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n';
  const info = { 'Content-Type': 'application/dtmf-relay' };

  const attacker = '198.51.100.7';
  t.equal(await inDialog(fake, 'refer', 'REFER', attacker, { 'Refer-To': '<sip:x@10.0.0.7>' }), 403, 'REFER from another source');
  t.equal(await inDialog(fake, 'modify', 'INVITE', attacker, { 'Content-Type': 'application/sdp' }, offer), 403, 're-INVITE (media hijack)');
  t.equal(await inDialog(fake, 'update', 'UPDATE', attacker, { 'Content-Type': 'application/sdp' }, offer), 403, 'UPDATE');
  t.equal(await inDialog(fake, 'info', 'INFO', attacker, info, 'Signal=9\r\nDuration=100\r\n'), 403, 'INFO (digit injection)');
  t.same([transfers.length, offers.length, digits.length], [0, 0, 0], 'none reached the call');
  t.equal(lines.filter((l) => /not the dialog's peer refused/.test(String(l.msg))).length, 4, 'each logged');

  t.equal(await inDialog(fake, 'refer', 'REFER', '10.0.0.5', { 'Refer-To': '<sip:x@10.0.0.7>' }), 202, 'the peer may REFER');
  t.equal(await inDialog(fake, 'info', 'INFO', '10.0.0.6', info, 'Signal=9\r\nDuration=100\r\n'), 200, 'a source in the ACL may send INFO');
  t.same(digits, ['9']);
});
