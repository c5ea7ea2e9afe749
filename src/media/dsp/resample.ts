/**
 * Streaming sample-rate conversion for the transcoding path (Opus 48 kHz <-> G.711 8 kHz, and 16 kHz).
 *
 * A rational polyphase FIR resampler: up by L, low-pass, down by M, computed without ever forming the zero-stuffed
 * signal. The prototype low-pass is a Kaiser-windowed sinc designed for the narrower of the two rates, so both
 * directions are anti-aliased (decimation) and anti-imaged (interpolation): flat to 3400 Hz and 70 dB down from
 * 4600 Hz for 8 kHz, by default. The filter history and the output phase
 * carry over between calls, so a stream cut into frames of any size gives the same samples as one long call:
 * no clicks at frame edges.
 */

/** Options of `Resampler`. */
export interface ResamplerOptions {
  /** Stop-band attenuation, dB. Default 70. */
  stopbandDb?: number;
  /**
   * Pass band edge as a fraction of the lower rate. Default 0.425 (3400 Hz at 8 kHz). The transition band is
   * centred on the lower rate's Nyquist frequency (it ends at 4600 Hz for 8 kHz), the usual telephony choice:
   * what folds back lands above the pass band edge, never inside the 300-3400 Hz band, and the filter is
   * half as long as one that stops at Nyquist.
   */
  passbandFraction?: number;
}

const DEFAULT_STOPBAND_DB = 70;
const DEFAULT_PASSBAND_FRACTION = 0.425;

function gcd(a: number, b: number): number {
  while (b !== 0) [a, b] = [b, a % b];
  return a;
}

/** Zeroth-order modified Bessel function of the first kind (series), for the Kaiser window. */
function besselI0(x: number): number {
  let sum = 1;
  let term = 1;
  const q = (x * x) / 4;
  for (let k = 1; k < 64; k++) {
    term *= q / (k * k);
    sum += term;
    if (term < sum * 1e-17) break;
  }
  return sum;
}

/**
 * Kaiser-windowed sinc low-pass at the up-sampled rate `fromRate * up`, with DC gain `up`
 * (interpolation by `up` spreads the energy over `up` phases). Returned as `up` polyphase branches
 * of `tapsPerPhase` taps each, one after the other in one array, each stored time-reversed so the inner loop
 * walks memory forward.
 */
function designPolyphase(
  fromRate: number,
  toRate: number,
  up: number,
  stopbandDb: number,
  passbandFraction: number,
): { phases: Float64Array; tapsPerPhase: number } {
  const lowRate = Math.min(fromRate, toRate);
  const highRate = fromRate * up;
  const passHz = passbandFraction * lowRate;
  const stopHz = lowRate - passHz;
  const transitionHz = stopHz - passHz;
  const cutoffHz = (passHz + stopHz) / 2;
  const beta =
    stopbandDb > 50 ? 0.1102 * (stopbandDb - 8.7) : 0.5842 * (stopbandDb - 21) ** 0.4 + 0.07886 * (stopbandDb - 21);
  const deltaOmega = (2 * Math.PI * transitionHz) / highRate;
  const estimate = Math.ceil((stopbandDb - 8) / (2.285 * deltaOmega)) + 1;
  const tapsPerPhase = Math.max(2, Math.ceil(estimate / up));
  const length = tapsPerPhase * up;
  const centre = (length - 1) / 2;
  const fc = cutoffHz / highRate;
  const i0Beta = besselI0(beta);
  const h = new Float64Array(length);
  let sum = 0;
  for (let n = 0; n < length; n++) {
    const x = n - centre;
    const sinc = x === 0 ? 2 * fc : Math.sin(2 * Math.PI * fc * x) / (Math.PI * x);
    const r = (2 * n) / (length - 1) - 1;
    const w = besselI0(beta * Math.sqrt(Math.max(0, 1 - r * r))) / i0Beta;
    h[n] = sinc * w;
    sum += h[n]!;
  }
  const gain = up / sum;
  const phases = new Float64Array(up * tapsPerPhase);
  for (let p = 0; p < up; p++) {
    for (let j = 0; j < tapsPerPhase; j++) phases[p * tapsPerPhase + tapsPerPhase - 1 - j] = h[p + j * up]! * gain;
  }
  return { phases, tapsPerPhase };
}

