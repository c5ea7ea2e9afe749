/**
 * The SDES side of one call's SDP toward the PBX: what we offer, what we accept, and which keys each direction uses,
 * by the call's `media.srtp` mode:
 *
 * | mode       | PBX offers RTP/AVP | PBX offers RTP/SAVP | our INVITEs offer | PBX answers RTP/AVP to our SAVP |
 * |------------|--------------------|---------------------|-------------------|---------------------------------|
 * | `off`      | plain RTP          | 488                 | RTP/AVP           | -                               |
 * | `optional` | plain RTP          | SRTP                | RTP/AVP           | -                               |
 * | `prefer`   | plain RTP          | SRTP                | RTP/SAVP          | plain RTP, with a warning       |
 * | `required` | 488                | SRTP                | RTP/SAVP          | call fails (BYE)                |
 *
 * `optional` does not offer SRTP because one SDP offer cannot say "SRTP if you can": a PBX without SRTP refuses an
 * RTP/SAVP offer (488), it does not fall back. `prefer` is for PBXs known to take SRTP, or to answer RTP/AVP to it.
 *
 * Keys: one fresh random key per offered suite and per call (reused when the call offers again, e.g. a transfer); an
 * answer keeps our key when the PBX picks the same suite again (re-INVITE, hold), else makes a new one. The PBX's key
 * is whatever its latest SDP says (PbxSrtp keeps the context when it did not change).
 */
import type { Logger } from 'pino';
import type { SrtpMode } from '../calls/ports.js';
import { MediaError } from '../core/errors.js';
import type { PbxSrtpKeys, SrtpKeyMaterial } from './PbxSrtp.js';
import type { ParsedPbxSdp } from './pbxSdp.js';
import { SDES_OFFER_SUITES, chooseSdesCrypto, formatSdesCrypto, newSdesCrypto, parseSdesCrypto, sdesProfile, sdesRefusal } from './sdes.js';
import type { SdesCrypto } from './sdes.js';


function material(crypto: SdesCrypto): SrtpKeyMaterial {
  const key = crypto.keys[0]!;
  return {
    profile: sdesProfile(crypto.suite),
    masterKey: key.masterKey,
    masterSalt: key.masterSalt,
    ...(key.lifetime !== undefined ? { lifetime: key.lifetime } : {}),
  };
}

function refused(message: string): MediaError {
  return new MediaError('SRTP_NEGOTIATION', message);
}

export class SdesSession {
  readonly mode: SrtpMode;
  readonly #log: Logger;
  /** Our offer's lines (made once per call). */
  #offered?: SdesCrypto[];
  /** Our key in use, and the suite negotiated (undefined: plain RTP). */
  #local?: SdesCrypto;

  constructor(mode: SrtpMode, log: Logger) {
    this.mode = mode;
    this.#log = log;
  }

  /** The negotiated suite, when SRTP is in use. */
  get suite(): string | undefined {
    return this.#local?.suite;
  }

  /** The `a=crypto` values of our offer; empty for a plain RTP/AVP offer. */
  offer(): string[] {
    if (this.mode !== 'prefer' && this.mode !== 'required') return [];
    this.#offered ??= SDES_OFFER_SUITES.map((suite, i) => newSdesCrypto(i + 1, suite));
    return this.#offered.map(formatSdesCrypto);
  }

  /** The keys the PBX's answer to our offer selects (undefined: plain RTP). Throws MediaError('SRTP_NEGOTIATION'). */
  answered(parsed: ParsedPbxSdp): PbxSrtpKeys | undefined {
    const offered = this.mode === 'prefer' || this.mode === 'required' ? this.#offered : undefined;
    if (!parsed.secure) {
      if (offered === undefined) return this.#plain();
      if (this.mode === 'required') {
        throw refused(`the PBX answered plain ${parsed.audio.protocol} to our RTP/SAVP offer and media.srtp is required`);
      }
      this.#log.warn({ protocol: parsed.audio.protocol }, 'the PBX answered plain RTP to our SRTP offer (media.srtp: prefer): audio is not encrypted');
      return this.#plain();
    }
    if (offered === undefined) throw refused(`the PBX answered ${parsed.audio.protocol} to a plain RTP/AVP offer`);
    const reasons: string[] = [];
    for (const value of parsed.crypto) {
      let answer: SdesCrypto;
      try {
        answer = parseSdesCrypto(value);
      } catch (err) {
        reasons.push((err as Error).message);
        continue;
      }
      const ours = offered.find((o) => o.tag === answer.tag && o.suite === answer.suite);
      const refusal = ours ? sdesRefusal(answer) : `a=crypto tag ${answer.tag} (${answer.suite}) is not one we offered`;
      if (ours === undefined || refusal !== undefined) {
        reasons.push(refusal!);
        continue;
      }
      this.#local = ours;
      return { local: material(ours), remote: material(answer) };
    }
    throw refused(`the PBX's SRTP answer has no usable key: ${reasons.join('; ') || 'no a=crypto line'}`);
  }

  /**
   * Answers an offer from the PBX: the keys and our `a=crypto` value, or undefined for plain RTP. Throws
   * MediaError('SRTP_NEGOTIATION') (answered 488 with the message as Reason).
   */
  answer(parsed: ParsedPbxSdp): { keys: PbxSrtpKeys; crypto: string } | undefined {
    if (!parsed.secure) {
      if (this.mode === 'required') {
        throw refused(`SRTP required (media.srtp: required) and the PBX offered plain ${parsed.audio.protocol}`);
      }
      return this.#plain();
    }
    if (this.mode === 'off') throw refused(`the PBX offered SRTP (${parsed.audio.protocol}) and media.srtp is off`);
    const choice = chooseSdesCrypto(parsed.crypto);
    if ('reasons' in choice) throw refused(`no usable SDES key in the PBX's offer: ${choice.reasons.join('; ')}`);
    const theirs = choice.crypto;
    const kept = this.#local?.suite === theirs.suite ? this.#local : undefined;
    const ours: SdesCrypto = kept ? { ...kept, tag: theirs.tag } : newSdesCrypto(theirs.tag, theirs.suite);
    this.#local = ours;
    return { keys: { local: material(ours), remote: material(theirs) }, crypto: formatSdesCrypto(ours) };
  }

  #plain(): undefined {
    this.#local = undefined;
    return undefined;
  }
}
