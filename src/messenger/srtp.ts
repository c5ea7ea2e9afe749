/**
 * SRTP and SRTCP (RFC 3711, RFC 7714) for the Messenger leg, one context per direction that keeps its cipher state
 * across packets.
 *
 * Profiles: exactly those our DTLS client offers in its use_srtp extension (werift's list, see WeriftMessengerLeg):
 * SRTP_AES128_CM_HMAC_SHA1_80 (0x0001) and SRTP_AEAD_AES_128_GCM (0x0007).
 *
 * Why not werift's SrtpSession: it builds a new AES-CTR cipher (and key schedule) and a new HMAC for every packet.
 * Here, for AES_CM, one AES-128-ECB cipher per context, created once, turns a buffer of counter blocks into the
 * keystream of a whole packet in one call, and the payload is XORed in place; HMAC-SHA1 starts from keyed states
 * computed once (HmacSha1 below). AES-GCM has no way to change the IV of a Node cipher object, so it keeps one
 * cipher per packet, but with the key given as a KeyObject made once (measured about a quarter cheaper than a raw
 * key). Authentication failures, replays and malformed packets are returned as a reason, not thrown: a bad packet
 * from the network costs no exception.
 *
 * Key derivation rate is 0 (what DTLS-SRTP uses): session keys are derived once per context.
 */
import { createCipheriv, createDecipheriv, createSecretKey } from 'node:crypto';
import type { KeyObject } from 'node:crypto';

/** DTLS-SRTP protection profile SRTP_AES128_CM_HMAC_SHA1_80 (RFC 5764). */
export const SRTP_AES128_CM_HMAC_SHA1_80 = 0x0001;
/** DTLS-SRTP protection profile SRTP_AEAD_AES_128_GCM (RFC 7714). */
export const SRTP_AEAD_AES_128_GCM = 0x0007;

export type SrtpProfileId = typeof SRTP_AES128_CM_HMAC_SHA1_80 | typeof SRTP_AEAD_AES_128_GCM;

/** Why an inbound packet was refused. */
export type SrtpDropReason = 'malformed' | 'auth' | 'replay';

/** True for the profiles this module implements. */
export function isSupportedSrtpProfile(profile: number): profile is SrtpProfileId {
  return profile === SRTP_AES128_CM_HMAC_SHA1_80 || profile === SRTP_AEAD_AES_128_GCM;
}

/** Master key length of a profile, bytes. */
export function srtpMasterKeyLength(profile: SrtpProfileId): number {
  return profile === SRTP_AEAD_AES_128_GCM || profile === SRTP_AES128_CM_HMAC_SHA1_80 ? 16 : 0;
}

/** Master salt length of a profile, bytes (RFC 7714: 12 for AEAD_AES_128_GCM). */
export function srtpMasterSaltLength(profile: SrtpProfileId): number {
  return profile === SRTP_AEAD_AES_128_GCM ? 12 : 14;
}

/** The session keys of one of SRTP or SRTCP. */
export interface SrtpSessionKeys {
  /** Encryption key, 16 bytes. */
  key: Buffer;
  /** Session salt: 14 bytes (AES_CM) or 12 bytes (AES-GCM). */
  salt: Buffer;
  /** HMAC-SHA1 key, 20 bytes (AES_CM only; empty for AES-GCM). */
  auth: Buffer;
}

/**
 * AES in counter mode as SRTP uses it (RFC 3711 4.1.1): block i of the keystream is AES(key, iv << 16 + i), where
 * `iv` is 112 bits (14 bytes). Returns the first `length` bytes.
 */
export function aesCmKeystream(key: Buffer, iv: Buffer, length: number): Buffer {
  if (iv.length !== 14) throw new RangeError('AES-CM IV must be 14 bytes');
  const blocks = Math.ceil(length / 16);
  if (blocks > 0x10000) throw new RangeError('AES-CM keystream is limited to 2^16 blocks');
  const input = Buffer.alloc(blocks * 16);
  for (let i = 0; i < blocks; i++) {
    iv.copy(input, i * 16);
    input.writeUInt16BE(i, i * 16 + 14);
  }
  const cipher = createCipheriv('aes-128-ecb', key, null).setAutoPadding(false);
  return Buffer.concat([cipher.update(input), cipher.final()]).subarray(0, length);
}

