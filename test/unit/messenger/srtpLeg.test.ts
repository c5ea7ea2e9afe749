/**
 * The Messenger leg's SRTP against a real DTLS-SRTP peer (the simulator's mediasoup media server, libsrtp): audio both
 * ways with each profile we offer, and forged packets from the network refused, counted and logged at
 * debug level while the call goes on.
 */
import dgram from 'node:dgram';
import { Writable } from 'node:stream';
import t from 'tap';
import { pino } from 'pino';
import { createDtlsCertificate } from '../../../src/messenger/certificate.js';
import { SRTP_AEAD_AES_128_GCM, SRTP_AES128_CM_HMAC_SHA1_80 } from '../../../src/core/srtp.js';
import type { DtlsSrtpProfileId } from '../../../src/messenger/WeriftMessengerLeg.js';
import { WeriftMessengerLeg } from '../../../src/messenger/WeriftMessengerLeg.js';
import { WeriftMessengerLegFactory } from '../../../src/messenger/WeriftMessengerLegFactory.js';
import { MetaMediaServer } from '../../../src/simulator/media/MetaMediaServer.js';
import type { MetaMediaSession } from '../../../src/simulator/media/MetaMediaServer.js';
import { OpusCapture, OpusToneSender, lastDominant, waitUntil } from '../../helpers/opusTone.js';

/** Log lines of the legs (debug and up), parsed. */
const lines: Array<Record<string, unknown>> = [];
const log = pino(
  { level: 'debug' },
  new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString().split('\n')) if (line.trim() !== '') lines.push(JSON.parse(line) as Record<string, unknown>);
      callback();
    },
  }),
);

// The factory applies the process-wide DTLS fix; the legs below are built directly to choose their SRTP profiles.
new WeriftMessengerLegFactory({ iceListenIps: ['127.0.0.1'], log });
const certificate = createDtlsCertificate();

let server: MetaMediaServer;
t.before(async () => {
  server = await MetaMediaServer.create({ listenIp: '127.0.0.1', rtcMinPort: 46000, rtcMaxPort: 46099, log: pino({ level: 'silent' }) });
});
t.teardown(() => server.close());

async function connected(callId: string, srtpProfiles: DtlsSrtpProfileId[]): Promise<{ leg: WeriftMessengerLeg; session: MetaMediaSession }> {
  const leg = new WeriftMessengerLeg({
    callId,
    log: log.child({ callId }),
    certificate,
    iceListenIps: ['127.0.0.1'],
    iceTimeoutMs: 5000,
    dtlsTimeoutMs: 5000,
    consentTimeoutMs: 30000,
    rtcpIntervalMs: 200,
    srtpProfiles,
  });
  const { sdp, session } = await server.answerOffer(await leg.createOffer());
  await leg.applyAnswer(sdp);
  await Promise.all([leg.whenConnected(AbortSignal.timeout(5000)), session.whenConnected()]);
  return { leg, session };
}

function negotiatedProfile(callId: string): unknown {
  return lines.find((l) => l.callId === callId && l.msg === 'connected')?.srtpProfile;
}

for (const [name, profile] of [
  ['AES_CM_128_HMAC_SHA1_80', SRTP_AES128_CM_HMAC_SHA1_80],
  ['AEAD_AES_128_GCM', SRTP_AEAD_AES_128_GCM],
] as const) {
  t.test(`${name}: a 1 kHz tone both ways with libsrtp on the other side`, async (t) => {
    const callId = `tone-${profile}`;
    const { leg, session } = await connected(callId, [profile]);
    t.teardown(() => {
      leg.close();
      session.close();
    });
    t.equal(negotiatedProfile(callId), profile, `${name} negotiated`);
    const capture = new OpusCapture(leg, { opusPt: 111 });
    const sender = new OpusToneSender(leg, { pt: 111, hz: 1000 }).start();
    t.teardown(() => sender.stop());
    session.startTone(1000);
    await waitUntil(() => capture.samples >= 48000 * 0.8, 10000, 'audio at the leg');
    await waitUntil(() => session.receivedPcm().length >= 48000 * 0.8, 10000, 'audio at Meta');
    t.equal(lastDominant(capture.pcm()).frequency, 1000, 'the leg hears 1 kHz');
    t.equal(lastDominant(session.receivedPcm()).frequency, 1000, 'Meta hears 1 kHz');
    t.equal(leg.stats().packetsDroppedInvalid, 0, 'every inbound SRTP and SRTCP packet authenticated');
    const nominated = leg.diagnostics().nominated as { packetsSent: number } | undefined;
    t.ok(nominated !== undefined && nominated.packetsSent > 40, 'the nominated pair counts what the leg sends past werift');
  });
}

t.test('forged packets are refused and counted; the call goes on', async (t) => {
  const callId = 'forged';
  const { leg, session } = await connected(callId, [SRTP_AEAD_AES_128_GCM, SRTP_AES128_CM_HMAC_SHA1_80]);
  const stray = dgram.createSocket('udp4');
  t.teardown(() => {
    leg.close();
    session.close();
    stray.close();
  });
  const capture = new OpusCapture(leg, { opusPt: 111 });
  session.startTone(1000);
  await waitUntil(() => capture.samples >= 48000 * 0.3, 10000, 'audio at the leg');

  const local = (leg.diagnostics().nominated as { local: string }).local;
  const port = Number(local.split(':')[1]);
  const forged: Buffer[] = [];
  for (let i = 0; i < 20; i++) {
    // Looks like SRTP from Meta's stream (same version, payload type), but carries no valid tag.
    const rtp = Buffer.alloc(12 + 80 + 16, i);
    rtp[0] = 0x80;
    rtp[1] = 111;
    rtp.writeUInt16BE(i, 2);
    forged.push(rtp);
  }
  const rtcp = Buffer.alloc(8 + 20 + 16 + 4, 7);
  rtcp[0] = 0x80;
  rtcp[1] = 200;
  forged.push(rtcp, Buffer.from([0x80, 111, 0, 1]));
  const before = leg.stats();
  for (const packet of forged) stray.send(packet, port, '127.0.0.1');
  await waitUntil(() => leg.stats().packetsDroppedInvalid >= forged.length, 5000, 'forged packets refused');
  t.equal(leg.stats().packetsDroppedInvalid, forged.length, 'each forged packet refused once');
  const refusals = lines.filter((l) => l.callId === callId && l.msg === 'inbound packet refused');
  t.ok(refusals.length >= 1 && refusals.length <= 3, `logged at debug, a few lines only (${refusals.length})`);
  t.equal(refusals[0]?.level, 20, 'debug level');
  t.match(refusals[0], { reason: 'auth' });

  const heard = capture.samples;
  await waitUntil(() => capture.samples >= heard + 48000 * 0.3, 10000, 'audio goes on');
  t.ok(leg.connected, 'still connected');
  t.ok(leg.stats().packetsReceived > before.packetsReceived, 'still receiving');
  t.equal(leg.stats().packetsDroppedInvalid, forged.length, 'genuine packets still authenticate');
});
