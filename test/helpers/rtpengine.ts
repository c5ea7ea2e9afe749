/**
 * rtpengine (Debian's `rtpengine-daemon`) as a second ICE-lite, DTLS-passive peer for interop tests: a daemon in
 * userspace mode on loopback with a temporary config, a bounded lifetime, killed when the test process exits, and a
 * client for its ng control protocol (bencode over UDP, each message prefixed by a cookie).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// ---------------------------------------------------------------------------------------------------------------
// bencode
// ---------------------------------------------------------------------------------------------------------------

export type BencodeValue = string | number | Buffer | BencodeValue[] | { [key: string]: BencodeValue | undefined };

/** Encode a value; dictionary keys are sorted (bencode requires it), undefined entries are skipped. */
export function bencode(value: BencodeValue): Buffer {
  const parts: Buffer[] = [];
  const walk = (v: BencodeValue): void => {
    if (Buffer.isBuffer(v)) {
      parts.push(Buffer.from(`${v.length}:`), v);
    } else if (typeof v === 'string') {
      const bytes = Buffer.from(v, 'utf8');
      parts.push(Buffer.from(`${bytes.length}:`), bytes);
    } else if (typeof v === 'number') {
      if (!Number.isInteger(v)) throw new TypeError(`bencode integers only, got ${v}`);
      parts.push(Buffer.from(`i${v}e`));
    } else if (Array.isArray(v)) {
      parts.push(Buffer.from('l'));
      for (const item of v) walk(item);
      parts.push(Buffer.from('e'));
    } else {
      parts.push(Buffer.from('d'));
      const keys = Object.keys(v)
        .filter((k) => v[k] !== undefined)
        .sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
      for (const key of keys) {
        walk(key);
        walk(v[key] as BencodeValue);
      }
      parts.push(Buffer.from('e'));
    }
  };
  walk(value);
  return Buffer.concat(parts);
}

/** A decoded bencode value: byte strings become UTF-8 strings (everything rtpengine sends is text). */
export type Decoded = string | number | Decoded[] | { [key: string]: Decoded };

/** Decode one bencode value that spans the whole buffer. Throws on malformed input. */
export function bdecode(buf: Buffer): Decoded {
  let pos = 0;
  const fail = (what: string): never => {
    throw new SyntaxError(`bencode: ${what} at offset ${pos}`);
  };
  const readValue = (): Decoded => {
    if (pos >= buf.length) fail('unexpected end');
    const c = buf[pos];
    if (c === 0x69 /* i */) {
      const end = buf.indexOf(0x65 /* e */, pos);
      if (end < 0) fail('unterminated integer');
      const text = buf.toString('ascii', pos + 1, end);
      if (!/^-?\d+$/.test(text)) fail(`bad integer '${text}'`);
      pos = end + 1;
      return Number(text);
    }
    if (c === 0x6c /* l */) {
      pos++;
      const list: Decoded[] = [];
      while (buf[pos] !== 0x65) list.push(readValue());
      pos++;
      return list;
    }
    if (c === 0x64 /* d */) {
      pos++;
      const dict: { [key: string]: Decoded } = {};
      while (buf[pos] !== 0x65) {
        const key = readValue();
        if (typeof key !== 'string') fail('dictionary key is not a string');
        dict[key as string] = readValue();
      }
      pos++;
      return dict;
    }
    if (c !== undefined && c >= 0x30 && c <= 0x39) {
      const colon = buf.indexOf(0x3a /* : */, pos);
      if (colon < 0) fail('unterminated string length');
      const len = Number(buf.toString('ascii', pos, colon));
      const start = colon + 1;
      if (start + len > buf.length) fail('string past end');
      pos = start + len;
      return buf.toString('utf8', start, start + len);
    }
    return fail(`unexpected byte 0x${(c ?? 0).toString(16)}`);
  };
  const value = readValue();
  if (pos !== buf.length) fail('trailing bytes');
  return value;
}

// ---------------------------------------------------------------------------------------------------------------
// ng protocol client
// ---------------------------------------------------------------------------------------------------------------

/** rtpengine answered `result: error` (or something else than ok/pong). */
export class NgError extends Error {
  readonly response: { [key: string]: Decoded };

  constructor(message: string, response: { [key: string]: Decoded }) {
    super(message);
    this.name = 'NgError';
    this.response = response;
  }
}

export type NgDict = { [key: string]: BencodeValue | undefined };

