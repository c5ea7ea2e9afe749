/**
 * Meta's RTCP reception reports about our stream: blocks read from RR and SR packets of a compound, and the round
 * trip they give (RFC 3550 section 6.4.1: A - LSR - DLSR).
 */
import t from 'tap';
import { RoundTrips, ntpMiddle, readReportBlocks, rttFromBlock } from '../../../src/core/rtcp.js';

function block(o: { ssrc: number; fraction: number; lost: number; jitter: number; lsr: number; dlsr: number }): Buffer {
  const b = Buffer.alloc(24);
  b.writeUInt32BE(o.ssrc, 0);
  b[4] = o.fraction;
  b.writeUIntBE(o.lost & 0xffffff, 5, 3);
  b.writeUInt32BE(1000, 8);
  b.writeUInt32BE(o.jitter, 12);
  b.writeUInt32BE(o.lsr >>> 0, 16);
  b.writeUInt32BE(o.dlsr >>> 0, 20);
  return b;
}

function packet(type: 200 | 201, blocks: Buffer[]): Buffer {
  const head = Buffer.alloc(type === 200 ? 28 : 8);
  head[0] = 0x80 | blocks.length;
  head[1] = type;
  head.writeUInt16BE((head.length + blocks.length * 24) / 4 - 1, 2);
  head.writeUInt32BE(0xabcdef, 4);
  return Buffer.concat([head, ...blocks]);
}

t.test('an RR after an SDES-less SR: both packets read, our block gives a 100 ms round trip', async (t) => {
  const now = Date.now();
  const ours = 0x11223344;
  // Our SR left 150 ms ago; Meta held it 50 ms before answering: 100 ms on the wire, both ways.
  const rr = packet(201, [
    block({ ssrc: 0x99, fraction: 0, lost: 0, jitter: 0, lsr: 0, dlsr: 0 }),
    block({ ssrc: ours, fraction: 64, lost: 10, jitter: 480, lsr: ntpMiddle(now - 150), dlsr: Math.round(0.05 * 65536) }),
  ]);
  const sr = packet(200, [block({ ssrc: ours, fraction: 0, lost: -1, jitter: 0, lsr: 0, dlsr: 0 })]);
  const blocks = readReportBlocks(Buffer.concat([sr, rr]));
  t.equal(blocks.length, 3);
  const mine = blocks.filter((b) => b.ssrc === ours);
  t.match(mine[1], { fractionLost: 0.25, cumulativeLost: 10, jitter: 480 });
  t.equal(mine[0]!.cumulativeLost, -1, 'negative cumulative loss (duplicates) read as such');
  const rtt = rttFromBlock(mine[1]!, now)!;
  t.ok(Math.abs(rtt - 100) < 2, `RTT ${rtt} ms`);
  t.equal(rttFromBlock(mine[0]!, now), undefined, 'no SR of ours yet: no RTT');
});

t.test('truncated or foreign packets end the walk without throwing', async (t) => {
  const rr = packet(201, [block({ ssrc: 1, fraction: 0, lost: 0, jitter: 0, lsr: 0, dlsr: 0 })]);
  t.same(readReportBlocks(rr.subarray(0, 20)), []);
  const bye = Buffer.from([0x81, 203, 0, 1, 0, 0, 0, 1]);
  t.equal(readReportBlocks(Buffer.concat([bye, rr])).length, 1);
});

t.test("a peer's whole-millisecond DLSR: a round trip just below 0 is 0, further below is a clock step; the call's RTT is the mean", async (t) => {
  const now = 1_800_000_000_000.25;
  const at = (rttMs: number, dlsrMs: number) =>
    rttFromBlock({ ssrc: 1, fractionLost: 0, cumulativeLost: 0, jitter: 0, lsr: ntpMiddle(now - rttMs - dlsrMs), dlsr: Math.round((dlsrMs * 65536) / 1000) }, now);
  t.ok(Math.abs(at(0.4, 20)! - 0.4) < 0.05, 'sub-millisecond round trip kept');
  t.equal(at(-1, 20), 0, 'DLSR rounded up past the true delay: 0');
  t.equal(at(-10, 20), undefined, 'far below 0: not a round trip');
  const trips = new RoundTrips();
  t.equal(trips.meanMs, undefined);
  for (const ms of [1, 2, 6]) trips.add(ms);
  t.equal(trips.meanMs, 3);
});
