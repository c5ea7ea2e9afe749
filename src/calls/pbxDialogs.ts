/**
 * The PBX dialogs of one call: the current one (the call's), and those a transfer replaced until their BYE went out.
 * Every BYE the call sends goes through `hangUp`. Events of a replaced dialog are ignored (its re-INVITE refused).
 */
import type { Logger } from 'pino';
import type { DtmfEvent, SipDialog, TransferRequest } from './ports.js';

export interface PbxDialogHandlers {
  /** The current dialog got a BYE. */
  bye(dialog: SipDialog): void;
  /** A digit by SIP INFO on the current dialog. */
  dtmf(event: DtmfEvent): void;
  /** A REFER on any of the call's dialogs. */
  refer(dialog: SipDialog, request: TransferRequest): void;
  /** A re-INVITE on the current dialog: the SDP answer (throws to refuse it). */
  reinvite(offer: string): string;
}

export class PbxDialogs {
  #current: SipDialog | undefined;
  /** Dialogs a transfer replaced, until their BYE went out. */
  readonly #former = new Set<SipDialog>();
  readonly #log: Logger;
  readonly #handlers: PbxDialogHandlers;

  constructor(log: Logger, handlers: PbxDialogHandlers) {
    this.#log = log;
    this.#handlers = handlers;
  }

  /** The call's dialog with the PBX (undefined before the PBX answered). */
  get current(): SipDialog | undefined {
    return this.#current;
  }

  /** `dialog` becomes the call's. */
  adopt(dialog: SipDialog): void {
    this.#current = dialog;
    dialog.on('bye', () => {
      if (dialog === this.#current) this.#handlers.bye(dialog);
    });
    dialog.on('dtmf', (event) => {
      if (dialog === this.#current) this.#handlers.dtmf(event);
    });
    dialog.setTransferHandler((request) => this.#handlers.refer(dialog, request));
    dialog.setReinviteHandler((offer) => {
      if (dialog !== this.#current) throw new Error('dialog replaced by a transfer');
      return this.#handlers.reinvite(offer);
    });
  }

  /** A transfer succeeded: `to` becomes the call's, `from` is kept to hang up until its BYE went out. */
  handOver(from: SipDialog, to: SipDialog): void {
    this.#former.add(from);
    this.adopt(to);
  }

  /** BYE to one dialog, unless it has ended already. Never rejects (a failure is logged). */
  async hangUp(dialog: SipDialog): Promise<void> {
    if (!dialog.ended) await dialog.end().catch((err: unknown) => this.#log.warn({ err }, 'BYE failed'));
    this.#former.delete(dialog);
  }

  /** BYE to every dialog a transfer replaced that is still up. */
  hangUpFormer(): Promise<void>[] {
    return [...this.#former].map((dialog) => this.hangUp(dialog));
  }
}
