/**
 * Opus tone and DTMF helpers for tests of anything that implements RtpEndpoint (the Messenger leg): send a sine
 * (or a DTMF dual tone, or RFC 4733 events) as Opus RTP through sendRtp(), and capture / analyse what onRtp()
 * delivers.
 */
import { Decoder, Encoder } from '@evan/opus';
import type { RtpEndpoint } from '../../src/core/rtp.js';
import {
  DTMF_EVENT_DIGITS,
  FRAME_SAMPLES,
  InbandDtmfDetector,
  SineSource,
  buildRtpPacket,
  dominantFrequency,
  dtmfFrequencies,
  parseRtpPacket,
  telephoneEventPayload,
} from '../../src/simulator/media/audio.js';

export { dominantFrequency };

/** Sends 20 ms Opus frames of a sine through an endpoint, 50 per second, until stop(). */
export class OpusToneSender {
  readonly #endpoint: RtpEndpoint;
  readonly #pt: number;
  readonly #encoder = new Encoder({ channels: 1, sample_rate: 48000, application: 'voip' });
  #source: SineSource;
  #timer: NodeJS.Timeout | undefined;
  #seq = Math.floor(Math.random() * 65536);
  #timestamp = Math.floor(Math.random() * 2 ** 32);
  #start = 0;
  #frames = 0;
  #events: Array<{ pt: number; event: number; frames: number; sent: number; perFrame: number }> = [];
  packetsSent = 0;

  constructor(endpoint: RtpEndpoint, options: { pt: number; hz: number | [number, number]; amplitude?: number }) {
    this.#endpoint = endpoint;
    this.#pt = options.pt;
    this.#source = new SineSource(typeof options.hz === 'number' ? [options.hz] : options.hz, options.amplitude ?? 0.3);
  }

