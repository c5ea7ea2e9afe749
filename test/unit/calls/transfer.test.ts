import t from 'tap';
import type { CallSession } from '../../../src/calls/CallSession.js';
import {
  FakeDialog,
  FakeIncoming,
  FakeSip,
  connectEvent as connect,
  fakeController as setup,
  pollUntil as until,
  terminateEvent as terminate,
  deferred,
} from '../../helpers/callFakes.js';

/** The INVITE the SIP port got as number `index` (0 = the call's first). */
const inviteNo = (sip: FakeSip, index: number) => until(() => sip.invites[index]);

/** A consumer-initiated call answered by agent A and bridged. */
async function bridgedConsumerCall(ctx: ReturnType<typeof setup>): Promise<{ call: CallSession; agentA: FakeDialog }> {
  ctx.controller.handleMetaEvent(connect());
  const invite = await ctx.sip.inviteArrived.promise;
  const agentA = invite.answer('v=0 agent-a PCMU');
  const call = await until(() => ctx.controller.registry.byMetaCallId('c1'));
  await until(() => call.state === 'active');
  return { call, agentA };
}

t.test('blind transfer: 202 + NOTIFY 100, INVITE to the target with caller context, its 200 moves media, NOTIFY 200, BYE to A', async (t) => {
  const ctx = setup();
  const { sip, graph, media, metrics, controller } = ctx;
  const { call, agentA } = await bridgedConsumerCall(ctx);
  const callMedia = media.created[0]!;

  const refer = agentA.refer('sip:agent-b@10.0.0.7', { referredBy: '<sip:agent-a@10.0.0.5>' });
  t.same(refer.response, { status: 202, reason: 'Accepted' });
  t.same(refer.notifies, ['SIP/2.0 100 Trying']);
  t.equal(call.state, 'transferring');

  const toB = await inviteNo(sip, 1);
  t.same(toB.options.targets, ['sip:agent-b@10.0.0.7']);
  t.same(toB.options.headers, {
    'Referred-By': '<sip:agent-a@10.0.0.5>',
    'X-Messenger-PSID': '555',
    'X-Messenger-Page-ID': '100',
    'X-Messenger-Call-ID': 'c1',
  });
  t.equal(toB.options.sdp, 'v=0 pbx-offer', 'offer from the call media');
  t.equal(toB.options.targetTimeoutMs, 1000, "the route's target timeout");
  t.equal(agentA.byeSent, 0, 'A still up while B rings');

  const agentB = toB.answer('v=0 agent-b PCMA');
  await refer.finalNotified.promise;
  t.same(refer.notifies, ['SIP/2.0 100 Trying', 'SIP/2.0 200 OK']);
  await until(() => agentA.byeSent === 1);
  t.same(callMedia.answers, ['v=0 agent-a PCMU', 'v=0 agent-b PCMA'], "B's answer applied to the media");
  t.equal(callMedia.pbxCodec, 'PCMA');
  t.equal(call.state, 'active');
  t.same(metrics.transfers, ['succeeded']);

  // The new dialog is the call's: DTMF, re-INVITE, BYE work on it; the old one no longer counts.
  agentB.safeEmit('dtmf', { digit: '7', durationMs: 100 });
  agentA.safeEmit('dtmf', { digit: '1', durationMs: 100 });
  t.same(callMedia.dtmfToMessenger, [{ digit: '7', durationMs: 100 }]);
  t.equal(agentB.reinvite?.('v=0 hold'), 'v=0 pbx-answer');
  t.throws(() => agentA.reinvite?.('v=0 late'), /replaced/, "a re-INVITE on A's old dialog is refused");
  agentB.remoteBye();
  await call.done;
  t.same(graph.actions(), ['accept', 'terminate'], "B's BYE ends the call toward Meta");
  t.same(metrics.ended, [{ direction: 'user_initiated', outcome: 'completed' }]);
  t.equal(controller.registry.size, 0);
});

t.test('attended transfer: Refer-To headers (Replaces) go on the new INVITE', async (t) => {
  const ctx = setup();
  const { agentA } = await bridgedConsumerCall(ctx);
  agentA.refer('sip:agent-b@10.0.0.7', { headers: { Replaces: 'abc@10.0.0.7;to-tag=1;from-tag=2' } });
  const toB = await inviteNo(ctx.sip, 1);
  t.equal(toB.options.headers['Replaces'], 'abc@10.0.0.7;to-tag=1;from-tag=2');
  t.equal(toB.options.headers['X-Messenger-PSID'], '555');
  await ctx.controller.close();
});

