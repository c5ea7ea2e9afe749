/**
 * SRTP and SRTCP (RFC 3711, RFC 7714, RFC 6188's AES-256 key derivation), one context per direction that keeps its
 * cipher state across packets. Shared by the Messenger leg (keys from DTLS-SRTP) and the PBX leg (keys from SDES,
 * RFC 4568).
 *
 * Profiles are named by their DTLS-SRTP protection profile numbers (RFC 5764, RFC 7714), SDES suite names map onto
 * them (media/sdes.ts): AES_CM_128_HMAC_SHA1_80 (0x0001), AES_CM_128_HMAC_SHA1_32 (0x0002; 32-bit SRTP tag, SRTCP
 * keeps the 80-bit tag, RFC 5764 4.1.2), AEAD_AES_128_GCM (0x0007) and AEAD_AES_256_GCM (0x0008).
 *
 * Why not werift's SrtpSession: it builds a new AES-CTR cipher (and key schedule) and a new HMAC for every packet.
 * Here, for AES_CM, one AES-ECB cipher per context, created once, turns a buffer of counter blocks into the
 * keystream of a whole packet in one call, and the payload is XORed in place; HMAC-SHA1 starts from keyed states
 * computed once (HmacSha1 below). AES-GCM uses the same ECB cipher for its counter blocks and computes GHASH in
 * JavaScript from a table made once per key (AesGcm below), since a Node cipher object cannot take a new IV.
 * Authentication failures, replays and malformed packets are returned as a reason, not thrown: a bad packet
 * from the network costs no exception.
 *
 * Key derivation rate is 0 (what DTLS-SRTP uses, and SDES without a KDR parameter): session keys are derived once
 * per context.
 */
import { createCipheriv } from 'node:crypto';

/** DTLS-SRTP protection profile SRTP_AES128_CM_HMAC_SHA1_80 (RFC 5764). */
export const SRTP_AES128_CM_HMAC_SHA1_80 = 0x0001;
/** DTLS-SRTP protection profile SRTP_AES128_CM_HMAC_SHA1_32 (RFC 5764): 4-byte SRTP tag, 10-byte SRTCP tag. */
export const SRTP_AES128_CM_HMAC_SHA1_32 = 0x0002;
/** DTLS-SRTP protection profile SRTP_AEAD_AES_128_GCM (RFC 7714). */
export const SRTP_AEAD_AES_128_GCM = 0x0007;
/** DTLS-SRTP protection profile SRTP_AEAD_AES_256_GCM (RFC 7714; keys derived with AES_256_CM_PRF, RFC 6188). */
export const SRTP_AEAD_AES_256_GCM = 0x0008;

export type SrtpProfileId =
  | typeof SRTP_AES128_CM_HMAC_SHA1_80
  | typeof SRTP_AES128_CM_HMAC_SHA1_32
  | typeof SRTP_AEAD_AES_128_GCM
  | typeof SRTP_AEAD_AES_256_GCM;

/** Why an inbound packet was refused. `expired`: the master key's lifetime (packets) is used up. */
export type SrtpDropReason = 'malformed' | 'auth' | 'replay' | 'expired';

/** The lengths that make up a profile, bytes. */
export interface SrtpProfileInfo {
  /** Master key = session encryption key. */
  keyLength: number;
  /** Master salt (14 for AES_CM, 12 for AES-GCM) = session salt. */
  saltLength: number;
  gcm: boolean;
  /** Authentication tag of SRTP packets. */
  rtpTagLength: number;
  /** Authentication tag of SRTCP packets. */
  rtcpTagLength: number;
  /** HMAC-SHA1 session key (0 for AES-GCM). */
  authKeyLength: number;
}

