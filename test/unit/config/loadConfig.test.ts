import t from 'tap';
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError } from '../../../src/core/errors.js';
import { loadConfig, parseConfigText, redactConfig, formatConfig, pageTokens, configWarnings } from '../../../src/config/index.js';

const examplePath = fileURLToPath(new URL('../../../config/config.example.yaml', import.meta.url));

const exampleEnv = {
  META_APP_SECRET: 'app-secret-value',
  META_VERIFY_TOKEN: 'verify-token-value',
  META_PAGE_TOKEN: 'page-token-value',
  DRACHTIO_SECRET: 'drachtio-secret-value',
  SIP_DIGEST_PASSWORD: 'digest-password-value',
};

const minimal = `
meta:
  app_secret: s3cret
  verify_token: vt
pages:
  - id: "106378625516323"
    access_token: tok
`;

function problemsOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'msb-config-'));
}

t.test('the example configuration loads with its env vars set', async (t) => {
  const config = loadConfig(examplePath, exampleEnv);
  t.equal(config.meta.app_secret, 'app-secret-value');
  t.equal(config.meta.verify_token, 'verify-token-value');
  t.equal(config.pages[0]?.access_token, 'page-token-value');
  t.equal(config.sip.drachtio.secret, 'drachtio-secret-value');
  t.equal(config.sip.digest?.password, 'digest-password-value');
  t.equal(config.routes.length, 2);
  t.same(config.routes[0]?.codecs, ['opus', 'PCMU']);
  t.equal(pageTokens(config).get('106378625516323'), 'page-token-value');
});

t.test('the example configuration without its env vars names every missing variable', async (t) => {
  const problems = problemsOf(() => loadConfig(examplePath, {}));
  t.ok(problems.includes('meta.app_secret: environment variable META_APP_SECRET is not set'), problems.join('\n'));
  t.ok(problems.includes('pages[0].access_token: environment variable META_PAGE_TOKEN is not set'));
  t.ok(problems.includes('sip.digest.password: environment variable SIP_DIGEST_PASSWORD is not set'));
});

t.test('defaults fill everything not given', async (t) => {
  const config = parseConfigText(minimal, {});
  t.equal(config.meta.graph_base_url, 'https://graph.facebook.com');
  t.equal(config.meta.graph_version, 'v23.0');
  t.equal(config.webhook.listen.port, 8080);
  t.equal(config.webhook.path, '/webhook');
  t.equal(config.admin.listen.host, '127.0.0.1');
  t.equal(config.sip.headers.psid, 'X-Messenger-PSID');
  t.same(config.sip.acl, ['127.0.0.1/32']);
  t.equal(config.calls.accept_deadline_ms, 50000);
  t.same(config.media.codecs, ['PCMU', 'PCMA', 'opus']);
  t.equal(config.media.dtmf.inband_detect, 'auto');
  t.equal(config.messenger.ice.listen_ip, '0.0.0.0');
  t.equal(config.logging.level, 'info');
  t.same(config.routes, []);
  t.equal(config.sip.digest, undefined);
});

t.test('the config is deeply frozen', async (t) => {
  const config = parseConfigText(minimal, {});
  t.ok(Object.isFrozen(config));
  t.ok(Object.isFrozen(config.pages[0]));
  t.ok(Object.isFrozen(config.webhook.listen));
  t.throws(() => {
    (config.calls as { max_concurrent: number }).max_concurrent = 1;
  });
});

t.test('a missing secret is reported with its path', async (t) => {
  const text = `
meta: { app_secret: a, verify_token: v }
pages:
  - id: "1"
    access_token: t
  - id: "2"
`;
  const problems = problemsOf(() => parseConfigText(text, {}));
  t.same(problems, ['pages[1].access_token: required']);
});

t.test('every problem is reported at once, one per line', async (t) => {
  const text = `
meta: { app_secret: a }
pages: []
webhook: { listen: { port: 99999 }, bogus: 1 }
calls: { accept_deadline_ms: 60000 }
sip: { acl: ["10.0.0.0/33", "fd00::/8"] }
`;
  const problems = problemsOf(() => parseConfigText(text, {}));
  t.ok(problems.includes('meta.verify_token: required'), problems.join('\n'));
  t.ok(problems.some((p) => p.startsWith('pages: ')));
  t.ok(problems.some((p) => p.startsWith('webhook.listen.port: ')));
  t.ok(problems.includes('webhook.bogus: unknown key'));
  t.ok(problems.some((p) => p.startsWith('calls.accept_deadline_ms: must be below 60000')));
  t.ok(problems.some((p) => p.startsWith('sip.acl[0]: ')));
  t.notOk(problems.some((p) => p.startsWith('sip.acl[1]')), 'IPv6 CIDR accepted');
});

