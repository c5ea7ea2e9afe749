/**
 * The media thread's side of the boundary: runs the calls' legs and media of one MediaRuntime on the requests of the
 * main thread, and reports their events, their counters and the thread's load. Nothing per packet crosses.
 */
import type { Logger } from 'pino';
import type { CallMediaStats, LoadSignalSource } from '../calls/ports.js';
import { InvalidStateError } from '../core/errors.js';
import type { RtpDropReason } from '../core/rtp.js';
import { eventLoopSource, lateAudioSource, readSources, workerCpuSource } from '../observability/LoadMonitor.js';
import type { MediasoupCallMedia } from '../media/MediasoupCallMedia.js';
import type { PbxNegotiated } from '../media/PbxNegotiation.js';
import type { SrtpKeyMaterial } from '../media/PbxSrtp.js';
import type { WeriftMessengerLeg } from '../messenger/WeriftMessengerLeg.js';
import { preparedStats, type MediaRuntime, type MediaRuntimeMetrics } from './mediaRuntime.js';
import type { MediasoupCensus } from './MediasoupCensus.js';
import type { MainToThread, MediaThreadCountsReport, MediaThreadLoad, ThreadEvent, ThreadInspection, ThreadNotice, ThreadRequest, ThreadToMain } from './protocol.js';
import { toWire } from './wire.js';

/** Where the host posts its replies and events (the thread's parentPort, or a test's channel). */
export interface HostPort {
  postMessage(message: ThreadToMain): void;
}

/** SRTP keys arrive as Uint8Array (structured clone drops Buffer): make them Buffers again. */
function withBufferKeys(negotiated: PbxNegotiated): PbxNegotiated {
  const srtp = negotiated.srtp;
  if (!srtp) return negotiated;
  const material = (key: SrtpKeyMaterial): SrtpKeyMaterial => ({
    ...key,
    masterKey: Buffer.from(key.masterKey),
    masterSalt: Buffer.from(key.masterSalt),
  });
  return { ...negotiated, srtp: { local: material(srtp.local), ...(srtp.remote ? { remote: material(srtp.remote) } : {}) } };
}

/**
 * What the thread's media counts, kept here until the next load report carries it to the main thread (one message per
 * interval: nothing per packet crosses), whose MediaThreadPool adds it to the metrics.
 */
export class MediaThreadCounts implements MediaRuntimeMetrics {
  #counts: MediaThreadCountsReport = { rtpDropped: {}, workerRestarts: 0 };

  rtpDropped(reason: RtpDropReason): void {
    this.#counts.rtpDropped[reason] = (this.#counts.rtpDropped[reason] ?? 0) + 1;
  }

  workerRestarted(): void {
    this.#counts.workerRestarts++;
  }

  /** The counts since the previous call. */
  take(): MediaThreadCountsReport {
    const counts = this.#counts;
    this.#counts = { rtpDropped: {}, workerRestarts: 0 };
    return counts;
  }
}

export interface MediaThreadHostOptions {
  /** How often the load and the calls' counters are reported (ms). */
  statsIntervalMs: number;
  /** The thread's slot, naming its load signals (`media-thread-<index>`). */
  index: number;
  census?: MediasoupCensus;
  /** Where the thread's media counts (given to its MediaRuntime), reported with the load. */
  counts: MediaThreadCounts;
}

export class MediaThreadHost {
  readonly #runtime: MediaRuntime;
  readonly #port: HostPort;
  readonly #log: Logger;
  readonly #legs = new Map<number, WeriftMessengerLeg>();
  readonly #media = new Map<number, MediasoupCallMedia>();
  /** performance.now() at which each call's media was started (its audio flows from then on). */
  readonly #startedAt = new Map<number, number>();
  readonly #census: MediasoupCensus | undefined;
  readonly #timer: NodeJS.Timeout;
  /** This thread's load signals, read as the main thread reads its own. */
  readonly #sources: LoadSignalSource[];
  readonly #counts: MediaThreadCounts;
  #sampledAt = performance.now();
  /** When the interval before the last one began: a call started by then has its audio flowing through the last. */
  #previousSampledAt = performance.now();
  #closed = false;

