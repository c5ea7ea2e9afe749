/**
 * Our one outgoing RTP stream toward Meta: own SSRC, continuous sequence numbers and 48 kHz timestamps, whatever
 * feeds it (PBX Opus passed through, PBX G.711 encoded to Opus, silence, DTMF tones or RFC 4733 events).
 *
 * Send first: once started it sends a 20 ms Opus silence frame whenever no PBX audio went out for ~200 ms, because
 * Meta drops calls that receive no media (PBX silent, on hold, or not flowing yet).
 */
import type { Logger } from 'pino';
import type { RtpEndpoint } from '../core/rtp.js';
import { InbandDtmfInjector } from './dsp/InbandDtmf.js';
import { OpusEncoder } from './dsp/opus.js';
import { FrameClock, type FrameListener } from './FrameClock.js';
import { buildRtp, randomSeq, randomSsrc } from './rtp.js';
import { TelephoneEventSender } from './telephoneEvents.js';

/** Opus RTP clock (RFC 7587), Hz. */
export const OPUS_CLOCK_RATE = 48000;
/** Samples per 20 ms frame at the Opus RTP clock. */
const FRAME_48K = 960;
/** Samples per 20 ms frame at 8 kHz (our transcoding rate). */
export const FRAME_8K = 160;
/**
 * No PBX audio for this long (ms) and silence frames start. Long enough to ride out network jitter and event-loop
 * stalls (filling a mere late packet with silence cuts the PBX's audio into pieces), short enough that Meta never
 * goes without media.
 */
const SILENCE_AFTER_MS = 200;
/** The filler's tick (FrameClock's interval), ms. */
const TICK_MS = 20;
const NO_SAMPLES = new Int16Array(0);

/**
 * A 20 ms CELT fullband silence frame (TOC 0xF8: config 31, mono, one frame). Decodes to silence in any decoder
 * state, costs no encoder.
 */
export const OPUS_SILENCE_FRAME = Buffer.from([0xf8, 0xff, 0xfe]);

export interface MessengerStreamOptions {
  leg: RtpEndpoint;
  log: Logger;
  /** Opus encoder complexity (0-10) for transcoded audio and in-band tones. Default 3. */
  encoderComplexity?: number;
  /** Play digits as in-band tones when Meta negotiated no telephone-event. Default true. */
  inbandGenerate?: boolean;
  /** The thread's 20 ms clock shared by every stream (see FrameClock). Default: a clock of this stream's own. */
  clock?: FrameClock;
}

export interface MessengerStreamFormat {
  opusPt: number;
  telephoneEvent?: { pt: number; clockRate: number };
}

type Source = 'pbx' | 'filler';

/** How a digit is carried on a leg: RFC 4733 events, or tones in the audio. */
export type DigitCarrier = 'rfc4733' | 'inband';

export class MessengerStream {
  readonly #leg: RtpEndpoint;
  readonly #log: Logger;
  readonly #complexity: number;
  readonly #inbandGenerate: boolean;
  readonly #ssrc = randomSsrc();
  #seq = randomSeq();
  #ts = randomSsrc();
  #format?: MessengerStreamFormat;
  readonly #clock: FrameClock;
  readonly #frameListener: FrameListener = { onFrame: () => this.#fill() };
  #started = false;
  /** The first fill, right after start (send first), before the clock's next tick. */
  #fillPending?: NodeJS.Immediate;
  #closed = false;

  #lastSentAt?: number;
  #lastSource?: Source;
  #lastFrameSamples = FRAME_48K;
  #lastPbxAudioAt = -Infinity;
  #lastPassthroughTs?: number;
  #sentPackets = 0;

  #encoder?: OpusEncoder;
  #tone?: InbandDtmfInjector;
  #teSender?: TelephoneEventSender;
  /** The PCM left over from PBX packets that were not a multiple of 20 ms. */
  #pending = NO_SAMPLES;

  constructor(options: MessengerStreamOptions) {
    this.#leg = options.leg;
    this.#log = options.log;
    this.#complexity = options.encoderComplexity ?? 3;
    this.#inbandGenerate = options.inbandGenerate ?? true;
    this.#clock = options.clock ?? new FrameClock(TICK_MS);
  }

  get ssrc(): number {
    return this.#ssrc;
  }

  get sentPackets(): number {
    return this.#sentPackets;
  }

