import t from 'tap';
import { Decoder, Encoder } from '@evan/opus';
import {
  DTMF_DIGITS,
  DtmfToneDetector,
  DtmfToneGenerator,
  dtmfFrequencies,
  type DetectedDigit,
} from '../../../src/media/dsp/dtmf.js';
import { decodePcma, decodePcmu, encodePcma, encodePcmu } from '../../../src/media/dsp/g711.js';
import { generateTone, seededRandom, speechLike } from '../../helpers/tone.js';

const LEVEL = -13.17;

function concat(parts: Int16Array[]): Int16Array {
  const out = new Int16Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const silence = (ms: number, rate: number) => new Int16Array(Math.round((ms * rate) / 1000));

/** A dual tone with explicit frequencies and levels (dBFS each), `ms` long. */
function dualTone(rowHz: number, colHz: number, ms: number, rate: number, rowDb = LEVEL, colDb = LEVEL): Int16Array {
  const n = Math.round((ms * rate) / 1000);
  const a = generateTone(rowHz, rate, n, rowDb);
  const b = generateTone(colHz, rate, n, colDb, 1.3);
  return a.map((v, i) => v + b[i]!);
}

/** The generator's rendering of `digits`, each `toneMs` long, then 300 ms of silence. */
function generated(digits: string, toneMs: number, rate: number): Int16Array {
  const gen = new DtmfToneGenerator(rate);
  for (const d of digits) gen.play(d, toneMs);
  const frames: Int16Array[] = [];
  while (gen.active) {
    const f = new Int16Array(rate / 50);
    gen.mixInto(f);
    frames.push(f);
  }
  frames.push(silence(300, rate));
  return concat(frames);
}

/** Feed `audio` in frames of `frame` samples; the digits in the order reported (no flush). */
function detect(audio: Int16Array, rate: number, frame = rate / 50, det = new DtmfToneDetector(rate)): DetectedDigit[] {
  const found: DetectedDigit[] = [];
  for (let i = 0; i < audio.length; i += frame) found.push(...det.process(audio.subarray(i, i + frame)));
  return found;
}

const digitsOf = (found: DetectedDigit[]) => found.map((d) => d.digit).join('');

function opusRoundTrip(pcm48k: Int16Array): Int16Array {
  const enc = new Encoder({ channels: 1, sample_rate: 48000, application: 'voip' });
  enc.bitrate = 20000; // Meta's maxaveragebitrate
  const dec = new Decoder({ channels: 1, sample_rate: 48000 });
  const out: Int16Array[] = [];
  for (let i = 0; i + 960 <= pcm48k.length; i += 960) {
    const bytes = dec.decode(enc.encode(pcm48k.slice(i, i + 960)));
    out.push(new Int16Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)));
  }
  return concat(out);
}

t.test('all 16 digits, in order, once each', async (t) => {
  for (const rate of [8000, 16000, 48000]) {
    const audio = generated(DTMF_DIGITS, 80, rate);
    const found = detect(audio, rate);
    t.equal(digitsOf(found), DTMF_DIGITS, `${rate} Hz`);
    const durations = found.map((d) => d.durationMs);
    t.ok(durations.every((ms) => Math.abs(ms - 80) <= 10), `${rate} Hz: durations ~80 ms (${durations.join(',')})`);
  }
});

t.test('any framing works: 7-sample pieces, 30 ms frames, one big block', async (t) => {
  const audio = generated('159#', 60, 8000);
  for (const frame of [7, 240, audio.length]) {
    t.equal(digitsOf(detect(audio, 8000, frame)), '159#', `frames of ${frame}`);
  }
});

t.test('after a G.711 round trip at 8 kHz', async (t) => {
  const audio = generated(DTMF_DIGITS, 60, 8000);
  t.equal(digitsOf(detect(decodePcmu(encodePcmu(audio)), 8000)), DTMF_DIGITS, 'PCMU');
  t.equal(digitsOf(detect(decodePcma(encodePcma(audio)), 8000)), DTMF_DIGITS, 'PCMA');
});

t.test('after Opus encode/decode at 48 kHz (20 kbit/s)', async (t) => {
  const audio = generated(DTMF_DIGITS, 80, 48000);
  const coded = opusRoundTrip(audio);
  t.equal(digitsOf(detect(coded, 48000)), DTMF_DIGITS);
  const repeated = opusRoundTrip(generated('7777', 60, 48000));
  t.equal(digitsOf(detect(repeated, 48000)), '7777', 'repeated digit with 50 ms pauses');
});

/** Is `part` what remains of `whole` after deleting some characters (nothing added, order kept)? */
function isSubsequence(part: string, whole: string): boolean {
  let at = 0;
  for (const c of whole) if (at < part.length && part[at] === c) at++;
  return at === part.length;
}

