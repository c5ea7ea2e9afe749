import t from 'tap';
import type { PbxCodecName } from '../../../src/calls/ports.js';
import type { RtpPeer } from '../../helpers/rtpPeer.js';
import type { FakeMessengerLeg } from './fakeMessengerLeg.js';
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
