import t from 'tap';
import { pino } from 'pino';
import type { RtpEndpoint } from '../../../src/core/rtp.js';
import { FrameClock } from '../../../src/media/FrameClock.js';
import { MessengerStream, OPUS_SILENCE_FRAME } from '../../../src/media/MessengerStream.js';
import { parseRtp } from '../../../src/media/rtp.js';

const log = pino({ level: 'silent' });
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const timers = (): number => process.getActiveResourcesInfo().filter((name) => name === 'Timeout').length;

/** A leg that keeps what the stream sends toward Meta. */
function recordingLeg(): RtpEndpoint & { sent: Buffer[] } {
  const sent: Buffer[] = [];
  return { sent, sendRtp: (packet: Buffer) => void sent.push(packet), onRtp: () => () => undefined };
}

t.test('streams on one clock each send silence every 20 ms, on one timer between them', async (t) => {
  const before = timers();
  const clock = new FrameClock(20);
  const legs = Array.from({ length: 10 }, () => recordingLeg());
  const streams = legs.map((leg) => new MessengerStream({ leg, log, clock }));
  for (const s of streams) {
    s.setFormat({ opusPt: 111 });
    s.start();
  }
  t.equal(clock.size, 10, 'every stream registered');
  t.equal(timers() - before, 1, 'one interval for ten streams');
  await sleep(500);
  for (const [i, leg] of legs.entries()) {
    t.ok(leg.sent.length >= 15 && leg.sent.length <= 30, `stream ${i}: ${leg.sent.length} frames in 500 ms (25 expected)`);
    t.ok(leg.sent.every((p) => p.subarray(12).equals(OPUS_SILENCE_FRAME)), `stream ${i}: silence frames`);
    const seqs = leg.sent.map((p) => parseRtp(p)!.sequenceNumber);
    t.ok(seqs.every((s, k) => k === 0 || ((s - seqs[k - 1]!) & 0xffff) === 1), `stream ${i}: consecutive sequence numbers`);
  }
  // Closing one stream leaves the others going.
  streams[0]!.close();
  const closedCount = legs[0]!.sent.length;
  const otherCount = legs[1]!.sent.length;
  await sleep(200);
  t.equal(legs[0]!.sent.length, closedCount, 'a closed stream sends nothing more');
  t.ok(legs[1]!.sent.length >= otherCount + 5, 'the other streams keep sending');
  for (const s of streams) s.close();
  t.equal(clock.size, 0, 'every stream unregistered');
  t.notOk(clock.running, 'the clock stops with its last stream');
  t.equal(timers(), before, 'no timer left behind');
});

t.test('a stream sends its first frame at once, before the clock ticks (send first)', async (t) => {
  const clock = new FrameClock(1000);
  const leg = recordingLeg();
  const stream = new MessengerStream({ leg, log, clock });
  stream.setFormat({ opusPt: 111 });
  stream.start();
  await sleep(50);
  t.equal(leg.sent.length, 1, 'one silence frame right after start');
  stream.close();
  t.notOk(clock.running, 'stopped');
});

t.test('a closed stream is no longer started and sends none of the audio handed to it afterwards', async (t) => {
  const clock = new FrameClock(1000);
  const leg = recordingLeg();
  const stream = new MessengerStream({ leg, log, clock });
  stream.setFormat({ opusPt: 111 });
  stream.start();
  t.ok(stream.started, 'started');
  await sleep(50);
  stream.close();
  t.notOk(stream.started, 'not started once closed');
  const sent = leg.sent.length;
  stream.sendPcm8k(new Int16Array(160));
  stream.sendPassthrough(OPUS_SILENCE_FRAME, 960);
  t.equal(leg.sent.length, sent, 'nothing sent after close');
});

t.test('a listener that throws neither stops the clock nor the other listeners', async (t) => {
  const errors: unknown[] = [];
  const clock = new FrameClock(10, (err) => errors.push(err));
  let calls = 0;
  const bad = {
    onFrame: () => {
      throw new Error('boom');
    },
  };
  const good = { onFrame: () => void calls++ };
  clock.add(bad);
  clock.add(good);
  await sleep(100);
  clock.delete(bad);
  clock.delete(good);
  t.ok(calls >= 4, `the other listener ran (${calls} ticks)`);
  t.ok(errors.length >= 4, 'each throw reported');
  t.notOk(clock.running, 'stopped');
});
