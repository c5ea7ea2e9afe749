/**
 * `messenger-sip-bridge doctor`: one screen that says what stands between this host and a working call. Each line
 * is `ok`, `FAIL` (with the fix) or `skip` (not configured); the exit code is 1 when any line FAILs.
 *
 * Every check has its own deadline and they run side by side, so the whole screen comes within a few seconds even
 * when everything outside is down. Nothing is changed anywhere: sockets bound to probe ports are closed at once, the
 * mediasoup worker started is closed, the drachtio connection is dropped.
 */
import { createSocket } from 'node:dgram';
import { request as httpsRequest } from 'node:https';
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import pino, { type Logger } from 'pino';
import type { Config } from '../config/index.js';
import { ConfigError } from '../core/errors.js';
import { graphClientFromConfig, graphErrorParts } from '../graph/index.js';
import { probeDrachtio } from '../sip/probeDrachtio.js';

export const DOCTOR_HELP = `messenger-sip-bridge doctor [--config <file>]

Checks, each with its own deadline, and prints one ok / FAIL line each (FAIL lines say the fix):
  config          the YAML file is valid
  drachtio        drachtio-server reachable at sip.drachtio and our secret accepted
  mediasoup       a mediasoup worker starts from media.worker_bin
  ports           samples of the RTP (media.rtp), internal (media.internal_ports) and ICE (messenger.ice) port
                  ranges can be bound (run it with the bridge stopped: the bridge's own ports count as busy)
  webhook         webhook.public_url (when set) answers Meta's subscription handshake over TLS
  graph           Meta's Graph API answers with each Page token
  clock           this host's clock agrees with the Date of Graph's answers
Exit codes: 0 all ok, 1 at least one FAIL, 78 invalid configuration.`;

export interface CheckLine {
  mark: 'ok' | 'FAIL' | 'skip';
  name: string;
  text: string;
  fix?: string;
}

export interface DoctorOptions {
  config: Config;
  log: Logger;
  /** Deadline of each outside wait (ms). Default 4000. */
  timeoutMs?: number;
  /** Ports sampled per range. Default 32. */
  portSamples?: number;
  /** Extra trusted CA certificates (PEM) for the webhook check; default the system's. */
  webhookCa?: string;
  /** Largest clock difference with Meta accepted (ms). Default 30000. */
  maxClockSkewMs?: number;
}

const ok = (name: string, text: string): CheckLine => ({ mark: 'ok', name, text });
const fail = (name: string, text: string, fix: string): CheckLine => ({ mark: 'FAIL', name, text, fix });

function withDeadline<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}

async function checkDrachtio(o: Required<Pick<DoctorOptions, 'timeoutMs'>> & DoctorOptions): Promise<CheckLine> {
  const { host, port, secret } = o.config.sip.drachtio;
  const where = `drachtio-server ${host}:${port}`;
  const r = await probeDrachtio({ host, port, secret, timeoutMs: o.timeoutMs, log: o.log });
  if (r.ok) return ok('drachtio', `${where}: connected, secret accepted (SIP on ${r.hostport})`);
  switch (r.problem) {
    case 'unreachable':
      return fail('drachtio', `${where}: nothing listening (${r.detail})`, 'start drachtio-server (docs/DEPLOY.md), or correct sip.drachtio.host and port');
    case 'refused_secret':
      return fail('drachtio', `${where}: our secret was refused (${r.detail})`, "set sip.drachtio.secret to drachtio-server's admin secret (its <admin secret=...> in drachtio.conf.xml)");
    case 'timeout':
      return fail('drachtio', `${where}: ${r.detail}`, 'check that a firewall lets this host reach the admin port, and that it is drachtio-server listening there');
    default:
      return fail('drachtio', `${where}: ${r.detail}`, 'check sip.drachtio.host and port');
  }
}

async function checkMediasoup(o: DoctorOptions & { timeoutMs: number }): Promise<CheckLine> {
  const bin = o.config.media.worker_bin;
  try {
    const { loadMediasoup } = await import('../media/WorkerPool.js');
    const mediasoup = await loadMediasoup(bin);
    const worker = await withDeadline(
      mediasoup.createWorker({ logLevel: 'warn', rtcMinPort: o.config.media.internal_ports.min_port || 10000, rtcMaxPort: o.config.media.internal_ports.max_port || 59999 }),
      o.timeoutMs,
      'worker start',
    );
    const pid = worker.pid;
    worker.close();
    return ok('mediasoup', `worker ${bin} started (pid ${pid}, mediasoup ${mediasoup.version}) and closed`);
  } catch (err) {
    return fail('mediasoup', `worker ${bin} did not start: ${(err as Error).message}`, 'install the Debian package mediasoup-worker (scripts/install.sh), or set media.worker_bin to its binary');
  }
}

