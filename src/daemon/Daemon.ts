/**
 * Builds and wires everything from one Config; ordered start and shutdown.
 *
 * Start order: metrics -> media workers -> SIP (drachtio) -> controller -> admin listener -> webhook listener
 * (webhooks last, so nothing arrives before the bridge can take a call). Stop order is the reverse, with a drain first.
 */
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { Admission, type AdmissionLimits } from '../calls/Admission.js';
import { CallController, type CallControllerOptions } from '../calls/CallController.js';
import { createClusterNode, type ClusterNode } from '../cluster/index.js';
import type { CallMediaStats, CallMetricsSink, CallRoute, LoadReading, PbxCodecName } from '../calls/ports.js';
import { configWarnings, pageIds, pageTokens, routeCodecs, type Config } from '../config/index.js';
import { GraphClient } from '../graph/index.js';
import { reportDependencyPatches } from './dependencyPatches.js';
import { applyWeriftPatches } from '../messenger/werift/index.js';
import { Metrics, buildAdminApp, type Readiness } from '../observability/index.js';
import { LoadMonitor, eventLoopSource } from '../observability/LoadMonitor.js';
import { startDaemonMedia, type DaemonMedia } from './DaemonMedia.js';
import { keysNeedingRestart } from '../config/reloadable.js';
import { ConfigError } from '../core/errors.js';
import { DrachtioSipLeg } from '../sip/DrachtioSipLeg.js';
import { applyDrachtioSrfPatches } from '../sip/drachtioSrfPatches.js';
import { selectRoute } from '../sip/routing.js';
import { buildWebhookApp, webhookSettingsFromConfig } from '../webhook/index.js';

export interface DaemonOptions {
  log: Logger;
  /** Metrics registry to use (tests pass their own); a new one by default. */
  metrics?: Metrics;
  /** Wait for drachtio-server before resolving start() (ms); 0 = do not wait. */
  waitForSipMs?: number;
}

export type { Readiness } from '../observability/index.js';

export class Daemon {
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly controller: CallController;
  /** Where the calls' media runs: media threads, or (`media.threads: 0`) this thread. */
  readonly media: DaemonMedia;
  readonly sip: DrachtioSipLeg;
  /** Admission by load: the decision, from the signals `loadMonitor` reads. */
  readonly admission: Admission;
  /** Reads the load signals; media threads add their own sources to it. */
  readonly loadMonitor: LoadMonitor;
  /** This instance's place among several behind one webhook URL (`cluster.enabled`); undefined for a single one. */
  readonly cluster: ClusterNode | undefined;
  /** `http://host:port` + webhook path, as listening. */
  webhookUrl = '';
  /** `http://host:port` of the admin listener. */
  adminUrl = '';

  #config: Config;
  readonly #webhookApp: FastifyInstance;
  readonly #adminApp: FastifyInstance;
  readonly #graph: GraphClient;
  readonly #pageTokens: Map<string, string>;
  #statsTimer: NodeJS.Timeout | undefined;
  #onReload: (config: Config) => void = () => undefined;
  #stopped = false;

  private constructor(parts: {
    config: Config;
    log: Logger;
    metrics: Metrics;
    media: DaemonMedia;
    sip: DrachtioSipLeg;
    graph: GraphClient;
    pageTokens: Map<string, string>;
    admission: Admission;
    loadMonitor: LoadMonitor;
    controller: CallController;
    cluster: ClusterNode | undefined;
    webhookApp: FastifyInstance;
    adminApp: FastifyInstance;
  }) {
    this.#config = parts.config;
    this.log = parts.log;
    this.metrics = parts.metrics;
    this.media = parts.media;
    this.sip = parts.sip;
    this.admission = parts.admission;
    this.loadMonitor = parts.loadMonitor;
    this.#graph = parts.graph;
    this.#pageTokens = parts.pageTokens;
    this.controller = parts.controller;
    this.cluster = parts.cluster;
    this.#webhookApp = parts.webhookApp;
    this.#adminApp = parts.adminApp;
  }