t.test('cross-field checks', async (t) => {
  const text = `${minimal}
sip: { default_page: "999" }
routes:
  - { name: a, match: { page_id: "998" }, targets: ["sip:a@127.0.0.1"] }
  - { name: a, targets: ["http://nope"] }
media: { rtp: { min_port: 5000, max_port: 4000 } }
`;
  const problems = problemsOf(() => parseConfigText(text, {}));
  t.ok(problems.includes('sip.default_page: not one of the configured pages'), problems.join('\n'));
  t.ok(problems.includes('routes[0].match.page_id: not one of the configured pages'));
  t.ok(problems.some((p) => p.startsWith('routes[1].targets[0]: ')));
  t.ok(problems.includes('media.rtp.min_port: must not exceed max_port'));
});

t.test('unquoted numeric page ids are accepted while exact', async (t) => {
  const config = parseConfigText(minimal.replace('"106378625516323"', '106378625516323'), {});
  t.equal(config.pages[0]?.id, '106378625516323');
  const problems = problemsOf(() => parseConfigText(minimal.replace('"106378625516323"', '12345678901234567890'), {}));
  t.ok(problems.some((p) => p.startsWith('pages[0].id: ')), problems.join('\n'));
});

t.test('env references work anywhere in a string and $${ is a literal', async (t) => {
  const text = minimal.replace('app_secret: s3cret', () => 'app_secret: "pre-${A}-mid-${B}-$${C}"');
  const config = parseConfigText(text, { A: 'x', B: 'y' });
  t.equal(config.meta.app_secret, 'pre-x-mid-y-${C}');
});

t.test('secrets from *_file keys, trimmed, relative to the config file', async (t) => {
  const dir = tempDir();
  writeFileSync(join(dir, 'token.txt'), '  file-token\n');
  writeFileSync(join(dir, 'secret.txt'), 'file-secret\n');
  const path = join(dir, 'config.yaml');
  writeFileSync(
    path,
    minimal
      .replace('access_token: tok', 'access_token_file: token.txt')
      .replace('app_secret: s3cret', `app_secret_file: ${join(dir, 'secret.txt')}`),
  );
  const config = loadConfig(path, {});
  t.equal(config.pages[0]?.access_token, 'file-token');
  t.equal(config.meta.app_secret, 'file-secret');
});

t.test('an unreadable *_file names the key; both forms at once is refused', async (t) => {
  const dir = tempDir();
  const text = minimal.replace('access_token: tok', `access_token_file: ${join(dir, 'absent')}`);
  const problems = problemsOf(() => parseConfigText(text, {}));
  t.equal(problems.length, 1);
  t.match(problems[0], /^pages\[0\]\.access_token_file: cannot read .*absent \(ENOENT\)$/);

  const both = minimal.replace('access_token: tok', 'access_token: tok\n    access_token_file: x');
  t.same(problemsOf(() => parseConfigText(both, {})), [
    'pages[0].access_token: give either access_token or access_token_file, not both',
  ]);
});

t.test('*_file is only for secrets', async (t) => {
  const text = `${minimal}\nwebhook: { path_file: /etc/hostname }\n`;
  t.same(problemsOf(() => parseConfigText(text, {})), ['webhook.path_file: unknown key']);
});

t.test('YAML syntax errors carry line and column', async (t) => {
  const text = 'meta:\n  app_secret: a\n  verify_token: [unclosed\npages: 1\n';
  const problems = problemsOf(() => parseConfigText(text, {}, undefined, 'bad.yaml'));
  t.ok(problems.length >= 1);
  t.match(problems[0], /^bad\.yaml:\d+:\d+: /);
  const dup = problemsOf(() => parseConfigText('meta: {}\nmeta: {}\n', {}, undefined, 'dup.yaml'));
  t.match(dup[0], /^dup\.yaml:2:1: /);
});

