/**
 * Transfer by REFER from the PBX, for one call: REFER -> 202, NOTIFY 100 -> INVITE to the target -> its 200 -> media
 * re-targeted, NOTIFY 200, BYE to the transferor. A failure leaves the call with the transferor (NOTIFY of the
 * failure). The Messenger leg is untouched; only the PBX dialog and the media's PBX target change.
 *
 * The call (`TransferHost`) keeps the state machine, the dialogs and the teardown; this module decides whether a REFER
 * is carried out and runs it from `active` through `transferring` and back (`refer`, `transfer_over`).
 */
import type { Logger } from 'pino';
import type { CallEvent, CallState, Ending } from './callState.js';
import { TRANSFER_FAILURES, TRANSFER_REFUSALS, transferFailureFor, type SipStatus } from './outcomes.js';
import type { PbxDialogs } from './pbxDialogs.js';
import { checkTransferTarget, defaultTransferHosts } from './transferPolicy.js';
import type { CallMedia, CallMetricsSink, OutboundCallResult, SipDialog, SipPort, TransferRequest, TransferResult } from './ports.js';

export interface TransferOptions {
  /** false: a REFER is answered 403. */
  enabled: boolean;
  /** Hosts (name or address, any port) a Refer-To may point at; absent: the hosts of the route's targets and the PBX the dialog is with. */
  allowedHosts?: readonly string[];
  /** How long the transfer target may ring when the call's route names no timeout (business-initiated), ms. */
  targetTimeoutMs: number;
}

/** Ring time of a transfer target when neither the route nor the options say (ms). */
const DEFAULT_TRANSFER_TIMEOUT_MS = 30_000;

/** What a transfer needs from its call. */
export interface TransferHost {
  readonly log: Logger;
  /** Aborts when the call ends (cancels the INVITE to the target). */
  readonly signal: AbortSignal;
  state(): CallState;
  ended(): boolean;
  media(): CallMedia | undefined;
  /** The call's PBX dialogs: the current one, the hand-over to the target's, and the one way to send a BYE. */
  readonly dialogs: Pick<PbxDialogs, 'current' | 'handOver' | 'hangUp'>;
  /** The route's ring time per target, if it names one (ms). */
  routeTargetTimeoutMs(): number | undefined;
  /** The route's targets (their hosts are where a transfer may go by default). */
  routeTargets(): readonly string[];
  /** The caller-context headers of the call's INVITEs (PSID, page, Meta call id). */
  callerHeaders(): Record<string, string>;
  /** Is `event` allowed now? A refused event is counted. */
  permits(event: CallEvent, why: string): boolean;
  /** Apply `event`; false (and counted) when the state machine refuses it. */
  apply(event: CallEvent, why: string): boolean;
  end(ending: Ending): void;
}

export interface TransferDeps {
  sip: SipPort;
  metrics?: CallMetricsSink;
  /** Absent: transfers allowed to any host, with the default timeout. */
  options: TransferOptions | undefined;
  /** From user part of the INVITE to the target. */
  fromUser: string;
}

/** A transfer under way. */
interface Transfer {
  /** The dialog the REFER came on (the transferor's). */
  from: SipDialog;
  request: TransferRequest;
  startedAt: number;
  /** Settles when the transfer is over, whatever its outcome (awaited by the teardown). */
  done?: Promise<void>;
}

const CANCELED = { reason: 'the call ended during the transfer' };

/** Transfers of one call by result, and the last target (for the call summary). */
type TransferCounts = Record<TransferResult, number> & { lastTarget: string | undefined };

/** The transfers of one call. */
export class CallTransfers {
  readonly #host: TransferHost;
  readonly #deps: TransferDeps;
  #current: Transfer | undefined;
  /** Transfers of this call, for the summary line. */
  readonly #counts: TransferCounts = { succeeded: 0, failed: 0, refused: 0, canceled: 0, lastTarget: undefined };

  constructor(host: TransferHost, deps: TransferDeps) {
    this.#host = host;
    this.#deps = deps;
  }

  /** The transferor's dialog while a transfer is under way. */
  get transferor(): SipDialog | undefined {
    return this.#current?.from;
  }

  /** The target of the transfer under way. */
  get target(): string | undefined {
    return this.#current?.request.target;
  }

  /** Settles when the transfer under way is over (undefined when none is). */
  get settled(): Promise<void> | undefined {
    return this.#current?.done;
  }

  /** For the call summary: counts by result and the last target; undefined when the call had no REFER. */
  summary(): Readonly<TransferCounts> | undefined {
    const c = this.#counts;
    return c.succeeded + c.failed + c.refused + c.canceled > 0 ? { ...c } : undefined;
  }

