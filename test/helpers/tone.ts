/**
 * Test audio: single tones (re-exported from the media DSP) and a speech-like signal for DTMF talk-off tests.
 */
export {
  analyzeTone,
  generateTone,
  levelDbfs,
  peakFrequency,
  toneEnergy,
  tonesEnergy,
} from '../../src/media/dsp/tone.js';
export type { ToneAnalysis } from '../../src/media/dsp/tone.js';
import { analyzeTone } from '../../src/media/dsp/tone.js';

/**
 * Analyse the last `seconds` of audio in 100 ms windows and return the median window (by power ratio): one
 * glitch from a stalled, overloaded test machine does not decide the result, a wrong or missing tone does.
 */
export function analyzeTail(pcm: Int16Array, sampleRate: number, hz: number, seconds = 0.5): ReturnType<typeof analyzeTone> {
  const window = Math.round(sampleRate * 0.1);
  const count = Math.max(1, Math.floor(Math.min(pcm.length, Math.round(sampleRate * seconds)) / window));
  const results = [];
  for (let i = 0; i < count; i++) {
    const end = pcm.length - i * window;
    results.push(analyzeTone(pcm.subarray(Math.max(0, end - window), end), sampleRate, hz));
  }
  results.sort((a, b) => a.powerRatio - b.powerRatio);
  return results[Math.floor(results.length / 2)]!;
}

/** Small seeded PRNG (mulberry32): the same seed gives the same audio on every run. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Vowel formants (F1, F2, F3), Hz, after Peterson & Barney's averages for adult speakers. */
const VOWELS: readonly (readonly [number, number, number])[] = [
  [270, 2290, 3010],
  [390, 1990, 2550],
  [530, 1840, 2480],
  [660, 1720, 2410],
  [730, 1090, 2440],
  [570, 840, 2410],
  [440, 1020, 2240],
  [300, 870, 2240],
  [640, 1190, 2390],
  [490, 1350, 1690],
];
const BANDWIDTHS = [80, 100, 140];

/** Two-pole resonator with unity gain at its centre frequency, coefficients updated on the fly. */
class Resonator {
  #y1 = 0;
  #y2 = 0;
  #a1 = 0;
  #a2 = 0;
  #g = 0;

  tune(hz: number, bandwidthHz: number, sampleRate: number): void {
    const r = Math.exp((-Math.PI * bandwidthHz) / sampleRate);
    const theta = (2 * Math.PI * hz) / sampleRate;
    this.#a1 = 2 * r * Math.cos(theta);
    this.#a2 = -r * r;
    this.#g = (1 - r) * Math.sqrt(1 - 2 * r * Math.cos(2 * theta) + r * r);
  }

  step(x: number): number {
    const y = this.#g * x + this.#a1 * this.#y1 + this.#a2 * this.#y2;
    this.#y2 = this.#y1;
    this.#y1 = y;
    return y;
  }
}

/**
 * A voice-band signal shaped like running speech, for talk-off tests of tone detectors: a glottal pulse train whose
 * pitch wanders between 90 and 250 Hz (intonation, glides, jitter), through three moving formant resonators that
 * glide between vowel targets, with a syllable-rate envelope (about 4-6 syllables a second, pauses between words),
 * breath noise and fricative noise bursts. Active speech sits at -20 dBFS (sine-referenced RMS).
 *
 * @param seconds length, s
 * @param sampleRate Hz (8000, 16000, 48000, ...)
 * @param seed the same seed gives the same signal
 */