  static async start(config: Config, options: DaemonOptions): Promise<Daemon> {
    const log = options.log;
    const metrics = options.metrics ?? new Metrics();
    for (const warning of configWarnings(config)) log.warn({ warning }, 'configuration warning');
    reportDependencyPatches([applyWeriftPatches(), applyDrachtioSrfPatches()], log, metrics);

    const media = await startDaemonMedia(config, log, metrics);
    let loadMonitor: LoadMonitor | undefined;
    let cluster: ClusterNode | undefined;
    try {
      const tokens = pageTokens(config);
      const graph = new GraphClient({
        baseUrl: config.meta.graph_base_url,
        version: config.meta.graph_version,
        pages: tokens,
        timeoutMs: config.meta.graph_timeout_ms,
        log,
        metrics,
        ...(config.meta.appsecret_proof ? { appSecretForProof: config.meta.app_secret } : {}),
      });
      const sip = new DrachtioSipLeg({
        host: config.sip.drachtio.host,
        port: config.sip.drachtio.port,
        secret: config.sip.drachtio.secret,
        acl: config.sip.acl,
        ...(config.sip.digest ? { digest: config.sip.digest } : {}),
        target: {
          psidFrom: config.sip.target.psid_from,
          psidHeader: config.sip.target.psid_header,
          pageHeader: config.sip.target.page_header,
        },
        fromUser: config.sip.from_user,
        log,
        metrics,
      });
      sip.on('connection', (connected) => {
        log.info({ connected }, connected ? 'connected to drachtio-server' : 'disconnected from drachtio-server');
      });

      const admission = new Admission(admissionLimits(config));
      // With media threads each call is weighed against, and put on, the thread with the most headroom.
      admission.usePlaces(media.threads);
      loadMonitor = new LoadMonitor({
        sources: [eventLoopSource('main'), ...media.loadSources()],
        intervalMs: config.calls.admission.sample_interval_ms,
        onSample: watchLoad(admission, metrics, log),
        log,
      });

      const controller = new CallController({
        sip,
        media: media.engine,
        legs: media.legs,
        graph,
        log,
        metrics: callMetrics(metrics),
        admission,
        options: controllerOptions(config),
        admit: () => cluster?.admit(),
      });
      cluster = createClusterNode(config, {
        controller,
        graph,
        registry: metrics.registry,
        log,
        maxConcurrent: () => daemon.#config.calls.max_concurrent,
        refusing: () => admission.status().refusing,
      });

      const adminApp = buildAdminApp({ metrics, readiness: () => daemon.readiness() });
      // Asked on every request: a reload (SIGHUP) changes pages, secrets and tokens without a restart.
      let webhookSettings = webhookSettingsFromConfig(config);
      const webhookApp = buildWebhookApp({
        settings: () => webhookSettings,
        // With a cluster, events go through it: dedupe in Redis, then applied here or handed to the call's owner.
        sink: cluster ?? controller,
        log,
        metrics,
      });
      const daemon = new Daemon({
        config,
        log,
        metrics,
        media,
        sip,
        graph,
        pageTokens: tokens,
        admission,
        loadMonitor,
        controller,
        cluster,
        webhookApp,
        adminApp,
      });
      daemon.#onReload = (next) => {
        webhookSettings = webhookSettingsFromConfig(next);
        media.setLatchAcl(next.sip.acl);
      };

      if (options.waitForSipMs) {
        await sip.whenConnected(AbortSignal.timeout(options.waitForSipMs)).catch(() => {
          log.warn({ waitedMs: options.waitForSipMs }, 'drachtio-server not connected yet; calls are refused until it is');
        });
        await cluster?.whenUp(AbortSignal.timeout(options.waitForSipMs)).catch((err: unknown) => {
          log.warn({ err, waitedMs: options.waitForSipMs }, 'cluster not joined yet; starting anyway');
        });
      }

      const adminAddress = await adminApp.listen({ host: config.admin.listen.host, port: config.admin.listen.port });
      daemon.adminUrl = adminAddress;
      const webhookAddress = await webhookApp.listen({ host: config.webhook.listen.host, port: config.webhook.listen.port });
      daemon.webhookUrl = `${webhookAddress}${config.webhook.path}`;
      daemon.#statsTimer = setInterval(() => daemon.#collectMediaStats(), 5_000);
      daemon.#statsTimer.unref();
      log.info(
        { webhook: daemon.webhookUrl, admin: daemon.adminUrl, pages: config.pages.length, routes: config.routes.length },
        'messenger-sip-bridge started',
      );
      return daemon;
    } catch (err) {
      await cluster?.close();
      loadMonitor?.close();
      await media.close();
      throw err;
    }
  }

  readiness(): Readiness {
    const checks = {
      config: true,
      workers: this.media.healthy,
      drachtio: this.sip.connected,
      not_draining: !this.controller.draining && !this.#stopped,
      load: true,
      ...(this.cluster ? { cluster_redis: this.cluster.up } : {}),
    };
    const load = this.admission.status(this.controller.activeCalls);
    checks.load = !load.refusing;
    return {
      ready: Object.values(checks).every(Boolean),
      checks,
      load: { refusing: load.refusing, reasons: load.reasons, ...(load.detail ? { detail: load.detail } : {}) },
    };
  }

  /**
   * Apply a new config: pages and tokens, routes, webhook secrets, the SIP ACL and digest credentials (also for the
   * RTP latch), appsecret_proof, call limits and transfer rules (see config/reloadable.ts). Live calls keep their
   * route. Throws ConfigError naming the keys that changed but need a restart (e.g. `sip.drachtio.secret`); then
   * nothing is applied.
   */
  reload(config: Config): void {
    const restart = keysNeedingRestart(this.#config, config);
    if (restart.length > 0) {
      throw new ConfigError(restart.map((key) => `${key}: changed, but only a restart applies it (reload refused, nothing changed)`));
    }
    // First what can fail (a bad CIDR), so that a failed reload changes nothing.
    this.sip.updateSecurity({ acl: config.sip.acl, ...(config.sip.digest ? { digest: config.sip.digest } : {}) });
    this.#graph.setAppSecretForProof(config.meta.appsecret_proof ? config.meta.app_secret : undefined);
    const tokens = pageTokens(config);
    this.#pageTokens.clear();
    for (const [id, token] of tokens) this.#pageTokens.set(id, token);
    this.controller.updateOptions(controllerOptions(config));
    this.admission.configure(admissionLimits(config));
    this.#onReload(config);
    this.#config = config;
  }

  /** Drain (refuse new calls, let live ones finish up to `drainTimeoutMs`), then close everything. */
  async stop(drainTimeoutMs: number): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    await this.controller.drain(drainTimeoutMs);
    await this.close();
  }

  /** Close at once: hang up every call, close listeners, SIP and workers. Idempotent. */
  async close(): Promise<void> {
    this.#stopped = true;
    if (this.#statsTimer) clearInterval(this.#statsTimer);
    this.loadMonitor.close();
    await this.#webhookApp.close();
    await this.controller.close();
    await this.cluster?.close();
    await this.#adminApp.close();
    this.sip.close();
    await this.media.close();
    this.log.info('messenger-sip-bridge stopped');
  }

  /** Media counters of live calls into the metrics (every 5 s; each call's last report comes when it ends). */
  #collectMediaStats(): void {
    for (const call of this.controller.registry.all()) {
      const delta = call.takeMediaStatsDelta();
      if (delta) recordMediaStats(this.metrics, delta);
    }
  }
}

