/**
 * What one call knows about Meta's side: whether Meta has the call (accept/connect succeeded), its last status, the
 * newest media_update version, and the waits for Meta's webhooks (call_status, an SDP answer). Each wait has a deadline
 * on the call's timers.
 */
import type { Logger } from 'pino';
import type { CallTimers } from './callTimers.js';
import type { CallDirection, GraphPort, MediaUpdateEvent, MessengerLeg } from './ports.js';

export class MetaSide {
  /** Meta's status as the call summary shows it (accepted, ringing, terminated ..., accept failed: CODE). */
  status: string | undefined;
  /** Graph accept/connect has succeeded: Meta knows the call, so ending it needs terminate, not reject. */
  accepted = false;
  /** Meta's SDP answer has been applied to the Messenger leg. */
  remoteAnswerApplied = false;
  readonly #timers: CallTimers;
  /** The accept/connect request in flight, if any (settles, never rejects). */
  #pending: Promise<void> | undefined;
  #mediaVersion = -1;
  readonly #statusWaiters = new Map<string, () => void>();
  /** call_status values received so far. */
  readonly #statusesSeen = new Set<string>();
  #onRemoteAnswer: (() => void) | undefined;

  constructor(timers: CallTimers) {
    this.#timers = timers;
  }

  /**
   * Track a Graph accept/connect: `accepted` (and `onSuccess`) as soon as it succeeds, even if the call ended
   * meanwhile (Meta's call then needs its terminate). Returns `request` for the flow to await and handle.
   */
  track<T>(request: Promise<T>, onSuccess?: (result: T) => void): Promise<T> {
    this.#pending = request.then(
      (result) => {
        onSuccess?.(result);
        this.accepted = true;
      },
      // A failed request is handled by the flow that awaits `request`; this copy only records success.
      () => undefined,
    );
    return request;
  }

  /** What Meta is told when the call ends with `meta: 'auto'`, once any accept/connect in flight has settled. */
  async teardownAction(direction: CallDirection): Promise<'reject' | 'terminate' | 'none'> {
    await this.#pending;
    if (this.accepted) return 'terminate';
    return direction === 'user_initiated' ? 'reject' : 'none';
  }

  /** Graph reject or terminate of Meta's call, within `timeoutMs`. Never rejects: a failure is logged. */
  end(
    graph: GraphPort,
    request: { pageId: string; callId: string; action: 'reject' | 'terminate'; timeoutMs: number; log: Logger },
  ): Promise<void> {
    const { pageId, callId, action, log } = request;
    const signal = AbortSignal.timeout(request.timeoutMs);
    const sent = action === 'reject' ? graph.reject(pageId, callId, signal) : graph.terminate(pageId, callId, signal);
    return sent.then(
      () => {
        this.status = action === 'reject' ? 'rejected' : 'terminated';
        log.info({ action }, `Meta ${action} sent`);
      },
      (err: unknown) => log.warn({ err, action }, `Graph ${action} failed`),
    );
  }

  /**
   * Apply Meta's media_update to `leg` (none: the call has no leg, or has ended) when it is newer than every one seen.
   * Resolves true once applied; false for a stale one or one that failed (logged). Never rejects.
   */
  async applyMediaUpdate(event: MediaUpdateEvent, leg: MessengerLeg | undefined, log: Logger): Promise<boolean> {
    if (event.version <= this.#mediaVersion) {
      log.debug({ version: event.version, newest: this.#mediaVersion }, 'stale media_update ignored');
      return false;
    }
    this.#mediaVersion = event.version;
    if (!leg) return false;
    const { sdpType, sdp } = event.session;
    try {
      if (sdpType === 'offer') await leg.applyOffer(sdp);
      else await leg.applyAnswer(sdp);
    } catch (err) {
      log.warn({ err, version: event.version }, 'media_update could not be applied');
      return false;
    }
    log.info({ version: event.version, sdpType }, 'media_update applied');
    this.remoteAnswered();
    return true;
  }

  /** A call_status webhook arrived. */
  statusArrived(status: string): void {
    this.#statusesSeen.add(status);
    this.#statusWaiters.get(status)?.();
  }

  /**
   * Resolves when call_status `status` arrives (at once when it already did: it can arrive while the call still
   * awaits an earlier step, such as applying Meta's answer on the media thread); rejects after `timeoutMs`.
   */
  waitStatus(status: string, timeoutMs: number): Promise<void> {
    if (this.#statusesSeen.has(status)) return Promise.resolve();
    const wait = this.#timers.waiter(timeoutMs, `timed out waiting for call_status ${status}`);
    this.#statusWaiters.set(status, wait.resolve);
    return wait.promise.finally(() => this.#statusWaiters.delete(status));
  }

  /** Meta's SDP answer was applied. */
  remoteAnswered(): void {
    this.remoteAnswerApplied = true;
    this.#onRemoteAnswer?.();
  }

  /** Resolves when Meta's SDP answer is applied; rejects after `timeoutMs`. */
  waitRemoteAnswer(timeoutMs: number): Promise<void> {
    const wait = this.#timers.waiter(timeoutMs, 'no SDP answer from Meta');
    this.#onRemoteAnswer = wait.resolve;
    return wait.promise.finally(() => (this.#onRemoteAnswer = undefined));
  }
}
