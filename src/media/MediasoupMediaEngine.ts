/**
 * The media engine: one mediasoup router per call on the least-loaded worker of a WorkerPool.
 *
 * With `preparedCalls` > 0 it keeps that many calls' worth of media ready (router, PBX-side PlainTransport connected
 * to its RTP socket), so that a call's set-up does not wait for the worker's round trips.
 */
import type { Bindings, ChildLoggerOptions, Logger } from 'pino';
import type { types as ms } from 'mediasoup';
import type { CallMedia, MediaEngine, MessengerLeg, PbxCodecName, SrtpMode } from '../calls/ports.js';
import { InvalidStateError, MediaError } from '../core/errors.js';
import { FrameClock } from './FrameClock.js';
import type { LateAudioTally } from './LateAudioGuard.js';
import type { CallMediaDtmfOptions } from './MediasoupCallMedia.js';
import { MediasoupCallMedia, ROUTER_MEDIA_CODECS, carriesRtp } from './MediasoupCallMedia.js';
import { MediaPool } from './MediaPool.js';
import { PbxRtpSocket, type RtpDropMetrics } from './PbxRtpSocket.js';
import type { WorkerPool } from './WorkerPool.js';

export interface PbxRtpOptions {
  /** Local address for the PBX-facing RTP sockets (e.g. '0.0.0.0' or one interface). */
  listenIp: string;
  /** Address written into SDP toward the PBX. Default: `listenIp` (must then not be a wildcard). */
  announcedIp?: string;
  /** RTP port range toward the PBX; `minPort` 0 takes ephemeral ports. */
  minPort: number;
  maxPort: number;
  /** Symmetric RTP: send to where the PBX's packets come from, once one arrived. */
  comedia: boolean;
  /** With comedia, sources besides the SDP's address a call's RTP port may latch onto (the SIP ACL). Default: none. */
  latchAllowed?: (address: string) => boolean;
}

/**
 * What the media engine counts: packets its PBX-facing RTP ports drop (not from the PBX, before its SDP, malformed,
 * failing SRTP), by reason. The daemon passes its Metrics; a media thread, the counts it reports with its load.
 */
export type MediaMetrics = RtpDropMetrics;

export interface MediasoupMediaEngineOptions {
  pool: WorkerPool;
  rtp: PbxRtpOptions;
  /**
   * DTMF options, used only when Meta has no telephone-event. Default: in-band generation on, in-band detection
   * 'auto' (on when the PBX leg is G.711).
   */
  dtmf?: Partial<CallMediaDtmfOptions>;
  /** Opus encoder complexity for transcoded calls (0-10). Default 3. */
  opusComplexity?: number;
  /**
   * Calls' worth of media kept ready ahead of calls (router, transports, PBX RTP socket), replenished in the
   * background; 0 makes every call's media when the call asks for it. Default 0.
   */
  preparedCalls?: number;
  /** Busy CPU time added to each audio packet, both ways (µs): gives tests a small, real capacity. Default 0. */
  packetCostUs?: number;
  /** One-way audio after this long without audio from one side while the other speaks (ms); 0 = off. Default 10000. */
  oneWayAudioAfterMs?: number;
  log: Logger;
  metrics?: MediaMetrics;
}

/** The mediasoup objects and RTP socket of one call, before they are given to its MediasoupCallMedia. */
interface PreparedMedia {
  router: ms.Router;
  worker: ms.Worker;
  plain: ms.PlainTransport;
  socket: PbxRtpSocket;
  /** Give the socket's log lines the call's bindings (made before the call: they lack its call id). */
  adoptLog(callLog: Logger): void;
}

/**
 * A logger for an object made before its call is known: the children it creates get the call's bindings once the
 * call adopts the object.
 */
function adoptableLog(base: Logger): { log: Logger; adopt(callLog: Logger): void } {
  const children: Logger[] = [];
  const child = (bindings: Bindings, options?: ChildLoggerOptions): Logger => {
    const created: Logger = base.child(bindings, options);
    children.push(created);
    return created;
  };
  const log = Object.create(base, { child: { value: child } }) as Logger;
  return {
    log,
    adopt(callLog) {
      const bindings = callLog.bindings();
      for (const c of children) {
        const own = c.bindings();
        c.setBindings(Object.fromEntries(Object.entries(bindings).filter(([key]) => !(key in own))));
      }
    },
  };
}

