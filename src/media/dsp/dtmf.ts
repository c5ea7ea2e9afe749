/**
 * In-band DTMF: a tone generator (ITU-T Q.23) and a detector (after the acceptance rules of ITU-T Q.24).
 *
 * Used when the leg toward Meta negotiated no telephone-event: digits from the PBX are played as tones into the
 * audio toward the person, and tones the person presses are detected in the decoded audio and sent to the PBX.
 */
import { Resampler } from './resample.js';

/** Every DTMF digit, in the order of RFC 4733 event codes 0-15. */
export const DTMF_DIGITS = '0123456789*#ABCD';

/** Q.23 low-group (row) frequencies, Hz. */
export const DTMF_ROW_HZ: readonly number[] = [697, 770, 852, 941];
/** Q.23 high-group (column) frequencies, Hz. */
export const DTMF_COLUMN_HZ: readonly number[] = [1209, 1336, 1477, 1633];
const KEYPAD = ['123A', '456B', '789C', '*0#D'];

/**
 * Level of each of the two tones the generator plays: -10 dBm0, i.e. a sine 13.17 dB below full scale
 * (G.711 puts 0 dBm0 at 3.17 dB below a full-scale sine). Both tones together peak at about -7 dBFS,
 * so mixing into speech rarely clips.
 */
export const DTMF_TONE_LEVEL_DBFS = -13.17;
/** Shortest pause the generator leaves after each digit, ms. */
export const DTMF_MIN_GAP_MS = 50;

/** The row and column frequencies of a digit, or undefined for anything that is not one. */
export function dtmfFrequencies(digit: string): { rowHz: number; columnHz: number } | undefined {
  const d = digit.toUpperCase();
  if (d.length !== 1) return undefined;
  for (let r = 0; r < 4; r++) {
    const c = KEYPAD[r]!.indexOf(d);
    if (c >= 0) return { rowHz: DTMF_ROW_HZ[r]!, columnHz: DTMF_COLUMN_HZ[c]! };
  }
  return undefined;
}

interface QueuedDigit {
  rowW: number;
  columnW: number;
  toneSamples: number;
  totalSamples: number;
}

/** Options of `DtmfToneGenerator`. */
export interface DtmfToneGeneratorOptions {
  /** Level of each tone, dBFS (sine-referenced). Default `DTMF_TONE_LEVEL_DBFS` (-10 dBm0). */
  levelDbfs?: number;
  /** Pause after each digit, ms; at least 50. Default 50. */
  gapMs?: number;
}

/**
 * Plays queued digits as Q.23 dual tones (both tones at the same level: zero twist), each followed by a pause.
 * Tone edges get a 2 ms raised-cosine ramp so the far end's codec and detector see no click.
 * Driven by the caller's audio clock: every `mixInto()` advances the queue by one frame.
 */
export class DtmfToneGenerator {
  readonly sampleRate: number;
  readonly #amplitude: number;
  readonly #gapSamples: number;
  /** Raised-cosine gain for the first (and, mirrored, the last) samples of a tone. */
  readonly #ramp: Float64Array;
  readonly #queue: QueuedDigit[] = [];
  /** Sample position inside the digit at the head of the queue. */
  #position = 0;

  /** @param sampleRate Hz of the frames passed to `mixInto()` */
  constructor(sampleRate: number, options: DtmfToneGeneratorOptions = {}) {
    if (!(sampleRate >= 4000)) throw new RangeError(`sample rate too low for DTMF: ${sampleRate}`);
    this.sampleRate = sampleRate;
    this.#amplitude = 32767 * 10 ** ((options.levelDbfs ?? DTMF_TONE_LEVEL_DBFS) / 20);
    this.#gapSamples = Math.round((Math.max(DTMF_MIN_GAP_MS, options.gapMs ?? DTMF_MIN_GAP_MS) * sampleRate) / 1000);
    const rampSamples = Math.round(0.002 * sampleRate);
    this.#ramp = new Float64Array(rampSamples);
    for (let n = 0; n < rampSamples; n++) this.#ramp[n] = 0.5 - 0.5 * Math.cos((Math.PI * (n + 0.5)) / rampSamples);
  }

