import t from 'tap';
import { createRtpPeer } from '../helpers/rtpPeer.js';
import { assertBothWays, listenBothWays } from '../helpers/tone.js';
import { PAGE_ID, PSID, sdpTarget, sleep, startHarness, until } from '../helpers/bridgeHarness.js';

t.test('consumer-initiated call: PBX answers, accepted to Meta, 1 kHz to the PBX, 440 Hz to Meta, Meta hangs up -> BYE', async (t) => {
  const h = await startHarness({ codecs: ['PCMU'] });
  t.teardown(() => h.close());
  const pbxRtp = await createRtpPeer({ codec: 'PCMU' });
  t.teardown(() => pbxRtp.close());

  const answered = new Promise<Awaited<ReturnType<import('../helpers/drachtio/index.js').PbxInvite['answer']>>>((resolve, reject) => {
    h.drachtio.pbx.onInvite(async (invite) => {
      try {
        t.equal(invite.header('X-Messenger-PSID'), PSID, 'PSID header on the INVITE');
        t.equal(invite.header('X-Messenger-Page-ID'), PAGE_ID, 'page header on the INVITE');
        const target = sdpTarget(invite.sdp);
        pbxRtp.setRemote(target.address, target.port);
        invite.ringing();
        resolve(await invite.answer(pbxRtp.sdp()));
      } catch (err) {
        reject(err);
      }
    });
  });

  const started = Date.now();
  const callId = h.sim.placeCall({ pageId: PAGE_ID, psid: PSID });
  const dialog = await answered;
  const session = await h.sim.waitForSession(callId);
  await session.whenConnected();
  t.ok(Date.now() - started < 10_000, 'accepted well within the deadline');
  t.equal(h.sim.call(callId)?.state, 'accepted', 'Meta saw the accept');

  assertBothWays(t, await listenBothWays(session, pbxRtp, { listenMs: 1500 }), 'the answered call');

  const hungUpAt = Date.now();
  h.sim.hangUp(callId);
  await dialog.waitForBye(2000);
  t.ok(Date.now() - hungUpAt < 1000, 'BYE reached the PBX within a second');
  await until(() => h.daemon.controller.registry.size === 0, 2000, 'call released');
  t.equal(h.daemon.controller.registry.size, 0, 'no call record left');
});
