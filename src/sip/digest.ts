/**
 * SIP digest authentication (RFC 2617 / RFC 3261 section 22), server side: challenges with signed, expiring
 * nonces and verification of `Authorization` answers (MD5, qop=auth or none), bound to the request's URI, with
 * replayed answers refused.
 * `digestResponse` is also what a client computes, so tests (and a fake PBX) can answer challenges.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

export interface DigestCredentials {
  realm: string;
  username: string;
  password: string;
}

/** Parameters of a `Digest` Authorization / WWW-Authenticate header, keys lower-cased. */
export type DigestParams = Record<string, string>;

export type DigestVerdict =
  | { ok: true; username: string }
  /**
   * `stale`: the answer was right but for an expired or already used nonce (or nonce count); re-challenge with
   * `stale=true`, and the client answers the new nonce without asking its user again.
   */
  | {
      ok: false;
      reason: 'missing' | 'malformed' | 'wrong_realm' | 'wrong_user' | 'wrong_uri' | 'bad_nonce' | 'bad_response' | 'replayed';
      stale: boolean;
    };

const md5 = (text: string): string => createHash('md5').update(text).digest('hex');

/** Parse `Digest a="b", c=d` into lower-cased keys. Returns undefined for another scheme or garbage. */
export function parseDigestHeader(header: string | undefined): DigestParams | undefined {
  if (!header) return undefined;
  const match = /^\s*Digest\s+(.*)$/is.exec(header);
  if (!match) return undefined;
  const params: DigestParams = {};
  const re = /([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))\s*(?:,|$)/gy;
  const text = match[1]!.trim();
  re.lastIndex = 0;
  let pos = 0;
  while (pos < text.length) {
    re.lastIndex = pos;
    const m = re.exec(text);
    if (!m) return undefined;
    params[m[1]!.toLowerCase()] = m[2] !== undefined ? m[2].replace(/\\(.)/g, '$1') : m[3]!;
    pos = re.lastIndex;
    while (pos < text.length && /\s/.test(text[pos]!)) pos++;
  }
  return params;
}

/** The digest `response` value for the given answer parameters (what a client puts in Authorization). */
export function digestResponse(options: {
  username: string;
  realm: string;
  password: string;
  method: string;
  uri: string;
  nonce: string;
  qop?: string;
  nc?: string;
  cnonce?: string;
}): string {
  const ha1 = md5(`${options.username}:${options.realm}:${options.password}`);
  const ha2 = md5(`${options.method}:${options.uri}`);
  if (options.qop) return md5(`${ha1}:${options.nonce}:${options.nc ?? ''}:${options.cnonce ?? ''}:${options.qop}:${ha2}`);
  return md5(`${ha1}:${options.nonce}:${ha2}`);
}

/** Build a client `Authorization` header answering `challenge` (a WWW-Authenticate value). */
export function buildAuthorization(
  challenge: string,
  request: { method: string; uri: string; username: string; password: string; cnonce?: string; nc?: number },
): string {
  const params = parseDigestHeader(challenge);
  if (!params?.realm || !params.nonce) throw new Error('not a digest challenge');
  const qop = params.qop?.split(',').map((q) => q.trim()).includes('auth') ? 'auth' : undefined;
  const nc = (request.nc ?? 1).toString(16).padStart(8, '0');
  const cnonce = request.cnonce ?? randomBytes(8).toString('hex');
  const response = digestResponse({
    username: request.username,
    realm: params.realm,
    password: request.password,
    method: request.method,
    uri: request.uri,
    nonce: params.nonce,
    qop,
    nc,
    cnonce,
  });
  const parts = [
    `username="${request.username}"`,
    `realm="${params.realm}"`,
    `nonce="${params.nonce}"`,
    `uri="${request.uri}"`,
    `response="${response}"`,
    'algorithm=MD5',
  ];
  if (qop) parts.push(`qop=${qop}`, `nc=${nc}`, `cnonce="${cnonce}"`);
  if (params.opaque !== undefined) parts.push(`opaque="${params.opaque}"`);
  return `Digest ${parts.join(', ')}`;
}

export interface DigestAuthenticatorOptions {
  credentials: DigestCredentials;
  /** How long a nonce is accepted (ms). Default 300 000. */
  nonceTtlMs?: number;
  /** Clock, for tests. Default Date.now. */
  now?: () => number;
  /**
   * Most nonces whose use is remembered for replay detection; beyond it the oldest are forgotten early (their
   * answers are then refused as stale and re-challenged, never accepted twice). Default 10 000.
   */
  maxTrackedNonces?: number;
}

/**
 * Digest authenticator. Nonces are `<issued ms, hex>.<HMAC>` under a random per-process key: only nonces this
 * process issued are accepted, and they expire by themselves. An accepted answer is remembered until its nonce
 * expires, so the same answer cannot be replayed: with qop=auth each answer must carry a higher nonce count (nc)
 * than the last one accepted for its nonce; without qop a nonce is good for one request. A replay is refused as
 * stale, so an honest client simply answers a new challenge while a replayed capture gets nowhere.
 */
