/**
 * A small SIP message model for the drachtio-server double: parse, edit headers in order, serialise.
 * Header names keep the spelling they were given; lookups are case-insensitive and know the compact forms.
 */
import { randomBytes } from 'node:crypto';

const CRLF = '\r\n';

const COMPACT: Record<string, string> = {
  i: 'call-id',
  m: 'contact',
  e: 'content-encoding',
  l: 'content-length',
  c: 'content-type',
  f: 'from',
  s: 'subject',
  k: 'supported',
  t: 'to',
  v: 'via',
  x: 'session-expires',
};

const CANONICAL: Record<string, string> = {
  via: 'Via',
  from: 'From',
  to: 'To',
  'call-id': 'Call-ID',
  cseq: 'CSeq',
  contact: 'Contact',
  'content-type': 'Content-Type',
  'content-length': 'Content-Length',
  'max-forwards': 'Max-Forwards',
  allow: 'Allow',
  accept: 'Accept',
  supported: 'Supported',
  require: 'Require',
  'session-expires': 'Session-Expires',
  'min-se': 'Min-SE',
  reason: 'Reason',
  'www-authenticate': 'WWW-Authenticate',
  authorization: 'Authorization',
  'user-agent': 'User-Agent',
  subject: 'Subject',
  event: 'Event',
  'subscription-state': 'Subscription-State',
  'refer-to': 'Refer-To',
  'referred-by': 'Referred-By',
  'retry-after': 'Retry-After',
  server: 'Server',
};

/** Lower-case long form of a header name. */
export function headerKey(name: string): string {
  const lower = name.trim().toLowerCase();
  return COMPACT[lower] ?? lower;
}

/** The spelling drachtio-server puts on the wire for known headers (it re-capitalises what srf lower-cases). */
export function canonicalName(name: string): string {
  return CANONICAL[headerKey(name)] ?? name;
}

export class SipMsg {
  kind: 'request' | 'response';
  method = '';
  uri = '';
  status = 0;
  reason = '';
  headers: Array<[string, string]> = [];
  body = '';

  constructor(kind: 'request' | 'response') {
    this.kind = kind;
  }

  static request(method: string, uri: string): SipMsg {
    const m = new SipMsg('request');
    m.method = method;
    m.uri = uri;
    return m;
  }

  static response(status: number, reason: string): SipMsg {
    const m = new SipMsg('response');
    m.status = status;
    m.reason = reason;
    return m;
  }

  static parse(text: string): SipMsg {
    const split = text.indexOf(CRLF + CRLF);
    const head = split >= 0 ? text.slice(0, split) : text.replace(/(\r\n)+$/, '');
    const rest = split >= 0 ? text.slice(split + 4) : '';
    const lines = head.split(CRLF);
    const start = lines.shift() ?? '';
    let msg: SipMsg;
    const resp = /^SIP\/2\.0 (\d{3}) ?(.*)$/.exec(start);
    if (resp) {
      msg = SipMsg.response(Number(resp[1]), resp[2] ?? '');
    } else {
      const req = /^([A-Z]+) (\S+) SIP\/2\.0$/.exec(start);
      if (!req) throw new Error(`not a SIP start line: '${start}'`);
      msg = SipMsg.request(req[1]!, req[2]!);
    }
    for (const line of lines) {
      if (/^[ \t]/.test(line) && msg.headers.length > 0) {
        const last = msg.headers[msg.headers.length - 1]!;
        last[1] += ' ' + line.trim();
        continue;
      }
      const colon = line.indexOf(':');
      if (colon <= 0) continue;
      msg.headers.push([line.slice(0, colon).trim(), line.slice(colon + 1).trim()]);
    }
    const length = msg.get('content-length');
    if (length !== undefined && /^\d+$/.test(length.trim())) {
      msg.body = Buffer.from(rest, 'utf8').subarray(0, Number(length.trim())).toString('utf8');
    } else {
      msg.body = rest;
    }
    return msg;
  }