function admissionLimits(config: Config): AdmissionLimits {
  const a = config.calls.admission;
  return {
    enabled: a.enabled,
    maxEventLoopDelayMs: a.max_event_loop_delay_ms,
    maxEventLoopUtilization: a.max_event_loop_utilization,
    maxMediaWorkerCpu: a.max_media_worker_cpu,
    maxLatePacketsPerSecond: a.max_late_packets_per_second,
    maxCpuWait: a.max_cpu_wait,
    maxSetupsPerSecond: a.max_setups_per_second,
    smoothingMs: a.smoothing_ms,
    tripSamples: a.trip_samples,
    clearRatio: a.clear_ratio,
    clearAfterMs: a.clear_after_ms,
    settleMs: a.settle_ms,
    retryAfterS: a.retry_after_s,
  };
}

/** Each load sample: into the admission decision and the gauges; a change between taking and refusing is logged. */
function watchLoad(admission: Admission, metrics: Metrics, log: Logger): (readings: LoadReading[], elapsedMs: number) => void {
  const loadLog = log.child({ component: 'load' });
  let refusing = false;
  return (readings, elapsedMs) => {
    admission.observe(readings, elapsedMs);
    const status = admission.status();
    metrics.load(admission.highest(), (kind) => admission.limitOf(kind), status.refusing);
    if (status.refusing === refusing) return;
    refusing = status.refusing;
    if (refusing) loadLog.warn({ reasons: status.reasons, detail: status.detail }, 'refusing new calls: load over its limit');
    else loadLog.info({ signals: status.signals }, 'taking new calls again: load back under its limits');
  };
}

