import t from 'tap';
import type { Test } from 'tap';
import { pino } from 'pino';
import sdpTransform from 'sdp-transform';
import { WeriftMessengerLegFactory } from '../../../../src/messenger/WeriftMessengerLegFactory.js';
import type { WeriftMessengerLeg } from '../../../../src/messenger/WeriftMessengerLeg.js';
import { MetaMediaServer } from '../../../../src/simulator/media/MetaMediaServer.js';
import type { AnswerOptions, MetaMediaSession } from '../../../../src/simulator/media/MetaMediaServer.js';
import {
  OpusCapture,
  OpusToneSender,
  dtmfFrequencies,
  lastDominant,
  waitUntil,
} from '../../../helpers/opusTone.js';

const log = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });

let server: MetaMediaServer;
t.before(async () => {
  server = await MetaMediaServer.create({ listenIp: '127.0.0.1', rtcMinPort: 43000, rtcMaxPort: 43999, log });
});
t.teardown(() => server.close());

const factory = new WeriftMessengerLegFactory({ iceListenIps: ['127.0.0.1'], log });

async function call(
  t: Test,
  options: AnswerOptions = {},
): Promise<{ leg: WeriftMessengerLeg; session: MetaMediaSession; answer: string; offer: string }> {
  const leg = factory.create({ callId: t.name, log });
  const offer = await leg.createOffer();
  const { sdp, session } = await server.answerOffer(offer, options);
  t.teardown(() => {
    leg.close();
    session.close();
  });
  await leg.applyAnswer(sdp);
  await Promise.all([leg.whenConnected(AbortSignal.timeout(5000)), session.whenConnected()]);
  return { leg, session, answer: sdp, offer };
}

t.test('the answer is shaped like Meta sample answer', async (t) => {
  const { answer, offer } = await call(t);
  const parsed = sdpTransform.parse(answer);
  t.equal(parsed.icelite, 'ice-lite', 'session-level a=ice-lite');
  t.same(parsed.groups, [{ type: 'BUNDLE', mids: '0' }]);
  t.equal(parsed.media.length, 1);
  const m = parsed.media[0]!;
  t.equal(m.type, 'audio');
  t.equal(m.protocol, 'UDP/TLS/RTP/SAVPF');
  t.equal(String(m.payloads), '111', 'Opus only');
  t.same(
    m.rtp.map((r) => [r.payload, r.codec, r.rate, r.encoding]),
    [[111, 'opus', 48000, 2]],
  );
  t.equal(
    m.fmtp.find((f) => f.payload === 111)?.config,
    'minptime=10;useinbandfec=1;usedtx=1;maxplaybackrate=16000;maxaveragebitrate=20000',
  );
  t.equal(m.setup, 'passive');
  t.equal(m.rtcpMux, 'rtcp-mux');
  t.equal(String(m.mid), '0');
  t.ok(m.iceUfrag && m.icePwd);
  t.match(m.fingerprint, { type: 'sha-256', hash: /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/ });
  t.ok((m.candidates ?? []).length > 0);
  for (const c of m.candidates ?? []) {
    t.match(c, { transport: 'udp', ip: '127.0.0.1', type: 'host' });
    t.equal(c.port, m.port, 'candidate port is the m= port');
  }
  t.not(answer, offer);
});

t.test('a second session gets its own transport', async (t) => {
  const a = await call(t);
  const b = await call(t);
  const ma = sdpTransform.parse(a.answer).media[0]!;
  const mb = sdpTransform.parse(b.answer).media[0]!;
  t.not(ma.port, mb.port);
  t.not(ma.iceUfrag, mb.iceUfrag);
  t.equal(server.sessionCount >= 2, true);
});

t.test('telephoneEvent keeps telephone-event/48000; RFC 4733 from the business is seen, digits to it are in-band', async (t) => {
  const { leg, session, answer } = await call(t, { telephoneEvent: true });
  const m = sdpTransform.parse(answer).media[0]!;
  t.same(
    m.rtp.map((r) => [r.payload, r.codec, r.rate]),
    [
      [111, 'opus', 48000],
      [110, 'telephone-event', 48000],
    ],
  );
  t.same(leg.negotiated(), { opusPt: 111, telephoneEvent: { pt: 110, clockRate: 48000 } });
  t.ok(session.telephoneEvent);

  const sender = new OpusToneSender(leg, { pt: 111, hz: 1000 }).start();
  t.teardown(() => sender.stop());
  await waitUntil(() => session.packetsReceived > 5, 10000, 'audio at Meta');
  await sender.sendEvent({ pt: 110, digit: '3', durationMs: 120, clockRate: 48000 });
  await sender.sendEvent({ pt: 110, digit: '*', durationMs: 80, clockRate: 48000 });
  await waitUntil(() => session.receivedTelephoneEvents().length >= 2, 10000, 'RFC 4733 events at Meta');
  const events = session.receivedTelephoneEvents();
  t.equal(events.length, 2, 'two events, one RTP timestamp each');
  t.ok(events[0]!.marker, 'first packet of an event has the marker bit');
  t.equal(events[0]!.packets, 6 + 2, '120 ms: six updates and two more end packets');
  t.not(events[0]!.timestamp, events[1]!.timestamp);

  const capture = new OpusCapture(leg, { opusPt: 111, telephoneEventPt: 110 });
  session.sendDtmf('7', 160);
  await waitUntil(() => capture.inbandDigits.length >= 1, 10000, 'digit at the leg');
  t.same(capture.inbandDigits, ['7'], 'digits from Meta arrive in-band');
  t.equal(capture.events.length, 0);
});

