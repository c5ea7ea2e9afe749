import t from 'tap';
import type { Test } from 'tap';
import { createRtpPeer } from '../helpers/rtpPeer.js';
import { assertBothWays, listenBothWays } from '../helpers/tone.js';
import { PSID, sdpTarget, sleep, startHarness, until, type Harness } from '../helpers/bridgeHarness.js';

/** A call from the PBX (an RTP peer speaking `codec`) that the person accepts at once: its 200 OK, and Meta's call id. */
async function acceptedBusinessCall(t: Test, h: Harness, codec: 'PCMU' | 'PCMA') {
  const pbxRtp = await createRtpPeer({ codec });
  t.teardown(() => pbxRtp.close());
  const connectSeen = h.sim.graph.events.waitFor('connect');
  const call = h.drachtio.pbx.call({ user: PSID, sdp: pbxRtp.sdp() });
  const [connect] = await connectSeen;
  h.sim.graph.consumerAccept(connect.callId);
  const final = await call.final;
  t.equal(final.status, 200, 'the person accepted: 200 OK to the PBX');
  return { final, metaCallId: connect.callId };
}

t.test('business-initiated call: INVITE -> connect -> ringing 180 -> accepted 200 OK, 1 kHz to the PBX, 440 Hz to Meta, PBX BYE -> Meta terminate', async (t) => {
  const h = await startHarness();
  t.teardown(() => h.close());
  const pbxRtp = await createRtpPeer({ codec: 'PCMA' });
  t.teardown(() => pbxRtp.close());

  const connectSeen = h.sim.graph.events.waitFor('connect');
  const call = h.drachtio.pbx.call({ user: PSID, sdp: pbxRtp.sdp() });
  const [connect] = await connectSeen;
  t.equal(connect.psid, PSID, 'Graph connect names the PSID from the Request-URI');
  const callId = connect.callId;

  h.sim.graph.consumerRinging(callId);
  await call.waitForProvisional(180, 3000);
  t.pass('ringing became 180 Ringing');

  h.sim.graph.consumerAccept(callId);
  const final = await call.final;
  t.equal(final.status, 200, 'accepted became 200 OK');
  const target = sdpTarget(final.sdp);
  pbxRtp.setRemote(target.address, target.port);
  t.match(final.sdp, /PCMA\/8000/, 'answer keeps the PBX codec PCMA');

  const session = await h.sim.waitForSession(callId);
  await session.whenConnected();
  assertBothWays(t, await listenBothWays(session, pbxRtp, { listenMs: 1500 }), 'the answered call');

  const ended = h.sim.waitForEnd(callId, 3000);
  const byeAt = Date.now();
  await final.dialog!.bye();
  const end = await ended;
  t.equal(end.by, 'business', 'Meta saw the business terminate the call');
  t.ok(Date.now() - byeAt < 1000, 'terminate reached Meta within a second');
  await until(() => h.daemon.controller.registry.size === 0, 2000, 'call released');
});

t.test('business-initiated call: the person hangs up -> BYE to the PBX', async (t) => {
  const h = await startHarness();
  t.teardown(() => h.close());
  const { final, metaCallId } = await acceptedBusinessCall(t, h, 'PCMU');
  await (await h.sim.waitForSession(metaCallId)).whenConnected();
  const byeAt = Date.now();
  h.sim.hangUp(metaCallId);
  await final.dialog!.waitForBye(2000);
  t.ok(Date.now() - byeAt < 1000, 'BYE within a second');
  await until(() => h.daemon.controller.registry.size === 0, 2000, 'call released');
});

t.test('business-initiated call: media.codecs decides what the bridge answers the PBX with', async (t) => {
  const media = { workers: 1, rtp: { listen_ip: '127.0.0.1', min_port: 0, max_port: 0 }, codecs: ['PCMA'] };
  const h = await startHarness({ config: { media } });
  t.teardown(() => h.close());
  const pcmu = await createRtpPeer({ codec: 'PCMU' });
  t.teardown(() => pcmu.close());
  let connects = 0;
  h.sim.graph.events.on('connect', () => connects++);
  const refused = await h.drachtio.pbx.call({ user: PSID, sdp: pcmu.sdp() }).final;
  t.equal(refused.status, 488, 'a PBX offering only PCMU is refused: PCMU is not in media.codecs');
  t.equal(connects, 0, 'Meta is not called for a call the PBX side cannot carry');

  const { final, metaCallId } = await acceptedBusinessCall(t, h, 'PCMA');
  t.match(final.sdp, /PCMA\/8000/, 'a PBX offering PCMA is answered with PCMA');
  h.sim.hangUp(metaCallId);
  await final.dialog!.waitForBye(2000);
  await until(() => h.daemon.controller.registry.size === 0, 2000, 'call released');
});
