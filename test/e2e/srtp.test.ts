/**
 * SRTP (SDES) toward the PBX, end to end, with baresip (Debian's baresip-core and its srtp module, account
 * `mediaenc=srtp-mand`) as the PBX, reached through the drachtio-server double with a real UDP SIP socket on loopback:
 * a consumer-initiated and a business-initiated call with a tone each way (a different frequency per direction,
 * checked at the far end), a forged packet on the PBX RTP port dropped and counted, and `media.srtp: required`
 * against a plain-RTP PBX refused cleanly (488 with a Reason header; a plain answer ends the call).
 */
import dgram from 'node:dgram';
import { pino } from 'pino';
import t from 'tap';
import type { Test } from 'tap';
import { startDrachtioDouble, type DrachtioDouble } from '../../src/simulator/drachtio/index.js';
import { DEMO_PAGE_ID, DEMO_PSID, startLoopbackBridgeOn, type DrachtioAddress } from '../../src/simulator/loopbackBridge.js';
import { baresipAvailable, freeUdpPort, startBaresipUa } from '../../src/simulator/pbx/baresipUa.js';
import { createRtpPeer } from '../helpers/rtpPeer.js';
import { analyzeTone } from '../helpers/tone.js';
import type { PbxInvite } from '../helpers/drachtio/index.js';
import { PAGE_ID, PSID, acceptedBusinessCall, sdpTarget, sleep, startHarness, until } from '../helpers/bridgeHarness.js';

const log = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
const META_TONE_HZ = 1000;
const PBX_TONE_HZ = 440;
const available = baresipAvailable();
const skipReason = available ? false : 'baresip is not installed (Debian package baresip-core): SRTP calls with baresip skipped';

/** The bridge's RTP port toward the PBX, from the SDP it sent (an INVITE's offer or a 200 OK's answer). */
function bridgeRtpPort(sdp: string): number {
  const m = /^m=audio (\d+) RTP\/SAVP /m.exec(sdp);
  if (!m) throw new Error(`no RTP/SAVP audio line in the bridge's SDP:\n${sdp}`);
  return Number(m[1]);
}

/** A packet that looks like SRTP from the PBX (right address, payload type, a tag) but was not made with its key. */
async function sendForgedSrtp(port: number, count: number): Promise<void> {
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  for (let i = 0; i < count; i++) {
    const packet = Buffer.alloc(12 + 160 + 10, 0x55);
    packet[0] = 0x80;
    packet[1] = 0; // PCMU
    packet.writeUInt16BE(1000 + i, 2);
    packet.writeUInt32BE(160 * i, 4);
    packet.writeUInt32BE(0x1234abcd, 8);
    await new Promise<void>((resolve) => socket.send(packet, port, '127.0.0.1', () => resolve()));
  }
  socket.close();
}

function heardAt(ua: { heard(): { pcm: Int16Array; sampleRate: number } | undefined }, hz: number): ReturnType<typeof analyzeTone> | undefined {
  const heard = ua.heard();
  if (!heard || heard.pcm.length === 0) return undefined;
  const rate = heard.sampleRate;
  // The last second before the hang-up, without its final 200 ms.
  return analyzeTone(heard.pcm.slice(-Math.round(rate * 1.2), -Math.round(rate * 0.2)), rate, hz);
}

/**
 * A consumer-initiated call to baresip (mediaenc=srtp-mand) with media.srtp required, through `drachtio`: the double
 * (then the SIP on its wire is checked and forged packets are sent at the bridge's RTP port) or a real server.
 */
