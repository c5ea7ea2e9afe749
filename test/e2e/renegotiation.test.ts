/**
 * Meta renegotiates with a second m=audio (one recvonly, one sendonly): in the accept answer itself
 * (`sdp_renegotiation`), and later by a media_update webhook. Audio keeps flowing both ways through the bridge.
 */
import t, { type Test } from 'tap';
import { createRtpPeer, type RtpPeer } from '../helpers/rtpPeer.js';
import { analyzeTail } from '../helpers/tone.js';
import { PAGE_ID, PSID, sdpTarget, sleep, startHarness, until, type Harness } from '../helpers/bridgeHarness.js';
import type { MetaMediaSession } from '../../src/simulator/media/MetaMediaServer.js';

async function tonesBothWays(t: Test, peer: RtpPeer, session: MetaMediaSession, label: string): Promise<void> {
  peer.clearReceived();
  session.clearReceived();
  await sleep(1200);
  const atPbx = analyzeTail(peer.receivedPcm(), 8000, 1000, 1);
  const atMeta = analyzeTail(session.receivedPcm(), 48000, 600, 1);
  t.ok(atPbx.detected, `${label}: Meta -> PBX tone (${JSON.stringify(atPbx)})`);
  t.ok(atMeta.detected, `${label}: PBX -> Meta tone (${JSON.stringify(atMeta)})`);
}

async function answerWithPeer(h: Harness, peer: RtpPeer): Promise<void> {
  h.drachtio.pbx.onInvite(async (invite) => {
    const target = sdpTarget(invite.sdp);
    peer.setRemote(target.address, target.port);
    await invite.answer(peer.sdp());
    peer.startTone(600);
  });
}

t.test('accept answer carrying sdp_renegotiation with a second m=audio: answer applied, then the offer; audio both ways', async (t) => {
  const h = await startHarness({ codecs: ['PCMU'], renegotiateOnAccept: true, captureLogs: true });
  t.teardown(() => h.close());
  const peer = await createRtpPeer({ codec: 'PCMU' });
  t.teardown(() => peer.close());
  await answerWithPeer(h, peer);
  const callId = h.sim.placeCall({ pageId: PAGE_ID, psid: PSID });
  const session = await h.sim.waitForSession(callId);
  await session.whenConnected();
  session.startTone(1000);
  await tonesBothWays(t, peer, session, 'after accept with renegotiation');
  t.ok(h.logs().some((l) => l.msg === 'applying the renegotiation offer that came with accept'), 'the renegotiation offer was applied');
  h.sim.hangUp(callId);
  await until(() => h.daemon.controller.registry.size === 0, 3000, 'released');
});

t.test('media_update with a second m=audio in the middle of a business-initiated call keeps audio flowing', async (t) => {
  const h = await startHarness({ codecs: ['PCMU'], captureLogs: true });
  t.teardown(() => h.close());
  const peer = await createRtpPeer({ codec: 'PCMU' });
  t.teardown(() => peer.close());
  const connectSeen = h.sim.graph.events.waitFor('connect');
  const call = h.drachtio.pbx.call({ user: PSID, sdp: peer.sdp() });
  const [connect] = await connectSeen;
  h.sim.graph.consumerAccept(connect.callId);
  const final = await call.final;
  const target = sdpTarget(final.sdp);
  peer.setRemote(target.address, target.port);
  peer.startTone(600);
  const session = await h.sim.waitForSession(connect.callId);
  await session.whenConnected();
  session.startTone(1000);
  await tonesBothWays(t, peer, session, 'before media_update');
  const version = h.sim.graph.sendMediaUpdate(connect.callId, session.renegotiationOffer({ secondMLine: true }));
  t.equal(version, 1);
  await sleep(300);
  await tonesBothWays(t, peer, session, 'after media_update v1');
  const applied = () => h.logs().filter((l) => l.msg === 'media_update applied').map((l) => l.version);
  t.same(applied(), [1], 'version 1 applied');
  // An older version arriving late is ignored; the call carries on.
  await h.sim.webhooks.mediaUpdate(PAGE_ID, { callId: connect.callId, version: 1, sdp: session.renegotiationOffer({ secondMLine: false }) });
  await tonesBothWays(t, peer, session, 'after a stale media_update');
  t.same(applied(), [1], 'the stale version was not applied');
  await final.dialog!.bye();
  await until(() => h.daemon.controller.registry.size === 0, 3000, 'released');
});