export class DigestAuthenticator {
  readonly #credentials: DigestCredentials;
  readonly #ttlMs: number;
  readonly #now: () => number;
  readonly #key = randomBytes(32);
  readonly #maxTracked: number;
  /** Nonce -> highest nonce count accepted (0 without qop), in order of first use; pruned when expired. */
  readonly #used = new Map<string, { nc: number; issued: number }>();
  /** Nonces issued before this (ms) are refused as stale: their use may have been forgotten to keep memory bounded. */
  #forgottenBefore = -Infinity;

  constructor(options: DigestAuthenticatorOptions) {
    this.#credentials = options.credentials;
    this.#ttlMs = options.nonceTtlMs ?? 300_000;
    this.#now = options.now ?? Date.now;
    this.#maxTracked = Math.max(1, options.maxTrackedNonces ?? 10_000);
  }

  get realm(): string {
    return this.#credentials.realm;
  }

  #sign(issued: string): string {
    return createHmac('sha256', this.#key).update(issued).digest('base64url').slice(0, 22);
  }

  /** A fresh nonce. */
  createNonce(): string {
    const issued = this.#now().toString(16);
    return `${issued}.${this.#sign(issued)}`;
  }

  /** The WWW-Authenticate value of a 401 challenge. */
  challenge(stale = false): string {
    const parts = [`realm="${this.#credentials.realm}"`, `nonce="${this.createNonce()}"`, 'algorithm=MD5', 'qop="auth"'];
    if (stale) parts.push('stale=true');
    return `Digest ${parts.join(', ')}`;
  }

  /**
   * Check an `Authorization` header of a request with `method`. With `requestUri`, the answer's `uri` must name
   * the same resource (RFC 2617 section 3.2.2.5), so an answer captured from another request cannot be reused.
   */
  verify(authorization: string | undefined, method: string, requestUri?: string): DigestVerdict {
    if (!authorization) return { ok: false, reason: 'missing', stale: false };
    const p = parseDigestHeader(authorization);
    if (!p?.username || !p.realm || !p.nonce || !p.uri || !p.response) return { ok: false, reason: 'malformed', stale: false };
    if (p.algorithm && p.algorithm.toUpperCase() !== 'MD5') return { ok: false, reason: 'malformed', stale: false };
    if (p.realm !== this.#credentials.realm) return { ok: false, reason: 'wrong_realm', stale: false };
    if (p.username !== this.#credentials.username) return { ok: false, reason: 'wrong_user', stale: false };
    if (requestUri !== undefined && !sameUri(p.uri, requestUri)) return { ok: false, reason: 'wrong_uri', stale: false };
    const [issuedHex, signature] = p.nonce.split('.');
    if (!issuedHex || !signature || !safeEqual(signature, this.#sign(issuedHex))) {
      return { ok: false, reason: 'bad_nonce', stale: false };
    }
    const qop = p.qop;
    if (qop !== undefined && qop !== 'auth') return { ok: false, reason: 'malformed', stale: false };
    if (qop && (!p.nc || !p.cnonce)) return { ok: false, reason: 'malformed', stale: false };
    const nc = qop ? parseInt(p.nc!, 16) : 0;
    if (qop && !(nc > 0)) return { ok: false, reason: 'malformed', stale: false };
    const expected = digestResponse({
      username: p.username,
      realm: p.realm,
      password: this.#credentials.password,
      method,
      uri: p.uri,
      nonce: p.nonce,
      qop,
      nc: p.nc,
      cnonce: p.cnonce,
    });
    if (!safeEqual(p.response.toLowerCase(), expected)) return { ok: false, reason: 'bad_response', stale: false };
    const now = this.#now();
    const issued = parseInt(issuedHex, 16);
    const age = now - issued;
    if (!(age >= 0 && age <= this.#ttlMs)) return { ok: false, reason: 'bad_nonce', stale: true };
    this.#prune(now);
    const used = this.#used.get(p.nonce);
    if (issued < this.#forgottenBefore || (used && nc <= used.nc)) return { ok: false, reason: 'replayed', stale: true };
    if (used) used.nc = nc;
    else this.#used.set(p.nonce, { nc, issued });
    return { ok: true, username: p.username };
  }

  /** Nonces whose use is remembered (for tests and metrics). */
  get trackedNonces(): number {
    return this.#used.size;
  }

  #prune(now: number): void {
    for (const [nonce, entry] of this.#used) {
      if (now - entry.issued <= this.#ttlMs && this.#used.size < this.#maxTracked) break;
      // Entries are in order of first use, which follows issue time closely but not exactly: forget everything
      // issued up to this one, so no nonce whose use was forgotten can be answered again.
      this.#forgottenBefore = Math.max(this.#forgottenBefore, entry.issued + 1);
      this.#used.delete(nonce);
    }
  }
}

/** Digest `uri` and Request-URI name the same resource: equal, or equal ignoring case and URI parameters. */
function sameUri(digestUri: string, requestUri: string): boolean {
  if (digestUri === requestUri) return true;
  const bare = (uri: string): string => uri.trim().replace(/^<|>$/g, '').split(';')[0]!.toLowerCase();
  return bare(digestUri) === bare(requestUri);
}

function safeEqual(a: string, b: string): boolean {
  const ab = Buffer.from(a);
  const bb = Buffer.from(b);
  return ab.length === bb.length && timingSafeEqual(ab, bb);
}
