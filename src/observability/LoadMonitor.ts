/**
 * Reads the bridge's load signals once per sample interval and hands them to whoever decides (calls/Admission).
 *
 * Sources available in every process: this thread's event loop (delay from `perf_hooks.monitorEventLoopDelay`,
 * utilization from `performance.eventLoopUtilization`, time waiting for a CPU from Linux's schedstat), the CPU of the mediasoup worker processes (from
 * `/proc/<pid>/stat`), and late audio dropped by the media path (a counter). Media threads add their own sources
 * with `addSource` (anything implementing LoadSignalSource).
 */
import { readFileSync } from 'node:fs';
import { monitorEventLoopDelay, performance, type EventLoopUtilization, type IntervalHistogram } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { LoadReading, LoadSignalSource } from '../calls/ports.js';

/** Linux's USER_HZ: /proc/<pid>/stat counts CPU time in 1/100 s on every architecture Node supports. */
const CLOCK_TICKS_PER_SECOND = 100;
/** Resolution of the event-loop delay histogram (ms). */
const DELAY_RESOLUTION_MS = 10;

/** This thread's scheduler statistics (Linux: run time, time waiting on a run queue, both ns; timeslices). */
const THREAD_SCHEDSTAT = '/proc/thread-self/schedstat';

/**
 * Time (ns) the calling thread has spent ready to run but waiting for a CPU, from `/proc/thread-self/schedstat`
 * (a synchronous read runs on the calling thread, so each thread reads its own); undefined where there is none.
 */
export function threadCpuWaitNs(read: (path: string) => string = (path) => readFileSync(path, 'latin1')): number | undefined {
  try {
    const waited = Number(read(THREAD_SCHEDSTAT).split(' ')[1]);
    return Number.isFinite(waited) ? waited : undefined;
  } catch {
    return undefined;
  }
}

/**
 * This thread's event loop: delay (90th percentile of how late its timers ran in the sample, beyond the histogram's
 * own resolution) and utilization (share of the sample spent running code); and how long it was ready to run but
 * waited for a CPU (share of the sample). Create and read it on the thread it measures.
 *
 * The wait is what shows a machine that is full as a whole: when other processes (or the bridge's own other
 * threads and workers) want more CPU than there is, a thread handed a packet waits for a core before it runs, so
 * audio is late and then lost while its delay and utilization stay low (the delay histogram's own timer waits as
 * well, and its lateness shows only once every wait adds up to tens of ms).
 */
export function eventLoopSource(source = 'main', cpuWaitNs: () => number | undefined = () => threadCpuWaitNs()): LoadSignalSource {
  let histogram: IntervalHistogram | undefined = monitorEventLoopDelay({ resolution: DELAY_RESOLUTION_MS });
  histogram.enable();
  let last: EventLoopUtilization = performance.eventLoopUtilization();
  let waited = cpuWaitNs();
  let waitedAt = performance.now();
  return {
    read(): LoadReading[] {
      if (!histogram) return [];
      const now = performance.eventLoopUtilization();
      const utilization = performance.eventLoopUtilization(now, last).utilization;
      last = now;
      // The histogram holds the whole time between two timer runs (ns): take the resolution off to keep the lateness.
      const delayMs = histogram.count > 0 ? Math.max(0, histogram.percentile(90) / 1e6 - DELAY_RESOLUTION_MS) : 0;
      histogram.reset();
      const readings: LoadReading[] = [
        { kind: 'event_loop_delay', source, value: delayMs },
        { kind: 'event_loop_utilization', source, value: utilization },
      ];
      const waitedNow = cpuWaitNs();
      const at = performance.now();
      if (waitedNow !== undefined && waited !== undefined && at > waitedAt) {
        readings.push({ kind: 'cpu_wait', source, value: Math.max(0, waitedNow - waited) / 1e6 / (at - waitedAt) });
      }
      waited = waitedNow;
      waitedAt = at;
      return readings;
    },
    close() {
      histogram?.disable();
      histogram = undefined;
    },
  };
}

