import t from 'tap';
import alawmulaw from 'alawmulaw';
import { decodePcma, decodePcmu, encodePcma, encodePcmu } from '../../../src/media/dsp/g711.js';
import { analyzeTone, generateTone } from '../../helpers/tone.js';

const every16Bit = new Int16Array(65536);
for (let i = 0; i < 65536; i++) every16Bit[i] = i - 32768;
const everyCode = new Uint8Array(256).map((_, i) => i);

t.test('known vectors', async (t) => {
  const pcm = new Int16Array([0, 32767, -32768, 8, -8, 1000, -1000]);
  t.same([...encodePcmu(pcm)], [0xff, 0x80, 0x00, 0xfe, 0x7e, 0xce, 0x4e], 'PCMU');
  t.same([...encodePcma(pcm)], [0xd5, 0xaa, 0x2a, 0xd5, 0x55, 0xfa, 0x7a], 'PCMA');
  t.same([...decodePcmu(new Uint8Array([0xff, 0x7f, 0x80, 0x00]))], [0, 0, 32124, -32124], 'PCMU decode');
  t.same([...decodePcma(new Uint8Array([0xd5, 0x55, 0xaa, 0x2a]))], [8, -8, 32256, -32256], 'PCMA decode');
});

t.test('decoding matches an independent implementation for all 256 codes', async (t) => {
  t.same([...decodePcmu(everyCode)], [...alawmulaw.mulaw.decode(everyCode)], 'PCMU');
  t.same([...decodePcma(everyCode)], [...alawmulaw.alaw.decode(everyCode)], 'PCMA');
});

t.test('encoding every 16-bit value picks the nearest level, or its neighbour on a decision boundary', async (t) => {
  for (const [name, enc, dec, ref] of [
    ['PCMU', encodePcmu, decodePcmu, alawmulaw.mulaw.encode],
    ['PCMA', encodePcma, decodePcma, alawmulaw.alaw.encode],
  ] as const) {
    const levels = [...new Set(dec(everyCode))].sort((a, b) => a - b);
    const indexOf = new Map(levels.map((v, i) => [v, i]));
    const ours = dec(enc(every16Bit));
    const theirs = dec(new Uint8Array(ref(every16Bit)));
    let nearestIndex = 0;
    let beyondNeighbour = 0;
    let notNearest = 0;
    let differ = 0;
    for (let i = 0; i < 65536; i++) {
      const x = every16Bit[i]!;
      while (
        nearestIndex + 1 < levels.length &&
        Math.abs(levels[nearestIndex + 1]! - x) <= Math.abs(levels[nearestIndex]! - x)
      ) {
        nearestIndex++;
      }
      const chosen = indexOf.get(ours[i]!)!;
      if (chosen !== nearestIndex) notNearest++;
      if (Math.abs(chosen - nearestIndex) > 1) beyondNeighbour++;
      if (ours[i] !== theirs[i]) differ++;
    }
    t.equal(beyondNeighbour, 0, `${name}: never further than the neighbour of the nearest level`);
    t.ok(notNearest < 65536 * 0.03, `${name}: the nearest level nearly always (${notNearest} of 65536 are not)`);
    t.ok(differ < 1024, `${name}: differs from the independent encoder only on boundaries (${differ} of 65536)`);
  }
});

t.test('decode -> encode -> decode is the identity', async (t) => {
  t.same([...decodePcmu(encodePcmu(decodePcmu(everyCode)))], [...decodePcmu(everyCode)], 'PCMU');
  t.same([...encodePcma(decodePcma(everyCode))], [...everyCode], 'PCMA codes survive exactly');
});

t.test('a -13 dBFS 1 kHz tone survives a round trip with G.711 quality', async (t) => {
  const tone = generateTone(1004, 8000, 8000, -13);
  for (const [name, back] of [
    ['PCMU', decodePcmu(encodePcmu(tone))],
    ['PCMA', decodePcma(encodePcma(tone))],
  ] as const) {
    const a = analyzeTone(back, 8000, 1004);
    const snrDb = 10 * Math.log10(a.powerRatio / (1 - a.powerRatio));
    t.ok(snrDb > 33, `${name}: SNR ${snrDb.toFixed(1)} dB`);
    t.ok(Math.abs(a.levelDbfs - -13) < 0.3, `${name}: level ${a.levelDbfs.toFixed(2)} dBFS`);
  }
});

t.test('payloads are one byte per sample, in fresh buffers', async (t) => {
  const pcm = generateTone(440, 8000, 160);
  const a = encodePcmu(pcm);
  const b = encodePcmu(pcm);
  t.ok(Buffer.isBuffer(a));
  t.equal(a.length, 160);
  t.not(a, b);
  t.equal(decodePcma(encodePcma(pcm)).length, 160);
});