  /**
   * Queue a digit: a tone of `durationMs` (ms, > 0), then the pause.
   * @throws RangeError for a character that is not a DTMF digit or a duration that is not positive.
   */
  play(digit: string, durationMs: number): void {
    const f = dtmfFrequencies(digit);
    if (!f) throw new RangeError(`not a DTMF digit: ${JSON.stringify(digit)}`);
    if (!(durationMs > 0) || !Number.isFinite(durationMs)) throw new RangeError(`bad DTMF duration: ${durationMs}`);
    const toneSamples = Math.max(1, Math.round((durationMs * this.sampleRate) / 1000));
    this.#queue.push({
      rowW: (2 * Math.PI * f.rowHz) / this.sampleRate,
      columnW: (2 * Math.PI * f.columnHz) / this.sampleRate,
      toneSamples,
      totalSamples: toneSamples + this.#gapSamples,
    });
  }

  /** A digit (its tone or the pause after it) is playing or queued. */
  get active(): boolean {
    return this.#queue.length > 0;
  }

  /** The next sample `mixInto()` writes belongs to a tone (not to a pause). */
  get toneOn(): boolean {
    const head = this.#queue[0];
    return head !== undefined && this.#position < head.toneSamples;
  }

  /** Digits queued, counting the one playing (its tone or its pause). */
  get queued(): number {
    return this.#queue.length;
  }

  /** Samples still to play for everything queued, tones and pauses. */
  get pendingSamples(): number {
    let total = -this.#position;
    for (const q of this.#queue) total += q.totalSamples;
    return Math.max(0, total);
  }

  /** Drop everything queued, including the digit playing now. */
  clear(): void {
    this.#queue.length = 0;
    this.#position = 0;
  }

  /** Add the tones due in this frame to it (saturating at 16 bits) and advance by `frame.length` samples. */
  mixInto(frame: Int16Array): void {
    this.#render(frame, false);
  }

  /**
   * Like `mixInto`, but while a tone plays it replaces the frame's audio instead of adding to it
   * (cleaner tones for the far end's detector); pauses keep the frame's audio.
   */
  replaceInto(frame: Int16Array): void {
    this.#render(frame, true);
  }

  #render(frame: Int16Array, replace: boolean): void {
    let i = 0;
    const amp = this.#amplitude;
    const ramp = this.#ramp;
    const rampLength = ramp.length;
    while (i < frame.length && this.#queue.length > 0) {
      const head = this.#queue[0]!;
      const toneEnd = head.toneSamples;
      if (this.#position < toneEnd) {
        // Oscillators by rotation, seeded exactly at the frame's first sample so no error builds up.
        const n0 = this.#position;
        let rs = Math.sin(head.rowW * n0);
        let rc = Math.cos(head.rowW * n0);
        let cs = Math.sin(head.columnW * n0);
        let cc = Math.cos(head.columnW * n0);
        const rSin = Math.sin(head.rowW);
        const rCos = Math.cos(head.rowW);
        const cSin = Math.sin(head.columnW);
        const cCos = Math.cos(head.columnW);
        while (i < frame.length && this.#position < toneEnd) {
          const n = this.#position;
          const edge = n < toneEnd - 1 - n ? n : toneEnd - 1 - n;
          const gain = edge < rampLength ? amp * ramp[edge]! : amp;
          const tone = gain * (rs + cs);
          const v = Math.round(replace ? tone : frame[i]! + tone);
          frame[i] = v > 32767 ? 32767 : v < -32768 ? -32768 : v;
          const rs2 = rs * rCos + rc * rSin;
          rc = rc * rCos - rs * rSin;
          rs = rs2;
          const cs2 = cs * cCos + cc * cSin;
          cc = cc * cCos - cs * cSin;
          cs = cs2;
          i++;
          this.#position++;
        }
      }
      const skip = Math.min(frame.length - i, head.totalSamples - this.#position);
      i += skip;
      this.#position += skip;
      if (this.#position >= head.totalSamples) {
        this.#queue.shift();
        this.#position = 0;
      }
    }
  }
}

/** A digit the detector accepted, reported once when it ends. */
export interface DetectedDigit {
  digit: string;
  /** Estimated tone duration, ms (about +-5 ms). */
  durationMs: number;
}

