import dgram from 'node:dgram';
import t from 'tap';
import type { Test } from 'tap';
import { LateAudioGuard, MAX_LATE_MS, REBASE_AFTER_MS } from '../../../src/media/LateAudioGuard.js';
import { PbxRtpSocket } from '../../../src/media/PbxRtpSocket.js';
import { buildRtp, parseRtp } from '../../../src/media/rtp.js';
import { sleep, testLogger, until } from './setup.js';

/** A guard on a clock the test moves; 8 kHz, 20 ms packets. */
function guarded(options: { maxLateMs?: number } = {}) {
  let now = 1000;
  const reports: Array<{ dropped: number; maxLateMs: number }> = [];
  const guard = new LateAudioGuard({ clockRate: 8000, now: () => now, onDrops: (r) => reports.push(r), ...options });
  return {
    guard,
    reports,
    at(ms: number) {
      now = ms;
    },
  };
}

t.test('a steady stream with network jitter passes whole', async (t) => {
  const { guard, at } = guarded();
  let admitted = 0;
  for (let i = 0; i < 500; i++) {
    // +-60 ms of jitter, in a pseudo-random but repeatable order
    at(1000 + i * 20 + ((i * 37) % 121) - 60);
    if (guard.admit(1, 160 * i)) admitted++;
  }
  t.equal(admitted, 500);
  t.equal(guard.dropped, 0);
});

t.test('a backlog read after a stall loses its stale head, keeps what is still on time, then flows', async (t) => {
  const { guard, at, reports } = guarded();
  const verdicts: boolean[] = [];
  let i = 0;
  for (; i < 50; i++) {
    at(1000 + i * 20);
    verdicts.push(guard.admit(7, 160 * i));
  }
  // The reader stalls for 2.5 s: 125 packets wait in a queue and are read at once.
  const stallEnd = 1000 + 50 * 20 + 2500;
  for (let k = 0; k < 125; k++, i++) {
    at(stallEnd + k * 0.05);
    verdicts.push(guard.admit(7, 160 * i));
  }
  for (let k = 0; k < 50; k++, i++) {
    at(stallEnd + 20 + k * 20);
    verdicts.push(guard.admit(7, 160 * i));
  }
  t.same(verdicts.slice(0, 50), Array(50).fill(true), 'before the stall: all passed');
  const backlog = verdicts.slice(50, 175);
  // The first packet read after the stall cannot be told from a sender resuming after a pause: it passes.
  t.ok(backlog[0], 'the first packet after the stall passes');
  // Packet k of the backlog is 2500 - 20 k ms late (the first one was due right at the stall's start).
  const expectedDropped = backlog.filter((_, k) => k > 0 && 2500 - 20 * k > MAX_LATE_MS).length;
  t.ok(Math.abs(backlog.filter((v) => !v).length - expectedDropped) <= 1, `~${expectedDropped} stale packets dropped`);
  t.notOk(backlog[1], 'the stale ones behind it, read back to back, are dropped');
  t.ok(backlog.at(-1), 'the newest packet of the backlog is still on time');
  t.same(verdicts.slice(175), Array(50).fill(true), 'after catching up: all passed');
  t.equal(reports.length, 1, 'one report for the episode (reports are rate-limited)');
  t.equal(reports[0]!.dropped, 1);
  t.ok(reports[0]!.maxLateMs > 2400);
});

t.test('a sender that resumes after a pause without advancing its timestamps', async (t) => {
  t.test('with the marker bit: taken at once', async (t) => {
    const { guard, at } = guarded();
    for (let i = 0; i < 50; i++) {
      at(1000 + i * 20);
      guard.admit(3, 160 * i);
    }
    // 5 s of hold; the sender continues its timestamps from where it stopped and marks the talkspurt.
    let passed = 0;
    for (let k = 0; k < 50; k++) {
      at(1000 + 50 * 20 + 5000 + k * 20);
      if (guard.admit(3, 160 * (50 + k), k === 0)) passed++;
    }
    t.equal(passed, 50);
  });
  t.test('without it: taken too, its packets keep their spacing', async (t) => {
    const { guard, at } = guarded();
    for (let i = 0; i < 50; i++) {
      at(1000 + i * 20);
      guard.admit(3, 160 * i);
    }
    let passed = 0;
    for (let k = 0; k < 150; k++) {
      at(1000 + 50 * 20 + 5000 + k * 20);
      if (guard.admit(3, 160 * (50 + k))) passed++;
    }
    t.equal(passed, 150);
    t.equal(guard.dropped, 0);
  });
});