async function consumerCallToBaresip(
  t: Test,
  drachtio: DrachtioAddress,
  options: { double?: DrachtioDouble; tls?: boolean },
): Promise<void> {
  const ua = await startBaresipUa({ port: await freeUdpPort(), toneHz: PBX_TONE_HZ, codec: 'PCMU', mediaenc: 'srtp-mand', tls: options.tls });
  t.teardown(() => ua.close());
  const bridge = await startLoopbackBridgeOn(
    { log, codecs: ['PCMU'], config: { media: { workers: 1, rtp: { listen_ip: '127.0.0.1', min_port: 0, max_port: 0 }, srtp: 'required' } } },
    drachtio,
    ua.uri,
  );
  t.teardown(() => bridge.close());

  const callId = bridge.sim.placeCall({ pageId: DEMO_PAGE_ID, psid: DEMO_PSID });
  const session = await bridge.sim.waitForSession(callId, 15_000);
  const wire = options.double;
  const invite = wire?.sent({ method: 'INVITE' })[0];
  if (wire && invite) {
    t.match(invite.body, /^m=audio \d+ RTP\/SAVP 0 101/m, 'the INVITE offers RTP/SAVP');
    t.match(invite.body, /^a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:[A-Za-z0-9+/]{40}$/m, 'with a key for AES_CM_128_HMAC_SHA1_80');
    t.match(invite.body, /^a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:/m, 'and one for AES_CM_128_HMAC_SHA1_32');
    const answer = wire.received({ status: 200 }).find((m) => m.body.includes('m=audio'))!;
    t.match(answer.body, /^m=audio \d+ RTP\/SAVP /m, 'baresip answered RTP/SAVP');
    t.match(answer.body, /^a=crypto:\d+ AES_CM_128_HMAC_SHA1_(80|32) inline:/m, 'with its key for one of our suites');
  }

  await session.whenConnected();
  session.startTone(META_TONE_HZ);
  await sleep(1000);
  if (invite) {
    // Forged SRTP from the PBX's own address: dropped before it reaches the audio, counted by reason.
    await sendForgedSrtp(bridgeRtpPort(invite.body), 20);
  }
  await sleep(1500);
  const atMeta = analyzeTone(session.receivedPcm().slice(-48_000), 48_000, PBX_TONE_HZ);
  t.ok(atMeta.detected, `baresip's ${PBX_TONE_HZ} Hz heard at Meta through SRTP (${JSON.stringify(atMeta)})`);
  if (invite) {
    const metrics = await bridge.metrics.text();
    const dropped = /msb_rtp_dropped_total\{reason="srtp_auth"\} (\d+)/.exec(metrics);
    t.equal(Number(dropped?.[1] ?? 0), 20, 'the 20 forged packets counted as msb_rtp_dropped_total{reason="srtp_auth"}');
  }

  bridge.sim.hangUp(callId);
  await until(() => bridge.daemon.controller.registry.size === 0, 3000, 'call released');
  await sleep(300);
  const atPbx = heardAt(ua, META_TONE_HZ);
  t.ok(atPbx?.detected, `Meta's ${META_TONE_HZ} Hz heard by baresip through SRTP (${JSON.stringify(atPbx)})`);
  if (!atPbx?.detected || !atMeta.detected) t.comment(ua.output().split('\n').slice(-15).join('\n'));
}

t.test('consumer-initiated call to baresip with mediaenc=srtp-mand: SRTP both ways, tones checked, forged packets dropped and counted', { skip: skipReason }, async (t) => {
  const drachtio = await startDrachtioDouble({ sipNetwork: 'udp' });
  t.teardown(() => drachtio.close());
  await consumerCallToBaresip(t, drachtio, { double: drachtio });
});

/** A real drachtio-server from the environment (DRACHTIO_HOST, DRACHTIO_PORT, DRACHTIO_SECRET). */
const real: DrachtioAddress | undefined =
  process.env.DRACHTIO_HOST && process.env.DRACHTIO_SECRET
    ? { host: process.env.DRACHTIO_HOST, port: Number(process.env.DRACHTIO_PORT || 9022), secret: process.env.DRACHTIO_SECRET }
    : undefined;
const realSkip =
  skipReason ||
  (real ? false : 'real drachtio-server variant skipped: set DRACHTIO_HOST, DRACHTIO_PORT and DRACHTIO_SECRET (baresip plays the PBX)');
const tlsSkip =
  realSkip ||
  (process.env.DRACHTIO_TLS === '1'
    ? false
    : 'real drachtio-server TLS variant skipped: set DRACHTIO_TLS=1 when that drachtio-server has a TLS listener (<tls> key and certificate, a transport=tls contact)');

t.test('through a real drachtio-server (UDP): consumer-initiated SRTP call to baresip, tones both ways', { skip: realSkip }, async (t) => {
  await consumerCallToBaresip(t, real!, {});
});

t.test('through a real drachtio-server over TLS (;transport=tls target): consumer-initiated SRTP call to baresip', { skip: tlsSkip }, async (t) => {
  await consumerCallToBaresip(t, real!, { tls: true });
});

