/**
 * Transfers through the whole bridge with the drachtio double: agent A answers a Messenger call, presses transfer
 * (REFER), and the bridge calls agent B. Tones both ways show where the audio goes before and after.
 */
import t, { type Test } from 'tap';
import { createRtpPeer, type RtpPeer } from '../helpers/rtpPeer.js';
import { analyzeTail } from '../helpers/tone.js';
import { PAGE_ID, PSID, sdpTarget, sleep, startHarness, until, type Harness } from '../helpers/bridgeHarness.js';
import type { PbxDialog, PbxInvite, SipMsg } from '../../src/simulator/drachtio/index.js';
import type { MetaMediaSession } from '../../src/simulator/media/MetaMediaServer.js';
import { udpHandles } from '../helpers/handles.js';

/** mediasoup routers alive in the bridge's workers (one per call). */
async function routers(h: Harness): Promise<number> {
  const { workers } = await h.daemon.media.inspect();
  return workers.reduce((n, w) => n + w.routers, 0);
}

const TONE_META = 1000;
const TONE_A = 600;
const TONE_B = 800;

async function tonesBothWays(t: Test, peer: RtpPeer, peerHz: number, session: MetaMediaSession, label: string): Promise<void> {
  peer.clearReceived();
  session.clearReceived();
  await sleep(1200);
  const atPbx = analyzeTail(peer.receivedPcm(), peer.sampleRate, TONE_META, 1);
  const atMeta = analyzeTail(session.receivedPcm(), 48000, peerHz, 1);
  t.ok(atPbx.detected, `${label}: Meta -> PBX tone (${JSON.stringify(atPbx)})`);
  t.ok(atMeta.detected, `${label}: PBX -> Meta ${peerHz} Hz (${JSON.stringify(atMeta)})`);
}

interface Agents {
  peerA: RtpPeer;
  peerB: RtpPeer;
  dialogA: Promise<PbxDialog>;
  inviteB: Promise<PbxInvite>;
}

/**
 * The PBX side: `support` (the route's target) is agent A, answering with PCMU; `agent-b` is agent B, which
 * answers with its own codec, or as `answerB` says.
 */
async function agents(t: Test, h: Harness, codecB: 'opus' | 'PCMA', answerB?: (invite: PbxInvite) => void): Promise<Agents> {
  const peerA = await createRtpPeer({ codec: 'PCMU' });
  const peerB = await createRtpPeer({ codec: codecB });
  t.teardown(() => {
    peerA.close();
    peerB.close();
  });
  let resolveA!: (d: PbxDialog) => void;
  let resolveB!: (i: PbxInvite) => void;
  const dialogA = new Promise<PbxDialog>((r) => (resolveA = r));
  const inviteB = new Promise<PbxInvite>((r) => (resolveB = r));
  h.drachtio.pbx.onInvite(async (invite) => {
    const target = sdpTarget(invite.sdp);
    if (invite.requestUri.includes('agent-b')) {
      resolveB(invite);
      if (answerB) return answerB(invite);
      peerB.setRemote(target.address, target.port);
      await invite.answer(peerB.sdp());
      peerB.startTone(TONE_B);
      return;
    }
    peerA.setRemote(target.address, target.port);
    resolveA(await invite.answer(peerA.sdp()));
    peerA.startTone(TONE_A);
  });
  return { peerA, peerB, dialogA, inviteB };
}

async function bridgedCall(h: Harness): Promise<{ callId: string; session: MetaMediaSession }> {
  const callId = h.sim.placeCall({ pageId: PAGE_ID, psid: PSID });
  const session = await h.sim.waitForSession(callId);
  await session.whenConnected();
  session.startTone(TONE_META);
  await until(() => h.daemon.controller.registry.all().some((c) => c.state === 'active'), 5000, 'call bridged');
  return { callId, session };
}

const notifies = (dialog: PbxDialog): SipMsg[] => dialog.notifies;

const refer = (dialog: PbxDialog, target: string): Promise<SipMsg> => dialog.refer(target, { 'Referred-By': '<sip:agent-a@127.0.0.1:5080>' });

