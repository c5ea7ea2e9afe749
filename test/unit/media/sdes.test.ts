/**
 * SDES `a=crypto` (RFC 4568): the RFC's own examples, what the bridge refuses (MKI, several keys, KDR, unencrypted
 * SRTP, unknown suites) with a reason naming the line, bad keys refused with a clear error that carries no key
 * material, fresh keys per call, and a key that goes through SDP and then protects and unprotects packets.
 */
import t from 'tap';
import { SrtpContext } from '../../../src/core/srtp.js';
import { MediaError } from '../../../src/core/errors.js';
import {
  chooseSdesCrypto,
  formatSdesCrypto,
  newSdesCrypto,
  parseSdesCrypto,
  sdesProfile,
  sdesRefusal,
} from '../../../src/media/sdes.js';
import type { SdesSuite } from '../../../src/media/sdes.js';

// RFC 4568 section 4 (and 9.1): the first example of the RFC.
const RFC4568_EXAMPLE = '1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32';

t.test('RFC 4568 example: suite, key and salt, lifetime 2^20 and MKI 1:32 parsed', async (t) => {
  const crypto = parseSdesCrypto(RFC4568_EXAMPLE);
  t.equal(crypto.tag, 1);
  t.equal(crypto.suite, 'AES_CM_128_HMAC_SHA1_80');
  t.equal(crypto.keys.length, 1);
  const key = crypto.keys[0]!;
  const material = Buffer.from('PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR', 'base64');
  t.same(key.masterKey, material.subarray(0, 16), '16-byte master key');
  t.same(key.masterSalt, material.subarray(16), '14-byte master salt');
  t.equal(key.lifetime, 1048576, 'lifetime 2^20 packets');
  t.same(key.mki, { value: 1, length: 32 }, 'MKI value 1, 32 bytes long');
  t.equal(formatSdesCrypto(crypto), RFC4568_EXAMPLE, 'written back the same');
  t.match(sdesRefusal(crypto), /tag 1 .*MKI is not supported/, 'but the bridge does not take an MKI');
});

t.test('RFC 4568 examples: a 32-bit tag line, FEC_ORDER, a decimal lifetime, several keys, F8', async (t) => {
  const sha32 = parseSdesCrypto('1 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^20|1:32');
  t.equal(sha32.suite, 'AES_CM_128_HMAC_SHA1_32');
  t.equal(sha32.keys[0]!.lifetime, 2 ** 20);
  const fec = parseSdesCrypto('1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20 FEC_ORDER=FEC_SRTP');
  t.same(fec.sessionParams, ['FEC_ORDER=FEC_SRTP']);
  t.equal(sdesRefusal(fec), undefined, 'FEC_ORDER without FEC is harmless');
  const decimal = parseSdesCrypto('2 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|1000');
  t.equal(decimal.keys[0]!.lifetime, 1000);
  const two = parseSdesCrypto(
    '1 AES_CM_128_HMAC_SHA1_80 inline:MTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5QUJjZGVm|2^20|1:4;inline:QUJjZGVmMTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5|2^20|2:4',
  );
  t.equal(two.keys.length, 2);
  t.match(sdesRefusal(two), /2 master keys/);
  t.throws(
    () => parseSdesCrypto('2 F8_128_HMAC_SHA1_80 inline:MTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5QUJjZGVm|2^20|1:4'),
    { code: 'SDES_UNSUPPORTED', message: /F8_128_HMAC_SHA1_80 is not supported/ },
  );
});

t.test('AEAD suites (RFC 7714 section 12): 16 + 12 and 32 + 12 bytes of key and salt', async (t) => {
  const g128 = parseSdesCrypto(`3 AEAD_AES_128_GCM inline:${Buffer.alloc(28, 7).toString('base64')}`);
  t.equal(g128.keys[0]!.masterKey.length, 16);
  t.equal(g128.keys[0]!.masterSalt.length, 12);
  const g256 = parseSdesCrypto(`4 AEAD_AES_256_GCM inline:${Buffer.alloc(44, 9).toString('base64')}`);
  t.equal(g256.keys[0]!.masterKey.length, 32);
  t.equal(g256.keys[0]!.masterSalt.length, 12);
  t.equal(sdesRefusal(g256), undefined);
});

