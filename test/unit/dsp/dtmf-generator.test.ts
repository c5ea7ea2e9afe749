import t from 'tap';
import {
  DTMF_COLUMN_HZ,
  DTMF_DIGITS,
  DTMF_ROW_HZ,
  DTMF_TONE_LEVEL_DBFS,
  DtmfToneGenerator,
  dtmfFrequencies,
} from '../../../src/media/dsp/dtmf.js';
import { generateTone, tonesEnergy } from '../../helpers/tone.js';

/** Render the generator in 20 ms frames until it is idle (bounded). */
function render(gen: DtmfToneGenerator, rate: number, start?: (i: number) => Int16Array): Int16Array {
  const frames: Int16Array[] = [];
  for (let i = 0; gen.active && i < 1000; i++) {
    const f = start ? start(i) : new Int16Array(rate / 50);
    gen.mixInto(f);
    frames.push(f);
  }
  const out = new Int16Array(frames.length * (rate / 50));
  frames.forEach((f, i) => out.set(f, i * (rate / 50)));
  return out;
}

/** Runs of non-zero samples: [start, end) pairs. */
function bursts(x: Int16Array): [number, number][] {
  const runs: [number, number][] = [];
  let start = -1;
  let lastNonZero = -1;
  for (let i = 0; i < x.length; i++) {
    if (x[i] !== 0) {
      if (start < 0 || i - lastNonZero > 8) {
        if (start >= 0) runs.push([start, lastNonZero + 1]);
        start = i;
      }
      lastNonZero = i;
    }
  }
  if (start >= 0) runs.push([start, lastNonZero + 1]);
  return runs;
}

t.test('the keypad follows Q.23', async (t) => {
  t.equal(DTMF_DIGITS, '0123456789*#ABCD');
  t.same(DTMF_ROW_HZ, [697, 770, 852, 941]);
  t.same(DTMF_COLUMN_HZ, [1209, 1336, 1477, 1633]);
  t.same(dtmfFrequencies('5'), { rowHz: 770, columnHz: 1336 });
  t.same(dtmfFrequencies('*'), { rowHz: 941, columnHz: 1209 });
  t.same(dtmfFrequencies('d'), { rowHz: 941, columnHz: 1633 }, 'letters in either case');
  t.equal(dtmfFrequencies('E'), undefined);
  t.equal(dtmfFrequencies('12'), undefined);
});

for (const rate of [8000, 48000]) {
  t.test(`each digit is its Q.23 pair at -10 dBm0 per tone, no twist (${rate} Hz)`, async (t) => {
    for (const digit of DTMF_DIGITS) {
      const gen = new DtmfToneGenerator(rate);
      gen.play(digit, 100);
      const out = render(gen, rate);
      const [tone] = bursts(out);
      const body = out.subarray(tone![0] + rate / 100, tone![1] - rate / 100);
      const { rowHz, columnHz } = dtmfFrequencies(digit)!;
      const fit = tonesEnergy(body, rate, [rowHz, columnHz]);
      const dbfs = (energy: number) => 10 * Math.log10((2 * energy) / body.length / 32767 ** 2);
      const [rowDb, colDb] = fit.each.map(dbfs) as [number, number];
      t.ok(Math.abs(rowDb - DTMF_TONE_LEVEL_DBFS) < 0.2, `${digit}: ${rowHz} Hz at ${rowDb.toFixed(2)} dBFS`);
      t.ok(Math.abs(colDb - DTMF_TONE_LEVEL_DBFS) < 0.2, `${digit}: ${columnHz} Hz at ${colDb.toFixed(2)} dBFS`);
      const share = fit.tones / fit.total;
      t.ok(share > 0.9999, `${digit}: nothing else in the signal (${share.toFixed(6)})`);
    }
  });
}

