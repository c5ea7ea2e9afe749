/**
 * Secrets (page access token, app secret, verify token, drachtio secret, SIP digest password) never appear in the
 * logs (at every level, through calls, refusals and failures), in error responses or metrics, nor in what
 * `check-config` prints for good and broken files.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import t from 'tap';
import { createLogger } from '../../src/observability/logger.js';
import { startLoopbackBridge } from '../../src/simulator/loopbackBridge.js';
import { signPayload } from '../../src/simulator/webhookSender.js';
import { APP_SECRET, PAGE_ID, PAGE_TOKEN, PSID, VERIFY_TOKEN } from '../helpers/bridgeHarness.js';
import { recordFigures, startLiveCall } from '../helpers/reliability.js';

const root = path.resolve(import.meta.dirname, '../..');
const DIGEST_PASSWORD = 'digest-password-s3cr3t';
const DRACHTIO_SECRET = 'cymru';

function findSecrets(text: string, secrets: string[]): string[] {
  return secrets.filter((s) => text.includes(s));
}

const pbxOffer = ['v=0', 'o=pbx 1 1 IN IP4 127.0.0.1', 's=-', 'c=IN IP4 127.0.0.1', 't=0 0', 'm=audio 40000 RTP/AVP 0', 'a=rtpmap:0 PCMU/8000', ''].join('\r\n');

t.test('no secret in the logs, at trace level, through calls, refusals and failures', async (t) => {
  const lines: string[] = [];
  const log = createLogger({ level: 'trace', destination: { write: (line: string) => void lines.push(line) } });
  const h = await startLoopbackBridge({
    log,
    codecs: ['PCMU'],
    config: {
      sip: { digest: { realm: 'bridge', username: 'pbx', password: DIGEST_PASSWORD }, acl: ['127.0.0.1/32'], default_page: PAGE_ID },
      meta: { appsecret_proof: true },
    },
  });
  t.teardown(() => h.close());
  let scenarios = 0;

  // A whole call with media.
  const live = await startLiveCall(h);
  const ended = h.sim.waitForEnd(live.callId, 5000);
  h.sim.hangUp(live.callId);
  await ended;
  live.close();
  scenarios++;

  // Graph failures on accept (500, then a calling error), so errors with responses are logged.
  h.drachtio.pbx.onInvite((invite) => invite.reject(486, 'Busy Here'));
  for (const fault of [{ status: 500 }, { status: 400, body: { error: { message: 'Invalid OAuth access token', type: 'OAuthException', code: 190, fbtrace_id: 'x' } } }]) {
    h.sim.graph.failNext('reject', fault);
    h.sim.placeCall({ pageId: PAGE_ID, psid: PSID });
    await h.sim.graph.events.waitFor('request');
    await new Promise((resolve) => setTimeout(resolve, 300));
    scenarios++;
  }

  // Webhooks: bad signature, no signature, signed garbage, handshake with a wrong and the right token.
  const body = Buffer.from('{"object":"page","entry":[]}');
  const statuses: number[] = [];
  for (const signature of ['sha256=00', undefined, signPayload(Buffer.from('x'), APP_SECRET)]) {
    const res = await fetch(h.daemon.webhookUrl, { method: 'POST', headers: { 'content-type': 'application/json', ...(signature ? { 'x-hub-signature-256': signature } : {}) }, body });
    statuses.push(res.status);
    const text = await res.text();
    t.same(findSecrets(text, [APP_SECRET, VERIFY_TOKEN, PAGE_TOKEN]), [], 'no secret in the error response');
    scenarios++;
  }
  for (const token of ['wrong-token', VERIFY_TOKEN]) {
    const res = await fetch(`${h.daemon.webhookUrl}?hub.mode=subscribe&hub.verify_token=${encodeURIComponent(token)}&hub.challenge=42`);
    await res.text();
    scenarios++;
  }
  t.same(statuses, [403, 401, 403], 'refusals answered');

  // SIP: wrong digest password, then the right one with no permission (a refusal after auth).
  const wrong = h.drachtio.pbx.call({ user: PSID, sdp: pbxOffer, auth: { username: 'pbx', password: 'not-the-password' } });
  t.ok((await wrong.final).status >= 400, 'wrong digest credentials refused');
  h.sim.graph.setPermission(PAGE_ID, PSID, 'no_permission');
  const right = h.drachtio.pbx.call({ user: PSID, sdp: pbxOffer, auth: { username: 'pbx', password: DIGEST_PASSWORD } });
  t.equal((await right.final).status, 403, 'authenticated call refused for lack of permission');
  scenarios += 2;

  // Metrics output.
  const metrics = await (await fetch(`${h.daemon.adminUrl}/metrics`)).text();
  t.same(findSecrets(metrics, [APP_SECRET, VERIFY_TOKEN, PAGE_TOKEN, DIGEST_PASSWORD]), [], 'no secret in /metrics');

  await h.close();
  // The simulator plays Meta and the PBX and may of course know the secrets; only the bridge's lines count.
  const bridgeLines = lines.filter((l) => !/"component":"(meta-simulator|graph-simulator)"/.test(l));
  const secrets = [APP_SECRET, VERIFY_TOKEN, PAGE_TOKEN, DIGEST_PASSWORD, `"${DRACHTIO_SECRET}"`];
  const found = bridgeLines.filter((l) => findSecrets(l, secrets).length > 0);
  t.ok(bridgeLines.length > 50, `${bridgeLines.length} log lines captured`);
  t.same(found.slice(0, 3), [], 'no secret in any log line');

  recordFigures('secrets-logs', {
    title: 'Secrets in logs, responses and metrics',
    figures: [
      ['scenarios run (call, Graph errors, bad webhooks, handshakes, SIP auth)', scenarios],
      ['log lines checked (trace level)', bridgeLines.length],
      ['secrets searched for', secrets.length],
      ['lines with a secret', found.length],
    ],
  });
});

function run(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'src/main.ts'), ...args], { cwd: root, env: { ...process.env, ...env } });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

t.test('check-config never prints a secret, for good files and broken ones', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'msb-secrets-'));
  const S = { app: 'app-secret-Q7x9', verify: 'verify-token-Z3k1', page: 'EAApage-token-M4n8', drachtio: 'drachtio-secret-W2e6', digest: 'digest-pass-R5t0' };
  const all = Object.values(S);
  writeFileSync(path.join(dir, 'page-token'), `${S.page}\n`);
  const files: Array<[string, string, number]> = [
    [
      'inline secrets',
      [
        `meta: { app_secret: "${S.app}", verify_token: "${S.verify}" }`,
        `pages: [{ id: "123", access_token: "${S.page}" }]`,
        `sip: { drachtio: { secret: "${S.drachtio}" }, digest: { realm: r, username: u, password: "${S.digest}" } }`,
        'routes: [{ name: r, match: {}, targets: ["sip:pbx@127.0.0.1"] }]',
      ].join('\n'),
      0,
    ],
    [
      'secrets from the environment and a file',
      [
        'meta: { app_secret: "${APP_SECRET_ENV}", verify_token: "${VERIFY_ENV}" }',
        `pages: [{ id: "123", access_token_file: "${path.join(dir, 'page-token')}" }]`,
        'routes: [{ name: r, match: {}, targets: ["sip:pbx@127.0.0.1"] }]',
      ].join('\n'),
      0,
    ],
    [
      'broken YAML on the line of a secret',
      [`meta: { app_secret: "${S.app}, verify_token: "${S.verify}" }`, `pages: [{ id: "123", access_token: "${S.page}" }]`].join('\n'),
      78,
    ],
    [
      'a secret where a number belongs',
      [
        `meta: { app_secret: "${S.app}", verify_token: "${S.verify}", graph_timeout_ms: "${S.app}" }`,
        `pages: [{ id: "123", access_token: "${S.page}" }]`,
        'routes: [{ name: r, match: {}, targets: ["sip:pbx@127.0.0.1"] }]',
      ].join('\n'),
      78,
    ],
    [
      'a secret under a misspelt key',
      [
        `meta: { app_secret: "${S.app}", verify_token: "${S.verify}", app_secert: "${S.app}" }`,
        `pages: [{ id: "123", access_token: "${S.page}" }]`,
        'routes: [{ name: r, match: {}, targets: ["sip:pbx@127.0.0.1"] }]',
      ].join('\n'),
      78,
    ],
  ];
  const leaks: string[] = [];
  for (const [name, text, expectedCode] of files) {
    const file = path.join(dir, `${name.replace(/\W+/g, '-')}.yaml`);
    writeFileSync(file, `${text}\n`);
    const res = await run(['check-config', file], { APP_SECRET_ENV: S.app, VERIFY_ENV: S.verify });
    t.equal(res.code, expectedCode, `${name}: exit ${expectedCode}`);
    const found = findSecrets(res.out, all);
    t.same(found, [], `${name}: no secret printed`);
    if (found.length > 0) leaks.push(name);
  }
  recordFigures('secrets-check-config', {
    title: 'Secrets in check-config output',
    figures: [
      ['config files checked (good and broken)', files.length],
      ['files whose output showed a secret', leaks.length],
    ],
  });
});