t.test('a reader that stays behind, reading bursts: their stale tails dropped for REBASE_AFTER_MS, then taken', async (t) => {
  const { guard, at } = guarded();
  for (let i = 0; i < 50; i++) {
    at(1000 + i * 20);
    guard.admit(4, 160 * i);
  }
  // From now on the packets wait 2.5 s in a queue and come out five at a time every 100 ms.
  const verdicts: boolean[] = [];
  for (let i = 50; i < 200; i++) {
    const burst = Math.floor((i - 50) / 5);
    at(1000 + 2500 + 50 * 20 + burst * 100 + ((i - 50) % 5) * 0.05);
    verdicts.push(guard.admit(4, 160 * i));
  }
  const rebasedAt = 1 + (REBASE_AFTER_MS / 100) * 5;
  const before = verdicts.slice(0, rebasedAt - 1);
  t.ok(before.every((v, k) => v === (k % 5 === 0)), 'only the first of each burst passes at first');
  t.same(verdicts.slice(rebasedAt), Array(verdicts.length - rebasedAt).fill(true), 'after REBASE_AFTER_MS all pass');
});

t.test('a sender whose media clock runs 20 % slow (a timer-paced sender on a busy machine) passes whole', async (t) => {
  const { guard, at } = guarded();
  let passed = 0;
  for (let i = 0; i < 1000; i++) {
    at(1000 + i * 24 + ((i * 37) % 21) - 10);
    if (guard.admit(5, 160 * i)) passed++;
  }
  t.equal(passed, 1000);
});

t.test('a new SSRC starts its own baseline; timestamps may wrap', async (t) => {
  const { guard, at } = guarded();
  for (let i = 0; i < 20; i++) {
    at(1000 + i * 20);
    t.ok(guard.admit(1, 160 * i));
  }
  // Another stream whose timestamps say nothing about the first one's, wrapping past 2^32.
  const base = 0xffffffff - 160 * 5;
  let passed = 0;
  for (let i = 0; i < 20; i++) {
    at(5000 + i * 20);
    if (guard.admit(2, (base + 160 * i) >>> 0)) passed++;
  }
  t.equal(passed, 20);
  t.equal(guard.dropped, 0);
});

t.test('the guard stays quiet for a stream whose clock runs 0.5 % slow', async (t) => {
  const { guard, at } = guarded();
  let passed = 0;
  for (let i = 0; i < 3000; i++) {
    at(1000 + i * 20 * 1.005);
    if (guard.admit(9, 160 * i)) passed++;
  }
  t.equal(passed, 3000);
});

// ------------------------------------------------------------------------------------------------------------------
// On real sockets: what a PBX-side socket does with a backlog
// ------------------------------------------------------------------------------------------------------------------

async function udp(): Promise<dgram.Socket> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  return s;
}

function pcmuPacket(seq: number, ts: number, ssrc: number): Buffer {
  return buildRtp({ payloadType: 0, sequenceNumber: seq, timestamp: ts, ssrc, marker: seq === 0, payload: Buffer.alloc(160, 0xff) });
}

const STALL_MS = 2500;
const QUEUED = STALL_MS / 20;

/**
 * 25 packets paced at 20 ms, then nothing for 2.5 s, then the 125 packets of that time at once (what a reader that
 * stalled finds in its queue), then 10 more paced. Paced packets carry the wall clock as their timestamp (a real
 * sender's clock; a loaded test machine delays the timers, not the clock); the queued ones carry the times at which
 * they were due. Returns the sequence numbers that came out.
 */
