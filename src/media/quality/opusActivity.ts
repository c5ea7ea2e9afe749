/**
 * Whether an Opus packet carries audio, for one-way audio detection on Opus passed through undecoded (RFC 6716),
 * decoding only the packets whose first bytes leave it in doubt.
 *
 * The payload's size does not tell (measured with libopus, test/unit/media/opusActivity.test.ts): digital silence and
 * background noise at -70 dBFS come out as large as a tone at -20 dBFS (18-35 bytes against 30-50 at 16-20 kb/s), only
 * DTX silence is 1-2 bytes. The first bytes tell more, without decoding:
 * - 1-2 bytes (DTX, a frame of nothing): silent;
 * - SILK-only and hybrid packets (TOC configs 0-15, Opus's speech modes) begin with one voice activity flag per SILK
 *   frame, set by the sender's encoder when it hears speech: set, audio;
 * - CELT-only packets (configs 16-31) begin with a silence flag (digital silence): set, silent.
 * The rest is in doubt: a SILK frame without the flag may still carry a steady tone (SILK's detector takes a 440 Hz
 * tone at -20 dBFS for no voice) and a CELT frame anything. Those packets are decoded (8 kHz mono, on the call's media
 * thread) and judged by level like decoded audio; the packets skipped in between do not upset that level, since the
 * first SILK frame of every packet codes its gains on their own. So that the work per packet stays bounded whatever
 * the stream (a steady tone leaves every SILK packet in doubt, and a decode costs ~10 us where the flags cost well
 * under 1), at most one doubtful SILK or hybrid packet in {@link SILK_DECODE_EVERY} is decoded and the others take its
 * verdict: a change of level is seen within 100 ms. CELT packets in doubt are all decoded (their energies are coded
 * against the previous frame's, which a decoder that skipped packets does not have).
 */
import { OpusDecoder } from '../dsp/opus.js';
import { pcmHasAudio } from './CallQuality.js';

/** The result of range-decoding the first bits of a frame (RFC 6716 section 4.1, libopus entdec.c). */
class RangeBits {
  #data: Uint8Array;
  #pos: number;
  #end: number;
  #rng = 128;
  #val: number;
  #rem: number;

  constructor(data: Uint8Array, start: number, end: number) {
    this.#data = data;
    this.#pos = start;
    this.#end = end;
    this.#rem = this.#byte();
    this.#val = this.#rng - 1 - (this.#rem >> 1);
    this.#normalize();
  }

  #byte(): number {
    return this.#pos < this.#end ? this.#data[this.#pos++]! : 0;
  }

  #normalize(): void {
    while (this.#rng <= 1 << 23) {
      this.#rng = (this.#rng * 256) >>> 0;
      const previous = this.#rem;
      this.#rem = this.#byte();
      const sym = ((previous << 8) | this.#rem) >> 1;
      this.#val = ((this.#val * 256 + (255 & ~sym)) & 0x7fffffff) >>> 0;
    }
  }

  /** One bit whose probability of being 1 is 1/2^logp. */
  bit(logp: number): boolean {
    const s = this.#rng >>> logp;
    const one = this.#val < s;
    if (!one) this.#val -= s;
    this.#rng = one ? s : this.#rng - s;
    this.#normalize();
    return one;
  }
}