  get isRequest(): boolean {
    return this.kind === 'request';
  }

  get(name: string): string | undefined {
    const key = headerKey(name);
    return this.headers.find(([n]) => headerKey(n) === key)?.[1];
  }

  getAll(name: string): string[] {
    const key = headerKey(name);
    return this.headers.filter(([n]) => headerKey(n) === key).map(([, v]) => v);
  }

  has(name: string): boolean {
    return this.get(name) !== undefined;
  }

  /** Replace the first header of that name (keeping its position) or append. */
  set(name: string, value: string): this {
    const key = headerKey(name);
    const found = this.headers.find(([n]) => headerKey(n) === key);
    if (found) found[1] = value;
    else this.headers.push([name, value]);
    return this;
  }

  add(name: string, value: string): this {
    this.headers.push([name, value]);
    return this;
  }

  remove(name: string): this {
    const key = headerKey(name);
    this.headers = this.headers.filter(([n]) => headerKey(n) !== key);
    return this;
  }

  get callId(): string {
    return this.get('call-id') ?? '';
  }

  get cseq(): { seq: number; method: string } {
    const [seq, method] = (this.get('cseq') ?? '0 UNKNOWN').trim().split(/\s+/);
    return { seq: Number(seq), method: method ?? '' };
  }

  get fromTag(): string | undefined {
    return tagOf(this.get('from'));
  }

  get toTag(): string | undefined {
    return tagOf(this.get('to'));
  }

  /** Branch of the top Via. */
  get branch(): string | undefined {
    return /;\s*branch=([^;\s,]+)/i.exec(this.get('via') ?? '')?.[1];
  }

  clone(): SipMsg {
    const m = new SipMsg(this.kind);
    Object.assign(m, { method: this.method, uri: this.uri, status: this.status, reason: this.reason, body: this.body });
    m.headers = this.headers.map(([n, v]) => [n, v]);
    return m;
  }

  /** Serialise with CRLFs; Content-Length is set to the body's byte length (kept in place if present). */
  toString(): string {
    const start = this.kind === 'request' ? `${this.method} ${this.uri} SIP/2.0` : `SIP/2.0 ${this.status} ${this.reason}`;
    const bodyLength = Buffer.byteLength(this.body, 'utf8');
    const headers = this.headers.map(([n, v]) => (headerKey(n) === 'content-length' ? [n, String(bodyLength)] : [n, v]));
    if (!headers.some(([n]) => headerKey(n!) === 'content-length')) headers.push(['Content-Length', String(bodyLength)]);
    return [start, ...headers.map(([n, v]) => `${n}: ${v}`)].join(CRLF) + CRLF + CRLF + this.body;
  }
}

export function tagOf(nameAddr: string | undefined): string | undefined {
  if (!nameAddr) return undefined;
  const afterUri = nameAddr.includes('>') ? nameAddr.slice(nameAddr.lastIndexOf('>')) : nameAddr;
  return /;\s*tag=([^;\s]+)/i.exec(afterUri)?.[1];
}

/** The URI inside a name-addr or addr-spec (`"A" <sip:a@b>;tag=1` -> `sip:a@b`). */
export function uriOf(nameAddr: string): string {
  const m = /<([^>]+)>/.exec(nameAddr);
  if (m) return m[1]!;
  return nameAddr.split(';')[0]!.trim();
}

/** Random token in drachtio's style (13 chars of [A-Za-z0-9]). */
export function token(length = 13): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  const bytes = randomBytes(length);
  let out = '';
  for (const b of bytes) out += alphabet[b % alphabet.length];
  return out;
}

/** Time of day as drachtio prints it in frames: `06:02:59.324555`. */
export function timeOfDay(date = new Date()): string {
  const pad = (n: number, w = 2): string => String(n).padStart(w, '0');
  return `${pad(date.getUTCHours())}:${pad(date.getUTCMinutes())}:${pad(date.getUTCSeconds())}.${pad(date.getUTCMilliseconds() * 1000, 6)}`;
}
