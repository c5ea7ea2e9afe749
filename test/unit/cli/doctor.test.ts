/**
 * `doctor` against real things on loopback: the drachtio-server double (up, stopped, wrong secret), a real mediasoup
 * worker, UDP ports held by the test, the bridge's webhook app behind a TLS proxy with a self-signed certificate,
 * and the simulated Graph API (good token, bad token, a Meta whose clock is off).
 */
import { execFileSync } from 'node:child_process';
import { createSocket, type Socket } from 'node:dgram';
import { mkdtempSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import t from 'tap';
import { formatLine, runChecks, samplePorts, type CheckLine } from '../../../src/cli/doctor.js';
import { parseConfig, type ConfigInput } from '../../../src/config/index.js';
import { startDrachtioDouble, type DrachtioDouble } from '../../../src/simulator/drachtio/index.js';
import { createGraphSimulator, type GraphSimulator, type GraphSimulatorOptions } from '../../../src/simulator/graph/index.js';
import { buildWebhookApp } from '../../../src/webhook/index.js';

const PAGE = '106378625516323';
const TOKEN = 'page-token-1';
const VERIFY = 'verify-me';
const log = pino({ level: 'silent' });

/** A self-signed certificate for 127.0.0.1 (openssl, Debian's openssl package). */
function selfSigned(): { key: string; cert: string } {
  const dir = mkdtempSync(path.join(tmpdir(), 'msb-doctor-'));
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
    '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem'),
  ], { stdio: 'ignore' });
  return { key: readFileSync(path.join(dir, 'key.pem'), 'utf8'), cert: readFileSync(path.join(dir, 'cert.pem'), 'utf8') };
}

const tls = selfSigned();

