/**
 * A reload (what SIGHUP calls) used to keep the old ACL and digest password silently: removing a CIDR or rotating
 * the password did nothing until a restart. Now the security keys take effect at once, and a change that needs a
 * restart (the drachtio secret) refuses the whole reload, naming the key.
 */
import t from 'tap';
import { PSID, startHarness } from '../../helpers/bridgeHarness.js';
import type { Config } from '../../../src/config/schema.js';
import { ConfigError } from '../../../src/core/errors.js';
import { changedKeys, keysNeedingRestart } from '../../../src/config/reloadable.js';

const offer = ['v=0', 'o=pbx 1 1 IN IP4 127.0.0.1', 's=-', 'c=IN IP4 127.0.0.1', 't=0 0', 'm=audio 40000 RTP/AVP 0', 'a=rtpmap:0 PCMU/8000', ''].join('\r\n');

function edited(config: Config, edit: (c: Config) => void): Config {
  const next = structuredClone(config);
  edit(next);
  return next;
}

t.test('a reload that removes the PBX from sip.acl takes effect at once', async (t) => {
  const h = await startHarness({ captureLogs: true, config: { sip: { acl: ['127.0.0.0/8'] } } });
  t.teardown(() => h.close());
  h.sim.graph.setPermission('106378625516323', '1111', 'no_permission');
  const before = await h.drachtio.pbx.call({ user: '1111', sdp: offer }).final;
  t.equal(before.status, 403, 'before: admitted (refused later for lack of permission)');
  t.match(before.response.get('reason') ?? '', /permission/);

  h.daemon.reload(edited(h.config, (c) => (c.sip.acl = ['10.9.9.0/24'])));
  const after = await h.drachtio.pbx.call({ user: PSID, sdp: offer }).final;
  t.equal(after.status, 403, 'after: refused at the ACL');
  t.match(after.response.get('reason') ?? '', /source not allowed/);
  t.ok(h.logs().some((l) => l.msg === 'INVITE from a source outside the ACL'), 'logged');
});

t.test('a reload that rotates the digest password: the old one is refused, the new one works', async (t) => {
  const digest = { realm: 'bridge', username: 'pbx', password: 'old-password' };
  const h = await startHarness({ config: { sip: { digest } } });
  t.teardown(() => h.close());
  h.sim.graph.setPermission('106378625516323', '1111', 'no_permission');
  const auth = (password: string) => ({ username: 'pbx', password });
  t.equal((await h.drachtio.pbx.call({ user: '1111', sdp: offer, auth: auth('old-password') }).final).status, 403, 'old password admitted before');
  h.daemon.reload(edited(h.config, (c) => (c.sip.digest = { ...digest, password: 'new-password' })));
  t.equal((await h.drachtio.pbx.call({ user: '1111', sdp: offer, auth: auth('old-password') }).final).status, 401, 'old password refused after');
  t.equal((await h.drachtio.pbx.call({ user: '1111', sdp: offer, auth: auth('new-password') }).final).status, 403, 'new password admitted');
});

t.test('a reload that changes the drachtio secret is refused, naming it, and changes nothing', async (t) => {
  const h = await startHarness({ config: { sip: { acl: ['127.0.0.0/8'] } } });
  t.teardown(() => h.close());
  const next = edited(h.config, (c) => {
    c.sip.drachtio.secret = 'rotated-secret';
    c.sip.acl = ['10.9.9.0/24'];
  });
  let refused: unknown;
  try {
    h.daemon.reload(next);
  } catch (err) {
    refused = err;
  }
  t.ok(refused instanceof ConfigError, 'the reload is refused');
  t.same((refused as ConfigError).problems, ['sip.drachtio.secret: changed, but only a restart applies it (reload refused, nothing changed)']);
  h.sim.graph.setPermission('106378625516323', '1111', 'no_permission');
  const final = await h.drachtio.pbx.call({ user: '1111', sdp: offer }).final;
  t.equal(final.status, 403);
  t.match(final.response.get('reason') ?? '', /permission/, 'the ACL of the refused reload was not applied either');
});

t.test('keysNeedingRestart: security keys reload, listeners and the drachtio connection do not', async (t) => {
  const h = await startHarness();
  t.teardown(() => h.close());
  const c = h.config;
  t.same(keysNeedingRestart(c, edited(c, (n) => {
    n.sip.acl = ['10.0.0.0/8'];
    n.sip.digest = { realm: 'r', username: 'u', password: 'p' };
    n.meta.app_secret = 'another';
    n.meta.appsecret_proof = true;
    n.sip.transfer.allowed_hosts = ['10.0.0.5'];
    n.logging.hash_psid = true;
  })), []);
  t.same(keysNeedingRestart(c, edited(c, (n) => {
    n.sip.drachtio.host = '10.0.0.1';
    n.webhook.listen.port = 1;
    n.media.rtp.comedia = true;
  })), ['webhook.listen.port', 'sip.drachtio.host', 'media.rtp.comedia']);
  t.same(changedKeys({ a: [1, 2], b: { c: 1 } }, { a: [1, 3], b: { c: 1, d: 2 } }), ['a', 'b.d']);
});