t.test('the engine path: Opus from Meta decoded at 8 kHz, with 5 % packet loss concealed', async (t) => {
  const sent = DTMF_DIGITS + DTMF_DIGITS;
  const audio = generated(sent, 100, 48000);
  for (const seed of [1, 2, 3]) {
    const enc = new Encoder({ channels: 1, sample_rate: 48000, application: 'voip' });
    enc.bitrate = 20000;
    const dec = new Decoder({ channels: 1, sample_rate: 8000 });
    const rand = seededRandom(seed);
    const det = new DtmfToneDetector(8000);
    const found: DetectedDigit[] = [];
    let lost = 0;
    for (let i = 0; i + 960 <= audio.length; i += 960) {
      const packet = Buffer.from(enc.encode(audio.slice(i, i + 960)));
      const isLost = rand() < 0.05;
      if (isLost) lost++;
      // A lost packet: libopus conceals a frame when given the TOC byte alone, and the detector is told so.
      const bytes = dec.decode(isLost ? Uint8Array.of(packet[0]! & 0xfc) : packet);
      const pcm = new Int16Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
      found.push(...det.process(pcm, isLost));
    }
    const got = digitsOf(found);
    t.ok(isSubsequence(got, sent), `seed ${seed}: no digit doubled or invented (${got}, ${lost} packets lost)`);
    t.ok(got.length >= 29, `seed ${seed}: at least 90 % of the digits (${got.length} of 32)`);
  }
});

t.test('a lost packet inside a long press neither splits nor ends the digit', async (t) => {
  const { rowHz, columnHz } = dtmfFrequencies('9')!;
  const tone = dualTone(rowHz, columnHz, 300, 8000);
  const run = (flagged: boolean) => {
    const det = new DtmfToneDetector(8000);
    const found: DetectedDigit[] = [];
    for (let f = 0; f < 15; f++) {
      const frame = tone.slice(f * 160, f * 160 + 160);
      const lost = f === 7;
      // What a concealment may sound like: the tone's shape at a wrong pitch.
      const pcm = lost ? generateTone(rowHz * 1.07, 8000, 160, -10) : frame;
      found.push(...det.process(pcm, flagged && lost));
    }
    found.push(...detect(silence(200, 8000), 8000, 160, det));
    return found;
  };
  const flagged = run(true);
  t.equal(digitsOf(flagged), '9', 'told it was concealed: one digit');
  t.ok(Math.abs(flagged[0]!.durationMs - 300) <= 10, `spanning the loss (${flagged[0]!.durationMs} ms)`);
  t.equal(digitsOf(run(false)), '99', 'not told: the wrong audio splits it in two, as Q.24 demands of real audio');
});

t.test('frequency tolerance: accepts +-1.5 %, rejects +-3.5 % and +-5 %', async (t) => {
  for (const digit of DTMF_DIGITS) {
    const { rowHz, columnHz } = dtmfFrequencies(digit)!;
    const accepted: string[] = [];
    for (const [dr, dc] of [
      [1.015, 1.015],
      [0.985, 0.985],
      [1.015, 0.985],
      [0.985, 1.015],
    ] as const) {
      const audio = concat([dualTone(rowHz * dr, columnHz * dc, 100, 8000), silence(200, 8000)]);
      accepted.push(digitsOf(detect(audio, 8000)));
    }
    t.same(accepted, [digit, digit, digit, digit], `${digit}: accepted at +-1.5 %`);
    const rejected: string[] = [];
    for (const dev of [1.035, 0.965, 1.05, 0.95]) {
      for (const rate of [8000, 48000]) {
        rejected.push(
          digitsOf(detect(concat([dualTone(rowHz * dev, columnHz, 100, rate), silence(200, rate)]), rate)),
          digitsOf(detect(concat([dualTone(rowHz, columnHz * dev, 100, rate), silence(200, rate)]), rate)),
        );
      }
    }
    t.equal(rejected.join(''), '', `${digit}: rejected at +-3.5 % and +-5 % of either tone`);
  }
});

t.test('twist: normal up to 8 dB, reverse up to 4 dB', async (t) => {
  const { rowHz, columnHz } = dtmfFrequencies('8')!;
  const run = (rowDb: number, colDb: number) =>
    digitsOf(detect(concat([dualTone(rowHz, columnHz, 100, 8000, rowDb, colDb), silence(200, 8000)]), 8000));
  t.equal(run(-10, -17), '8', 'normal twist 7 dB accepted');
  t.equal(run(-17, -14), '8', 'reverse twist 3 dB accepted');
  t.equal(run(-10, -20), '', 'normal twist 10 dB rejected');
  t.equal(run(-19, -13), '', 'reverse twist 6 dB rejected');
});