/**
 * RFC 3711 4.3.1 key derivation with a key derivation rate of 0: the AES-CM keystream under the master key, with
 * IV = master salt XOR label << 48. A 12-byte master salt (AES-GCM) is padded with two zero bytes at the end, as
 * libsrtp does.
 */
export function deriveSrtpKey(masterKey: Buffer, masterSalt: Buffer, label: number, length: number): Buffer {
  const iv = Buffer.alloc(14);
  masterSalt.copy(iv, 0, 0, Math.min(14, masterSalt.length));
  iv[7] = iv[7]! ^ label;
  return aesCmKeystream(masterKey, iv, length);
}

/** Session keys for SRTP (labels 0-2) and SRTCP (labels 3-5). */
export function deriveSrtpSessionKeys(
  masterKey: Buffer,
  masterSalt: Buffer,
  profile: SrtpProfileId,
): { rtp: SrtpSessionKeys; rtcp: SrtpSessionKeys } {
  if (masterKey.length !== srtpMasterKeyLength(profile)) throw new RangeError(`SRTP master key must be 16 bytes`);
  if (masterSalt.length !== srtpMasterSaltLength(profile)) {
    throw new RangeError(`SRTP master salt must be ${srtpMasterSaltLength(profile)} bytes for profile ${profile}`);
  }
  const saltLength = srtpMasterSaltLength(profile);
  const authLength = profile === SRTP_AEAD_AES_128_GCM ? 0 : 20;
  const derive = (base: number): SrtpSessionKeys => ({
    key: deriveSrtpKey(masterKey, masterSalt, base, 16),
    auth: authLength === 0 ? Buffer.alloc(0) : deriveSrtpKey(masterKey, masterSalt, base + 1, authLength),
    salt: deriveSrtpKey(masterKey, masterSalt, base + 2, saltLength),
  });
  return { rtp: derive(0), rtcp: derive(3) };
}

/** Sequence state of one SSRC (RFC 3711 3.3.1) and its replay window. */
interface StreamState {
  roc: number;
  /** Highest sequence number seen (s_l). */
  highestSeq: number;
  /** Highest packet index accepted (48 bits; -1 before the first). */
  highestIndex: number;
  /** Replay bitmap: bit n of (low, high) set = index highestIndex - n was accepted (n < 32 low, else high). */
  windowLow: number;
  windowHigh: number;
}

/** SRTCP state of one SSRC. */
interface RtcpStreamState {
  /** Index of the last SRTCP packet we sent (-1 before the first). */
  sentIndex: number;
  highestIndex: number;
  windowLow: number;
  windowHigh: number;
}

const AES_CM_TAG = 10;
const GCM_TAG = 16;
const SRTCP_INDEX_BYTES = 4;
/** Replay window, packets (RFC 3711's minimum and libsrtp's default). */
const REPLAY_WINDOW = 64;
/** Counter blocks for the largest packet we protect (a UDP datagram of 1500 bytes). */
const MAX_BLOCKS = 96;
const MAX_SRTCP_INDEX = 0x7fffffff;

/** 2^32, to combine ROC and sequence numbers without 32-bit overflow. */
const TWO_32 = 0x1_0000_0000;

function newStream(seq: number): StreamState {
  return { roc: 0, highestSeq: seq, highestIndex: -1, windowLow: 0, windowHigh: 0 };
}

/** RFC 3711 3.3.1: the ROC (v) that a packet with sequence number `seq` most likely belongs to. */
function estimateRoc(state: StreamState, seq: number): number {
  const sl = state.highestSeq;
  if (sl < 32768) {
    return seq - sl > 32768 ? state.roc - 1 : state.roc;
  }
  return sl - 32768 > seq ? state.roc + 1 : state.roc;
}

