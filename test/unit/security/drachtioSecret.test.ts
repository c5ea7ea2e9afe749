/**
 * The drachtio secret defaults to `cymru`, the value of drachtio's samples: whoever reaches drachtio-server's admin
 * port with it can take the SIP traffic. `check-config` and start-up say so loudly.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import t from 'tap';
import { configWarnings, parseConfigText } from '../../../src/config/index.js';
import { startHarness } from '../../helpers/bridgeHarness.js';

const root = path.resolve(import.meta.dirname, '../../..');
const minimal = [
  'meta: { app_secret: "a-secret", verify_token: "a-token" }',
  'pages: [{ id: "123", access_token: "a-page-token" }]',
  'routes: [{ name: r, match: {}, targets: ["sip:pbx@127.0.0.1"] }]',
  '',
].join('\n');

t.test('configWarnings: the default secret is flagged, a secret of your own is not', async (t) => {
  const flagged = configWarnings(parseConfigText(minimal, {})).filter((w) => w.startsWith('sip.drachtio.secret: SECURITY'));
  t.equal(flagged.length, 1);
  t.match(flagged[0], /well-known default 'cymru'/);
  const own = configWarnings(parseConfigText(`${minimal}sip: { drachtio: { secret: "s3cret-of-our-own" } }\n`, {}));
  t.same(own.filter((w) => w.startsWith('sip.drachtio.secret')), []);
});

t.test('check-config prints the warning', async (t) => {
  const file = path.join(mkdtempSync(path.join(tmpdir(), 'msb-secret-')), 'config.yaml');
  writeFileSync(file, minimal);
  const stdout = await new Promise<string>((resolve, reject) =>
    execFile(process.execPath, ['--import', 'tsx', path.join(root, 'src/main.ts'), 'check-config', file], { cwd: root, timeout: 60_000 }, (err, out) =>
      err ? reject(err) : resolve(out),
    ),
  );
  t.match(stdout, /^warning: sip\.drachtio\.secret: SECURITY: the well-known default 'cymru'/m);
  t.notMatch(stdout, /a-secret|a-page-token/, 'secrets still redacted');
});

t.test('start-up logs it as a warning', async (t) => {
  const h = await startHarness({ captureLogs: true });
  t.teardown(() => h.close());
  const line = h.logs().find((l) => l.msg === 'configuration warning' && String(l.warning).startsWith('sip.drachtio.secret: SECURITY'));
  t.ok(line, 'logged at start');
  t.equal(line?.level, 40, 'at warn level');
});
