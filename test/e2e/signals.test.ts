/**
 * The daemon as a process: SIGHUP reloads pages and routes (and keeps the old config when the new file is broken),
 * SIGTERM drains: the live call finishes, new calls are refused, the exit status is 0.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import t from 'tap';
import { MetaSimulator } from '../../src/simulator/MetaSimulator.js';
import { startDrachtioDouble } from '../../src/simulator/drachtio/index.js';
import { createRtpPeer } from '../../src/simulator/pbx/rtpPeer.js';
import { APP_SECRET, PAGE_ID, PAGE_TOKEN, PSID, VERIFY_TOKEN, sdpTarget, sleep, until } from '../helpers/bridgeHarness.js';
import { assertBothWays, listenBothWays } from '../helpers/tone.js';

const root = path.resolve(import.meta.dirname, '../..');
const PAGE_B = '222333444555666';
const TOKEN_B = 'EAAtoken-of-page-b';

function configYaml(o: { graphUrl: string; drachtioPort: number; webhookPort: number; adminPort: number; pages: Array<[string, string]>; target: string }): string {
  return [
    `meta: { app_secret: "${APP_SECRET}", verify_token: "${VERIFY_TOKEN}", graph_base_url: "${o.graphUrl}" }`,
    'pages:',
    ...o.pages.map(([id, token]) => `  - { id: "${id}", access_token: "${token}" }`),
    `webhook: { listen: { host: 127.0.0.1, port: ${o.webhookPort} } }`,
    `admin: { listen: { host: 127.0.0.1, port: ${o.adminPort} } }`,
    `sip: { drachtio: { host: 127.0.0.1, port: ${o.drachtioPort}, secret: cymru } }`,
    `routes: [{ name: default, match: {}, targets: ["${o.target}"], codecs: [PCMU] }]`,
    'media: { workers: 1, rtp: { listen_ip: 127.0.0.1, min_port: 0, max_port: 0 } }',
    'messenger: { ice: { listen_ip: 127.0.0.1 } }',
    'calls: { drain_timeout_ms: 20000 }',
    '',
  ].join('\n');
}

async function freePort(): Promise<number> {
  const net = await import('node:net');
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as import('node:net').AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

t.test('SIGHUP reloads pages, keeps the old config on a broken file; SIGTERM drains and exits 0', async (t) => {
  const log = pino({ level: 'silent' });
  const drachtio = await startDrachtioDouble();
  t.teardown(() => drachtio.close());
  const sim = await MetaSimulator.start({ pages: { [PAGE_ID]: PAGE_TOKEN, [PAGE_B]: TOKEN_B }, appSecret: APP_SECRET, log });
  t.teardown(() => sim.close());
  const [webhookPort, adminPort] = [await freePort(), await freePort()];
  sim.setWebhookUrl(`http://127.0.0.1:${webhookPort}/webhook`);
  const peers: Array<Awaited<ReturnType<typeof createRtpPeer>>> = [];
  t.teardown(() => peers.forEach((p) => p.close()));
  drachtio.pbx.onInvite(async (invite) => {
    const peer = await createRtpPeer({ codec: 'PCMU' });
    peers.push(peer);
    const target = sdpTarget(invite.sdp);
    peer.setRemote(target.address, target.port);
    await invite.answer(peer.sdp());
  });

  const dir = mkdtempSync(path.join(tmpdir(), 'msb-signals-'));
  const file = path.join(dir, 'config.yaml');
  const base = { graphUrl: sim.graphUrl, drachtioPort: drachtio.port, webhookPort, adminPort, target: drachtio.pbx.uri('support') };
  writeFileSync(file, configYaml({ ...base, pages: [[PAGE_ID, PAGE_TOKEN]] }));

  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'src/main.ts'), '--config', file], { cwd: root, env: process.env });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  await until(() => out.includes('messenger-sip-bridge started'), 30_000, 'daemon started');
  await until(async () => (await fetch(`http://127.0.0.1:${adminPort}/readyz`).catch(() => undefined))?.status === 200, 10_000, 'ready').catch(() => undefined);

  // Page B is not configured yet: its call is ignored (no accept, no reject).
  const unknown = sim.placeCall({ pageId: PAGE_B, psid: PSID });
  await sleep(1500);
  t.equal(sim.call(unknown)?.state, 'ringing', 'a call to an unconfigured page is not handled');

  // Reload with page B.
  writeFileSync(file, configYaml({ ...base, pages: [[PAGE_ID, PAGE_TOKEN], [PAGE_B, TOKEN_B]] }));
  child.kill('SIGHUP');
  await until(() => out.includes('configuration reloaded'), 5000, 'reload logged');
  const callB = sim.placeCall({ pageId: PAGE_B, psid: PSID });
  const sessionB = await sim.waitForSession(callB, 15_000);
  await sessionB.whenConnected();
  t.equal(sim.call(callB)?.state, 'accepted', 'after SIGHUP, a call to the new page is bridged');
  await until(() => peers.length === 1, 5000, 'the PBX peer of the call to page B');
  assertBothWays(t, await listenBothWays(sessionB, peers[0]!), 'the call to the page added by SIGHUP');

  // A broken file: the running config stays.
  writeFileSync(file, 'meta: [this is not valid\n');
  child.kill('SIGHUP');
  await until(() => out.includes('reload failed'), 5000, 'reload failure logged');
  t.equal(child.exitCode, null, 'still running after a broken reload');
  assertBothWays(t, await listenBothWays(sessionB, peers[0]!), 'after the broken reload the live call carries audio');
  t.match(out, /reload failed[^\n]*/, 'the broken file is reported');

  // SIGTERM with a live call (callB): new calls refused, the live one carries on until it ends.
  child.kill('SIGTERM');
  await sleep(300);
  const rejected = sim.graph.events.waitFor('reject', AbortSignal.timeout(10_000));
  sim.placeCall({ pageId: PAGE_ID, psid: '77' });
  await rejected;
  t.pass('a new call is rejected while draining');
  t.equal(child.exitCode, null, 'still running while the live call lasts');
  assertBothWays(t, await listenBothWays(sessionB, peers[0]!), 'while draining the live call carries audio');
  sim.hangUp(callB);
  t.equal(await exited, 0, 'exit status 0 after the drain');
});
