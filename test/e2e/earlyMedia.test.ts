/**
 * Answer mode immediate with early media: the Messenger call is accepted at once, the PBX's 183 Session Progress
 * carries SDP (a queue announcement), and the person hears it before any agent answers; the 200 OK then moves
 * nothing and audio carries on both ways.
 */
import t from 'tap';
import type { Test } from 'tap';
import { createRtpPeer, type RtpPeer } from '../helpers/rtpPeer.js';
import { analyzeTone } from '../helpers/tone.js';
import type { PbxInvite } from '../helpers/drachtio/index.js';
import { PAGE_ID, PSID, sdpTarget, sleep, startHarness, until, type Harness } from '../helpers/bridgeHarness.js';

/** A bridge whose one route accepts at once (answer mode immediate), and an RTP peer for the PBX side. */
async function immediateBridge(t: Test): Promise<{ h: Harness; pbxRtp: RtpPeer }> {
  const h = await startHarness({
    codecs: ['PCMU'],
    routes: [
      { name: 'queue', match: {}, targets: ['sip:queue@127.0.0.1:5080'], target_timeout_ms: 20_000, codecs: ['PCMU'], answer_mode: 'immediate' },
    ],
  });
  t.teardown(() => h.close());
  const pbxRtp = await createRtpPeer({ codec: 'PCMU' });
  t.teardown(() => pbxRtp.close());
  return { h, pbxRtp };
}

t.test('answer mode immediate: the PBX\'s early media (183 with SDP) reaches the person before the PBX answers', async (t) => {
  const { h, pbxRtp } = await immediateBridge(t);

  const invited = new Promise<PbxInvite>((resolve) => {
    h.drachtio.pbx.onInvite((invite) => {
      const target = sdpTarget(invite.sdp);
      pbxRtp.setRemote(target.address, target.port);
      invite.ringing({ status: 183, sdp: pbxRtp.sdp() });
      pbxRtp.startTone(800); // the queue's announcement
      resolve(invite);
    });
  });

  const callId = h.sim.placeCall({ pageId: PAGE_ID, psid: PSID });
  const invite = await invited;
  const session = await h.sim.waitForSession(callId);
  await session.whenConnected();
  t.equal(h.sim.call(callId)?.state, 'accepted', 'Meta accepted before the PBX answered');

  await until(() => session.receivedPcm().length >= 48_000, 10_000, 'a second of audio at Meta');
  await sleep(300);
  const early = analyzeTone(session.receivedPcm().slice(-24_000), 48_000, 800);
  t.ok(early.detected, `the announcement (800 Hz) is heard at Meta while the PBX rings (${JSON.stringify(early)})`);

  // An agent answers: the 200 OK repeats the early answer; audio both ways.
  const dialog = await invite.answer(pbxRtp.sdp());
  pbxRtp.startTone(1000);
  session.startTone(1000);
  await sleep(1500);
  const atMeta = analyzeTone(session.receivedPcm().slice(-24_000), 48_000, 1000);
  const atPbx = analyzeTone(pbxRtp.receivedPcm().slice(-4000), 8000, 1000);
  t.ok(atMeta.detected, `after the answer, the agent's 1 kHz is heard at Meta (${JSON.stringify(atMeta)})`);
  t.ok(atPbx.detected, `and Meta's 1 kHz at the PBX (${JSON.stringify(atPbx)})`);

  h.sim.hangUp(callId);
  await dialog.waitForBye(2000);
  await until(() => h.daemon.controller.registry.size === 0, 2000, 'call released');
  t.equal(h.daemon.controller.registry.size, 0, 'no call record left');
});

t.test('answer mode immediate without early media: Meta gets silence while the PBX rings, then the PBX\'s audio', async (t) => {
  const { h, pbxRtp } = await immediateBridge(t);
  const invited = new Promise<PbxInvite>((resolve) => {
    h.drachtio.pbx.onInvite((invite) => {
      invite.ringing();
      resolve(invite);
    });
  });

  const callId = h.sim.placeCall({ pageId: PAGE_ID, psid: PSID });
  const invite = await invited;
  const session = await h.sim.waitForSession(callId);
  await session.whenConnected();
  // Meta ends accepted calls that receive nothing; a PBX may ring for a while.
  await until(() => session.receivedPcm().length >= 48_000, 10_000, 'a second of audio at Meta while the PBX rings');
  const ringing = analyzeTone(session.receivedPcm().slice(-24_000), 48_000, 1000);
  t.notOk(ringing.detected, 'silence while the PBX rings');
  t.ok(ringing.levelDbfs < -60, `silence (${ringing.levelDbfs.toFixed(1)} dBFS)`);

  const target = sdpTarget(invite.sdp);
  pbxRtp.setRemote(target.address, target.port);
  const dialog = await invite.answer(pbxRtp.sdp());
  pbxRtp.startTone(1000);
  await sleep(1200);
  const atMeta = analyzeTone(session.receivedPcm().slice(-24_000), 48_000, 1000);
  t.ok(atMeta.detected, `after the answer, the PBX's 1 kHz is heard at Meta (${JSON.stringify(atMeta)})`);

  h.sim.hangUp(callId);
  await dialog.waitForBye(2000);
  await until(() => h.daemon.controller.registry.size === 0, 2000, 'call released');
});
