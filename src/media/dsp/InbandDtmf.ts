/**
 * In-band DTMF for a call whose leg toward Meta negotiated no telephone-event.
 *
 * - `InbandDtmfInjector` plays digits from the PBX (SIP INFO or RFC 4733) as tones in the audio toward the person.
 * - `InbandDtmfWatcher` listens to the decoded audio from the person and reports the digits pressed, for the
 *   engine to send to the PBX as RFC 4733 events or SIP INFO.
 *
 * Both are plain sample processors driven by the media engine's frames: no timers, no sockets, no allocation per
 * frame beyond what the resampler returns.
 */
import { TypedEmitter } from '../../core/TypedEmitter.js';
import {
  DTMF_MIN_GAP_MS,
  DtmfToneDetector,
  DtmfToneGenerator,
  dtmfFrequencies,
  type DetectedDigit,
  type DtmfToneDetectorOptions,
} from './dtmf.js';
import { Resampler } from './resample.js';

/** Options of `InbandDtmfInjector`. */
export interface InbandDtmfInjectorOptions {
  /** Rate of the frames passed to `process()`, Hz. Default 48000. */
  sampleRate?: number;
  /**
   * Shortest tone played, ms. Shorter requests are lengthened: Q.24 detectors need 40 ms, and a codec on the way
   * smears the edges. Default 70.
   */
  minToneMs?: number;
  /** Longest tone played, ms (a key held down). Default 5000. */
  maxToneMs?: number;
  /** Pause after each digit, ms; at least 50. Default 60. */
  gapMs?: number;
  /**
   * `replace` (default): while a tone sounds it replaces the frame's audio, so the far end's detector hears a
   * clean tone; `mix`: the tone is added to the audio.
   */
  mode?: 'replace' | 'mix';
  /** Most digits waiting at once; more are refused (a runaway PBX must not grow memory). Default 32. */
  maxQueued?: number;
  /** Level of each of the two tones, dBFS. Default -13.17 (-10 dBm0). */
  levelDbfs?: number;
}

/**
 * Queues digits and writes them as Q.23 tones into the outgoing audio.
 *
 * The engine calls `process(frame)` on every frame it sends toward Meta while `active` is true (the frame holds
 * the PBX audio, or silence when the PBX sends none), and must encode that frame instead of passing the PBX's
 * encoded payload through. When `active` turns false the engine can return to passthrough.
 */
export class InbandDtmfInjector {
  readonly sampleRate: number;
  readonly #generator: DtmfToneGenerator;
  readonly #minToneMs: number;
  readonly #maxToneMs: number;
  readonly #replace: boolean;
  readonly #maxQueued: number;