/** A client for rtpengine's ng control protocol over UDP; retransmits (same cookie) until answered or timed out. */
export class NgClient {
  readonly #socket: Socket;
  readonly #host: string;
  readonly #port: number;
  readonly #pending = new Map<string, { resolve: (d: { [key: string]: Decoded }) => void; reject: (e: Error) => void }>();
  #closed = false;

  private constructor(socket: Socket, host: string, port: number) {
    this.#socket = socket;
    this.#host = host;
    this.#port = port;
    socket.on('message', (msg) => this.#onMessage(msg));
  }

  static async open(host: string, port: number): Promise<NgClient> {
    const socket = createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(0, '127.0.0.1', () => {
        socket.off('error', reject);
        resolve();
      });
    });
    socket.on('error', () => {
      /* loopback send errors (daemon gone) surface as timeouts of the pending command */
    });
    return new NgClient(socket, host, port);
  }

  #onMessage(msg: Buffer): void {
    const space = msg.indexOf(0x20);
    if (space < 0) return;
    const cookie = msg.toString('ascii', 0, space);
    const waiter = this.#pending.get(cookie);
    if (!waiter) return;
    this.#pending.delete(cookie);
    try {
      const decoded = bdecode(msg.subarray(space + 1));
      if (typeof decoded !== 'object' || Array.isArray(decoded)) throw new SyntaxError('ng response is not a dictionary');
      waiter.resolve(decoded);
    } catch (err) {
      waiter.reject(err as Error);
    }
  }

  /**
   * Send one command and wait for its response. Resolves with the response dictionary when `result` is `ok` or
   * `pong`; rejects with NgError otherwise, or after `timeoutMs` (default 3000) without an answer.
   */
  async command(command: string, args: NgDict = {}, timeoutMs = 3000): Promise<{ [key: string]: Decoded }> {
    if (this.#closed) throw new Error('ng client closed');
    const cookie = randomBytes(8).toString('hex');
    const payload = Buffer.concat([Buffer.from(`${cookie} `), bencode({ ...args, command })]);
    const response = await new Promise<{ [key: string]: Decoded }>((resolve, reject) => {
      const deadline = setTimeout(() => {
        clearInterval(resend);
        this.#pending.delete(cookie);
        reject(new Error(`ng '${command}' got no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      const resend = setInterval(() => this.#socket.send(payload, this.#port, this.#host), 500);
      this.#pending.set(cookie, {
        resolve: (d) => {
          clearTimeout(deadline);
          clearInterval(resend);
          resolve(d);
        },
        reject: (e) => {
          clearTimeout(deadline);
          clearInterval(resend);
          reject(e);
        },
      });
      this.#socket.send(payload, this.#port, this.#host);
    });
    const result = response['result'];
    if (result !== 'ok' && result !== 'pong') {
      const reason = typeof response['error-reason'] === 'string' ? response['error-reason'] : JSON.stringify(response);
      throw new NgError(`ng '${command}' failed: ${reason}`, response);
    }
    return response;
  }

  async ping(timeoutMs = 1000): Promise<void> {
    await this.command('ping', {}, timeoutMs);
  }

  /** `offer`: returns rtpengine's rewritten SDP for the other side. */
  async offer(args: NgDict & { 'call-id': string; 'from-tag': string; sdp: string }): Promise<string> {
    const r = await this.command('offer', args);
    if (typeof r['sdp'] !== 'string') throw new NgError('ng offer: no sdp in response', r);
    return r['sdp'];
  }

  /** `answer`: returns rtpengine's rewritten SDP for the offerer. */
  async answer(args: NgDict & { 'call-id': string; 'from-tag': string; 'to-tag': string; sdp: string }): Promise<string> {
    const r = await this.command('answer', args);
    if (typeof r['sdp'] !== 'string') throw new NgError('ng answer: no sdp in response', r);
    return r['sdp'];
  }

  /** `delete`: ends the call and frees its ports. */
  async delete(callId: string, fromTag?: string): Promise<void> {
    await this.command('delete', { 'call-id': callId, 'from-tag': fromTag });
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const waiter of this.#pending.values()) waiter.reject(new Error('ng client closed'));
    this.#pending.clear();
    this.#socket.close();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// the daemon
// ---------------------------------------------------------------------------------------------------------------

export interface RtpengineOptions {
  /** Lowest and highest RTP port (default: a random 200-port window in 42000-49999, to stay clear of others). */
  portMin?: number;
  portMax?: number;
  /** Log level 1-7 (default 5); 7 logs every DTLS and ICE step. */
  logLevel?: number;
  /** Kill the daemon this many ms after it is ready, whatever happens (default 120000). */
  lifetimeMs?: number;
  /** Worker threads (default 2: packets of one stream may then be handled by either thread, as in production). */
  numThreads?: number;
  /** Extra command line arguments (e.g. `--dtls-mtu=600`). */
  extraArgs?: string[];
  /** Called with each stderr line of the daemon. */
  onLog?: (line: string) => void;
}

export interface RtpengineDaemon {
  readonly pid: number;
  readonly ngPort: number;
  readonly portMin: number;
  readonly portMax: number;
  readonly ng: NgClient;
  /** The last lines the daemon logged (bounded). */
  readonly logs: string[];
  /** Resolves when the process has exited (stopped, killed at the end of its lifetime, or crashed). */
  readonly exited: Promise<void>;
  /** SIGTERM, then SIGKILL after 2 s; resolves when the process is gone. Idempotent. */
  stop(): Promise<void>;
}

const RTPENGINE_BIN = process.env['RTPENGINE_BIN'] ?? '/usr/bin/rtpengine';
const MAX_LOG_LINES = 5000;

/** A free UDP port on loopback (bind to 0, read it, release it). */
async function freeUdpPort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.bind(0, '127.0.0.1', () => resolve());
  });
  const { port } = s.address();
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

const liveDaemons = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of liveDaemons) child.kill('SIGKILL');
  });
}

/**
 * Start rtpengine in the foreground, userspace only (`--table=-1`), RTP on 127.0.0.1, ng on a free loopback port,
 * with a temporary config file (so the system's /etc/rtpengine is never read). Resolves once it answers `ping`.
 */
export async function startRtpengine(options: RtpengineOptions = {}): Promise<RtpengineDaemon> {
  const base = 42000 + 200 * Math.floor(Math.random() * 40);
  const portMin = options.portMin ?? base;
  const portMax = options.portMax ?? base + 199;
  const ngPort = await freeUdpPort();
  const dir = mkdtempSync(join(tmpdir(), 'rtpengine-'));
  const configFile = join(dir, 'rtpengine.conf');
  writeFileSync(
    configFile,
    [
      '[rtpengine]',
      'table = -1',
      'interface = 127.0.0.1',
      `listen-ng = 127.0.0.1:${ngPort}`,
      `port-min = ${portMin}`,
      `port-max = ${portMax}`,
      'timeout = 60',
      'delete-delay = 0',
      `num-threads = ${options.numThreads ?? 2}`,
      '',
    ].join('\n'),
  );
  const args = [
    `--config-file=${configFile}`,
    '--config-section=rtpengine',
    '--foreground',
    '--log-stderr',
    '--no-log-timestamps',
    `--log-level=${options.logLevel ?? 5}`,
    `--pidfile=${join(dir, 'rtpengine.pid')}`,
    ...(options.extraArgs ?? []),
  ];
  const child = spawn(RTPENGINE_BIN, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  installExitHook();
  liveDaemons.add(child);
  const logs: string[] = [];
  let partial = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    partial += chunk;
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      logs.push(line);
      if (logs.length > MAX_LOG_LINES) logs.shift();
      options.onLog?.(line);
    }
  });
  let exited = false;
  const exitedPromise = new Promise<void>((resolve) => {
    child.once('exit', () => {
      exited = true;
      liveDaemons.delete(child);
      rmSync(dir, { recursive: true, force: true });
      resolve();
    });
  });
  let lifetime: NodeJS.Timeout | undefined;

  const ng = await NgClient.open('127.0.0.1', ngPort);
  const stop = async (): Promise<void> => {
    if (lifetime) clearTimeout(lifetime);
    ng.close();
    if (!exited) {
      child.kill('SIGTERM');
      const force = setTimeout(() => child.kill('SIGKILL'), 2000);
      await exitedPromise;
      clearTimeout(force);
    }
  };

  const startDeadline = Date.now() + 10_000;
  for (;;) {
    if (exited) {
      await stop();
      throw new Error(`rtpengine exited during start-up:\n${logs.slice(-20).join('\n')}`);
    }
    try {
      await ng.ping(300);
      break;
    } catch (err) {
      if (Date.now() > startDeadline) {
        await stop();
        throw new Error(`rtpengine did not answer ping within 10 s:\n${logs.slice(-20).join('\n')}`, { cause: err });
      }
    }
  }
  // The lifetime counts from readiness: a slow start on a busy machine must not eat it (start-up has its own 10 s).
  lifetime = setTimeout(() => child.kill('SIGKILL'), options.lifetimeMs ?? 120_000);
  lifetime.unref();
  return { pid: child.pid ?? -1, ngPort, portMin, portMax, ng, logs, exited: exitedPromise, stop };
}
