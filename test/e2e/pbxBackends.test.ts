/**
 * Whole calls through the bridge against each SIP backend: the drachtio-server double with its fake PBX (always),
 * and a real drachtio-server with sipp as the PBX when DRACHTIO_HOST/PORT/SECRET/SIP are set (skipped loudly
 * otherwise). The PBX's SDP points at a real RTP peer, so audio is checked on the PBX side in both.
 */
import pino from 'pino';
import t, { type Test } from 'tap';
import { parseConfig } from '../../src/config/index.js';
import { Daemon } from '../../src/daemon/Daemon.js';
import { MetaSimulator } from '../../src/simulator/MetaSimulator.js';
import { createRtpPeer } from '../helpers/rtpPeer.js';
import { META_TO_PBX_HZ, analyzeTone, assertBothWays, listenBothWays } from '../helpers/tone.js';
import { APP_SECRET, PAGE_ID, PAGE_TOKEN, PSID, VERIFY_TOKEN, sdpTarget, sleep, until } from '../helpers/bridgeHarness.js';
import { pbxBackends, type PbxSide } from '../helpers/pbx.js';

async function bridgeFor(
  t: Test,
  pbx: PbxSide,
  targets: string[],
  codecs: Array<'PCMU' | 'PCMA' | 'opus'> = ['PCMU'],
  answerMode: 'on_pbx_answer' | 'immediate' = 'on_pbx_answer',
): Promise<{ sim: MetaSimulator; daemon: Daemon }> {
  const log = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
  const sim = await MetaSimulator.start({ pages: { [PAGE_ID]: PAGE_TOKEN }, appSecret: APP_SECRET, log });
  t.teardown(() => sim.close());
  const config = parseConfig(
    {
      meta: { app_secret: APP_SECRET, verify_token: VERIFY_TOKEN, graph_base_url: sim.graphUrl },
      pages: [{ id: PAGE_ID, access_token: PAGE_TOKEN }],
      webhook: { listen: { host: '127.0.0.1', port: 0 } },
      admin: { listen: { host: '127.0.0.1', port: 0 } },
      sip: { drachtio: pbx.drachtio, acl: [`${pbx.sourceAddress}/32`], default_page: PAGE_ID },
      routes: [
        { name: 'pbx', match: {}, targets: targets.length > 0 ? targets : ['sip:unused@127.0.0.1'], codecs, answer_mode: answerMode },
      ],
      media: { workers: 1, rtp: { listen_ip: '127.0.0.1', min_port: 0, max_port: 0 } },
      messenger: { ice: { listen_ip: '127.0.0.1' } },
    },
    {},
  );
  const daemon = await Daemon.start(config, { log, waitForSipMs: 5000 });
  t.teardown(() => daemon.close());
  sim.setWebhookUrl(daemon.webhookUrl);
  return { sim, daemon };
}