  start(): this {
    if (this.#timer !== undefined) return this;
    this.#start = performance.now();
    this.#frames = 0;
    this.#timer = setInterval(() => {
      const due = Math.floor((performance.now() - this.#start) / 20) + 1;
      for (let n = Math.min(due - this.#frames, 5); n > 0; n--) {
        this.#frames++;
        this.#sendFrame();
      }
    }, 20);
    return this;
  }

  /** Change the frequency (or dual tone) without a gap. */
  setTone(hz: number | [number, number], amplitude = 0.3): void {
    this.#source = new SineSource(typeof hz === 'number' ? [hz] : hz, amplitude);
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /**
   * Replace the audio by one RFC 4733 event in the same stream (same sequence space, as a browser does): an update
   * every 20 ms with a constant timestamp, three end packets; then audio resumes. Resolves when it was sent.
   */
  sendEvent(options: { pt: number; digit: string; durationMs: number; clockRate: number }): Promise<void> {
    const event = DTMF_EVENT_DIGITS.indexOf(options.digit);
    if (event < 0) throw new RangeError(`not a DTMF digit: ${options.digit}`);
    const frames = Math.max(1, Math.round(options.durationMs / 20));
    this.#events.push({ pt: options.pt, event, frames, sent: 0, perFrame: (options.clockRate * 20) / 1000 });
    this.start();
    return new Promise((resolve) => {
      const check = setInterval(() => {
        if (!this.#events.some((e) => e.event === event && e.sent < e.frames)) {
          clearInterval(check);
          resolve();
        }
      }, 10);
    });
  }

  #sendFrame(): void {
    const ev = this.#events[0];
    if (ev !== undefined) {
      ev.sent++;
      const end = ev.sent >= ev.frames;
      for (let r = 0; r < (end ? 3 : 1); r++) {
        this.#send(ev.pt, ev.sent === 1, telephoneEventPayload(ev.event, end, ev.sent * ev.perFrame));
      }
      if (end) {
        this.#events.shift();
        this.#timestamp = (this.#timestamp + ev.frames * FRAME_SAMPLES) >>> 0;
      }
      return;
    }
    this.#send(this.#pt, false, this.#encoder.encode(this.#source.next()));
    this.#timestamp = (this.#timestamp + FRAME_SAMPLES) >>> 0;
  }

  #send(pt: number, marker: boolean, payload: Uint8Array): void {
    this.#seq = (this.#seq + 1) & 0xffff;
    this.#endpoint.sendRtp(
      buildRtpPacket({ payloadType: pt, marker, sequenceNumber: this.#seq, timestamp: this.#timestamp, ssrc: 1 }, payload),
    );
    this.packetsSent++;
  }
}

export interface CapturedEvent {
  digit: string;
  durationTicks: number;
}

/** Collects what an endpoint receives: decoded Opus as 48 kHz mono PCM, RFC 4733 events, in-band digits. */
export class OpusCapture {
  readonly #decoder = new Decoder({ channels: 1, sample_rate: 48000 });
  readonly #opusPt: number;
  readonly #telephoneEventPt: number | undefined;
  #chunks: Int16Array[] = [];
  #samples = 0;
  readonly events: CapturedEvent[] = [];
  readonly inbandDigits: string[] = [];
  readonly #inband = new InbandDtmfDetector((digit) => this.inbandDigits.push(digit));
  readonly ssrcs = new Set<number>();
  packets = 0;
  readonly #unsubscribe: () => void;
  #lastEventTs: number | undefined;

  constructor(endpoint: RtpEndpoint, options: { opusPt: number; telephoneEventPt?: number }) {
    this.#opusPt = options.opusPt;
    this.#telephoneEventPt = options.telephoneEventPt;
    this.#unsubscribe = endpoint.onRtp((packet) => this.#onPacket(packet));
  }

  get samples(): number {
    return this.#samples;
  }

  pcm(): Int16Array {
    const out = new Int16Array(this.#samples);
    let offset = 0;
    for (const c of this.#chunks) {
      out.set(c, offset);
      offset += c.length;
    }
    return out;
  }

  clear(): void {
    this.#chunks = [];
    this.#samples = 0;
    this.events.length = 0;
    this.inbandDigits.length = 0;
    this.ssrcs.clear();
    this.packets = 0;
  }

  stop(): void {
    this.#unsubscribe();
  }

  #onPacket(packet: Buffer): void {
    const rtp = parseRtpPacket(packet);
    if (rtp === undefined) return;
    this.packets++;
    this.ssrcs.add(rtp.ssrc);
    if (rtp.payloadType === this.#telephoneEventPt) {
      const end = (rtp.payload[1]! & 0x80) !== 0;
      if (end && rtp.timestamp !== this.#lastEventTs) {
        this.#lastEventTs = rtp.timestamp;
        this.events.push({ digit: DTMF_EVENT_DIGITS[rtp.payload[0]!]!, durationTicks: rtp.payload.readUInt16BE(2) });
      }
      return;
    }
    if (rtp.payloadType !== this.#opusPt) return;
    const bytes = this.#decoder.decode(rtp.payload);
    const pcm = new Int16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2).slice();
    this.#chunks.push(pcm);
    this.#samples += pcm.length;
    this.#inband.push(pcm);
  }
}

/** Tone frequencies a detector compares against: the expected one must win clearly. */
export const TONE_CANDIDATES = [300, 440, 697, 800, 1000, 1209, 1400, 2000];

/** Dominant frequency over the last `ms` of the captured audio. */
export function lastDominant(pcm: Int16Array, ms = 400): { frequency: number; ratio: number } {
  const n = Math.min(pcm.length, (48000 * ms) / 1000);
  return dominantFrequency(pcm.subarray(pcm.length - n), TONE_CANDIDATES);
}

/** Wait until `condition` holds, polling every 20 ms; rejects after `timeoutMs`. */
export async function waitUntil(condition: () => boolean, timeoutMs: number, what = 'condition'): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

export { dtmfFrequencies };