async function sendWithBacklog(send: (packet: Buffer) => void, received: () => number[]): Promise<number[]> {
  const ssrc = 0x1234;
  const t0 = performance.now();
  const clock = (): number => Math.round((performance.now() - t0) * 8);
  let seq = 0;
  for (; seq < 25; seq++) {
    send(pcmuPacket(seq, clock(), ssrc));
    await sleep(20);
  }
  const stallStart = clock();
  await sleep(STALL_MS);
  for (let k = 1; k <= QUEUED; k++, seq++) send(pcmuPacket(seq, stallStart + k * 160, ssrc));
  for (let k = 0; k < 10; k++, seq++) {
    await sleep(20);
    send(pcmuPacket(seq, clock(), ssrc));
  }
  await until(() => received().includes(seq - 1), 3000, 'the last packet');
  return received();
}

/** Queued packet k (1 to QUEUED, seq 24 + k) was at least STALL_MS - 20 k ms late when it was read. */
function checkBacklog(t: Test, seqs: number[]): void {
  const backlog = seqs.filter((s) => s >= 25 && s < 25 + QUEUED);
  const clearlyLate = (STALL_MS - MAX_LATE_MS - 300) / 20;
  t.ok(seqs.filter((s) => s < 25).length >= 24, 'the paced packets before the stall pass');
  t.ok(QUEUED - backlog.length >= clearlyLate, `the backlog's stale head is dropped (${QUEUED - backlog.length} of ${QUEUED} dropped)`);
  t.same(
    backlog.filter((s) => s > 25 && s - 24 <= clearlyLate),
    [],
    `after the first packet read after the stall, none of those more than ${MAX_LATE_MS + 300} ms late passes`,
  );
  const fresh = Array.from({ length: 10 }, (_, i) => 25 + QUEUED + i);
  t.same(seqs.filter((s) => s >= 25 + QUEUED), fresh, 'then it flows again');
}

t.test('PBX socket: audio from the PBX that waited in the queue is not passed on', async (t) => {
  const socket = await PbxRtpSocket.create({ log: testLogger(), listenIp: '127.0.0.1', minPort: 0, maxPort: 0, comedia: true });
  const pbx = await udp();
  t.teardown(() => {
    socket.close();
    pbx.close();
  });
  socket.setFormats({ audioPt: 0, clockRate: 8000 });
  socket.setRemote('127.0.0.1', pbx.address().port, true);
  const seqs: number[] = [];
  socket.setHandlers({ onAudio: (_packet, header) => seqs.push(header.sequenceNumber), onTelephoneEvent: () => undefined });
  checkBacklog(t, await sendWithBacklog((p) => pbx.send(p, socket.port, '127.0.0.1'), () => seqs));
});

t.test('PBX socket: audio toward the PBX that fell behind inside the bridge is not sent', async (t) => {
  const socket = await PbxRtpSocket.create({ log: testLogger(), listenIp: '127.0.0.1', minPort: 0, maxPort: 0, comedia: false });
  const pbx = await udp();
  const worker = await udp();
  t.teardown(() => {
    socket.close();
    pbx.close();
    worker.close();
  });
  socket.setFormats({ audioPt: 0, clockRate: 8000 });
  socket.setRemote('127.0.0.1', pbx.address().port, true);
  socket.setSending(true);
  // The PBX sees our own sequence numbers: count packets in order and map them back to what the worker sent.
  const heard: number[] = [];
  let firstSeq: number | undefined;
  pbx.on('message', (msg) => {
    const header = parseRtp(msg);
    if (!header) return;
    firstSeq ??= header.sequenceNumber;
    heard.push((header.sequenceNumber - firstSeq) & 0xffff);
  });
  // Our outgoing sequence keeps the source's gaps, so a dropped packet leaves its hole in the numbering.
  checkBacklog(t, await sendWithBacklog((p) => worker.send(p, socket.innerPort, '127.0.0.1'), () => heard));
});