t.test('blind transfer A (PCMU) -> B (Opus): 202, NOTIFY 100 then 200, BYE to A; tones reach B and Meta', async (t) => {
  const h = await startHarness({ codecs: ['PCMU', 'opus'], captureLogs: true });
  t.teardown(() => h.close());
  const { peerA, peerB, dialogA, inviteB } = await agents(t, h, 'opus');
  const { session } = await bridgedCall(h);
  const a = await dialogA;
  await tonesBothWays(t, peerA, TONE_A, session, 'with A');

  const accepted = await refer(a, h.drachtio.pbx.uri('agent-b'));
  t.equal(accepted.status, 202, 'REFER accepted');
  const b = await inviteB;
  t.equal(b.requestUri, h.drachtio.pbx.uri('agent-b'));
  t.equal(b.header('X-Messenger-PSID'), PSID, 'caller context on the INVITE to B');
  t.equal(b.header('X-Messenger-Page-ID'), PAGE_ID);
  t.ok(b.header('X-Messenger-Call-ID'));
  t.equal(b.header('Referred-By'), '<sip:agent-a@127.0.0.1:5080>');

  await until(() => notifies(a).length >= 2, 5000, 'two NOTIFYs at A');
  const [trying, ok] = notifies(a);
  t.equal(trying!.get('event'), 'refer');
  t.equal(trying!.get('subscription-state'), 'active;expires=60');
  t.equal(trying!.get('content-type'), 'message/sipfrag;version=2.0');
  t.match(trying!.body, /^SIP\/2\.0 100 Trying/);
  t.equal(ok!.get('subscription-state'), 'terminated;reason=noresource');
  t.match(ok!.body, /^SIP\/2\.0 200 OK/);
  await a.waitForBye();
  t.ok(a.requests.findIndex((r) => r.method === 'BYE') > a.requests.indexOf(ok!), 'BYE to A after the final NOTIFY');

  await sleep(200);
  await tonesBothWays(t, peerB, TONE_B, session, 'with B (Opus, passed through)');
  t.equal(peerB.decodeErrors, 0, 'B never got a PCMU payload under its Opus payload type');
  peerA.clearReceived();
  await sleep(300);
  t.ok(peerA.packetsReceived === 0 || peerA.receivedPcm().length === 0, 'A hears nothing any more');
  const call = h.daemon.controller.registry.all()[0]!;
  t.equal(call.state, 'active');
  t.ok(h.logs().some((l) => l.msg === 'transfer succeeded'), 'outcome logged');

  // B hangs up: the call ends toward Meta as before.
  const dialogB = h.drachtio.pbx.dialogs.find((d) => d.callId === b.request.callId)!;
  await dialogB.bye();
  await until(() => h.daemon.controller.registry.size === 0, 3000, 'released');
  const summary = h.logs().find((l) => l.msg === 'call summary')?.summary as Record<string, unknown>;
  t.match(summary?.transfers, { succeeded: 1, failed: 0 }, 'the summary line counts the transfer');
  t.match(await h.metrics.text(), /msb_transfers_total\{result="succeeded"\} 1/);
});

t.test('failed transfer: B busy -> NOTIFY 486, the call stays with A and the tones keep flowing; Meta hang-up BYEs A', async (t) => {
  const h = await startHarness({ codecs: ['PCMU', 'PCMA'], captureLogs: true });
  t.teardown(() => h.close());
  const { peerA, dialogA, inviteB } = await agents(t, h, 'PCMA', (invite) => invite.reject(486));
  const { callId, session } = await bridgedCall(h);
  const a = await dialogA;
  await tonesBothWays(t, peerA, TONE_A, session, 'before the transfer');
  t.equal((await refer(a, h.drachtio.pbx.uri('agent-b'))).status, 202);
  await inviteB;
  await until(() => notifies(a).length >= 2, 5000, 'two NOTIFYs at A');
  const final = notifies(a)[1]!;
  t.match(final.body, /^SIP\/2\.0 486 Busy Here/);
  t.equal(final.get('subscription-state'), 'terminated;reason=noresource');
  t.notOk(a.requests.some((r) => r.method === 'BYE'), 'no BYE to A');
  await tonesBothWays(t, peerA, TONE_A, session, 'after the failed transfer');

  h.sim.hangUp(callId);
  await a.waitForBye();
  await until(() => h.daemon.controller.registry.size === 0, 3000, 'released');
});

