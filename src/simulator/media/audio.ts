/**
 * Audio for the simulated Meta media endpoint: sine and DTMF synthesis, tone and DTMF detection (Goertzel),
 * small RTP and RFC 4733 helpers. 48 kHz mono, 16-bit.
 */
import { buildRtp, parseRtp } from '../../media/rtp.js';

export const SAMPLE_RATE = 48000;
/** 20 ms at 48 kHz. */
export const FRAME_SAMPLES = 960;

export const DTMF_LOW = [697, 770, 852, 941] as const;
export const DTMF_HIGH = [1209, 1336, 1477, 1633] as const;
const DTMF_KEYS = ['123A', '456B', '789C', '*0#D'] as const;
/** RFC 4733 event codes 0-15. */
export const DTMF_EVENT_DIGITS = '0123456789*#ABCD';

export function dtmfFrequencies(digit: string): [number, number] {
  for (let row = 0; row < 4; row++) {
    const col = DTMF_KEYS[row]!.indexOf(digit.toUpperCase());
    if (col >= 0) return [DTMF_LOW[row]!, DTMF_HIGH[col]!];
  }
  throw new RangeError(`not a DTMF digit: ${digit}`);
}

/** Phase-continuous sine generator; amplitude 0..1 of full scale. */
export class SineSource {
  #phases: number[];
  readonly #freqs: number[];
  readonly #amplitude: number;

  constructor(frequencies: number[], amplitude = 0.3) {
    this.#freqs = frequencies;
    this.#phases = frequencies.map(() => 0);
    this.#amplitude = amplitude / frequencies.length;
  }

  next(samples = FRAME_SAMPLES): Int16Array {
    const out = new Int16Array(samples);
    const scale = this.#amplitude * 32767;
    for (let k = 0; k < this.#freqs.length; k++) {
      const step = (2 * Math.PI * this.#freqs[k]!) / SAMPLE_RATE;
      let phase = this.#phases[k]!;
      for (let i = 0; i < samples; i++) {
        out[i] = out[i]! + Math.round(Math.sin(phase) * scale);
        phase += step;
      }
      this.#phases[k] = phase % (2 * Math.PI);
    }
    return out;
  }
}

/** Power of one frequency in a block (Goertzel), normalised by block energy: 0..~1. */
export function goertzelRatio(pcm: Int16Array, frequency: number, start = 0, length = pcm.length - start): number {
  const coeff = 2 * Math.cos((2 * Math.PI * frequency) / SAMPLE_RATE);
  let s1 = 0;
  let s2 = 0;
  let energy = 0;
  for (let i = start; i < start + length; i++) {
    const x = pcm[i]!;
    energy += x * x;
    const s0 = x + coeff * s1 - s2;
    s2 = s1;
    s1 = s0;
  }
  if (energy === 0) return 0;
  const power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
  return (2 * power) / (length * energy);
}

/** The frequency (among candidates) with the most energy in the block, and its share. */
export function dominantFrequency(pcm: Int16Array, candidates: number[]): { frequency: number; ratio: number } {
  let best = { frequency: candidates[0] ?? 0, ratio: 0 };
  for (const f of candidates) {
    const ratio = goertzelRatio(pcm, f);
    if (ratio > best.ratio) best = { frequency: f, ratio };
  }
  return best;
}

/**
 * Streaming in-band DTMF detector: 20 ms blocks, one low and one high group tone each holding a clear share of the
 * block energy, for at least two blocks in a row.
 */
export class InbandDtmfDetector {
  #current: string | undefined;
  #blocks = 0;
  #reported = false;
  #pending = new Int16Array(0);
  readonly #onDigit: (digit: string, durationMs: number) => void;

  constructor(onDigit: (digit: string, durationMs: number) => void) {
    this.#onDigit = onDigit;
  }

  push(pcm: Int16Array): void {
    let data = pcm;
    if (this.#pending.length > 0) {
      data = new Int16Array(this.#pending.length + pcm.length);
      data.set(this.#pending);
      data.set(pcm, this.#pending.length);
    }
    let offset = 0;
    while (data.length - offset >= FRAME_SAMPLES) {
      this.#block(data.subarray(offset, offset + FRAME_SAMPLES));
      offset += FRAME_SAMPLES;
    }
    this.#pending = data.slice(offset);
  }

  /** Report a digit still held (call at end of stream). */
  flush(): void {
    this.#end();
  }

  #block(block: Int16Array): void {
    const digit = detectDtmfBlock(block);
    if (digit === this.#current) {
      if (digit !== undefined) this.#blocks++;
      return;
    }
    this.#end();
    this.#current = digit;
    this.#blocks = digit === undefined ? 0 : 1;
    this.#reported = false;
  }

  #end(): void {
    if (this.#current !== undefined && this.#blocks >= 2 && !this.#reported) {
      this.#reported = true;
      this.#onDigit(this.#current, this.#blocks * 20);
    }
    this.#current = undefined;
    this.#blocks = 0;
  }
}

/** The DTMF digit in one block, if any. */
export function detectDtmfBlock(block: Int16Array): string | undefined {
  let energy = 0;
  for (let i = 0; i < block.length; i++) energy += block[i]! * block[i]!;
  // Below about -45 dBFS RMS: silence.
  if (energy / block.length < 100) return undefined;
  const low = dominantFrequency(block, [...DTMF_LOW]);
  const high = dominantFrequency(block, [...DTMF_HIGH]);
  if (low.ratio < 0.2 || high.ratio < 0.2 || low.ratio + high.ratio < 0.6) return undefined;
  const row = DTMF_LOW.indexOf(low.frequency as (typeof DTMF_LOW)[number]);
  const col = DTMF_HIGH.indexOf(high.frequency as (typeof DTMF_HIGH)[number]);
  return DTMF_KEYS[row]![col];
}

// ---------------------------------------------------------------------------------------------------------------
// RTP
// ---------------------------------------------------------------------------------------------------------------

export interface ParsedRtp {
  payloadType: number;
  marker: boolean;
  sequenceNumber: number;
  timestamp: number;
  ssrc: number;
  payload: Buffer;
}

/** The media engine's RTP parser, with the payload cut out for the simulator's convenience. */
export function parseRtpPacket(packet: Buffer): ParsedRtp | undefined {
  const header = parseRtp(packet);
  if (!header) return undefined;
  const { payloadOffset, payloadLength, ...fields } = header;
  return { ...fields, payload: packet.subarray(payloadOffset, payloadOffset + payloadLength) };
}

export function buildRtpPacket(fields: Omit<ParsedRtp, 'payload'>, payload: Uint8Array): Buffer {
  return buildRtp({ ...fields, payload });
}

/** RFC 4733 named-event payload. */
export function telephoneEventPayload(event: number, end: boolean, duration: number, volume = 10): Buffer {
  const payload = Buffer.alloc(4);
  payload[0] = event;
  payload[1] = (end ? 0x80 : 0) | (volume & 0x3f);
  payload.writeUInt16BE(Math.min(duration, 0xffff), 2);
  return payload;
}
