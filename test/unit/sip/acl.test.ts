import t from 'tap';
import fc from 'fast-check';
import { createAcl, parseCidr } from '../../../src/sip/acl.js';
import { ConfigError } from '../../../src/core/errors.js';

t.test('IPv4 blocks', async (t) => {
  const acl = createAcl(['10.0.0.0/8', '192.168.1.17', '172.16.0.0/12']);
  t.equal(acl.allows('10.1.2.3'), true);
  t.equal(acl.allows('11.0.0.1'), false);
  t.equal(acl.allows('192.168.1.17'), true, 'a bare address is a /32');
  t.equal(acl.allows('192.168.1.18'), false);
  t.equal(acl.allows('172.31.255.255'), true);
  t.equal(acl.allows('172.32.0.0'), false);
  t.equal(acl.allows('::ffff:10.9.9.9'), true, 'IPv4-mapped IPv6 matches IPv4 blocks');
  t.equal(acl.allows('2001:db8::1'), false, 'IPv6 never matches IPv4 blocks');
  t.equal(acl.allows('not-an-ip'), false);
  t.same(acl.blocks, ['10.0.0.0/8', '192.168.1.17/32', '172.16.0.0/12']);
});

t.test('IPv6 blocks', async (t) => {
  const acl = createAcl(['2001:db8:abcd::/48', '::1/128', 'fe80::/10']);
  t.equal(acl.allows('2001:db8:abcd:1::5'), true);
  t.equal(acl.allows('2001:db8:abce::5'), false);
  t.equal(acl.allows('::1'), true);
  t.equal(acl.allows('[::1]'), true, 'brackets tolerated');
  t.equal(acl.allows('fe80::1%eth0'), true, 'zone id tolerated');
  t.equal(acl.allows('febf:ffff::1'), true);
  t.equal(acl.allows('fec0::1'), false);
  t.equal(acl.allows('127.0.0.1'), false);
});

t.test('zero-length prefixes and mapped blocks', async (t) => {
  t.equal(createAcl(['0.0.0.0/0']).allows('203.0.113.9'), true);
  t.equal(createAcl(['0.0.0.0/0']).allows('2001:db8::1'), false);
  t.equal(createAcl(['::/0']).allows('2001:db8::1'), true);
  t.equal(createAcl(['::ffff:10.0.0.0/104']).allows('10.200.0.1'), true, 'mapped /104 is IPv4 /8');
  t.equal(createAcl(['::ffff:10.0.0.0/104']).allows('11.0.0.1'), false);
});

t.test('bad entries are all reported in one ConfigError', async (t) => {
  const err = (() => {
    try {
      createAcl(['10.0.0.0/33', 'bogus', '2001:db8::/129', '10.0.0.0/8']);
    } catch (e) {
      return e;
    }
    return undefined;
  })();
  t.ok(err instanceof ConfigError);
  t.equal((err as ConfigError).problems.length, 3);
  t.throws(() => parseCidr('1.2.3.4/'), /bad prefix/);
});

t.test('property: an IPv4 address is inside a.b.c.d/p exactly when its first p bits match', async (t) => {
  const ipv4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255));
  const toInt = (a: number[]): number => ((a[0]! << 24) | (a[1]! << 16) | (a[2]! << 8) | a[3]!) >>> 0;
  fc.assert(
    fc.property(ipv4, ipv4, fc.integer({ min: 0, max: 32 }), (net, addr, prefix) => {
      const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
      const expected = ((toInt(net) & mask) >>> 0) === ((toInt(addr) & mask) >>> 0);
      return createAcl([`${net.join('.')}/${prefix}`]).allows(addr.join('.')) === expected;
    }),
    { numRuns: 500 },
  );
  t.pass('held for 500 random cases');
});
