import t from 'tap';
import { parseRtp, stripRtpHeaderExtension } from '../../../src/media/rtp.js';

t.test('stripRtpHeaderExtension removes the extension block and keeps CSRCs, payload and padding', async (t) => {
  const packet = Buffer.from([
    0xb1, 0x80 | 8, 0x12, 0x34, 0, 0, 0x01, 0x40, 0xde, 0xad, 0xbe, 0xef, // V=2 P=1 X=1 CC=1, M, PT 8
    0x11, 0x22, 0x33, 0x44, // CSRC
    0xbe, 0xde, 0x00, 0x02, 0x10, 0xff, 0, 0, 0x22, 0xaa, 0xbb, 0, // one-byte extension block, 2 words
    1, 2, 3, 4, 5, // payload
    0, 0, 3, // padding (3 bytes)
  ]);
  const before = parseRtp(Buffer.from(packet))!;
  const out = stripRtpHeaderExtension(packet);
  t.equal(out[0]! & 0x10, 0, 'X bit cleared');
  t.equal(out.length, packet.length - 12, 'twelve bytes shorter');
  const after = parseRtp(out)!;
  t.same(
    { pt: after.payloadType, marker: after.marker, seq: after.sequenceNumber, ts: after.timestamp, ssrc: after.ssrc },
    { pt: before.payloadType, marker: before.marker, seq: before.sequenceNumber, ts: before.timestamp, ssrc: before.ssrc },
    'header fields kept',
  );
  t.equal(after.payloadOffset, 16, 'payload right after the CSRC');
  t.same([...out.subarray(after.payloadOffset, after.payloadOffset + after.payloadLength)], [1, 2, 3, 4, 5], 'payload kept');
  t.equal(out.readUInt32BE(12), 0x11223344, 'CSRC kept');
});

t.test('a packet without extension, or with a truncated one, is returned as it is', async (t) => {
  const plain = Buffer.from([0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 9, 9]);
  t.equal(stripRtpHeaderExtension(plain), plain);
  const truncated = Buffer.from([0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xbe, 0xde, 0, 5, 1]);
  t.equal(stripRtpHeaderExtension(truncated), truncated);
  t.equal(truncated[0], 0x90, 'untouched');
});
