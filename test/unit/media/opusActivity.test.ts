/**
 * Audio or silence in Opus passed through undecoded (one-way audio detection), measured on libopus's own output:
 * payload size does not tell silence from sound, the packets' voice activity and silence flags mostly do, and the
 * level of the few packets left in doubt settles the rest.
 */
import { Encoder } from '@evan/opus';
import t from 'tap';
import { OpusAudioJudge, SILK_DECODE_EVERY, opusVoiceFlag } from '../../../src/media/quality/opusActivity.js';

const RATE = 48_000;
const FRAME = 960;

type Signal = (i: number) => number;
const silence: Signal = () => 0;
/** White noise at `db` dBFS RMS (a fixed sequence). */
function noise(db: number): Signal {
  const a = 32768 * 10 ** (db / 20) * Math.sqrt(3);
  let x = 12345;
  return () => {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    return (x / 0x3fffffff - 1) * a;
  };
}
function tone(db: number, hz = 440): Signal {
  const a = 32768 * 10 ** (db / 20) * Math.SQRT2;
  return (i) => a * Math.sin((2 * Math.PI * hz * i) / RATE);
}
/** Voiced syllables (150 Hz and harmonics) of 200 ms, 100 ms pauses. */
function speech(db: number): Signal {
  const a = 32768 * 10 ** (db / 20);
  return (i) => (i % 14_400 < 9600 ? a * [1, 2, 3, 4, 5].reduce((s, k) => s + Math.sin((2 * Math.PI * 150 * k * i) / RATE) / k, 0) : 0);
}

/** 3 s of `signal` through libopus; the packets after the first second (the encoder settled). */
function encode(signal: Signal, o: { bitrate: number; dtx?: boolean; application?: 'voip' | 'audio' }): Uint8Array[] {
  const encoder = new Encoder({ channels: 1, sample_rate: RATE, application: o.application ?? 'voip' });
  encoder.bitrate = o.bitrate;
  encoder.dtx = o.dtx ?? false;
  const packets: Uint8Array[] = [];
  for (let f = 0; f < 150; f++) {
    const pcm = Int16Array.from({ length: FRAME }, (_, i) => Math.max(-32768, Math.min(32767, Math.round(signal(f * FRAME + i)))));
    const packet = Uint8Array.from(encoder.encode(pcm));
    if (f >= 50) packets.push(packet);
  }
  return packets;
}

function judged(packets: Uint8Array[]): { audio: number; decoded: number; of: number } {
  const judge = new OpusAudioJudge();
  const audio = packets.filter((p) => judge.hasAudio(p)).length;
  return { audio, decoded: judge.decoded, of: packets.length };
}

t.test('payload size does not tell: without DTX, silence and quiet noise come out as large as a tone', async (t) => {
  for (const bitrate of [16_000, 20_000, 32_000]) {
    const smallest = (s: Signal) => Math.min(...encode(s, { bitrate }).map((p) => p.length));
    const silent = smallest(silence);
    const quiet = smallest(noise(-60));
    t.ok(silent > 10 && quiet > 10, `${bitrate} b/s: digital silence ${silent} bytes and -60 dBFS noise ${quiet} bytes at the least (a "more than 10 bytes is audio" rule takes both for audio)`);
  }
  const dtx = encode(silence, { bitrate: 20_000, dtx: true });
  t.ok(dtx.filter((p) => p.length <= 2).length > 80, 'with DTX, silence is 1-2 byte frames');
});

t.test('SILK (the speech modes): silence and quiet noise are silent, speech and a steady tone are audio; few packets decoded', async (t) => {
  for (const dtx of [false, true]) {
    const silent = judged(encode(silence, { bitrate: 20_000, dtx }));
    t.equal(silent.audio, 0, `digital silence, dtx ${dtx}: silent`);
    const quiet = judged(encode(noise(-60), { bitrate: 20_000, dtx }));
    t.equal(quiet.audio, 0, `noise at -60 dBFS, dtx ${dtx}: silent (${quiet.decoded} of ${quiet.of} decoded to tell)`);
    const voice = judged(encode(speech(-30), { bitrate: 20_000, dtx }));
    t.ok(voice.audio >= 60, `speech at -30 dBFS, dtx ${dtx}: its syllables are audio (${voice.audio} of ${voice.of})`);
    t.ok(voice.decoded < voice.of / 2, `most speech packets judged by their voice flag, not decoded (${voice.decoded} decoded)`);
  }
  const steady = encode(tone(-20), { bitrate: 20_000 });
  t.ok(steady.every((p) => opusVoiceFlag(p) !== true), "SILK's voice detector takes a steady 440 Hz tone for no voice");
  const steadyJudged = judged(steady);
  t.equal(steadyJudged.audio, steady.length, 'the tone is audio all the same: its level decides');
  t.ok(
    steadyJudged.decoded <= Math.ceil(steady.length / SILK_DECODE_EVERY),
    `a stream whose every packet is in doubt costs one decode in ${SILK_DECODE_EVERY} packets (${steadyJudged.decoded} of ${steady.length})`,
  );
  const dtxSilence = judged(encode(silence, { bitrate: 20_000, dtx: true }));
  t.ok(dtxSilence.decoded <= 5, `DTX silence needs (almost) no decoding (${dtxSilence.decoded})`);
});

t.test('CELT (music mode): digital silence by its flag, quiet noise by its level, a tone is audio', async (t) => {
  const celt = { bitrate: 64_000, application: 'audio' as const };
  const silent = encode(silence, celt);
  t.ok(silent.every((p) => p[0]! >> 3 >= 16), 'CELT packets (TOC config 16-31)');
  t.same(judged(silent), { audio: 0, decoded: 0, of: 100 }, 'digital silence: silent by its flag, nothing decoded');
  t.equal(judged(encode(noise(-60), celt)).audio, 0, 'noise at -60 dBFS: silent');
  t.equal(judged(encode(tone(-20), celt)).audio, 100, 'a tone at -20 dBFS: audio');
});

t.test('malformed or empty packets are silent, never a throw', async (t) => {
  const judge = new OpusAudioJudge();
  for (const p of [new Uint8Array(0), Uint8Array.of(0x4b), Uint8Array.of(0x4b, 0x01), Uint8Array.of(0x4e, 0xff, 0xff, 0x01), Uint8Array.of(0x4f, 0x00, 0x01)]) {
    t.equal(judge.hasAudio(p), false, `[${[...p].join(', ')}]`);
  }
});