t.test('a missing file and an empty file are ConfigErrors', async (t) => {
  const dir = tempDir();
  t.throws(() => loadConfig(join(dir, 'nope.yaml'), {}), ConfigError);
  const empty = join(dir, 'empty.yaml');
  writeFileSync(empty, '');
  t.same(problemsOf(() => loadConfig(empty, {})), ['(root): the configuration is empty']);
  if (process.getuid?.() !== 0) {
    const locked = join(dir, 'locked.yaml');
    writeFileSync(locked, minimal);
    chmodSync(locked, 0);
    t.throws(() => loadConfig(locked, {}), ConfigError);
  }
});

t.test('redactConfig and formatConfig never show secrets', async (t) => {
  const config = loadConfig(examplePath, exampleEnv);
  const redacted = redactConfig(config);
  t.equal(redacted.meta.app_secret, '[redacted]');
  t.equal(redacted.meta.verify_token, '[redacted]');
  t.equal(redacted.pages[0]?.access_token, '[redacted]');
  t.equal(redacted.sip.drachtio.secret, '[redacted]');
  t.equal(redacted.sip.digest?.password, '[redacted]');
  t.equal(redacted.pages[0]?.id, '106378625516323', 'non-secrets kept');
  t.equal(config.meta.app_secret, 'app-secret-value', 'original untouched');
  const text = formatConfig(config);
  for (const secret of Object.values(exampleEnv)) t.notOk(text.includes(secret), `${secret} not shown`);
  t.match(text, /graph_version: v23\.0/);
  t.match(text, /app_secret: "?\[redacted\]"?/);
});

t.test('port ranges of different components must not overlap', async (t) => {
  const text = `${minimal}\nmedia: { rtp: { min_port: 50000, max_port: 50100 } }\n`;
  t.same(problemsOf(() => parseConfigText(text, {})), ['media.rtp: port range overlaps messenger.ice']);
});

t.test('configWarnings points at likely mistakes, and the example has none', async (t) => {
  t.same(configWarnings(loadConfig(examplePath, exampleEnv)), []);
  const risky = parseConfigText(
    `${minimal}
sip: { acl: ["0.0.0.0/0"] }
admin: { listen: { host: 0.0.0.0 } }
routes:
  - { name: vip, match: { psids: ["1"] }, targets: ["sip:a@10.0.0.1", "sip:b@10.0.0.2", "sip:c@10.0.0.3", "sip:d@10.0.0.4"], target_timeout_ms: 20000 }
`,
    {},
  );
  const warnings = configWarnings(risky);
  t.ok(warnings.some((w) => w.startsWith('routes: no default route')), warnings.join('\n'));
  t.ok(warnings.some((w) => w.startsWith('routes[0].targets: ') && w.includes('only the first 2 of 4')));
  t.ok(warnings.some((w) => w.startsWith('sip.acl: ')));
  t.ok(warnings.some((w) => w.startsWith('admin.listen.host: ')));
  t.ok(configWarnings(parseConfigText(minimal, {})).some((w) => w.startsWith('routes: none configured')));
  const srtp = configWarnings(
    parseConfigText(
      `${minimal}
media: { srtp: required }
routes:
  - { name: a, match: {}, targets: ["sip:a@10.0.0.1", "sips:b@pbx.example.com", "sip:c@10.0.0.3;transport=tls"] }
  - { name: b, match: { psids: ["1"] }, targets: ["sip:d@10.0.0.4"], srtp: optional }
`,
      {},
    ),
  );
  t.same(
    srtp.filter((w) => w.includes('SRTP keys')),
    ['routes[0].targets: SRTP keys (SDES) travel in the SDP, readable on the wire to sip:a@10.0.0.1: use sips: or ;transport=tls'],
    'SRTP offered over plain SIP is pointed out; TLS targets and routes that offer no SRTP are not',
  );
});

t.test('a value that is exactly one env reference takes its YAML type, except secrets', async (t) => {
  const text = `${minimal.replace('verify_token: vt', 'verify_token: ${VT}')}
webhook:
  listen:
    port: \${PORT}
media: { rtp: { comedia: "\${COMEDIA}" } }
sip: { from_user: "bridge-\${N}" }
`;
  const config = parseConfigText(text, { PORT: '8443', COMEDIA: 'true', VT: '12345', N: '7' });
  t.equal(config.webhook.listen.port, 8443);
  t.equal(config.media.rtp.comedia, true);
  t.equal(config.meta.verify_token, '12345', 'a numeric-looking secret stays a string');
  t.equal(config.sip.from_user, 'bridge-7');
  const problems = problemsOf(() => parseConfigText(text, { PORT: 'eighty', COMEDIA: 'true', VT: 'x', N: '1' }));
  t.ok(problems.some((p) => p.startsWith('webhook.listen.port: ')), problems.join('\n'));
});

