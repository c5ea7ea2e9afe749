/**
 * The load signal sources: a worker's CPU from /proc/<pid>/stat, late audio per second, this thread's event loop and
 * its wait for a CPU;
 * the monitor hands every source's readings to its sink and survives a source that throws.
 */
import t from 'tap';
import pino from 'pino';
import type { LoadReading } from '../../../src/calls/ports.js';
import { LoadMonitor, eventLoopSource, lateAudioSource, processCpuTicks, threadCpuWaitNs, workerCpuSource } from '../../../src/observability/LoadMonitor.js';

const silent = pino({ level: 'silent' });

t.test('processCpuTicks sums utime and stime, whatever the command name holds', async (t) => {
  // Fields after "(comm)": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
  const stat = '4242 (mediasoup worker) (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1 0 5 0 0';
  t.equal(processCpuTicks(4242, () => stat), 325);
  t.equal(processCpuTicks(4242, () => { throw new Error('ENOENT'); }), undefined, 'a process that is gone');
  t.equal(processCpuTicks(4242, () => 'garbage'), undefined, 'an unreadable line');
  t.type(processCpuTicks(process.pid), 'number', 'this process, from the real /proc');
});

t.test('workerCpuSource: share of a core per worker, from the second sample on', async (t) => {
  const ticks = new Map([[10, 1000], [11, 500]]);
  const source = workerCpuSource(() => [{ pid: 10 }, { pid: 11 }], (pid) => ticks.get(pid));
  t.same(source.read(500), [], 'first sample: starting point only');
  ticks.set(10, 1040); // 40 ticks = 0.4 s of CPU in 0.5 s
  ticks.set(11, 505);
  const readings = source.read(500);
  t.same(
    readings.map((r) => ({ ...r, value: Number(r.value.toFixed(2)) })),
    [
      { kind: 'media_worker_cpu', source: 'mediasoup-worker-0', value: 0.8 },
      { kind: 'media_worker_cpu', source: 'mediasoup-worker-1', value: 0.1 },
    ],
  );
  ticks.delete(11);
  t.equal(source.read(500).length, 1, 'a worker that is gone gives no reading');
});

t.test('lateAudioSource: drops per second since the previous sample', async (t) => {
  let dropped = 7;
  const source = lateAudioSource(() => dropped);
  dropped = 12;
  t.same(source.read(500), [{ kind: 'late_audio', source: 'all calls', value: 10 }]);
  t.same(source.read(500), [{ kind: 'late_audio', source: 'all calls', value: 0 }]);
});

t.test('eventLoopSource: delay (ms), utilization (0-1) and time waiting for a CPU (0-1) of this thread', async (t) => {
  const source = eventLoopSource('main');
  await new Promise((resolve) => setTimeout(resolve, 100));
  const readings = source.read(100);
  const kinds = threadCpuWaitNs() === undefined ? ['event_loop_delay', 'event_loop_utilization'] : ['event_loop_delay', 'event_loop_utilization', 'cpu_wait'];
  t.same(readings.map((r) => r.kind), kinds, `readings: ${readings.map((r) => `${r.kind} ${r.value.toFixed(3)}`).join(', ')}`);
  t.ok(readings.every((r) => r.source === 'main'), 'named after the thread');
  t.ok(readings.every((r) => Number.isFinite(r.value) && r.value >= 0), 'finite, not negative');
  t.ok(readings.filter((r) => r.kind !== 'event_loop_delay').every((r) => r.value <= 1), 'utilization and wait are shares');
  source.close?.();
  source.close?.();
  t.same(source.read(100), [], 'closed: no readings');
});

t.test('eventLoopSource: the wait for a CPU is the growth of schedstat\'s run-queue time over the time between reads', async (t) => {
  let waitedNs: number | undefined = 5e9;
  const source = eventLoopSource('media-thread-0', () => waitedNs);
  const started = performance.now();
  await new Promise((resolve) => setTimeout(resolve, 200));
  waitedNs = 5e9 + 100e6; // 100 ms waited in ~200 ms
  const elapsed = performance.now() - started;
  const wait = source.read(200).find((r) => r.kind === 'cpu_wait');
  t.equal(wait?.source, 'media-thread-0');
  t.ok(wait && Math.abs(wait.value - 100 / elapsed) < 0.05, `about half the time: ${wait?.value.toFixed(3)}`);
  waitedNs = undefined;
  t.notOk(source.read(200).some((r) => r.kind === 'cpu_wait'), 'no schedstat (not Linux): no reading, not a zero');
  source.close?.();
});

t.test('threadCpuWaitNs reads the second field of /proc/thread-self/schedstat', async (t) => {
  t.equal(threadCpuWaitNs((path) => (path === '/proc/thread-self/schedstat' ? '10224771 9333728 6\n' : '')), 9333728);
  t.equal(threadCpuWaitNs(() => { throw new Error('ENOENT'); }), undefined, 'no schedstat');
  t.equal(threadCpuWaitNs(() => 'garbage'), undefined, 'an unreadable line');
});

t.test('LoadMonitor: every source into one sample; a throwing source is logged and skipped; close is idempotent', async (t) => {
  const samples: LoadReading[][] = [];
  let closed = 0;
  const monitor = new LoadMonitor({
    sources: [
      { read: () => [{ kind: 'late_audio', source: 'a', value: 1 }], close: () => void closed++ },
      { read: () => { throw new Error('boom'); } },
    ],
    intervalMs: 60_000,
    onSample: (readings) => samples.push(readings),
    log: silent,
  });
  monitor.addSource({ read: () => [{ kind: 'event_loop_delay', source: 'media-thread-1', value: 3 }] });
  monitor.sample();
  t.same(samples, [[
    { kind: 'late_audio', source: 'a', value: 1 },
    { kind: 'event_loop_delay', source: 'media-thread-1', value: 3 },
  ]]);
  monitor.close();
  monitor.close();
  t.equal(closed, 1, 'sources closed once');
  monitor.sample();
  t.equal(samples.length, 1, 'no sample after close');
});
