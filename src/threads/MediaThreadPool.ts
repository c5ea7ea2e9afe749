/**
 * The main thread's side of the media threads: N worker threads, each carrying whole calls (Messenger leg, PBX RTP
 * socket, transcoding, DTMF, its own mediasoup workers). Implements the controller's media and Messenger-leg ports
 * with proxies whose every request crosses as one message with a deadline; a call is placed on the thread carrying
 * the fewest calls. A thread that dies fails its calls' media (the controller ends them: Meta terminate, BYE) and is
 * replaced, as the worker pool replaces a mediasoup worker.
 */
import os from 'node:os';
import { Worker } from 'node:worker_threads';
import { pino, type Logger } from 'pino';
import type { CallMedia, LoadSignalSource, MediaEngine, MediaPlace, MediaPlaces, MessengerLeg, MessengerLegFactory } from '../calls/ports.js';
import { TypedEmitter } from '../core/TypedEmitter.js';
import { InvalidStateError, MediaError, MessengerLegError } from '../core/errors.js';
import type { RtpDropReason } from '../core/rtp.js';
import type { MediaRuntimeSettings } from './mediaRuntime.js';
import { portSlice } from './mediaRuntime.js';
import type {
  MainToThread,
  MediaThreadData,
  MediaThreadLoad,
  ThreadEvent,
  ThreadInspection,
  ThreadNotice,
  ThreadRequest,
  ThreadToMain,
} from './protocol.js';
import { reapProcesses, type ReapResult } from './reapProcesses.js';
import { ThreadCallMedia, ThreadMessengerLeg } from './ThreadProxies.js';
import { fromWire } from './wire.js';

export interface MediaThreadPoolOptions {
  /** Media threads; default one per core (`os.availableParallelism()`). */
  threads?: number;
  /** Settings for all threads together: port ranges are split between threads, mediasoup workers shared out. */
  settings: MediaRuntimeSettings;
  log: Logger;
  /** Deadline of one request to a thread (ms). Default 10000. */
  requestTimeoutMs?: number;
  /** How often each thread reports its load and its calls' counters (ms). Default 1000. */
  statsIntervalMs?: number;
  /** Deadline for a thread to start (its mediasoup workers, certificate, prepared media), ms. Default 60000. */
  startTimeoutMs?: number;
  /** Attempts to start a replacement for a dead thread before giving up on that slot. Default 5. */
  maxRestartAttempts?: number;
  /** Delay before each replacement attempt (ms). Default 200. */
  restartDelayMs?: number;
  /** Where the threads' load, their media's counts and replaced threads are counted (the daemon passes its Metrics). */
  metrics?: MediaThreadMetrics;
}

/** What the media threads count on the main thread: each thread's load report and its counts, threads replaced. */
export interface MediaThreadMetrics {
  rtpDropped(reason: RtpDropReason, count: number): void;
  workerRestarted(count: number): void;
  mediaThreadRestarted(): void;
  mediaThreadLoad(thread: number, load: { calls: number; eventLoopDelayMs: number; lateDropped: number }): void;
}

export interface MediaThreadPoolEvents {
  /** A media thread died (crash or terminate); its calls' media failed. */
  threadDied: [{ index: number; threadId: number; calls: number }];
  /** A replacement thread is up. */
  threadRestarted: [{ index: number; threadId: number }];
  /** A mediasoup worker inside a thread died / was replaced. */
  workerDied: [{ index: number; pid: number }];
  workerRestarted: [{ index: number; pid: number; replacedPid: number }];
  /** A thread ended (died or closed) and its mediasoup workers were killed and collected (`left`: could not be). */
  workersReaped: [{ index: number } & ReapResult];
}

/** One thread's load as the pool last heard it, for admission and monitoring. */
export interface MediaThreadState {
  index: number;
  /** The thread is up and serving. */
  ready: boolean;
  threadId: number;
  /** Legs placed on the thread and not closed (one per call from its first moment). */
  placed: number;
  /** The thread's last load report (undefined before the first). */
  load: MediaThreadLoad | undefined;
}

