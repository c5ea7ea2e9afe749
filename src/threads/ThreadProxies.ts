/**
 * Main-thread stand-ins for a call's Messenger leg and media living on a media thread. They implement the
 * controller's ports: requests cross as one message each (with a deadline), events come back by id; the PBX side's
 * SDP is negotiated here (PbxNegotiation, pure) and only its result crosses.
 */
import type {
  CallMedia,
  CallMediaEvents,
  CallMediaStats,
  DtmfEvent,
  MessengerLeg,
  MessengerLegEvents,
  MessengerNegotiated,
  PbxCodecName,
  SrtpMode,
} from '../calls/ports.js';
import type { Logger } from 'pino';
import { TypedEmitter } from '../core/TypedEmitter.js';
import { MediaError, MessengerLegError } from '../core/errors.js';
import { PbxNegotiation, type PbxNegotiated } from '../media/PbxNegotiation.js';
import { whenLegConnected } from '../messenger/whenLegConnected.js';
import type { PbxRemoteAudio } from '../media/pbxSdp.js';
import type { MediaThread } from './MediaThreadPool.js';

function asLegError(err: unknown): MessengerLegError {
  if (err instanceof MessengerLegError) return err;
  return new MessengerLegError('closed', err instanceof Error ? err.message : String(err), { cause: err });
}

export class ThreadMessengerLeg extends TypedEmitter<MessengerLegEvents> implements MessengerLeg {
  readonly thread: MediaThread;
  readonly legId: number;
  readonly callId: string;
  #negotiated: MessengerNegotiated | undefined;
  #state: 'new' | 'connected' | 'closed' = 'new';
  #error: MessengerLegError | undefined;

  constructor(thread: MediaThread, legId: number, callId: string) {
    super();
    this.thread = thread;
    this.legId = legId;
    this.callId = callId;
  }

  get closed(): boolean {
    return this.#state === 'closed';
  }

  createOffer(): Promise<string> {
    return this.#request<string>({ op: 'legCreateOffer', legId: this.legId });
  }

  async applyAnswer(sdp: string): Promise<void> {
    const { negotiated } = await this.#request<{ negotiated: MessengerNegotiated | null }>({ op: 'legApplyAnswer', legId: this.legId, sdp });
    this.#negotiated = negotiated ?? undefined;
  }

