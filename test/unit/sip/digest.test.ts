import t from 'tap';
import { createHash } from 'node:crypto';
import { DigestAuthenticator, buildAuthorization, digestResponse, parseDigestHeader } from '../../../src/sip/digest.js';

const md5 = (s: string): string => createHash('md5').update(s).digest('hex');
const credentials = { realm: 'bridge', username: 'pbx', password: 'hunter2' };

t.test('RFC 2617 section 3.5 example response', async (t) => {
  // The worked example of RFC 2617 (qop=auth).
  const response = digestResponse({
    username: 'Mufasa',
    realm: 'testrealm@host.com',
    password: 'Circle Of Life',
    method: 'GET',
    uri: '/dir/index.html',
    nonce: 'dcd98b7102dd2f0e8b11d0f600bfb0c093',
    qop: 'auth',
    nc: '00000001',
    cnonce: '0a4f113b',
  });
  t.equal(response, '6629fae49393a05397450978507c4ef1');
});

t.test('without qop the response is MD5(HA1:nonce:HA2)', async (t) => {
  const ha1 = md5('pbx:bridge:hunter2');
  const ha2 = md5('INVITE:sip:1@h');
  t.equal(
    digestResponse({ ...credentials, method: 'INVITE', uri: 'sip:1@h', nonce: 'n1' }),
    md5(`${ha1}:n1:${ha2}`),
  );
});

t.test('parseDigestHeader handles quoted and bare values', async (t) => {
  t.same(parseDigestHeader('Digest realm="a b", nonce="x,y", algorithm=MD5, qop="auth"'), {
    realm: 'a b',
    nonce: 'x,y',
    algorithm: 'MD5',
    qop: 'auth',
  });
  t.equal(parseDigestHeader('Basic abc'), undefined);
  t.equal(parseDigestHeader(undefined), undefined);
});

t.test('challenge -> authorization -> verified; wrong password and wrong user refused', async (t) => {
  const auth = new DigestAuthenticator({ credentials });
  const challenge = auth.challenge();
  t.match(challenge, /^Digest realm="bridge", nonce="[^"]+", algorithm=MD5, qop="auth"$/);
  const good = buildAuthorization(challenge, { method: 'INVITE', uri: 'sip:123@10.0.0.1', username: 'pbx', password: 'hunter2' });
  t.same(auth.verify(good, 'INVITE'), { ok: true, username: 'pbx' });
  t.match(auth.verify(good, 'BYE'), { ok: false, reason: 'bad_response' }, 'response binds the method');
  const badPw = buildAuthorization(challenge, { method: 'INVITE', uri: 'sip:123@10.0.0.1', username: 'pbx', password: 'x' });
  t.match(auth.verify(badPw, 'INVITE'), { ok: false, reason: 'bad_response', stale: false });
  const badUser = buildAuthorization(challenge, { method: 'INVITE', uri: 'sip:123@10.0.0.1', username: 'eve', password: 'hunter2' });
  t.match(auth.verify(badUser, 'INVITE'), { ok: false, reason: 'wrong_user' });
  t.match(auth.verify(undefined, 'INVITE'), { ok: false, reason: 'missing' });
  t.match(auth.verify('Digest username="pbx"', 'INVITE'), { ok: false, reason: 'malformed' });
});

t.test('nonces from another instance are refused; expired ones are stale', async (t) => {
  let now = 1_000_000;
  const auth = new DigestAuthenticator({ credentials, nonceTtlMs: 60_000, now: () => now });
  const other = new DigestAuthenticator({ credentials });
  const forged = buildAuthorization(other.challenge(), { method: 'INVITE', uri: 'sip:1@h', username: 'pbx', password: 'hunter2' });
  t.match(auth.verify(forged, 'INVITE'), { ok: false, reason: 'bad_nonce', stale: false });
  const fresh = buildAuthorization(auth.challenge(), { method: 'INVITE', uri: 'sip:1@h', username: 'pbx', password: 'hunter2' });
  now += 61_000;
  t.match(auth.verify(fresh, 'INVITE'), { ok: false, reason: 'bad_nonce', stale: true });
  t.match(auth.challenge(true), /stale=true$/);
});