t.test('durations and the pause between digits', async (t) => {
  const rate = 8000;
  const gen = new DtmfToneGenerator(rate);
  gen.play('1', 70);
  gen.play('1', 40);
  gen.play('#', 250);
  t.ok(gen.active);
  t.equal(gen.pendingSamples, ((70 + 40 + 250 + 3 * 50) * rate) / 1000, 'tones and pauses queued');
  const out = render(gen, rate);
  t.notOk(gen.active, 'idle after the last pause');
  const runs = bursts(out);
  t.equal(runs.length, 3, 'three tones');
  t.same(
    runs.map(([a, b]) => Math.round(((b - a) * 1000) / rate)),
    [70, 40, 250],
    'each as long as asked (to the ms)',
  );
  for (let i = 1; i < runs.length; i++) {
    const gapMs = ((runs[i]![0] - runs[i - 1]![1]) * 1000) / rate;
    t.ok(gapMs >= 50, `pause ${gapMs} ms before tone ${i + 1}`);
  }
  t.ok(runs[0]![0] <= 1, 'starts with the first frame after play()');
});

t.test('a longer gap can be asked for, a shorter one cannot', async (t) => {
  for (const [gapMs, expected] of [
    [120, 120],
    [10, 50],
  ]) {
    const gen = new DtmfToneGenerator(8000, { gapMs });
    gen.play('5', 60);
    gen.play('6', 60);
    const runs = bursts(render(gen, 8000));
    const measured = ((runs[1]![0] - runs[0]![1]) * 1000) / 8000;
    t.ok(Math.abs(measured - expected) <= 0.5, `gapMs ${gapMs} -> ${measured} ms`);
  }
});

t.test('mixInto adds to the frame, replaceInto replaces it during the tone only', async (t) => {
  const rate = 8000;
  const speech = () => generateTone(300, rate, rate / 50, -20);
  const mixed = new DtmfToneGenerator(rate);
  mixed.play('9', 40);
  const withVoice = render(mixed, rate, () => speech());
  const alone = new DtmfToneGenerator(rate);
  alone.play('9', 40);
  const toneOnly = render(alone, rate);
  const voice = render(
    (() => {
      const g = new DtmfToneGenerator(rate);
      g.play('9', 40);
      return g;
    })(),
    rate,
    () => speech(),
  );
  t.same(withVoice, voice, 'deterministic');
  let diff = 0;
  const v = speech();
  for (let i = 0; i < withVoice.length; i++) {
    diff = Math.max(diff, Math.abs(withVoice[i]! - (toneOnly[i]! + v[i % v.length]!)));
  }
  t.ok(diff <= 1, 'mix = tone + frame');

  const replacing = new DtmfToneGenerator(rate);
  replacing.play('9', 40);
  const frames: Int16Array[] = [];
  while (replacing.active) {
    const f = speech();
    replacing.replaceInto(f);
    frames.push(f);
  }
  const firstTwo = new Int16Array(320);
  firstTwo.set(frames[0]!);
  firstTwo.set(frames[1]!, 160);
  t.same(firstTwo.subarray(0, 320), toneOnly.subarray(0, 320), 'during the tone only the tone is heard');
  t.same(frames[3], speech(), 'during the pause the frame is untouched');
});

t.test('toneOn tells tone from pause; clear() drops the queue', async (t) => {
  const gen = new DtmfToneGenerator(8000);
  t.notOk(gen.active);
  t.notOk(gen.toneOn);
  gen.play('0', 40);
  t.ok(gen.toneOn);
  gen.mixInto(new Int16Array(320));
  t.ok(gen.active, 'pause still to come');
  t.notOk(gen.toneOn);
  gen.play('1', 40);
  gen.clear();
  t.notOk(gen.active);
  const f = new Int16Array(160);
  gen.mixInto(f);
  t.ok(f.every((v) => v === 0), 'nothing plays after clear()');
});

t.test('mixing saturates instead of wrapping', async (t) => {
  const gen = new DtmfToneGenerator(8000);
  gen.play('D', 40);
  const f = new Int16Array(160).fill(32000);
  gen.mixInto(f);
  t.ok(f.every((v) => v >= 32000 - 2 * 32767 * 10 ** (DTMF_TONE_LEVEL_DBFS / 20) - 1 && v <= 32767));
  t.ok(f.some((v) => v === 32767), 'clipped at full scale');
});

t.test('bad input throws', async (t) => {
  const gen = new DtmfToneGenerator(8000);
  t.throws(() => gen.play('x', 100), RangeError);
  t.throws(() => gen.play('1', 0), RangeError);
  t.throws(() => gen.play('1', Number.NaN), RangeError);
  t.throws(() => new DtmfToneGenerator(2000), RangeError);
  t.notOk(gen.active, 'nothing queued by a rejected call');
});