  async applyOffer(sdp: string): Promise<string> {
    const { answer, negotiated } = await this.#request<{ answer: string; negotiated: MessengerNegotiated | null }>({
      op: 'legApplyOffer',
      legId: this.legId,
      sdp,
    });
    this.#negotiated = negotiated ?? undefined;
    return answer;
  }

  negotiated(): MessengerNegotiated | undefined {
    return this.#negotiated === undefined ? undefined : { ...this.#negotiated };
  }

  whenConnected(signal?: AbortSignal): Promise<void> {
    return whenLegConnected(this, this.#state, () => this.#error, signal);
  }

  close(): void {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    this.thread.notify({ op: 'legClose', legId: this.legId });
    this.safeEmit('closed');
    this.removeAllListeners();
  }

  /** The thread says the leg is up. */
  connected(): void {
    if (this.#state !== 'new') return;
    this.#state = 'connected';
    this.safeEmit('connected');
  }

  /** The leg failed on its thread, or its thread died: one `failed`, then closed. */
  fail(err: unknown): void {
    if (this.#state === 'closed') return;
    this.#error = asLegError(err);
    this.safeEmit('failed', this.#error);
    this.close();
  }

  /** The thread closed the leg on its own (after a failure it already reported). */
  closedByThread(): void {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    this.safeEmit('closed');
    this.removeAllListeners();
  }

  async #request<T>(request: Parameters<MediaThread['request']>[0]): Promise<T> {
    if (this.#state === 'closed') throw this.#error ?? new MessengerLegError('closed', 'Messenger leg closed');
    return this.thread.request<T>(request);
  }
}

interface ThreadCallMediaEvents extends CallMediaEvents {
  /** Internal: the proxy closed (its pool stops routing events to it). */
  closedLocally: [];
}

const ZERO_STATS = { packets: 0, lost: 0, jitterMs: 0 };

export class ThreadCallMedia extends TypedEmitter<ThreadCallMediaEvents> implements CallMedia {
  readonly #thread: MediaThread;
  readonly #mediaId: number;
  readonly #leg: ThreadMessengerLeg;
  readonly #negotiation: PbxNegotiation;
  #remote: PbxRemoteAudio | undefined;
  #stats: CallMediaStats = { transcoding: false, toPbx: { ...ZERO_STATS }, toMessenger: { ...ZERO_STATS } };
  #closed = false;

  constructor(options: {
    thread: MediaThread;
    mediaId: number;
    leg: ThreadMessengerLeg;
    codecs: PbxCodecName[];
    srtp: SrtpMode | undefined;
    announcedIp: string;
    pbxPort: number;
    log: Logger;
  }) {
    super();
    this.#thread = options.thread;
    this.#mediaId = options.mediaId;
    this.#leg = options.leg;
    this.#negotiation = new PbxNegotiation({
      codecs: options.codecs,
      announcedIp: options.announcedIp,
      port: options.pbxPort,
      ...(options.srtp ? { srtp: options.srtp } : {}),
      log: options.log.child({ component: 'media' }),
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  get pbxCodec(): PbxCodecName | undefined {
    return this.#remote?.codec.name;
  }

  /** The media thread carrying this call (0-based). */
  get threadIndex(): number {
    return this.#thread.index;
  }

  createPbxOffer(): string {
    this.#assertOpen();
    return this.#negotiation.createOffer();
  }

  applyPbxAnswer(sdp: string): void {
    this.#assertOpen();
    this.#negotiated(this.#negotiation.applyAnswer(sdp));
  }

  answerPbxOffer(sdp: string): string {
    this.#assertOpen();
    const { answer, ...negotiated } = this.#negotiation.answerOffer(sdp);
    this.#negotiated(negotiated);
    return answer;
  }

  start(): void {
    this.#assertOpen();
    if (!this.#remote) throw new MediaError('NOT_NEGOTIATED', 'start() before the PBX side was negotiated');
    if (!this.#leg.negotiated()) throw new MediaError('NOT_NEGOTIATED', 'start() before the Messenger leg was negotiated');
    this.#thread.notify({ op: 'mediaStart', mediaId: this.#mediaId });
  }

  startSendingToMessenger(): void {
    this.#assertOpen();
    if (!this.#leg.negotiated()) {
      throw new MediaError('NOT_NEGOTIATED', 'startSendingToMessenger() before the Messenger leg was negotiated');
    }
    this.#thread.notify({ op: 'mediaStartSending', mediaId: this.#mediaId });
  }

  sendDtmfToMessenger(event: DtmfEvent): void {
    if (this.#closed) return;
    this.#thread.notify({ op: 'mediaDtmf', mediaId: this.#mediaId, event });
  }

  /** Counters as the media thread last reported them (every second), with the codec negotiated here. */
  stats(): CallMediaStats {
    const s = this.#stats;
    const codec = this.#remote?.codec.name;
    const srtp = this.#negotiation.srtpSuite;
    return {
      ...(s.quality ? { quality: s.quality } : {}),
      ...(codec !== undefined ? { codec } : {}),
      ...(srtp !== undefined ? { srtp } : {}),
      transcoding: codec !== undefined && codec !== 'opus',
      toPbx: { ...s.toPbx },
      toMessenger: { ...s.toMessenger },
    };
  }

  /** The thread's counters now (asked before close(): the thread answers before it closes the media). */
  async finalStats(timeoutMs: number): Promise<CallMediaStats> {
    if (this.#closed) return this.stats();
    const stats = await this.#thread.request<CallMediaStats>({ op: 'mediaStats', mediaId: this.#mediaId }, timeoutMs);
    this.#stats = stats;
    return this.stats();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#thread.notify({ op: 'mediaClose', mediaId: this.#mediaId });
    this.safeEmit('closedLocally');
    this.removeAllListeners();
  }

  /** The thread's periodic counters for this call. */
  updateStats(stats: CallMediaStats): void {
    this.#stats = stats;
  }

  /** The media failed on its thread, or the thread died: one `failed`, then closed. */
  fail(err: unknown): void {
    if (this.#closed) return;
    const error = err instanceof MediaError ? err : new MediaError('THREAD', err instanceof Error ? err.message : String(err));
    this.safeEmit('failed', error);
    this.close();
  }

  dtmf(event: CallMediaEvents['dtmf'][0]): void {
    if (!this.#closed) this.safeEmit('dtmf', event);
  }

  oneWayAudio(event: CallMediaEvents['oneWayAudio'][0]): void {
    if (!this.#closed) this.safeEmit('oneWayAudio', event);
  }

  #negotiated(negotiated: PbxNegotiated): void {
    this.#remote = negotiated.remote;
    this.#thread.notify({ op: 'mediaRemote', mediaId: this.#mediaId, negotiated });
  }

  #assertOpen(): void {
    if (this.#closed) throw new MediaError('CLOSED', 'call media is closed');
  }
}
