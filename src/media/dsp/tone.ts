/**
 * Single-tone generation and analysis, used by tests, the simulator and health probes.
 *
 * Levels are in dBFS referenced to a full-scale sine (AES17 convention): a sine whose peak is 32767 is 0 dBFS,
 * and a signal's level is `20 log10(rms * sqrt(2) / 32767)`. With G.711, 0 dBm0 is a sine 3.17 dB below full
 * scale, so dBFS ~= dBm0 - 3.17.
 */

const FULL_SCALE = 32767;

/** Result of `analyzeTone`. */
export interface ToneAnalysis {
  /** The expected frequency holds most of the power (`powerRatio > 0.8`) and the level is above -40 dBFS. */
  detected: boolean;
  /** Share of the signal's power (0..1) in a sinusoid at exactly `expectedHz` (least-squares fit). */
  powerRatio: number;
  /** Level of the whole signal, dBFS (sine-referenced; -Infinity for digital silence). */
  levelDbfs: number;
  /** Frequency of the strongest spectral peak, Hz (Hann-windowed FFT, interpolated). */
  peakHz: number;
}

/** Detection thresholds of `analyzeTone`. */
export const TONE_MIN_POWER_RATIO = 0.8;
export const TONE_MIN_LEVEL_DBFS = -40;

/**
 * A sine at `hz`, `samples` long, peak level `dbfs` (default -12 dBFS), starting at `phase` radians.
 * Rounded to 16 bits.
 */
export function generateTone(hz: number, sampleRate: number, samples: number, dbfs = -12, phase = 0): Int16Array {
  const out = new Int16Array(samples);
  const amplitude = FULL_SCALE * 10 ** (dbfs / 20);
  const w = (2 * Math.PI * hz) / sampleRate;
  for (let n = 0; n < samples; n++) {
    const v = Math.round(amplitude * Math.sin(w * n + phase));
    out[n] = v > 32767 ? 32767 : v < -32768 ? -32768 : v;
  }
  return out;
}

/** Sine-referenced level of a block, dBFS. */
export function levelDbfs(samples: Int16Array): number {
  if (samples.length === 0) return -Infinity;
  let energy = 0;
  for (let i = 0; i < samples.length; i++) energy += samples[i]! * samples[i]!;
  const rms = Math.sqrt(energy / samples.length);
  return rms === 0 ? -Infinity : 20 * Math.log10((rms * Math.SQRT2) / FULL_SCALE);
}

/**
 * Energy of the least-squares projection of `samples` onto sin/cos at `hz`, and the total energy.
 * Exact for any length (no leakage from the negative-frequency image, unlike a plain DFT bin).
 */
export function toneEnergy(samples: Int16Array, sampleRate: number, hz: number): { tone: number; total: number } {
  const w = (2 * Math.PI * hz) / sampleRate;
  // Rotating phasor updated by complex multiplication, renormalised now and then to stop drift.
  const cw = Math.cos(w);
  const sw = Math.sin(w);
  let c = 1;
  let s = 0;
  let xc = 0;
  let xs = 0;
  let cc = 0;
  let ss = 0;
  let cs = 0;
  let total = 0;
  for (let n = 0; n < samples.length; n++) {
    const x = samples[n]!;
    xc += x * c;
    xs += x * s;
    cc += c * c;
    ss += s * s;
    cs += c * s;
    total += x * x;
    const c2 = c * cw - s * sw;
    s = s * cw + c * sw;
    c = c2;
    if ((n & 1023) === 1023) {
      const norm = 1 / Math.hypot(c, s);
      c *= norm;
      s *= norm;
    }
  }
  const det = cc * ss - cs * cs;
  if (total === 0 || det <= 1e-9 * (cc + ss) * (cc + ss)) return { tone: 0, total };
  const a = (xc * ss - xs * cs) / det;
  const b = (xs * cc - xc * cs) / det;
  // Energy of the fitted component = projection of x onto the fit.
  return { tone: a * xc + b * xs, total };
}

/**
 * Joint least-squares fit of sinusoids at all of `hzList` (e.g. the two tones of a DTMF digit): the energy of
 * the fitted sum, the energy of each fitted tone, and the total energy. Unlike separate fits, close or
 * non-orthogonal frequencies are not counted twice.
 */
