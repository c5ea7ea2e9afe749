/**
 * Everything that carries calls' media in one thread: a pool of mediasoup workers, the media engine on it, the
 * Messenger leg factory, and the ICE agents gathered ahead of calls. Built from plain settings (they cross to a media
 * thread as `workerData`), the same way in a media thread and, with `media.threads: 0`, in the main thread.
 */
import type { Logger } from 'pino';
import { createAcl } from '../sip/acl.js';
import { MediaPool } from '../media/MediaPool.js';
import { MediasoupMediaEngine, type MediaMetrics, type PbxRtpOptions } from '../media/MediasoupMediaEngine.js';
import { WorkerPool } from '../media/WorkerPool.js';
import { WeriftMessengerLegFactory } from '../messenger/index.js';
import { closePreparedIce, preparedIceUsable, type PreparedIce } from '../messenger/WeriftMessengerLeg.js';
import type { PreparedStats } from './protocol.js';

/** Plain data (structured-clone safe): what one thread's media needs. */
export interface MediaRuntimeSettings {
  /** mediasoup worker binary; undefined: the environment's MEDIASOUP_WORKER_BIN, else Debian's path. */
  workerBin?: string;
  /** mediasoup workers of this runtime (at least 1). */
  workers: number;
  /** Loopback ports of this runtime's mediasoup workers. */
  internalPorts: { min: number; max: number };
  rtp: Omit<PbxRtpOptions, 'latchAllowed'>;
  /** With comedia, the sources (CIDRs: the SIP ACL) a call's RTP port may latch onto besides the SDP's address. */
  latchAcl: string[];
  /** Busy CPU time added to each audio packet, both ways (µs; `media.simulated_packet_cost_us`). */
  packetCostUs: number;
  /** No audio from one side for this long while the other speaks is one-way audio (ms). */
  oneWayAudioAfterMs: number;
  dtmf: { inbandDetect?: boolean; inbandGenerate?: boolean };
  /** Calls' worth of media and ICE agents made ahead of calls. */
  preparedCalls: number;
  ice: {
    listenIps?: string[];
    announcedIp?: string;
    /** ICE port range of this runtime; undefined: ephemeral ports. */
    portRange?: [number, number];
    iceTimeoutMs: number;
    dtlsTimeoutMs: number;
  };
}

/**
 * What a media runtime counts: the packets its RTP ports drop, and its mediasoup workers replaced after a death. The
 * main thread passes its Metrics; a media thread, the counts it sends with its next load report (MediaThreadCounts).
 */
export interface MediaRuntimeMetrics extends MediaMetrics {
  workerRestarted(): void;
}

export interface MediaRuntime {
  pool: WorkerPool;
  media: MediasoupMediaEngine;
  legs: WeriftMessengerLegFactory;
  /** ICE agents gathered ahead of calls (undefined when `preparedCalls` is 0). */
  preparedIce: MediaPool<PreparedIce> | undefined;
  /** Replace the sources RTP ports may latch onto (a reload of the SIP ACL). */
  setLatchAcl(acl: string[]): void;
  /** Close everything (calls' media, prepared media, workers). Idempotent. */
  close(): void;
}

/** Start the workers and prepare the first calls' media; rejects (closing what was made) when a part fails. */
export async function startMediaRuntime(settings: MediaRuntimeSettings, log: Logger, metrics?: MediaRuntimeMetrics): Promise<MediaRuntime> {
  const pool = await WorkerPool.create({
    ...(settings.workerBin !== undefined ? { workerBin: settings.workerBin } : {}),
    size: Math.max(1, settings.workers),
    rtcMinPort: settings.internalPorts.min,
    rtcMaxPort: settings.internalPorts.max,
    log,
  });
  if (metrics) pool.on('workerRestarted', () => metrics.workerRestarted());
  let media: MediasoupMediaEngine | undefined;
  let preparedIce: MediaPool<PreparedIce> | undefined;
  let latchAcl = createAcl(settings.latchAcl);
  try {
    const prepared = settings.preparedCalls;
    media = new MediasoupMediaEngine({
      pool,
      rtp: { ...settings.rtp, latchAllowed: (address) => latchAcl.allows(address) },
      dtmf: settings.dtmf,
      preparedCalls: prepared,
      packetCostUs: settings.packetCostUs,
      oneWayAudioAfterMs: settings.oneWayAudioAfterMs,
      log,
      ...(metrics ? { metrics } : {}),
    });
    const ice = settings.ice;
    const legs = new WeriftMessengerLegFactory({
      ...(ice.listenIps ? { iceListenIps: ice.listenIps } : {}),
      ...(ice.announcedIp ? { announcedIp: ice.announcedIp } : {}),
      ...(ice.portRange ? { portRange: ice.portRange } : {}),
      iceTimeoutMs: ice.iceTimeoutMs,
      dtlsTimeoutMs: ice.dtlsTimeoutMs,
      takePreparedIce: () => preparedIce?.take(),
      log,
    });
    if (prepared > 0) {
      const iceLog = log.child({ component: 'messenger' });
      preparedIce = new MediaPool<PreparedIce>({
        size: prepared,
        what: 'ICE agent',
        log: iceLog,
        create: () => legs.prepareIce(),
        usable: preparedIceUsable,
        destroy: (agent) => void closePreparedIce(agent).catch((err: unknown) => iceLog.warn({ err }, 'closing a prepared ICE agent failed')),
      });
    }
    // The DTLS certificate and werift's key-exchange tables now, not during the first call; and the media made
    // ahead of calls, so that the first calls find it.
    const [prepareMs] = await Promise.all([legs.prepare(), media.whenPrepared(), preparedIce?.whenReady()]);
    log.debug({ prepareMs, preparedMedia: prepared }, 'Messenger legs prepared');
    const engine = media;
    const iceAgents = preparedIce;
    let closed = false;
    return {
      pool,
      media: engine,
      legs,
      preparedIce: iceAgents,
      setLatchAcl(acl) {
        latchAcl = createAcl(acl);
      },
      close() {
        if (closed) return;
        closed = true;
        iceAgents?.close();
        engine.close();
        pool.close();
      },
    };
  } catch (err) {
    preparedIce?.close();
    media?.close();
    pool.close();
    throw err;
  }
}

/** The runtime's pools of media made ahead of calls, or null when `preparedCalls` is 0. */
export function preparedStats(runtime: MediaRuntime): PreparedStats | null {
  const media = runtime.media.preparedPool;
  return media ? { media: media.stats(), ice: runtime.preparedIce?.stats() ?? null } : null;
}

/** Split [min, max] into `parts` equal slices (slice `index`), or share it whole when it is too narrow to split. */
export function portSlice(range: { min: number; max: number }, index: number, parts: number, minSpan = 16): { min: number; max: number } {
  const span = range.max - range.min + 1;
  if (parts <= 1 || range.min === 0 || span < parts * minSpan) return range;
  const slice = Math.floor(span / parts);
  return { min: range.min + index * slice, max: range.min + (index + 1) * slice - 1 };
}