/** Where the first frame of the packet lies, or undefined when the packet is malformed or has no frame. */
function firstFrame(payload: Uint8Array): { start: number; end: number } | undefined {
  const code = payload[0]! & 0x03;
  if (code === 0) return { start: 1, end: payload.length };
  if (code === 1) return { start: 1, end: 1 + Math.floor((payload.length - 1) / 2) };
  if (code === 2) {
    const b1 = payload[1];
    if (b1 === undefined) return undefined;
    const lengthBytes = b1 < 252 ? 1 : 2;
    const length = b1 < 252 ? b1 : b1 + 4 * (payload[2] ?? 0);
    const start = 1 + lengthBytes;
    return start + length <= payload.length ? { start, end: start + length } : undefined;
  }
  // Code 3: a frame count byte (VBR flag, padding flag, count), then padding lengths and, for VBR, frame lengths.
  const header = payload[1];
  if (header === undefined || (header & 0x3f) === 0) return undefined;
  let pos = 2;
  let padding = 0;
  if (header & 0x40) {
    for (;;) {
      const p = payload[pos++];
      if (p === undefined) return undefined;
      padding += p === 255 ? 254 : p;
      if (p !== 255) break;
    }
  }
  const count = header & 0x3f;
  const end = payload.length - padding;
  if (!(header & 0x80)) return pos < end ? { start: pos, end: pos + Math.floor((end - pos) / count) } : undefined;
  const b = payload[pos];
  if (b === undefined) return undefined;
  const length = b < 252 ? b : b + 4 * (payload[pos + 1] ?? 0);
  // The first frame follows the count - 1 length fields; only the first one's size is needed to find it.
  let at = pos;
  for (let i = 0; i < count - 1; i++) {
    const v = payload[at];
    if (v === undefined) return undefined;
    at += v < 252 ? 1 : 2;
  }
  return at + length <= end ? { start: at, end: at + length } : undefined;
}

/** SILK frames per Opus frame of `config` (10 and 20 ms: 1; 40 ms: 2; 60 ms: 3). */
function silkFrames(config: number): number {
  if (config >= 12) return 1; // hybrid: 10 or 20 ms
  const size = config & 3; // SILK-only: 10, 20, 40, 60 ms
  return size <= 1 ? 1 : size === 2 ? 2 : 3;
}

/** The packet's own verdict: voice (true), silent (false), or undefined when only its level can tell. */
export function opusVoiceFlag(payload: Uint8Array): boolean | undefined {
  if (payload.length <= 2) return false;
  const config = payload[0]! >> 3;
  const stereo = (payload[0]! & 0x04) !== 0;
  const frame = firstFrame(payload);
  if (!frame || frame.end - frame.start <= 1) return false;
  const bits = new RangeBits(payload, frame.start, frame.end);
  if (config >= 16) return bits.bit(15) ? false : undefined;
  // SILK: the mid channel's VAD flags, its LBRR flag, then (stereo) the side channel's.
  const frames = silkFrames(config);
  for (let i = 0; i < frames; i++) if (bits.bit(1)) return true;
  if (!stereo) return undefined;
  bits.bit(1);
  for (let i = 0; i < frames; i++) if (bits.bit(1)) return true;
  return undefined;
}

/** Of the SILK and hybrid packets whose flags leave them in doubt, one in this many is decoded (5: every 100 ms). */
export const SILK_DECODE_EVERY = 5;

/** One direction's Opus stream, judged packet by packet (see the module comment). */
export class OpusAudioJudge {
  #decoder: OpusDecoder | undefined;
  /** Packets that had to be decoded (for tests and benchmarks). */
  decoded = 0;
  /** Doubtful SILK packets since the last one decoded, and that one's verdict. */
  #silkSinceDecode = SILK_DECODE_EVERY;
  #silkVerdict = false;
  #closed = false;

  hasAudio(payload: Uint8Array): boolean {
    const flag = opusVoiceFlag(payload);
    if (flag !== undefined) return flag;
    const silk = payload[0]! >> 3 < 16;
    if (silk && ++this.#silkSinceDecode < SILK_DECODE_EVERY) return this.#silkVerdict;
    const verdict = this.#decodedHasAudio(payload);
    if (silk) {
      this.#silkSinceDecode = 0;
      this.#silkVerdict = verdict;
    }
    return verdict;
  }

  /** Frees the decoder (its call ended); every packet is judged silent afterwards. Idempotent. */
  close(): void {
    this.#closed = true;
    this.#decoder?.close();
    this.#decoder = undefined;
  }

  #decodedHasAudio(payload: Uint8Array): boolean {
    if (this.#closed) return false;
    this.#decoder ??= new OpusDecoder({ channels: 1, sample_rate: 8000 });
    try {
      const out = this.#decoder.decode(payload);
      this.decoded++;
      // The addon returns a view of a shared buffer, not always 2-byte aligned: copy.
      return pcmHasAudio(new Int16Array(out.buffer.slice(out.byteOffset, out.byteOffset + out.byteLength)));
    } catch {
      // A packet libopus refuses carries nothing playable.
      return false;
    }
  }
}