export function speechLike(seconds: number, sampleRate: number, seed: number): Int16Array {
  const rand = seededRandom(seed);
  const total = Math.round(seconds * sampleRate);
  // Voiced and fricative parts are built apart and levelled apart (vowels carry most of the energy).
  const voicedOut = new Float64Array(total);
  const fricativeOut = new Float64Array(total);
  const formants = [new Resonator(), new Resonator(), new Resonator()];
  const current = [...VOWELS[0]!] as number[];
  let target = VOWELS[Math.floor(rand() * VOWELS.length)]!;
  const tuneEvery = Math.max(1, Math.round(sampleRate / 400));

  // Speaker: base pitch for the whole signal, phrase intonation around it.
  const basePitch = 100 + rand() * 110;
  let phrasePitch = basePitch;
  let glottalPhase = 0;
  let source = 0;
  // Glottal flow: two poles near 100 Hz (-12 dB/octave above); lip radiation differentiates (+6 dB/octave).
  const glottalPole = Math.exp((-2 * Math.PI * 100) / sampleRate);
  let glottalLp1 = 0;
  let glottalLp2 = 0;

  // Syllable scheduler: state 'voiced' | 'fricative' | 'pause', with its remaining samples.
  let state: 'voiced' | 'fricative' | 'pause' = 'pause';
  let remaining = Math.round(0.1 * sampleRate);
  let segmentLength = remaining;
  let glide = 0;
  let noiseHp = 0;
  let lastNoise = 0;

  for (let n = 0; n < total; n++) {
    if (remaining <= 0) {
      const r = rand();
      if (state === 'voiced' && r < 0.3) {
        state = 'fricative';
        segmentLength = Math.round((0.03 + rand() * 0.08) * sampleRate);
      } else if (state !== 'pause' && r < 0.45) {
        state = 'pause';
        segmentLength = Math.round((0.05 + rand() * 0.35) * sampleRate);
        if (rand() < 0.3) phrasePitch = Math.min(240, Math.max(90, basePitch * (0.8 + rand() * 0.45)));
      } else {
        state = 'voiced';
        segmentLength = Math.round((0.1 + rand() * 0.2) * sampleRate);
        target = VOWELS[Math.floor(rand() * VOWELS.length)]!;
        glide = (rand() - 0.5) * 0.5;
      }
      remaining = segmentLength;
    }
    const progress = 1 - remaining / segmentLength;
    remaining--;

    if (n % tuneEvery === 0) {
      for (let f = 0; f < 3; f++) {
        current[f]! += (target[f]! - current[f]!) * 0.04;
        formants[f]!.tune(current[f]!, BANDWIDTHS[f]!, sampleRate);
      }
    }

    // Pitch: phrase level, a glide over the syllable, slow vibrato-like drift, and cycle-to-cycle jitter.
    const t = n / sampleRate;
    let pitch = phrasePitch * (1 + glide * (progress - 0.5)) * (1 + 0.04 * Math.sin(2 * Math.PI * 0.7 * t));
    pitch = Math.min(250, Math.max(90, pitch));
    glottalPhase += pitch / sampleRate;
    if (glottalPhase >= 1) {
      glottalPhase -= 1 + (rand() - 0.5) * 0.02;
      source = 1;
    } else {
      source = 0;
    }
    glottalLp1 = glottalPole * glottalLp1 + source;
    const flow = glottalLp2;
    glottalLp2 = glottalPole * glottalLp2 + (1 - glottalPole) * glottalLp1;
    const radiated = glottalLp2 - flow;
    const noise = rand() * 2 - 1;
    noiseHp = noise - lastNoise;
    lastNoise = noise;

    let excitation = 0;
    let envelope = 0;
    if (state === 'voiced') {
      envelope = Math.sin(Math.PI * Math.min(1, Math.max(0, progress))) ** 0.6;
      excitation = radiated + 0.01 * noise;
    } else if (state === 'fricative') {
      envelope = Math.sin(Math.PI * progress) * 0.25;
      excitation = 0;
    }
    let voiced = excitation;
    for (const f of formants) voiced = f.step(voiced) * 2.2;
    if (state === 'voiced') voicedOut[n] = envelope * voiced;
    else if (state === 'fricative') fricativeOut[n] = envelope * noiseHp;
  }

  // Vowels at -20 dBFS (sine-referenced RMS over voiced samples, about -17 dBm0: a loud talker on a line),
  // fricatives 12 dB lower, and a faint noise floor.
  const voicedScale = scaleTo(voicedOut, -20);
  const fricativeScale = scaleTo(fricativeOut, -32);
  const pcm = new Int16Array(total);
  for (let n = 0; n < total; n++) {
    const v = Math.round(voicedOut[n]! * voicedScale + fricativeOut[n]! * fricativeScale + (rand() - 0.5) * 8);
    pcm[n] = v > 32767 ? 32767 : v < -32768 ? -32768 : v;
  }
  return pcm;
}

/** Gain that brings the non-zero samples of `signal` to `dbfs` (sine-referenced RMS). */
function scaleTo(signal: Float64Array, dbfs: number): number {
  let energy = 0;
  let count = 0;
  for (let n = 0; n < signal.length; n++) {
    if (signal[n] !== 0) {
      energy += signal[n]! * signal[n]!;
      count++;
    }
  }
  if (energy === 0) return 0;
  return (32767 * 10 ** (dbfs / 20)) / Math.SQRT2 / Math.sqrt(energy / count);
}
