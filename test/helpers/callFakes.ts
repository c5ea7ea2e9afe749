/**
 * In-memory stand-ins for the controller's ports, recording what the controller asked for. They let the state machine
 * be driven through every path quickly; the end-to-end tests run the same flows with the real modules.
 */
import pino from 'pino';
import { TypedEmitter } from '../../src/core/TypedEmitter.js';
import { GraphError, MediaError, SipError } from '../../src/core/errors.js';
import type {
  AdmissionPort,
  RefusalReason,
  CallMedia,
  CallMediaEvents,
  CallMediaStats,
  CallMetricsSink,
  CallOutcome,
  ConnectEvent,
  DtmfEvent,
  GraphPort,
  IncomingCall,
  IncomingCallEvents,
  MediaEngine,
  MessengerLeg,
  MessengerLegEvents,
  MessengerLegFactory,
  MessengerNegotiated,
  OutboundCallOptions,
  OutboundCallResult,
  PbxCodecName,
  SipDialog,
  SipDialogEvents,
  SipPort,
  SipPortEvents,
  TerminateEvent,
  TransferRequest,
  TransferResult,
} from '../../src/calls/ports.js';
import { CallController, type CallControllerOptions } from '../../src/calls/CallController.js';

export const silentLog = pino({ level: 'silent' });

export function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

export class FakeLeg extends TypedEmitter<MessengerLegEvents> implements MessengerLeg {
  closed = false;
  answers: string[] = [];
  offersApplied: string[] = [];
  connected = deferred<void>();
  sendRtp(): void {}
  onRtp(): () => void {
    return () => undefined;
  }
  async createOffer(): Promise<string> {
    return 'v=0 our-offer';
  }
  async applyAnswer(sdp: string): Promise<void> {
    this.answers.push(sdp);
    this.connected.resolve();
  }
  async applyOffer(sdp: string): Promise<string> {
    this.offersApplied.push(sdp);
    this.connected.resolve();
    return 'v=0 our-answer';
  }
  negotiated(): MessengerNegotiated | undefined {
    return { opusPt: 111 };
  }
  whenConnected(signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      signal?.addEventListener('abort', () => reject(signal.reason), { once: true });
      this.connected.promise.then(resolve, reject);
    });
  }
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.safeEmit('closed');
  }
}

export class FakeLegs implements MessengerLegFactory {
  created: FakeLeg[] = [];
  create(): MessengerLeg {
    const leg = new FakeLeg();
    this.created.push(leg);
    return leg;
  }
}

export class FakeMedia extends TypedEmitter<CallMediaEvents> implements CallMedia {
  closed = false;
  pbxCodec: PbxCodecName | undefined;
  started = 0;
  dtmfToMessenger: DtmfEvent[] = [];
  reoffers: string[] = [];
  /** PBX answers applied to our offers, in order (the first INVITE's, then each transfer target's). */
  answers: string[] = [];
  createPbxOffer(): string {
    return 'v=0 pbx-offer';
  }
  applyPbxAnswer(sdp: string): void {
    if (sdp.includes('no-codec')) throw new MediaError('NO_COMMON_CODEC', 'no common codec');
    this.answers.push(sdp);
    this.pbxCodec = sdp.includes('PCMA') ? 'PCMA' : 'PCMU';
  }
  answerPbxOffer(sdp: string): string {
    this.reoffers.push(sdp);
    if (sdp.includes('video-only')) {
      throw new MediaError('NO_COMMON_CODEC', 'PBX offered only video');
    }
    this.pbxCodec = 'PCMU';
    return 'v=0 pbx-answer';
  }
  start(): void {
    this.started++;
  }
  /** Calls of startSendingToMessenger (silence toward Meta before the PBX side is bridged). */
  sendingToMessenger = 0;
  startSendingToMessenger(): void {
    this.sendingToMessenger++;
  }
  sendDtmfToMessenger(event: DtmfEvent): void {
    this.dtmfToMessenger.push(event);
  }
  stats(): CallMediaStats {
    return { transcoding: true, toPbx: { packets: 0, lost: 0, jitterMs: 0 }, toMessenger: { packets: 0, lost: 0, jitterMs: 0 } };
  }
  close(): void {
    this.closed = true;
  }
}

export class FakeMediaEngine implements MediaEngine {
  healthy = true;
  created: FakeMedia[] = [];
  /** The codec preference each call's media was created with. */
  codecs: PbxCodecName[][] = [];
  async createCallMedia(options: Parameters<MediaEngine['createCallMedia']>[0]): Promise<CallMedia> {
    const media = new FakeMedia();
    this.created.push(media);
    this.codecs.push(options.codecs);
    return media;
  }
}