for (const backend of pbxBackends()) {
  t.test(`consumer-initiated call, ${backend.name}`, { skip: backend.skip ?? false }, async (t) => {
    const pbx = await backend.create!();
    t.teardown(() => pbx.close());
    const peer = await createRtpPeer({ codec: 'PCMU' });
    t.teardown(() => peer.close());
    const inbound = await pbx.expectInvite({ sdp: peer.sdp() });
    const { sim, daemon } = await bridgeFor(t, pbx, [inbound.targetUri]);
    const callId = sim.placeCall({ pageId: PAGE_ID, psid: PSID });
    const session = await sim.waitForSession(callId, 15_000);
    await session.whenConnected();
    session.startTone(1000);
    await sleep(1500);
    const heard = analyzeTone(peer.receivedPcm().slice(-8000), 8000, 1000);
    t.ok(heard.detected, `1 kHz from Meta heard at the PBX's RTP address (${JSON.stringify(heard)})`);
    sim.hangUp(callId);
    const end = await inbound.done;
    t.equal(end.byeFrom, 'app', 'the bridge sent BYE when the person hung up');
    t.equal(end.invite.header('X-Messenger-PSID'), PSID, 'the INVITE carried the PSID');
    await until(() => daemon.controller.registry.size === 0, 3000, 'call released');
  });

  t.test(`answer mode immediate with early media (183 with SDP), ${backend.name}`, { skip: backend.skip ?? false }, async (t) => {
    const pbx = await backend.create!();
    t.teardown(() => pbx.close());
    const peer = await createRtpPeer({ codec: 'PCMU' });
    t.teardown(() => peer.close());
    const inbound = await pbx.expectInvite({ sdp: peer.sdp(), earlyMedia: true, ringMs: 4000 });
    const { sim, daemon } = await bridgeFor(t, pbx, [inbound.targetUri], ['PCMU'], 'immediate');
    const callId = sim.placeCall({ pageId: PAGE_ID, psid: PSID });
    const session = await sim.waitForSession(callId, 15_000);
    await session.whenConnected();
    t.equal(sim.call(callId)?.state, 'accepted', 'accepted to Meta at once');
    session.startTone(1000);
    // The 183's SDP is applied at once: Meta's audio reaches the PBX's RTP address while it still rings.
    await until(() => analyzeTone(peer.receivedPcm().slice(-4000), 8000, 1000).detected, 3000, '1 kHz at the PBX during early media');
    t.equal(daemon.controller.registry.all()[0]?.state, 'pbx_ringing', 'heard while the PBX was still ringing (no 200 OK yet)');
    await until(() => daemon.controller.registry.all()[0]?.state === 'active', 8000, 'answered');
    sim.hangUp(callId);
    const end = await inbound.done;
    t.equal(end.byeFrom, 'app', 'the bridge sent BYE when the person hung up');
    await until(() => daemon.controller.registry.size === 0, 3000, 'call released');
  });

  t.test(`business-initiated call, ${backend.name}`, { skip: backend.skip ?? false }, async (t) => {
    const pbx = await backend.create!();
    t.teardown(() => pbx.close());
    const peer = await createRtpPeer({ codec: 'PCMU' });
    t.teardown(() => peer.close());
    const { sim, daemon } = await bridgeFor(t, pbx, []);
    const connectSeen = sim.graph.events.waitFor('connect', AbortSignal.timeout(15_000));
    const placed = await pbx.placeCall({ user: PSID, sdp: peer.sdp(), hangupAfterMs: 5000 });
    // A refused INVITE ends the PBX's part with its status: say so instead of waiting for a connect that never comes.
    const refused = placed.done.then((r) => {
      throw new Error(`the bridge answered the PBX's INVITE with ${r.status} instead of calling Meta`);
    });
    refused.catch(() => undefined);
    const [connect] = await Promise.race([connectSeen, refused]);
    sim.graph.consumerRinging(connect.callId);
    sim.graph.consumerAccept(connect.callId);
    const session = await sim.waitForSession(connect.callId, 15_000);
    await session.whenConnected();
    const ended = sim.waitForEnd(connect.callId, 15_000);
    // The PBX (sipp or the double) keeps the 200 OK's SDP to itself until the call ends; the bridge sends from the
    // address it receives on (symmetric RTP), so the PBX's RTP peer answers to where the bridge's audio comes from.
    session.startTone(META_TO_PBX_HZ);
    await until(() => peer.lastSource, 5000, "the bridge's RTP at the PBX");
    peer.setRemote(peer.lastSource!.address, peer.lastSource!.port);
    assertBothWays(t, await listenBothWays(session, peer), 'the business-initiated call');
    const result = await placed.done;
    t.equal(result.status, 200, '200 OK once the person accepted');
    const target = sdpTarget(result.answerSdp);
    t.same(target, peer.lastSource, "the answer's RTP address is the one the bridge's audio came from");
    t.equal(result.byeFrom, 'pbx');
    t.equal((await ended).by, 'business', 'the PBX hang-up reached Meta as terminate');
    await until(() => daemon.controller.registry.size === 0, 3000, 'call released');
  });

  t.test(`transfer by REFER: A (PCMU) hands the call to B (PCMA), ${backend.name}`, { skip: backend.skip ?? false }, async (t) => {
    const pbx = await backend.create!();
    t.teardown(() => pbx.close());
    const peerA = await createRtpPeer({ codec: 'PCMU' });
    const peerB = await createRtpPeer({ codec: 'PCMA' });
    t.teardown(() => {
      peerA.close();
      peerB.close();
    });
    const inboundB = await pbx.expectInvite({ sdp: peerB.sdp() });
    const inboundA = await pbx.expectInvite({ sdp: peerA.sdp(), transfer: { target: inboundB.targetUri, afterMs: 2500 } });
    const { sim, daemon } = await bridgeFor(t, pbx, [inboundA.targetUri], ['PCMU', 'PCMA']);
    const callId = sim.placeCall({ pageId: PAGE_ID, psid: PSID });
    const session = await sim.waitForSession(callId, 15_000);
    await session.whenConnected();
    session.startTone(1000);

    const endA = await inboundA.done;
    t.equal(endA.transfer?.referStatus, 202, 'REFER answered 202');
    const [trying, outcome] = endA.transfer?.notifies ?? [];
    t.match(trying, { event: 'refer', subscriptionState: 'active;expires=60', contentType: 'message/sipfrag;version=2.0', body: /^SIP\/2\.0 100 Trying/ }, 'NOTIFY 100 Trying, subscription active');
    t.match(outcome, { event: 'refer', subscriptionState: 'terminated;reason=noresource', body: /^SIP\/2\.0 200 OK/ }, 'NOTIFY 200 OK, subscription terminated');
    t.equal(endA.byeFrom, 'app', 'the bridge hung up the transferor');

    peerB.clearReceived();
    await sleep(1200);
    const heard = analyzeTone(peerB.receivedPcm().slice(-8000), 8000, 1000);
    t.ok(heard.detected, `1 kHz from Meta heard at B in PCMA (${JSON.stringify(heard)})`);
    t.equal(daemon.controller.registry.size, 1, 'the Messenger call is still up');

    sim.hangUp(callId);
    const endB = await inboundB.done;
    t.equal(endB.byeFrom, 'app', 'the person hanging up reached B as BYE');
    t.equal(endB.invite.header('X-Messenger-PSID'), PSID, 'the INVITE to B carried the caller context');
    t.match(endB.invite.header('Referred-By') ?? '', /agent-a@/, 'and Referred-By');
    await until(() => daemon.controller.registry.size === 0, 3000, 'call released');
  });

  t.test(`transfer by REFER to a busy B: NOTIFY 486, the call stays with A, ${backend.name}`, { skip: backend.skip ?? false }, async (t) => {
    const pbx = await backend.create!();
    t.teardown(() => pbx.close());
    const peerA = await createRtpPeer({ codec: 'PCMU' });
    t.teardown(() => peerA.close());
    const inboundB = await pbx.expectInvite({ reject: 486 });
    const inboundA = await pbx.expectInvite({ sdp: peerA.sdp(), transfer: { target: inboundB.targetUri, afterMs: 2500 } });
    const { sim, daemon } = await bridgeFor(t, pbx, [inboundA.targetUri]);
    const callId = sim.placeCall({ pageId: PAGE_ID, psid: PSID });
    const session = await sim.waitForSession(callId, 15_000);
    await session.whenConnected();
    session.startTone(1000);
    await inboundB.done;
    await sleep(500);
    peerA.clearReceived();
    await sleep(1200);
    const heard = analyzeTone(peerA.receivedPcm().slice(-8000), 8000, 1000);
    t.ok(heard.detected, `1 kHz from Meta still heard at A after the failed transfer (${JSON.stringify(heard)})`);
    t.equal(daemon.controller.registry.size, 1, 'the call is still up');

    sim.hangUp(callId);
    const endA = await inboundA.done;
    t.equal(endA.transfer?.referStatus, 202, 'REFER answered 202');
    t.match(endA.transfer?.notifies[1], { subscriptionState: 'terminated;reason=noresource', body: /^SIP\/2\.0 486 / }, 'NOTIFY 486');
    t.equal(endA.byeFrom, 'app', 'A got BYE only when the person hung up');
    await until(() => daemon.controller.registry.size === 0, 3000, 'call released');
  });
}