/** Total CPU time (utime + stime, in clock ticks) of a process, or undefined when it cannot be read. */
export function processCpuTicks(pid: number, read: (path: string) => string = (path) => readFileSync(path, 'latin1')): number | undefined {
  try {
    const stat = read(`/proc/${pid}/stat`);
    // Field 2 (comm) may hold spaces and parentheses: count fields after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    return Number.isFinite(utime) && Number.isFinite(stime) ? utime + stime : undefined;
  } catch {
    return undefined;
  }
}

/**
 * CPU of each mediasoup worker process (share of one core over the sample). `workers` lists the live ones; a
 * worker appears from its second sample (the first only sets its starting point).
 */
export function workerCpuSource(
  workers: () => ReadonlyArray<{ pid: number }>,
  cpuTicks: (pid: number) => number | undefined = (pid) => processCpuTicks(pid),
): LoadSignalSource {
  let previous = new Map<number, number>();
  return {
    read(elapsedMs: number): LoadReading[] {
      const next = new Map<number, number>();
      const readings: LoadReading[] = [];
      workers().forEach((worker, index) => {
        const ticks = cpuTicks(worker.pid);
        if (ticks === undefined) return;
        next.set(worker.pid, ticks);
        const before = previous.get(worker.pid);
        if (before === undefined || elapsedMs <= 0) return;
        const value = (ticks - before) / CLOCK_TICKS_PER_SECOND / (elapsedMs / 1000);
        readings.push({ kind: 'media_worker_cpu', source: `mediasoup-worker-${index}`, value });
      });
      previous = next;
      return readings;
    },
  };
}

/** Late audio packets dropped per second, from a running count (LateAudioTally). */
export function lateAudioSource(dropped: () => number, source = 'all calls'): LoadSignalSource {
  let before = dropped();
  return {
    read(elapsedMs: number): LoadReading[] {
      const now = dropped();
      const value = elapsedMs > 0 ? (Math.max(0, now - before) * 1000) / elapsedMs : 0;
      before = now;
      return [{ kind: 'late_audio', source, value }];
    },
  };
}

/** Every source's readings for the last `elapsedMs`; a source that throws is logged and skipped. */
export function readSources(sources: readonly LoadSignalSource[], elapsedMs: number, log: Logger): LoadReading[] {
  const readings: LoadReading[] = [];
  for (const source of sources) {
    try {
      readings.push(...source.read(elapsedMs));
    } catch (err) {
      log.warn({ err }, 'load signal could not be read');
    }
  }
  return readings;
}

export interface LoadMonitorOptions {
  sources: LoadSignalSource[];
  /** Sample interval (ms). */
  intervalMs: number;
  /** Every sample: all sources' readings and the time they cover. Must not throw. */
  onSample(readings: LoadReading[], elapsedMs: number): void;
  log: Logger;
}

export class LoadMonitor {
  readonly #o: LoadMonitorOptions;
  readonly #sources: LoadSignalSource[];
  readonly #log: Logger;
  #timer: NodeJS.Timeout | undefined;
  #lastAt = performance.now();
  #closed = false;

  constructor(options: LoadMonitorOptions) {
    this.#o = options;
    this.#sources = [...options.sources];
    this.#log = options.log.child({ component: 'load' });
    this.#timer = setInterval(() => this.sample(), options.intervalMs);
    this.#timer.unref();
  }

  /** Watch one more source (a media thread); it is closed with the monitor. */
  addSource(source: LoadSignalSource): void {
    if (this.#closed) {
      source.close?.();
      return;
    }
    this.#sources.push(source);
  }

  /** Stop watching a source (and close it). */
  removeSource(source: LoadSignalSource): void {
    const at = this.#sources.indexOf(source);
    if (at >= 0) this.#sources.splice(at, 1);
    source.close?.();
  }

  /** Read every source now (the timer calls it; tests may too). */
  sample(): void {
    if (this.#closed) return;
    const now = performance.now();
    const elapsedMs = now - this.#lastAt;
    this.#lastAt = now;
    const readings = readSources(this.#sources, elapsedMs, this.#log);
    try {
      this.#o.onSample(readings, elapsedMs);
    } catch (err) {
      this.#log.warn({ err }, 'load sample handling failed');
    }
  }

  /** Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    for (const source of this.#sources) source.close?.();
  }
}