t.test('failed transfer: 486 from the target is NOTIFYed, the call stays up with A and the media untouched', async (t) => {
  const ctx = setup();
  const { sip, media, metrics, controller } = ctx;
  const { call, agentA } = await bridgedConsumerCall(ctx);
  const callMedia = media.created[0]!;
  const refer = agentA.refer('sip:agent-b@10.0.0.7');
  const toB = await inviteNo(sip, 1);
  toB.fail(486);
  await refer.finalNotified.promise;
  t.same(refer.notifies, ['SIP/2.0 100 Trying', 'SIP/2.0 486 failed']);
  t.equal(call.state, 'active');
  t.equal(agentA.byeSent, 0, 'no BYE to A');
  t.same(callMedia.answers, ['v=0 agent-a PCMU'], 'media still aimed at A');
  t.same(metrics.transfers, ['failed']);
  t.notOk(callMedia.closed);

  // A can try again, and A's BYE still ends the call.
  const again = agentA.refer('sip:agent-c@10.0.0.7');
  t.same(again.response, { status: 202, reason: 'Accepted' });
  (await inviteNo(sip, 2)).fail(480);
  await again.finalNotified.promise;
  agentA.remoteBye();
  await call.done;
  t.equal(controller.registry.size, 0);
  t.same(metrics.transfers, ['failed', 'failed']);
});

t.test('a target answering with an unusable SDP is hung up and the failure NOTIFYed (488)', async (t) => {
  const ctx = setup();
  const { agentA, call } = await bridgedConsumerCall(ctx);
  const refer = agentA.refer('sip:agent-b@10.0.0.7');
  const agentB = (await inviteNo(ctx.sip, 1)).answer('v=0 no-codec');
  await refer.finalNotified.promise;
  t.same(refer.notifies.at(-1), 'SIP/2.0 488 Not Acceptable Here');
  t.equal(agentB.byeSent, 1, 'BYE to B');
  t.equal(agentA.byeSent, 0);
  t.equal(call.state, 'active');
  await ctx.controller.close();
});

t.test('second REFER while one is in progress -> 491; REFER before the call is bridged -> 491', async (t) => {
  const ctx = setup();
  const { agentA } = await bridgedConsumerCall(ctx);
  agentA.refer('sip:agent-b@10.0.0.7');
  await inviteNo(ctx.sip, 1);
  const second = agentA.refer('sip:agent-c@10.0.0.7');
  t.equal(second.response?.status, 491);
  t.same(second.notifies, [], 'no NOTIFY for a refused REFER');
  t.equal(ctx.sip.invites.length, 2, 'no INVITE for it');
  t.same(ctx.metrics.transfers, ['refused']);
  await ctx.controller.close();

  const early = setup();
  early.controller.handleMetaEvent(connect());
  const invite = await early.sip.inviteArrived.promise;
  const acceptHeld = deferred<void>();
  const accept = early.graph.accept.bind(early.graph);
  early.graph.accept = async (pageId, callId) => {
    await acceptHeld.promise;
    return accept(pageId, callId);
  };
  const dialog = invite.answer();
  const call = await until(() => early.controller.registry.byMetaCallId('c1'));
  await until(() => call.state === 'accepting');
  t.equal(dialog.refer('sip:agent-b@10.0.0.7').response?.status, 491, 'not bridged yet');
  t.equal(early.sip.invites.length, 1, 'no INVITE for it');
  acceptHeld.resolve();
  await until(() => call.state === 'active');
  await early.controller.close();
});