  constructor(runtime: MediaRuntime, port: HostPort, log: Logger, options: MediaThreadHostOptions) {
    this.#runtime = runtime;
    this.#census = options.census;
    this.#counts = options.counts;
    this.#port = port;
    this.#log = log;
    const name = `media-thread-${options.index}`;
    const workerCpu = workerCpuSource(() => runtime.pool.workers);
    this.#sources = [
      eventLoopSource(name),
      // Worker names are per thread: prefix them so that two threads' workers stay apart.
      { read: (elapsedMs) => workerCpu.read(elapsedMs).map((r) => ({ ...r, source: `${name}/${r.source}` })) },
      lateAudioSource(() => runtime.media.lateAudioDropped, name),
    ];
    this.#timer = setInterval(() => this.#report(), options.statsIntervalMs);
    this.#timer.unref();
    runtime.pool.on('workerDied', ({ pid }) => this.#emit({ ev: 'workerDied', pid }));
    runtime.pool.on('workerRestarted', ({ pid, replacedPid }) => this.#emit({ ev: 'workerRestarted', pid, replacedPid }));
  }

  /** One message from the main thread. Never throws: a failed request is answered with its error. */
  handle(message: MainToThread): void {
    if ('id' in message) {
      const id = message.id;
      this.#request(message).then(
        (value) => this.#port.postMessage({ kind: 'reply', id, ok: true, value }),
        (err: unknown) => this.#port.postMessage({ kind: 'reply', id, ok: false, error: toWire(err) }),
      );
      return;
    }
    try {
      this.#notice(message);
    } catch (err) {
      this.#noticeFailed(message, err);
    }
  }

