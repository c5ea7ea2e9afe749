/**
 * The slice of drachtio-srf 5.0.29 this folder uses, typed from its source (lib/srf.js, dialog.js, request.js,
 * response.js, drachtio-agent.js). The package's own typings disagree with its code in places
 * (e.g. `cbRequest` is called `(err, req)`), so we describe what the code does.
 */
import type { EventEmitter } from 'node:events';

export interface SrfMessage {
  readonly body: string;
  readonly type: 'request' | 'response';
  get(name: string): string | undefined;
  has(name: string): boolean;
}

export interface SrfRequest extends SrfMessage, EventEmitter {
  readonly method: string;
  readonly uri: string;
  readonly source: 'network' | 'application';
  readonly source_address: string;
  readonly source_port: number;
  readonly stackTxnId: string;
  readonly stackDialogId: string | undefined;
  canceled?: boolean;
  /** True for an INVITE without a To tag (not a re-INVITE). */
  readonly isNewInvite: boolean;
  cancel(callback?: (err: Error | null) => void): void;
  getParsedHeader(name: 'from' | 'to'): { name?: string; uri: string; params: Record<string, string | null> };
}

export interface SrfResponseOptions {
  headers?: Record<string, string>;
  body?: string;
}

/** Emits 'finish' once its final response is sent. */
export interface SrfResponse extends SrfMessage, EventEmitter {
  readonly status: number;
  readonly reason: string;
  readonly finalResponseSent: boolean;
  send(status: number, opts?: SrfResponseOptions, callback?: (err: unknown, msg?: SrfMessage) => void): void;
  send(status: number, reason: string, opts?: SrfResponseOptions, callback?: (err: unknown, msg?: SrfMessage) => void): void;
}

export interface SrfDialog extends EventEmitter {
  readonly id: string;
  readonly type: 'uac' | 'uas';
  connected: boolean;
  readonly sip: { callId: string; localTag: string; remoteTag: string };
  local: { uri: string; sdp: string; contact: string };
  remote: { uri: string; sdp: string };
  /** The response that created the dialog (UAC side: the 200 OK received). */
  readonly res: SrfMessage;
  destroy(opts?: { headers?: Record<string, string> }): Promise<unknown>;
  modify(sdp: string, opts?: { headers?: Record<string, string> }): Promise<string>;
  request(opts: { method: string; headers?: Record<string, string>; body?: string }): Promise<SrfResponse>;
}

export interface SrfCreateUacOptions {
  headers?: Record<string, string>;
  localSdp?: string;
}

export interface Srf extends EventEmitter {
  connect(opts: {
    host: string;
    port: number;
    secret: string;
    reconnect?: { retryMaxDelay?: number; maxAttempts?: number; connectTimeout?: number };
  }): unknown;
  disconnect(): void;
  invite(handler: (req: SrfRequest, res: SrfResponse) => void): void;
  options(handler: (req: SrfRequest, res: SrfResponse) => void): void;
  createUAC(
    uri: string,
    opts: SrfCreateUacOptions,
    callbacks: {
      cbRequest?: (err: Error | null, req: SrfRequest) => void;
      cbProvisional?: (res: SrfResponse) => void;
    },
  ): Promise<SrfDialog>;
  createUAS(req: SrfRequest, res: SrfResponse, opts: { localSdp: string; headers?: Record<string, string> }): Promise<SrfDialog>;
}