  constructor(options: InbandDtmfInjectorOptions = {}) {
    this.sampleRate = options.sampleRate ?? 48000;
    this.#generator = new DtmfToneGenerator(this.sampleRate, {
      gapMs: Math.max(DTMF_MIN_GAP_MS, options.gapMs ?? 60),
      levelDbfs: options.levelDbfs,
    });
    this.#minToneMs = options.minToneMs ?? 70;
    this.#maxToneMs = Math.max(this.#minToneMs, options.maxToneMs ?? 5000);
    this.#replace = (options.mode ?? 'replace') === 'replace';
    this.#maxQueued = options.maxQueued ?? 32;
  }

  /**
   * Queue a digit ('0'-'9', '*', '#', 'A'-'D', either case) for `durationMs` (ms; clamped to the configured
   * minimum and maximum). Returns false, queueing nothing, for anything else or when the queue is full.
   */
  enqueue(digit: string, durationMs: number): boolean {
    if (!dtmfFrequencies(digit) || this.#generator.queued >= this.#maxQueued) return false;
    const ms = Number.isFinite(durationMs) ? durationMs : this.#minToneMs;
    this.#generator.play(digit, Math.min(this.#maxToneMs, Math.max(this.#minToneMs, ms)));
    return true;
  }

  /** A digit's tone or the pause after it is still to be played: frames must go through `process()`. */
  get active(): boolean {
    return this.#generator.active;
  }

  /** The next sample belongs to a tone (not to the pause after one). */
  get toneOn(): boolean {
    return this.#generator.toneOn;
  }

  /** Digits waiting, counting the one playing. */
  get queued(): number {
    return this.#generator.queued;
  }

  /** Write the tones due in this frame into it (in place) and return it. A no-op when not `active`. */
  process(frame: Int16Array): Int16Array {
    if (this.#replace) this.#generator.replaceInto(frame);
    else this.#generator.mixInto(frame);
    return frame;
  }

  /** A new frame of `samples` (default 20 ms) holding only the tones: for when no PBX audio is flowing. */
  nextFrame(samples = this.sampleRate / 50): Int16Array {
    const frame = new Int16Array(samples);
    this.#generator.mixInto(frame);
    return frame;
  }

  /** Drop every queued digit, the playing one included (call hang-up, re-negotiation with telephone-event). */
  clear(): void {
    this.#generator.clear();
  }
}

/** Options of `InbandDtmfWatcher`. */
export interface InbandDtmfWatcherOptions {
  /** Rate of the decoded audio passed to `push()`, Hz. Default 48000. Resampled to 8 kHz internally. */
  sampleRate?: number;
  /** Clock rate of the RTP timestamps passed to `push()`, Hz. Default 48000 (Opus). */
  clockRate?: number;
  /** Detector thresholds (Q.24 defaults). */
  detector?: DtmfToneDetectorOptions;
  /**
   * Most silence, ms, fed in for a timestamp gap (Opus DTX or loss the decoder did not conceal), enough to end a
   * digit in progress. Default 200.
   */
  maxGapFillMs?: number;
}

export interface InbandDtmfWatcherEvents {
  /** A digit the person pressed, reported once when its tone ends. */
  digit: [DetectedDigit];
}

/** Timestamp jumps beyond this (either way) mean a new stream, not a gap, s. */
const RESYNC_SECONDS = 10;

/**
 * Detects digits in the audio from the person. The engine pushes every decoded frame (and the frames libopus
 * conceals for lost packets) with the RTP timestamp of its first sample; each accepted digit is emitted as
 * `digit` (and returned by the `push()` that completed it).
 *
 * Meta sends Opus with DTX: during silence packets stop. A timestamp jump is therefore filled with up to
 * `maxGapFillMs` of silence so a digit in progress ends; when the engine knows the stream paused without a next
 * packet (e.g. a 100 ms idle timer), it calls `flush()`.
 */
export class InbandDtmfWatcher extends TypedEmitter<InbandDtmfWatcherEvents> {
  readonly sampleRate: number;
  readonly clockRate: number;
  readonly #detector: DtmfToneDetector;
  readonly #resampler?: Resampler;
  readonly #maxGapFillSamples8k: number;
  /** RTP timestamp expected for the next frame, when the last push had one. */
  #expectedTs: number | undefined;
  #closed = false;

  constructor(options: InbandDtmfWatcherOptions = {}) {
    super();
    this.sampleRate = options.sampleRate ?? 48000;
    this.clockRate = options.clockRate ?? 48000;
    this.#detector = new DtmfToneDetector(8000, options.detector);
    if (this.sampleRate !== 8000) this.#resampler = new Resampler(this.sampleRate, 8000, { stopbandDb: 60 });
    this.#maxGapFillSamples8k = Math.round(((options.maxGapFillMs ?? 200) * 8000) / 1000);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** The digit confirmed and still sounding (reported as `digit` once it ends); undefined otherwise. */
  get sounding(): string | undefined {
    return this.#closed ? undefined : this.#detector.sounding;
  }

  /**
   * Feed one frame of decoded audio from Meta.
   * @param pcm mono samples at `sampleRate`
   * @param rtpTimestamp RTP timestamp of the frame's first sample (clock `clockRate`); enables gap filling
   * @param concealed the frame is the decoder's concealment of a lost packet (not real audio): it neither
   *   ends nor splits a digit in progress
   * @returns the digits that ended (also emitted as `digit`)
   */
  push(pcm: Int16Array, rtpTimestamp?: number, concealed = false): DetectedDigit[] {
    if (this.#closed) return [];
    const found: DetectedDigit[] = [];
    if (rtpTimestamp !== undefined) {
      if (this.#expectedTs !== undefined) {
        const delta = (rtpTimestamp - this.#expectedTs) | 0;
        if (Math.abs(delta) >= RESYNC_SECONDS * this.clockRate) {
          found.push(...this.#detector.flush());
          this.#resampler?.reset();
        } else if (delta > 0) {
          const fill = Math.min(this.#maxGapFillSamples8k, Math.round((delta * 8000) / this.clockRate));
          if (fill > 0) found.push(...this.#detector.process(new Int16Array(fill)));
          this.#resampler?.reset();
        }
      }
      this.#expectedTs = (rtpTimestamp + Math.round((pcm.length * this.clockRate) / this.sampleRate)) >>> 0;
    }
    const audio = this.#resampler ? this.#resampler.process(pcm) : pcm;
    found.push(...this.#detector.process(audio, concealed));
    this.#emit(found);
    return found;
  }

  /** The stream paused or ended: report a digit still sounding, forget the timestamp, start afresh. */
  flush(): DetectedDigit[] {
    if (this.#closed) return [];
    const found = this.#detector.flush();
    this.#resampler?.reset();
    this.#expectedTs = undefined;
    this.#emit(found);
    return found;
  }

  /** Idempotent. No events after it; `push()` and `flush()` do nothing. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.removeAllListeners();
  }

  #emit(found: DetectedDigit[]): void {
    for (const d of found) this.safeEmit('digit', d);
  }
}