t.test('an accepted answer cannot be replayed; a higher nonce count on the same nonce is accepted', async (t) => {
  const auth = new DigestAuthenticator({ credentials });
  const challenge = auth.challenge();
  const answer = (nc: number): string =>
    buildAuthorization(challenge, { method: 'INVITE', uri: 'sip:1@h', username: 'pbx', password: 'hunter2', cnonce: 'c1', nc });
  t.same(auth.verify(answer(1), 'INVITE', 'sip:1@h'), { ok: true, username: 'pbx' });
  t.same(auth.verify(answer(1), 'INVITE', 'sip:1@h'), { ok: false, reason: 'replayed', stale: true }, 'the same answer again');
  t.same(auth.verify(answer(2), 'INVITE', 'sip:1@h'), { ok: true, username: 'pbx' }, 'the next request on the nonce');
  t.same(auth.verify(answer(2), 'INVITE', 'sip:1@h'), { ok: false, reason: 'replayed', stale: true });
  t.same(auth.verify(answer(1), 'INVITE', 'sip:1@h'), { ok: false, reason: 'replayed', stale: true }, 'an older count');
  const next = buildAuthorization(auth.challenge(true), { method: 'INVITE', uri: 'sip:1@h', username: 'pbx', password: 'hunter2' });
  t.same(auth.verify(next, 'INVITE', 'sip:1@h'), { ok: true, username: 'pbx' }, 'the client answers the stale re-challenge');
});

t.test('without qop a nonce answers one request only', async (t) => {
  const auth = new DigestAuthenticator({ credentials });
  const challenge = auth.challenge().replace(', qop="auth"', '');
  const answer = buildAuthorization(challenge, { method: 'INVITE', uri: 'sip:1@h', username: 'pbx', password: 'hunter2' });
  t.notMatch(answer, /qop=/);
  t.same(auth.verify(answer, 'INVITE', 'sip:1@h'), { ok: true, username: 'pbx' });
  t.same(auth.verify(answer, 'INVITE', 'sip:1@h'), { ok: false, reason: 'replayed', stale: true });
});

t.test("the answer is bound to the request's URI", async (t) => {
  const auth = new DigestAuthenticator({ credentials });
  const answer = buildAuthorization(auth.challenge(), { method: 'INVITE', uri: 'sip:123@10.0.0.1', username: 'pbx', password: 'hunter2' });
  t.same(auth.verify(answer, 'INVITE', 'sip:999@10.0.0.1'), { ok: false, reason: 'wrong_uri', stale: false }, 'another callee');
  t.same(auth.verify(answer, 'INVITE', 'SIP:123@10.0.0.1;transport=udp'), { ok: true, username: 'pbx' }, 'case and parameters aside');
});

t.test('replay memory is bounded and forgets expired nonces; what it forgot early is refused, never accepted', async (t) => {
  let now = 1_000_000;
  const auth = new DigestAuthenticator({ credentials, nonceTtlMs: 60_000, maxTrackedNonces: 3, now: () => now });
  const answers: string[] = [];
  for (let i = 0; i < 5; i++) {
    now += 10;
    const answer = buildAuthorization(auth.challenge(), { method: 'INVITE', uri: 'sip:1@h', username: 'pbx', password: 'hunter2' });
    answers.push(answer);
    t.same(auth.verify(answer, 'INVITE', 'sip:1@h'), { ok: true, username: 'pbx' });
    t.ok(auth.trackedNonces <= 3, 'at most 3 nonces remembered');
  }
  for (const answer of answers) t.match(auth.verify(answer, 'INVITE', 'sip:1@h'), { ok: false, stale: true }, 'no answer accepted twice');
  now += 61_000;
  const fresh = buildAuthorization(auth.challenge(), { method: 'INVITE', uri: 'sip:1@h', username: 'pbx', password: 'hunter2' });
  t.same(auth.verify(fresh, 'INVITE', 'sip:1@h'), { ok: true, username: 'pbx' });
  t.equal(auth.trackedNonces, 1, 'expired nonces are forgotten');
});