const PROFILES: Record<SrtpProfileId, SrtpProfileInfo> = {
  [SRTP_AES128_CM_HMAC_SHA1_80]: { keyLength: 16, saltLength: 14, gcm: false, rtpTagLength: 10, rtcpTagLength: 10, authKeyLength: 20 },
  [SRTP_AES128_CM_HMAC_SHA1_32]: { keyLength: 16, saltLength: 14, gcm: false, rtpTagLength: 4, rtcpTagLength: 10, authKeyLength: 20 },
  [SRTP_AEAD_AES_128_GCM]: { keyLength: 16, saltLength: 12, gcm: true, rtpTagLength: 16, rtcpTagLength: 16, authKeyLength: 0 },
  [SRTP_AEAD_AES_256_GCM]: { keyLength: 32, saltLength: 12, gcm: true, rtpTagLength: 16, rtcpTagLength: 16, authKeyLength: 0 },
};

/** True for the profiles this module implements. */
export function isSupportedSrtpProfile(profile: number): profile is SrtpProfileId {
  return Object.hasOwn(PROFILES, profile);
}

/** Master key length of a profile, bytes. */
export function srtpMasterKeyLength(profile: SrtpProfileId): number {
  return PROFILES[profile].keyLength;
}

/** Master salt length of a profile, bytes (RFC 7714: 12 for the AEAD profiles). */
export function srtpMasterSaltLength(profile: SrtpProfileId): number {
  return PROFILES[profile].saltLength;
}

/** The session keys of one of SRTP or SRTCP. */
export interface SrtpSessionKeys {
  /** Encryption key, 16 or 32 bytes. */
  key: Buffer;
  /** Session salt: 14 bytes (AES_CM) or 12 bytes (AES-GCM). */
  salt: Buffer;
  /** HMAC-SHA1 key, 20 bytes (AES_CM only; empty for AES-GCM). */
  auth: Buffer;
}

/** An AES-ECB cipher for a 16- or 32-byte key (the block function of AES-CM, GCM and the key derivation). */
function aesEcb(key: Buffer): ReturnType<typeof createCipheriv> {
  if (key.length !== 16 && key.length !== 32) throw new RangeError(`AES key must be 16 or 32 bytes, not ${key.length}`);
  return createCipheriv(key.length === 16 ? 'aes-128-ecb' : 'aes-256-ecb', key, null).setAutoPadding(false);
}

/**
 * AES in counter mode as SRTP uses it (RFC 3711 4.1.1): block i of the keystream is AES(key, iv << 16 + i), where
 * `iv` is 112 bits (14 bytes). Returns the first `length` bytes. A 32-byte key is AES-256 (RFC 6188).
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
  const cipher = aesEcb(key);
  return Buffer.concat([cipher.update(input), cipher.final()]).subarray(0, length);
}

/**
 * RFC 3711 4.3.1 key derivation with a key derivation rate of 0: the AES-CM keystream under the master key (AES-128,
 * or AES-256 for a 32-byte key: RFC 6188's AES_256_CM_PRF), with IV = master salt XOR label << 48. A 12-byte master
 * salt (AES-GCM) is padded with two zero bytes at the end, as libsrtp does.
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
  const info = PROFILES[profile];
  if (masterKey.length !== info.keyLength) {
    throw new RangeError(`SRTP master key must be ${info.keyLength} bytes for profile ${profile}`);
  }
  if (masterSalt.length !== info.saltLength) {
    throw new RangeError(`SRTP master salt must be ${info.saltLength} bytes for profile ${profile}`);
  }
  const derive = (base: number): SrtpSessionKeys => ({
    key: deriveSrtpKey(masterKey, masterSalt, base, info.keyLength),
    auth: info.authKeyLength === 0 ? Buffer.alloc(0) : deriveSrtpKey(masterKey, masterSalt, base + 1, info.authKeyLength),
    salt: deriveSrtpKey(masterKey, masterSalt, base + 2, info.saltLength),
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

/** GHASH reduction for 4 bits shifted out (NIST SP 800-38D's R = 0xE1 << 120, reflected). */
const LAST4 = [
  0x0000, 0x1c20, 0x3840, 0x2460, 0x7080, 0x6ca0, 0x48c0, 0x54e0, 0xe100, 0xfd20, 0xd940, 0xc560, 0x9180, 0x8da0, 0xa9c0,
  0xb5e0,
];
/** LAST4 placed where it is added: into the top word after a shift by 4. */
const R4 = new Int32Array(16);
for (let r = 0; r < 16; r++) R4[r] = LAST4[r]! << 16;