t.test('calls.prepared_media: 0 (media made per call) unless set; 0-64 accepted', async (t) => {
  t.equal(parseConfigText(minimal, {}).calls.prepared_media, 0, 'default 0');
  t.equal(parseConfigText(`${minimal}calls: { prepared_media: 4 }\n`, {}).calls.prepared_media, 4, '4 kept');
  t.equal(parseConfigText(`${minimal}calls: { prepared_media: 64 }\n`, {}).calls.prepared_media, 64, 'the maximum kept');
});

t.test('calls.prepared_media must be a whole number from 0 to 64', async (t) => {
  for (const bad of ['-1', '65', '1.5', '"two"']) {
    // problemsOf fails the test unless a ConfigError is thrown.
    const problems = problemsOf(() => parseConfigText(`${minimal}calls: { prepared_media: ${bad} }\n`, {}));
    t.match(problems.join('\n'), /calls\.prepared_media/, `${bad}: refused, the problem names the key`);
  }
});

t.test('the example configuration documents calls.prepared_media with its default', async (t) => {
  const text = readFileSync(examplePath, 'utf8');
  t.match(text, /^ {2}# Media made ahead for this many calls/m, 'explained');
  t.match(text, /^ {2}prepared_media: 0$/m, 'set to its default under calls');
  t.equal(loadConfig(examplePath, exampleEnv).calls.prepared_media, 0, 'and it loads');
});

t.test('sip.transfer: on for any host by default; allowed_hosts takes hosts without ports', async (t) => {
  const defaults = parseConfigText(minimal, {}).sip.transfer;
  t.same(defaults, { enabled: true, target_timeout_ms: 30_000 }, 'enabled, no allow-list');
  const set = parseConfigText(`${minimal}sip: { transfer: { enabled: false, allowed_hosts: ["10.0.0.5", "pbx.example.com", "[::1]"] } }\n`, {});
  t.same(set.sip.transfer.allowed_hosts, ['10.0.0.5', 'pbx.example.com', '[::1]']);
  t.equal(set.sip.transfer.enabled, false);
  for (const bad of ['["10.0.0.5:5060"]', '[]', '["sip:pbx"]']) {
    const problems = problemsOf(() => parseConfigText(`${minimal}sip: { transfer: { allowed_hosts: ${bad} } }\n`, {}));
    t.match(problems.join('\n'), /sip\.transfer\.allowed_hosts/, `${bad}: refused`);
  }
  t.equal(loadConfig(examplePath, exampleEnv).sip.transfer.enabled, true, 'the example documents it and loads');
});

t.test('cluster: off by default, its rules, and the Redis password a secret', async (t) => {
  const single = parseConfigText(minimal, {});
  t.equal(single.cluster.enabled, false, 'without a cluster section the bridge is a single instance');
  t.match(single.cluster, { heartbeat_ms: 1000, peer_timeout_ms: 4000, redis: { host: '127.0.0.1', port: 6379, key_prefix: 'msb:' } });
  t.match(
    problemsOf(() => parseConfigText(`${minimal}cluster: { enabled: true, heartbeat_ms: 1000, peer_timeout_ms: 1500 }\n`, {})).join('\n'),
    /cluster\.peer_timeout_ms.*twice cluster\.heartbeat_ms/,
    'a peer timeout shorter than two heartbeats would take live instances for lost',
  );
  t.match(problemsOf(() => parseConfigText(`${minimal}cluster: { instance_id: "a b" }\n`, {})).join('\n'), /cluster\.instance_id/);
  t.match(problemsOf(() => parseConfigText(`${minimal}cluster: { redis: { hots: x } }\n`, {})).join('\n'), /cluster\.redis/, 'a typo is an error');
  const config = parseConfigText(`${minimal}cluster: { enabled: true, redis: { password: "\${REDIS_PASSWORD}" } }\n`, { REDIS_PASSWORD: 'pw-value' });
  t.equal(config.cluster.redis.password, 'pw-value', 'from the environment');
  t.notMatch(JSON.stringify(redactConfig(config)), /pw-value/, 'redacted in dumps');
});
