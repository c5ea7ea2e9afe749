/**
 * The `cluster:` section: off by default (a single instance needs nothing new), its rules, and its secret.
 */
import t from 'tap';
import { ConfigError } from '../../../src/core/errors.js';
import { parseConfigText, redactConfig } from '../../../src/config/index.js';

const minimal = `
meta:
  app_secret: s3cret
  verify_token: vt
pages:
  - id: "106378625516323"
    access_token: tok
`;

function problemsOf(text: string): string[] {
  try {
    parseConfigText(text, {});
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

t.test('without a cluster section the bridge is a single instance', async (t) => {
  const config = parseConfigText(minimal, {});
  t.equal(config.cluster.enabled, false, 'off by default');
  t.match(config.cluster, { heartbeat_ms: 1000, peer_timeout_ms: 4000, redis: { host: '127.0.0.1', port: 6379, key_prefix: 'msb:' } });
});

t.test('cluster keys are checked', async (t) => {
  t.match(
    problemsOf(`${minimal}cluster: { enabled: true, heartbeat_ms: 1000, peer_timeout_ms: 1500 }\n`).join('\n'),
    /cluster\.peer_timeout_ms.*twice cluster\.heartbeat_ms/,
    'a peer timeout shorter than two heartbeats would take live instances for lost',
  );
  t.match(problemsOf(`${minimal}cluster: { enabled: true, instance_id: "a b" }\n`).join('\n'), /cluster\.instance_id/, 'instance id charset');
  t.match(problemsOf(`${minimal}cluster: { enabled: true, redis: { hots: x } }\n`).join('\n'), /cluster\.redis/, 'a typo is an error');
});

t.test('the Redis password is a secret: from the environment, redacted in dumps', async (t) => {
  const config = parseConfigText(`${minimal}cluster: { enabled: true, redis: { password: "\${REDIS_PASSWORD}" } }\n`, { REDIS_PASSWORD: 'pw-value' });
  t.equal(config.cluster.redis.password, 'pw-value');
  t.notMatch(JSON.stringify(redactConfig(config)), /pw-value/, 'not in the redacted configuration');
});