t.test('business-initiated call from baresip with mediaenc=srtp-mand: the bridge answers RTP/SAVP, tones checked', { skip: skipReason }, async (t) => {
  const drachtio = await startDrachtioDouble({ sipNetwork: 'udp' });
  t.teardown(() => drachtio.close());
  const bridge = await startLoopbackBridgeOn(
    { log, codecs: ['PCMU'], config: { media: { workers: 1, rtp: { listen_ip: '127.0.0.1', min_port: 0, max_port: 0 }, srtp: 'optional' } } },
    drachtio,
    'sip:unused@127.0.0.1:5',
  );
  t.teardown(() => bridge.close());
  const connectSeen = bridge.sim.graph.events.waitFor('connect');
  const sip = drachtio.server.sip;
  const ua = await startBaresipUa({
    port: await freeUdpPort(),
    toneHz: PBX_TONE_HZ,
    codec: 'PCMU',
    mediaenc: 'srtp-mand',
    dial: `sip:${PSID}@${sip.address}:${sip.port}`,
  });
  t.teardown(() => ua.close());
  const [connect] = await connectSeen;
  const offer = drachtio.received({ method: 'INVITE' })[0]!;
  t.match(offer.body, /^m=audio \d+ RTP\/SAVP /m, 'baresip offered RTP/SAVP');
  bridge.sim.graph.consumerAccept(connect.callId);
  const ok = await until(() => drachtio.sent({ status: 200 }).find((m) => m.body.includes('m=audio')), 5000, '200 OK with SDP');
  t.match(ok.body, /^m=audio \d+ RTP\/SAVP /m, 'the bridge answered RTP/SAVP (media.srtp: optional takes an SRTP offer)');
  const line = /^a=crypto:(\d+) (\S+) inline:(\S+)$/m.exec(ok.body);
  t.ok(line, 'with one a=crypto line');
  const offered = new RegExp(`^a=crypto:${line?.[1]} ${line?.[2]} inline:(\\S+)`, 'm').exec(offer.body);
  t.ok(offered, `the tag and suite of one of baresip's lines (${line?.[2]})`);
  t.not(offered?.[1], line?.[3], 'with our own key, not an echo of theirs');

  const session = await bridge.sim.waitForSession(connect.callId, 10_000);
  await session.whenConnected();
  session.startTone(META_TONE_HZ);
  await sleep(2500);
  const atMeta = analyzeTone(session.receivedPcm().slice(-48_000), 48_000, PBX_TONE_HZ);
  t.ok(atMeta.detected, `baresip's ${PBX_TONE_HZ} Hz heard at Meta (${JSON.stringify(atMeta)})`);
  bridge.sim.hangUp(connect.callId);
  await until(() => bridge.daemon.controller.registry.size === 0, 3000, 'call released');
  await sleep(300);
  const atPbx = heardAt(ua, META_TONE_HZ);
  t.ok(atPbx?.detected, `Meta's ${META_TONE_HZ} Hz heard by baresip (${JSON.stringify(atPbx)})`);
  if (!atPbx?.detected || !atMeta.detected) t.comment(ua.output().split('\n').slice(-15).join('\n'));
});

t.test('media.srtp required against a plain-RTP PBX: its offer gets 488 with a Reason, its plain answer ends the call', async (t) => {
  const h = await startHarness({ config: { media: { workers: 1, rtp: { listen_ip: '127.0.0.1', min_port: 0, max_port: 0 }, srtp: 'required' } } });
  t.teardown(() => h.close());
  const pbxRtp = await createRtpPeer({ codec: 'PCMU' });
  t.teardown(() => pbxRtp.close());

  const call = h.drachtio.pbx.call({ user: PSID, sdp: pbxRtp.sdp() });
  const final = await call.final;
  t.equal(final.status, 488, 'plain RTP/AVP offer refused with 488');
  const refusal = h.drachtio.sent({ status: 488 })[0]!;
  t.match(refusal.get('reason') ?? '', /^SIP;cause=488;text=".*SRTP required.*offered plain RTP\/AVP"$/, 'Reason header says why');
  t.equal(h.sim.graph.calls.size, 0, 'Meta was never called');
  await until(() => h.daemon.controller.registry.size === 0, 2000, 'nothing left');

  // A consumer-initiated call: the INVITE offers RTP/SAVP only; a PBX that answers plain RTP/AVP gets a BYE.
  const offered = new Promise<string>((resolve, reject) => {
    h.drachtio.pbx.onInvite(async (invite) => {
      try {
        const dialog = await invite.answer(pbxRtp.sdp());
        await dialog.waitForBye(3000);
        resolve(invite.sdp);
      } catch (err) {
        reject(err);
      }
    });
  });
  const callId = h.sim.placeCall({ pageId: PAGE_ID, psid: PSID });
  const ended = h.sim.waitForEnd(callId, 5000).catch(() => undefined);
  const offer = await offered;
  t.match(offer, /^m=audio \d+ RTP\/SAVP /m, 'our INVITE offered RTP/SAVP');
  t.pass('the plain answer was followed by our BYE');
  await ended;
  t.not(h.sim.call(callId)?.state, 'accepted', 'the call was never accepted toward Meta');
  await until(() => h.daemon.controller.registry.size === 0, 3000, 'call released');
});

