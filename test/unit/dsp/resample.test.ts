import t from 'tap';
import { Resampler } from '../../../src/media/dsp/resample.js';
import { analyzeTone, generateTone, levelDbfs, toneEnergy } from '../../helpers/tone.js';

/** Run `input` through `r` in frames of `frame` samples; returns the concatenated output and each frame's length. */
function stream(r: Resampler, input: Int16Array, frame: number): { output: Int16Array; lengths: number[] } {
  const parts: Int16Array[] = [];
  for (let i = 0; i < input.length; i += frame) parts.push(r.process(input.subarray(i, i + frame)));
  const output = new Int16Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    output.set(p, at);
    at += p.length;
  }
  return { output, lengths: parts.map((p) => p.length) };
}

/** Drop the filter's start-up transient (the first 50 ms of output). */
function settled(output: Int16Array, rate: number): Int16Array {
  return output.subarray(Math.round(0.05 * rate));
}

const PAIRS = [
  [48000, 8000],
  [8000, 48000],
  [48000, 16000],
  [16000, 48000],
] as const;

for (const [from, to] of PAIRS) {
  t.test(`${from} -> ${to}: exact frame sizes and a clean 1 kHz tone`, async (t) => {
    const r = new Resampler(from, to);
    const input = generateTone(1000, from, from, -6);
    const { output, lengths } = stream(r, input, from / 50);
    t.same(new Set(lengths), new Set([to / 50]), `every 20 ms frame gives ${to / 50} samples`);
    const tail = settled(output, to);
    const a = analyzeTone(tail, to, 1000);
    t.ok(a.detected, 'the 1 kHz tone is there');
    t.ok(a.powerRatio > 0.9999, `THD+N below -40 dB (tone holds ${(a.powerRatio * 100).toFixed(4)} % of the power)`);
    t.ok(Math.abs(a.levelDbfs - -6) < 0.5, `level kept within 0.5 dB (got ${a.levelDbfs.toFixed(2)} dBFS)`);
    t.ok(Math.abs(a.peakHz - 1000) < 2, `peak at 1 kHz (got ${a.peakHz.toFixed(1)} Hz)`);
  });
}

t.test('48k -> 8k removes what would alias into the telephone band', async (t) => {
  // 4600 Hz would fold to 3400 Hz, the top of the telephone band; anything above folds lower.
  for (const hz of [4600, 5000, 6000, 7000, 10000, 15000, 20000]) {
    const r = new Resampler(48000, 8000);
    const input = generateTone(hz, 48000, 48000, -3);
    const out = settled(stream(r, input, 960).output, 8000);
    const attenuation = -3 - levelDbfs(out);
    t.ok(attenuation > 60, `${hz} Hz attenuated ${attenuation.toFixed(1)} dB (> 60)`);
  }
});

t.test('48k -> 16k removes what would alias into the 50-6800 Hz band', async (t) => {
  for (const hz of [9200, 12000, 20000]) {
    const r = new Resampler(48000, 16000);
    const out = settled(stream(r, generateTone(hz, 48000, 48000, -3), 960).output, 16000);
    const attenuation = -3 - levelDbfs(out);
    t.ok(attenuation > 60, `${hz} Hz attenuated ${attenuation.toFixed(1)} dB (> 60)`);
  }
});

t.test('8k -> 48k leaves no images of the input above 4 kHz', async (t) => {
  const r = new Resampler(8000, 48000);
  const out = settled(stream(r, generateTone(1000, 8000, 8000, -3), 160).output, 48000);
  const { total } = toneEnergy(out, 48000, 1000);
  for (const image of [7000, 9000, 15000, 17000]) {
    const { tone } = toneEnergy(out, 48000, image);
    const db = 10 * Math.log10(tone / total);
    t.ok(db < -60, `image at ${image} Hz is ${db.toFixed(1)} dB below the signal`);
  }
});

t.test('the telephone band passes flat from 300 to 3400 Hz', async (t) => {
  for (const hz of [300, 1004, 2000, 3000, 3400]) {
    const down = settled(stream(new Resampler(48000, 8000), generateTone(hz, 48000, 24000, -10), 960).output, 8000);
    const up = settled(stream(new Resampler(8000, 48000), generateTone(hz, 8000, 4000, -10), 160).output, 48000);
    t.ok(Math.abs(levelDbfs(down) - -10) < 0.2, `48k->8k at ${hz} Hz: ${levelDbfs(down).toFixed(2)} dBFS`);
    t.ok(Math.abs(levelDbfs(up) - -10) < 0.2, `8k->48k at ${hz} Hz: ${levelDbfs(up).toFixed(2)} dBFS`);
  }
});

t.test('state carries across calls: any framing gives the same samples as one call', async (t) => {
  const input = generateTone(1234, 48000, 9600, -6);
  for (let i = 0; i < input.length; i += 7) input[i] = input[i]! ^ 0x55; // some broadband content
  const whole = new Resampler(48000, 8000).process(input);
  for (const frame of [960, 480, 7, 1001]) {
    const { output } = stream(new Resampler(48000, 8000), input, frame);
    t.same(output, whole, `frames of ${frame} samples`);
  }
  const wholeUp = new Resampler(8000, 48000).process(whole);
  t.same(stream(new Resampler(8000, 48000), whole, 13).output, wholeUp, 'upsampling, frames of 13 samples');
});

t.test('round trip 48k -> 8k -> 48k keeps a 1 kHz tone clean', async (t) => {
  const down = new Resampler(48000, 8000);
  const up = new Resampler(8000, 48000);
  const input = generateTone(1000, 48000, 48000, -12);
  const parts: Int16Array[] = [];
  for (let i = 0; i < input.length; i += 960) parts.push(up.process(down.process(input.subarray(i, i + 960))));
  t.same(new Set(parts.map((p) => p.length)), new Set([960]), '960 in, 960 out per frame');
  const out = new Int16Array(parts.length * 960);
  parts.forEach((p, i) => out.set(p, i * 960));
  const a = analyzeTone(settled(out, 48000), 48000, 1000);
  const detail = `${a.powerRatio.toFixed(5)}, ${a.levelDbfs.toFixed(2)} dBFS`;
  t.ok(a.powerRatio > 0.999 && Math.abs(a.levelDbfs - -12) < 0.5, `tone clean (${detail})`);
});

t.test('same rate copies; odd ratios work; bad rates throw', async (t) => {
  const x = generateTone(440, 8000, 160);
  const same = new Resampler(8000, 8000).process(x);
  t.same(same, x);
  t.not(same, x, 'a copy, not the caller’s array');
  const r = new Resampler(44100, 8000);
  const { output } = stream(r, generateTone(1000, 44100, 44100, -6), 441);
  t.equal(output.length, 8000, 'one second in, one second out');
  t.ok(analyzeTone(settled(output, 8000), 8000, 1000).powerRatio > 0.999);
  t.throws(() => new Resampler(0, 8000), RangeError);
  t.throws(() => new Resampler(48000, 8000.5), RangeError);
});
