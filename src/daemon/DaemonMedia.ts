/**
 * Where the daemon's calls' media runs, from `media.threads`: on media threads (MediaThreadPool, the default: one per
 * core), or with 0 in the main thread (the MediaRuntime the threads each run, built here directly). Either way the
 * controller gets the same two ports.
 */
import os from 'node:os';
import type { Logger } from 'pino';
import type { LoadSignalSource, MediaEngine, MessengerLegFactory } from '../calls/ports.js';
import { lateAudioSource, workerCpuSource } from '../observability/LoadMonitor.js';
import type { Config } from '../config/index.js';
import type { Metrics } from '../observability/index.js';
import type { MediaPoolStats } from '../media/MediaPool.js';
import { preparedStats, startMediaRuntime, type MediaRuntime, type MediaRuntimeSettings } from '../threads/mediaRuntime.js';
import type { PreparedStats } from '../threads/protocol.js';
import { MediasoupCensus } from '../threads/MediasoupCensus.js';
import { MediaThreadPool } from '../threads/MediaThreadPool.js';

/** A mediasoup worker as the daemon reports it (for monitoring and tests). */
export interface MediasoupWorkerInfo {
  pid: number;
  /** Routers alive on it (one per call). */
  routers: number;
  /** The media thread it belongs to; undefined with `media.threads: 0`. */
  thread?: number;
}

export interface MediaInspection {
  /** The mediasoup workers and their routers. */
  workers: MediasoupWorkerInfo[];
  /** Live mediasoup objects by class (Router, PlainTransport, Producer ...). */
  mediasoupObjects: Record<string, number>;
  /** libuv handles the media threads hold open, by type (UDPWrap ...); empty with `media.threads: 0`, whose are the process's own. */
  threadHandles: Record<string, number>;
  /**
   * Media made ahead of calls (`calls.prepared_media`), all threads together: one router per ready item, which the
   * workers' routers include. Undefined without prepared media.
   */
  prepared: { media: MediaPoolStats; ice: MediaPoolStats | null; byThread: Array<PreparedStats & { thread?: number }> } | undefined;
}

export interface DaemonMedia {
  readonly engine: MediaEngine;
  readonly legs: MessengerLegFactory;
  /** Media can be carried (a thread, or the in-process worker pool, is up). */
  readonly healthy: boolean;
  /** The media threads; undefined with `media.threads: 0`. */
  readonly threads: MediaThreadPool | undefined;
  /** The media in the main thread (`media.threads: 0`); undefined with threads. */
  readonly local: MediaRuntime | undefined;
  /** What the media holds, wherever it runs (monitoring, leak tests). */
  inspect(): Promise<MediaInspection>;
  /** Load signals of the media for admission (the main thread's own event loop is read by the daemon). */
  loadSources(): LoadSignalSource[];
  /** Replace the sources RTP ports may latch onto with comedia (a reload of the SIP ACL). */
  setLatchAcl(acl: string[]): void;
  /** Idempotent. */
  close(): Promise<void>;
}

/** The media settings of the whole daemon (the thread pool splits port ranges and workers between its threads). */
export function mediaRuntimeSettings(config: Config, threads: number): MediaRuntimeSettings {
  const ice = config.messenger.ice;
  const listen = (Array.isArray(ice.listen_ip) ? ice.listen_ip : [ice.listen_ip]).filter((ip) => ip !== '0.0.0.0' && ip !== '::');
  const { inband_detect: detect, inband_generate: generate } = config.media.dtmf;
  const workers = config.media.workers > 0 ? config.media.workers : threads > 0 ? threads : os.availableParallelism();
  return {
    workerBin: config.media.worker_bin,
    workers,
    internalPorts: { min: config.media.internal_ports.min_port, max: config.media.internal_ports.max_port },
    rtp: {
      listenIp: config.media.rtp.listen_ip,
      ...(config.media.rtp.announced_ip ? { announcedIp: config.media.rtp.announced_ip } : {}),
      minPort: config.media.rtp.min_port,
      maxPort: config.media.rtp.max_port,
      comedia: config.media.rtp.comedia,
    },
    // `auto` leaves the engine's default: detection on for a G.711 PBX when Meta has no telephone-event; tones on.
    dtmf: {
      ...(detect === 'auto' ? {} : { inbandDetect: detect }),
      ...(generate === 'auto' ? {} : { inbandGenerate: generate }),
    },
    preparedCalls: config.calls.prepared_media,
    latchAcl: [...config.sip.acl],
    packetCostUs: config.media.simulated_packet_cost_us,
    oneWayAudioAfterMs: config.calls.quality.one_way_audio_after_ms,
    ice: {
      // A wildcard means every interface, which is the leg factory's default.
      ...(listen.length > 0 ? { listenIps: listen } : {}),
      ...(ice.announced_ip ? { announcedIp: ice.announced_ip } : {}),
      portRange: [ice.min_port, ice.max_port],
      iceTimeoutMs: config.messenger.ice_timeout_ms,
      dtlsTimeoutMs: config.messenger.dtls_timeout_ms,
    },
  };
}

