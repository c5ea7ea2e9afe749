/**
 * Opus in media threads: two threads that encode and decode at the same moment each get their own audio back. (The
 * native addon of @evan/opus writes every thread's output into the same process-wide buffers; src/media/dsp/opus.ts
 * keeps worker threads off it. Through the addon in both threads, 2,500 to 3,000 of each thread's 3,000 frames
 * differed, some of them loud and at the other thread's frequency.)
 */
import { readdirSync, readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import t from 'tap';
import { OpusDecoder, OpusEncoder, opusBuild } from '../../../src/media/dsp/opus.js';
import { analyzeTone, generateTone } from '../../../src/media/dsp/tone.js';
import type { OpusThreadJob, OpusThreadResult } from './opusThreadWorker.js';

const FRAMES = 3000;

/** The worker's .ts entry through tsx, registered in the thread first (as MediaThreadPool does). */
function startWorker(job: OpusThreadJob): Worker {
  const entry = new URL('./opusThreadWorker.ts', import.meta.url);
  const code = `import('tsx/esm/api').then((api) => { api.register(); return import(${JSON.stringify(entry.href)}); })`;
  return new Worker(code, { eval: true, workerData: job });
}

function resultOf(worker: Worker): Promise<OpusThreadResult> {
  return new Promise((resolve, reject) => {
    worker.once('message', (result: OpusThreadResult) => resolve(result));
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new Error(`worker exited (${code}) without a result`)));
  });
}

t.test('two media threads coding Opus at the same moment each hear only their own tone', async (t) => {
  const start = new SharedArrayBuffer(8);
  const gate = new Int32Array(start);
  const jobs: OpusThreadJob[] = [
    { hz: 440, dbfs: -12, frames: FRAMES, start },
    { hz: 1000, dbfs: -6, frames: FRAMES, start },
  ];
  const workers = jobs.map(startWorker);
  t.teardown(() => Promise.all(workers.map((w) => w.terminate())));
  const results = workers.map(resultOf);
  // Both threads loaded and waiting: let them go together.
  const deadline = Date.now() + 30_000;
  while (Atomics.load(gate, 1) < workers.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  t.equal(Atomics.load(gate, 1), workers.length, 'both threads ready');
  Atomics.store(gate, 0, 1);
  Atomics.notify(gate, 0);
  const heard = await Promise.all(results);
  heard.forEach((result, i) => {
    t.equal(result.build, 'wasm', `thread ${i} codes with the WebAssembly build (memory of its own)`);
    t.ok(result.closedRefuse, `thread ${i}: a closed encoder and decoder refuse to code (their memory is freed)`);
    t.ok(result.toneHeard, `thread ${i}: ${jobs[i]!.hz} Hz at ${jobs[i]!.dbfs} dBFS survives the round trip (${result.tone})`);
    t.equal(result.wrong, 0, `thread ${i} (${jobs[i]!.hz} Hz): every decoded frame of ${result.frames} is its own, sample for sample (${result.wrong} not)${result.example ? ` (first wrong: ${result.example})` : ''}`);
  });
});

t.test('the main thread codes with the native addon, and a frame survives the round trip', async (t) => {
  t.equal(opusBuild, 'native', 'the addon on the main thread (media.threads: 0 carries calls there)');
  const encoder = new OpusEncoder({ sample_rate: 8000, application: 'voip' });
  encoder.complexity = 3;
  encoder.bitrate = 20_000;
  encoder.dtx = false;
  const decoder = new OpusDecoder({ sample_rate: 8000 });
  const signal = generateTone(1000, 8000, 160 * 20, -6);
  let pcm: Int16Array = new Int16Array(0);
  for (let i = 0; i < 20; i++) {
    const bytes = decoder.decode(Uint8Array.from(encoder.encode(signal.subarray(i * 160, (i + 1) * 160))));
    pcm = new Int16Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  }
  const heard = analyzeTone(pcm, 8000, 1000);
  t.ok(heard.detected && Math.abs(heard.levelDbfs + 6) < 3, `1 kHz at -6 dBFS back (${heard.powerRatio.toFixed(2)}, ${heard.levelDbfs.toFixed(1)} dBFS)`);
});

t.test('no code in src/ but src/media/dsp/opus.ts loads @evan/opus (a media thread would share the addon\'s buffers)', async (t) => {
  const root = new URL('../../../src/', import.meta.url);
  const offenders = readdirSync(root, { recursive: true, encoding: 'utf8' })
    .filter((file) => file.endsWith('.ts') && file !== 'media/dsp/opus.ts')
    .filter((file) => /['"]@evan\/opus/.test(readFileSync(new URL(file, root), 'utf8')));
  t.same(offenders, [], 'Opus comes from src/media/dsp/opus.ts everywhere');
});
