import t from 'tap';
import { analyzeTone, generateTone, levelDbfs, speechLike } from '../../helpers/tone.js';

t.test('generateTone makes a sine at the asked level and phase', async (t) => {
  const x = generateTone(1000, 8000, 8000, -12);
  t.equal(x.length, 8000);
  t.ok(Math.abs(levelDbfs(x) - -12) < 0.01, `level ${levelDbfs(x).toFixed(3)} dBFS`);
  const peak = Math.max(...x);
  t.ok(Math.abs(peak - Math.round(32767 * 10 ** (-12 / 20))) <= 1, 'peak is the sine-referenced level');
  t.equal(generateTone(1000, 8000, 4, -6, Math.PI / 2)[0], Math.round(32767 * 10 ** (-6 / 20)), 'phase sets the start');
  t.equal(Math.max(...generateTone(100, 8000, 800, 6)), 32767, 'saturates, never wraps');
});

t.test('analyzeTone finds the tone that is there and only that one', async (t) => {
  for (const [hz, rate] of [
    [1000, 8000],
    [440, 48000],
    [3000, 16000],
  ] as const) {
    const x = generateTone(hz, rate, rate / 2, -20);
    const yes = analyzeTone(x, rate, hz);
    t.ok(yes.detected && yes.powerRatio > 0.999, `${hz} Hz at ${rate}: found (${yes.powerRatio.toFixed(4)})`);
    t.ok(Math.abs(yes.peakHz - hz) < 1, `peak ${yes.peakHz.toFixed(2)} Hz`);
    t.ok(Math.abs(yes.levelDbfs - -20) < 0.05);
    const no = analyzeTone(x, rate, hz * 1.05);
    t.notOk(no.detected, `${(hz * 1.05).toFixed(0)} Hz is not (${no.powerRatio.toFixed(4)})`);
  }
});

t.test('analyzeTone: too quiet, silence, a mixture', async (t) => {
  t.notOk(analyzeTone(generateTone(1000, 8000, 8000, -45), 8000, 1000).detected, 'below -40 dBFS');
  const silence = analyzeTone(new Int16Array(800), 8000, 1000);
  t.notOk(silence.detected);
  t.equal(silence.levelDbfs, -Infinity);
  t.equal(silence.powerRatio, 0);
  const a = generateTone(697, 8000, 8000, -16);
  const b = generateTone(1209, 8000, 8000, -16);
  const mix = a.map((v, i) => v + b[i]!);
  const m = analyzeTone(mix, 8000, 697);
  t.notOk(m.detected, 'half the power is not most of it');
  t.ok(Math.abs(m.powerRatio - 0.5) < 0.01, `ratio ${m.powerRatio.toFixed(3)}`);
});

t.test('speechLike is deterministic voice-band audio at a talker level', async (t) => {
  const a = speechLike(3, 8000, 7);
  t.same(a, speechLike(3, 8000, 7), 'same seed, same audio');
  const other = speechLike(3, 8000, 8);
  t.ok(a.some((v, i) => v !== other[i]), 'another seed, other audio');
  t.equal(a.length, 24000);
  const level = levelDbfs(a);
  t.ok(level > -30 && level < -15, `overall level ${level.toFixed(1)} dBFS`);
  const wide = speechLike(2, 48000, 7);
  t.equal(wide.length, 96000);
  // No single tone dominates speech.
  for (const hz of [200, 700, 1200]) t.notOk(analyzeTone(a, 8000, hz).detected, `${hz} Hz does not dominate`);
});