/** Moves s_l and the ROC forward after a packet with (v, seq) was accepted. */
function advance(state: StreamState, v: number, seq: number): void {
  if (v > state.roc) {
    state.roc = v;
    state.highestSeq = seq;
  } else if (v === state.roc && seq > state.highestSeq) {
    state.highestSeq = seq;
  }
}

type Window = { highestIndex: number; windowLow: number; windowHigh: number };

/** True when `index` was seen already or is older than the window. */
function isReplay(w: Window, index: number): boolean {
  if (w.highestIndex < 0 || index > w.highestIndex) return false;
  const delta = w.highestIndex - index;
  if (delta >= REPLAY_WINDOW) return true;
  return delta < 32 ? ((w.windowLow >>> delta) & 1) === 1 : ((w.windowHigh >>> (delta - 32)) & 1) === 1;
}

function markSeen(w: Window, index: number): void {
  if (w.highestIndex < 0) {
    w.highestIndex = index;
    w.windowLow = 1;
    w.windowHigh = 0;
    return;
  }
  if (index > w.highestIndex) {
    const shift = index - w.highestIndex;
    if (shift >= REPLAY_WINDOW) {
      w.windowLow = 1;
      w.windowHigh = 0;
    } else if (shift >= 32) {
      w.windowHigh = shift === 32 ? w.windowLow : (w.windowLow << (shift - 32)) >>> 0;
      w.windowLow = 1;
    } else {
      w.windowHigh = ((w.windowHigh << shift) | (w.windowLow >>> (32 - shift))) >>> 0;
      w.windowLow = ((w.windowLow << shift) | 1) >>> 0;
    }
    w.highestIndex = index;
    return;
  }
  const delta = w.highestIndex - index;
  if (delta < 32) w.windowLow = (w.windowLow | (1 << delta)) >>> 0;
  else w.windowHigh = (w.windowHigh | (1 << (delta - 32))) >>> 0;
}

/** Length of an RTP header with its CSRCs and extension, or -1 when the packet is too short for it. */
function rtpHeaderLength(packet: Buffer, tagLength: number): number {
  if (packet.length < 12 + tagLength || (packet[0]! & 0xc0) !== 0x80) return -1;
  let length = 12 + (packet[0]! & 0x0f) * 4;
  if ((packet[0]! & 0x10) !== 0) {
    if (packet.length < length + 4 + tagLength) return -1;
    length += 4 + packet.readUInt16BE(length + 2) * 4;
  }
  return packet.length < length + tagLength ? -1 : length;
}

function constantTimeEqual(a: Buffer, aOffset: number, b: Buffer, bOffset: number, length: number): boolean {
  let diff = 0;
  for (let i = 0; i < length; i++) diff |= a[aOffset + i]! ^ b[bOffset + i]!;
  return diff === 0;
}

/**
 * HMAC-SHA1 (RFC 2104) with the keyed inner and outer states computed once per key. For the short messages of SRTP
 * (four SHA-1 blocks for a 160-byte payload) this measured about 40 % cheaper than a `createHmac` per packet, whose
 * cost is mostly the object and the key set-up, and it allocates nothing.
 */
export class HmacSha1 {
  readonly #inner = new Int32Array(5);
  readonly #outer = new Int32Array(5);
  readonly #h = new Int32Array(5);
  readonly #w = new Int32Array(80);
  #scratch = Buffer.alloc(2048);

  constructor(key: Buffer) {
    const pad = Buffer.alloc(64);
    key.copy(pad);
    for (let i = 0; i < 64; i++) pad[i] = pad[i]! ^ 0x36;
    HmacSha1.#init(this.#inner);
    this.#compress(this.#inner, pad, 0);
    for (let i = 0; i < 64; i++) pad[i] = pad[i]! ^ 0x36 ^ 0x5c;
    HmacSha1.#init(this.#outer);
    this.#compress(this.#outer, pad, 0);
  }

