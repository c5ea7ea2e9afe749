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
import type { Test } from 'tap';
import { TONE_MIN_POWER_RATIO, analyzeTone, type ToneAnalysis } from '../../src/media/dsp/tone.js';

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

/**
 * The tone each direction carries in the end-to-end tests. They differ, so that a bridge that looped either side's
 * audio back to it, or sent one side's audio both ways, fails the check.
 */
export const META_TO_PBX_HZ = 1000;
export const PBX_TO_META_HZ = 440;
/** Levels the senders use: the PBX peer's default tone (dBFS) and the Meta simulator's default amplitude (0.3). */
export const PBX_TONE_DBFS = -12;
export const META_TONE_DBFS = 20 * Math.log10(0.3);
/**
 * How far a heard tone's level may be from the level sent, dB: G.711 and Opus keep a tone's level within a dB or
 * two; a bridge that attenuated or clipped the audio, or mixed in another signal, is further off.
 */
export const TONE_LEVEL_TOLERANCE_DB = 6;

/** What `checkTone` measured, and whether the tone was there. */
export interface ToneCheck extends ToneAnalysis {
  /** The tone holds the power, its level is within TONE_LEVEL_TOLERANCE_DB of `sentDbfs`, and the window was heard. */
  ok: boolean;
  /** Audio heard, ms (the window must be covered by audio, not by a gap). */
  heardMs: number;
  /** For an assertion message: what was expected and what was measured. */
  summary: string;
}

/**
 * Is the last `windowMs` of `pcm` the tone `hz` at `sentDbfs` (within TONE_LEVEL_TOLERANCE_DB)? The window is
 * analysed in 100 ms blocks and the median block decides (see `analyzeTail`). Digital silence, another frequency,
 * a tone far quieter or louder than sent, or less audio than the window all fail.
 */
export function checkTone(pcm: Int16Array, sampleRate: number, hz: number, sentDbfs: number, windowMs = 500): ToneCheck {
  const analysis = analyzeTail(pcm, sampleRate, hz, windowMs / 1000);
  const heardMs = (pcm.length / sampleRate) * 1000;
  const levelOk = Math.abs(analysis.levelDbfs - sentDbfs) <= TONE_LEVEL_TOLERANCE_DB;
  const ok = analysis.detected && levelOk && heardMs >= windowMs;
  return {
    ...analysis,
    ok,
    heardMs,
    summary:
      `${hz} Hz expected at ${sentDbfs.toFixed(1)} +- ${TONE_LEVEL_TOLERANCE_DB} dBFS over the last ${windowMs} ms: ` +
      `power ratio ${analysis.powerRatio.toFixed(2)} (> ${TONE_MIN_POWER_RATIO}), level ${analysis.levelDbfs.toFixed(1)} dBFS, ` +
      `peak ${analysis.peakHz.toFixed(0)} Hz, ${heardMs.toFixed(0)} ms heard`,
  };
}

/** The two ends of a bridged call as the tests drive them: each sends a tone and keeps what it hears. */
export interface ToneEnd {
  startTone(hz: number): void;
  clearReceived(): void;
  receivedPcm(): Int16Array;
}

/** What `listenBothWays` heard in each direction. */
export interface BothWays {
  atPbx: ToneCheck;
  atMeta: ToneCheck;
}

/**
 * Sends META_TO_PBX_HZ from Meta and PBX_TO_META_HZ from the PBX, forgets what either end heard before, listens for
 * `listenMs`, and checks the last `windowMs` at each end. Assert on the result (`atPbx.ok`, `atMeta.ok`).
 *
 * On a loaded machine the test's own senders fall behind (their timers fire late), so after `listenMs` it keeps
 * listening, up to `maxListenMs`, until each end has heard at least `windowMs` of audio: the check is on the same
 * window of audio whatever the machine's load, and a direction that carries nothing still fails.
 * @param pbxSampleRate the rate of the PBX peer's `receivedPcm()` (8000 for G.711, 48000 for Opus)
 */
export async function listenBothWays(
  meta: ToneEnd,
  pbx: ToneEnd,
  options: { pbxSampleRate?: number; listenMs?: number; windowMs?: number; maxListenMs?: number } = {},
): Promise<BothWays> {
  const { pbxSampleRate = 8000, listenMs = 1200, windowMs = 500, maxListenMs = 6000 } = options;
  meta.startTone(META_TO_PBX_HZ);
  pbx.startTone(PBX_TO_META_HZ);
  meta.clearReceived();
  pbx.clearReceived();
  const started = performance.now();
  await new Promise((resolve) => setTimeout(resolve, listenMs));
  const enough = (): boolean =>
    (pbx.receivedPcm().length / pbxSampleRate) * 1000 >= windowMs && (meta.receivedPcm().length / 48_000) * 1000 >= windowMs;
  while (!enough() && performance.now() - started < maxListenMs) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    atPbx: checkTone(pbx.receivedPcm(), pbxSampleRate, META_TO_PBX_HZ, META_TONE_DBFS, windowMs),
    atMeta: checkTone(meta.receivedPcm(), 48_000, PBX_TO_META_HZ, PBX_TONE_DBFS, windowMs),
  };
}

/** Asserts both directions of `listenBothWays`'s result under `what`. */
export function assertBothWays(t: Test, heard: BothWays, what: string): void {
  t.ok(heard.atPbx.ok, `${what}: Meta -> PBX tone (${heard.atPbx.summary})`);
  t.ok(heard.atMeta.ok, `${what}: PBX -> Meta tone (${heard.atMeta.summary})`);
}