t.test('an SRTP leg (AES_CM_128_HMAC_SHA1_32) behaves like a plain one: early media, transcoding, DTMF both ways in SRTP, SRTCP', async (t) => {
  const h = await startHarness({
    codecs: ['PCMU'],
    config: { media: { workers: 1, rtp: { listen_ip: '127.0.0.1', min_port: 0, max_port: 0 }, srtp: 'required' } },
    routes: [
      { name: 'queue', match: {}, targets: ['sip:queue@127.0.0.1:5080'], target_timeout_ms: 20_000, codecs: ['PCMU'], answer_mode: 'immediate' },
    ],
  });
  t.teardown(() => h.close());
  const peer = await createRtpPeer({ codec: 'PCMU', tePt: 101, teClockRate: 8000, srtp: 'AES_CM_128_HMAC_SHA1_32', rtcpMux: true });
  t.teardown(() => peer.close());
  const invited = new Promise<PbxInvite>((resolve) => {
    h.drachtio.pbx.onInvite((invite) => {
      const target = sdpTarget(invite.sdp);
      peer.setRemote(target.address, target.port);
      peer.useCrypto(invite.sdp);
      invite.ringing({ status: 183, sdp: peer.sdp() });
      peer.startTone(800); // the queue's announcement, in SRTP
      resolve(invite);
    });
  });
  const callId = h.sim.placeCall({ pageId: PAGE_ID, psid: PSID });
  const invite = await invited;
  t.match(peer.sdp(), /^a=crypto:2 AES_CM_128_HMAC_SHA1_32 /m, 'the PBX chose our second line (the 32-bit tag)');
  const session = await h.sim.waitForSession(callId);
  await session.whenConnected();
  await until(() => session.receivedPcm().length >= 48_000, 10_000, 'a second of audio at Meta');
  await sleep(300);
  const early = analyzeTone(session.receivedPcm().slice(-24_000), 48_000, 800);
  t.ok(early.detected, `early media (800 Hz) in SRTP heard at Meta while the PBX rings (${JSON.stringify(early)})`);

  const dialog = await invite.answer(peer.sdp());
  peer.startTone(PBX_TONE_HZ);
  session.startTone(META_TONE_HZ);
  await sleep(1500);
  const atMeta = analyzeTone(session.receivedPcm().slice(-24_000), 48_000, PBX_TONE_HZ);
  const atPbx = analyzeTone(peer.receivedPcm().slice(-4000), 8000, META_TONE_HZ);
  t.ok(atMeta.detected, `PCMU in SRTP, transcoded: ${PBX_TONE_HZ} Hz at Meta (${JSON.stringify(atMeta)})`);
  t.ok(atPbx.detected, `and ${META_TONE_HZ} Hz decrypted at the PBX (${JSON.stringify(atPbx)})`);

  peer.stopTone();
  session.stopTone();
  await peer.sendDigits('159#', 120, 100);
  await until(() => session.receivedDtmf().length >= 4, 5000, 'digits at Meta').catch(() => undefined);
  t.equal(session.receivedDtmf().map((d) => d.digit).join(''), '159#', 'RFC 4733 digits inside SRTP reach the person');
  for (const digit of '*0') {
    session.sendDtmf(digit, 120);
    await sleep(250);
  }
  await until(() => peer.receivedDtmf().length >= 2, 5000, 'digits at the PBX').catch(() => undefined);
  t.equal(peer.receivedDtmf().join(''), '*0', "the person's digits reach the PBX as RFC 4733 inside SRTP");
  await until(() => peer.srtpStats.rtcp > 0, 8000, 'SRTCP').catch(() => undefined);
  t.ok(peer.srtpStats.rtcp > 0, `SRTCP from the bridge authenticated at the PBX (${JSON.stringify(peer.srtpStats)})`);
  t.equal(peer.srtpStats.refused, 0, 'nothing the bridge sent failed authentication');
  // SRTCP from the PBX: a receiver report passes, the same report with a flipped bit is dropped and counted.
  const report = Buffer.alloc(8);
  report[0] = 0x80;
  report[1] = 201;
  report.writeUInt16BE(1, 2);
  report.writeUInt32BE(peer.ssrc, 4);
  const srtpAuthDrops = async (): Promise<number> =>
    Number(/msb_rtp_dropped_total\{reason="srtp_auth"\} (\d+)/.exec(await h.metrics.text())?.[1] ?? 0);
  const before = await srtpAuthDrops();
  peer.sendRtcp(report);
  peer.sendRtcp(report, true);
  // The call's media runs on a media thread, whose counters reach the main thread's metrics with its next load
  // report: wait for the drop to show, then one more report, so a second (wrong) drop would show too.
  for (let waited = 0; waited < 5000 && (await srtpAuthDrops()) === before; waited += 100) await sleep(100);
  await sleep(1500);
  t.equal((await srtpAuthDrops()) - before, 1, 'of an SRTCP report and its tampered copy, only the tampered one is dropped');

  h.sim.hangUp(callId);
  await dialog.waitForBye(2000);
  await until(() => h.daemon.controller.registry.size === 0, 2000, 'call released');
});