t.test('bad keys are refused with a clear error that names the line but never the key', async (t) => {
  const secret = Buffer.alloc(29, 0x41).toString('base64');
  const cases: Array<[string, RegExp]> = [
    [`1 AES_CM_128_HMAC_SHA1_80 inline:${secret}`, /tag 1: AES_CM_128_HMAC_SHA1_80 needs 30 bytes .*has 29/],
    [`1 AEAD_AES_256_GCM inline:${Buffer.alloc(30).toString('base64')}`, /needs 44 bytes of master key and salt \(32 \+ 12\)/],
    ['1 AES_CM_128_HMAC_SHA1_80 inline:not*base64!', /not base64/],
    ['1 AES_CM_128_HMAC_SHA1_80 uri:https://keys.example/1', /key method must be 'inline:'/],
    ['1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^49', /lifetime '2\^49'/],
    ['1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|0', /lifetime '0'/],
    ['1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|1:0', /MKI length 0/],
    ['1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|1:4|2^20', /neither a lifetime nor an MKI/],
    ['x AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR', /tag 'x' is not a number/],
    ['1 AES_CM_128_HMAC_SHA1_80', /needs a crypto suite and key parameters/],
  ];
  for (const [line, message] of cases) {
    let caught: unknown;
    try {
      parseSdesCrypto(line);
    } catch (err) {
      caught = err;
    }
    t.ok(caught instanceof MediaError && caught.code === 'SDES_INVALID', `refused: ${line.slice(0, 48)}`);
    t.match((caught as Error).message, message);
    t.notMatch((caught as Error).message, /PS1uQCVe|QUFBQUFB/, 'no key material in the message');
  }
});

t.test('choosing from an offer: the first usable line in the offerer order, or every reason', async (t) => {
  const good80 = formatSdesCrypto(newSdesCrypto(3, 'AES_CM_128_HMAC_SHA1_80'));
  const choice = chooseSdesCrypto([
    RFC4568_EXAMPLE,
    `2 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR KDR=1`,
    `4 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR UNENCRYPTED_SRTP`,
    '5 AES_256_CM_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR',
    good80,
    formatSdesCrypto(newSdesCrypto(6, 'AES_CM_128_HMAC_SHA1_32')),
  ]);
  t.ok('crypto' in choice && choice.crypto.tag === 3, 'tag 3: the first line the bridge can use');
  const none = chooseSdesCrypto([RFC4568_EXAMPLE, '2 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR KDR=1']);
  t.ok('reasons' in none);
  if ('reasons' in none) {
    t.match(none.reasons[0], /MKI is not supported/);
    t.match(none.reasons[1], /session parameter KDR is not supported/);
  }
  t.same(chooseSdesCrypto([]), { reasons: ['no a=crypto line'] });
  const optional = chooseSdesCrypto([`7 AEAD_AES_128_GCM inline:${Buffer.alloc(28, 1).toString('base64')} -EXPERIMENT=1 WSH=64`]);
  t.ok('crypto' in optional, "an optional ('-') parameter and a window size hint are fine");
});

t.test('a fresh key per call, and a key that crosses SDP protects and unprotects for every suite', async (t) => {
  const suites: SdesSuite[] = ['AES_CM_128_HMAC_SHA1_80', 'AES_CM_128_HMAC_SHA1_32', 'AEAD_AES_128_GCM', 'AEAD_AES_256_GCM'];
  for (const suite of suites) {
    const a = newSdesCrypto(1, suite);
    const b = newSdesCrypto(1, suite);
    t.not(a.keys[0]!.masterKey.toString('hex'), b.keys[0]!.masterKey.toString('hex'), `${suite}: two calls, two keys`);
    const line = formatSdesCrypto(a);
    t.match(line, new RegExp(`^1 ${suite} inline:[A-Za-z0-9+/]+=*$`));
    const received = parseSdesCrypto(line);
    const profile = sdesProfile(suite);
    const sender = new SrtpContext({ profile, ...a.keys[0]! });
    const receiver = new SrtpContext({ profile, ...received.keys[0]! });
    const packet = Buffer.concat([Buffer.from('80000001000000a0deadbeef', 'hex'), Buffer.alloc(160, 0xd5)]);
    t.same(receiver.unprotectRtp(sender.protectRtp(packet)), packet, `${suite}: round trip through SDP`);
  }
});
