/**
 * A pool of mediasoup workers: least-loaded placement of call routers, replacement of workers that die.
 */
import { accessSync, constants as fsConstants } from 'node:fs';
import os from 'node:os';
import type { Logger } from 'pino';
import type { types as ms } from 'mediasoup';
import { TypedEmitter } from '../core/TypedEmitter.js';
import { InvalidStateError, MediaError } from '../core/errors.js';

/** Where Debian's `mediasoup-worker` package installs the worker binary. */
export const DEFAULT_WORKER_BIN = '/usr/lib/x86_64-linux-gnu/mediasoup/mediasoup-worker';

export interface WorkerPoolOptions {
  log: Logger;
  /** Number of workers. Default: one per core (`os.availableParallelism()`). */
  size?: number;
  /** RTP port range shared by the workers (each worker gets an equal slice when the range is wide enough). */
  rtcMinPort: number;
  rtcMaxPort: number;
  /** Worker binary. Default: `MEDIASOUP_WORKER_BIN` from the environment, else {@link DEFAULT_WORKER_BIN}. */
  workerBin?: string;
  /** mediasoup worker log level. Default 'warn'. */
  logLevel?: ms.WorkerLogLevel;
  /** Attempts to start a replacement for a dead worker before giving up on that slot. Default 5. */
  maxRestartAttempts?: number;
  /** Delay before each replacement attempt (ms). Default 200. */
  restartDelayMs?: number;
}

export interface WorkerPoolEvents {
  /** A worker died; `pid` is the dead process. Its routers are closed by mediasoup. */
  workerDied: [{ pid: number; error: Error }];
  /** A replacement worker is up (for metrics). */
  workerRestarted: [{ pid: number; replacedPid: number }];
  /** A slot could not be refilled after all attempts. */
  workerRestartFailed: [MediaError];
}

interface Slot {
  index: number;
  minPort: number;
  maxPort: number;
  worker?: ms.Worker;
  /** Routers alive on the current worker. */
  load: number;
}

type MediasoupModule = typeof import('mediasoup');

/** The worker binary mediasoup was loaded with by `loadMediasoup` (it is process-wide state in mediasoup). */
let loadedWithBin: string | undefined;

/**
 * Load mediasoup after pointing it at the worker binary (it reads MEDIASOUP_WORKER_BIN when it loads).
 * `workerBin` wins over the environment; default: the environment, else {@link DEFAULT_WORKER_BIN}.
 */
export async function loadMediasoup(workerBin?: string): Promise<MediasoupModule> {
  const bin = workerBin ?? process.env.MEDIASOUP_WORKER_BIN ?? DEFAULT_WORKER_BIN;
  try {
    accessSync(bin, fsConstants.X_OK);
  } catch (err) {
    throw new MediaError(
      'WORKER_BIN_MISSING',
      `mediasoup worker binary not found or not executable at ${bin}; install the Debian package mediasoup-worker ` +
        'or set MEDIASOUP_WORKER_BIN to the binary',
      { cause: err },
    );
  }
  if (loadedWithBin !== undefined && loadedWithBin !== bin) {
    // mediasoup reads the variable once, when it loads: a second path would be silently ignored.
    throw new MediaError('WORKER_BIN_CONFLICT', `mediasoup is already loaded with worker ${loadedWithBin}, not ${bin}`);
  }
  loadedWithBin = bin;
  process.env.MEDIASOUP_WORKER_BIN = bin;
  const mod = (await import('mediasoup')) as Partial<MediasoupModule> & { default?: MediasoupModule };
  return (typeof mod.createWorker === 'function' ? mod : mod.default!) as MediasoupModule;
}

export class WorkerPool extends TypedEmitter<WorkerPoolEvents> {
  readonly #log: Logger;
  readonly #mediasoup: MediasoupModule;
  readonly #slots: Slot[];
  readonly #settings: { logLevel: ms.WorkerLogLevel; maxRestartAttempts: number; restartDelayMs: number };
  readonly #timers = new Set<NodeJS.Timeout>();
  /** Pids of workers that died (not closed by us). */
  readonly #deadPids = new Set<number>();
  #closed = false;