/** Options of `DtmfToneDetector`; the defaults follow Q.24's acceptance limits. */
export interface DtmfToneDetectorOptions {
  /** Weakest tone accepted, dBFS per tone (sine-referenced). Default -36 (about -33 dBm0). */
  minToneDbfs?: number;
  /** Largest accepted frequency deviation, fraction. Default 0.025: accepts +-1.5 %, rejects +-3.5 %. */
  frequencyTolerance?: number;
  /** Largest normal twist (high group weaker), dB. Default 8. */
  normalTwistDb?: number;
  /** Largest reverse twist (high group stronger), dB. Default 4. */
  reverseTwistDb?: number;
}

// The core runs at 8 kHz: 20 ms analysis windows hopping by 2.5 ms (eight blocks of 20 samples).
const CORE_RATE = 8000;
const BLOCK = 20;
const BLOCKS = 8;
const WINDOW = BLOCKS * BLOCK;
const HOP_MS = (BLOCK * 1000) / CORE_RATE;
const WINDOW_MS = (WINDOW * 1000) / CORE_RATE;
/**
 * Passing windows that confirm a digit (dropouts up to 10 ms between them allowed). A window passes when at
 * least 80 % of it is tone, so a tone of D ms passes about (D - 12) / 2.5 windows: 9 windows need about 34 ms.
 * A 30 ms tone (at most 8 windows) is never a digit; a 40 ms tone (11 or 12 windows) always is, with room for
 * edges smeared by a codec.
 */
const CONFIRM_WINDOWS = 9;
/**
 * Consecutive failing windows that end a digit. A pause of G ms fails about (G + 12) / 2.5 windows: a dropout of
 * 10 ms or less (at most 9) is bridged, a pause of 20 ms or more (at least 12) ends the digit.
 */
const END_WINDOWS = 12;
/** Failing windows a not yet confirmed digit survives: the same 10 ms dropout as above. */
const CANDIDATE_MAX_MISSES = 9;
/** The two tones must hold this share of the window's power (talk-off and noise rejection). */
const MIN_TONE_POWER_SHARE = 0.8;
/** Each tone's strongest competitor in its own group must be this much weaker, dB. */
const GROUP_DOMINANCE_DB = 10;
/** Second harmonics must be this much weaker than their fundamental, dB. */
const MAX_HARMONIC_DB = 15;
/** Only check a row tone's second harmonic when it is this far from the column tone, Hz (2 DFT bins). */
const HARMONIC_CLEARANCE_HZ = 100;

const ALL_HZ = [...DTMF_ROW_HZ, ...DTMF_COLUMN_HZ];

/** Power of a sinusoid at `hz` in `window` (chronological), as amplitude^2 / 2 (Goertzel). */
function goertzelTonePower(window: Float64Array, hz: number): number {
  const coeff = 2 * Math.cos((2 * Math.PI * hz) / CORE_RATE);
  let s1 = 0;
  let s2 = 0;
  for (let n = 0; n < window.length; n++) {
    const s0 = window[n]! + coeff * s1 - s2;
    s2 = s1;
    s1 = s0;
  }
  const mag2 = s1 * s1 + s2 * s2 - coeff * s1 * s2;
  return (2 * mag2) / (window.length * window.length);
}

/**
 * Detects DTMF digits in a stream of audio frames (any frame size; 8 kHz natively, any other rate is
 * resampled to 8 kHz first).
 *
 * Each 20 ms window (every 2.5 ms) must show: one row and one column tone within `frequencyTolerance` of Q.23
 * (frequency measured from the phase advance between the window's halves, then the power re-measured at the
 * measured frequency), each above `minToneDbfs`, twist within limits, each tone at least 10 dB above the others
 * of its group, the two tones holding 80 % of the power, and weak second harmonics. Nine passing windows
 * (about 34 ms of tone) confirm a digit; dropouts up to 10 ms are bridged and frames flagged as packet-loss
 * concealment are ignored; a pause of about 20 ms ends the digit, which is reported then (about 30 ms after
 * the tone stopped), once, with its duration. Tones of 30 ms or less are never reported, tones of 40 ms or more
 * always are.
 */
export class DtmfToneDetector {
  readonly sampleRate: number;
  readonly #resampler?: Resampler;
  readonly #minTonePower: number;
  readonly #tolerance: number;
  readonly #normalTwist: number;
  readonly #reverseTwist: number;

