/**
 * RTCP with the PBX: what our reports say (SR with a reception report on the PBX's stream: loss per interval, LSR and
 * DLSR of the PBX's own SR), and what the PBX's receiver report gives (its view of our stream, the round trip).
 */
import t from 'tap';
import { PbxRtcp } from '../../../src/media/PbxRtcp.js';
import { ntpMiddle, ntpTimestamp, readReportBlocks, writeReport } from '../../../src/core/rtcp.js';

const OURS = 0x1111;
const PBX = 0x2222;
const NOW = 1_800_000_000_000;

t.test("our report: an SR with a block on the PBX's stream (loss since the previous report, LSR/DLSR of its SR)", async (t) => {
  const rtcp = new PbxRtcp(OURS);
  const sent = { packets: 50, octets: 8000, rtpTimestampNow: 123_456 };
  t.equal(rtcp.report({ packets: 0, octets: 0, rtpTimestampNow: undefined }, undefined, NOW), undefined, 'nothing sent or heard: no report');

  const first = rtcp.report(sent, { ssrc: PBX, extendedHighestSeq: 1099, expected: 100, received: 90, jitter: 40 }, NOW)!;
  t.equal(first[1], 200, 'a sender report');
  t.equal(first.readUInt32BE(16), 123_456, 'RTP time of the report');
  const [block] = readReportBlocks(first);
  t.match(block, { ssrc: PBX, cumulativeLost: 10, jitter: 40, lsr: 0, dlsr: 0 }, 'no SR from the PBX yet: no LSR');
  t.equal(Math.round(block!.fractionLost * 256), 25, '10 of 100 lost: 25/256');

  // The PBX's SR arrives; our next report, 250 ms later, echoes it.
  const pbxSr = writeReport({ ssrc: PBX, sender: { ntp: ntpTimestamp(NOW + 1000), rtpTimestamp: 1, packets: 1, octets: 1 }, blocks: [], cname: 'pbx' });
  rtcp.received(pbxSr, 8000, NOW + 1000);
  const second = rtcp.report(sent, { ssrc: PBX, extendedHighestSeq: 1199, expected: 200, received: 190, jitter: 40 }, NOW + 1250)!;
  const [next] = readReportBlocks(second);
  t.equal(next!.fractionLost, 0, 'nothing lost since the previous report');
  t.equal(next!.lsr, ntpMiddle(NOW + 1000), "LSR: the PBX's SR");
  t.equal(next!.dlsr, 65536 / 4, 'DLSR: 250 ms');

  const rr = rtcp.report({ packets: 0, octets: 0, rtpTimestampNow: undefined }, { ssrc: PBX, extendedHighestSeq: 1199, expected: 200, received: 190, jitter: 0 }, NOW);
  t.equal(rr![1], 201, 'before we send: a receiver report');
});

t.test("the PBX's receiver report: its loss and jitter on our stream, and the round trip (mean over the call)", async (t) => {
  const rtcp = new PbxRtcp(OURS);
  t.equal(rtcp.remoteReport(), undefined);
  const rr = (lsrAt: number, dlsrMs: number, lost: number) =>
    writeReport({
      ssrc: PBX,
      blocks: [{ ssrc: OURS, fractionLost: 64, cumulativeLost: lost, extendedHighestSeq: 500, jitter: 80, lsr: ntpMiddle(lsrAt), dlsr: Math.round((dlsrMs * 65536) / 1000) }],
      cname: 'pbx',
    });
  // Our SR left at NOW; the PBX held it 100 ms; its report arrives 130 ms after our SR: 30 ms round trip.
  rtcp.received(rr(NOW, 100, 3), 8000, NOW + 130);
  const first = rtcp.remoteReport()!;
  t.match(first, { fractionLost: 0.25, cumulativeLost: 3, jitterMs: 10 }, 'jitter of 80 at 8 kHz: 10 ms');
  t.ok(Math.abs(first.rttMs! - 30) < 0.1, `RTT ${first.rttMs} ms`);
  rtcp.received(rr(NOW + 5000, 100, 4), 8000, NOW + 5150);
  t.ok(Math.abs(rtcp.remoteReport()!.rttMs! - 40) < 0.1, 'the mean of 30 and 50 ms');
  rtcp.received(writeReport({ ssrc: PBX, blocks: [{ ssrc: 0x9999, fractionLost: 0, cumulativeLost: 0, extendedHighestSeq: 0, jitter: 0, lsr: 0, dlsr: 0 }], cname: 'x' }), 8000, NOW + 6000);
  t.equal(rtcp.remoteReport()!.cumulativeLost, 4, 'a block about another stream changes nothing');
});
