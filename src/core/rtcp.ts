/**
 * RTCP reception reports (RFC 3550 section 6.4): the report blocks of a plain compound packet, the round-trip time
 * they give (RTT = A - LSR - DLSR, with A the arrival time as the middle 32 bits of an NTP timestamp, 1/65536 s units),
 * and the sender reports we write (SR with its report blocks, and the SDES CNAME every compound packet carries).
 */

export interface ReportBlock {
  ssrc: number;
  /** Fraction of packets lost since the previous report (0-1). */
  fractionLost: number;
  /** Cumulative packets lost (may be negative with duplicates). */
  cumulativeLost: number;
  /** Interarrival jitter in RTP timestamp units. */
  jitter: number;
  /** Middle 32 bits of the NTP time of the last SR received from us; 0 if none. */
  lsr: number;
  /** Delay since that SR, 1/65536 s. */
  dlsr: number;
}

/** Report blocks of every SR (200) and RR (201) in the compound packet; malformed parts end the walk. */
export function readReportBlocks(rtcp: Buffer): ReportBlock[] {
  const blocks: ReportBlock[] = [];
  let offset = 0;
  while (offset + 8 <= rtcp.length) {
    const count = rtcp[offset]! & 0x1f;
    const type = rtcp[offset + 1]!;
    const end = offset + (rtcp.readUInt16BE(offset + 2) + 1) * 4;
    if (end > rtcp.length) break;
    const first = type === 200 ? offset + 28 : type === 201 ? offset + 8 : -1;
    if (first >= 0) {
      for (let i = 0, at = first; i < count && at + 24 <= end; i++, at += 24) {
        const lost = rtcp.readUIntBE(at + 5, 3);
        blocks.push({
          ssrc: rtcp.readUInt32BE(at),
          fractionLost: rtcp[at + 4]! / 256,
          cumulativeLost: lost & 0x800000 ? lost - 0x1000000 : lost,
          jitter: rtcp.readUInt32BE(at + 12),
          lsr: rtcp.readUInt32BE(at + 16),
          dlsr: rtcp.readUInt32BE(at + 20),
        });
      }
    }
    offset = end;
  }
  return blocks;
}

/** Seconds between 1900 and 1970 (NTP epoch vs Unix epoch). */
export const NTP_EPOCH_OFFSET = 2_208_988_800;

/** The middle 32 bits of the NTP timestamp of `unixMs`. */
export function ntpMiddle(unixMs: number): number {
  const seconds = unixMs / 1000 + NTP_EPOCH_OFFSET;
  return ((Math.floor(seconds) & 0xffff) * 65536 + Math.floor((seconds % 1) * 65536)) >>> 0;
}

/**
 * The wall clock in ms with sub-millisecond resolution (Date.now() has whole ms only, as much as a round trip on a
 * LAN). Our SR's NTP time and a report's arrival are both read from it.
 */
export function wallClockMs(): number {
  return performance.timeOrigin + performance.now();
}

/** The 64-bit NTP timestamp of `unixMs`. */
export function ntpTimestamp(unixMs: number): bigint {
  const seconds = unixMs / 1000 + NTP_EPOCH_OFFSET;
  return (BigInt(Math.floor(seconds)) << 32n) | BigInt(Math.floor((seconds % 1) * 2 ** 32));
}

/**
 * Peers count DLSR in whole milliseconds (mediasoup, many PBXes): on a path shorter than that, A - LSR - DLSR can come
 * out slightly below zero. Down to this much below (ms) it is a round trip of 0; further, a clock step.
 */
const DLSR_ROUNDING_MS = 2;

/** RTT (ms) from a block about our stream received at `arrivalUnixMs`; undefined without an SR of ours in it. */
export function rttFromBlock(block: ReportBlock, arrivalUnixMs: number): number | undefined {
  if (block.lsr === 0) return undefined;
  const units = (ntpMiddle(arrivalUnixMs) - block.lsr - block.dlsr) | 0;
  // Below the rounding, or more than a minute: a clock step, not a round trip.
  if (units < -DLSR_ROUNDING_MS * 65.536 || units > 60 * 65536) return undefined;
  return (Math.max(0, units) * 1000) / 65536;
}

