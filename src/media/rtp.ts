/**
 * Small RTP and RFC 4733 helpers working on whole packets (Buffers). No allocation beyond the packet itself.
 */

/** Fixed RTP header size without CSRCs or extensions (bytes). */
export const RTP_HEADER_BYTES = 12;

export interface RtpHeader {
  marker: boolean;
  payloadType: number;
  sequenceNumber: number;
  timestamp: number;
  ssrc: number;
  /** Offset of the payload inside the packet (after CSRCs and the header extension). */
  payloadOffset: number;
  /** Payload length (bytes), without RTP padding. */
  payloadLength: number;
}

/** True when the first byte says RTP version 2 and the second byte is not an RTCP packet type (RFC 5761). */
export function isRtp(packet: Buffer): boolean {
  if (packet.length < RTP_HEADER_BYTES || packet[0]! >> 6 !== 2) return false;
  const pt = packet[1]! & 0x7f;
  return pt < 64 || pt > 95;
}

/** True for RTCP multiplexed on the RTP port (packet types 192-223, RFC 5761). */
export function isRtcp(packet: Buffer): boolean {
  if (packet.length < 8 || packet[0]! >> 6 !== 2) return false;
  const type = packet[1]!;
  return type >= 192 && type <= 223;
}

/** Parse the RTP header; undefined when the packet is malformed. */
export function parseRtp(packet: Buffer): RtpHeader | undefined {
  if (!isRtp(packet)) return undefined;
  const b0 = packet[0]!;
  const csrcCount = b0 & 0x0f;
  let offset = RTP_HEADER_BYTES + csrcCount * 4;
  if (b0 & 0x10) {
    if (packet.length < offset + 4) return undefined;
    offset += 4 + packet.readUInt16BE(offset + 2) * 4;
  }
  let end = packet.length;
  if (b0 & 0x20) end -= packet[packet.length - 1]!;
  if (end < offset) return undefined;
  return {
    marker: (packet[1]! & 0x80) !== 0,
    payloadType: packet[1]! & 0x7f,
    sequenceNumber: packet.readUInt16BE(2),
    timestamp: packet.readUInt32BE(4),
    ssrc: packet.readUInt32BE(8),
    payloadOffset: offset,
    payloadLength: end - offset,
  };
}

/** Build a plain RTP packet (no CSRC, no extension). */
export function buildRtp(fields: {
  payloadType: number;
  sequenceNumber: number;
  timestamp: number;
  ssrc: number;
  marker?: boolean;
  payload: Uint8Array;
}): Buffer {
  const packet = Buffer.allocUnsafe(RTP_HEADER_BYTES + fields.payload.length);
  packet[0] = 0x80;
  packet[1] = (fields.marker ? 0x80 : 0) | (fields.payloadType & 0x7f);
  packet.writeUInt16BE(fields.sequenceNumber & 0xffff, 2);
  packet.writeUInt32BE(fields.timestamp >>> 0, 4);
  packet.writeUInt32BE(fields.ssrc >>> 0, 8);
  packet.set(fields.payload, RTP_HEADER_BYTES);
  return packet;
}

/** Write the fixed header's fields in place (version, padding, extension and CSRC count are kept). */
export function writeRtpHeader(packet: Buffer, payloadType: number, marker: boolean, sequenceNumber: number, timestamp: number, ssrc: number): void {
  packet[1] = (marker ? 0x80 : 0) | (payloadType & 0x7f);
  packet.writeUInt16BE(sequenceNumber & 0xffff, 2);
  packet.writeUInt32BE(timestamp >>> 0, 4);
  packet.writeUInt32BE(ssrc >>> 0, 8);
}

/**
 * The packet without its header extension (X bit cleared; CSRCs, payload and padding kept): in place, returning
 * the shorter view of the same memory. A packet without one is returned as it is.
 */
export function stripRtpHeaderExtension(packet: Buffer): Buffer {
  const b0 = packet[0]!;
  if (!(b0 & 0x10)) return packet;
  const start = RTP_HEADER_BYTES + (b0 & 0x0f) * 4;
  if (packet.length < start + 4) return packet;
  const extBytes = 4 + packet.readUInt16BE(start + 2) * 4;
  if (packet.length < start + extBytes) return packet;
  packet.copyWithin(start, start + extBytes);
  packet[0] = b0 & ~0x10;
  return packet.subarray(0, packet.length - extBytes);
}

/** Signed distance a - b between two 16-bit sequence numbers. */
export function seqDiff(a: number, b: number): number {
  return ((a - b + 0x8000) & 0xffff) - 0x8000;
}

/** Signed distance a - b between two 32-bit RTP timestamps. */
export function tsDiff(a: number, b: number): number {
  return ((a - b) | 0);
}

/** A random 32-bit SSRC (never 0). */
export function randomSsrc(): number {
  return (Math.floor(Math.random() * 0xfffffffe) + 1) >>> 0;
}

/** A random 16-bit starting sequence number. */
export function randomSeq(): number {
  return Math.floor(Math.random() * 0x10000);
}

// -------------------------------------------------------------------------------------------------------------
// RFC 4733 telephone-event payload: event(8) | E(1) R(1) volume(6) | duration(16)
// -------------------------------------------------------------------------------------------------------------

export const DTMF_EVENT_DIGITS = '0123456789*#ABCD';

export interface TelephoneEvent {
  /** Event code 0-15 for DTMF (RFC 4733 section 3.2). */
  event: number;
  end: boolean;
  /** Power level in -dBm0 (0-63). */
  volume: number;
  /** Duration in the telephone-event clock's units. */
  duration: number;
}

export function parseTelephoneEvent(payload: Uint8Array): TelephoneEvent | undefined {
  if (payload.length < 4) return undefined;
  return {
    event: payload[0]!,
    end: (payload[1]! & 0x80) !== 0,
    volume: payload[1]! & 0x3f,
    duration: (payload[2]! << 8) | payload[3]!,
  };
}

export function buildTelephoneEvent(event: TelephoneEvent): Buffer {
  const payload = Buffer.allocUnsafe(4);
  payload[0] = event.event;
  payload[1] = (event.end ? 0x80 : 0) | (event.volume & 0x3f);
  payload.writeUInt16BE(Math.min(0xffff, Math.max(0, Math.round(event.duration))), 2);
  return payload;
}

/** '0'-'9', '*', '#', 'A'-'D' -> event code, or undefined. */
export function digitToEvent(digit: string): number | undefined {
  const code = DTMF_EVENT_DIGITS.indexOf(digit.toUpperCase());
  return digit.length === 1 && code >= 0 ? code : undefined;
}

/** Event code -> digit, or undefined for non-DTMF events (tones, flash). */
export function eventToDigit(event: number): string | undefined {
  return event < DTMF_EVENT_DIGITS.length ? DTMF_EVENT_DIGITS[event] : undefined;
}
