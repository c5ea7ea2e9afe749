import t from 'tap';
import type { DtmfEvent } from '../../../src/calls/ports.js';
import { parseRtp, parseTelephoneEvent } from '../../../src/media/rtp.js';
import { createEngine, setupCall, sleep, until } from './setup.js';

const { pool, engine, log } = await createEngine();
t.teardown(() => {
  engine.close();
  pool.close();
});

const DIGITS = '0123456789*#';

/** Final durations (telephone-event clock units) of the events in `packets`, one per event timestamp. */
function endDurations(packets: Buffer[], tePt: number): number[] {
  const seen = new Map<number, number>();
  for (const packet of packets) {
    const h = parseRtp(packet);
    if (!h || h.payloadType !== tePt) continue;
    const e = parseTelephoneEvent(packet.subarray(h.payloadOffset, h.payloadOffset + h.payloadLength));
    if (e?.end) seen.set(h.timestamp, e.duration);
  }
  return [...seen.values()];
}

for (const clockRate of [48000, 8000]) {
  t.test(`RFC 4733 digits PBX -> Meta with Meta telephone-event/${clockRate}`, async (t) => {
    const { leg, media, peer } = await setupCall(t, engine, log, { codec: 'PCMU', metaTe: { pt: 126, clockRate } });
    const events: string[] = [];
    media.on('dtmf', (e) => events.push(`${e.direction}:${e.digit}`));
    await peer.sendDigits(DIGITS, 100, 80);
    await until(() => leg.core.receivedDtmf().length >= DIGITS.length, 5000, 'digits at Meta');
    await sleep(100);
    t.equal(leg.core.receivedDtmf().join(''), DIGITS, 'every digit once, in order');
    t.same(events, [...DIGITS].map((d) => `to_messenger:${d}`));
    const durations = endDurations(leg.sent, 126);
    t.equal(durations.length, DIGITS.length);
    const expected = (100 * clockRate) / 1000;
    for (const d of durations) t.ok(Math.abs(d - expected) <= expected * 0.25, `duration ${d} ~ ${expected} units`);
  });

  t.test(`RFC 4733 digits Meta -> PBX with Meta telephone-event/${clockRate}`, async (t) => {
    const { leg, media, peer } = await setupCall(t, engine, log, { codec: 'PCMA', metaTe: { pt: 126, clockRate } });
    // Audio from Meta flowing too, as in a call.
    leg.core.startTone(440, -20);
    const events: string[] = [];
    media.on('dtmf', (e) => events.push(`${e.direction}:${e.digit}`));
    await leg.core.sendDigits(DIGITS, 100, 80);
    await until(() => peer.receivedDtmf().length >= DIGITS.length, 5000, 'digits at the PBX');
    t.equal(peer.receivedDtmf().join(''), DIGITS, 'every digit once, in order');
    t.same(events, [...DIGITS].map((d) => `to_pbx:${d}`));
    // Durations at the PBX are in its 8 kHz clock; the PBX stream keeps one SSRC for audio and events.
    const te = peer.received.filter((h) => h.payloadType === 101);
    t.ok(te.length >= DIGITS.length * 4);
    t.equal(new Set(peer.received.map((h) => h.ssrc)).size, 1, 'one SSRC toward the PBX');
    const seqs = peer.received.map((h) => h.sequenceNumber);
    let misordered = 0;
    for (let i = 1; i < seqs.length; i++) if (((seqs[i]! - seqs[i - 1]! + 0x10000) & 0xffff) !== 1) misordered++;
    t.ok(misordered <= 2, `sequence numbers continuous toward the PBX (${misordered} breaks)`);
  });
}

t.test('RFC 4733 digits from Meta toward a PBX without telephone-event are reported for SIP INFO, not sent in RTP', async (t) => {
  const { leg, media, peer } = await setupCall(t, engine, log, { codec: 'PCMU', metaTe: { pt: 126, clockRate: 48000 }, pbxTePt: null });
  leg.core.startTone(440, -20);
  const events: string[] = [];
  media.on('dtmf', (e) => events.push(`${e.direction}:${e.via}:${e.digit}`));
  await leg.core.sendDigits('4*', 100, 80);
  await until(() => events.length >= 2, 5000, 'digit events');
  t.same(events, ['to_pbx:none:4', 'to_pbx:none:*'], 'each digit once, marked as not carried in RTP');
  t.equal(peer.received.filter((h) => h.payloadType !== 0).length, 0, 'only PCMU audio toward the PBX');
});

t.test('Opus PBX with telephone-event/48000 <-> Meta telephone-event/8000: durations converted both ways', async (t) => {
  const { leg, peer } = await setupCall(t, engine, log, {
    codec: 'opus',
    pbxTePt: 102,
    pbxTeClockRate: 48000,
    metaTe: { pt: 126, clockRate: 8000 },
  });
  await peer.sendDigits('37', 100, 80);
  await leg.core.sendDigits('*9', 100, 80);
  await until(() => leg.core.receivedDtmf().length >= 2 && peer.receivedDtmf().length >= 2, 5000, 'digits both ways');
  t.equal(leg.core.receivedDtmf().join(''), '37');
  t.equal(peer.receivedDtmf().join(''), '*9');
  for (const d of endDurations(leg.sent, 126)) t.ok(Math.abs(d - 800) <= 200, `toward Meta ${d} ~ 800 units at 8 kHz`);
  const atPbx = peer.received.filter((h) => h.payloadType === 102);
  t.ok(atPbx.length > 0);
});

t.test('digits from SIP INFO reach Meta as RFC 4733', async (t) => {
  const { leg, media } = await setupCall(t, engine, log, { codec: 'PCMU', metaTe: { pt: 126, clockRate: 48000 } });
  const events: DtmfEvent[] = [];
  media.on('dtmf', (e) => events.push(e));
  for (const digit of '19#') media.sendDtmfToMessenger({ digit, durationMs: 120 });
  await until(() => leg.core.receivedDtmf().length >= 3, 5000, 'digits at Meta');
  t.equal(leg.core.receivedDtmf().join(''), '19#');
  t.equal(events.length, 3);
  const durations = endDurations(leg.sent, 126);
  for (const d of durations) t.ok(Math.abs(d - 5760) <= 960, `duration ${d} ~ 5760 units (120 ms at 48 kHz)`);
});