export class FakeDialog extends TypedEmitter<SipDialogEvents> implements SipDialog {
  id = `dlg-${Math.random()}`;
  ended = false;
  /** The PBX's address (transfers within it are allowed by default). */
  peerAddress: string | undefined = '10.0.0.7';
  byeSent = 0;
  reinvite: ((offer: string) => string) | undefined;
  transfer: ((request: TransferRequest) => void) | undefined;
  /** Digits sent as SIP INFO, in order. */
  readonly infoDigits: DtmfEvent[] = [];
  setReinviteHandler(handler: (offer: string) => string): void {
    this.reinvite = handler;
  }
  setTransferHandler(handler: (request: TransferRequest) => void): void {
    this.transfer = handler;
  }
  /**
   * The far end sends REFER: what the dialog answered (202, or the error), and the sipfrag status lines of the
   * NOTIFYs that followed, as they are sent.
   */
  refer(target: string, options: { headers?: Record<string, string>; referredBy?: string } = {}): FakeRefer {
    const refer: FakeRefer = { response: undefined, notifies: [], finalNotified: deferred<void>() };
    const handler = this.transfer;
    if (!handler) {
      refer.response = { status: 501, reason: 'Not Implemented' };
      return refer;
    }
    handler({
      target,
      headers: options.headers ?? {},
      referredBy: options.referredBy,
      accept: () => {
        refer.response ??= { status: 202, reason: 'Accepted' };
        refer.notifies.push('SIP/2.0 100 Trying');
      },
      reject: (status, reason) => {
        refer.response ??= { status, reason };
      },
      notifyFinal: async (status, reason) => {
        if (!this.ended) refer.notifies.push(`SIP/2.0 ${status} ${reason}`);
        refer.finalNotified.resolve();
      },
    });
    return refer;
  }
  async sendDtmf(event: DtmfEvent): Promise<void> {
    if (this.ended) throw new Error('dialog ended');
    this.infoDigits.push(event);
  }
  async end(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    this.byeSent++;
  }
  /** The far end hangs up. */
  remoteBye(): void {
    this.ended = true;
    this.safeEmit('bye');
  }
}

export interface FakeRefer {
  response: { status: number; reason: string } | undefined;
  notifies: string[];
  finalNotified: ReturnType<typeof deferred<void>>;
}

export interface PendingInvite {
  options: OutboundCallOptions;
  answer(sdp?: string): FakeDialog;
  fail(status: number): void;
  canceled: boolean;
}

export class FakeSip extends TypedEmitter<SipPortEvents> implements SipPort {
  connected = true;
  invites: PendingInvite[] = [];
  inviteArrived = deferred<PendingInvite>();

  invite(options: OutboundCallOptions): Promise<OutboundCallResult> {
    return new Promise((resolve, reject) => {
      const pending: PendingInvite = {
        options,
        canceled: false,
        answer: (sdp = 'v=0 pbx-answer-sdp') => {
          const dialog = new FakeDialog();
          resolve({ dialog, sdp, target: options.targets[0]!, status: 200 });
          return dialog;
        },
        fail: (status) => reject(new SipError(status, 'failed')),
      };
      options.signal.addEventListener(
        'abort',
        () => {
          pending.canceled = true;
          reject(new SipError(487, 'Request Terminated'));
        },
        { once: true },
      );
      this.invites.push(pending);
      this.inviteArrived.resolve(pending);
      this.inviteArrived = deferred<PendingInvite>();
    });
  }
}

export class FakeIncoming extends TypedEmitter<IncomingCallEvents> implements IncomingCall {
  sipCallId = `sip-${Math.random()}`;
  sourceAddress = '127.0.0.1';
  canceled = false;
  ringingSent = 0;
  rejected: { status: number; reason: string; retryAfterS?: number } | undefined;
  dialog: FakeDialog | undefined;
  answered = deferred<string>();
  final = deferred<number>();
  constructor(
    readonly psid: string | undefined,
    readonly pageId: string | undefined,
    readonly sdp = 'v=0 pbx-offer-audio',
  ) {
    super();
  }
  ringing(): void {
    this.ringingSent++;
  }
  async answer(sdp: string): Promise<SipDialog> {
    this.dialog = new FakeDialog();
    this.answered.resolve(sdp);
    this.final.resolve(200);
    return this.dialog;
  }
  reject(status: number, reason: string, retryAfterS?: number): void {
    this.rejected = { status, reason, ...(retryAfterS !== undefined ? { retryAfterS } : {}) };
    this.final.resolve(status);
  }
  cancel(): void {
    this.canceled = true;
    this.safeEmit('cancel');
  }
}

type GraphCall = { action: string; pageId: string; callId?: string; psid?: string };

export class FakeGraph implements GraphPort {
  calls: GraphCall[] = [];
  acceptResult: { sdpAnswer: string; sdpRenegotiation?: string } | Error = { sdpAnswer: 'v=0 meta-answer' };
  connectResult: { callId: string; sdpAnswer?: string } | Error = { callId: 'meta-b-1', sdpAnswer: 'v=0 meta-answer' };
  permission: boolean | Error = true;
  acted = new Map<string, ReturnType<typeof deferred<void>>>();