/**
 * GCM counter blocks IV | 1, IV | 2, ... (`blocks` of them) for the 12-byte IV at iv[ivOffset], written at out[offset];
 * returns the offset after them. Word writes, not a Buffer copy per block (a call into node each).
 */
function writeCounterBlocks(out: Buffer, offset: number, iv: Buffer, ivOffset: number, blocks: number): number {
  const w0 = iv.readUInt32BE(ivOffset);
  const w1 = iv.readUInt32BE(ivOffset + 4);
  const w2 = iv.readUInt32BE(ivOffset + 8);
  let o = offset;
  for (let i = 1; i <= blocks; i++, o += 16) {
    out.writeUInt32BE(w0, o);
    out.writeUInt32BE(w1, o + 4);
    out.writeUInt32BE(w2, o + 8);
    out.writeUInt32BE(i, o + 12);
  }
  return o;
}

/** Packets whose GCM keystream is made in one call into node's cipher (see AesGcm.prepare). */
export const GCM_AHEAD_PACKETS = 8;
/** Packets up to this many bytes (payload) get their keystream made ahead; bigger ones make their own. */
const GCM_AHEAD_MAX_BYTES = 240;
/** Keystreams made ahead cover the packet that asked plus this many bytes (Opus packets vary in size). */
const GCM_AHEAD_MARGIN_BYTES = 48;

/**
 * AES-GCM (NIST SP 800-38D) with a fixed key and 12-byte IVs, for SRTP packets. Node cannot give a cipher object a new
 * IV, so `createCipheriv('aes-128-gcm')` per packet pays a key schedule, a GHASH key and an object every time; here
 * the counter blocks go through one AES-128-ECB cipher per key and GHASH runs in JavaScript with Shoup's 4-bit table
 * (256 bytes per key). It allocates only the keystream. The 4-bit table takes twice the steps of an 8-bit one (4 KiB
 * per key) and was slower in a loop over one context, but on the packet path two contexts per call meet each other's
 * packets and everything else the thread does between two of theirs: an 8-bit table was read from memory more than
 * from cache (unprotect 10.4 us per packet with 100 contexts and 512 KiB touched between packets, against 5.6 us
 * without), where the 4-bit one is four cache lines.
 */
export class AesGcm {
  readonly #ecb: ReturnType<typeof createCipheriv>;
  /** T[n] = n * H (n a 4-bit value, bits reflected as GCM orders them), 4 words (big-endian order) each. */
  readonly #t4 = new Int32Array(16 * 4);
  readonly #blocks: Buffer;
  readonly #y = new Int32Array(4);
  /** The last, partial block of a packet as 4 words (no array per packet). */
  readonly #partial = new Int32Array(4);
  readonly #expected = Buffer.alloc(16);
  /** Keystreams made ahead (see `prepare`): their IVs, 12 bytes each, and one ECB output holding them all. */
  readonly #aheadIvs = Buffer.alloc(GCM_AHEAD_PACKETS * 12);
  #aheadCount = 0;
  #aheadBlocks = 0;
  #ahead: Buffer | undefined;
  /** Counter blocks of the packets prepared ahead (grown to what `prepare` needs). */
  #aheadInput = Buffer.alloc(0);

