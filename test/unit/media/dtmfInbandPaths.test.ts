/**
 * In-band DTMF through the engine when Meta negotiated Opus only: every digit (0-9, *, #, A-D) both ways, the
 * tone muted toward a PBX that gets the digit as RFC 4733, lost packets and DTX inside key presses, talk-off.
 */
import { Encoder } from '@evan/opus';
import t from 'tap';
import { DTMF_DIGITS, DtmfToneDetector, DtmfToneGenerator } from '../../../src/media/dsp/dtmf.js';
import { buildRtp } from '../../../src/media/rtp.js';
import { speechLike } from '../../helpers/tone.js';
import type { FakeMessengerLeg } from './fakeMessengerLeg.js';
import { createEngine, setupCall, sleep, until } from './setup.js';

const { pool, engine, log } = await createEngine();
t.teardown(() => {
  engine.close();
  pool.close();
});

/** Digits found in `pcm`, polled until `expected` many appear or the deadline passes (busy machines lag). */
async function digitsIn(read: () => Int16Array, rate: number, expected: number, deadlineMs: number): Promise<{ digit: string; durationMs: number }[]> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    const found = new DtmfToneDetector(rate).process(read());
    if (found.length >= expected || Date.now() > deadline) return found;
    await sleep(300);
  }
}

/** Milliseconds of `pcm` (8 kHz) in 5 ms blocks louder than -35 dBFS: how much tone got through. */
function loudMs(pcm: Int16Array): number {
  const block = 40;
  const threshold = 32767 * 10 ** (-35 / 20);
  let loud = 0;
  for (let i = 0; i + block <= pcm.length; i += block) {
    let sum = 0;
    for (let n = i; n < i + block; n++) sum += pcm[n]! * pcm[n]!;
    if (Math.sqrt(sum / block) > threshold) loud++;
  }
  return loud * 5;
}

/** The person presses `digits` (tones of `toneMs`, `gapMs` apart) in the audio toward the bridge. */
function pressKeys(leg: FakeMessengerLeg, digits: string, toneMs: number, gapMs: number): DtmfToneGenerator {
  const generator = new DtmfToneGenerator(48000, { gapMs });
  for (const digit of digits) generator.play(digit, toneMs);
  leg.core.startSource((frame) => {
    if (!generator.active) return false;
    generator.mixInto(frame);
    return true;
  });
  return generator;
}

t.test('PBX digits as RFC 4733 at 8 kHz: every digit reaches an Opus-only Meta as tones, in order, nothing else', async (t) => {
  const { leg, media, peer } = await setupCall(t, engine, log, { codec: 'PCMU', pbxTeClockRate: 8000 });
  const events: string[] = [];
  media.on('dtmf', (e) => events.push(`${e.direction}:${e.via}:${e.digit}`));
  await sleep(100);
  await peer.sendDigits(DTMF_DIGITS, 100, 80);
  const found = await digitsIn(() => leg.core.receivedPcm(), 48000, DTMF_DIGITS.length, 5000);
  t.equal(found.map((d) => d.digit).join(''), DTMF_DIGITS, 'all sixteen digits, in order, no false ones');
  t.same(leg.core.receivedDtmf(), [], 'no RFC 4733 toward Meta');
  t.same(events, [...DTMF_DIGITS].map((d) => `to_messenger:inband:${d}`));
});

t.test('SIP INFO digits, even 40 ms ones sent at once, reach Meta as tones of at least 70 ms, in order', async (t) => {
  const { leg, media } = await setupCall(t, engine, log, { codec: 'PCMU' });
  await sleep(100);
  for (const digit of DTMF_DIGITS) media.sendDtmfToMessenger({ digit, durationMs: 40 });
  const found = await digitsIn(() => leg.core.receivedPcm(), 48000, DTMF_DIGITS.length, 8000);
  t.equal(found.map((d) => d.digit).join(''), DTMF_DIGITS);
  const durations = found.map((d) => d.durationMs).sort((a, b) => a - b);
  t.ok(durations[0]! >= 60, `shortest tone ${durations[0]} ms (lengthened from 40 ms)`);
});

t.test('tones from the person: every digit reaches the PBX as RFC 4733, in order, and the tone is muted toward it', async (t) => {
  const { leg, media, peer } = await setupCall(t, engine, log, { codec: 'PCMU' });
  t.ok(media.inbandDetecting, 'detection is on for a G.711 PBX (auto)');
  const events: string[] = [];
  media.on('dtmf', (e) => events.push(`${e.direction}:${e.via}:${e.digit}`));
  const toneMs = 120;
  const generator = pressKeys(leg, DTMF_DIGITS, toneMs, 120);
  await until(() => peer.receivedDtmf().length >= DTMF_DIGITS.length, 10_000, 'digits at the PBX').catch(() => undefined);
  await until(() => !generator.active, 5000);
  await sleep(300);
  t.equal(peer.receivedDtmf().join(''), DTMF_DIGITS);
  t.same(events, [...DTMF_DIGITS].map((d) => `to_pbx:rfc4733:${d}`));
  // Without muting the PBX would hear every tone whole (about 1920 ms); from confirmation on it hears none.
  const loud = loudMs(peer.receivedPcm());
  t.ok(loud < 0.5 * DTMF_DIGITS.length * toneMs, `${loud} ms of tone reached the PBX in band`);
});

