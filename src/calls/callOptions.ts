/** What a CallSession is built with: its ports and its settings (from the YAML configuration). */
import type { Logger } from 'pino';
import type { CallMetricsSink, GraphPort, MediaEngine, MessengerLegFactory, SipPort } from './ports.js';
import type { TransferOptions } from './transfer.js';

export interface CallSessionDeps {
  sip: SipPort;
  media: MediaEngine;
  legs: MessengerLegFactory;
  graph: GraphPort;
  metrics?: CallMetricsSink;
  log: Logger;
  options: CallSessionOptions;
}

export interface CallSessionOptions {
  /** user_initiated: deadline from the connect webhook to Graph accept (ms); Meta's own limit is 60 s. */
  acceptDeadlineMs: number;
  /** business_initiated: deadline from Graph connect to Meta's `accepted` (ms). */
  connectTimeoutMs: number;
  /** Deadline for ICE+DTLS toward Meta once both sides answered (ms). */
  mediaConnectTimeoutMs: number;
  /** Deadline for a single Graph request (ms). */
  graphTimeoutMs: number;
  /** Caller-context header names added to INVITEs toward the PBX. */
  headers: { psid: string; pageId: string; callId: string };
  /** From user part of INVITEs toward the PBX. */
  fromUser: string;
  permissionCheck: boolean;
  requestPermissionOnDenied: boolean;
  /**
   * Digits from the person also go to the PBX as SIP INFO: 'auto' (default) when the PBX leg negotiated no
   * telephone-event (RTP cannot carry them as events), true for every digit, false never.
   */
  dtmfSipInfo?: boolean | 'auto';
  /** Transfers by REFER from the PBX. Absent: allowed to any host, with the default timeout. */
  transfer?: TransferOptions;
  /** After a call Meta accepted, submit its quality to Meta (`call_metrics`). Default false. */
  reportCallMetrics?: boolean;
}