export class MediasoupMediaEngine implements MediaEngine {
  readonly #o: MediasoupMediaEngineOptions;
  readonly #log: Logger;
  readonly #calls = new Set<MediasoupCallMedia>();
  readonly #announcedIp: string;
  /** Media made ahead of calls; undefined when `preparedCalls` is 0. */
  readonly #prepared: MediaPool<PreparedMedia> | undefined;
  /** Open calls per worker (pid), to place a call from the pool on the worker carrying the fewest. */
  readonly #callsPerWorker = new Map<number, number>();
  /** Drops and replaces prepared media after a worker death or restart; removed on close. */
  readonly #pruneOnWorkerChange = (): void => this.#prepared?.prune();
  /** Late audio packets dropped by every call of this engine (a load signal). */
  readonly #lateAudio: LateAudioTally = { dropped: 0 };
  /** One 20 ms clock for every call's silence filler toward Meta, rather than an interval per call. */
  readonly #frameClock: FrameClock;
  #closed = false;

  constructor(options: MediasoupMediaEngineOptions) {
    this.#o = options;
    this.#log = options.log.child({ component: 'media' });
    this.#announcedIp = options.rtp.announcedIp ?? options.rtp.listenIp;
    this.#frameClock = new FrameClock(20, (err) => this.#log.warn({ err }, 'a stream toward Meta failed on its tick'));
    if (this.#announcedIp === '0.0.0.0' || this.#announcedIp === '::') {
      throw new MediaError('CONFIG', 'rtp.announcedIp is required when rtp.listenIp is a wildcard address');
    }
    const size = options.preparedCalls ?? 0;
    if (size > 0) {
      const prepared = new MediaPool<PreparedMedia>({
        size,
        what: 'call media',
        log: this.#log,
        create: () => {
          const { log, adopt } = adoptableLog(this.#log);
          return this.#makeMedia(log, adopt);
        },
        destroy: (item) => {
          item.socket.close();
          item.router.close();
        },
        usable: (item) => !item.router.closed && !item.plain.closed && !item.socket.closed,
      });
      this.#prepared = prepared;
      // mediasoup has closed a dead worker's routers by the time the pool reports it: drop those, make new ones.
      options.pool.on('workerDied', this.#pruneOnWorkerChange);
      options.pool.on('workerRestarted', this.#pruneOnWorkerChange);
    }
  }

  get healthy(): boolean {
    return !this.#closed && this.#o.pool.healthy;
  }

  /** Calls whose media is open. */
  get activeCalls(): number {
    return this.#calls.size;
  }

  /** Audio packets dropped for arriving too late (LateAudioGuard), all calls since start: the bridge fell behind. */
  get lateAudioDropped(): number {
    return this.#lateAudio.dropped;
  }

  /** The pool of media made ahead of calls (undefined when `preparedCalls` is 0), for monitoring and tests. */
  get preparedPool(): MediaPool<unknown> | undefined {
    return this.#prepared;
  }

  /**
   * Resolves once the media made ahead of calls is ready (at once when there is none), or as soon as making it
   * failed: start-up waits on it so that the first calls find it.
   */
  whenPrepared(): Promise<void> {
    return this.#prepared?.whenReady() ?? Promise.resolve();
  }

  async createCallMedia(options: {
    callId: string;
    log: Logger;
    messenger: MessengerLeg;
    codecs: PbxCodecName[];
    srtp?: SrtpMode;
  }): Promise<CallMedia> {
    return this.createMediasoupCallMedia(options);
  }

  /** Like `createCallMedia`, typed with the implementation (router access for tests and monitoring). */
  async createMediasoupCallMedia(options: {
    callId: string;
    log: Logger;
    messenger: MessengerLeg;
    codecs: PbxCodecName[];
    srtp?: SrtpMode;
  }): Promise<MediasoupCallMedia> {
    if (this.#closed) throw new InvalidStateError('media engine closed');
    if (options.codecs.length === 0) throw new MediaError('CONFIG', 'no codecs configured toward the PBX');
    const messenger = options.messenger;
    if (!carriesRtp(messenger)) {
      throw new MediaError('CONFIG', 'the Messenger leg carries no audio here: a call\'s leg and media must live on one thread');
    }
    const log = options.log.child({ component: 'media' });
    const ready = this.#prepared?.take((items) => this.#leastBusy(items));
    let parts: PreparedMedia;
    if (ready) {
      ready.adoptLog(log);
      parts = ready;
    } else {
      parts = await this.#makeMedia(log);
      if (this.#closed) {
        parts.socket.close();
        parts.router.close();
        throw new InvalidStateError('media engine closed');
      }
    }
    const { router, worker, plain, socket } = parts;
    try {
      const callId = options.callId;
      const media = new MediasoupCallMedia({
        callId,
        log,
        messenger,
        codecs: options.codecs,
        ...(options.srtp ? { srtp: options.srtp } : {}),
        router,
        worker,
        plain,
        socket,
        announcedIp: this.#announcedIp,
        dtmf: {
          inbandDetect: this.#o.dtmf?.inbandDetect ?? 'auto',
          inbandGenerate: this.#o.dtmf?.inbandGenerate ?? true,
        },
        encoderComplexity: this.#o.opusComplexity,
        lateAudio: this.#lateAudio,
        packetCostUs: this.#o.packetCostUs,
        frameClock: this.#frameClock,
        ...(this.#o.oneWayAudioAfterMs !== undefined ? { oneWayAudioAfterMs: this.#o.oneWayAudioAfterMs } : {}),
        workerDied: (w) => this.#o.pool.workerDied(w),
        onClose: () => {
          this.#calls.delete(media);
          const left = (this.#callsPerWorker.get(worker.pid) ?? 1) - 1;
          if (left > 0) this.#callsPerWorker.set(worker.pid, left);
          else this.#callsPerWorker.delete(worker.pid);
        },
      });
      this.#calls.add(media);
      this.#callsPerWorker.set(worker.pid, (this.#callsPerWorker.get(worker.pid) ?? 0) + 1);
      log.debug({ workerPid: worker.pid, pbxRtpPort: socket.port, prepared: ready !== undefined }, 'call media created');
      return media;
    } catch (err) {
      socket.close();
      router.close();
      throw err instanceof MediaError ? err : new MediaError('CREATE_FAILED', 'could not create call media', { cause: err });
    }
  }

  /**
   * A router on the least-loaded worker with the PlainTransport connected to a new PBX RTP socket's loopback side.
   * The transport and the socket are made at the same time (one wait instead of two).
   */
  async #makeMedia(log: Logger, adoptLog: (callLog: Logger) => void = () => undefined): Promise<PreparedMedia> {
    const { router, worker } = await this.#o.pool.createRouter({ mediaCodecs: ROUTER_MEDIA_CODECS });
    let socket: PbxRtpSocket | undefined;
    try {
      const [plainResult, socketResult] = await Promise.allSettled([
        router.createPlainTransport({ listenIp: { ip: '127.0.0.1' }, rtcpMux: true, comedia: false }),
        PbxRtpSocket.create({
          log,
          listenIp: this.#o.rtp.listenIp,
          minPort: this.#o.rtp.minPort,
          maxPort: this.#o.rtp.maxPort,
          comedia: this.#o.rtp.comedia,
          ...(this.#o.rtp.latchAllowed ? { latchAllowed: this.#o.rtp.latchAllowed } : {}),
          ...(this.#o.metrics ? { metrics: this.#o.metrics } : {}),
          lateAudio: this.#lateAudio,
        }),
      ]);
      if (socketResult.status === 'fulfilled') socket = socketResult.value;
      for (const result of [plainResult, socketResult]) if (result.status === 'rejected') throw result.reason;
      const plain = (plainResult as PromiseFulfilledResult<ms.PlainTransport>).value;
      await plain.connect({ ip: '127.0.0.1', port: socket!.innerPort });
      socket!.setMediasoupPort(plain.tuple.localPort);
      return { router, worker, plain, socket: socket!, adoptLog };
    } catch (err) {
      socket?.close();
      router.close();
      throw err instanceof MediaError ? err : new MediaError('CREATE_FAILED', 'could not create call media', { cause: err });
    }
  }

  /** Index of the item on the worker carrying the fewest open calls (the oldest among equals). */
  #leastBusy(items: readonly PreparedMedia[]): number {
    let best = 0;
    let bestCalls = Infinity;
    items.forEach((item, i) => {
      const calls = this.#callsPerWorker.get(item.worker.pid) ?? 0;
      if (calls < bestCalls) {
        best = i;
        bestCalls = calls;
      }
    });
    return best;
  }

  /** Close every call's media and the media made ahead of calls (the worker pool is closed by its owner). Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#o.pool.off('workerDied', this.#pruneOnWorkerChange);
    this.#o.pool.off('workerRestarted', this.#pruneOnWorkerChange);
    this.#prepared?.close();
    for (const media of [...this.#calls]) media.close();
    this.#log.debug('media engine closed');
  }
}