  /** Close every call's media and leg, then the runtime. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    for (const source of this.#sources) source.close?.();
    for (const media of this.#media.values()) media.close();
    for (const leg of this.#legs.values()) leg.close();
    this.#media.clear();
    this.#startedAt.clear();
    this.#legs.clear();
    this.#runtime.close();
  }

  async #request(message: ThreadRequest): Promise<unknown> {
    if (this.#closed) throw new InvalidStateError('media thread closing');
    switch (message.op) {
      case 'legCreate': {
        const leg = this.#runtime.legs.create({ callId: message.callId, log: this.#log.child(message.bindings) });
        const legId = message.legId;
        this.#legs.set(legId, leg);
        leg.on('connected', () => this.#emit({ ev: 'legConnected', legId }));
        leg.on('failed', (err) => this.#emit({ ev: 'legFailed', legId, error: toWire(err) }));
        leg.on('closed', () => {
          this.#legs.delete(legId);
          this.#emit({ ev: 'legClosed', legId });
        });
        return null;
      }
      case 'legCreateOffer':
        return this.#leg(message.legId).createOffer();
      case 'legApplyAnswer': {
        const leg = this.#leg(message.legId);
        await leg.applyAnswer(message.sdp);
        return { negotiated: leg.negotiated() ?? null };
      }
      case 'legApplyOffer': {
        const leg = this.#leg(message.legId);
        const answer = await leg.applyOffer(message.sdp);
        return { answer, negotiated: leg.negotiated() ?? null };
      }
      case 'mediaCreate': {
        const media = await this.#runtime.media.createMediasoupCallMedia({
          callId: message.callId,
          log: this.#log.child(message.bindings),
          messenger: this.#leg(message.legId),
          codecs: message.codecs,
        });
        const mediaId = message.mediaId;
        this.#media.set(mediaId, media);
        media.on('failed', (err) => this.#emit({ ev: 'mediaFailed', mediaId, error: toWire(err) }));
        media.on('dtmf', (event) => this.#emit({ ev: 'mediaDtmf', mediaId, event }));
        media.on('oneWayAudio', (event) => this.#emit({ ev: 'mediaOneWayAudio', mediaId, event }));
        return { pbxPort: media.pbxPort };
      }
      case 'mediaStats': {
        // Answered before a mediaClose posted after it is handled (messages are handled in order).
        const media = this.#openMedia(message.mediaId);
        if (!media) throw new InvalidStateError(`call media ${message.mediaId} is not open on this media thread`);
        return media.stats();
      }
      case 'inspect':
        return this.#inspect();
    }
  }

  #notice(message: ThreadNotice): void {
    switch (message.op) {
      case 'legClose':
        this.#legs.get(message.legId)?.close();
        return;
      case 'mediaClose': {
        const media = this.#media.get(message.mediaId);
        if (!media) return;
        this.#media.delete(message.mediaId);
        this.#startedAt.delete(message.mediaId);
        media.close();
        return;
      }
      case 'setLatchAcl':
        this.#runtime.setLatchAcl(message.acl);
        return;
      case 'mediaRemote':
        this.#openMedia(message.mediaId)?.applyPbxRemote(withBufferKeys(message.negotiated));
        return;
      case 'mediaStart':
        this.#openMedia(message.mediaId)?.start();
        if (!this.#startedAt.has(message.mediaId)) this.#startedAt.set(message.mediaId, performance.now());
        return;
      case 'mediaStartSending':
        this.#openMedia(message.mediaId)?.startSendingToMessenger();
        return;
      case 'mediaDtmf':
        this.#openMedia(message.mediaId)?.sendDtmfToMessenger(message.event);
        return;
    }
  }

  /** A notice the media could not carry out fails that call's media (the main thread cannot be answered). */
  #noticeFailed(message: ThreadNotice, err: unknown): void {
    if ('mediaId' in message) {
      this.#log.warn({ err, op: message.op }, 'call media request failed');
      this.#emit({ ev: 'mediaFailed', mediaId: message.mediaId, error: toWire(err) });
      const media = this.#media.get(message.mediaId);
      this.#media.delete(message.mediaId);
      this.#startedAt.delete(message.mediaId);
      media?.close();
    } else {
      this.#log.warn({ err, op: message.op }, 'Messenger leg request failed');
    }
  }

  #leg(legId: number): WeriftMessengerLeg {
    const leg = this.#legs.get(legId);
    if (!leg) throw new InvalidStateError(`Messenger leg ${legId} is not open on this media thread`);
    return leg;
  }

  /** The call's media while open; closed media (failed) ignores further notices, as in-process media does. */
  #openMedia(mediaId: number): MediasoupCallMedia | undefined {
    const media = this.#media.get(mediaId);
    return media && !media.closed ? media : undefined;
  }

  async #inspect(): Promise<ThreadInspection> {
    const workers = await Promise.all(
      this.#runtime.pool.workers.map(async (worker) => {
        const dump = (await worker.dump()) as { routerIds: string[] };
        return { pid: worker.pid, routers: dump.routerIds.length };
      }),
    );
    const handles: Record<string, number> = {};
    for (const name of process.getActiveResourcesInfo()) handles[name] = (handles[name] ?? 0) + 1;
    return {
      workers,
      calls: this.#media.size,
      legs: this.#legs.size,
      mediasoupObjects: this.#census?.kinds() ?? {},
      handles,
      prepared: preparedStats(this.#runtime),
    };
  }

  #report(): void {
    const now = performance.now();
    const intervalStart = this.#sampledAt;
    const elapsedMs = now - intervalStart;
    // Media is started when the PBX answers; its audio flows once Meta's side connects, a little later: only calls
    // started an interval before this one began count as wholly in these readings.
    const settledBefore = this.#previousSampledAt;
    this.#previousSampledAt = intervalStart;
    this.#sampledAt = now;
    let carrying = 0;
    for (const [mediaId, at] of this.#startedAt) if (at <= settledBefore && this.#media.get(mediaId)?.closed === false) carrying++;
    const readings = readSources(this.#sources, elapsedMs, this.#log);
    const calls: Array<[number, CallMediaStats]> = [];
    for (const [mediaId, media] of this.#media) if (!media.closed) calls.push([mediaId, media.stats()]);
    const load: MediaThreadLoad = {
      calls: this.#media.size,
      legs: this.#legs.size,
      carrying,
      readings,
      lateDropped: this.#runtime.media.lateAudioDropped,
      counts: this.#counts.take(),
      workerPids: this.#runtime.pool.workers.map((w) => w.pid),
    };
    this.#emit({ ev: 'stats', load, calls });
  }

  #emit(event: ThreadEvent): void {
    if (this.#closed && event.ev !== 'log') return;
    this.#port.postMessage({ kind: 'event', ...event });
  }
}
