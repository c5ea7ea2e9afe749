import t from 'tap';
import { buildRtp, buildTelephoneEvent, parseRtp, parseTelephoneEvent } from '../../../src/media/rtp.js';
import { TelephoneEventReceiver, TelephoneEventSender } from '../../../src/media/telephoneEvents.js';

function packet(event: number, end: boolean, duration: number, timestamp: number, seq: number): Buffer {
  return buildRtp({
    payloadType: 101,
    sequenceNumber: seq,
    timestamp,
    ssrc: 1,
    payload: buildTelephoneEvent({ event, end, volume: 10, duration }),
  });
}

function feed(receiver: TelephoneEventReceiver, p: Buffer): void {
  const h = parseRtp(p)!;
  receiver.onPacket(h, parseTelephoneEvent(p.subarray(h.payloadOffset))!);
}

t.test('receiver: one digit per event despite repeated end packets; duration in ms from the clock rate', async (t) => {
  const got: string[] = [];
  const receiver = new TelephoneEventReceiver(48000, {
    begin: (d) => got.push(`begin ${d}`),
    end: (d, ms) => got.push(`end ${d} ${ms}`),
  });
  let seq = 0;
  for (let i = 1; i <= 5; i++) feed(receiver, packet(5, false, i * 960, 1000, seq++));
  for (let i = 0; i < 3; i++) feed(receiver, packet(5, true, 4800, 1000, seq++));
  // A retransmitted end packet arriving late is still the same event.
  feed(receiver, packet(5, true, 4800, 1000, seq++));
  feed(receiver, packet(11, true, 4800, 2000, seq++));
  receiver.close();
  t.same(got, ['begin 5', 'end 5 100', 'begin #', 'end # 100'], 'event codes 5 and 11 read as digits 5 and #, each once');
});

t.test('receiver: an event whose end packets are all lost ends after a timeout', async (t) => {
  const got: string[] = [];
  const receiver = new TelephoneEventReceiver(8000, {
    begin: (d) => got.push(`begin ${d}`),
    end: (d, ms) => got.push(`end ${d} ${ms}`),
  });
  feed(receiver, packet(1, false, 160, 500, 1));
  feed(receiver, packet(1, false, 800, 500, 2));
  t.same(got, ['begin 1'], 'event code 1 begins digit 1');
  await new Promise((r) => setTimeout(r, 400));
  t.same(got, ['begin 1', 'end 1 100'], 'digit 1 ends after the timeout');
  receiver.close();
});

t.test('sender: queued digits, one timestamp per event, three end packets, durations in its clock', async (t) => {
  const sent: { event: number; end: boolean; duration: number; ts: number; marker: boolean }[] = [];
  let now = 10_000;
  const sender = new TelephoneEventSender({
    clockRate: 8000,
    timestampNow: () => (now += 1000),
    emit: (payload, marker, ts) => {
      const e = parseTelephoneEvent(payload)!;
      sent.push({ event: e.event, end: e.end, duration: e.duration, ts, marker });
    },
  });
  t.ok(sender.play('4', 100));
  t.ok(sender.play('*', 60));
  t.notOk(sender.play('x', 60), 'not a digit');
  await new Promise((r) => setTimeout(r, 600));
  sender.close();
  const four = sent.filter((s) => s.event === 4);
  const star = sent.filter((s) => s.event === 10);
  t.equal(new Set(four.map((s) => s.ts)).size, 1);
  t.equal(new Set(star.map((s) => s.ts)).size, 1);
  t.not(four[0]!.ts, star[0]!.ts, 'each event its own timestamp');
  t.ok(four[0]!.marker && star[0]!.marker, 'first packet of each event has the marker bit');
  t.same(four.filter((s) => s.end).map((s) => s.duration), [800, 800, 800]);
  t.same(star.filter((s) => s.end).map((s) => s.duration), [480, 480, 480]);
  t.ok(sent.indexOf(star[0]!) > sent.lastIndexOf(four[four.length - 1]!), 'digits do not overlap');
});