  /** A REFER arrived on `dialog`: refuse it, or accept it (202) and carry it out. */
  onRequest(dialog: SipDialog, request: TransferRequest): void {
    const host = this.#host;
    const settings = this.#deps.options;
    const attended = Object.keys(request.headers).some((name) => name.toLowerCase() === 'replaces');
    host.log.info({ target: request.target, referredBy: request.referredBy, attended }, 'REFER received');
    const refuse = ({ status, reason }: SipStatus): void => {
      host.log.warn({ target: request.target, status, reason, state: host.state() }, 'REFER refused');
      this.#counts.refused++;
      this.#deps.metrics?.transfer?.('refused');
      request.reject(status, reason);
    };
    if (settings && !settings.enabled) return refuse(TRANSFER_REFUSALS.disabled);
    if (this.#current) return refuse(TRANSFER_REFUSALS.inProgress);
    if (dialog !== host.dialogs.current) return refuse(TRANSFER_REFUSALS.dialogReplaced);
    if (!host.permits('refer', `REFER to ${request.target}`)) return refuse(TRANSFER_REFUSALS.notBridged);
    const allowed = settings?.allowedHosts ?? defaultTransferHosts(host.routeTargets(), dialog.peerAddress);
    const verdict = checkTransferTarget(request.target, request.headers, allowed);
    if (!verdict.ok) return refuse(verdict);
    request.accept();
    const transfer: Transfer = { from: dialog, request, startedAt: Date.now() };
    this.#current = transfer;
    this.#counts.lastTarget = request.target;
    host.apply('refer', `REFER to ${request.target}`);
    transfer.done = this.#run(transfer)
      .catch((err: unknown) => host.log.error({ err }, 'transfer failed unexpectedly'))
      .finally(() => {
        if (this.#current === transfer) this.#current = undefined;
      });
  }

  async #run(transfer: Transfer): Promise<void> {
    const host = this.#host;
    const { request } = transfer;
    const media = host.media();
    if (!media || media.closed) return this.#failed(transfer, TRANSFER_FAILURES.noMedia);
    const headers: Record<string, string> = {
      ...request.headers,
      ...(request.referredBy ? { 'Referred-By': request.referredBy } : {}),
      ...host.callerHeaders(),
    };
    const targetTimeoutMs = host.routeTargetTimeoutMs() || this.#deps.options?.targetTimeoutMs || DEFAULT_TRANSFER_TIMEOUT_MS;
    let result: OutboundCallResult;
    try {
      const sdp = media.createPbxOffer();
      host.log.info({ target: request.target, targetTimeoutMs }, 'transfer: INVITE sent');
      result = await this.#deps.sip.invite({
        targets: [request.target],
        headers,
        from: { user: this.#deps.fromUser },
        sdp,
        targetTimeoutMs,
        signal: host.signal,
        onProgress: (status, target) => host.log.info({ status, target }, 'transfer target is ringing'),
      });
    } catch (err) {
      if (host.ended()) return this.#over(transfer, 'canceled', CANCELED);
      return this.#failed(transfer, transferFailureFor(err));
    }
    if (host.ended()) {
      // Ended while the 200 OK was on its way: that dialog needs its BYE too.
      await host.dialogs.hangUp(result.dialog);
      return this.#over(transfer, 'canceled', CANCELED);
    }
    const previousCodec = media.pbxCodec;
    try {
      media.applyPbxAnswer(result.sdp);
      media.start();
    } catch (err) {
      host.log.warn({ err, target: result.target }, 'transfer target answered with an unusable SDP: hanging it up');
      await host.dialogs.hangUp(result.dialog);
      return this.#failed(transfer, TRANSFER_FAILURES.unusableAnswer);
    }
    const transferor = transfer.from;
    host.dialogs.handOver(transferor, result.dialog);
    this.#over(transfer, 'succeeded', { codec: media.pbxCodec, previousCodec });
    host.apply('transfer_over', `transferred to ${result.target}`);
    await request.notifyFinal(200, 'OK');
    if (!transferor.ended) host.log.info('transfer: BYE to the transferor');
    await host.dialogs.hangUp(transferor);
  }

  /** The transfer target did not take the call: it stays with the transferor, whose media were never moved. */
  async #failed(transfer: Transfer, { status, reason }: SipStatus): Promise<void> {
    const host = this.#host;
    if (host.ended()) {
      // The call ended while the failure was being handled (a BYE to a target with an unusable answer).
      return this.#over(transfer, 'canceled', { ...CANCELED, status });
    }
    this.#over(transfer, 'failed', { status, reason });
    if (transfer.from.ended) {
      host.end({ outcome: 'completed', reason: `transfer failed (${status}) after the transferor hung up`, meta: 'auto', sip: 'none' });
      return;
    }
    host.apply('transfer_over', `transfer failed (${status}); the call stays with the transferor`);
    await transfer.request.notifyFinal(status, reason);
  }

  #over(transfer: Transfer, result: TransferResult, detail: Record<string, unknown>): void {
    if (this.#current === transfer) this.#current = undefined;
    this.#counts[result]++;
    this.#deps.metrics?.transfer?.(result);
    this.#host.log.info({ target: transfer.request.target, result, ms: Date.now() - transfer.startedAt, ...detail }, `transfer ${result}`);
  }
}
