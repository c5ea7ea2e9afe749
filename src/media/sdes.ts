/**
 * SDES (RFC 4568): the `a=crypto` attribute that carries SRTP master keys in SDP, for the PBX leg.
 *
 * `a=crypto:<tag> <crypto-suite> inline:<base64 key||salt>[|<lifetime>][|<MKI>:<MKI length>][;inline:...] [<session params>]`
 *
 * Suites: AES_CM_128_HMAC_SHA1_80 and AES_CM_128_HMAC_SHA1_32 (RFC 4568), AEAD_AES_128_GCM and AEAD_AES_256_GCM
 * (RFC 7714 section 12). What the bridge does not do, and therefore refuses in an offer line (the line is skipped; an
 * offer with no usable line is refused with the reasons): MKI (one key per direction, renewed by a new offer), more
 * than one key, a key derivation rate (KDR), unencrypted or unauthenticated SRTP/SRTCP, FEC keys, and unknown
 * mandatory session parameters (RFC 4568 6.3.7: a parameter starting with '-' is optional and ignored).
 *
 * Key material is never put into an error message: errors name the tag, suite and lengths only.
 */
import { randomBytes } from 'node:crypto';
import {
  SRTP_AEAD_AES_128_GCM,
  SRTP_AEAD_AES_256_GCM,
  SRTP_AES128_CM_HMAC_SHA1_32,
  SRTP_AES128_CM_HMAC_SHA1_80,
  srtpMasterKeyLength,
  srtpMasterSaltLength,
} from '../core/srtp.js';
import type { SrtpProfileId } from '../core/srtp.js';
import { MediaError } from '../core/errors.js';

/** The SDES crypto suites the bridge implements, and their SRTP profile. */
export const SDES_SUITES = {
  AES_CM_128_HMAC_SHA1_80: SRTP_AES128_CM_HMAC_SHA1_80,
  AES_CM_128_HMAC_SHA1_32: SRTP_AES128_CM_HMAC_SHA1_32,
  AEAD_AES_128_GCM: SRTP_AEAD_AES_128_GCM,
  AEAD_AES_256_GCM: SRTP_AEAD_AES_256_GCM,
} as const satisfies Record<string, SrtpProfileId>;

export type SdesSuite = keyof typeof SDES_SUITES;

/** The suites in our offers, in order of preference (the 80-bit tag first: what every SRTP PBX speaks). */
export const SDES_OFFER_SUITES: readonly SdesSuite[] = ['AES_CM_128_HMAC_SHA1_80', 'AES_CM_128_HMAC_SHA1_32'];

/** Largest lifetime RFC 4568 allows for these suites: 2^48 SRTP packets. */
const MAX_LIFETIME = 2 ** 48;

/** One master key of an `a=crypto` line. */
export interface SdesKey {
  masterKey: Buffer;
  masterSalt: Buffer;
  /** Master key lifetime, packets; absent: the suite's maximum. */
  lifetime?: number;
  /** MKI value and its length in bytes, when the line has one (the bridge refuses it). */
  mki?: { value: number; length: number };
}

/** A parsed `a=crypto` attribute (value after `a=crypto:`). */
export interface SdesCrypto {
  tag: number;
  suite: SdesSuite;
  keys: SdesKey[];
  /** Session parameters as written (e.g. `KDR=1`, `WSH=128`). */
  sessionParams: string[];
}

function invalid(message: string): MediaError {
  return new MediaError('SDES_INVALID', message);
}

function isSdesSuite(name: string): name is SdesSuite {
  return Object.hasOwn(SDES_SUITES, name);
}

/** `2^20` or a decimal count. */
function parseLifetime(text: string, where: string): number {
  const power = /^2\^(\d{1,2})$/.exec(text);
  const value = power ? 2 ** Number(power[1]) : /^\d{1,15}$/.test(text) ? Number(text) : NaN;
  if (!Number.isFinite(value) || value < 1 || value > MAX_LIFETIME) {
    throw invalid(`${where}: lifetime '${text}' is not a packet count between 1 and 2^48`);
  }
  return value;
}

function parseKey(keyParam: string, suite: SdesSuite, where: string): SdesKey {
  if (!keyParam.startsWith('inline:')) {
    throw invalid(`${where}: key method must be 'inline:' (RFC 4568 6.1), got '${keyParam.split(':')[0]}'`);
  }
  const [base64, ...rest] = keyParam.slice('inline:'.length).split('|');
  const profile = SDES_SUITES[suite];
  const keyLength = srtpMasterKeyLength(profile);
  const saltLength = srtpMasterSaltLength(profile);
  if (base64 === undefined || !/^[A-Za-z0-9+/]+={0,2}$/.test(base64) || base64.length % 4 !== 0) {
    throw invalid(`${where}: the inline key is not base64`);
  }
  const material = Buffer.from(base64, 'base64');
  if (material.length !== keyLength + saltLength) {
    throw invalid(
      `${where}: ${suite} needs ${keyLength + saltLength} bytes of master key and salt (${keyLength} + ${saltLength}), the inline key has ${material.length}`,
    );
  }
  const key: SdesKey = { masterKey: material.subarray(0, keyLength), masterSalt: material.subarray(keyLength) };
  if (rest.length > 2) throw invalid(`${where}: too many '|' fields after the key`);
  for (const field of rest) {
    const mki = /^(\d{1,20}):(\d{1,3})$/.exec(field);
    if (mki) {
      const length = Number(mki[2]);
      if (length < 1 || length > 128) throw invalid(`${where}: MKI length ${length} is not between 1 and 128`);
      key.mki = { value: Number(mki[1]), length };
    } else if (key.lifetime === undefined && key.mki === undefined) {
      key.lifetime = parseLifetime(field, where);
    } else {
      throw invalid(`${where}: '${field}' is neither a lifetime nor an MKI`);
    }
  }
  return key;
}

