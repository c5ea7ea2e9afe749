/**
 * INVITEs that reuse the Call-ID of an INVITE still waiting for its final response.
 *
 * drachtio-srf (written against 5.0.29) tracks the INVITEs it has not answered yet by Call-ID alone
 * (`Agent.pendingNetworkInvites` in lib/drachtio-agent.js): a second INVITE with the same Call-ID replaces the first
 * there, and the final response to it deletes the entry, so a CANCEL of the first INVITE would be dropped and the
 * call would ring on. After refusing the duplicate, `restore` puts the first INVITE back.
 */
import type { Logger } from 'pino';
import { installedVersion } from '../core/dependencyPatch.js';
import { DRACHTIO_SRF_PATCHED_VERSION as SRF_VERSION_WRITTEN_FOR } from './drachtioSrfPatches.js';
import type { SrfRequest, SrfResponse } from './srfTypes.js';

interface AgentInternals {
  mapServer?: Map<unknown, { pendingNetworkInvites?: Map<string, { req: SrfRequest; res: SrfResponse }> }>;
}

export class PendingInvites {
  readonly #log: Logger;
  readonly #byCallId = new Map<string, { req: SrfRequest; res: SrfResponse }>();
  readonly #srfVersion = installedVersion('drachtio-srf');
  #warned = false;

  constructor(log: Logger) {
    this.#log = log;
    if (this.#srfVersion !== SRF_VERSION_WRITTEN_FOR) {
      log.warn(
        { installed: this.#srfVersion, writtenFor: SRF_VERSION_WRITTEN_FOR },
        'drachtio-srf version differs from the one the duplicate Call-ID handling was written for: it is checked at each use',
      );
    }
  }

  /** The INVITE still waiting for its final response under `callId`, if any. */
  get(callId: string): { req: SrfRequest; res: SrfResponse } | undefined {
    return this.#byCallId.get(callId);
  }

  /** Track `req` until its final response is sent. */
  track(callId: string, req: SrfRequest, res: SrfResponse): void {
    this.#byCallId.set(callId, { req, res });
    res.once('finish', () => {
      if (this.#byCallId.get(callId)?.req === req) this.#byCallId.delete(callId);
    });
  }

  /** After the duplicate's final response: make srf route a CANCEL for `callId` to the first INVITE again. */
  restore(callId: string): void {
    const first = this.#byCallId.get(callId);
    if (!first) return;
    const agent = (first.req as unknown as { agent?: AgentInternals; socket?: unknown }).agent;
    const socket = (first.req as unknown as { socket?: unknown }).socket;
    const pending = agent?.mapServer?.get(socket)?.pendingNetworkInvites;
    if (!pending) {
      if (!this.#warned) {
        this.#warned = true;
        this.#log.error(
          { installed: this.#srfVersion, writtenFor: SRF_VERSION_WRITTEN_FOR },
          'cannot reach drachtio-srf pending INVITEs: after a duplicate Call-ID, a CANCEL of the first INVITE is lost',
        );
      }
      return;
    }
    pending.set(callId, first);
  }
}