interface Pending {
  resolve(value: unknown): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

const LEVEL_LABELS = pino.levels.labels;

/**
 * How long (ms) a call admitted onto a thread holds its reservation when its media is never asked for (a call
 * refused later in its set-up); a call's Messenger leg is normally made at once.
 */
const RESERVATION_MS = 10_000;

/**
 * The media thread's entry: the compiled .js next to this file. Run from the TypeScript sources (tests, benches),
 * the .ts entry, through tsx (a dev dependency) registered in the thread first: tsx's own loader does not reach
 * worker threads, and a loader that does (the test runner's) compiles every module again in each thread, slowly.
 */
function threadEntry(): { entry: URL | string; eval: boolean } {
  const here = import.meta.url;
  if (!here.endsWith('.ts')) return { entry: new URL('./mediaThreadMain.js', here), eval: false };
  const entry = new URL('./mediaThreadMain.ts', here);
  const code = `import('tsx/esm/api').then((api) => { api.register(); return import(${JSON.stringify(entry.href)}); })`;
  return { entry: code, eval: true };
}

/** One worker thread and its request/reply and event routing. */
export class MediaThread {
  readonly index: number;
  readonly #worker: Worker;
  readonly #log: Logger;
  readonly #timeoutMs: number;
  readonly #pending = new Map<number, Pending>();
  readonly legs = new Map<number, ThreadMessengerLeg>();
  readonly media = new Map<number, ThreadCallMedia>();
  readonly #onEvent: (thread: MediaThread, event: ThreadEvent) => void;
  #nextId = 1;
  #ready = false;
  #gone = false;
  load: MediaThreadLoad | undefined;
  /** performance.now() of the last load report (of the start, before the first). */
  reportedAt = performance.now();
  workerPids: number[] = [];
  readonly whenReady: Promise<void>;