/** The round trips measured on a call's leg: their mean is the call's RTT (one report may catch a queue). */
export class RoundTrips {
  #sumMs = 0;
  #count = 0;

  add(rttMs: number): void {
    this.#sumMs += rttMs;
    this.#count++;
  }

  /** Mean RTT (ms), undefined before the first. */
  get meanMs(): number | undefined {
    return this.#count > 0 ? this.#sumMs / this.#count : undefined;
  }

  get count(): number {
    return this.#count;
  }
}

/** The sender reports (200) of a compound packet: who sent each, and the middle 32 bits of its NTP time (our LSR). */
export function readSenderReports(rtcp: Buffer): Array<{ ssrc: number; ntpMiddle: number }> {
  const reports: Array<{ ssrc: number; ntpMiddle: number }> = [];
  let offset = 0;
  while (offset + 8 <= rtcp.length) {
    const end = offset + (rtcp.readUInt16BE(offset + 2) + 1) * 4;
    if (end > rtcp.length) break;
    if (rtcp[offset + 1] === 200 && end - offset >= 28) {
      reports.push({ ssrc: rtcp.readUInt32BE(offset + 4), ntpMiddle: rtcp.readUInt32BE(offset + 10) });
    }
    offset = end;
  }
  return reports;
}

/** A reception report block we write (RFC 3550 6.4.1). */
export interface OutgoingReportBlock {
  ssrc: number;
  /** Lost since the previous report, in 1/256. */
  fractionLost: number;
  cumulativeLost: number;
  extendedHighestSeq: number;
  /** RTP timestamp units. */
  jitter: number;
  lsr: number;
  /** 1/65536 s. */
  dlsr: number;
}

/** What a sender report says of our stream. */
export interface SenderInfo {
  ntp: bigint;
  rtpTimestamp: number;
  packets: number;
  octets: number;
}

/**
 * One compound RTCP packet (RFC 3550 6.1): a sender report when we send (`sender`), else a receiver report, with its
 * report blocks (31 at most), then the SDES CNAME every compound packet must carry.
 */
export function writeReport(o: { ssrc: number; sender?: SenderInfo; blocks: OutgoingReportBlock[]; cname: string }): Buffer {
  const blocks = o.blocks.slice(0, 31);
  const head = o.sender ? 28 : 8;
  const report = Buffer.alloc(head + blocks.length * 24);
  report[0] = 0x80 | blocks.length;
  report[1] = o.sender ? 200 : 201;
  report.writeUInt16BE(report.length / 4 - 1, 2);
  report.writeUInt32BE(o.ssrc >>> 0, 4);
  if (o.sender) {
    report.writeBigUInt64BE(BigInt.asUintN(64, o.sender.ntp), 8);
    report.writeUInt32BE(o.sender.rtpTimestamp >>> 0, 16);
    report.writeUInt32BE(o.sender.packets >>> 0, 20);
    report.writeUInt32BE(o.sender.octets >>> 0, 24);
  }
  blocks.forEach((b, i) => {
    const at = head + i * 24;
    report.writeUInt32BE(b.ssrc >>> 0, at);
    report[at + 4] = Math.max(0, Math.min(255, b.fractionLost));
    report.writeUIntBE(Math.max(-0x800000, Math.min(0x7fffff, b.cumulativeLost)) & 0xffffff, at + 5, 3);
    report.writeUInt32BE(b.extendedHighestSeq >>> 0, at + 8);
    report.writeUInt32BE(b.jitter >>> 0, at + 12);
    report.writeUInt32BE(b.lsr >>> 0, at + 16);
    report.writeUInt32BE(b.dlsr >>> 0, at + 20);
  });
  // SDES: one chunk (our SSRC, CNAME item, end of list), padded to 32 bits.
  const cname = Buffer.from(o.cname, 'utf8').subarray(0, 255);
  const chunk = 4 + 2 + cname.length + 1;
  const sdes = Buffer.alloc(4 + Math.ceil(chunk / 4) * 4);
  sdes[0] = 0x81;
  sdes[1] = 202;
  sdes.writeUInt16BE(sdes.length / 4 - 1, 2);
  sdes.writeUInt32BE(o.ssrc >>> 0, 4);
  sdes[8] = 1;
  sdes[9] = cname.length;
  cname.copy(sdes, 10);
  return Buffer.concat([report, sdes]);
}
