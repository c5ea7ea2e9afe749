/**
 * One thread of test/unit/media/opusThreads.test.ts: encodes its own tone to Opus and decodes it back, frame after
 * frame, first alone, then at the same moment as the other thread, and reports the frames that came out different.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { OpusDecoder, OpusEncoder, opusBuild } from '../../../src/media/dsp/opus.js';
import { analyzeTone, generateTone } from '../../../src/media/dsp/tone.js';

export interface OpusThreadJob {
  hz: number;
  dbfs: number;
  frames: number;
  /** Both threads wait on index 0 until the test sets it, so that they code at the same moment. */
  start: SharedArrayBuffer;
}

export interface OpusThreadResult {
  build: string;
  frames: number;
  /** Decoded frames that differ from the same frames coded before the other thread started. */
  wrong: number;
  /** The last decoded frame is the thread's tone at its level (the round trip works at all), and what it measured. */
  toneHeard: boolean;
  tone: string;
  /** The closed encoder and decoder refused to code (rather than code with freed memory). */
  closedRefuse: boolean;
  /** The first wrong frame, for the assertion message. */
  example?: string;
}

const RATE = 8000;
const FRAME = 160;
const job = workerData as OpusThreadJob;
const signal = generateTone(job.hz, RATE, FRAME * job.frames, job.dbfs);

let lastClosed: { encoder: OpusEncoder; decoder: OpusDecoder } | undefined;

/** Whether `code` throws (a closed codec must refuse: its memory in the WebAssembly module is freed). */
function refuses(code: () => unknown): boolean {
  try {
    code();
    return false;
  } catch {
    return true;
  }
}

/** Every frame of `signal` through a new encoder and decoder (closed afterwards): the decoded frames. */
function roundTrip(): Int16Array[] {
  const encoder = new OpusEncoder({ sample_rate: RATE, application: 'voip' });
  encoder.complexity = 3;
  const decoder = new OpusDecoder({ sample_rate: RATE });
  const frames: Int16Array[] = [];
  for (let i = 0; i < job.frames; i++) {
    const packet = Uint8Array.from(encoder.encode(signal.subarray(i * FRAME, (i + 1) * FRAME)));
    const bytes = decoder.decode(packet);
    frames.push(new Int16Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)));
  }
  encoder.close();
  decoder.close();
  lastClosed = { encoder, decoder };
  return frames;
}

// libopus is deterministic: the same frames through a new encoder and decoder give the same samples, in this thread
// and while the other one codes too (unless their outputs cross).
const expected = roundTrip();
const gate = new Int32Array(job.start);
Atomics.add(gate, 1, 1);
Atomics.wait(gate, 0, 0, 5000);
const heard = roundTrip();

const last = expected.at(-1)!;
const tone = analyzeTone(last, RATE, job.hz);
const result: OpusThreadResult = {
  build: opusBuild,
  frames: job.frames,
  wrong: 0,
  tone: `power ratio ${tone.powerRatio.toFixed(2)}, level ${tone.levelDbfs.toFixed(1)} dBFS`,
  toneHeard: tone.detected && Math.abs(tone.levelDbfs - job.dbfs) < 3,
  closedRefuse:
    refuses(() => lastClosed!.encoder.encode(signal.subarray(0, FRAME))) && refuses(() => lastClosed!.decoder.decode(Uint8Array.of(0xf8))),
};
heard.forEach((frame, i) => {
  const reference = expected[i]!;
  if (frame.length === reference.length && frame.every((v, k) => v === reference[k])) return;
  result.wrong++;
  const analysis = analyzeTone(frame, RATE, job.hz);
  result.example ??= `frame ${i}: ${frame.length} samples, power ratio ${analysis.powerRatio.toFixed(2)} at ${job.hz} Hz, level ${analysis.levelDbfs.toFixed(1)} dBFS`;
});
parentPort!.postMessage(result);