t.test('a PBX without telephone-event gets the tones in band, and the digits are reported for SIP INFO', async (t) => {
  const { leg, media, peer } = await setupCall(t, engine, log, { codec: 'PCMU', pbxTePt: null });
  const events: string[] = [];
  media.on('dtmf', (e) => events.push(`${e.direction}:${e.via}:${e.digit}`));
  const generator = pressKeys(leg, '1A#', 120, 120);
  await until(() => !generator.active, 5000);
  await until(() => events.length >= 3, 3000, 'dtmf events').catch(() => undefined);
  t.same(events, ['to_pbx:inband:1', 'to_pbx:inband:A', 'to_pbx:inband:#']);
  const found = await digitsIn(() => peer.receivedPcm(), 8000, 3, 2000);
  t.equal(found.map((d) => d.digit).join(''), '1A#', 'the PBX can detect the tones itself');
  t.same(peer.receivedDtmf(), []);
});

t.test('a packet lost inside a long key press does not give the digit twice', async (t) => {
  const { leg, media, peer } = await setupCall(t, engine, log, { codec: 'PCMU' });
  let audioPackets = 0;
  // Lose the 8th and the 14th packet of a 500 ms tone (each concealed by the decoder).
  leg.dropToBridge = (packet) => {
    const n = ++audioPackets;
    return packet[1]! % 128 === 111 && (n === 8 || n === 14);
  };
  const events: string[] = [];
  media.on('dtmf', (e) => events.push(e.digit));
  const generator = pressKeys(leg, '8', 500, 200);
  await until(() => !generator.active, 5000);
  await until(() => peer.receivedDtmf().length >= 1, 3000, 'the digit at the PBX').catch(() => undefined);
  await sleep(400);
  t.same(peer.receivedDtmf(), ['8']);
  t.same(events, ['8']);
});

t.test('DTX: a digit whose tone is the last thing Meta sends still reaches the PBX', async (t) => {
  const { leg, peer } = await setupCall(t, engine, log, { codec: 'PCMU' });
  const generator = new DtmfToneGenerator(48000);
  generator.play('7', 10_000);
  let frames = 0;
  leg.core.startSource((frame) => {
    // 300 ms of silence first (the bridge's streams settle), then 160 ms of tone, then Meta stops sending (DTX).
    if (++frames > 23) return false;
    if (frames > 15) generator.mixInto(frame);
    return true;
  });
  await until(() => peer.receivedDtmf().length >= 1, 3000, 'the digit at the PBX').catch(() => undefined);
  t.same(peer.receivedDtmf(), ['7']);
});

t.test('30 s of speech-like audio from Meta produces no digit; a key pressed after it does', async (t) => {
  const { leg, media, peer } = await setupCall(t, engine, log, { codec: 'PCMU' });
  const events: string[] = [];
  media.on('dtmf', (e) => events.push(e.digit));
  // 16 kHz, as Meta's encoder is limited to (maxplaybackrate=16000), and a third of the work of 48 kHz.
  const rate = 16000;
  const frame = rate / 50;
  const speech = speechLike(30, rate, 9);
  const tail = new Int16Array(rate * 0.5);
  const key = new DtmfToneGenerator(rate);
  key.play('5', 150);
  key.mixInto(tail.subarray(rate * 0.1));
  const audio = new Int16Array(speech.length + tail.length);
  audio.set(speech);
  audio.set(tail, speech.length);

  const encoder = new Encoder({ channels: 1, sample_rate: rate, application: 'voip' });
  const ssrc = 0x1234abcd;
  let seq = 1000;
  let ts = 5000;
  let offset = 0;
  const packetsBefore = peer.packetsReceived;
  // Four 20 ms frames every 20 ms: the engine follows RTP timestamps, so 30 s take about 8 s.
  while (offset + frame <= audio.length) {
    for (let i = 0; i < 4 && offset + frame <= audio.length; i++) {
      const payload = Buffer.from(encoder.encode(audio.subarray(offset, offset + frame)));
      leg.inject(buildRtp({ payloadType: 111, sequenceNumber: seq, timestamp: ts, ssrc, marker: false, payload }));
      seq = (seq + 1) & 0xffff;
      ts += 960;
      offset += frame;
    }
    await sleep(20);
  }
  await until(() => peer.receivedDtmf().length >= 1, 3000, 'the key at the PBX').catch(() => undefined);
  await sleep(300);
  t.ok(peer.packetsReceived - packetsBefore > 1000, `the speech reached the PBX (${peer.packetsReceived - packetsBefore} packets)`);
  t.same(peer.receivedDtmf(), ['5'], 'only the key press, no talk-off');
  t.same(events, ['5']);
});

t.test("detection is 'auto': on for G.711, off for an Opus PBX and when Meta has telephone-event", async (t) => {
  const g711 = await setupCall(t, engine, log, { codec: 'PCMA' });
  t.ok(g711.media.inbandDetecting);
  const opus = await setupCall(t, engine, log, { codec: 'opus' });
  t.notOk(opus.media.inbandDetecting, 'Opus PBX: tones pass through untouched');
  const te = await setupCall(t, engine, log, { codec: 'PCMU', metaTe: { pt: 101, clockRate: 48000 } });
  t.notOk(te.media.inbandDetecting, 'telephone-event on both legs: events relayed, no in-band processing');
});