  /** Per frequency: cos / -sin of w*n for n in one block. */
  readonly #cos: Float64Array[];
  readonly #sin: Float64Array[];
  /** Per frequency k and block position m in the window: e^{-j w BLOCK m}, at [k * BLOCKS + m]. */
  readonly #rotRe: Float64Array;
  readonly #rotIm: Float64Array;
  /** DFT sums of the last BLOCKS blocks at each frequency: ring slot (block number % BLOCKS) * 8 + frequency. */
  readonly #qRe = new Float64Array(BLOCKS * 8);
  readonly #qIm = new Float64Array(BLOCKS * 8);
  readonly #qEnergy = new Float64Array(BLOCKS);
  /** Running sums of the block in progress. */
  readonly #accRe = new Float64Array(8);
  readonly #accIm = new Float64Array(8);
  #accEnergy = 0;
  #accCount = 0;
  #accConcealed = false;
  /** Per block slot: the block holds concealed audio. */
  readonly #blockConcealed = new Uint8Array(BLOCKS);
  /** Last WINDOW samples (ring) and a scratch copy in order. */
  readonly #ring = new Float64Array(WINDOW);
  #ringPos = 0;
  readonly #window = new Float64Array(WINDOW);
  #blocks = 0;
  /** Scratch of the window analysis: half-window DFTs and whole-window powers per frequency. */
  readonly #h1Re = new Float64Array(8);
  readonly #h1Im = new Float64Array(8);
  readonly #h2Re = new Float64Array(8);
  readonly #h2Im = new Float64Array(8);
  readonly #power = new Float64Array(8);

  // Digit tracking, in window counts.
  #current: { digit: string; first: number; last: number; misses: number } | undefined;
  #candidate: { digit: string; first: number; last: number; hits: number; misses: number } | undefined;

  /** @param sampleRate Hz of the frames passed to `process()` */
  constructor(sampleRate: number, options: DtmfToneDetectorOptions = {}) {
    if (!(sampleRate >= CORE_RATE)) throw new RangeError(`DTMF detection needs at least 8000 Hz, got ${sampleRate}`);
    this.sampleRate = sampleRate;
    // 60 dB of anti-aliasing is ample for detection and keeps the filter short.
    if (sampleRate !== CORE_RATE) this.#resampler = new Resampler(sampleRate, CORE_RATE, { stopbandDb: 60 });
    const minAmp = 32767 * 10 ** ((options.minToneDbfs ?? -36) / 20);
    this.#minTonePower = (minAmp * minAmp) / 2;
    this.#tolerance = options.frequencyTolerance ?? 0.025;
    this.#normalTwist = 10 ** ((options.normalTwistDb ?? 8) / 10);
    this.#reverseTwist = 10 ** ((options.reverseTwistDb ?? 4) / 10);
    this.#cos = [];
    this.#sin = [];
    this.#rotRe = new Float64Array(8 * BLOCKS);
    this.#rotIm = new Float64Array(8 * BLOCKS);
    ALL_HZ.forEach((hz, k) => {
      const w = (2 * Math.PI * hz) / CORE_RATE;
      const c = new Float64Array(BLOCK);
      const s = new Float64Array(BLOCK);
      for (let n = 0; n < BLOCK; n++) {
        c[n] = Math.cos(w * n);
        s[n] = -Math.sin(w * n);
      }
      this.#cos.push(c);
      this.#sin.push(s);
      for (let m = 0; m < BLOCKS; m++) {
        this.#rotRe[k * BLOCKS + m] = Math.cos(w * BLOCK * m);
        this.#rotIm[k * BLOCKS + m] = -Math.sin(w * BLOCK * m);
      }
    });
  }

  /**
   * The digit confirmed and still sounding (about 35 ms after its tone began), before it is reported at its end;
   * undefined otherwise. Lets a caller act on a key press at once (start an event, mute the tone).
   */
  get sounding(): string | undefined {
    return this.#current?.digit;
  }