t.test('without telephone-event, DTMF travels as in-band tones both ways', async (t) => {
  const { leg, session } = await call(t);
  t.notOk(session.telephoneEvent);
  const capture = new OpusCapture(leg, { opusPt: 111 });
  session.sendDtmf('1', 200);
  session.sendDtmf('9', 200);
  await waitUntil(() => capture.inbandDigits.length >= 2, 10000, 'in-band digits at the leg');
  t.same(capture.inbandDigits, ['1', '9']);
  t.equal(capture.events.length, 0, 'no RFC 4733 event');

  const sender = new OpusToneSender(leg, { pt: 111, hz: dtmfFrequencies('4'), amplitude: 0.4 }).start();
  t.teardown(() => sender.stop());
  await waitUntil(() => session.receivedPcm().length >= 48000 * 0.2, 10000, 'audio at Meta');
  sender.stop();
  await waitUntil(() => session.receivedDtmf().length >= 1, 10000, 'in-band digit at Meta');
  t.same(
    session.receivedDtmf().map((d) => [d.digit, d.via]),
    [['4', 'inband']],
  );
});

t.test('tones stop and restart', async (t) => {
  const { leg, session } = await call(t);
  const capture = new OpusCapture(leg, { opusPt: 111 });
  session.startTone(440);
  await waitUntil(() => capture.samples >= 48000 * 0.5, 10000, '440 Hz');
  t.equal(lastDominant(capture.pcm()).frequency, 440);
  session.stopTone();
  await new Promise((resolve) => setTimeout(resolve, 150));
  const packetsAfterStop = capture.packets;
  await new Promise((resolve) => setTimeout(resolve, 200));
  t.equal(capture.packets, packetsAfterStop, 'nothing sent while silent (like DTX)');
  capture.clear();
  session.startTone(1000);
  await waitUntil(() => capture.samples >= 48000 * 0.5, 10000, '1 kHz');
  t.equal(lastDominant(capture.pcm()).frequency, 1000);
});

t.test("'no-media' fires when the business sends nothing, and not while it sends", async (t) => {
  const silent = await call(t, { noMediaTimeoutMs: 1500 });
  const talking = await call(t, { noMediaTimeoutMs: 1500 });
  let silentNoMedia = 0;
  let talkingNoMedia = 0;
  silent.session.on('no-media', () => silentNoMedia++);
  talking.session.on('no-media', () => talkingNoMedia++);
  const sender = new OpusToneSender(talking.leg, { pt: 111, hz: 1000 }).start();
  t.teardown(() => sender.stop());
  await new Promise((resolve) => setTimeout(resolve, 3500));
  t.equal(silentNoMedia, 1, 'silent call reported once');
  t.equal(talkingNoMedia, 0, 'call with media not reported');
  t.ok(talking.session.packetsReceived > 20);
});

t.test('renegotiation offer: same transport, actpass, two m=audio like media_update', async (t) => {
  const { leg, session, answer } = await call(t);
  const offer = session.renegotiationOffer({ secondMLine: true });
  const parsed = sdpTransform.parse(offer);
  const first = sdpTransform.parse(answer).media[0]!;
  t.equal(parsed.icelite, 'ice-lite');
  t.same(parsed.groups, [{ type: 'BUNDLE', mids: '0 1' }]);
  t.same(
    parsed.media.map((m) => [m.type, String(m.mid), m.direction, m.setup]),
    [
      ['audio', '0', 'recvonly', 'actpass'],
      ['audio', '1', 'sendonly', 'actpass'],
    ],
  );
  for (const m of parsed.media) {
    t.equal(m.iceUfrag, first.iceUfrag, 'same ICE credentials');
    t.equal(m.fingerprint?.hash, first.fingerprint?.hash, 'same DTLS certificate');
    t.equal(m.port, first.port, 'same port');
  }
  t.ok(Number(parsed.origin?.sessionVersion) > Number(sdpTransform.parse(answer).origin?.sessionVersion));

  const passive = (await leg.applyOffer(offer)).replace(/a=setup:active/g, 'a=setup:passive');
  await t.rejects(session.applyRenegotiationAnswer(passive), /setup:active/, 'an answer taking the passive role is refused');
  const single = session.renegotiationOffer({ secondMLine: false });
  t.equal(sdpTransform.parse(single).media.length, 1);
  await session.applyRenegotiationAnswer(await leg.applyOffer(single));
});

t.test('close() frees the session; whenConnected rejects when closed first', async (t) => {
  const leg = factory.create({ callId: 'close-first', log });
  t.teardown(() => leg.close());
  const before = server.sessionCount;
  const { session } = await server.answerOffer(await leg.createOffer());
  t.equal(server.sessionCount, before + 1);
  const connected = session.whenConnected();
  session.close();
  session.close();
  await t.rejects(connected, /closed/);
  t.equal(server.sessionCount, before);
  t.throws(() => session.startTone(1000), /closed/);
});
