/**
 * RTCP with the PBX (RFC 3550), kept by the call's PBX RTP port on the media thread: every few seconds a sender report
 * about our stream (wall-clock NTP time, the RTP time of that instant, packets and octets sent) with a reception
 * report about the PBX's stream, and the PBX's own reports read as they arrive: its view of our stream (loss, jitter)
 * and, from the LSR/DLSR of its reception report, the round trip to it. Nothing here runs per packet.
 */
import { randomBytes } from 'node:crypto';
import type { RemoteReport } from '../calls/ports.js';
import {
  RoundTrips,
  ntpTimestamp,
  readReportBlocks,
  readSenderReports,
  rttFromBlock,
  wallClockMs,
  writeReport,
  type OutgoingReportBlock,
  type SenderInfo,
} from '../core/rtcp.js';
import type { StreamReception } from './PbxRtpSocket.js';

/** What we have sent toward the PBX so far. */
export interface PbxSent {
  packets: number;
  /** Payload octets. */
  octets: number;
  /** RTP timestamp (audio clock) of the instant `wallClockMs()`, or undefined before our first packet. */
  rtpTimestampNow: number | undefined;
}

export class PbxRtcp {
  readonly #ssrc: number;
  readonly #cname = randomBytes(12).toString('base64url');
  readonly #roundTrips = new RoundTrips();
  #remote: RemoteReport | undefined;
  /** The PBX's last sender report: the middle of its NTP time, and when it arrived (wall clock, ms). */
  #lastPbxSr: { ssrc: number; ntpMiddle: number; at: number } | undefined;
  /** Expected and received at our previous report (fraction lost is per interval). */
  #prior: { ssrc: number; expected: number; received: number } | undefined;

  constructor(ssrc: number) {
    this.#ssrc = ssrc;
  }

  /**
   * The compound packet to send now: an SR once we have sent audio, else an RR once we have received some; undefined
   * while neither.
   */
  report(sent: PbxSent, received: StreamReception | undefined, now = wallClockMs()): Buffer | undefined {
    const sender: SenderInfo | undefined =
      sent.rtpTimestampNow !== undefined
        ? { ntp: ntpTimestamp(now), rtpTimestamp: sent.rtpTimestampNow, packets: sent.packets, octets: sent.octets }
        : undefined;
    const blocks = received ? [this.#block(received, now)] : [];
    if (!sender && blocks.length === 0) return undefined;
    return writeReport({ ssrc: this.#ssrc, ...(sender ? { sender } : {}), blocks, cname: this.#cname });
  }

  /** An RTCP compound packet from the PBX (plain, authenticated, from the PBX's address). */
  received(rtcp: Buffer, clockRate: number, now = wallClockMs()): void {
    const sr = readSenderReports(rtcp).at(-1);
    if (sr) this.#lastPbxSr = { ...sr, at: now };
    const block = readReportBlocks(rtcp).find((b) => b.ssrc === this.#ssrc);
    if (!block) return;
    const rttMs = rttFromBlock(block, now);
    if (rttMs !== undefined) this.#roundTrips.add(rttMs);
    const meanRttMs = this.#roundTrips.meanMs;
    this.#remote = {
      fractionLost: block.fractionLost,
      cumulativeLost: block.cumulativeLost,
      jitterMs: (block.jitter * 1000) / clockRate,
      ...(meanRttMs !== undefined ? { rttMs: meanRttMs } : {}),
    };
  }

  /** What the PBX's last report said of our stream (with the mean round trip so far), once one arrived. */
  remoteReport(): RemoteReport | undefined {
    return this.#remote;
  }

  #block(r: StreamReception, now: number): OutgoingReportBlock {
    const prior = this.#prior?.ssrc === r.ssrc ? this.#prior : undefined;
    const expectedInterval = r.expected - (prior?.expected ?? 0);
    const lostInterval = expectedInterval - (r.received - (prior?.received ?? 0));
    this.#prior = { ssrc: r.ssrc, expected: r.expected, received: r.received };
    const sr = this.#lastPbxSr?.ssrc === r.ssrc ? this.#lastPbxSr : undefined;
    return {
      ssrc: r.ssrc,
      fractionLost: expectedInterval > 0 && lostInterval > 0 ? Math.floor((lostInterval * 256) / expectedInterval) : 0,
      cumulativeLost: r.expected - r.received,
      extendedHighestSeq: r.extendedHighestSeq,
      jitter: r.jitter,
      lsr: sr?.ntpMiddle ?? 0,
      dlsr: sr ? Math.round(((now - sr.at) * 65536) / 1000) : 0,
    };
  }
}