/**
 * Streaming polyphase FIR resampler between any two integer rates (48000 <-> 8000 and 48000 <-> 16000 are the
 * ones the bridge uses). Keeps its filter state across `process()` calls.
 *
 * Output length per call is exact and constant for whole frames: 960 samples at 48 kHz give 160 at 8 kHz, every
 * frame; generally `input.length * toRate / fromRate` whenever that is an integer for every frame so far.
 * The filter delays the signal by a fixed group delay (`delaySamples`, in output samples).
 */
export class Resampler {
  readonly fromRate: number;
  readonly toRate: number;
  /** Interpolation factor L (toRate / gcd). */
  readonly up: number;
  /** Decimation factor M (fromRate / gcd). */
  readonly down: number;
  /** Filter group delay, in output samples (about 2 ms for 48k <-> 8k). */
  readonly delaySamples: number;

  readonly #phases: Float64Array;
  readonly #taps: number;
  /** Last `taps - 1` input samples followed by the current input, as floats. */
  #work: Float64Array;
  /**
   * Position of the next output sample on the up-sampled time axis (units of 1/L input samples),
   * relative to the first sample of the next input block.
   */
  #next = 0;

  /**
   * @param fromRate input sample rate, Hz (positive integer)
   * @param toRate output sample rate, Hz (positive integer)
   */
  constructor(fromRate: number, toRate: number, options: ResamplerOptions = {}) {
    if (!Number.isInteger(fromRate) || !Number.isInteger(toRate) || fromRate <= 0 || toRate <= 0) {
      throw new RangeError(`sample rates must be positive integers (got ${fromRate} -> ${toRate})`);
    }
    this.fromRate = fromRate;
    this.toRate = toRate;
    const g = gcd(fromRate, toRate);
    this.up = toRate / g;
    this.down = fromRate / g;
    if (this.up === 1 && this.down === 1) {
      this.#phases = new Float64Array(1);
      this.#taps = 1;
      this.delaySamples = 0;
    } else {
      const stopbandDb = options.stopbandDb ?? DEFAULT_STOPBAND_DB;
      const passbandFraction = options.passbandFraction ?? DEFAULT_PASSBAND_FRACTION;
      if (!(stopbandDb >= 21 && stopbandDb <= 140) || !(passbandFraction > 0.2 && passbandFraction < 0.5)) {
        throw new RangeError(`bad resampler options: ${JSON.stringify(options)}`);
      }
      const { phases, tapsPerPhase } = designPolyphase(fromRate, toRate, this.up, stopbandDb, passbandFraction);
      this.#phases = phases;
      this.#taps = tapsPerPhase;
      this.delaySamples = (tapsPerPhase * this.up - 1) / 2 / this.down;
    }
    this.#work = new Float64Array(this.#taps - 1 + 1024);
  }

  /** Number of output samples the next `process()` of `inputLength` samples will return. */
  outputLength(inputLength: number): number {
    const total = inputLength * this.up;
    if (total <= this.#next) return 0;
    return Math.ceil((total - this.#next) / this.down);
  }

  /** Convert one block (any length, typically one 20 ms frame). Returns a new array. */
  process(input: Int16Array): Int16Array {
    if (this.up === 1 && this.down === 1) return Int16Array.from(input);
    const taps = this.#taps;
    const history = taps - 1;
    const needed = history + input.length;
    if (this.#work.length < needed) {
      const grown = new Float64Array(needed * 2);
      grown.set(this.#work.subarray(0, history));
      this.#work = grown;
    }
    const work = this.#work;
    for (let i = 0; i < input.length; i++) work[history + i] = input[i]!;

    const out = new Int16Array(this.outputLength(input.length));
    const up = this.up;
    const down = this.down;
    const phases = this.#phases;
    let k = this.#next;
    for (let n = 0; n < out.length; n++) {
      const i = Math.floor(k / up);
      let c = (k - i * up) * taps;
      const end = i + taps;
      let acc0 = 0;
      let acc1 = 0;
      let w = i;
      for (; w + 1 < end; w += 2, c += 2) {
        acc0 += phases[c]! * work[w]!;
        acc1 += phases[c + 1]! * work[w + 1]!;
      }
      if (w < end) acc0 += phases[c]! * work[w]!;
      const s = Math.round(acc0 + acc1);
      out[n] = s > 32767 ? 32767 : s < -32768 ? -32768 : s;
      k += down;
    }
    this.#next = k - input.length * up;
    work.copyWithin(0, input.length, input.length + history);
    return out;
  }

  /** Forget the history (e.g. after a gap in the stream), as if newly constructed. */
  reset(): void {
    this.#work.fill(0);
    this.#next = 0;
  }
}