  private constructor(mediasoup: MediasoupModule, options: WorkerPoolOptions, slots: Slot[]) {
    super();
    this.#mediasoup = mediasoup;
    this.#log = options.log.child({ component: 'media.pool' });
    this.#slots = slots;
    this.#settings = {
      logLevel: options.logLevel ?? 'warn',
      maxRestartAttempts: options.maxRestartAttempts ?? 5,
      restartDelayMs: options.restartDelayMs ?? 200,
    };
  }

  /** Start the workers; resolves once all are up, rejects (closing those started) if one fails to start. */
  static async create(options: WorkerPoolOptions): Promise<WorkerPool> {
    const mediasoup = await loadMediasoup(options.workerBin);
    const size = Math.max(1, options.size ?? os.availableParallelism());
    if (!(options.rtcMinPort > 0 && options.rtcMaxPort >= options.rtcMinPort && options.rtcMaxPort <= 65535)) {
      throw new MediaError('CONFIG', `invalid RTP port range ${options.rtcMinPort}-${options.rtcMaxPort}`);
    }
    const span = options.rtcMaxPort - options.rtcMinPort + 1;
    // Slices only when each worker still gets a useful range; otherwise all share it (mediasoup retries busy ports).
    const slice = span >= size * 16 ? Math.floor(span / size) : 0;
    const slots: Slot[] = Array.from({ length: size }, (_, index) => ({
      index,
      minPort: slice ? options.rtcMinPort + index * slice : options.rtcMinPort,
      maxPort: slice ? options.rtcMinPort + (index + 1) * slice - 1 : options.rtcMaxPort,
      load: 0,
    }));
    const pool = new WorkerPool(mediasoup, options, slots);
    try {
      await Promise.all(slots.map((slot) => pool.#startWorker(slot)));
    } catch (err) {
      pool.close();
      throw new MediaError('WORKER_START_FAILED', 'mediasoup worker failed to start', { cause: err });
    }
    pool.#log.info({ workers: size, pids: slots.map((s) => s.worker?.pid) }, 'media workers started');
    return pool;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** At least one worker is alive. */
  get healthy(): boolean {
    return !this.#closed && this.#slots.some((s) => s.worker && !s.worker.closed);
  }

  /** Live workers (for dumps, resource usage and benchmarks). */
  get workers(): ms.Worker[] {
    return this.#slots.flatMap((s) => (s.worker && !s.worker.closed ? [s.worker] : []));
  }

  /** True when `worker` ended by dying rather than by close(). */
  workerDied(worker: ms.Worker): boolean {
    return this.#deadPids.has(worker.pid);
  }

  /**
   * Create a router on the least-loaded live worker. The router counts toward that worker's load until it closes.
   */
  async createRouter(options: ms.RouterOptions): Promise<{ router: ms.Router; worker: ms.Worker }> {
    if (this.#closed) throw new InvalidStateError('worker pool closed');
    const candidates = this.#slots.filter((s) => s.worker && !s.worker.closed);
    if (candidates.length === 0) throw new MediaError('NO_WORKER', 'no live media worker');
    const slot = candidates.reduce((best, s) => (s.load < best.load ? s : best));
    const worker = slot.worker!;
    slot.load++;
    let router: ms.Router;
    try {
      router = await worker.createRouter(options);
    } catch (err) {
      slot.load--;
      throw new MediaError('ROUTER_FAILED', 'createRouter failed', { cause: err });
    }
    router.observer.once('close', () => {
      if (slot.worker === worker) slot.load--;
    });
    return { router, worker };
  }

  /** Close all workers (their routers close with them). Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    for (const slot of this.#slots) {
      slot.worker?.close();
      slot.worker = undefined;
      slot.load = 0;
    }
    this.#log.info('media workers closed');
  }

  async #startWorker(slot: Slot): Promise<ms.Worker> {
    const worker = await this.#mediasoup.createWorker({
      logLevel: this.#settings.logLevel,
      rtcMinPort: slot.minPort,
      rtcMaxPort: slot.maxPort,
    });
    if (this.#closed) {
      worker.close();
      throw new InvalidStateError('worker pool closed');
    }
    slot.worker = worker;
    slot.load = 0;
    worker.on('died', (error: Error) => this.#onDied(slot, worker, error));
    return worker;
  }

  #onDied(slot: Slot, worker: ms.Worker, error: Error): void {
    this.#deadPids.add(worker.pid);
    if (slot.worker === worker) {
      slot.worker = undefined;
      slot.load = 0;
    }
    this.#log.error({ pid: worker.pid, err: error }, 'media worker died');
    this.safeEmit('workerDied', { pid: worker.pid, error });
    if (!this.#closed) this.#scheduleRestart(slot, worker.pid, 1);
  }

  #scheduleRestart(slot: Slot, replacedPid: number, attempt: number): void {
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      if (this.#closed) return;
      this.#startWorker(slot).then(
        (worker) => {
          this.#log.info({ pid: worker.pid, replacedPid, attempt }, 'media worker replaced');
          this.safeEmit('workerRestarted', { pid: worker.pid, replacedPid });
        },
        (err: unknown) => {
          if (this.#closed) return;
          if (attempt >= this.#settings.maxRestartAttempts) {
            const failure = new MediaError('WORKER_RESTART_FAILED', `media worker slot ${slot.index} could not be restarted`, {
              cause: err,
            });
            this.#log.error({ err: failure, attempts: attempt }, 'media worker restart gave up');
            this.safeEmit('workerRestartFailed', failure);
            return;
          }
          this.#log.warn({ err, attempt }, 'media worker restart failed, retrying');
          this.#scheduleRestart(slot, replacedPid, attempt + 1);
        },
      );
    }, this.#settings.restartDelayMs * attempt);
    this.#timers.add(timer);
  }
}