export function tonesEnergy(
  samples: Int16Array,
  sampleRate: number,
  hzList: readonly number[],
): { tones: number; each: number[]; total: number } {
  const m = 2 * hzList.length;
  const basis: Float64Array[] = [];
  for (const hz of hzList) {
    const w = (2 * Math.PI * hz) / sampleRate;
    const c = new Float64Array(samples.length);
    const s = new Float64Array(samples.length);
    for (let n = 0; n < samples.length; n++) {
      c[n] = Math.cos(w * n);
      s[n] = Math.sin(w * n);
    }
    basis.push(c, s);
  }
  // Normal equations G a = b, solved by Gaussian elimination with partial pivoting.
  const g = Array.from({ length: m }, () => new Float64Array(m + 1));
  let total = 0;
  for (let n = 0; n < samples.length; n++) total += samples[n]! * samples[n]!;
  for (let i = 0; i < m; i++) {
    for (let j = i; j < m; j++) {
      let dot = 0;
      for (let n = 0; n < samples.length; n++) dot += basis[i]![n]! * basis[j]![n]!;
      g[i]![j] = dot;
      g[j]![i] = dot;
    }
    let xb = 0;
    for (let n = 0; n < samples.length; n++) xb += samples[n]! * basis[i]![n]!;
    g[i]![m] = xb;
  }
  const rhs = g.map((row) => row[m]!);
  for (let col = 0; col < m; col++) {
    let pivot = col;
    for (let r = col + 1; r < m; r++) if (Math.abs(g[r]![col]!) > Math.abs(g[pivot]![col]!)) pivot = r;
    [g[col], g[pivot]] = [g[pivot]!, g[col]!];
    const p = g[col]![col]!;
    if (Math.abs(p) < 1e-9) return { tones: 0, each: hzList.map(() => 0), total };
    for (let r = 0; r < m; r++) {
      if (r === col) continue;
      const f = g[r]![col]! / p;
      for (let c = col; c <= m; c++) g[r]![c]! -= f * g[col]![c]!;
    }
  }
  const coef = g.map((row, i) => row[m]! / row[i]!);
  let tones = 0;
  for (let i = 0; i < m; i++) tones += coef[i]! * rhs[i]!;
  const each = hzList.map((_, k) => {
    const a = coef[2 * k]!;
    const b = coef[2 * k + 1]!;
    let e = 0;
    for (let n = 0; n < samples.length; n++) {
      const v = a * basis[2 * k]![n]! + b * basis[2 * k + 1]![n]!;
      e += v * v;
    }
    return e;
  });
  return { tones, each, total };
}

/** In-place radix-2 complex FFT; `re.length` must be a power of two. */
function fft(re: Float64Array, im: Float64Array): void {
  const n = re.length;
  for (let i = 1, j = 0; i < n; i++) {
    let bit = n >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) {
      [re[i], re[j]] = [re[j]!, re[i]!];
      [im[i], im[j]] = [im[j]!, im[i]!];
    }
  }
  for (let len = 2; len <= n; len <<= 1) {
    const ang = (-2 * Math.PI) / len;
    const wr = Math.cos(ang);
    const wi = Math.sin(ang);
    for (let i = 0; i < n; i += len) {
      let cr = 1;
      let ci = 0;
      for (let k = 0; k < len / 2; k++) {
        const a = i + k;
        const b = a + len / 2;
        const tr = re[b]! * cr - im[b]! * ci;
        const ti = re[b]! * ci + im[b]! * cr;
        re[b] = re[a]! - tr;
        im[b] = im[a]! - ti;
        re[a] = re[a]! + tr;
        im[a] = im[a]! + ti;
        const nr = cr * wr - ci * wi;
        ci = cr * wi + ci * wr;
        cr = nr;
      }
    }
  }
}

/**
 * Frequency of the strongest peak, Hz: Hann-windowed FFT over the middle of the signal (at most 16384 samples),
 * refined by parabolic interpolation of the log magnitude. 0 for silence or fewer than 16 samples.
 */
export function peakFrequency(samples: Int16Array, sampleRate: number): number {
  let size = 16;
  while (size * 2 <= Math.min(samples.length, 16384)) size *= 2;
  if (samples.length < 16) return 0;
  const start = (samples.length - size) >> 1;
  const re = new Float64Array(size);
  const im = new Float64Array(size);
  for (let i = 0; i < size; i++) re[i] = samples[start + i]! * (0.5 - 0.5 * Math.cos((2 * Math.PI * i) / size));
  fft(re, im);
  let best = 1;
  let bestPower = -1;
  const mags = new Float64Array(size / 2 + 1);
  for (let k = 0; k <= size / 2; k++) {
    mags[k] = re[k]! * re[k]! + im[k]! * im[k]!;
    if (k > 0 && mags[k]! > bestPower) {
      bestPower = mags[k]!;
      best = k;
    }
  }
  if (bestPower <= 0) return 0;
  let offset = 0;
  if (best > 0 && best < size / 2) {
    const a = Math.log(mags[best - 1]! + 1e-12);
    const b = Math.log(mags[best]! + 1e-12);
    const c = Math.log(mags[best + 1]! + 1e-12);
    const den = a - 2 * b + c;
    if (den < 0) offset = Math.max(-0.5, Math.min(0.5, (0.5 * (a - c)) / den));
  }
  return ((best + offset) * sampleRate) / size;
}

/**
 * Is `expectedHz` what this block of audio is? See `ToneAnalysis`. The whole block is analysed; trim leading
 * filter delay or silence first when that matters.
 */
export function analyzeTone(samples: Int16Array, sampleRate: number, expectedHz: number): ToneAnalysis {
  const { tone, total } = toneEnergy(samples, sampleRate, expectedHz);
  const powerRatio = total > 0 ? Math.min(1, Math.max(0, tone / total)) : 0;
  const level = levelDbfs(samples);
  return {
    detected: powerRatio > TONE_MIN_POWER_RATIO && level > TONE_MIN_LEVEL_DBFS,
    powerRatio,
    levelDbfs: level,
    peakHz: peakFrequency(samples, sampleRate),
  };
}
