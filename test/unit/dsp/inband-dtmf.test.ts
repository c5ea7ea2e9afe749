import t from 'tap';
import { Decoder, Encoder } from '@evan/opus';
import { InbandDtmfInjector, InbandDtmfWatcher } from '../../../src/media/dsp/InbandDtmf.js';
import { DtmfToneDetector, DTMF_DIGITS, type DetectedDigit } from '../../../src/media/dsp/dtmf.js';
import { generateTone, speechLike } from '../../helpers/tone.js';

/** Run the injector over `frames` (or silence) until idle; returns the frames sent. */
function inject(
  injector: InbandDtmfInjector,
  source: (i: number) => Int16Array = () => new Int16Array(960),
): Int16Array[] {
  const sent: Int16Array[] = [];
  for (let i = 0; injector.active && i < 3000; i++) sent.push(injector.process(source(i)));
  for (let i = 0; i < 15; i++) sent.push(source(i)); // the stream goes on after the digits
  return sent;
}

/** Opus at 48 kHz mono, 20 kbit/s, frame by frame (as the path toward Meta and back would carry it). */
function opus(frames: Int16Array[]): Int16Array[] {
  const enc = new Encoder({ channels: 1, sample_rate: 48000, application: 'voip' });
  enc.bitrate = 20000;
  const dec = new Decoder({ channels: 1, sample_rate: 48000 });
  return frames.map((f) => {
    const b = dec.decode(enc.encode(f));
    return new Int16Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
  });
}

const digitsOf = (d: DetectedDigit[]) => d.map((x) => x.digit).join('');

t.test('injector -> Opus -> watcher carries every digit', async (t) => {
  const injector = new InbandDtmfInjector();
  for (const d of DTMF_DIGITS) t.ok(injector.enqueue(d, 90));
  t.equal(injector.queued, 16);
  const watcher = new InbandDtmfWatcher();
  const events: DetectedDigit[] = [];
  watcher.on('digit', (d) => events.push(d));
  let ts = 1234567;
  const returned: DetectedDigit[] = [];
  for (const frame of opus(inject(injector))) {
    returned.push(...watcher.push(frame, ts));
    ts += 960;
  }
  t.equal(digitsOf(events), DTMF_DIGITS, 'emitted in order');
  t.same(returned, events, 'and returned by push()');
  t.ok(events.every((d) => Math.abs(d.durationMs - 90) <= 15), `durations ~90 ms: ${events.map((d) => d.durationMs)}`);
});

t.test('active covers the tone and its pause; frames pass untouched otherwise', async (t) => {
  const injector = new InbandDtmfInjector({ gapMs: 60 });
  const voice = generateTone(300, 48000, 960, -20);
  t.notOk(injector.active);
  const idle = injector.process(voice.slice());
  t.same(idle, voice, 'no digit: the frame is unchanged');
  injector.enqueue('7', 100);
  let activeFrames = 0;
  let toneFrames = 0;
  while (injector.active) {
    if (injector.toneOn) toneFrames++;
    injector.process(voice.slice());
    activeFrames++;
  }
  t.equal(activeFrames, 8, '100 ms tone + 60 ms pause = 8 frames of 20 ms');
  t.equal(toneFrames, 5, 'tone in the first 5 frames');
  t.same(injector.process(voice.slice()), voice, 'afterwards unchanged again');
});

t.test('replace mode: digits over loud speech are still heard; mix mode keeps the speech', async (t) => {
  const speech = speechLike(3, 48000, 11);
  const frameOf = (i: number) => {
    const at = (i * 960) % (speech.length - 960);
    return speech.slice(at, at + 960);
  };
  const replacing = new InbandDtmfInjector();
  replacing.enqueue('4', 100);
  replacing.enqueue('2', 100);
  const watcher = new InbandDtmfWatcher();
  const got = inject(replacing, frameOf).flatMap((f) => watcher.push(f));
  t.equal(digitsOf(got), '42', 'replace: detected over speech at -20 dBFS');

  const mixing = new InbandDtmfInjector({ mode: 'mix' });
  mixing.enqueue('4', 100);
  const frame = frameOf(10);
  const mixed = mixing.process(frame.slice());
  const tonesOnly = new InbandDtmfInjector();
  tonesOnly.enqueue('4', 100);
  const tone = tonesOnly.nextFrame();
  let maxErr = 0;
  for (let i = 0; i < 960; i++) maxErr = Math.max(maxErr, Math.abs(mixed[i]! - (frame[i]! + tone[i]!)));
  t.ok(maxErr <= 1, 'mix: frame + tone');
});