  constructor(options: {
    index: number;
    data: MediaThreadData;
    log: Logger;
    timeoutMs: number;
    startTimeoutMs: number;
    onEvent: (thread: MediaThread, event: ThreadEvent) => void;
    onExit: (thread: MediaThread, code: number, error: Error | undefined) => void;
  }) {
    this.index = options.index;
    this.#log = options.log;
    this.#timeoutMs = options.timeoutMs;
    this.#onEvent = options.onEvent;
    const { entry, eval: isCode } = threadEntry();
    this.#worker = new Worker(entry, { eval: isCode, workerData: options.data, name: `media-${options.index}` });
    let error: Error | undefined;
    this.whenReady = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new MediaError('THREAD_START', `media thread ${this.index} did not start within ${options.startTimeoutMs} ms`));
        void this.#worker.terminate();
      }, options.startTimeoutMs);
      const settle = (err?: Error): void => {
        clearTimeout(timer);
        if (err) reject(err);
        else resolve();
      };
      this.#worker.on('message', (message: ThreadToMain) => {
        if (message.kind === 'reply') return this.#reply(message);
        if (message.ev === 'ready') {
          this.#ready = true;
          this.workerPids = message.workerPids;
          settle();
          return;
        }
        if (message.ev === 'startFailed') {
          settle(new MediaError('THREAD_START', `media thread ${this.index} could not start: ${message.error.message}`));
          return;
        }
        this.#onEvent(this, message);
      });
      this.#worker.on('error', (err) => {
        error = err;
        this.#log.error({ err, mediaThread: this.index }, 'media thread crashed');
      });
      this.#worker.on('exit', (code) => {
        this.#gone = true;
        this.#ready = false;
        settle(new MediaError('THREAD_START', `media thread ${this.index} exited (code ${code}) before it was ready`));
        const why = new MediaError('THREAD_DIED', `media thread ${this.index} ended (exit code ${code})`);
        for (const pending of this.#pending.values()) {
          clearTimeout(pending.timer);
          pending.reject(why);
        }
        this.#pending.clear();
        options.onExit(this, code, error);
      });
    });
    // The owner waits on whenReady; a rejection nobody awaited yet must not become an unhandled one.
    this.whenReady.catch(() => undefined);
  }

  get threadId(): number {
    return this.#worker.threadId;
  }

  /** Up and serving. */
  get ready(): boolean {
    return this.#ready && !this.#gone;
  }

  get gone(): boolean {
    return this.#gone;
  }

  request<T>(request: ThreadRequest, timeoutMs = this.#timeoutMs): Promise<T> {
    if (!this.ready) return Promise.reject(new MediaError('THREAD_DOWN', `media thread ${this.index} is not running`));
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new MediaError('THREAD_TIMEOUT', `media thread ${this.index} did not answer ${request.op} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, { resolve: resolve as (value: unknown) => void, reject, timer });
      this.#worker.postMessage({ ...request, id } satisfies MainToThread);
    });
  }

  notify(notice: ThreadNotice): void {
    if (this.#gone) return;
    this.#worker.postMessage(notice satisfies MainToThread);
  }

  /** Ask the thread to close its calls and mediasoup workers, then end it (terminated after `graceMs`). */
  async close(graceMs = 2000): Promise<void> {
    if (this.#gone) return;
    const exited = new Promise<void>((resolve) => this.#worker.once('exit', () => resolve()));
    this.#worker.postMessage({ op: 'close' });
    const timer = setTimeout(() => void this.#worker.terminate(), graceMs);
    await exited;
    clearTimeout(timer);
  }

  /** End the thread at once (tests: a thread that dies). */
  terminate(): Promise<number> {
    return this.#worker.terminate();
  }

  #reply(message: Extract<ThreadToMain, { kind: 'reply' }>): void {
    const pending = this.#pending.get(message.id);
    if (!pending) return;
    this.#pending.delete(message.id);
    clearTimeout(pending.timer);
    if (message.ok) pending.resolve(message.value);
    else pending.reject(fromWire(message.error));
  }
}

export class MediaThreadPool extends TypedEmitter<MediaThreadPoolEvents> implements MediaEngine, MessengerLegFactory, MediaPlaces {
  /** Options; `settings` changes with a reload of the SIP ACL (replacement threads start with the current one). */
  #o: Required<Omit<MediaThreadPoolOptions, 'threads' | 'metrics'>> & { threads: number };
  readonly #metrics: MediaThreadMetrics | undefined;
  readonly #log: Logger;
  readonly #slots: Array<MediaThread | undefined>;
  readonly #restartAttempts: number[];
  readonly #timers = new Set<NodeJS.Timeout>();
  /** Dead threads' mediasoup workers being ended. */
  readonly #reaping = new Set<Promise<void>>();
  /** Calls admitted onto a thread whose leg is not made yet, oldest first (performance.now() of each). */
  #reservations: Array<{ index: number; at: number }> = [];
  /** Slot of the thread the last leg was put on. */
  #lastPlaced = -1;
  #nextId = 1;
  #closed = false;

  private constructor(options: MediaThreadPoolOptions, threads: number) {
    super();
    this.#o = {
      threads,
      settings: options.settings,
      log: options.log,
      requestTimeoutMs: options.requestTimeoutMs ?? 10_000,
      statsIntervalMs: options.statsIntervalMs ?? 1000,
      startTimeoutMs: options.startTimeoutMs ?? 60_000,
      maxRestartAttempts: options.maxRestartAttempts ?? 5,
      restartDelayMs: options.restartDelayMs ?? 200,
    };
    this.#metrics = options.metrics;
    this.#log = options.log.child({ component: 'media.threads' });
    this.#slots = new Array<MediaThread | undefined>(threads).fill(undefined);
    this.#restartAttempts = new Array<number>(threads).fill(0);
  }

  /** Start the threads; resolves once all are serving, rejects (ending those started) if one fails to start. */
  static async create(options: MediaThreadPoolOptions): Promise<MediaThreadPool> {
    const threads = Math.max(1, options.threads ?? os.availableParallelism());
    const pool = new MediaThreadPool(options, threads);
    try {
      await Promise.all(pool.#slots.map((_, index) => pool.#start(index)));
    } catch (err) {
      await pool.close();
      throw err;
    }
    pool.#log.info({ threads, mediasoupWorkers: pool.#slots.map((t) => t?.workerPids) }, 'media threads started');
    return pool;
  }

  /** At least one thread serves. */
  get healthy(): boolean {
    return !this.#closed && this.#slots.some((t) => t?.ready);
  }

  get size(): number {
    return this.#slots.length;
  }

  /** Each thread's state and last load report (for admission, metrics and tests). */
  threads(): MediaThreadState[] {
    return this.#slots.map((thread, index) => ({
      index,
      ready: thread?.ready ?? false,
      threadId: thread?.threadId ?? -1,
      placed: thread?.legs.size ?? 0,
      load: thread?.load,
    }));
  }

  // ---- MediaPlaces (admission) ----

  /** Each thread as admission weighs it: what its last report covers, and what was put on it since. */
  places(): MediaPlace[] {
    this.#expireReservations();
    return this.#slots.map((thread, index) => {
      const carrying = thread?.load?.carrying ?? 0;
      const reserved = this.#reservations.filter((r) => r.index === index).length;
      return {
        index,
        source: `media-thread-${index}`,
        ready: thread?.ready ?? false,
        carrying,
        pending: Math.max(0, (thread?.legs.size ?? 0) + reserved - carrying),
      };
    });
  }

  /** The next call's leg goes to thread `index` (admission chose it for its headroom). */
  reserve(index: number): void {
    this.#reservations.push({ index, at: performance.now() });
  }

  #expireReservations(): void {
    const now = performance.now();
    while (this.#reservations.length > 0 && now - this.#reservations[0]!.at > RESERVATION_MS) this.#reservations.shift();
  }

  /** What each running thread holds (mediasoup workers with their routers, calls, legs). */
  async inspect(): Promise<Array<ThreadInspection & { index: number }>> {
    const live = this.#slots.filter((t): t is MediaThread => t?.ready === true);
    return Promise.all(live.map(async (t) => ({ index: t.index, ...(await t.request<ThreadInspection>({ op: 'inspect' })) })));
  }

  /**
   * The media threads' load signals for the daemon's LoadMonitor: each running thread's readings from its last
   * report. A thread whose report is overdue (its event loop is stuck) reads as an event-loop delay of that age.
   */
  loadSource(): LoadSignalSource {
    return {
      read: () => {
        const now = performance.now();
        const overdueMs = this.#o.statsIntervalMs * 3;
        return this.#slots.flatMap((thread) => {
          if (!thread?.ready) return [];
          const age = now - thread.reportedAt;
          if (age > overdueMs) return [{ kind: 'event_loop_delay' as const, source: `media-thread-${thread.index}`, value: age }];
          return thread.load?.readings ?? [];
        });
      },
    };
  }

  /** Replace the sources every thread's RTP ports may latch onto (a reload of the SIP ACL). */
  setLatchAcl(acl: string[]): void {
    this.#o.settings = { ...this.#o.settings, latchAcl: [...acl] };
    for (const thread of this.#slots) thread?.notify({ op: 'setLatchAcl', acl: [...acl] });
  }

  /** End a thread at once, as a crash would (for tests and fault drills). */
  async terminateThread(index: number): Promise<void> {
    await this.#slots[index]?.terminate();
  }

  // ---- MessengerLegFactory ----

  create(options: { callId: string; log: Logger }): MessengerLeg {
    const thread = this.#reserved() ?? this.#leastLoaded();
    if (!thread) throw new MediaError('THREAD_DOWN', 'no media thread is running');
    this.#lastPlaced = thread.index;
    const legId = this.#nextId++;
    const bindings = options.log.bindings();
    const leg = new ThreadMessengerLeg(thread, legId, options.callId);
    thread.legs.set(legId, leg);
    leg.on('closed', () => thread.legs.delete(legId));
    // Requests go in order: the thread makes the leg before any later request for it arrives.
    thread.request({ op: 'legCreate', legId, callId: options.callId, bindings }).catch((err: unknown) => leg.fail(err));
    return leg;
  }

  // ---- MediaEngine ----

  async createCallMedia(options: Parameters<MediaEngine['createCallMedia']>[0]): Promise<CallMedia> {
    if (this.#closed) throw new InvalidStateError('media threads closed');
    const leg = options.messenger;
    if (!(leg instanceof ThreadMessengerLeg)) {
      throw new MediaError('CONFIG', 'the Messenger leg was not made by the media threads: its media cannot be placed');
    }
    if (options.codecs.length === 0) throw new MediaError('CONFIG', 'no codecs configured toward the PBX');
    const thread = leg.thread;
    const mediaId = this.#nextId++;
    const { pbxPort } = await thread.request<{ pbxPort: number }>({
      op: 'mediaCreate',
      mediaId,
      legId: leg.legId,
      callId: options.callId,
      bindings: options.log.bindings(),
      codecs: options.codecs,
    });
    const rtp = this.#o.settings.rtp;
    const media = new ThreadCallMedia({
      thread,
      mediaId,
      leg,
      codecs: options.codecs,
      srtp: options.srtp,
      announcedIp: rtp.announcedIp ?? rtp.listenIp,
      pbxPort,
      log: options.log,
    });
    thread.media.set(mediaId, media);
    media.once('closedLocally', () => thread.media.delete(mediaId));
    if (this.#closed || thread.gone) {
      media.close();
      throw new MediaError('THREAD_DIED', `media thread ${thread.index} ended while the call's media was made`);
    }
    return media;
  }

  /** End every thread (their calls' media closes with them). Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    await Promise.all(this.#slots.map((t) => t?.close()));
    await Promise.all([...this.#reaping]);
    this.#log.debug('media threads closed');
  }

  /** The thread of the oldest reservation still usable (taking it), if any. */
  #reserved(): MediaThread | undefined {
    this.#expireReservations();
    while (this.#reservations.length > 0) {
      const thread = this.#slots[this.#reservations.shift()!.index];
      if (thread?.ready) return thread;
    }
    return undefined;
  }

  /** The thread with the fewest legs; among equals, the next one after the last placed (calls one at a time take turns). */
  #leastLoaded(): MediaThread | undefined {
    let best: MediaThread | undefined;
    const n = this.#slots.length;
    for (let k = 1; k <= n; k++) {
      const thread = this.#slots[(this.#lastPlaced + k) % n];
      if (!thread?.ready) continue;
      if (!best || thread.legs.size < best.legs.size) best = thread;
    }
    return best;
  }

  #threadSettings(index: number): MediaRuntimeSettings {
    const s = this.#o.settings;
    const n = this.#slots.length;
    const ice = s.ice.portRange ? portSlice({ min: s.ice.portRange[0], max: s.ice.portRange[1] }, index, n) : undefined;
    const rtp = portSlice({ min: s.rtp.minPort, max: s.rtp.maxPort }, index, n);
    return {
      ...s,
      workers: Math.max(1, Math.round(s.workers / n)),
      internalPorts: portSlice(s.internalPorts, index, n),
      rtp: { ...s.rtp, minPort: rtp.min, maxPort: rtp.max },
      ice: { ...s.ice, ...(ice ? { portRange: [ice.min, ice.max] as [number, number] } : {}) },
    };
  }

  async #start(index: number): Promise<void> {
    const thread = new MediaThread({
      index,
      data: {
        index,
        settings: this.#threadSettings(index),
        logLevel: this.#o.log.level,
        statsIntervalMs: this.#o.statsIntervalMs,
      },
      log: this.#log,
      timeoutMs: this.#o.requestTimeoutMs,
      startTimeoutMs: this.#o.startTimeoutMs,
      onEvent: (t, event) => this.#onEvent(t, event),
      onExit: (t, code) => this.#onExit(t, code),
    });
    this.#slots[index] = thread;
    await thread.whenReady;
  }

  #onEvent(thread: MediaThread, event: ThreadEvent): void {
    switch (event.ev) {
      case 'log':
        this.#relayLog(thread, event.line);
        return;
      case 'stats':
        thread.load = event.load;
        thread.reportedAt = performance.now();
        thread.workerPids = event.load.workerPids;
        for (const [mediaId, stats] of event.calls) thread.media.get(mediaId)?.updateStats(stats);
        this.#count(thread.index, event.load);
        return;
      case 'legConnected':
        thread.legs.get(event.legId)?.connected();
        return;
      case 'legFailed':
        thread.legs.get(event.legId)?.fail(fromWire(event.error));
        return;
      case 'legClosed':
        thread.legs.get(event.legId)?.closedByThread();
        return;
      case 'mediaFailed':
        thread.media.get(event.mediaId)?.fail(fromWire(event.error));
        return;
      case 'mediaDtmf':
        thread.media.get(event.mediaId)?.dtmf(event.event);
        return;
      case 'mediaOneWayAudio':
        thread.media.get(event.mediaId)?.oneWayAudio(event.event);
        return;
      case 'workerDied':
        this.safeEmit('workerDied', { index: thread.index, pid: event.pid });
        return;
      case 'workerRestarted':
        thread.workerPids = [...thread.workerPids.filter((pid) => pid !== event.replacedPid), event.pid];
        this.safeEmit('workerRestarted', { index: thread.index, pid: event.pid, replacedPid: event.replacedPid });
        return;
      case 'ready':
      case 'startFailed':
        return;
    }
  }

  /** A thread's load report into the metrics: its load gauges, and what its media counted since its last report. */
  #count(index: number, load: MediaThreadLoad): void {
    const metrics = this.#metrics;
    if (!metrics) return;
    const delay = load.readings.find((r) => r.kind === 'event_loop_delay')?.value ?? 0;
    metrics.mediaThreadLoad(index, { calls: load.calls, eventLoopDelayMs: delay, lateDropped: load.lateDropped });
    for (const [reason, count] of Object.entries(load.counts.rtpDropped) as Array<[RtpDropReason, number]>) metrics.rtpDropped(reason, count);
    if (load.counts.workerRestarts > 0) metrics.workerRestarted(load.counts.workerRestarts);
  }

  #relayLog(thread: MediaThread, line: string): void {
    let parsed: Record<string, unknown>;
    try {
      parsed = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    const { level, msg, ...rest } = parsed;
    const label = LEVEL_LABELS[typeof level === 'number' ? level : 30] ?? 'info';
    const log = this.#o.log as unknown as Record<string, (obj: object, msg?: string) => void>;
    log[label]?.call(this.#o.log, { ...rest, mediaThread: thread.index }, typeof msg === 'string' ? msg : undefined);
  }

  /** Kill the mediasoup workers of a thread that ended and collect their exit status (close() waits for it). */
  #reap(thread: MediaThread): void {
    const pids = [...thread.workerPids];
    const reaping = reapProcesses(pids, this.#log).then(
      (result) => {
        const level = result.left.length > 0 ? 'error' : 'info';
        this.#log[level]({ mediaThread: thread.index, ...result }, "media thread's mediasoup workers ended");
        this.safeEmit('workersReaped', { index: thread.index, ...result });
      },
      (err: unknown) => this.#log.error({ err, mediaThread: thread.index, pids }, "media thread's mediasoup workers could not be ended"),
    );
    this.#reaping.add(reaping);
    void reaping.finally(() => this.#reaping.delete(reaping));
  }

  #onExit(thread: MediaThread, code: number): void {
    // The thread's mediasoup workers outlive it (running, or once killed as zombies nobody collects): end them.
    this.#reap(thread);
    if (this.#slots[thread.index] !== thread) return;
    const calls = thread.media.size;
    const why = new MediaError('THREAD_DIED', `media thread ${thread.index} died (exit code ${code})`);
    for (const media of [...thread.media.values()]) media.fail(why);
    for (const leg of [...thread.legs.values()]) leg.fail(new MessengerLegError('closed', why.message));
    if (this.#closed) return;
    this.#log.error({ mediaThread: thread.index, threadId: thread.threadId, exitCode: code, calls }, 'media thread died; replacing it');
    this.safeEmit('threadDied', { index: thread.index, threadId: thread.threadId, calls });
    this.#scheduleRestart(thread.index);
  }

  #scheduleRestart(index: number): void {
    const attempt = ++this.#restartAttempts[index]!;
    if (attempt > this.#o.maxRestartAttempts) {
      this.#log.error({ mediaThread: index, attempts: attempt - 1 }, 'media thread could not be replaced; slot given up');
      return;
    }
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      if (this.#closed) return;
      this.#start(index).then(
        () => {
          this.#restartAttempts[index] = 0;
          const thread = this.#slots[index]!;
          if (this.#closed) {
            void thread.close();
            return;
          }
          this.#log.info({ mediaThread: index, threadId: thread.threadId, mediasoupWorkers: thread.workerPids }, 'media thread replaced');
          this.#metrics?.mediaThreadRestarted();
          this.safeEmit('threadRestarted', { index, threadId: thread.threadId });
        },
        (err: unknown) => {
          this.#log.error({ err, mediaThread: index, attempt }, 'media thread replacement failed');
        },
      );
    }, this.#o.restartDelayMs);
    this.#timers.add(timer);
  }
}
