/**
 * Cost of the media-path DSP per 20 ms frame: `npx tsx bench/dsp.ts`.
 * Prints microseconds per frame (median of several runs) for each stage.
 */
import { performance } from 'node:perf_hooks';
import { DtmfToneDetector, DtmfToneGenerator } from '../src/media/dsp/dtmf.js';
import { decodePcma, decodePcmu, encodePcma, encodePcmu } from '../src/media/dsp/g711.js';
import { Resampler } from '../src/media/dsp/resample.js';
import { generateTone } from '../src/media/dsp/tone.js';

const FRAMES = 2000;
const RUNS = 5;

function bench(name: string, frame: () => void): void {
  for (let i = 0; i < 200; i++) frame();
  const perFrame: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    const start = performance.now();
    for (let i = 0; i < FRAMES; i++) frame();
    perFrame.push(((performance.now() - start) * 1000) / FRAMES);
  }
  perFrame.sort((a, b) => a - b);
  const us = perFrame[Math.floor(RUNS / 2)]!;
  const share = ((us / 20000) * 100).toFixed(3);
  process.stdout.write(`${name.padEnd(40)} ${us.toFixed(2).padStart(8)} us/frame  ${share} % of a core\n`);
}

const pcm48 = generateTone(1000, 48000, 960, -12);
const pcm16 = generateTone(1000, 16000, 320, -12);
const pcm8 = generateTone(1000, 8000, 160, -12);
const pcmu = encodePcmu(pcm8);
const pcma = encodePcma(pcm8);

const down8 = new Resampler(48000, 8000);
const up8 = new Resampler(8000, 48000);
const down16 = new Resampler(48000, 16000);
const up16 = new Resampler(16000, 48000);
bench('resample 48k -> 8k (960 -> 160)', () => down8.process(pcm48));
bench('resample 8k -> 48k (160 -> 960)', () => up8.process(pcm8));
bench('resample 48k -> 16k (960 -> 320)', () => down16.process(pcm48));
bench('resample 16k -> 48k (320 -> 960)', () => up16.process(pcm16));
bench('G.711 PCMU encode (160)', () => encodePcmu(pcm8));
bench('G.711 PCMU decode (160)', () => decodePcmu(pcmu));
bench('G.711 PCMA encode (160)', () => encodePcma(pcm8));
bench('G.711 PCMA decode (160)', () => decodePcma(pcma));

const det8 = new DtmfToneDetector(8000);
const det48 = new DtmfToneDetector(48000);
const det8tone = new DtmfToneDetector(8000);
const gen8 = new DtmfToneGenerator(8000);
const toneFrames: Int16Array[] = [];
for (let i = 0; i < 50; i++) {
  if (!gen8.active) gen8.play('5', 200);
  const f = new Int16Array(160);
  gen8.mixInto(f);
  toneFrames.push(f);
}
let k = 0;
bench('DTMF detector 8 kHz, speech-free tone', () => det8.process(pcm8));
bench('DTMF detector 8 kHz, during digits', () => det8tone.process(toneFrames[k++ % toneFrames.length]!));
bench('DTMF detector 48 kHz (includes 48k->8k)', () => det48.process(pcm48));
const gen48 = new DtmfToneGenerator(48000);
const out48 = new Int16Array(960);
bench('DTMF generator 48 kHz, tone playing', () => {
  if (!gen48.toneOn) {
    gen48.clear();
    gen48.play('9', 1000);
  }
  gen48.mixInto(out48);
});
