/**
 * G.711 mu-law (PCMU) and A-law (PCMA), 16-bit linear <-> 8-bit, by lookup table.
 *
 * The tables follow ITU-T G.711 as implemented in the classic reference code (Sun's g711.c): encoding a 16-bit
 * sample drops the bits G.711 does not carry (mu-law works on 14 bits, A-law on 13) and rounds toward the
 * segment's quantisation step. Encode tables cover all 65536 inputs (64 KiB each), decode tables all 256 codes,
 * so a frame costs one table read per sample and nothing else.
 */

const MULAW_BIAS = 0x84;
const MULAW_CLIP = 8159;
const MULAW_SEGMENT_END = [0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff, 0x1fff];
const ALAW_SEGMENT_END = [0x1f, 0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff];

function segmentOf(value: number, ends: readonly number[]): number {
  for (let s = 0; s < ends.length; s++) if (value <= ends[s]!) return s;
  return ends.length;
}

function linearToMulaw(sample: number): number {
  let v = sample >> 2;
  let mask: number;
  if (v < 0) {
    v = -v;
    mask = 0x7f;
  } else {
    mask = 0xff;
  }
  if (v > MULAW_CLIP) v = MULAW_CLIP;
  v += MULAW_BIAS >> 2;
  const seg = segmentOf(v, MULAW_SEGMENT_END);
  if (seg >= 8) return 0x7f ^ mask;
  return ((seg << 4) | ((v >> (seg + 1)) & 0x0f)) ^ mask;
}

function mulawToLinear(code: number): number {
  const u = ~code & 0xff;
  let t = ((u & 0x0f) << 3) + MULAW_BIAS;
  t <<= (u & 0x70) >> 4;
  return u & 0x80 ? MULAW_BIAS - t : t - MULAW_BIAS;
}

function linearToAlaw(sample: number): number {
  let v = sample >> 3;
  let mask: number;
  if (v >= 0) {
    mask = 0xd5;
  } else {
    mask = 0x55;
    v = -v - 1;
  }
  const seg = segmentOf(v, ALAW_SEGMENT_END);
  if (seg >= 8) return 0x7f ^ mask;
  let a = seg << 4;
  a |= seg < 2 ? (v >> 1) & 0x0f : (v >> seg) & 0x0f;
  return a ^ mask;
}

function alawToLinear(code: number): number {
  const a = code ^ 0x55;
  let t = (a & 0x0f) << 4;
  const seg = (a & 0x70) >> 4;
  if (seg === 0) t += 8;
  else if (seg === 1) t += 0x108;
  else t = (t + 0x108) << (seg - 1);
  return a & 0x80 ? t : -t;
}

const PCMU_ENCODE = new Uint8Array(65536);
const PCMA_ENCODE = new Uint8Array(65536);
const PCMU_DECODE = new Int16Array(256);
const PCMA_DECODE = new Int16Array(256);
for (let i = 0; i < 65536; i++) {
  const sample = i < 32768 ? i : i - 65536;
  PCMU_ENCODE[i] = linearToMulaw(sample);
  PCMA_ENCODE[i] = linearToAlaw(sample);
}
for (let c = 0; c < 256; c++) {
  PCMU_DECODE[c] = mulawToLinear(c);
  PCMA_DECODE[c] = alawToLinear(c);
}

/** 16-bit linear PCM -> PCMU payload (one byte per sample). */
export function encodePcmu(pcm: Int16Array): Buffer {
  const out = Buffer.allocUnsafe(pcm.length);
  encodePcmuInto(pcm, 0, pcm.length, out, 0);
  return out;
}

/** Samples `start` to `end` of `pcm` -> PCMU, written into `out` from `at` (a packet built in place). */
export function encodePcmuInto(pcm: Int16Array, start: number, end: number, out: Uint8Array, at: number): void {
  for (let i = start; i < end; i++) out[at + i - start] = PCMU_ENCODE[pcm[i]! & 0xffff]!;
}

/** PCMU payload -> 16-bit linear PCM. */
export function decodePcmu(payload: Uint8Array): Int16Array {
  const out = new Int16Array(payload.length);
  for (let i = 0; i < payload.length; i++) out[i] = PCMU_DECODE[payload[i]!]!;
  return out;
}

/** 16-bit linear PCM -> PCMA payload (one byte per sample). */
export function encodePcma(pcm: Int16Array): Buffer {
  const out = Buffer.allocUnsafe(pcm.length);
  encodePcmaInto(pcm, 0, pcm.length, out, 0);
  return out;
}

/** Samples `start` to `end` of `pcm` -> PCMA, written into `out` from `at` (a packet built in place). */
export function encodePcmaInto(pcm: Int16Array, start: number, end: number, out: Uint8Array, at: number): void {
  for (let i = start; i < end; i++) out[at + i - start] = PCMA_ENCODE[pcm[i]! & 0xffff]!;
}

/** PCMA payload -> 16-bit linear PCM. */
export function decodePcma(payload: Uint8Array): Int16Array {
  const out = new Int16Array(payload.length);
  for (let i = 0; i < payload.length; i++) out[i] = PCMA_DECODE[payload[i]!]!;
  return out;
}