/** Media threads configured: 'auto' is one per core. */
export function mediaThreadCount(config: Config): number {
  const threads = config.media.threads;
  return threads === 'auto' ? os.availableParallelism() : threads;
}

export async function startDaemonMedia(config: Config, log: Logger, metrics: Metrics): Promise<DaemonMedia> {
  const threadCount = mediaThreadCount(config);
  const settings = mediaRuntimeSettings(config, threadCount);
  if (threadCount === 0) {
    const census = await MediasoupCensus.start(settings.workerBin);
    const local = await startMediaRuntime(settings, log, metrics);
    return {
      engine: local.media,
      legs: local.legs,
      get healthy() {
        return local.media.healthy;
      },
      threads: undefined,
      local,
      async inspect() {
        const workers = await Promise.all(
          local.pool.workers.map(async (worker) => ({ pid: worker.pid, routers: ((await worker.dump()) as { routerIds: string[] }).routerIds.length })),
        );
        const prepared = preparedStats(local);
        return { workers, mediasoupObjects: census.kinds(), threadHandles: {}, prepared: prepared ? sumPrepared([prepared]) : undefined };
      },
      loadSources: () => [workerCpuSource(() => local.pool.workers), lateAudioSource(() => local.media.lateAudioDropped)],
      setLatchAcl: (acl) => local.setLatchAcl(acl),
      async close() {
        local.close();
      },
    };
  }
  // Threads report their load as often as the daemon samples it for admission.
  const statsIntervalMs = config.calls.admission.sample_interval_ms;
  const threads = await MediaThreadPool.create({ threads: threadCount, settings, log, statsIntervalMs, metrics });
  return {
    engine: threads,
    legs: threads,
    get healthy() {
      return threads.healthy;
    },
    threads,
    local: undefined,
    async inspect() {
      const inspected = await threads.inspect();
      const sum = (into: Record<string, number>, from: Record<string, number>): Record<string, number> => {
        for (const [key, n] of Object.entries(from)) into[key] = (into[key] ?? 0) + n;
        return into;
      };
      return {
        workers: inspected.flatMap((t) => t.workers.map((w) => ({ ...w, thread: t.index }))),
        mediasoupObjects: inspected.reduce((all, t) => sum(all, t.mediasoupObjects), {}),
        threadHandles: inspected.reduce((all, t) => sum(all, t.handles), {}),
        prepared: sumPrepared(inspected.flatMap((t) => (t.prepared ? [{ ...t.prepared, thread: t.index }] : []))),
      };
    },
    loadSources: () => [threads.loadSource()],
    setLatchAcl: (acl) => threads.setLatchAcl(acl),
    close: () => threads.close(),
  };
}

/** Prepared media of every runtime, added up (undefined when none has any). */
function sumPrepared(all: Array<PreparedStats & { thread?: number }>): MediaInspection['prepared'] {
  const [first, ...rest] = all;
  if (!first) return undefined;
  const add = (a: MediaPoolStats, b: MediaPoolStats): MediaPoolStats => ({
    ready: a.ready + b.ready,
    creating: a.creating + b.creating,
    hits: a.hits + b.hits,
    misses: a.misses + b.misses,
    dropped: a.dropped + b.dropped,
    failures: a.failures + b.failures,
  });
  let { media, ice } = first;
  for (const p of rest) {
    media = add(media, p.media);
    ice = ice && p.ice ? add(ice, p.ice) : (ice ?? p.ice);
  }
  return { media, ice, byThread: all };
}