/**
 * Parses the value of one `a=crypto` attribute. Throws MediaError('SDES_INVALID') for a malformed line or a key of
 * the wrong length, and MediaError('SDES_UNSUPPORTED') for a suite the bridge does not implement. Parsing accepts
 * what RFC 4568 allows (MKI, several keys, session parameters); `sdesRefusal` says whether the bridge can use it.
 */
export function parseSdesCrypto(value: string): SdesCrypto {
  const parts = value.trim().split(/\s+/);
  const [tagText, suite, keyParams, ...sessionParams] = parts;
  if (tagText === undefined || !/^\d{1,9}$/.test(tagText)) throw invalid(`a=crypto: tag '${tagText ?? ''}' is not a number`);
  const where = `a=crypto tag ${tagText}`;
  if (suite === undefined || keyParams === undefined) throw invalid(`${where}: needs a crypto suite and key parameters`);
  if (!isSdesSuite(suite)) {
    throw new MediaError('SDES_UNSUPPORTED', `${where}: crypto suite ${suite} is not supported (${Object.keys(SDES_SUITES).join(', ')})`);
  }
  const keys = keyParams.split(';').map((k) => parseKey(k, suite, where));
  return { tag: Number(tagText), suite, keys, sessionParams };
}

/** Session parameters we can honour: a window size hint, and FEC order (we use no FEC, so the order is moot). */
const HARMLESS_PARAMS = /^(WSH=\d+|FEC_ORDER=(FEC_SRTP|SRTP_FEC))$/;

/** Why the bridge cannot use this line, or undefined when it can. */
export function sdesRefusal(crypto: SdesCrypto): string | undefined {
  const where = `a=crypto tag ${crypto.tag} (${crypto.suite})`;
  if (crypto.keys.length !== 1) return `${where}: ${crypto.keys.length} master keys; the bridge takes one key without MKI`;
  if (crypto.keys[0]!.mki !== undefined) return `${where}: MKI is not supported; offer the key without an MKI field`;
  for (const param of crypto.sessionParams) {
    if (param.startsWith('-') || HARMLESS_PARAMS.test(param)) continue;
    return `${where}: session parameter ${param.split('=')[0]} is not supported`;
  }
  return undefined;
}

/**
 * Picks the first usable line in the offerer's order (RFC 4568 7.1.1: the offerer lists them by preference).
 * Returns the choice, or the reasons every line was refused (for a 488's Reason header).
 */
export function chooseSdesCrypto(values: readonly string[]): { crypto: SdesCrypto } | { reasons: string[] } {
  const reasons: string[] = [];
  for (const value of values) {
    let crypto: SdesCrypto;
    try {
      crypto = parseSdesCrypto(value);
    } catch (err) {
      reasons.push((err as Error).message);
      continue;
    }
    const refusal = sdesRefusal(crypto);
    if (refusal === undefined) return { crypto };
    reasons.push(refusal);
  }
  if (values.length === 0) reasons.push('no a=crypto line');
  return { reasons };
}

/** A new line with a fresh random key (crypto.randomBytes) for `suite`, no lifetime (the suite's maximum), no MKI. */
export function newSdesCrypto(tag: number, suite: SdesSuite): SdesCrypto {
  const profile = SDES_SUITES[suite];
  return {
    tag,
    suite,
    keys: [{ masterKey: randomBytes(srtpMasterKeyLength(profile)), masterSalt: randomBytes(srtpMasterSaltLength(profile)) }],
    sessionParams: [],
  };
}

/** The value of an `a=crypto` attribute for `crypto` (without `a=crypto:`). */
export function formatSdesCrypto(crypto: SdesCrypto): string {
  const keys = crypto.keys
    .map((k) => {
      let text = `inline:${Buffer.concat([k.masterKey, k.masterSalt]).toString('base64')}`;
      if (k.lifetime !== undefined) {
        const exponent = Math.log2(k.lifetime);
        text += `|${Number.isInteger(exponent) ? `2^${exponent}` : k.lifetime}`;
      }
      if (k.mki !== undefined) text += `|${k.mki.value}:${k.mki.length}`;
      return text;
    })
    .join(';');
  return [String(crypto.tag), crypto.suite, keys, ...crypto.sessionParams].join(' ');
}

/** The SRTP profile of a suite. */
export function sdesProfile(suite: SdesSuite): SrtpProfileId {
  return SDES_SUITES[suite];
}