t.test('duration: 40 ms is a digit, 30 ms and less is not, whatever the alignment', async (t) => {
  const { rowHz, columnHz } = dtmfFrequencies('3')!;
  for (let offset = 0; offset < 40; offset += 3) {
    const lead = new Int16Array(100 + offset);
    const run = (ms: number) =>
      detect(concat([lead, dualTone(rowHz, columnHz, ms, 8000), silence(200, 8000)]), 8000);
    const forty = run(40);
    t.equal(digitsOf(forty), '3', `40 ms at offset ${offset} samples`);
    t.ok(forty.length === 1 && Math.abs(forty[0]!.durationMs - 40) <= 10, `reported ~40 ms (${forty[0]?.durationMs})`);
    t.equal(digitsOf(run(20)), '', `20 ms at offset ${offset} samples`);
    t.equal(digitsOf(run(25)), '', `25 ms at offset ${offset} samples`);
    t.equal(digitsOf(run(30)), '', `30 ms at offset ${offset} samples`);
  }
});

t.test('a 40 ms pause separates digits; a 10 ms dropout does not', async (t) => {
  const { rowHz, columnHz } = dtmfFrequencies('5')!;
  const tone = (ms: number) => dualTone(rowHz, columnHz, ms, 8000);
  const twice = detect(concat([tone(60), silence(40, 8000), tone(60), silence(200, 8000)]), 8000);
  t.equal(digitsOf(twice), '55', 'two digits across a 40 ms pause');
  const once = detect(concat([tone(60), silence(10, 8000), tone(60), silence(200, 8000)]), 8000);
  t.equal(digitsOf(once), '5', 'one digit across a 10 ms dropout');
  t.ok(Math.abs(once[0]!.durationMs - 130) <= 10, `its duration spans the dropout (${once[0]!.durationMs} ms)`);
});

t.test('a long press is one digit with its duration, reported when it ends', async (t) => {
  const rate = 8000;
  const det = new DtmfToneDetector(rate);
  const { rowHz, columnHz } = dtmfFrequencies('0')!;
  const tone = dualTone(rowHz, columnHz, 1000, rate);
  const during = detect(tone, rate, 160, det);
  t.same(during, [], 'nothing while the key is held');
  const after = detect(silence(200, rate), rate, 160, det);
  t.equal(after.length, 1);
  t.equal(after[0]!.digit, '0');
  t.ok(Math.abs(after[0]!.durationMs - 1000) <= 10, `${after[0]!.durationMs} ms`);
});

t.test('flush() reports a digit still sounding and starts afresh', async (t) => {
  const det = new DtmfToneDetector(48000);
  const { rowHz, columnHz } = dtmfFrequencies('A')!;
  t.same(detect(dualTone(rowHz, columnHz, 100, 48000), 48000, 960, det), []);
  t.same(det.flush().map((d) => d.digit), ['A']);
  t.same(det.flush(), [], 'only once');
  t.equal(digitsOf(detect(generated('B', 60, 48000), 48000, 960, det)), 'B', 'works after a flush');
});

t.test('levels: -30 dBFS per tone is a digit, -40 dBFS is not', async (t) => {
  const { rowHz, columnHz } = dtmfFrequencies('6')!;
  const run = (db: number) =>
    digitsOf(detect(concat([dualTone(rowHz, columnHz, 80, 8000, db, db), silence(200, 8000)]), 8000));
  t.equal(run(-30), '6');
  t.equal(run(-40), '');
});

t.test('noise: digits survive 20 dB SNR; noise alone is no digit', async (t) => {
  const rand = seededRandom(42);
  const noise = (ms: number, db: number) => {
    const n = silence(ms, 8000);
    const amp = 32767 * 10 ** (db / 20) * Math.sqrt(3 / 2); // uniform noise of that sine-referenced level
    for (let i = 0; i < n.length; i++) n[i] = Math.round((rand() * 2 - 1) * amp);
    return n;
  };
  const audio = generated('2468', 80, 8000);
  const n = noise((audio.length * 1000) / 8000, LEVEL + 3 - 20);
  const noisy = audio.map((v, i) => v + n[i]!);
  t.equal(digitsOf(detect(noisy, 8000)), '2468', 'tones at -10 dBm0 each, noise 20 dB below their sum');
  t.equal(digitsOf(detect(noise(10000, -15), 8000)), '', '10 s of loud white noise');
});

t.test('talk-off: speech produces no digit', async (t) => {
  for (const seed of [1, 2, 3, 4]) {
    t.same(detect(speechLike(30, 8000, seed), 8000), [], `30 s of speech, seed ${seed}, 8 kHz`);
  }
  t.same(detect(decodePcmu(encodePcmu(speechLike(30, 8000, 5))), 8000), [], '30 s of speech, seed 5, through PCMU');
  t.same(detect(opusRoundTrip(speechLike(30, 48000, 6)), 48000), [], '30 s of speech, seed 6, through Opus at 48 kHz');
});

t.test('digits pressed over quiet background speech are found', async (t) => {
  const tones = generated('3141', 100, 8000);
  const speech = speechLike(tones.length / 8000 + 1, 8000, 9);
  const mixed = tones.map((v, i) => v + Math.round(speech[i]! * 10 ** (-12 / 20))); // speech at -32 dBFS
  t.equal(digitsOf(detect(mixed, 8000)), '3141');
});