  /** @param maxBytes largest plaintext this instance will handle, bytes (default 1536). */
  constructor(key: Buffer, maxBytes = 1536) {
    this.#ecb = aesEcb(key);
    this.#blocks = Buffer.alloc((Math.ceil(maxBytes / 16) + 1) * 16);
    const h = this.#ecb.update(Buffer.alloc(16));
    // 4-bit tables (mbedtls' gcm_gen_table), as [w0, w1, w2, w3] per nibble.
    const t4 = this.#t4;
    let v0 = h.readInt32BE(0);
    let v1 = h.readInt32BE(4);
    let v2 = h.readInt32BE(8);
    let v3 = h.readInt32BE(12);
    t4.set([v0, v1, v2, v3], 8 * 4);
    for (let i = 4; i > 0; i >>= 1) {
      const carry = v3 & 1;
      v3 = (v3 >>> 1) | (v2 << 31);
      v2 = (v2 >>> 1) | (v1 << 31);
      v1 = (v1 >>> 1) | (v0 << 31);
      v0 = (v0 >>> 1) ^ (carry ? 0xe1000000 | 0 : 0);
      t4.set([v0, v1, v2, v3], i * 4);
    }
    for (let i = 2; i <= 8; i *= 2) {
      for (let j = 1; j < i; j++) {
        for (let w = 0; w < 4; w++) t4[(i + j) * 4 + w] = t4[i * 4 + w]! ^ t4[j * 4 + w]!;
      }
    }
  }