/** Binds a UDP socket to address:port and closes it; resolves the error code, or undefined when it was free. */
function tryBind(address: string, port: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = createSocket({ type: address.includes(':') ? 'udp6' : 'udp4' });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      socket.close();
      resolve(err.code ?? err.message);
    });
    socket.bind({ address, port, exclusive: true }, () => socket.close(() => resolve(undefined)));
  });
}

/** Evenly spread ports of [min, max], at most `n`. */
export function samplePorts(min: number, max: number, n: number): number[] {
  const size = max - min + 1;
  if (size <= n) return Array.from({ length: size }, (_, i) => min + i);
  return Array.from({ length: n }, (_, i) => min + Math.floor((i * (size - 1)) / (n - 1)));
}

async function checkPortRange(name: string, key: string, addresses: string[], range: { min_port: number; max_port: number }, samples: number): Promise<CheckLine> {
  if (range.min_port === 0) return ok('ports', `${name}: any port (${key}.min_port 0: the system picks)`);
  const ports = samplePorts(range.min_port, range.max_port, samples);
  const busy: string[] = [];
  let tried = 0;
  for (const address of addresses) {
    for (const port of ports) {
      tried++;
      const err = await tryBind(address, port);
      if (err !== undefined) busy.push(`${address}:${port} (${err})`);
    }
  }
  const where = `${name} ${range.min_port}-${range.max_port} on ${addresses.join(', ')}`;
  const free = tried - busy.length;
  // A few ports in use is normal on a busy host (each call takes a random free one); many is a clash.
  if (busy.length === 0 || busy.length / tried < 0.1) {
    return ok('ports', `${where}: ${free} of ${tried} sampled ports free${busy.length > 0 ? ` (in use: ${busy.join(', ')})` : ''}`);
  }
  const permission = busy.some((b) => b.includes('EACCES'));
  const notLocal = busy.some((b) => b.includes('EADDRNOTAVAIL'));
  return fail(
    'ports',
    `${where}: only ${free} of ${tried} sampled ports free (in use: ${busy.slice(0, 5).join(', ')}${busy.length > 5 ? ', ...' : ''})`,
    notLocal
      ? `the address is not on this host: correct ${key} listen_ip`
      : permission
        ? `ports below 1024 need privileges: move ${key} above 1024`
        : `stop what uses these ports (is the bridge already running? ss -uanp shows who), or move ${key}.min_port/max_port to a free range`,
  );
}

async function checkPorts(o: DoctorOptions & { portSamples: number }): Promise<CheckLine[]> {
  const { media, messenger } = o.config;
  const ice = Array.isArray(messenger.ice.listen_ip) ? messenger.ice.listen_ip : [messenger.ice.listen_ip];
  return [
    await checkPortRange('RTP toward the PBX', 'media.rtp', [media.rtp.listen_ip], media.rtp, o.portSamples),
    await checkPortRange('internal ports', 'media.internal_ports', ['127.0.0.1'], media.internal_ports, o.portSamples),
    await checkPortRange('ICE toward Meta', 'messenger.ice', ice, messenger.ice, o.portSamples),
  ];
}