  /**
   * Feed one frame; returns the digits that ended in it (usually none).
   * @param concealed the frame is not real audio but a decoder's concealment of a lost packet: windows that touch
   *   it count neither for nor against a digit, so a loss inside a long tone neither splits it in two nor ends it
   *   (concealment rarely keeps a tone's exact frequency)
   */
  process(frame: Int16Array, concealed = false): DetectedDigit[] {
    const samples = this.#resampler ? this.#resampler.process(frame) : frame;
    const found: DetectedDigit[] = [];
    if (concealed && samples.length > 0) this.#accConcealed = true;
    for (let i = 0; i < samples.length; i++) {
      const x = samples[i]!;
      const n = this.#accCount;
      for (let k = 0; k < 8; k++) {
        this.#accRe[k] += x * this.#cos[k]![n]!;
        this.#accIm[k] += x * this.#sin[k]![n]!;
      }
      this.#accEnergy += x * x;
      this.#ring[this.#ringPos] = x;
      this.#ringPos = (this.#ringPos + 1) % WINDOW;
      if (++this.#accCount === BLOCK) {
        this.#endBlock(found);
        if (concealed) this.#accConcealed = true;
      }
    }
    return found;
  }

  /**
   * End of stream (or a long gap with no audio, such as Opus DTX): report a digit still sounding or just ended,
   * and start afresh.
   */
  flush(): DetectedDigit[] {
    const found: DetectedDigit[] = [];
    this.#finish(found);
    this.#candidate = undefined;
    this.#qRe.fill(0);
    this.#qIm.fill(0);
    this.#qEnergy.fill(0);
    this.#accRe.fill(0);
    this.#accIm.fill(0);
    this.#accEnergy = 0;
    this.#accCount = 0;
    this.#accConcealed = false;
    this.#blockConcealed.fill(0);
    this.#ring.fill(0);
    return found;
  }