  /** y = (y XOR block) * H for the 16 bytes at buf[o] (zero-padded past `end`). */
  #absorb(buf: Buffer, o: number, end: number): void {
    const y = this.#y;
    let x0: number, x1: number, x2: number, x3: number;
    if (o + 16 <= end) {
      x0 = y[0]! ^ ((buf[o]! << 24) | (buf[o + 1]! << 16) | (buf[o + 2]! << 8) | buf[o + 3]!);
      x1 = y[1]! ^ ((buf[o + 4]! << 24) | (buf[o + 5]! << 16) | (buf[o + 6]! << 8) | buf[o + 7]!);
      x2 = y[2]! ^ ((buf[o + 8]! << 24) | (buf[o + 9]! << 16) | (buf[o + 10]! << 8) | buf[o + 11]!);
      x3 = y[3]! ^ ((buf[o + 12]! << 24) | (buf[o + 13]! << 16) | (buf[o + 14]! << 8) | buf[o + 15]!);
    } else {
      const bytes = this.#partial.fill(0);
      for (let i = 0; o + i < end; i++) bytes[i >> 2] = bytes[i >> 2]! | (buf[o + i]! << (24 - (i & 3) * 8));
      x0 = y[0]! ^ bytes[0]!;
      x1 = y[1]! ^ bytes[1]!;
      x2 = y[2]! ^ bytes[2]!;
      x3 = y[3]! ^ bytes[3]!;
    }
    this.#mul(x0, x1, x2, x3);
  }

  /** y = x * H, a nibble at a time from the last byte up (mbedtls' gcm_mult). */
  #mul(x0: number, x1: number, x2: number, x3: number): void {
    const t = this.#t4;
    let z0 = 0;
    let z1 = 0;
    let z2 = 0;
    let z3 = 0;
    for (let k = 0; k < 16; k++) {
      const word = k < 4 ? x3 : k < 8 ? x2 : k < 12 ? x1 : x0;
      const b = word >>> ((k & 3) * 8);
      // Low nibble, then high nibble: shift Z right by 4 (reducing what falls out), add T[nibble].
      for (let n = 0; n < 8; n += 4) {
        const rem = z3 & 0xf;
        z3 = (z3 >>> 4) | (z2 << 28);
        z2 = (z2 >>> 4) | (z1 << 28);
        z1 = (z1 >>> 4) | (z0 << 28);
        z0 = (z0 >>> 4) ^ R4[rem]!;
        const i = ((b >>> n) & 0xf) * 4;
        z0 ^= t[i]!;
        z1 ^= t[i + 1]!;
        z2 ^= t[i + 2]!;
        z3 ^= t[i + 3]!;
      }
    }
    const y = this.#y;
    y[0] = z0;
    y[1] = z1;
    y[2] = z2;
    y[3] = z3;
  }

  /** GHASH(aad, buf[start, end)) XOR E(J0) -> 16 bytes into out[outOffset]. `ekj0` starts with E(J0). */
  #tag(
    aad: Buffer,
    aadStart: number,
    aadEnd: number,
    buf: Buffer,
    start: number,
    end: number,
    ekj0: Buffer,
    out: Buffer,
    outOffset: number,
  ): void {
    const y = this.#y;
    y.fill(0);
    for (let o = aadStart; o < aadEnd; o += 16) this.#absorb(aad, o, aadEnd);
    for (let o = start; o < end; o += 16) this.#absorb(buf, o, end);
    // Lengths in bits, 64 bits each (the high words are 0 for anything a datagram holds).
    const aadBits = (aadEnd - aadStart) * 8;
    const ctBits = (end - start) * 8;
    this.#mul(y[0]!, y[1]! ^ aadBits, y[2]!, y[3]! ^ ctBits);
    for (let w = 0; w < 4; w++) {
      const v = y[w]! ^ ekj0.readInt32BE(w * 4);
      out.writeInt32BE(v, outOffset + w * 4);
    }
  }

  /** True when the keystream for `iv` and `length` bytes was made ahead (`prepare`). */
  prepared(iv: Buffer, length: number): boolean {
    return this.#aheadIndex(iv, Math.ceil(length / 16) + 1) >= 0;
  }

  /**
   * Make the keystreams (counter blocks J0, J0+1, ... through AES) of up to GCM_AHEAD_PACKETS packets in one ECB call:
   * `ivs` holds `count` 12-byte IVs, each packet at most `length` bytes. A call into node's cipher costs more than the
   * AES itself (an object and an output buffer per call), so the next packets' keystreams are made together; seal and
   * open take a prepared one when its IV comes, else make their own. Replaces what was prepared before.
   */
  prepare(ivs: Buffer, count: number, length: number): void {
    const blocks = Math.ceil(length / 16) + 1;
    const n = Math.min(count, GCM_AHEAD_PACKETS);
    if (this.#aheadInput.length < n * blocks * 16) this.#aheadInput = Buffer.alloc(n * blocks * 16);
    const input = this.#aheadInput;
    for (let p = 0, o = 0; p < n; p++) o = writeCounterBlocks(input, o, ivs, p * 12, blocks);
    ivs.copy(this.#aheadIvs, 0, 0, n * 12);
    this.#ahead = this.#ecb.update(input.subarray(0, n * blocks * 16));
    this.#aheadCount = n;
    this.#aheadBlocks = blocks;
  }

  /** Which prepared keystream is for `iv` and covers `blocks` blocks; -1 when none. */
  #aheadIndex(iv: Buffer, blocks: number): number {
    if (blocks > this.#aheadBlocks) return -1;
    const ivs = this.#aheadIvs;
    for (let p = 0, o = 0; p < this.#aheadCount; p++, o += 12) {
      // The packet index sits in the last bytes: compare those first.
      if (ivs[o + 11] !== iv[11] || ivs[o + 10] !== iv[10]) continue;
      let same = true;
      for (let i = 0; i < 10; i++) {
        if (ivs[o + i] !== iv[i]) {
          same = false;
          break;
        }
      }
      if (same) return p;
    }
    return -1;
  }

  /** Keystream blocks J0, J0+1, ... for `length` bytes: returns the buffer with E(J0) first. */
  #keystream(iv: Buffer, length: number): Buffer {
    const blocks = Math.ceil(length / 16) + 1;
    const ahead = this.#aheadIndex(iv, blocks);
    if (ahead >= 0) {
      const start = ahead * this.#aheadBlocks * 16;
      return this.#ahead!.subarray(start, start + blocks * 16);
    }
    if (blocks * 16 > this.#blocks.length) throw new RangeError('packet too large for SRTP');
    const input = this.#blocks;
    writeCounterBlocks(input, 0, iv, 0, blocks);
    return this.#ecb.update(input.subarray(0, blocks * 16));
  }

  /**
   * Encrypts buf[start, end) in place, authenticating aad[aadStart, aadEnd) too; writes the 16-byte tag at
   * tagOut[tagOffset]. `iv` is 12 bytes. The AAD may be in `buf` itself, before `start`.
   */
  seal(
    iv: Buffer,
    aad: Buffer,
    aadStart: number,
    aadEnd: number,
    buf: Buffer,
    start: number,
    end: number,
    tagOut: Buffer,
    tagOffset: number,
  ): void {
    const ks = this.#keystream(iv, end - start);
    for (let i = start, k = 16; i < end; i++, k++) buf[i] = buf[i]! ^ ks[k]!;
    this.#tag(aad, aadStart, aadEnd, buf, start, end, ks, tagOut, tagOffset);
  }

  /**
   * Checks the 16-byte tag at tag[tagOffset] and decrypts buf[start, end) in place. False when the tag does not match
   * (the buffer is then left as it was).
   */
  open(
    iv: Buffer,
    aad: Buffer,
    aadStart: number,
    aadEnd: number,
    buf: Buffer,
    start: number,
    end: number,
    tag: Buffer,
    tagOffset: number,
  ): boolean {
    const ks = this.#keystream(iv, end - start);
    const expected = this.#expected;
    this.#tag(aad, aadStart, aadEnd, buf, start, end, ks, expected, 0);
    let diff = 0;
    for (let i = 0; i < 16; i++) diff |= expected[i]! ^ tag[tagOffset + i]!;
    if (diff !== 0) return false;
    for (let i = start, k = 16; i < end; i++, k++) buf[i] = buf[i]! ^ ks[k]!;
    return true;
  }
}

/** Options of an SrtpContext: a master key and salt (DTLS exporter, SDES), or session keys (test vectors). */
export type SrtpContextOptions = {
  profile: SrtpProfileId;
  /**
   * Master key lifetime, packets (RFC 4568's lifetime; SRTP and SRTCP packets counted together): after that many the
   * context refuses to protect (`expired`) and drops what it receives ('expired'). Default: RFC 3711's limits only.
   */
  lifetime?: number;
} & (
  | {
      /** Master key (16 bytes, 32 for AEAD_AES_256_GCM). */
      masterKey: Buffer;
      /** Master salt (14 bytes for AES_CM, 12 for AES-GCM). */
      masterSalt: Buffer;
    }
  | { sessionKeys: { rtp: SrtpSessionKeys; rtcp: SrtpSessionKeys } }
);

/** Counters of one context, for stats and logs. */
export interface SrtpContextStats {
  /** Inbound packets refused because their authentication tag did not match. */
  authFailures: number;
  /** Inbound packets refused as replays or too old for the window. */
  replays: number;
  /** Inbound packets too short or not RTP/RTCP. */
  malformed: number;
  /** Inbound packets refused because the master key's lifetime was used up. */
  expired: number;
}

/**
 * One direction of an SRTP session: protects what we send (local keys) or unprotects what we receive (remote keys).
 * Both RTP and RTCP; any number of SSRCs, each with its own ROC, SRTCP index and replay windows.
 * Not thread-safe; one context per direction per leg.
 */
export class SrtpContext {
  readonly profile: SrtpProfileId;
  readonly stats: SrtpContextStats = { authFailures: 0, replays: 0, malformed: 0, expired: 0 };
  readonly #gcm: boolean;
  /** SRTP tag; SRTCP's is GCM_TAG or AES_CM_TAG whatever the SRTP one. */
  readonly #tagLength: number;
  /** Packets this master key may still protect or accept. */
  #packetsLeft: number;
  readonly #rtp: SrtpSessionKeys;
  readonly #rtcp: SrtpSessionKeys;
  // AES_CM: one ECB cipher per key, the counter blocks they turn into keystream, precomputed salt words.
  readonly #rtpEcb: ReturnType<typeof createCipheriv> | undefined;
  readonly #rtcpEcb: ReturnType<typeof createCipheriv> | undefined;
  readonly #rtpMac: HmacSha1 | undefined;
  readonly #rtcpMac: HmacSha1 | undefined;
  readonly #tag = Buffer.alloc(AES_CM_TAG);
  readonly #blocks = Buffer.alloc(MAX_BLOCKS * 16);
  // AES-GCM: one per key, and a 12-byte IV scratch.
  readonly #rtpGcm: AesGcm | undefined;
  readonly #rtcpGcm: AesGcm | undefined;
  readonly #iv = Buffer.alloc(12);
  /** The next packets' IVs, for AesGcm.prepare. */
  readonly #aheadIvs = Buffer.alloc(GCM_AHEAD_PACKETS * 12);
  readonly #streams = new Map<number, StreamState>();
  readonly #rtcpStreams = new Map<number, RtcpStreamState>();

  constructor(options: SrtpContextOptions) {
    if (!isSupportedSrtpProfile(options.profile)) throw new RangeError(`unsupported SRTP profile ${options.profile}`);
    this.profile = options.profile;
    const info = PROFILES[options.profile];
    this.#gcm = info.gcm;
    this.#tagLength = info.rtpTagLength;
    this.#packetsLeft = options.lifetime ?? Number.MAX_SAFE_INTEGER;
    const keys =
      'sessionKeys' in options
        ? options.sessionKeys
        : deriveSrtpSessionKeys(options.masterKey, options.masterSalt, options.profile);
    this.#rtp = keys.rtp;
    this.#rtcp = keys.rtcp;
    if (this.#gcm) {
      this.#rtpGcm = new AesGcm(keys.rtp.key, MAX_BLOCKS * 16);
      this.#rtcpGcm = new AesGcm(keys.rtcp.key, MAX_BLOCKS * 16);
    } else {
      this.#rtpEcb = aesEcb(keys.rtp.key);
      this.#rtcpEcb = aesEcb(keys.rtcp.key);
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

  /** The master key's lifetime is used up: protect throws, unprotect drops. Renegotiate a key. */
  get expired(): boolean {
    return this.#packetsLeft <= 0;
  }

  #use(): void {
    if (this.#packetsLeft <= 0) throw new RangeError('SRTP master key lifetime reached');
    this.#packetsLeft--;
  }

  /**
   * Protects one RTP packet. Returns a new buffer (the input is not changed).
   * @param ssrc when given, the packet is sent with this SSRC instead of its own.
   * Throws RangeError for a packet that is not RTP (a programming error on our side, not network input).
   */
  protectRtp(packet: Buffer, ssrc?: number): Buffer {
    const headerLength = rtpHeaderLength(packet, 0);
    if (headerLength < 0) throw new RangeError('not an RTP packet');
    this.#use();
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
      const iv = this.#rtpIv(streamSsrc, roc, seq);
      this.#prepareAhead(iv, streamSsrc, roc, seq, length - headerLength);
      this.#rtpGcm!.seal(iv, out, 0, headerLength, out, headerLength, length, out, length);
      return out;
    }
    this.#ctrXor(this.#rtpEcb!, this.#rtp.salt, streamSsrc, roc, seq, out, headerLength, length);
    // Authenticated portion: header, encrypted payload, ROC.
    this.#rtpMac!.sign(out, 0, length, roc >>> 0, out, length, this.#tagLength);
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
    if (this.#packetsLeft <= 0) {
      this.stats.expired++;
      return 'expired';
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
      const iv = this.#rtpIv(ssrc, v, seq);
      this.#prepareAhead(iv, ssrc, v, seq, end - headerLength);
      if (!this.#rtpGcm!.open(iv, packet, 0, headerLength, packet, headerLength, end, packet, end)) {
        this.stats.authFailures++;
        return 'auth';
      }
    } else {
      const tag = this.#tag;
      this.#rtpMac!.sign(packet, 0, end, v >>> 0, tag, 0, tagLength);
      if (!constantTimeEqual(tag, 0, packet, end, tagLength)) {
        this.stats.authFailures++;
        return 'auth';
      }
      this.#ctrXor(this.#rtpEcb!, this.#rtp.salt, ssrc, v, seq, packet, headerLength, end);
    }
    if (fresh) this.#streams.set(ssrc, state);
    advance(state, v, seq);
    markSeen(state, index);
    this.#packetsLeft--;
    return packet.subarray(0, end);
  }

  /** Protects one RTCP compound packet (encrypted, E=1). Returns a new buffer. Throws RangeError for non-RTCP. */
  protectRtcp(packet: Buffer): Buffer {
    if (packet.length < 8 || (packet[0]! & 0xc0) !== 0x80) throw new RangeError('not an RTCP packet');
    this.#use();
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
      this.#rtcpGcm!.seal(this.#rtcpIv(ssrc, index), aad, 0, aad.length, out, 8, length, out, length);
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
    const tagLength = this.#gcm ? GCM_TAG : AES_CM_TAG;
    const length = packet.length;
    if (length < 8 + tagLength + SRTCP_INDEX_BYTES || (packet[0]! & 0xc0) !== 0x80) {
      this.stats.malformed++;
      return 'malformed';
    }
    if (this.#packetsLeft <= 0) {
      this.stats.expired++;
      return 'expired';
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
      // RFC 7714 9.2: AAD is the first 8 bytes and E+index when encrypted, the whole packet and E+index when not.
      const start = encrypted ? 8 : end;
      const aad = Buffer.concat([packet.subarray(0, start), packet.subarray(indexOffset)]);
      if (!this.#rtcpGcm!.open(this.#rtcpIv(ssrc, index), aad, 0, aad.length, packet, start, end, packet, end)) {
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
    this.#packetsLeft--;
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
    this.#writeRtpIv(this.#iv, 0, ssrc, roc, seq);
    return this.#iv;
  }

  /** RFC 7714 8.1: 00 00 | SSRC | ROC | SEQ, XOR the 12-byte salt, into iv[offset]. */
  #writeRtpIv(iv: Buffer, offset: number, ssrc: number, roc: number, seq: number): void {
    const salt = this.#rtp.salt;
    iv.writeUInt16BE(salt.readUInt16BE(0), offset);
    iv.writeUInt32BE((salt.readUInt32BE(2) ^ ssrc) >>> 0, offset + 2);
    iv.writeUInt32BE((salt.readUInt32BE(6) ^ roc) >>> 0, offset + 6);
    iv.writeUInt16BE(salt.readUInt16BE(10) ^ seq, offset + 10);
  }

  /**
   * Unless this packet's keystream was made ahead, make it with those of the stream's next packets (index + 1 ...),
   * which a stream sending in order asks for next. Packets larger than GCM_AHEAD_MAX_BYTES make their own.
   */
  #prepareAhead(iv: Buffer, ssrc: number, roc: number, seq: number, payloadLength: number): void {
    const gcm = this.#rtpGcm!;
    if (payloadLength > GCM_AHEAD_MAX_BYTES || gcm.prepared(iv, payloadLength)) return;
    const ivs = this.#aheadIvs;
    const index = roc * 65536 + seq;
    for (let k = 0; k < GCM_AHEAD_PACKETS; k++) {
      const next = index + k;
      this.#writeRtpIv(ivs, k * 12, ssrc, Math.floor(next / 65536) >>> 0, next & 0xffff);
    }
    gcm.prepare(ivs, GCM_AHEAD_PACKETS, Math.min(GCM_AHEAD_MAX_BYTES, payloadLength + GCM_AHEAD_MARGIN_BYTES));
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
}
