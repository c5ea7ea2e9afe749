/**
 * `setup` and `doctor` run as an operator runs them (the CLI in a child process, a YAML file): output and exit
 * codes against the simulated Graph API and the drachtio-server double.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import t from 'tap';
import { startDrachtioDouble } from '../../src/simulator/drachtio/index.js';
import { createGraphSimulator } from '../../src/simulator/graph/index.js';

const root = path.resolve(import.meta.dirname, '../..');
const PAGE = '106378625516323';

function run(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'src/main.ts'), ...args], { cwd: root });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

function yamlFile(text: string): string {
  const file = path.join(mkdtempSync(path.join(tmpdir(), 'msb-cli-')), 'config.yaml');
  writeFileSync(file, text);
  return file;
}

t.test('setup: exit 0 when the page is ready, --dry-run first, then again with nothing to do; exit 1 with a bad token', async (t) => {
  const sim = createGraphSimulator({ pages: { [PAGE]: 'good-token' } });
  await sim.app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(() => sim.close());
  const base = `http://127.0.0.1:${(sim.app.server.address() as AddressInfo).port}`;
  const yaml = (token: string): string =>
    yamlFile(`meta: { app_secret: s, verify_token: v, graph_base_url: "${base}" }
pages:
  - id: "${PAGE}"
    access_token: ${token}
    call_settings: { call_routing: { ring_target: PARTNERS } }
`);
  const dry = await run(['setup', '--config', yaml('good-token'), '--dry-run']);
  t.equal(dry.code, 0, dry.stdout + dry.stderr);
  t.match(dry.stdout, /plan\s+would set inbound routing: META -> PARTNERS/);
  t.same(sim.subscribedFields(PAGE), [], 'dry run changed nothing');
  const real = await run(['setup', '--config', yaml('good-token')]);
  t.equal(real.code, 0, real.stdout + real.stderr);
  t.match(real.stdout, /setup: 2 change\(s\) made, 0 problem\(s\)/);
  const again = await run(['setup', '--config', yaml('good-token')]);
  t.match(again.stdout, /setup: 0 change\(s\) made, 0 problem\(s\)/);
  const bad = await run(['setup', '--config', yaml('bad-token')]);
  t.equal(bad.code, 1);
  t.match(bad.stdout, /FAIL\s+token check: .*Meta code 190/);
});

t.test('doctor: exit 1 with drachtio-server stopped, 78 with an invalid file', async (t) => {
  const d = await startDrachtioDouble({ secret: 'x' });
  const port = d.port;
  await d.close();
  const file = yamlFile(`meta: { app_secret: s, verify_token: v, graph_base_url: "http://127.0.0.1:1" }
pages: [{ id: "${PAGE}", access_token: t }]
sip: { drachtio: { host: 127.0.0.1, port: ${port}, secret: x } }
media: { rtp: { min_port: 61000, max_port: 61999 }, internal_ports: { min_port: 62000, max_port: 62999 } }
messenger: { ice: { listen_ip: 127.0.0.1, min_port: 63000, max_port: 63999 } }
`);
  const r = await run(['doctor', '--config', file]);
  t.equal(r.code, 1, r.stdout + r.stderr);
  t.match(r.stdout, /ok\s+config\s+.*valid \(1 page\(s\), 0 route\(s\)\)/);
  t.match(r.stdout, /FAIL\s+drachtio\s+drachtio-server 127.0.0.1:\d+: nothing listening \(ECONNREFUSED\)\n\s+fix: start drachtio-server/);
  t.match(r.stdout, /FAIL\s+graph\s+page 106378625516323: page_info: network error/);
  t.match(r.stdout, /ok\s+mediasoup/);
  t.match(r.stdout, /doctor: 2 problem\(s\)/);
  const invalid = await run(['doctor', '--config', yamlFile('meta: { app_secret: s }\n')]);
  t.equal(invalid.code, 78);
  t.match(invalid.stdout, /FAIL\s+config\s+meta.verify_token: required/);
});