t.test('transfers disabled -> 403; a target outside allowed_hosts -> 403', async (t) => {
  const off = setup({ transfer: { enabled: false, targetTimeoutMs: 5000 } });
  const a = await bridgedConsumerCall(off);
  const refused = a.agentA.refer('sip:agent-b@10.0.0.7');
  t.equal(refused.response?.status, 403);
  t.equal(off.sip.invites.length, 1, 'no INVITE sent');
  await off.controller.close();

  const listed = setup({ transfer: { enabled: true, allowedHosts: ['10.0.0.7', 'PBX.example.com'], targetTimeoutMs: 5000 } });
  const b = await bridgedConsumerCall(listed);
  t.equal(b.agentA.refer('sip:x@evil.example.net').response?.status, 403, 'host not listed');
  t.equal(b.agentA.refer('sips:agent-b@pbx.example.com:5061').response?.status, 202, 'listed host (any case, any port)');
  await listed.controller.close();
});

t.test('Meta hangs up during the transfer: the pending INVITE is cancelled, A gets BYE, nothing left', async (t) => {
  const ctx = setup();
  const { sip, graph, media, legs, metrics, controller } = ctx;
  const { call, agentA } = await bridgedConsumerCall(ctx);
  agentA.refer('sip:agent-b@10.0.0.7');
  const toB = await inviteNo(sip, 1);
  controller.handleMetaEvent(terminate('c1'));
  await call.done;
  t.ok(toB.canceled, 'INVITE to B cancelled');
  t.equal(agentA.byeSent, 1, 'BYE to A');
  t.ok(media.created[0]!.closed, 'media closed');
  t.ok(legs.created[0]!.closed, 'leg closed');
  t.equal(controller.registry.size, 0);
  t.same(metrics.transfers, ['canceled']);
  t.same(graph.actions(), ['accept']);
});

t.test('A hangs up during the transfer: the call waits for B; B answering keeps it, B failing ends it', async (t) => {
  const ctx = setup();
  const { sip, graph, metrics } = ctx;
  const { call, agentA } = await bridgedConsumerCall(ctx);
  const refer = agentA.refer('sip:agent-b@10.0.0.7');
  const toB = await inviteNo(sip, 1);
  agentA.remoteBye();
  await new Promise((r) => setTimeout(r, 10));
  t.equal(call.state, 'transferring', "A's BYE does not end the call toward Meta");
  t.same(graph.actions(), ['accept']);
  const agentB = toB.answer('v=0 agent-b');
  await refer.finalNotified.promise;
  t.same(refer.notifies, ['SIP/2.0 100 Trying'], 'no NOTIFY on an ended dialog');
  t.equal(agentA.byeSent, 0, 'no BYE to a dialog A already ended');
  t.equal(call.state, 'active');
  agentB.remoteBye();
  await call.done;
  t.same(metrics.transfers, ['succeeded']);

  const ctx2 = setup();
  const second = await bridgedConsumerCall(ctx2);
  second.agentA.refer('sip:agent-b@10.0.0.7');
  const toB2 = await inviteNo(ctx2.sip, 1);
  second.agentA.remoteBye();
  toB2.fail(486);
  await second.call.done;
  t.same(ctx2.graph.actions(), ['accept', 'terminate'], 'nobody left on the PBX side: Meta terminate');
});

t.test('business-initiated: a transfer uses the transfer timeout and carries the Meta call id', async (t) => {
  const { graph, controller, sip, media } = setup({ transfer: { enabled: true, targetTimeoutMs: 4321 } });
  const incoming = new FakeIncoming('555', '100');
  sip.safeEmit('invite', incoming);
  const call = await until(() => controller.registry.byMetaCallId('meta-b-1'));
  controller.handleMetaEvent({ kind: 'call_status', pageId: '100', callId: 'meta-b-1', timestamp: 2, status: 'accepted' });
  await incoming.final.promise;
  await until(() => call.state === 'active');
  const refer = incoming.dialog!.refer('sip:queue@10.0.0.7');
  const toQueue = await inviteNo(sip, 0);
  t.equal(toQueue.options.targetTimeoutMs, 4321);
  t.same(toQueue.options.headers, { 'X-Messenger-PSID': '555', 'X-Messenger-Page-ID': '100', 'X-Messenger-Call-ID': 'meta-b-1' });
  toQueue.answer('v=0 queue');
  await refer.finalNotified.promise;
  await until(() => incoming.dialog!.byeSent === 1);
  t.same(media.created[0]!.answers, ['v=0 queue']);
  controller.handleMetaEvent(terminate('meta-b-1'));
  await call.done;
  t.same(graph.actions(), ['permission', 'connect']);
});