  #endBlock(found: DetectedDigit[]): void {
    const slot = this.#blocks % BLOCKS;
    for (let k = 0; k < 8; k++) {
      this.#qRe[slot * 8 + k] = this.#accRe[k]!;
      this.#qIm[slot * 8 + k] = this.#accIm[k]!;
    }
    this.#qEnergy[slot] = this.#accEnergy;
    this.#blockConcealed[slot] = this.#accConcealed ? 1 : 0;
    this.#accConcealed = false;
    this.#accRe.fill(0);
    this.#accIm.fill(0);
    this.#accEnergy = 0;
    this.#accCount = 0;
    this.#blocks++;
    if (this.#blocks < BLOCKS) return;
    for (let m = 0; m < BLOCKS; m++) if (this.#blockConcealed[m]) return;
    this.#track(this.#blocks - BLOCKS, this.#analyseWindow(), found);
  }

  /** The digit the window (the last BLOCKS blocks) holds, or undefined. */
  #analyseWindow(): string | undefined {
    const first = this.#blocks - BLOCKS;
    let energy = 0;
    for (let m = 0; m < BLOCKS; m++) energy += this.#qEnergy[m]!;
    const meanPower = energy / WINDOW;
    if (meanPower < 2 * this.#minTonePower) return undefined;

    // DFT of each half window at each frequency, both phase-referenced to the window's start.
    const h1Re = this.#h1Re;
    const h1Im = this.#h1Im;
    const h2Re = this.#h2Re;
    const h2Im = this.#h2Im;
    const power = this.#power;
    h1Re.fill(0);
    h1Im.fill(0);
    h2Re.fill(0);
    h2Im.fill(0);
    for (let m = 0; m < BLOCKS; m++) {
      const slot = ((first + m) % BLOCKS) * 8;
      const toFirstHalf = m < BLOCKS / 2;
      for (let k = 0; k < 8; k++) {
        const qRe = this.#qRe[slot + k]!;
        const qIm = this.#qIm[slot + k]!;
        const rr = this.#rotRe[k * BLOCKS + m]!;
        const ri = this.#rotIm[k * BLOCKS + m]!;
        const re = qRe * rr - qIm * ri;
        const im = qRe * ri + qIm * rr;
        if (toFirstHalf) {
          h1Re[k] += re;
          h1Im[k] += im;
        } else {
          h2Re[k] += re;
          h2Im[k] += im;
        }
      }
    }
    for (let k = 0; k < 8; k++) {
      const xRe = h1Re[k]! + h2Re[k]!;
      const xIm = h1Im[k]! + h2Im[k]!;
      power[k] = xRe * xRe + xIm * xIm;
    }
    const row = strongest(power, 0);
    const col = strongest(power, 4);
    const dominance = 10 ** (GROUP_DOMINANCE_DB / 10);
    for (let k = 0; k < 4; k++) {
      if (k !== row && power[k]! * dominance > power[row]!) return undefined;
      if (k + 4 !== col && power[k + 4]! * dominance > power[col]!) return undefined;
    }

    const rowHz = this.#measuredHz(row, h1Re, h1Im, h2Re, h2Im);
    const colHz = this.#measuredHz(col, h1Re, h1Im, h2Re, h2Im);
    if (rowHz === undefined || colHz === undefined) return undefined;

    const win = this.#window;
    for (let n = 0; n < WINDOW; n++) win[n] = this.#ring[(this.#ringPos + n) % WINDOW]!;
    const rowPower = goertzelTonePower(win, rowHz);
    const colPower = goertzelTonePower(win, colHz);
    if (rowPower < this.#minTonePower || colPower < this.#minTonePower) return undefined;
    if (rowPower > colPower * this.#normalTwist || colPower > rowPower * this.#reverseTwist) return undefined;
    if (rowPower + colPower < MIN_TONE_POWER_SHARE * meanPower) return undefined;

    const harmonic = 10 ** (-MAX_HARMONIC_DB / 10);
    if (2 * colHz < CORE_RATE / 2 && goertzelTonePower(win, 2 * colHz) > harmonic * colPower) return undefined;
    if (
      Math.abs(2 * rowHz - colHz) > HARMONIC_CLEARANCE_HZ &&
      goertzelTonePower(win, 2 * rowHz) > harmonic * rowPower
    ) {
      return undefined;
    }
    return KEYPAD[row]![col - 4];
  }

  /** Frequency of the tone near nominal frequency `k`, from the phase advance between the halves; undefined if off. */
  #measuredHz(
    k: number,
    h1Re: Float64Array,
    h1Im: Float64Array,
    h2Re: Float64Array,
    h2Im: Float64Array,
  ): number | undefined {
    const nominal = ALL_HZ[k]!;
    // Both halves are referenced to the window's start, so a tone exactly at the nominal frequency has the same
    // phase in both; the angle of h2 * conj(h1) is the extra phase it gained over half a window.
    const re = h2Re[k]! * h1Re[k]! + h2Im[k]! * h1Im[k]!;
    const im = h2Im[k]! * h1Re[k]! - h2Re[k]! * h1Im[k]!;
    const advance = Math.atan2(im, re);
    const hz = nominal + (advance * CORE_RATE) / (2 * Math.PI * (WINDOW / 2));
    if (Math.abs(hz - nominal) > this.#tolerance * nominal) return undefined;
    return hz;
  }

  #track(windowIndex: number, digit: string | undefined, found: DetectedDigit[]): void {
    const cur = this.#current;
    if (cur && digit === cur.digit) {
      cur.last = windowIndex;
      cur.misses = 0;
      this.#candidate = undefined;
      return;
    }
    this.#advanceCandidate(windowIndex, digit);
    if (cur) {
      if (++cur.misses >= END_WINDOWS) this.#finish(found);
      return;
    }
    this.#promoteCandidate();
  }

  /**
   * A candidate collects passing windows of one digit. Short runs of failing windows (a dropout, a lost packet
   * concealed imperfectly) do not reset it; a longer pause or another digit does.
   */
  #advanceCandidate(windowIndex: number, digit: string | undefined): void {
    const cand = this.#candidate;
    if (digit === undefined) {
      if (cand && ++cand.misses > CANDIDATE_MAX_MISSES) this.#candidate = undefined;
    } else if (cand?.digit === digit) {
      cand.hits++;
      cand.last = windowIndex;
      cand.misses = 0;
    } else {
      this.#candidate = { digit, first: windowIndex, last: windowIndex, hits: 1, misses: 0 };
    }
  }

  #promoteCandidate(): void {
    const cand = this.#candidate;
    if (!cand || cand.hits < CONFIRM_WINDOWS) return;
    this.#current = { digit: cand.digit, first: cand.first, last: cand.last, misses: cand.misses };
    this.#candidate = undefined;
  }

  #finish(found: DetectedDigit[]): void {
    const cur = this.#current;
    if (!cur) return;
    this.#current = undefined;
    found.push({ digit: cur.digit, durationMs: (cur.last - cur.first) * HOP_MS + WINDOW_MS });
    // A different digit that followed without a pause may already be confirmed.
    this.#promoteCandidate();
  }
}

function strongest(power: Float64Array, from: number): number {
  let best = from;
  for (let k = from + 1; k < from + 4; k++) if (power[k]! > power[best]!) best = k;
  return best;
}
