/**
 * The media engine: one mediasoup router per call on the least-loaded worker of a WorkerPool.
 */
import type { Logger } from 'pino';
import type { types as ms } from 'mediasoup';
import type { CallMedia, MediaEngine, MessengerLeg, PbxCodecName } from '../calls/ports.js';
import { InvalidStateError, MediaError } from '../core/errors.js';
import type { CallMediaDtmfOptions } from './MediasoupCallMedia.js';
import { MediasoupCallMedia, ROUTER_MEDIA_CODECS } from './MediasoupCallMedia.js';
import { PbxRtpSocket } from './PbxRtpSocket.js';
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
}

/** Optional callbacks for metrics. They must not throw. */
export interface MediaEngineHooks {
  callMediaCreated?(info: { callId: string; workerPid: number }): void;
  callMediaClosed?(info: { callId: string }): void;
  callMediaFailed?(info: { callId: string; code: string }): void;
  dtmf?(info: { callId: string; direction: 'to_pbx' | 'to_messenger'; digit: string }): void;
  workerRestarted?(info: { pid: number; replacedPid: number }): void;
  workerDied?(info: { pid: number }): void;
}

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
  log: Logger;
  hooks?: MediaEngineHooks;
}

export class MediasoupMediaEngine implements MediaEngine {
  readonly #o: MediasoupMediaEngineOptions;
  readonly #log: Logger;
  readonly #calls = new Set<MediasoupCallMedia>();
  readonly #announcedIp: string;
  #closed = false;

  constructor(options: MediasoupMediaEngineOptions) {
    this.#o = options;
    this.#log = options.log.child({ component: 'media' });
    this.#announcedIp = options.rtp.announcedIp ?? options.rtp.listenIp;
    if (this.#announcedIp === '0.0.0.0' || this.#announcedIp === '::') {
      throw new MediaError('CONFIG', 'rtp.announcedIp is required when rtp.listenIp is a wildcard address');
    }
    const hooks = options.hooks;
    if (hooks?.workerRestarted) options.pool.on('workerRestarted', (info) => hooks.workerRestarted?.(info));
    if (hooks?.workerDied) options.pool.on('workerDied', ({ pid }) => hooks.workerDied?.({ pid }));
  }

  get healthy(): boolean {
    return !this.#closed && this.#o.pool.healthy;
  }

  /** Calls whose media is open. */
  get activeCalls(): number {
    return this.#calls.size;
  }

  async createCallMedia(options: {
    callId: string;
    log: Logger;
    messenger: MessengerLeg;
    codecs: PbxCodecName[];
  }): Promise<CallMedia> {
    return this.createMediasoupCallMedia(options);
  }

  /** Like `createCallMedia`, typed with the implementation (router access for tests and monitoring). */
  async createMediasoupCallMedia(options: {
    callId: string;
    log: Logger;
    messenger: MessengerLeg;
    codecs: PbxCodecName[];
  }): Promise<MediasoupCallMedia> {
    if (this.#closed) throw new InvalidStateError('media engine closed');
    if (options.codecs.length === 0) throw new MediaError('CONFIG', 'no codecs configured toward the PBX');
    const log = options.log.child({ component: 'media' });
    const { router, worker } = await this.#o.pool.createRouter({ mediaCodecs: ROUTER_MEDIA_CODECS });
    let plain: ms.PlainTransport | undefined;
    let socket: PbxRtpSocket | undefined;
    try {
      plain = await router.createPlainTransport({ listenIp: { ip: '127.0.0.1' }, rtcpMux: true, comedia: false });
      const direct = await router.createDirectTransport();
      socket = await PbxRtpSocket.create({
        log,
        listenIp: this.#o.rtp.listenIp,
        minPort: this.#o.rtp.minPort,
        maxPort: this.#o.rtp.maxPort,
        comedia: this.#o.rtp.comedia,
      });
      await plain.connect({ ip: '127.0.0.1', port: socket.innerPort });
      socket.setMediasoupPort(plain.tuple.localPort);
      const callId = options.callId;
      const media = new MediasoupCallMedia({
        callId,
        log,
        messenger: options.messenger,
        codecs: options.codecs,
        router,
        worker,
        plain,
        direct,
        socket,
        announcedIp: this.#announcedIp,
        dtmf: {
          inbandDetect: this.#o.dtmf?.inbandDetect ?? 'auto',
          inbandGenerate: this.#o.dtmf?.inbandGenerate ?? true,
        },
        encoderComplexity: this.#o.opusComplexity,
        workerDied: (w) => this.#o.pool.workerDied(w),
        onClose: () => {
          this.#calls.delete(media);
          this.#o.hooks?.callMediaClosed?.({ callId });
        },
      });
      media.on('failed', (err) => this.#o.hooks?.callMediaFailed?.({ callId, code: err.code }));
      media.on('dtmf', (e) => this.#o.hooks?.dtmf?.({ callId, direction: e.direction, digit: e.digit }));
      this.#calls.add(media);
      this.#o.hooks?.callMediaCreated?.({ callId, workerPid: worker.pid });
      log.debug({ workerPid: worker.pid, pbxRtpPort: socket.port }, 'call media created');
      return media;
    } catch (err) {
      socket?.close();
      router.close();
      throw err instanceof MediaError ? err : new MediaError('CREATE_FAILED', 'could not create call media', { cause: err });
    }
  }

  /** Close every call's media (the pool is closed by its owner). Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const media of [...this.#calls]) media.close();
    this.#log.debug('media engine closed');
  }
}