  get started(): boolean {
    return this.#started;
  }

  /** What Meta negotiated (payload types, telephone-event clock). Call again after a renegotiation. */
  setFormat(format: MessengerStreamFormat): void {
    const te = format.telephoneEvent;
    const prevTe = this.#format?.telephoneEvent;
    this.#format = format;
    if (te?.pt !== prevTe?.pt || te?.clockRate !== prevTe?.clockRate) {
      this.#teSender?.close();
      this.#teSender = te
        ? new TelephoneEventSender({
            clockRate: te.clockRate,
            timestampNow: () => this.#timestampNow(),
            emit: (payload, marker, timestamp) => this.#sendPacket(te.pt, payload, marker, timestamp),
          })
        : undefined;
    }
  }

  /** Start the stream (and the silence filler). Idempotent. */
  start(): void {
    if (this.#closed || this.#started) return;
    this.#started = true;
    this.#clock.add(this.#frameListener);
    this.#fillPending = setImmediate(() => {
      this.#fillPending = undefined;
      this.#fill();
    });
  }

  /** Forward one Opus payload from an Opus PBX; `timestamp` is the PBX's RTP timestamp (48 kHz). */
  sendPassthrough(payload: Uint8Array, timestamp: number): void {
    if (!this.#format || !this.started) return;
    // In-band digits replace the PBX's audio for their duration; the filler encodes them meanwhile, at once.
    if (this.#tone?.active) {
      this.#lastPbxAudioAt = -Infinity;
      return;
    }
    let delta: number | undefined;
    if (this.#lastSource === 'pbx' && this.#lastPassthroughTs !== undefined) {
      delta = (timestamp - this.#lastPassthroughTs) | 0;
    }
    this.#lastPassthroughTs = timestamp;
    this.#lastPbxAudioAt = performance.now();
    this.#sendAudio(payload, 'pbx', FRAME_48K, delta);
  }

  /** Encode and send PBX audio decoded to 8 kHz (any length; sent in 20 ms frames). */
  sendPcm8k(pcm: Int16Array): void {
    if (!this.#format || !this.started) return;
    this.#lastPbxAudioAt = performance.now();
    this.#lastPassthroughTs = undefined;
    let samples = pcm;
    if (this.#pending.length > 0) {
      samples = new Int16Array(this.#pending.length + pcm.length);
      samples.set(this.#pending);
      samples.set(pcm, this.#pending.length);
    }
    let offset = 0;
    for (; offset + FRAME_8K <= samples.length; offset += FRAME_8K) {
      // A view, not a copy: the samples are ours (decoded for this call), and a tone is mixed into them in place.
      const frame = samples.subarray(offset, offset + FRAME_8K);
      if (this.#tone?.active) this.#tone.process(frame);
      const contiguous = this.#lastSource === 'pbx' && performance.now() - (this.#lastSentAt ?? 0) < SILENCE_AFTER_MS;
      this.#sendAudio(this.#encode(frame), 'pbx', FRAME_48K, contiguous ? FRAME_48K : undefined);
    }
    this.#pending = offset === samples.length ? NO_SAMPLES : samples.slice(offset);
  }

  /**
   * A digit of known duration (SIP INFO, or a PBX event whose end arrived): RFC 4733 when Meta negotiated
   * telephone-event, else in-band tones. Returns how it goes out, or undefined when it was dropped.
   */
  playDigit(digit: string, durationMs: number): DigitCarrier | undefined {
    if (this.#closed) return undefined;
    if (this.#teSender) return this.#teSender.play(digit, durationMs) ? 'rfc4733' : undefined;
    return this.#playTone(digit, durationMs) ? 'inband' : undefined;
  }

  /** A live digit from the PBX started. */
  relayBegin(digit: string): void {
    this.#teSender?.begin(digit);
  }

  /** The live digit ended after `durationMs`. Returns how it went out, or undefined when it was dropped. */
  relayEnd(digit: string, durationMs: number): DigitCarrier | undefined {
    if (this.#closed) return undefined;
    if (this.#teSender) {
      this.#teSender.end(digit, durationMs);
      return 'rfc4733';
    }
    return this.#playTone(digit, durationMs) ? 'inband' : undefined;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    // Not started any more: audio handed over after close is ignored (it would make a new encoder otherwise).
    this.#started = false;
    this.#clock.delete(this.#frameListener);
    if (this.#fillPending) clearImmediate(this.#fillPending);
    this.#fillPending = undefined;
    this.#teSender?.close();
    this.#teSender = undefined;
    this.#tone?.clear();
    this.#encoder?.close();
    this.#encoder = undefined;
  }

  /**
   * Tones go through an injector at 8 kHz: at least 70 ms each (a far-end Q.24 detector accepts 40 ms, and the
   * Opus encoder smears the edges), at most 5 s, 60 ms apart, and while one sounds it replaces the PBX's audio.
   */
  #playTone(digit: string, durationMs: number): boolean {
    if (!this.#inbandGenerate) {
      this.#log.warn({ digit }, 'Meta negotiated no telephone-event and in-band tones are off: digit dropped');
      return false;
    }
    this.#tone ??= new InbandDtmfInjector({ sampleRate: 8000 });
    if (this.#tone.enqueue(digit, durationMs)) return true;
    this.#log.warn({ digit, queued: this.#tone.queued }, 'digit not played in-band (not a digit, or too many queued)');
    return false;
  }

  /**
   * One 20 ms Opus frame. The addon returns a view of a buffer shared by all encoders, valid until the next encode:
   * the packet built from it (`#sendPacket`, in the same call) copies it, so no copy is made here.
   */
  #encode(frame8k: Int16Array): Uint8Array {
    if (!this.#encoder) {
      this.#encoder = new OpusEncoder({ channels: 1, sample_rate: 8000, application: 'voip' });
      this.#encoder.complexity = this.#complexity as 3;
    }
    return this.#encoder.encode(frame8k);
  }

  #fill(): void {
    if (this.#closed || !this.#format) return;
    const now = performance.now();
    // Transcoded PBX audio carries in-band digits itself (mixed in sendPcm8k); passthrough audio is held back
    // while a digit plays (sendPassthrough), so the filler takes over.
    if (now - this.#lastPbxAudioAt < SILENCE_AFTER_MS) return;
    const toneActive = this.#tone?.active ?? false;
    if (this.#lastSentAt !== undefined && now - this.#lastSentAt < TICK_MS / 2) return;
    let payload: Uint8Array = OPUS_SILENCE_FRAME;
    if (toneActive) payload = this.#encode(this.#tone!.nextFrame(FRAME_8K));
    this.#sendAudio(payload, 'filler', FRAME_48K, undefined);
  }

  /** The timestamp an event (or frame) starting now gets: the last one plus the wall-clock time since. */
  #timestampNow(): number {
    if (this.#lastSentAt === undefined) return this.#ts >>> 0;
    const elapsed = Math.round(((performance.now() - this.#lastSentAt) * OPUS_CLOCK_RATE) / 1000);
    return (this.#ts + elapsed) >>> 0;
  }

  /**
   * Timestamps: within a run of PBX audio they follow the source (`delta`), otherwise they advance with the wall
   * clock in whole frames and never less than the previous frame, so the far end sees neither stuck nor jumping
   * timestamps when sources switch.
   */
  #sendAudio(payload: Uint8Array, source: Source, frameSamples: number, delta: number | undefined): void {
    const format = this.#format!;
    const now = performance.now();
    let marker = false;
    if (this.#lastSentAt !== undefined) {
      let advance: number;
      if (delta !== undefined && delta > 0 && delta <= OPUS_CLOCK_RATE * 10) advance = delta;
      else {
        const wall = Math.round(((now - this.#lastSentAt) * OPUS_CLOCK_RATE) / 1000 / FRAME_48K) * FRAME_48K;
        advance = Math.max(this.#lastFrameSamples, wall);
      }
      this.#ts = (this.#ts + advance) >>> 0;
      marker = source !== this.#lastSource && source === 'pbx';
    } else {
      marker = true;
    }
    this.#lastSource = source;
    this.#lastFrameSamples = frameSamples;
    this.#lastSentAt = now;
    this.#sendPacket(format.opusPt, payload, marker, this.#ts);
  }

  #sendPacket(pt: number, payload: Uint8Array, marker: boolean, timestamp: number): void {
    if (this.#closed) return;
    this.#seq = (this.#seq + 1) & 0xffff;
    this.#sentPackets++;
    this.#leg.sendRtp(buildRtp({ payloadType: pt, sequenceNumber: this.#seq, timestamp, ssrc: this.#ssrc, marker, payload }));
  }
}
