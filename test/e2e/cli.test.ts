/**
 * The user-facing commands, run as a user would: demo, simulate-call against a running bridge, check-config, and
 * the exit code of a broken config.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import t from 'tap';
import { parseConfig } from '../../src/config/index.js';
import { Daemon } from '../../src/daemon/Daemon.js';
import { startDrachtioDouble } from '../../src/simulator/drachtio/index.js';
import { createRtpPeer } from '../../src/simulator/pbx/rtpPeer.js';
import { APP_SECRET, PAGE_ID, PAGE_TOKEN, VERIFY_TOKEN, sdpTarget } from '../helpers/bridgeHarness.js';

const root = path.resolve(import.meta.dirname, '../..');

function run(args: string[], timeoutMs = 60_000, env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'src/main.ts'), ...args], {
      cwd: root,
      env: { ...process.env, ...env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

t.test('demo: a whole call on loopback, tone heard both ways, exit 0', async (t) => {
  // Without a real drachtio-server in the environment (cleared here: the variant below uses it).
  const { code, stdout, stderr } = await run(['demo', '--duration', '2'], 60_000, { DRACHTIO_HOST: '' });
  t.equal(code, 0, `demo exits 0\n${stdout}\n${stderr}`);
  t.match(stdout, /built-in drachtio-server double/, 'says plainly that the drachtio double is used');
  t.match(stdout, /ok\s+Messenger -> PBX: 1000 Hz heard/);
  t.match(stdout, /ok\s+PBX -> Messenger: 440 Hz heard/);
  t.match(stdout, /ok\s+BYE reached the SIP peer/);
  t.match(stdout, /demo: call bridged/);
});

const realDrachtio = process.env.DRACHTIO_HOST && process.env.DRACHTIO_PORT && process.env.DRACHTIO_SECRET;
t.test(
  'demo with a real drachtio-server: dials baresip through it, tone heard both ways, exit 0',
  {
    skip: realDrachtio
      ? false
      : 'real drachtio-server variant skipped: set DRACHTIO_HOST, DRACHTIO_PORT and DRACHTIO_SECRET (baresip from the Debian package baresip-core plays the SIP peer)',
  },
  async (t) => {
    const { code, stdout, stderr } = await run(['demo', '--duration', '2']);
    t.equal(code, 0, `demo exits 0\n${stdout}\n${stderr}`);
    t.match(stdout, /SIP side: the drachtio-server at .* and baresip as the SIP peer/, 'says which SIP side it uses');
    t.match(stdout, /ok\s+Messenger -> PBX: 1000 Hz heard by baresip/);
    t.match(stdout, /ok\s+PBX -> Messenger: 440 Hz from baresip heard at Meta/);
    t.match(stdout, /ok\s+call released/);
    t.match(stdout, /demo: call bridged through drachtio-server to baresip/);
  },
);

t.test('simulate-call plays Meta against a running bridge and gives a verdict', async (t) => {
  const log = pino({ level: 'silent' });
  const graphPort = await freePort();
  const drachtio = await startDrachtioDouble();
  t.teardown(() => drachtio.close());
  const config = parseConfig(
    {
      meta: { app_secret: APP_SECRET, verify_token: VERIFY_TOKEN, graph_base_url: `http://127.0.0.1:${graphPort}` },
      pages: [{ id: PAGE_ID, access_token: PAGE_TOKEN }],
      webhook: { listen: { host: '127.0.0.1', port: 0 } },
      admin: { listen: { host: '127.0.0.1', port: 0 } },
      sip: { drachtio: { host: drachtio.host, port: drachtio.port, secret: drachtio.secret } },
      routes: [{ name: 'default', match: {}, targets: [drachtio.pbx.uri('support')], codecs: ['PCMU'] }],
      media: { workers: 1, rtp: { listen_ip: '127.0.0.1', min_port: 0, max_port: 0 } },
      messenger: { ice: { listen_ip: '127.0.0.1' } },
      // This test is about simulate-call's verdicts: a loaded test machine must not make admission refuse the call
      // (admission by load has its own tests).
      calls: { admission: { enabled: false } },
    },
    {},
  );
  const daemon = await Daemon.start(config, { log, waitForSipMs: 5000 });
  t.teardown(() => daemon.close());
  const peer = await createRtpPeer({ codec: 'PCMU' });
  t.teardown(() => peer.close());
  drachtio.pbx.onInvite(async (invite) => {
    const target = sdpTarget(invite.sdp);
    peer.setRemote(target.address, target.port);
    await invite.answer(peer.sdp());
    peer.startTone(1000);
  });

  const { code, stdout } = await run([
    'simulate-call',
    '--bridge', daemon.webhookUrl,
    '--graph', `http://127.0.0.1:${graphPort}`,
    '--app-secret', APP_SECRET,
    '--page', PAGE_ID,
    '--token', PAGE_TOKEN,
    '--duration', '2',
    '--expect-tone', '1000',
  ]);
  t.equal(code, 0, `exit 0\n${stdout}`);
  t.match(stdout, /ok .*bridge accepted the call/);
  t.match(stdout, /ok .*media connected/);
  t.match(stdout, /ok .*1000 Hz tone from the PBX side/);
  t.match(stdout, /VERDICT: PASS/);

  // The PBX refuses: the verdict says so and the exit status is 1.
  drachtio.pbx.onInvite((invite) => invite.reject(486, 'Busy Here'));
  const busy = await run(['simulate-call', '--bridge', daemon.webhookUrl, '--graph', `http://127.0.0.1:${graphPort}`, '--app-secret', APP_SECRET, '--page', PAGE_ID, '--token', PAGE_TOKEN, '--timeout', '10']);
  t.equal(busy.code, 1, 'a rejected call fails the verdict');
  t.match(busy.stdout, /FAIL .*bridge accepted the call: the bridge rejected it/);
});

t.test('check-config prints the effective config with secrets redacted; a broken file exits 78', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'msb-cli-'));
  const good = path.join(dir, 'good.yaml');
  writeFileSync(
    good,
    [
      'meta: { app_secret: "supersecret-app-secret", verify_token: "verify-me-token" }',
      'pages: [{ id: "123", access_token: "EAAsecret-page-token" }]',
      'routes: [{ name: r, match: {}, targets: ["sip:pbx@127.0.0.1"] }]',
      '',
    ].join('\n'),
  );
  const ok = await run(['check-config', good]);
  t.equal(ok.code, 0);
  t.match(ok.stdout, /OK/);
  for (const secret of ['supersecret-app-secret', 'verify-me-token', 'EAAsecret-page-token']) {
    t.notMatch(ok.stdout + ok.stderr, secret, `${secret} not printed`);
  }
  const bad = path.join(dir, 'bad.yaml');
  writeFileSync(bad, 'meta: { app_secret: "x", verify_token: "y" }\npages: [{ id: "123" }]\nroutes: []\n');
  const broken = await run(['check-config', bad]);
  t.equal(broken.code, 78, 'exit 78 (EX_CONFIG)');
  t.match(broken.stderr, /pages\[0\]\.access_token/, 'names the bad key');
  const daemonRun = await run(['--config', bad]);
  t.equal(daemonRun.code, 78, 'the daemon refuses to start half-configured');
  const version = await run(['--version']);
  t.match(version.stdout, /^\d+\.\d+\.\d+/);
});