/** GET the public URL with Meta's handshake parameters; resolves status and body. */
function handshake(url: URL, ca: string | undefined, timeoutMs: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { method: 'GET', timeout: timeoutMs, ...(ca !== undefined ? { ca } : {}) }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        if (body.length < 4096) body += chunk;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

const TLS_CODES = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ALTNAME|ERR_TLS|EPROTO|SSL/;

async function checkWebhook(o: DoctorOptions & { timeoutMs: number }): Promise<CheckLine> {
  const publicUrl = o.config.webhook.public_url;
  if (publicUrl === undefined) return { mark: 'skip', name: 'webhook', text: 'webhook.public_url not set: the public callback URL is not checked' };
  const url = new URL(publicUrl);
  if (url.protocol !== 'https:') {
    return fail('webhook', `${publicUrl}: not https`, 'Meta only calls https callback URLs: put a TLS reverse proxy in front of webhook.listen and give its https URL');
  }
  const challenge = randomBytes(8).toString('hex');
  url.searchParams.set('hub.mode', 'subscribe');
  url.searchParams.set('hub.verify_token', o.config.meta.verify_token);
  url.searchParams.set('hub.challenge', challenge);
  try {
    const { status, body } = await handshake(url, o.webhookCa, o.timeoutMs);
    if (status === 200 && body.trim() === challenge) return ok('webhook', `${publicUrl}: answered the subscription handshake over TLS`);
    if (status === 403) {
      return fail('webhook', `${publicUrl}: a bridge answered but refused the verify token (403)`, 'meta.verify_token must be the verify token of the app dashboard, and this URL must reach this bridge');
    }
    return fail('webhook', `${publicUrl}: answered ${status} without the challenge`, `check that the proxy forwards ${url.pathname} to webhook.listen (${o.config.webhook.listen.host}:${o.config.webhook.listen.port}) and that the bridge is running`);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? '';
    const detail = `${(err as Error).message}${code !== '' && !(err as Error).message.includes(code) ? ` (${code})` : ''}`;
    if (TLS_CODES.test(code) || TLS_CODES.test((err as Error).message)) {
      return fail('webhook', `${publicUrl}: TLS failed: ${detail}`, 'Meta needs a certificate from a public CA, valid, for this host name, with its full chain');
    }
    return fail('webhook', `${publicUrl}: not reachable: ${detail}`, 'start the bridge and the TLS proxy, and check DNS and the firewall for this URL');
  }
}

async function checkGraph(o: DoctorOptions & { timeoutMs: number; maxClockSkewMs: number }): Promise<CheckLine[]> {
  const graph = graphClientFromConfig(o.config, o.log);
  const lines: CheckLine[] = [];
  let skewMs: number | undefined;
  for (const page of o.config.pages) {
    const started = Date.now();
    try {
      const info = await graph.pageInfo(page.id, AbortSignal.timeout(o.timeoutMs));
      const took = Date.now() - started;
      if (info.serverDate !== undefined && skewMs === undefined) skewMs = started + took / 2 - info.serverDate.getTime();
      lines.push(ok('graph', `page ${page.id}${info.name !== undefined ? ` (${info.name})` : ''}: Graph API answered with its token in ${took} ms`));
    } catch (err) {
      const { what, fix } = graphErrorParts(err);
      lines.push(fail('graph', `page ${page.id}: ${what}`, fix ?? 'check meta.graph_base_url and the page token'));
    }
  }
  if (skewMs === undefined) {
    lines.push({ mark: 'skip', name: 'clock', text: 'no Graph answer with a Date header to compare with' });
  } else if (Math.abs(skewMs) > o.maxClockSkewMs) {
    const secs = Math.round(skewMs / 1000);
    lines.push(
      fail(
        'clock',
        `this host's clock is ${Math.abs(secs)} s ${secs > 0 ? 'ahead of' : 'behind'} Meta's`,
        'synchronise it (systemd-timesyncd or chrony): webhook times, the 60 s accept window and token expiry depend on it',
      ),
    );
  } else {
    lines.push(ok('clock', `within ${Math.max(1, Math.ceil(Math.abs(skewMs) / 1000))} s of Meta's (Date of the Graph answer)`));
  }
  return lines;
}

/** Every check but the config's (the caller loaded it); lines in a fixed order. */
export async function runChecks(options: DoctorOptions): Promise<CheckLine[]> {
  const o = { timeoutMs: 4000, portSamples: 32, maxClockSkewMs: 30_000, ...options };
  // Ports first and alone: the other checks bind sockets of their own.
  const ports = await checkPorts(o);
  const [drachtio, mediasoup, webhook, graph] = await Promise.all([checkDrachtio(o), checkMediasoup(o), checkWebhook(o), checkGraph(o)]);
  return [drachtio, mediasoup, ...ports, webhook, ...graph];
}

export function formatLine(line: CheckLine): string {
  return `${line.mark.padEnd(5)} ${line.name.padEnd(10)} ${line.text}${line.fix !== undefined ? `\n${' '.repeat(17)}fix: ${line.fix}` : ''}`;
}

/** The CLI entry: returns the exit code. */
export async function runDoctor(args: string[], defaultConfig: string, out: (line: string) => void, log?: Logger): Promise<number> {
  const { values, positionals } = parseArgs({ args, options: { config: { type: 'string', short: 'c' } }, allowPositionals: true });
  const file = positionals[0] ?? values.config ?? defaultConfig;
  const { loadConfig } = await import('../config/index.js');
  let config: Config;
  try {
    config = loadConfig(file);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    for (const problem of err.problems) out(formatLine(fail('config', problem, `correct ${file} (check-config prints every problem)`)));
    out('doctor: the configuration is invalid; nothing else was checked');
    return 78;
  }
  out(formatLine(ok('config', `${file}: valid (${config.pages.length} page(s), ${config.routes.length} route(s))`)));
  const lines = await runChecks({ config, log: log ?? pino({ level: 'silent' }) });
  for (const line of lines) out(formatLine(line));
  const failed = lines.filter((l) => l.mark === 'FAIL').length;
  out(failed === 0 ? 'doctor: everything checked is ok' : `doctor: ${failed} problem(s)`);
  return failed === 0 ? 0 : 1;
}