  static #init(h: Int32Array): void {
    h[0] = 0x67452301;
    h[1] = 0xefcdab89 | 0;
    h[2] = 0x98badcfe | 0;
    h[3] = 0x10325476;
    h[4] = 0xc3d2e1f0 | 0;
  }

  /**
   * MAC of data[start, end) followed by `suffix` as a 32-bit big-endian word (-1: no suffix); its first `tagLength`
   * bytes (at most 20) are written to out[outOffset...].
   */
  sign(data: Buffer, start: number, end: number, suffix: number, out: Buffer, outOffset: number, tagLength: number): void {
    const len = end - start;
    const msgLen = len + (suffix >= 0 ? 4 : 0);
    const total = ((msgLen + 9 + 63) >> 6) << 6;
    if (this.#scratch.length < total) this.#scratch = Buffer.alloc(total * 2);
    const s = this.#scratch;
    data.copy(s, 0, start, end);
    let p = len;
    if (suffix >= 0) {
      s.writeUInt32BE(suffix >>> 0, p);
      p += 4;
    }
    s[p++] = 0x80;
    s.fill(0, p, total - 8);
    const bits = (msgLen + 64) * 8;
    s.writeUInt32BE(Math.floor(bits / 0x100000000), total - 8);
    s.writeUInt32BE(bits >>> 0, total - 4);
    const h = this.#h;
    h.set(this.#inner);
    for (let o = 0; o < total; o += 64) this.#compress(h, s, o);
    // Outer: opad state, then the 20-byte inner digest, padded to one block.
    for (let i = 0; i < 5; i++) s.writeInt32BE(h[i]!, i * 4);
    s[20] = 0x80;
    s.fill(0, 21, 60);
    s.writeUInt32BE((64 + 20) * 8, 60);
    h.set(this.#outer);
    this.#compress(h, s, 0);
    for (let i = 0; i < tagLength; i++) out[outOffset + i] = (h[i >> 2]! >>> (24 - (i & 3) * 8)) & 0xff;
  }

  #compress(h: Int32Array, b: Buffer, o: number): void {
    const w = this.#w;
    for (let t = 0; t < 16; t++, o += 4) {
      w[t] = (b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!;
    }
    for (let t = 16; t < 80; t++) {
      const x = w[t - 3]! ^ w[t - 8]! ^ w[t - 14]! ^ w[t - 16]!;
      w[t] = (x << 1) | (x >>> 31);
    }
    let a = h[0]!;
    let bb = h[1]!;
    let c = h[2]!;
    let d = h[3]!;
    let e = h[4]!;
    let t = 0;
    // Four rounds of 20 with their own function and constant, without a branch per step.
    for (; t < 20; t++) {
      const tmp = (((a << 5) | (a >>> 27)) + ((bb & c) | (~bb & d)) + e + 0x5a827999 + w[t]!) | 0;
      e = d;
      d = c;
      c = (bb << 30) | (bb >>> 2);
      bb = a;
      a = tmp;
    }
    for (; t < 40; t++) {
      const tmp = (((a << 5) | (a >>> 27)) + (bb ^ c ^ d) + e + 0x6ed9eba1 + w[t]!) | 0;
      e = d;
      d = c;
      c = (bb << 30) | (bb >>> 2);
      bb = a;
      a = tmp;
    }
    for (; t < 60; t++) {
      const tmp = (((a << 5) | (a >>> 27)) + ((bb & c) | (bb & d) | (c & d)) + e + 0x8f1bbcdc + w[t]!) | 0;
      e = d;
      d = c;
      c = (bb << 30) | (bb >>> 2);
      bb = a;
      a = tmp;
    }
    for (; t < 80; t++) {
      const tmp = (((a << 5) | (a >>> 27)) + (bb ^ c ^ d) + e + 0xca62c1d6 + w[t]!) | 0;
      e = d;
      d = c;
      c = (bb << 30) | (bb >>> 2);
      bb = a;
      a = tmp;
    }
    h[0] = (h[0]! + a) | 0;
    h[1] = (h[1]! + bb) | 0;
    h[2] = (h[2]! + c) | 0;
    h[3] = (h[3]! + d) | 0;
    h[4] = (h[4]! + e) | 0;
  }
}

/** Options of an SrtpContext. */
export interface SrtpContextOptions {
  profile: SrtpProfileId;
  /** Master key from the DTLS exporter (16 bytes). */
  masterKey: Buffer;
  /** Master salt from the DTLS exporter (14 bytes for AES_CM, 12 for AES-GCM). */
  masterSalt: Buffer;
}

/** Counters of one context, for stats and logs. */
export interface SrtpContextStats {
  /** Inbound packets refused because their authentication tag did not match. */
  authFailures: number;
  /** Inbound packets refused as replays or too old for the window. */
  replays: number;
  /** Inbound packets too short or not RTP/RTCP. */
  malformed: number;
}

/**
 * One direction of an SRTP session: protects what we send (local keys) or unprotects what we receive (remote keys).
 * Both RTP and RTCP; any number of SSRCs, each with its own ROC, SRTCP index and replay windows.
 * Not thread-safe; one context per direction per leg.
 */
export class SrtpContext {
  readonly profile: SrtpProfileId;
  readonly stats: SrtpContextStats = { authFailures: 0, replays: 0, malformed: 0 };
  readonly #gcm: boolean;
  readonly #tagLength: number;
  readonly #rtp: SrtpSessionKeys;
  readonly #rtcp: SrtpSessionKeys;
  // AES_CM: one ECB cipher per key, the counter blocks they turn into keystream, precomputed salt words.
  readonly #rtpEcb: ReturnType<typeof createCipheriv> | undefined;
  readonly #rtcpEcb: ReturnType<typeof createCipheriv> | undefined;
  readonly #rtpMac: HmacSha1 | undefined;
  readonly #rtcpMac: HmacSha1 | undefined;
  readonly #tag = Buffer.alloc(AES_CM_TAG);
  readonly #blocks = Buffer.alloc(MAX_BLOCKS * 16);
  // AES-GCM: the keys as KeyObjects, and a 12-byte IV scratch.
  readonly #rtpKeyObject: KeyObject | undefined;
  readonly #rtcpKeyObject: KeyObject | undefined;
  readonly #iv = Buffer.alloc(12);
  readonly #streams = new Map<number, StreamState>();
  readonly #rtcpStreams = new Map<number, RtcpStreamState>();

  constructor(options: SrtpContextOptions) {
    if (!isSupportedSrtpProfile(options.profile)) throw new RangeError(`unsupported SRTP profile ${options.profile}`);
    this.profile = options.profile;
    this.#gcm = options.profile === SRTP_AEAD_AES_128_GCM;
    this.#tagLength = this.#gcm ? GCM_TAG : AES_CM_TAG;
    const keys = deriveSrtpSessionKeys(options.masterKey, options.masterSalt, options.profile);
    this.#rtp = keys.rtp;
    this.#rtcp = keys.rtcp;
    if (this.#gcm) {
      this.#rtpKeyObject = createSecretKey(keys.rtp.key);
      this.#rtcpKeyObject = createSecretKey(keys.rtcp.key);
    } else {
      this.#rtpEcb = createCipheriv('aes-128-ecb', keys.rtp.key, null).setAutoPadding(false);
      this.#rtcpEcb = createCipheriv('aes-128-ecb', keys.rtcp.key, null).setAutoPadding(false);
      this.#rtpMac = new HmacSha1(keys.rtp.auth);
      this.#rtcpMac = new HmacSha1(keys.rtcp.auth);
      // The block counter (last two bytes of each block) never changes.
      for (let i = 0; i < MAX_BLOCKS; i++) this.#blocks.writeUInt16BE(i, i * 16 + 14);
    }
  }

  /** Bytes protectRtp adds to a packet. */
  get rtpOverhead(): number {
    return this.#tagLength;
  }

  /**
   * Protects one RTP packet. Returns a new buffer (the input is not changed).
   * @param ssrc when given, the packet is sent with this SSRC instead of its own.
   * Throws RangeError for a packet that is not RTP (a programming error on our side, not network input).
   */
  protectRtp(packet: Buffer, ssrc?: number): Buffer {
    const headerLength = rtpHeaderLength(packet, 0);
    if (headerLength < 0) throw new RangeError('not an RTP packet');
    const length = packet.length;
    const out = Buffer.allocUnsafe(length + this.#tagLength);
    packet.copy(out, 0, 0, length);
    if (ssrc !== undefined) out.writeUInt32BE(ssrc, 8);
    const streamSsrc = out.readUInt32BE(8);
    const seq = out.readUInt16BE(2);
    let state = this.#streams.get(streamSsrc);
    if (state === undefined) {
      state = newStream(seq);
      this.#streams.set(streamSsrc, state);
    }
    const v = estimateRoc(state, seq);
    const roc = v < 0 ? 0 : v;
    advance(state, roc, seq);
    if (this.#gcm) {
      this.#sealGcm(this.#rtpKeyObject!, this.#rtpIv(streamSsrc, roc, seq), out, headerLength, length, out.subarray(0, headerLength));
      return out;
    }
    this.#ctrXor(this.#rtpEcb!, this.#rtp.salt, streamSsrc, roc, seq, out, headerLength, length);
    // Authenticated portion: header, encrypted payload, ROC.
    this.#rtpMac!.sign(out, 0, length, roc >>> 0, out, length, AES_CM_TAG);
    return out;
  }

  /**
   * Unprotects one SRTP packet in place (the input buffer is overwritten) and returns the RTP packet (a view of the
   * input), or the reason it was refused. Never throws for network input.
   */
  unprotectRtp(packet: Buffer): Buffer | SrtpDropReason {
    const tagLength = this.#tagLength;
    const headerLength = rtpHeaderLength(packet, tagLength);
    if (headerLength < 0) {
      this.stats.malformed++;
      return 'malformed';
    }
    const end = packet.length - tagLength;
    const ssrc = packet.readUInt32BE(8);
    const seq = packet.readUInt16BE(2);
    let state = this.#streams.get(ssrc);
    const fresh = state === undefined;
    if (state === undefined) state = newStream(seq);
    const v = fresh ? 0 : estimateRoc(state, seq);
    if (v < 0) {
      // Before the first packet of this stream's ROC 0: cannot be authenticated with any index we would accept.
      this.stats.replays++;
      return 'replay';
    }
    const index = v * 65536 + seq;
    if (isReplay(state, index)) {
      this.stats.replays++;
      return 'replay';
    }
    if (this.#gcm) {
      const ok = this.#openGcm(
        this.#rtpKeyObject!,
        this.#rtpIv(ssrc, v, seq),
        packet,
        headerLength,
        end,
        packet.subarray(0, headerLength),
      );
      if (!ok) {
        this.stats.authFailures++;
        return 'auth';
      }
    } else {
      const tag = this.#tag;
      this.#rtpMac!.sign(packet, 0, end, v >>> 0, tag, 0, AES_CM_TAG);
      if (!constantTimeEqual(tag, 0, packet, end, AES_CM_TAG)) {
        this.stats.authFailures++;
        return 'auth';
      }
      this.#ctrXor(this.#rtpEcb!, this.#rtp.salt, ssrc, v, seq, packet, headerLength, end);
    }
    if (fresh) this.#streams.set(ssrc, state);
    advance(state, v, seq);
    markSeen(state, index);
    return packet.subarray(0, end);
  }

  /** Protects one RTCP compound packet (encrypted, E=1). Returns a new buffer. Throws RangeError for non-RTCP. */
  protectRtcp(packet: Buffer): Buffer {
    if (packet.length < 8 || (packet[0]! & 0xc0) !== 0x80) throw new RangeError('not an RTCP packet');
    const ssrc = packet.readUInt32BE(4);
    const state = this.#rtcpStream(ssrc);
    state.sentIndex = state.sentIndex >= MAX_SRTCP_INDEX ? 0 : state.sentIndex + 1;
    const index = state.sentIndex;
    const length = packet.length;
    if (this.#gcm) {
      // RFC 7714 9: header(8) | ciphertext | tag(16) | E+index(4); AAD = header(8) | E+index.
      const out = Buffer.allocUnsafe(length + GCM_TAG + SRTCP_INDEX_BYTES);
      packet.copy(out, 0, 0, length);
      out.writeUInt32BE((0x80000000 | index) >>> 0, length + GCM_TAG);
      const aad = Buffer.concat([packet.subarray(0, 8), out.subarray(length + GCM_TAG)]);
      this.#sealGcm(this.#rtcpKeyObject!, this.#rtcpIv(ssrc, index), out, 8, length, aad);
      return out;
    }
    const out = Buffer.allocUnsafe(length + SRTCP_INDEX_BYTES + AES_CM_TAG);
    packet.copy(out, 0, 0, length);
    this.#ctrXor(this.#rtcpEcb!, this.#rtcp.salt, ssrc, Math.floor(index / 65536), index & 0xffff, out, 8, length);
    out.writeUInt32BE((0x80000000 | index) >>> 0, length);
    this.#rtcpMac!.sign(out, 0, length + SRTCP_INDEX_BYTES, -1, out, length + SRTCP_INDEX_BYTES, AES_CM_TAG);
    return out;
  }

  /** Unprotects one SRTCP packet in place and returns the RTCP packet (a view of the input), or why it was refused. */
  unprotectRtcp(packet: Buffer): Buffer | SrtpDropReason {
    const tagLength = this.#tagLength;
    const length = packet.length;
    if (length < 8 + tagLength + SRTCP_INDEX_BYTES || (packet[0]! & 0xc0) !== 0x80) {
      this.stats.malformed++;
      return 'malformed';
    }
    const ssrc = packet.readUInt32BE(4);
    // AES_CM: ... | E+index | tag;  AES-GCM: ... | tag | E+index.
    const indexOffset = this.#gcm ? length - SRTCP_INDEX_BYTES : length - AES_CM_TAG - SRTCP_INDEX_BYTES;
    const word = packet.readUInt32BE(indexOffset);
    const encrypted = word >>> 31 === 1;
    const index = word & MAX_SRTCP_INDEX;
    const state = this.#rtcpStreams.get(ssrc);
    if (state !== undefined && isReplay(state, index)) {
      this.stats.replays++;
      return 'replay';
    }
    let end: number;
    if (this.#gcm) {
      end = length - GCM_TAG - SRTCP_INDEX_BYTES;
      const indexBytes = packet.subarray(indexOffset);
      const ok = encrypted
        ? this.#openGcm(
            this.#rtcpKeyObject!,
            this.#rtcpIv(ssrc, index),
            packet,
            8,
            end,
            Buffer.concat([packet.subarray(0, 8), indexBytes]),
            end,
          )
        : this.#openGcm(
            this.#rtcpKeyObject!,
            this.#rtcpIv(ssrc, index),
            packet,
            end,
            end,
            Buffer.concat([packet.subarray(0, end), indexBytes]),
            end,
          );
      if (!ok) {
        this.stats.authFailures++;
        return 'auth';
      }
    } else {
      end = indexOffset;
      const tag = this.#tag;
      this.#rtcpMac!.sign(packet, 0, length - AES_CM_TAG, -1, tag, 0, AES_CM_TAG);
      if (!constantTimeEqual(tag, 0, packet, length - AES_CM_TAG, AES_CM_TAG)) {
        this.stats.authFailures++;
        return 'auth';
      }
      if (encrypted) {
        this.#ctrXor(this.#rtcpEcb!, this.#rtcp.salt, ssrc, Math.floor(index / 65536), index & 0xffff, packet, 8, end);
      }
    }
    markSeen(state ?? this.#rtcpStream(ssrc), index);
    return packet.subarray(0, end);
  }

  #rtcpStream(ssrc: number): RtcpStreamState {
    let state = this.#rtcpStreams.get(ssrc);
    if (state === undefined) {
      state = { sentIndex: -1, highestIndex: -1, windowLow: 0, windowHigh: 0 };
      this.#rtcpStreams.set(ssrc, state);
    }
    return state;
  }

  /**
   * AES-CM (RFC 3711 4.1.1): XORs buf[start, end) with the keystream for (ssrc, roc, seq). The IV is
   * salt << 16 XOR ssrc << 64 XOR (roc << 16 | seq) << 16; block i adds i to its last 16 bits.
   */
  #ctrXor(
    ecb: ReturnType<typeof createCipheriv>,
    salt: Buffer,
    ssrc: number,
    roc: number,
    seq: number,
    buf: Buffer,
    start: number,
    end: number,
  ): void {
    const length = end - start;
    if (length <= 0) return;
    const blocks = Math.ceil(length / 16);
    if (blocks > MAX_BLOCKS) throw new RangeError('packet too large for SRTP');
    const w0 = salt.readUInt32BE(0);
    const w1 = (salt.readUInt32BE(4) ^ ssrc) >>> 0;
    const w2 = (salt.readUInt32BE(8) ^ roc) >>> 0;
    const h3 = salt.readUInt16BE(12) ^ seq;
    const counter = this.#blocks;
    for (let i = 0, o = 0; i < blocks; i++, o += 16) {
      counter.writeUInt32BE(w0, o);
      counter.writeUInt32BE(w1, o + 4);
      counter.writeUInt32BE(w2, o + 8);
      counter.writeUInt16BE(h3, o + 12);
    }
    const keystream = ecb.update(counter.subarray(0, blocks * 16));
    for (let i = 0; i < length; i++) buf[start + i] = buf[start + i]! ^ keystream[i]!;
  }

  /** RFC 7714 8.1: 00 00 | SSRC | ROC | SEQ, XOR the 12-byte salt. */
  #rtpIv(ssrc: number, roc: number, seq: number): Buffer {
    const iv = this.#iv;
    const salt = this.#rtp.salt;
    iv.writeUInt16BE(salt.readUInt16BE(0), 0);
    iv.writeUInt32BE((salt.readUInt32BE(2) ^ ssrc) >>> 0, 2);
    iv.writeUInt32BE((salt.readUInt32BE(6) ^ roc) >>> 0, 6);
    iv.writeUInt16BE(salt.readUInt16BE(10) ^ seq, 10);
    return iv;
  }

  /** RFC 7714 9.1: 00 00 | SSRC | 00 00 | 0 + 31-bit SRTCP index, XOR the 12-byte salt. */
  #rtcpIv(ssrc: number, index: number): Buffer {
    const iv = this.#iv;
    const salt = this.#rtcp.salt;
    iv.writeUInt16BE(salt.readUInt16BE(0), 0);
    iv.writeUInt32BE((salt.readUInt32BE(2) ^ ssrc) >>> 0, 2);
    iv.writeUInt16BE(salt.readUInt16BE(6), 6);
    iv.writeUInt32BE((salt.readUInt32BE(8) ^ index) >>> 0, 8);
    return iv;
  }

  /** Encrypts buf[start, end) in place and writes the 16-byte tag at `end`. */
  #sealGcm(key: KeyObject, iv: Buffer, buf: Buffer, start: number, end: number, aad: Buffer): void {
    const cipher = createCipheriv('aes-128-gcm', key, iv, { authTagLength: GCM_TAG });
    cipher.setAAD(aad);
    if (end > start) cipher.update(buf.subarray(start, end)).copy(buf, start);
    cipher.final();
    cipher.getAuthTag().copy(buf, end);
  }

  /**
   * Checks the tag at `tagOffset` (default `end`) and decrypts buf[start, end) in place. False when the tag does
   * not match (the buffer is then left as it was).
   */
  #openGcm(
    key: KeyObject,
    iv: Buffer,
    buf: Buffer,
    start: number,
    end: number,
    aad: Buffer,
    tagOffset = end,
  ): boolean {
    const decipher = createDecipheriv('aes-128-gcm', key, iv, { authTagLength: GCM_TAG });
    decipher.setAAD(aad);
    decipher.setAuthTag(buf.subarray(tagOffset, tagOffset + GCM_TAG));
    const plain = end > start ? decipher.update(buf.subarray(start, end)) : undefined;
    try {
      decipher.final();
    } catch {
      return false;
    }
    plain?.copy(buf, start);
    return true;
  }
}
