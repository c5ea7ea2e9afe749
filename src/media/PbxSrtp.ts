/**
 * SRTP on the PBX leg: the two contexts of one call (ours to protect what we send, the PBX's to check and decrypt what
 * it sends) and the rule for renegotiation. Owned by the call's PbxRtpSocket, which calls it where packets cross the
 * socket; keys arrive from the SDP (SDES, media/sdes.ts) through `set`.
 *
 * A new SDP that carries the same key keeps its context (its ROC, SRTCP index and replay window go on); a new key
 * starts a new context. Our own key changes only when the negotiation changes it (another suite or tag chosen).
 */
import { SrtpContext } from '../core/srtp.js';
import type { SrtpDropReason, SrtpProfileId } from '../core/srtp.js';
import type { RtpDropReason } from '../core/rtp.js';

/** One direction's master key, as negotiated. Secret: never logged. */
export interface SrtpKeyMaterial {
  profile: SrtpProfileId;
  masterKey: Buffer;
  masterSalt: Buffer;
  /** Master key lifetime, packets (the SDP's lifetime field). */
  lifetime?: number;
}

/** Both directions; `remote` is absent while our offer awaits the PBX's answer (nothing can be received yet). */
export interface PbxSrtpKeys {
  local: SrtpKeyMaterial;
  remote?: SrtpKeyMaterial;
}

/** The drop-reason label for an SRTP refusal ('no_key': a packet before the PBX's key is known). */
export const SRTP_DROP_LABELS: Record<SrtpDropReason | 'no_key', RtpDropReason> = {
  auth: 'srtp_auth',
  no_key: 'srtp_auth',
  replay: 'srtp_replay',
  expired: 'srtp_expired',
  malformed: 'malformed',
};

function sameKey(a: SrtpKeyMaterial | undefined, b: SrtpKeyMaterial | undefined): boolean {
  return (
    a !== undefined &&
    b !== undefined &&
    a.profile === b.profile &&
    a.lifetime === b.lifetime &&
    a.masterKey.equals(b.masterKey) &&
    a.masterSalt.equals(b.masterSalt)
  );
}

export class PbxSrtp {
  #local?: { key: SrtpKeyMaterial; context: SrtpContext };
  #remote?: { key: SrtpKeyMaterial; context: SrtpContext };

  /** Apply negotiated keys. Returns which contexts were created anew (for the log). */
  set(keys: PbxSrtpKeys): { newLocal: boolean; newRemote: boolean } {
    const newLocal = !sameKey(this.#local?.key, keys.local);
    if (newLocal) this.#local = { key: keys.local, context: new SrtpContext(keys.local) };
    const newRemote = keys.remote !== undefined && !sameKey(this.#remote?.key, keys.remote);
    if (keys.remote === undefined) this.#remote = undefined;
    else if (newRemote) this.#remote = { key: keys.remote, context: new SrtpContext(keys.remote) };
    return { newLocal, newRemote };
  }

  /** The profile in use toward the PBX. */
  get profile(): SrtpProfileId | undefined {
    return this.#local?.context.profile;
  }

  /** Protects an outgoing packet; undefined when our key's lifetime is used up (the packet is not sent). */
  protect(packet: Buffer, rtcp: boolean): Buffer | undefined {
    const context = this.#local!.context;
    if (context.expired) return undefined;
    return rtcp ? context.protectRtcp(packet) : context.protectRtp(packet);
  }

  /** Checks and decrypts an incoming packet in place; the plain packet, or why it was refused. */
  unprotect(packet: Buffer, rtcp: boolean): Buffer | SrtpDropReason | 'no_key' {
    const context = this.#remote?.context;
    if (context === undefined) return 'no_key';
    return rtcp ? context.unprotectRtcp(packet) : context.unprotectRtp(packet);
  }
}
