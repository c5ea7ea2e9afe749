import t from 'tap';
import { DtmfToneDetector, DtmfToneGenerator } from '../../../src/media/dsp/dtmf.js';
import { parseRtp } from '../../../src/media/rtp.js';
import { createEngine, setupCall, sleep, until } from './setup.js';

const { pool, engine, log } = await createEngine();
t.teardown(() => {
  engine.close();
  pool.close();
});

for (const codec of ['PCMU', 'opus'] as const) {
  t.test(`without Meta telephone-event, PBX digits reach Meta as in-band tones (${codec})`, async (t) => {
    const { leg, peer } = await setupCall(t, engine, log, { codec });
    await sleep(100);
    await peer.sendDigits('159#', 120, 100);
    await sleep(400);
    const detector = new DtmfToneDetector(48000);
    const found = detector.process(leg.core.receivedPcm()).map((d) => d.digit);
    t.equal(found.join(''), '159#', 'tones detected in the audio toward Meta');
    t.same(leg.core.receivedDtmf(), [], 'no RFC 4733 toward Meta');
  });
}

// Detection defaults to 'auto' (G.711 PBX only); the Opus case turns it on explicitly.
const detecting = await createEngine({ dtmf: { inbandDetect: true } });
t.teardown(() => {
  detecting.engine.close();
  detecting.pool.close();
});

for (const codec of ['PCMU', 'opus'] as const) {
  t.test(`without Meta telephone-event, tones from Meta are detected and sent to the PBX as RFC 4733 (${codec})`, async (t) => {
    const { leg, media, peer } = await setupCall(t, detecting.engine, detecting.log, { codec });
    const generator = new DtmfToneGenerator(48000, { gapMs: 100 });
    for (const digit of '2580') generator.play(digit, 120);
    leg.core.startSource((frame) => {
      if (!generator.active) return false;
      generator.mixInto(frame);
      return true;
    });
    const events: string[] = [];
    media.on('dtmf', (e) => events.push(`${e.direction}:${e.digit}`));
    await until(() => peer.receivedDtmf().length >= 4, 5000, 'digits at the PBX');
    t.equal(peer.receivedDtmf().join(''), '2580');
    t.same(events, [...'2580'].map((d) => `to_pbx:${d}`));
  });
}

t.test('in-band detection off: tones from Meta are not turned into events', async (t) => {
  const quiet = await createEngine({ dtmf: { inbandDetect: false } });
  t.teardown(() => {
    quiet.engine.close();
    quiet.pool.close();
  });
  const { leg, peer } = await setupCall(t, quiet.engine, quiet.log, { codec: 'PCMU' });
  const generator = new DtmfToneGenerator(48000, { gapMs: 100 });
  for (const digit of '12') generator.play(digit, 120);
  leg.core.startSource((frame) => {
    if (!generator.active) return false;
    generator.mixInto(frame);
    return true;
  });
  await until(() => !generator.active, 3000);
  await sleep(300);
  t.same(peer.receivedDtmf(), []);
  const detector = new DtmfToneDetector(8000);
  t.equal(detector.process(peer.receivedPcm()).map((d) => d.digit).join(''), '12', 'the tones themselves pass');
});

for (const codec of ['PCMU', 'opus'] as const) {
  t.test(`SIP INFO digits while the PBX talks: in-band toward Meta, one packet per 20 ms (${codec})`, async (t) => {
    const { leg, media, peer } = await setupCall(t, engine, log, { codec });
    peer.startTone(300, -30);
    await until(() => leg.core.packetsReceived > 20, 3000, 'PBX audio at Meta');
    const from = leg.sent.length;
    const fromAt = performance.now();
    for (const digit of '46') media.sendDtmfToMessenger({ digit, durationMs: 150 });
    await sleep(700);
    peer.stopTone();
    const packets = leg.sent.length - from;
    const expected = (performance.now() - fromAt) / 20;
    t.ok(packets <= expected * 1.2 + 2, `${packets} packets toward Meta for ~${expected.toFixed(0)} frames`);
    const detector = new DtmfToneDetector(48000);
    t.equal(detector.process(leg.core.receivedPcm()).map((d) => d.digit).join(''), '46');
  });
}

t.test('Opus passthrough switches to encoded tones for a digit and back without a timestamp jump', async (t) => {
  const { leg, media, peer } = await setupCall(t, engine, log, { codec: 'opus' });
  peer.startTone(300, -30);
  await until(() => leg.core.packetsReceived > 20, 3000, 'PBX audio at Meta');
  const from = leg.sent.length;
  media.sendDtmfToMessenger({ digit: '3', durationMs: 200 });
  await sleep(800);
  peer.stopTone();
  const headers = leg.sent.slice(from).map((p) => parseRtp(p)!);
  const tsSteps: number[] = [];
  for (let i = 1; i < headers.length; i++) {
    t.equal((headers[i]!.sequenceNumber - headers[i - 1]!.sequenceNumber) & 0xffff, 1, 'consecutive seq');
    tsSteps.push((headers[i]!.timestamp - headers[i - 1]!.timestamp) | 0);
  }
  t.ok(tsSteps.every((d) => d > 0 && d % 960 === 0), `timestamps advance by whole frames, never back`);
  // A loaded machine stalls the PBX's timer (its next packet then carries the time that passed): a step longer than
  // a frame is a jump only if more media time passed than wall time between the two packets toward Meta. A switch
  // that jumped would show at both edges of the digit.
  const sentAt = leg.sentAt.slice(from);
  const jumps = tsSteps.filter((d, i) => d > 960 && d / 48 > sentAt[i + 1]! - sentAt[i]! + 30);
  t.ok(jumps.length <= 1, `${jumps.length} steps longer than one frame and than the time between them, in ${tsSteps.length}`);
  const detector = new DtmfToneDetector(48000);
  t.equal(detector.process(leg.core.receivedPcm()).map((d) => d.digit).join(''), '3');
});