  #record(entry: GraphCall): void {
    this.calls.push(entry);
    this.waitFor(entry.action).resolve();
  }
  waitFor(action: string): ReturnType<typeof deferred<void>> {
    let d = this.acted.get(action);
    if (!d) {
      d = deferred<void>();
      this.acted.set(action, d);
    }
    return d;
  }
  actions(): string[] {
    return this.calls.map((c) => c.action);
  }
  async accept(pageId: string, callId: string) {
    this.#record({ action: 'accept', pageId, callId });
    if (this.acceptResult instanceof Error) throw this.acceptResult;
    return this.acceptResult;
  }
  async reject(pageId: string, callId: string) {
    this.#record({ action: 'reject', pageId, callId });
  }
  async terminate(pageId: string, callId: string) {
    this.#record({ action: 'terminate', pageId, callId });
  }
  async connect(pageId: string, psid: string) {
    this.#record({ action: 'connect', pageId, psid });
    if (this.connectResult instanceof Error) throw this.connectResult;
    return this.connectResult;
  }
  async mediaUpdate() {
    return {};
  }
  async checkPermission(pageId: string, psid: string) {
    this.#record({ action: 'permission', pageId, psid });
    if (this.permission instanceof Error) throw this.permission;
    return { canCall: this.permission, raw: {} };
  }
  async requestPermission(pageId: string, psid: string) {
    this.#record({ action: 'request_permission', pageId, psid });
  }
}

export class RecordingMetrics implements CallMetricsSink {
  started: string[] = [];
  ended: Array<{ direction: string; outcome: CallOutcome }> = [];
  transfers: TransferResult[] = [];
  refused: RefusalReason[] = [];
  callStarted(direction: string): void {
    this.started.push(direction);
  }
  callEnded(direction: string, outcome: CallOutcome): void {
    this.ended.push({ direction, outcome });
  }
  webhookToInvite(): void {}
  pbxAnswerToAccept(): void {}
  dtmf(): void {}
  permissionReply(): void {}
  transfer(result: TransferResult): void {
    this.transfers.push(result);
  }
  callRefused(reason: RefusalReason): void {
    this.refused.push(reason);
  }
  /** Events the call state machine refused, as `state/event`. */
  refusedEvents: string[] = [];
  callEventRefused(state: string, event: string): void {
    this.refusedEvents.push(`${state}/${event}`);
  }
}

export const graphError = (retryable: boolean): GraphError =>
  new GraphError('GRAPH_CALL_ERROR', 'boom', { httpStatus: retryable ? 500 : 400, metaCode: 2018389, retryable });

export function controllerOptions(overrides: Partial<CallControllerOptions> = {}): CallControllerOptions {
  return {
    maxConcurrent: 10,
    pageIds: new Set(['100']),
    defaultPageId: '100',
    selectRoute: () => ({ name: 'default', targets: ['sip:a@127.0.0.1', 'sip:b@127.0.0.1'], targetTimeoutMs: 1000, codecs: ['PCMU'], answerMode: 'on_pbx_answer' }),
    hashPsid: false,
    connectMaxAgeMs: 60_000,
    businessCodecs: ['PCMU', 'PCMA', 'opus'],
    acceptDeadlineMs: 5_000,
    connectTimeoutMs: 5_000,
    mediaConnectTimeoutMs: 2_000,
    graphTimeoutMs: 1_000,
    headers: { psid: 'X-Messenger-PSID', pageId: 'X-Messenger-Page-ID', callId: 'X-Messenger-Call-ID' },
    fromUser: 'messenger',
    permissionCheck: true,
    requestPermissionOnDenied: false,
    ...overrides,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// A controller on these fakes, and the events and waits its tests share
// ---------------------------------------------------------------------------------------------------------------

/** A CallController on a fake for every port, with `overrides` on controllerOptions()'s defaults. */
export function fakeController(overrides: Partial<CallControllerOptions> = {}, admission?: AdmissionPort) {
  const sip = new FakeSip();
  const graph = new FakeGraph();
  const media = new FakeMediaEngine();
  const legs = new FakeLegs();
  const metrics = new RecordingMetrics();
  const controller = new CallController({ sip, graph, media, legs, metrics, log: silentLog, options: controllerOptions(overrides), ...(admission ? { admission } : {}) });
  return { sip, graph, media, legs, metrics, controller };
}

/** A consumer-initiated connect webhook event for page 100. */
export function connectEvent(callId = 'c1', extra: Partial<ConnectEvent> = {}): ConnectEvent {
  return {
    kind: 'connect',
    pageId: '100',
    callId,
    from: '555',
    to: '100',
    direction: 'user_initiated',
    timestamp: Math.floor(Date.now() / 1000),
    ...extra,
  };
}

/** A terminate webhook event for page 100. */
export function terminateEvent(callId: string): TerminateEvent {
  return { kind: 'terminate', pageId: '100', callId, timestamp: Math.floor(Date.now() / 1000), status: 'Completed' };
}

/** Polls `fn` every 2 ms until it returns a truthy value; throws after `ms`. */
export async function pollUntil<T>(fn: () => T | undefined, ms = 2000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 2));
  }
}
