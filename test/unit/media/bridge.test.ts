import t from 'tap';
import type { PbxCodecName } from '../../../src/calls/ports.js';
import { createRtpPeer } from '../../helpers/rtpPeer.js';
import { FakeMessengerLeg } from './fakeMessengerLeg.js';
import { analyzeTail, createEngine, sleep, until } from './setup.js';

const { pool, engine, log } = await createEngine();
t.teardown(() => {
  engine.close();
  pool.close();
});

for (const codec of ['opus', 'PCMU', 'PCMA'] as PbxCodecName[]) {
  t.test(`1 kHz tone crosses both ways with ${codec} toward the PBX`, async (t) => {
    const leg = new FakeMessengerLeg({ telephoneEvent: { pt: 126, clockRate: 48000 } });
    const media = await engine.createMediasoupCallMedia({ callId: `tone-${codec}`, log, messenger: leg, codecs: [codec] });
    const peer = await createRtpPeer({ codec, tePt: 101 });
    t.teardown(() => {
      media.close();
      peer.close();
      leg.close();
    });
    media.createPbxOffer();
    peer.setRemote('127.0.0.1', media.pbxPort);
    media.applyPbxAnswer(peer.sdp());
    t.equal(media.pbxCodec, codec);
    media.start();

    peer.startTone(1000, -12);
    leg.core.startTone(1000, -12);
    await until(() => peer.packetsReceived > 40 && leg.core.packetsReceived > 60, 5000, 'audio both ways');
    await sleep(400);
    peer.stopTone();
    leg.core.stopTone();

    const atPbx = analyzeTail(peer.receivedPcm(), peer.sampleRate, 1000);
    t.ok(atPbx.detected, `tone detected at the PBX (${JSON.stringify(atPbx)})`);
    t.ok(Math.abs(atPbx.peakHz - 1000) < 5, `PBX hears ${atPbx.peakHz.toFixed(1)} Hz`);
    t.ok(atPbx.levelDbfs > -20 && atPbx.levelDbfs < -6, `PBX level ${atPbx.levelDbfs.toFixed(1)} dBFS`);

    const atMeta = analyzeTail(leg.core.receivedPcm(), 48000, 1000);
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
  const leg = new FakeMessengerLeg({ telephoneEvent: { pt: 126, clockRate: 48000 } });
  const media = await v6.engine.createMediasoupCallMedia({ callId: 'tone-ipv6', log, messenger: leg, codecs: ['PCMA'] });
  const peer = await createRtpPeer({ codec: 'PCMA', tePt: 101, address: '::1' });
  t.teardown(() => {
    media.close();
    peer.close();
    leg.close();
    v6.engine.close();
    v6.pool.close();
  });
  const offer = media.createPbxOffer();
  t.match(offer, /^c=IN IP6 ::1\r$/m, 'our offer gives an IPv6 connection address');
  t.match(offer, new RegExp(`^m=audio ${media.pbxPort} RTP/AVP `, 'm'), 'and the port of the IPv6 socket');
  peer.setRemote('::1', media.pbxPort);
  media.applyPbxAnswer(peer.sdp());
  media.start();

  peer.startTone(1000, -12);
  leg.core.startTone(1000, -12);
  await until(() => peer.packetsReceived > 40 && leg.core.packetsReceived > 60, 5000, 'audio both ways');
  await sleep(400);
  peer.stopTone();
  leg.core.stopTone();
  const atPbx = analyzeTail(peer.receivedPcm(), peer.sampleRate, 1000);
  t.ok(atPbx.detected && Math.abs(atPbx.peakHz - 1000) < 5, `the PBX on ::1 hears 1 kHz (${atPbx.peakHz.toFixed(1)} Hz)`);
  const atMeta = analyzeTail(leg.core.receivedPcm(), 48000, 1000);
  t.ok(atMeta.detected && Math.abs(atMeta.peakHz - 1000) < 5, `Meta hears the PBX's 1 kHz (${atMeta.peakHz.toFixed(1)} Hz)`);
  t.equal(peer.lastSource?.address, '::1', 'the PBX hears us from ::1');
});