t.test('Meta hangs up while B rings: the INVITE to B is cancelled, A gets BYE, nothing is left', async (t) => {
  const h = await startHarness({ codecs: ['PCMU'], captureLogs: true });
  t.teardown(() => h.close());
  const { dialogA, inviteB } = await agents(t, h, 'PCMA', (invite) => invite.ringing());
  const idle = { udp: udpHandles(), routers: await routers(h) };
  const { callId } = await bridgedCall(h);
  const a = await dialogA;
  t.equal((await refer(a, h.drachtio.pbx.uri('agent-b'))).status, 202);
  const b = await inviteB;
  await sleep(100);
  h.sim.hangUp(callId);
  await b.whenCanceled;
  await a.waitForBye();
  await until(() => h.daemon.controller.registry.size === 0, 6000, 'released');
  t.equal(b.finalStatus, 487, 'B got CANCEL (487)');
  t.equal(h.drachtio.server.dialogCount, 0, 'no SIP dialog left at the server');
  await until(() => udpHandles() === idle.udp, 5000, 'sockets back to idle').catch(() => undefined);
  t.equal(udpHandles(), idle.udp, "the call's sockets are closed");
  t.equal(await routers(h), idle.routers, 'its mediasoup router is closed');
  const summary = h.logs().find((l) => l.msg === 'call summary')?.summary as Record<string, unknown>;
  t.match(summary?.transfers, { canceled: 1 }, 'the summary counts the canceled transfer');
});

t.test('a second REFER while the first is under way -> 491; a REFER without Refer-To -> 400', async (t) => {
  const h = await startHarness({ codecs: ['PCMU'] });
  t.teardown(() => h.close());
  const { dialogA, inviteB } = await agents(t, h, 'PCMA', (invite) => invite.ringing());
  const { callId } = await bridgedCall(h);
  const a = await dialogA;
  t.equal((await a.request('REFER')).status, 400, 'no Refer-To');
  t.equal((await refer(a, 'tel:+15550100')).status, 400, 'not a SIP URI');
  t.same(notifies(a), [], 'no NOTIFY for a refused REFER');
  t.equal((await refer(a, h.drachtio.pbx.uri('agent-b'))).status, 202);
  await inviteB;
  t.equal((await refer(a, h.drachtio.pbx.uri('agent-c'))).status, 491, 'second REFER');
  h.sim.hangUp(callId);
  await until(() => h.daemon.controller.registry.size === 0, 6000, 'released');
});

t.test('attended transfer: Replaces embedded in the Refer-To goes on the INVITE to B, decoded, and leaves its Request-URI', async (t) => {
  const h = await startHarness({ codecs: ['PCMU'] });
  t.teardown(() => h.close());
  const { dialogA, inviteB } = await agents(t, h, 'PCMA', (invite) => invite.reject(603));
  const { callId } = await bridgedCall(h);
  const a = await dialogA;
  const replaces = 'call-b-1@127.0.0.1;to-tag=abc;from-tag=def';
  const target = `${h.drachtio.pbx.uri('agent-b')}?Replaces=${encodeURIComponent(replaces)}&Require=replaces`;
  t.equal((await refer(a, target)).status, 202);
  const b = await inviteB;
  t.equal(b.requestUri, h.drachtio.pbx.uri('agent-b'), 'no header part in the Request-URI');
  t.equal(b.header('Replaces'), replaces);
  t.equal(b.header('Require'), 'replaces');
  t.equal(b.header('X-Messenger-PSID'), PSID);
  await until(() => notifies(a).length >= 2, 5000, 'two NOTIFYs at A');
  t.match(notifies(a)[1]!.body, /^SIP\/2\.0 603 /, 'B declined: NOTIFY 603');
  h.sim.hangUp(callId);
  await a.waitForBye();
  await until(() => h.daemon.controller.registry.size === 0, 6000, 'released');
});