function recordMediaStats(metrics: Metrics, delta: CallMediaStats): void {
  metrics.mediaPackets('to_pbx', delta.toPbx.packets, delta.toPbx.lost);
  metrics.mediaPackets('to_messenger', delta.toMessenger.packets, delta.toMessenger.lost);
  if (delta.toPbx.jitterMs) metrics.mediaJitter('to_pbx', delta.toPbx.jitterMs / 1000);
  if (delta.toMessenger.jitterMs) metrics.mediaJitter('to_messenger', delta.toMessenger.jitterMs / 1000);
}

/** The controller's metrics sink: Metrics itself, plus media counters and the transcoding-sessions gauge. */
function callMetrics(metrics: Metrics): CallMetricsSink {
  const transcoding = new Set<string>();
  return {
    callStarted: (direction) => metrics.callStarted(direction),
    callEnded: (direction, outcome, seconds) => metrics.callEnded(direction, outcome, seconds),
    webhookToInvite: (seconds) => metrics.webhookToInvite(seconds),
    pbxAnswerToAccept: (seconds) => metrics.pbxAnswerToAccept(seconds),
    dtmf: (direction) => metrics.dtmf(direction),
    permissionReply: (response) => metrics.permissionReply(response),
    transfer: (result) => metrics.transfer(result),
    callRefused: (reason) => metrics.callRefused(reason),
    callEventRefused: (state, event) => metrics.callEventRefused(state, event),
    mediaStarted: (callId, isTranscoding) => {
      if (isTranscoding && !transcoding.has(callId)) {
        transcoding.add(callId);
        metrics.transcodingStarted();
      }
    },
    mediaStats: (callId, delta, final) => {
      recordMediaStats(metrics, delta);
      if (final && delta.quality) metrics.callQuality(delta.quality);
      if (final && transcoding.delete(callId)) metrics.transcodingEnded();
    },
    oneWayAudio: (side, active) => metrics.oneWayAudio(side, active),
    callMetricsReport: (result) => metrics.callMetricsReport(result),
  };
}

function controllerOptions(config: Config): CallControllerOptions {
  const routes = config.routes.map((route) => ({
    name: route.name,
    match: route.match,
    targets: route.targets,
    targetTimeoutMs: route.target_timeout_ms,
    codecs: routeCodecs(config, route) as PbxCodecName[],
    answerMode: route.answer_mode,
    srtp: route.srtp ?? config.media.srtp,
  }));
  return {
    maxConcurrent: config.calls.max_concurrent,
    pageIds: pageIds(config),
    defaultPageId: config.sip.default_page,
    selectRoute: (pageId, psid): CallRoute | undefined => {
      const route = selectRoute(routes, { pageId, psid });
      return route ? { ...route, targets: [...route.targets], codecs: [...route.codecs] } : undefined;
    },
    hashPsid: config.logging.hash_psid,
    connectMaxAgeMs: 60_000,
    sourceLimits: {
      maxConcurrent: config.sip.per_source.max_calls,
      perSecond: config.sip.per_source.invites_per_second,
      burst: config.sip.per_source.invite_burst,
    },
    businessCodecs: [...config.media.codecs] as PbxCodecName[],
    pbxSrtp: config.media.srtp,
    acceptDeadlineMs: config.calls.accept_deadline_ms,
    connectTimeoutMs: config.calls.connect_timeout_ms,
    mediaConnectTimeoutMs: config.messenger.ice_timeout_ms + config.messenger.dtls_timeout_ms,
    graphTimeoutMs: config.meta.graph_timeout_ms,
    headers: { psid: config.sip.headers.psid, pageId: config.sip.headers.page_id, callId: config.sip.headers.call_id },
    fromUser: config.sip.from_user,
    permissionCheck: config.calls.permission_check,
    requestPermissionOnDenied: config.calls.request_permission_on_denied,
    reportCallMetrics: config.calls.quality.report_to_meta,
    dtmfSipInfo: config.media.dtmf.sip_info,
    transfer: {
      enabled: config.sip.transfer.enabled,
      allowedHosts: config.sip.transfer.allowed_hosts,
      targetTimeoutMs: config.sip.transfer.target_timeout_ms,
    },
  };
}