/** The bridge's real webhook app behind a TLS "reverse proxy" on loopback. */
async function webhookBehindTls(t: { teardown: (fn: () => unknown) => void }, verifyToken = VERIFY): Promise<string> {
  const app = buildWebhookApp({ settings: { appSecret: 's', verifyToken, pageIds: [PAGE] }, sink: { handleMetaEvent: () => undefined }, log });
  const proxy: Server = createServer({ key: tls.key, cert: tls.cert }, (req, res) => {
    void app.inject({ method: 'GET', url: req.url ?? '/' }).then((r) => {
      res.writeHead(r.statusCode, { 'content-type': String(r.headers['content-type'] ?? 'text/plain') });
      res.end(r.body);
    });
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  t.teardown(async () => {
    proxy.close();
    await app.close();
  });
  return `https://127.0.0.1:${(proxy.address() as AddressInfo).port}/webhook`;
}

async function graph(t: { teardown: (fn: () => unknown) => void }, options: Partial<GraphSimulatorOptions> = {}): Promise<{ sim: GraphSimulator; base: string }> {
  const sim = createGraphSimulator({ pages: { [PAGE]: TOKEN }, ...options });
  await sim.app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(() => sim.close());
  return { sim, base: `http://127.0.0.1:${(sim.app.server.address() as AddressInfo).port}` };
}

async function drachtio(t: { teardown: (fn: () => unknown) => void }): Promise<DrachtioDouble> {
  const d = await startDrachtioDouble({ secret: 'admin-secret' });
  t.teardown(() => d.close());
  return d;
}

/** Ranges high in the port space, away from the defaults other tests use. */
function config(o: { base: string; drachtioPort: number; secret?: string; token?: string; publicUrl?: string; rtp?: [number, number] }): ConfigInput {
  const [rtpMin, rtpMax] = o.rtp ?? [61000, 61999];
  return {
    meta: { app_secret: 's', verify_token: VERIFY, graph_base_url: o.base, graph_timeout_ms: 2000 },
    pages: [{ id: PAGE, access_token: o.token ?? TOKEN }],
    webhook: o.publicUrl !== undefined ? { public_url: o.publicUrl } : {},
    sip: { drachtio: { host: '127.0.0.1', port: o.drachtioPort, secret: o.secret ?? 'admin-secret' } },
    media: { rtp: { listen_ip: '127.0.0.1', min_port: rtpMin, max_port: rtpMax }, internal_ports: { min_port: 62000, max_port: 62999 } },
    messenger: { ice: { listen_ip: '127.0.0.1', min_port: 63000, max_port: 63999 } },
  };
}

async function check(input: ConfigInput, webhookCa?: string): Promise<{ lines: CheckLine[]; text: string; by: (name: string) => CheckLine[] }> {
  const lines = await runChecks({ config: parseConfig(input, {}), log, timeoutMs: 3000, ...(webhookCa !== undefined ? { webhookCa } : {}) });
  return { lines, text: lines.map(formatLine).join('\n'), by: (name) => lines.filter((l) => l.name === name) };
}

t.test('a host where everything is in place: every line ok', async (t) => {
  const [d, g, url] = await Promise.all([drachtio(t), graph(t), webhookBehindTls(t)]);
  const r = await check(config({ base: g.base, drachtioPort: d.port, publicUrl: url }), tls.cert);
  t.same(r.lines.filter((l) => l.mark !== 'ok'), [], r.text);
  t.match(r.text, /ok\s+drachtio\s+drachtio-server 127.0.0.1:\d+: connected, secret accepted/);
  t.match(r.text, /ok\s+mediasoup\s+worker .* started \(pid \d+, mediasoup 3.8.4\) and closed/);
  t.match(r.text, /ok\s+ports\s+RTP toward the PBX 61000-61999 on 127.0.0.1: 32 of 32 sampled ports free/);
  t.match(r.text, /ok\s+ports\s+ICE toward Meta 63000-63999/);
  t.match(r.text, /ok\s+webhook\s+https:\/\/127.0.0.1:\d+\/webhook: answered the subscription handshake over TLS/);
  t.match(r.text, /ok\s+graph\s+page 106378625516323 \(Page 106378625516323\): Graph API answered with its token/);
  t.match(r.text, /ok\s+clock\s+within \d+ s of Meta's/);
  t.equal(d.server.frames.length > 0, true, 'doctor really spoke to the drachtio double');
});

t.test('drachtio-server stopped (nothing listening) and drachtio-server refusing our secret: FAIL with the fix', async (t) => {
  const [d, g] = await Promise.all([drachtio(t), graph(t)]);
  const refused = await check(config({ base: g.base, drachtioPort: d.port, secret: 'wrong' }));
  t.match(formatLine(refused.by('drachtio')[0]!), /FAIL\s+drachtio\s+drachtio-server 127.0.0.1:\d+: our secret was refused[\s\S]*fix: set sip.drachtio.secret/);
  await d.stop();
  const stopped = await check(config({ base: g.base, drachtioPort: d.port }));
  const line = stopped.by('drachtio')[0]!;
  t.equal(line.mark, 'FAIL');
  t.match(line.text, /nothing listening \(ECONNREFUSED\)/);
  t.match(line.fix, /start drachtio-server/);
  t.equal(stopped.lines.filter((l) => l.mark === 'FAIL').length, 1, 'the other checks are unaffected');
});

t.test('a busy port range: FAIL with how many are free; a single busy port in a wide range stays ok', async (t) => {
  const [d, g] = await Promise.all([drachtio(t), graph(t)]);
  const held: Socket[] = [];
  t.teardown(() => held.forEach((s) => s.close()));
  const hold = (port: number): Promise<void> =>
    new Promise((resolve, reject) => {
      const s = createSocket('udp4');
      s.once('error', reject);
      s.bind(port, '127.0.0.1', () => resolve());
      held.push(s);
    });
  await hold(61500);
  await hold(61501);
  const narrow = await check(config({ base: g.base, drachtioPort: d.port, rtp: [61500, 61503] }));
  const line = narrow.by('ports')[0]!;
  t.equal(line.mark, 'FAIL', narrow.text);
  t.match(line.text, /RTP toward the PBX 61500-61503 on 127.0.0.1: only 2 of 4 sampled ports free \(in use: 127.0.0.1:61500 \(EADDRINUSE\), 127.0.0.1:61501 \(EADDRINUSE\)\)/);
  t.match(line.fix, /move media.rtp.min_port\/max_port to a free range/);
  const wide = await check(config({ base: g.base, drachtioPort: d.port, rtp: [61000, 61999] }));
  t.equal(wide.by('ports')[0]!.mark, 'ok');
  t.same(samplePorts(61000, 61999, 32).slice(0, 2), [61000, 61032]);
});

t.test('the webhook URL: untrusted certificate, wrong verify token, plain http, and not set', async (t) => {
  const [d, g] = await Promise.all([drachtio(t), graph(t)]);
  const url = await webhookBehindTls(t);
  const untrusted = (await check(config({ base: g.base, drachtioPort: d.port, publicUrl: url }))).by('webhook')[0]!;
  t.equal(untrusted.mark, 'FAIL');
  t.match(untrusted.text, /TLS failed: self[- ]signed certificate/);
  t.match(untrusted.fix, /certificate from a public CA/);
  const otherToken = await webhookBehindTls(t, 'another-token');
  const refused = (await check(config({ base: g.base, drachtioPort: d.port, publicUrl: otherToken }), tls.cert)).by('webhook')[0]!;
  t.match(refused.text, /refused the verify token \(403\)/);
  const http = (await check(config({ base: g.base, drachtioPort: d.port, publicUrl: 'http://127.0.0.1:1/webhook' }))).by('webhook')[0]!;
  t.match(formatLine(http), /FAIL\s+webhook\s+http:\/\/127.0.0.1:1\/webhook: not https[\s\S]*Meta only calls https/);
  const none = (await check(config({ base: g.base, drachtioPort: d.port }))).by('webhook')[0]!;
  t.equal(none.mark, 'skip');
});

t.test('Graph with a bad token, and a Meta whose clock differs by two minutes', async (t) => {
  const d = await drachtio(t);
  const bad = await graph(t);
  const r = await check(config({ base: bad.base, drachtioPort: d.port, token: 'expired' }));
  const line = r.by('graph')[0]!;
  t.equal(line.mark, 'FAIL');
  t.match(line.text, /page 106378625516323: page_info: access token invalid or expired.*Meta code 190/);
  t.match(line.fix, /create a new Page access token/);
  t.equal(r.by('clock')[0]!.mark, 'skip', 'no answer to compare the clock with');
  const skewed = await graph(t, { clockSkewMs: -120_000 });
  const clock = (await check(config({ base: skewed.base, drachtioPort: d.port }))).by('clock')[0]!;
  t.equal(clock.mark, 'FAIL');
  t.match(clock.text, /this host's clock is 12\d s ahead of Meta's/);
  t.match(clock.fix, /synchronise it/);
});