t.test('re-INVITEs on an SRTP call: hold keeps both keys, a new key from the PBX is used at once, ours stays', async (t) => {
  const h = await startHarness({ config: { media: { workers: 1, rtp: { listen_ip: '127.0.0.1', min_port: 0, max_port: 0 }, srtp: 'optional' } } });
  t.teardown(() => h.close());
  const peer = await createRtpPeer({ codec: 'PCMA', srtp: 'AEAD_AES_128_GCM' });
  t.teardown(() => peer.close());
  const { callId, final } = await acceptedBusinessCall(h, peer.sdp());
  t.equal(final.status, 200);
  t.match(final.sdp, /^m=audio \d+ RTP\/SAVP 8/m, 'answered RTP/SAVP');
  t.match(final.sdp, /^a=crypto:1 AEAD_AES_128_GCM inline:[A-Za-z0-9+/]{38}==$/m, 'AEAD_AES_128_GCM: 28 bytes of key and salt');
  const ourKey = (sdp: string): string | undefined => /^a=crypto:\d+ \S+ inline:(\S+)/m.exec(sdp)?.[1];
  const firstKey = ourKey(final.sdp);
  const target = sdpTarget(final.sdp);
  peer.setRemote(target.address, target.port);
  peer.useCrypto(final.sdp);
  const session = await h.sim.waitForSession(callId);
  await session.whenConnected();
  const dialog = final.dialog!;

  const hold = await dialog.reinvite(peer.sdp('sendonly'));
  t.equal(hold.status, 200, 'hold answered');
  t.equal(ourKey(hold.body), firstKey, 'hold: our key unchanged');
  const unhold = await dialog.reinvite(peer.sdp('sendrecv'));
  t.equal(ourKey(unhold.body), firstKey, 'unhold: our key unchanged');

  peer.renewKey();
  const rekey = await dialog.reinvite(peer.sdp());
  t.equal(rekey.status, 200, 'a re-INVITE with a new key is answered');
  t.equal(ourKey(rekey.body), firstKey, 'the PBX renewed its key; ours stays');
  peer.startTone(PBX_TONE_HZ);
  session.startTone(META_TONE_HZ);
  await sleep(1500);
  const atMeta = analyzeTone(session.receivedPcm().slice(-24_000), 48_000, PBX_TONE_HZ);
  const atPbx = analyzeTone(peer.receivedPcm().slice(-4000), 8000, META_TONE_HZ);
  t.ok(atMeta.detected, `after the PBX's new key, its ${PBX_TONE_HZ} Hz is heard at Meta (${JSON.stringify(atMeta)})`);
  t.ok(atPbx.detected, `and Meta's ${META_TONE_HZ} Hz at the PBX under our unchanged key (${JSON.stringify(atPbx)})`);
  t.equal(peer.srtpStats.refused, 0);
  await dialog.bye();
  await until(() => h.daemon.controller.registry.size === 0, 2000, 'call released');
});

t.test('a reload (SIGHUP) applies media.srtp to the next call from the PBX', async (t) => {
  const h = await startHarness();
  t.teardown(() => h.close());
  const pbxRtp = await createRtpPeer({ codec: 'PCMU' });
  t.teardown(() => pbxRtp.close());
  h.daemon.reload({ ...h.config, media: { ...h.config.media, srtp: 'required' } });
  const final = await h.drachtio.pbx.call({ user: PSID, sdp: pbxRtp.sdp() }).final;
  t.equal(final.status, 488, 'after the reload a plain offer is refused');
  t.match(final.response.get('reason') ?? '', /SRTP required/);
});
