import t from 'tap';
import type { PbxCodecName } from '../../../src/calls/ports.js';
import { createRtpPeer, type RtpPeer } from '../../helpers/rtpPeer.js';
import { FakeMessengerLeg } from './fakeMessengerLeg.js';
import { analyzeTail, createEngine, setupCall, sleep, until } from './setup.js';

const { pool, engine, log } = await createEngine();
t.teardown(() => {
  engine.close();
  pool.close();
});

/** 1 kHz at -12 dBFS from both sides until each heard enough; what each side heard at the end. */
async function toneBothWays(leg: FakeMessengerLeg, peer: RtpPeer): Promise<{ atPbx: ReturnType<typeof analyzeTail>; atMeta: ReturnType<typeof analyzeTail> }> {
  peer.startTone(1000, -12);
  leg.core.startTone(1000, -12);
  await until(() => peer.packetsReceived > 40 && leg.core.packetsReceived > 60, 5000, 'audio both ways');
  await sleep(400);
  peer.stopTone();
  leg.core.stopTone();
  return {
    atPbx: analyzeTail(peer.receivedPcm(), peer.sampleRate, 1000),
    atMeta: analyzeTail(leg.core.receivedPcm(), 48000, 1000),
  };
}

for (const codec of ['opus', 'PCMU', 'PCMA'] as PbxCodecName[]) {
  t.test(`1 kHz tone crosses both ways with ${codec} toward the PBX`, async (t) => {
    const { leg, media, peer } = await setupCall(t, engine, log, { codec, metaTe: { pt: 126, clockRate: 48000 } });
    t.equal(media.pbxCodec, codec);

    const { atPbx, atMeta } = await toneBothWays(leg, peer);
    t.ok(atPbx.detected, `tone detected at the PBX (${JSON.stringify(atPbx)})`);
    t.ok(Math.abs(atPbx.peakHz - 1000) < 5, `PBX hears ${atPbx.peakHz.toFixed(1)} Hz`);
    t.ok(atPbx.levelDbfs > -20 && atPbx.levelDbfs < -6, `PBX level ${atPbx.levelDbfs.toFixed(1)} dBFS`);

    t.ok(atMeta.detected, `tone detected at Meta (${JSON.stringify(atMeta)})`);
    t.ok(Math.abs(atMeta.peakHz - 1000) < 5, `Meta hears ${atMeta.peakHz.toFixed(1)} Hz`);
    t.ok(atMeta.levelDbfs > -20 && atMeta.levelDbfs < -6, `Meta level ${atMeta.levelDbfs.toFixed(1)} dBFS`);

    t.ok(peer.received.length > 0 && peer.received.every((h) => h.payloadOffset === 12), 'no RTP header extension (nor CSRC) toward the PBX');
    const stats = media.stats();
    t.equal(stats.transcoding, codec !== 'opus');
    t.ok(stats.toPbx.packets > 0 && stats.toMessenger.packets > 0);
  });
}

t.test('a PBX on IPv6: the SDP speaks IP6 and a tone crosses both ways', async (t) => {
  const v6 = await createEngine({ listenIp: '::1' });
  t.teardown(() => {
    v6.engine.close();
    v6.pool.close();
  });
  const { leg, media, peer, offer } = await setupCall(t, v6.engine, log, {
    codec: 'PCMA',
    metaTe: { pt: 126, clockRate: 48000 },
    pbxAddress: '::1',
  });
  t.match(offer, /^c=IN IP6 ::1\r$/m, 'our offer gives an IPv6 connection address');
  t.match(offer, new RegExp(`^m=audio ${media.pbxPort} RTP/AVP `, 'm'), 'and the port of the IPv6 socket');

  const { atPbx, atMeta } = await toneBothWays(leg, peer);
  t.ok(atPbx.detected && Math.abs(atPbx.peakHz - 1000) < 5, `the PBX on ::1 hears 1 kHz (${atPbx.peakHz.toFixed(1)} Hz)`);
  t.ok(atMeta.detected && Math.abs(atMeta.peakHz - 1000) < 5, `Meta hears the PBX's 1 kHz (${atMeta.peakHz.toFixed(1)} Hz)`);
  t.equal(peer.lastSource?.address, '::1', 'the PBX hears us from ::1');
});

t.test('codec changes (re-INVITE, transfer) never hand the PBX a packet of the old codec under the new payload type', async (t) => {
  const leg = new FakeMessengerLeg({ telephoneEvent: { pt: 126, clockRate: 48000 } });
  const media = await engine.createMediasoupCallMedia({ callId: 'codec-switch', log, messenger: leg, codecs: ['PCMU', 'PCMA', 'opus'] });
  const peers = {
    PCMU: await createRtpPeer({ codec: 'PCMU' }),
    PCMA: await createRtpPeer({ codec: 'PCMA' }),
    opus: await createRtpPeer({ codec: 'opus' }),
  };
  t.teardown(() => {
    media.close();
    leg.close();
    for (const peer of Object.values(peers)) peer.close();
  });
  media.createPbxOffer();
  leg.core.startTone(1000, -12);
  const order: PbxCodecName[] = ['opus', 'PCMU', 'opus', 'PCMA', 'opus', 'PCMA', 'PCMU'];
  // Each switch happens right after the bridge handed a packet of Meta's audio to the worker, in the same turn: the
  // worst moment, with that packet (old codec) still on its way out of the router.
  media.applyPbxAnswer(peers.PCMU.sdp());
  media.start();
  let switchTo: PbxCodecName | undefined;
  // Registered after start(): runs after the bridge's own handler of the same packet.
  const unsubscribe = leg.onRtp(() => {
    if (!switchTo) return;
    media.applyPbxAnswer(peers[switchTo].sdp());
    media.start();
    switchTo = undefined;
  });
  t.teardown(unsubscribe);
  for (const codec of order) {
    const peer = peers[codec];
    const before = peer.packetsReceived;
    switchTo = codec;
    await until(() => peer.packetsReceived >= before + 10, 5000, `audio at the ${codec} PBX`);
  }
  await sleep(100);
  t.equal(peers.opus.decodeErrors, 0, 'the Opus PBX got no payload its decoder refuses');
  for (const codec of ['PCMU', 'PCMA'] as const) {
    const peer = peers[codec];
    const audio = peer.received.filter((h) => h.payloadType === (codec === 'PCMU' ? 0 : 8));
    const odd = audio.filter((h) => h.payloadLength !== 160);
    t.same(odd.map((h) => h.payloadLength), [], `every ${codec} packet is a 20 ms G.711 frame (${audio.length} packets)`);
  }
});
