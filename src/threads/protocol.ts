/**
 * What crosses between the main thread and a media thread: call-level requests and notices one way, replies and
 * events the other, never a packet. Every message is plain data (structured clone).
 */
import type { CallMediaEvents, CallMediaStats, DtmfEvent, LoadReading, PbxCodecName } from '../calls/ports.js';
import type { RtpDropReason } from '../core/rtp.js';
import type { MediaPoolStats } from '../media/MediaPool.js';
import type { PbxNegotiated } from '../media/PbxNegotiation.js';
import type { MediaRuntimeSettings } from './mediaRuntime.js';

/** `workerData` of a media thread. */
export interface MediaThreadData {
  /** 0-based slot of the thread (stable across replacements). */
  index: number;
  settings: MediaRuntimeSettings;
  /** pino level of the main logger: lines below it are not sent. */
  logLevel: string;
  /** How often the thread reports its load and its calls' counters (ms). */
  statsIntervalMs: number;
}

/** Requests: each gets one reply. */
export type ThreadRequest =
  | { op: 'legCreate'; legId: number; callId: string; bindings: Record<string, unknown> }
  | { op: 'legCreateOffer'; legId: number }
  | { op: 'legApplyAnswer'; legId: number; sdp: string }
  | { op: 'legApplyOffer'; legId: number; sdp: string }
  | { op: 'mediaCreate'; mediaId: number; legId: number; callId: string; bindings: Record<string, unknown>; codecs: PbxCodecName[] }
  | { op: 'mediaStats'; mediaId: number }
  | { op: 'inspect' };

/** Notices: no reply (a failure comes back as an event). */
export type ThreadNotice =
  | { op: 'legClose'; legId: number }
  | { op: 'mediaRemote'; mediaId: number; negotiated: PbxNegotiated }
  | { op: 'mediaStart'; mediaId: number }
  | { op: 'mediaStartSending'; mediaId: number }
  | { op: 'mediaDtmf'; mediaId: number; event: DtmfEvent }
  | { op: 'mediaClose'; mediaId: number }
  | { op: 'setLatchAcl'; acl: string[] };

export type MainToThread = (ThreadRequest & { id: number }) | ThreadNotice;

/** An error as it crosses: rebuilt on the other side with the same class, code and reason. */
export interface WireError {
  name: string;
  code?: string;
  message: string;
  /** MessengerLegError's reason. */
  reason?: string;
}

/** What one media thread carries and how it keeps up, reported every `statsIntervalMs`. */
export interface MediaThreadLoad {
  /** Calls' media open on the thread. */
  calls: number;
  /** Messenger legs open on the thread (a call has one from before its media exists). */
  legs: number;
  /**
   * Calls whose media was started an interval before the one these readings cover (audio flows a little after the
   * start): their whole cost is in the readings (admission divides by it to learn what one call costs; a call not
   * yet in it is still to come).
   */
  carrying: number;
  /**
   * The thread's load signals over the last interval, as the main thread's own are read (observability/LoadMonitor):
   * its event-loop delay and utilization, each of its mediasoup workers' CPU, its late audio per second.
   */
  readings: LoadReading[];
  /** Audio packets dropped as too late (LateAudioGuard) since the thread started, all directions. */
  lateDropped: number;
  /** What the thread's media counted since its previous report. */
  counts: MediaThreadCountsReport;
  /** pids of the thread's mediasoup workers. */
  workerPids: number[];
}

/** Counters of a thread's media since its previous report (MediaThreadCounts), added to the main thread's metrics. */
export interface MediaThreadCountsReport {
  /** Packets dropped on the thread's PBX-facing RTP ports, by reason. */
  rtpDropped: Partial<Record<RtpDropReason, number>>;
  /** The thread's mediasoup workers replaced after they died. */
  workerRestarts: number;
}

export interface ThreadInspection {
  workers: Array<{ pid: number; routers: number }>;
  calls: number;
  legs: number;
  /** Live mediasoup objects by class. */
  mediasoupObjects: Record<string, number>;
  /** The thread's own active libuv handles by type (UDPWrap, Timeout ...): what it holds open. */
  handles: Record<string, number>;
  /** Its pools of media and ICE agents made ahead of calls (`calls.prepared_media`); null when it has none. */
  prepared: PreparedStats | null;
}

/** The pools of prepared call media (each item one router and its transports) and ICE agents of a runtime. */
export interface PreparedStats {
  media: MediaPoolStats;
  ice: MediaPoolStats | null;
}

export type ThreadEvent =
  | { ev: 'ready'; workerPids: number[] }
  | { ev: 'startFailed'; error: WireError }
  | { ev: 'legConnected'; legId: number }
  | { ev: 'legFailed'; legId: number; error: WireError }
  | { ev: 'legClosed'; legId: number }
  | { ev: 'mediaFailed'; mediaId: number; error: WireError }
  | { ev: 'mediaDtmf'; mediaId: number; event: DtmfEvent & { direction: 'to_pbx' | 'to_messenger'; via?: 'rfc4733' | 'inband' | 'none' } }
  | { ev: 'mediaOneWayAudio'; mediaId: number; event: CallMediaEvents['oneWayAudio'][0] }
  | { ev: 'stats'; load: MediaThreadLoad; calls: Array<[number, CallMediaStats]> }
  | { ev: 'log'; line: string }
  | { ev: 'workerDied'; pid: number }
  | { ev: 'workerRestarted'; pid: number; replacedPid: number };

export type ThreadToMain =
  | { kind: 'reply'; id: number; ok: true; value: unknown }
  | { kind: 'reply'; id: number; ok: false; error: WireError }
  | ({ kind: 'event' } & ThreadEvent);