t.test('short requests are lengthened, long ones capped, bad ones refused', async (t) => {
  const injector = new InbandDtmfInjector({ minToneMs: 70, maxToneMs: 300, maxQueued: 3 });
  t.ok(injector.enqueue('1', 10));
  t.ok(injector.enqueue('b', 60000), 'lower-case letters are digits too');
  t.notOk(injector.enqueue('x', 100), 'not a digit');
  t.ok(injector.enqueue('#', Number.NaN), 'no duration: the minimum');
  t.notOk(injector.enqueue('2', 100), 'queue full');
  const watcher = new InbandDtmfWatcher();
  const got = inject(injector).flatMap((f) => watcher.push(f));
  t.equal(digitsOf(got), '1B#');
  t.ok(got[0]!.durationMs >= 65 && got[0]!.durationMs <= 80, `10 ms asked, ~70 ms played (${got[0]!.durationMs})`);
  t.ok(got[1]!.durationMs >= 295 && got[1]!.durationMs <= 310, `60 s asked, ~300 ms played (${got[1]!.durationMs})`);
  injector.enqueue('9', 100);
  injector.clear();
  t.notOk(injector.active, 'clear() drops the queue');
});

t.test('injector at 8 kHz (an engine that encodes Opus at 8 kHz)', async (t) => {
  const injector = new InbandDtmfInjector({ sampleRate: 8000 });
  injector.enqueue('0', 80);
  injector.enqueue('D', 80);
  const watcher = new InbandDtmfWatcher({ sampleRate: 8000, clockRate: 48000 });
  const got = inject(injector, () => new Int16Array(160)).flatMap((f) => watcher.push(f));
  t.equal(digitsOf(got), '0D');
});

t.test('a DTX gap after a digit ends it at the next packet', async (t) => {
  const injector = new InbandDtmfInjector({ sampleRate: 48000 });
  injector.enqueue('6', 100);
  const toneFrames: Int16Array[] = [];
  while (injector.toneOn) toneFrames.push(injector.nextFrame());
  const silence = new Int16Array(960);

  const watcher = new InbandDtmfWatcher();
  let ts = 0;
  const during: DetectedDigit[] = [];
  for (const f of toneFrames) {
    during.push(...watcher.push(f, ts));
    ts += 960;
  }
  t.same(during, [], 'nothing while the tone lasts');
  // The sender goes quiet (DTX): the next packet comes 400 ms later.
  ts += 960 * 20;
  const after = watcher.push(silence, ts);
  t.equal(digitsOf(after), '6', 'reported with the first packet after the gap');

  // Without timestamps the same single frame is not enough to end the digit; flush() is.
  const blind = new InbandDtmfWatcher();
  for (const f of toneFrames) blind.push(f);
  t.same(blind.push(silence), [], 'one 20 ms frame of silence does not end a digit');
  t.equal(digitsOf(blind.flush()), '6', 'flush() does');
});

t.test('a timestamp jump of a new stream flushes; close() silences', async (t) => {
  const injector = new InbandDtmfInjector();
  injector.enqueue('3', 200);
  const frames: Int16Array[] = [];
  while (injector.toneOn) frames.push(injector.nextFrame());
  const watcher = new InbandDtmfWatcher();
  let ts = 4000000000;
  for (const f of frames.slice(0, 5)) {
    watcher.push(f, ts);
    ts = (ts + 960) >>> 0;
  }
  t.equal(digitsOf(watcher.push(new Int16Array(960), 77)), '3', 'new stream: the digit in progress is reported');

  let events = 0;
  watcher.on('digit', () => events++);
  watcher.close();
  watcher.close();
  t.ok(watcher.closed);
  for (const f of frames) t.same(watcher.push(f), []);
  t.same(watcher.flush(), []);
  t.equal(events, 0, 'no events after close');
});

t.test('timestamps wrap around 2^32 without a false gap', async (t) => {
  const injector = new InbandDtmfInjector();
  injector.enqueue('8', 80);
  injector.enqueue('8', 80);
  const watcher = new InbandDtmfWatcher();
  let ts = 2 ** 32 - 960 * 5;
  const got: DetectedDigit[] = [];
  for (const f of inject(injector)) {
    got.push(...watcher.push(f, ts));
    ts = (ts + 960) >>> 0;
  }
  t.equal(digitsOf(got), '88');
  // A detector fed the same audio without gap logic agrees: the wrap added nothing.
  const plain = new DtmfToneDetector(48000);
  const injector2 = new InbandDtmfInjector();
  injector2.enqueue('8', 80);
  injector2.enqueue('8', 80);
  t.equal(digitsOf(inject(injector2).flatMap((f) => plain.process(f))), '88');
});

t.test('the watcher passes the concealment flag on: a lost packet in a long press is still one digit', async (t) => {
  const injector = new InbandDtmfInjector();
  injector.enqueue('C', 300);
  const frames = inject(injector);
  const wrongPitch = generateTone(1000, 48000, 960, -10);
  const run = (flag: boolean) => {
    const watcher = new InbandDtmfWatcher();
    let ts = 0;
    const got: DetectedDigit[] = [];
    frames.forEach((f, i) => {
      const lost = i === 7;
      got.push(...watcher.push(lost ? wrongPitch : f, ts, flag && lost));
      ts += 960;
    });
    return digitsOf(got);
  };
  t.equal(run(true), 'C');
  t.equal(run(false), 'CC', 'unflagged, the odd frame splits the digit');
});
