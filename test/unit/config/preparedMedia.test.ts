import t from 'tap';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ConfigError } from '../../../src/core/errors.js';
import { loadConfig, parseConfigText } from '../../../src/config/index.js';

const minimal = `
meta:
  app_secret: s3cret
  verify_token: vt
pages:
  - id: "106378625516323"
    access_token: tok
`;

t.test('calls.prepared_media: 0 (media made per call) unless set; 0-64 accepted', async (t) => {
  t.equal(parseConfigText(minimal, {}).calls.prepared_media, 0, 'default 0');
  t.equal(parseConfigText(`${minimal}calls: { prepared_media: 4 }\n`, {}).calls.prepared_media, 4, '4 kept');
  t.equal(parseConfigText(`${minimal}calls: { prepared_media: 64 }\n`, {}).calls.prepared_media, 64, 'the maximum kept');
});

t.test('calls.prepared_media must be a whole number from 0 to 64', async (t) => {
  for (const bad of ['-1', '65', '1.5', '"two"']) {
    const err = (() => {
      try {
        parseConfigText(`${minimal}calls: { prepared_media: ${bad} }\n`, {});
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    t.ok(err instanceof ConfigError, `${bad} is refused`);
    t.match((err as ConfigError).problems.join('\n'), /calls\.prepared_media/, `${bad}: the problem names the key`);
  }
});

t.test('the example configuration documents the key with its default', async (t) => {
  const example = fileURLToPath(new URL('../../../config/config.example.yaml', import.meta.url));
  const text = readFileSync(example, 'utf8');
  t.match(text, /^ {2}# Media made ahead for this many calls/m, 'explained');
  t.match(text, /^ {2}prepared_media: 0$/m, 'set to its default under calls');
  const config = loadConfig(example, {
    META_APP_SECRET: 'a',
    META_VERIFY_TOKEN: 'b',
    META_PAGE_TOKEN: 'c',
    DRACHTIO_SECRET: 'd',
    SIP_DIGEST_PASSWORD: 'e',
  });
  t.equal(config.calls.prepared_media, 0, 'and it loads');
});
