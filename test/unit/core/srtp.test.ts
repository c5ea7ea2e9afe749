/**
 * SRTP/SRTCP contexts shared by the Messenger leg (DTLS-SRTP) and the PBX leg (SDES): RFC 3711 appendix B, RFC 6188
 * and RFC 7714 vectors, interoperation with werift's own SrtpSession/SrtcpSession in both directions for the profiles
 * werift implements, a round trip for every profile, ROC across a sequence wrap, reordering, replays, tampering and
 * the master key lifetime.
 */
import { createCipheriv, createHmac, randomBytes } from 'node:crypto';
import t from 'tap';
import { RtpHeader, RtpPacket, SrtcpSession, SrtpSession } from 'werift';
import {
  SRTP_AEAD_AES_128_GCM,
  SRTP_AEAD_AES_256_GCM,
  SRTP_AES128_CM_HMAC_SHA1_32,
  SRTP_AES128_CM_HMAC_SHA1_80,
  AesGcm,
  HmacSha1,
  SrtpContext,
  aesCmKeystream,
  deriveSrtpKey,
  deriveSrtpSessionKeys,
  srtpMasterKeyLength,
  srtpMasterSaltLength,
} from '../../../src/core/srtp.js';
import type { SrtpProfileId } from '../../../src/core/srtp.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
/** What werift's SrtpSession implements: the interop tests run on these. */
const WERIFT_PROFILES: Array<[string, SrtpProfileId]> = [
  ['AES_CM_128_HMAC_SHA1_80', SRTP_AES128_CM_HMAC_SHA1_80],
  ['AEAD_AES_128_GCM', SRTP_AEAD_AES_128_GCM],
];
const PROFILES: Array<[string, SrtpProfileId]> = [
  ...WERIFT_PROFILES,
  ['AES_CM_128_HMAC_SHA1_32', SRTP_AES128_CM_HMAC_SHA1_32],
  ['AEAD_AES_256_GCM', SRTP_AEAD_AES_256_GCM],
];

interface Keys {
  masterKey: Buffer;
  masterSalt: Buffer;
}

function newKeys(profile: SrtpProfileId): Keys {
  return { masterKey: randomBytes(srtpMasterKeyLength(profile)), masterSalt: randomBytes(srtpMasterSaltLength(profile)) };
}

/** A werift session whose remote side is `remote` and local side is `local`. */
function weriftSessions(profile: SrtpProfileId, local: Keys, remote: Keys): { srtp: SrtpSession; srtcp: SrtcpSession } {
  const config = {
    keys: {
      localMasterKey: local.masterKey,
      localMasterSalt: local.masterSalt,
      remoteMasterKey: remote.masterKey,
      remoteMasterSalt: remote.masterSalt,
    },
    profile,
  };
  return { srtp: new SrtpSession(config), srtcp: new SrtcpSession(config) };
}

function rtp(seq: number, options: { ssrc?: number; payload?: Buffer; csrcs?: number[]; extension?: boolean } = {}): Buffer {
  const header = new RtpHeader({
    payloadType: 111,
    sequenceNumber: seq,
    timestamp: (seq * 960) >>> 0,
    ssrc: options.ssrc ?? 0x11223344,
    marker: seq % 7 === 0,
    csrc: options.csrcs ?? [],
    ...(options.extension
      ? { extension: true, extensionProfile: 0xbede, extensions: [{ id: 1, payload: Buffer.from([0x90]) }] }
      : {}),
  });
  const payload = options.payload ?? Buffer.from(Array.from({ length: 160 }, (_, i) => (seq + i) & 0xff));
  return new RtpPacket(header, payload).serialize();
}

/** A minimal RTCP sender report (no report blocks). */
function senderReport(ssrc: number, packets: number): Buffer {
  const b = Buffer.alloc(28);
  b[0] = 0x80;
  b[1] = 200;
  b.writeUInt16BE(6, 2);
  b.writeUInt32BE(ssrc, 4);
  b.writeUInt32BE(0xe1234567, 8);
  b.writeUInt32BE(0x89abcdef, 12);
  b.writeUInt32BE(packets * 960, 16);
  b.writeUInt32BE(packets, 20);
  b.writeUInt32BE(packets * 160, 24);
  return b;
}

t.test('RFC 3711 B.3: session keys from the master key and salt', async (t) => {
  const keys = deriveSrtpSessionKeys(
    hex('E1F97A0D3E018BE0D64FA32C06DE4139'),
    hex('0EC675AD498AFEEBB6960B3AABE6'),
    SRTP_AES128_CM_HMAC_SHA1_80,
  );
  t.equal(keys.rtp.key.toString('hex'), 'c61e7a93744f39ee10734afe3ff7a087', 'cipher key');
  t.equal(keys.rtp.salt.toString('hex'), '30cbbc08863d8c85d49db34a9ae1', 'cipher salt');
  t.equal(keys.rtp.auth.toString('hex'), 'cebe321f6ff7716b6fd4ab49af256a156d38baa4', 'auth key (first 160 bits)');
  t.not(keys.rtcp.key.toString('hex'), keys.rtp.key.toString('hex'), 'SRTCP has its own keys (labels 3-5)');
});

t.test('RFC 3711 B.2: AES-CM keystream', async (t) => {
  const keystream = aesCmKeystream(hex('2B7E151628AED2A6ABF7158809CF4F3C'), hex('F0F1F2F3F4F5F6F7F8F9FAFBFCFD'), 0xff02 * 16);
  const block = (i: number): string => keystream.subarray(i * 16, i * 16 + 16).toString('hex').toUpperCase();
  t.equal(block(0x0000), 'E03EAD0935C95E80E166B16DD92B4EB4');
  t.equal(block(0x0001), 'D23513162B02D0F72A43A2FE4A5F97AB');
  t.equal(block(0x0002), '41E95B3BB0A2E8DD477901E4FCA894C0');
  t.equal(block(0xfeff), 'EC8CDF7398607CB0F2D21675EA9EA1E4');
  t.equal(block(0xff00), '362B7C3C6773516318A077D7FC5073AE');
  t.equal(block(0xff01), '6A2CC3787889374FBEB4C81B17BA6C44');
});

t.test('HMAC-SHA1: RFC 2202 vectors, and the same MAC as node:crypto for every message length', async (t) => {
  const out = Buffer.alloc(20);
  new HmacSha1(Buffer.alloc(20, 0x0b)).sign(Buffer.from('Hi There'), 0, 8, -1, out, 0, 20);
  t.equal(out.toString('hex'), 'b617318655057264e28bc0b6fb378c8ef146be00', 'RFC 2202 test case 1');
  const jefe = Buffer.from('what do ya want for nothing?');
  new HmacSha1(Buffer.from('Jefe')).sign(jefe, 0, jefe.length, -1, out, 0, 20);
  t.equal(out.toString('hex'), 'effcdf6ae5eb2fa2d27416d5f184df9c259a7c79', 'RFC 2202 test case 2');
  const key = randomBytes(20);
  const mac = new HmacSha1(key);
  let mismatches = 0;
  for (let length = 0; length <= 300; length++) {
    const data = randomBytes(length + 6);
    for (const suffix of [-1, 0, 0xfffffffe]) {
      mac.sign(data, 3, 3 + length, suffix, out, 0, 20);
      const reference = createHmac('sha1', key).update(data.subarray(3, 3 + length));
      if (suffix >= 0) reference.update(Buffer.from([suffix >>> 24, (suffix >>> 16) & 0xff, (suffix >>> 8) & 0xff, suffix & 0xff]));
      if (!reference.digest().equals(out)) mismatches++;
    }
  }
  t.equal(mismatches, 0, 'lengths 0-300, with and without a ROC suffix');
});

t.test('AES-GCM: the same ciphertext and tag as node:crypto, and a wrong tag refused', async (t) => {
  let mismatches = 0;
  let accepted = 0;
  for (let trial = 0; trial < 50; trial++) {
    const key = randomBytes(16);
    const gcm = new AesGcm(key);
    for (const [aadLength, length] of [[0, 0], [12, 160], [12, 0], [20, 60], [8, 33], [16, 16], [3, 1200], [40, 17]] as const) {
      const iv = randomBytes(12);
      const aad = randomBytes(aadLength);
      const plain = randomBytes(length);
      const reference = createCipheriv('aes-128-gcm', key, iv).setAAD(aad);
      const ciphertext = Buffer.concat([reference.update(plain), reference.final()]);
      const tag = reference.getAuthTag();
      const buf = Buffer.from(plain);
      const ourTag = Buffer.alloc(16);
      gcm.seal(iv, aad, 0, aadLength, buf, 0, length, ourTag, 0);
      if (!buf.equals(ciphertext) || !ourTag.equals(tag)) mismatches++;
      const back = Buffer.from(ciphertext);
      if (!gcm.open(iv, aad, 0, aadLength, back, 0, length, tag, 0) || !back.equals(plain)) mismatches++;
      tag[trial % 16] = tag[trial % 16]! ^ 0x40;
      if (gcm.open(iv, aad, 0, aadLength, Buffer.from(ciphertext), 0, length, tag, 0)) accepted++;
    }
  }
  t.equal(mismatches, 0, '400 messages of 0-1200 bytes with 0-40 bytes of AAD');
  t.equal(accepted, 0, 'no wrong tag accepted');
});

for (const [name, profile] of WERIFT_PROFILES) {
  t.test(`${name}: ours protects, werift unprotects (RTP and RTCP)`, async (t) => {
    const keys = newKeys(profile);
    const ours = new SrtpContext({ profile, ...keys });
    const werift = weriftSessions(profile, newKeys(profile), keys);
    const packets = [
      rtp(1000),
      rtp(1001, { csrcs: [0xaabbccdd, 0x01020304] }),
      rtp(1002, { extension: true }),
      rtp(1003, { payload: Buffer.alloc(0) }),
      rtp(1004, { payload: randomBytes(1200) }),
    ];
    for (const packet of packets) {
      const copy = Buffer.from(packet);
      const protectedPacket = ours.protectRtp(packet);
      t.same(packet, copy, 'input left as it was');
      t.equal(protectedPacket.length, packet.length + ours.rtpOverhead);
      if (packet.length > 40) {
        t.not(protectedPacket.subarray(40, packet.length).toString('hex'), packet.subarray(40).toString('hex'), 'encrypted');
      }
      t.same(werift.srtp.decrypt(protectedPacket), packet, `seq ${packet.readUInt16BE(2)} decrypts in werift`);
    }
    // The SSRC we send with replaces the packet's own.
    const rewritten = werift.srtp.decrypt(ours.protectRtp(rtp(1005), 0xcafe0001));
    t.equal(rewritten.readUInt32BE(8), 0xcafe0001);
    t.same(rewritten.subarray(0, 8), rtp(1005).subarray(0, 8));
    t.same(rewritten.subarray(12), rtp(1005).subarray(12));

    for (let i = 1; i <= 3; i++) {
      const sr = senderReport(0x11223344, i);
      t.same(werift.srtcp.decrypt(ours.protectRtcp(sr)), sr, `SRTCP ${i} decrypts in werift`);
    }
  });

  t.test(`${name}: werift protects, ours unprotects (RTP and RTCP)`, async (t) => {
    const keys = newKeys(profile);
    const werift = weriftSessions(profile, keys, newKeys(profile));
    const ours = new SrtpContext({ profile, ...keys });
    for (let seq = 65000; seq < 65010; seq++) {
      const packet = rtp(seq, { csrcs: seq % 2 === 0 ? [7] : [] });
      const parsed = RtpPacket.deSerialize(packet);
      const result = ours.unprotectRtp(werift.srtp.encrypt(parsed.payload, parsed.header));
      t.same(result, packet, `seq ${seq}`);
    }
    for (let i = 1; i <= 3; i++) {
      const sr = senderReport(0x55667788, i);
      t.same(ours.unprotectRtcp(werift.srtcp.encrypt(sr)), sr, `SRTCP ${i}`);
    }
    t.same(ours.stats, { authFailures: 0, replays: 0, malformed: 0, expired: 0 });
  });

  t.test(`${name}: the ROC follows a sequence wrap, both ways and against werift`, async (t) => {
    const keys = newKeys(profile);
    const sender = new SrtpContext({ profile, ...keys });
    const receiver = new SrtpContext({ profile, ...keys });
    const werift = weriftSessions(profile, newKeys(profile), keys);
    const weriftSender = weriftSessions(profile, keys, newKeys(profile));
    const ourReceiverOfWerift = new SrtpContext({ profile, ...keys });
    // 65530 .. 65535, 0 .. 20: 27 packets across the wrap, then a second wrap 65 536 packets later is not needed:
    // one wrap proves the ROC moves in step.
    for (let n = 0; n < 27; n++) {
      const seq = (65530 + n) & 0xffff;
      const packet = rtp(seq);
      const p = sender.protectRtp(packet);
      t.same(receiver.unprotectRtp(Buffer.from(p)), packet, `ours -> ours seq ${seq}`);
      t.same(werift.srtp.decrypt(Buffer.from(p)), packet, `ours -> werift seq ${seq}`);
      const parsed = RtpPacket.deSerialize(packet);
      t.same(ourReceiverOfWerift.unprotectRtp(weriftSender.srtp.encrypt(parsed.payload, parsed.header)), packet, `werift -> ours seq ${seq}`);
    }
    t.equal(receiver.stats.authFailures + ourReceiverOfWerift.stats.authFailures, 0);
  });
}

for (const [name, profile] of PROFILES) {
  t.test(`${name}: round trip of RTP and RTCP, ours to ours`, async (t) => {
    const keys = newKeys(profile);
    const sender = new SrtpContext({ profile, ...keys });
    const receiver = new SrtpContext({ profile, ...keys });
    const tag = profile === SRTP_AES128_CM_HMAC_SHA1_32 ? 4 : profile === SRTP_AES128_CM_HMAC_SHA1_80 ? 10 : 16;
    t.equal(sender.rtpOverhead, tag, `SRTP tag of ${tag} bytes`);
    for (const packet of [rtp(1), rtp(2, { csrcs: [9] }), rtp(3, { extension: true }), rtp(4, { payload: randomBytes(1200) })]) {
      const wire = sender.protectRtp(packet);
      t.equal(wire.length, packet.length + tag);
      t.not(wire.subarray(12, packet.length).toString('hex'), packet.subarray(12).toString('hex'), 'payload encrypted');
      t.same(receiver.unprotectRtp(wire), packet, `seq ${packet.readUInt16BE(2)}`);
    }
    const sr = senderReport(0x0badcafe, 7);
    const srtcp = sender.protectRtcp(sr);
    // SRTCP keeps a full 80-bit tag with HMAC_SHA1_32 (RFC 5764 4.1.2); 16 bytes with GCM; plus the E+index word.
    t.equal(srtcp.length, sr.length + 4 + (tag === 16 ? 16 : 10), 'SRTCP tag and index');
    t.same(receiver.unprotectRtcp(srtcp), sr, 'SRTCP');
    t.same(receiver.stats, { authFailures: 0, replays: 0, malformed: 0, expired: 0 });
  });

  t.test(`${name}: reordering is accepted, replays and packets older than the window are refused`, async (t) => {
    const keys = newKeys(profile);
    const sender = new SrtpContext({ profile, ...keys });
    const receiver = new SrtpContext({ profile, ...keys });
    // Sent across a wrap, delivered out of order: 65534, 1, 65535, 0, 2 (a late packet from before the wrap).
    const sent = new Map<number, Buffer>();
    for (const seq of [65533, 65534, 65535, 0, 1, 2]) sent.set(seq, sender.protectRtp(rtp(seq)));
    const deliver = (seq: number): number | string => {
      const r = receiver.unprotectRtp(Buffer.from(sent.get(seq)!));
      return typeof r === 'string' ? r : r.readUInt16BE(2);
    };
    t.equal(deliver(65533), 65533);
    t.equal(deliver(1), 1, 'a packet after the wrap arrives first');
    t.equal(deliver(65534), 65534, 'a late packet from before the wrap still authenticates (ROC - 1)');
    t.equal(deliver(0), 0);
    t.equal(deliver(65535), 65535);
    t.equal(deliver(2), 2);
    t.equal(deliver(1), 'replay', 'a replay after the wrap');
    t.equal(deliver(65534), 'replay', 'a replay from before the wrap');
    t.equal(receiver.stats.replays, 2);

    // Packets more than 64 behind the newest are refused even when never seen.
    const late = sender.protectRtp(rtp(10));
    for (let seq = 11; seq < 11 + 70; seq++) t.type(receiver.unprotectRtp(sender.protectRtp(rtp(seq))), Buffer);
    t.equal(receiver.unprotectRtp(late), 'replay', 'older than the replay window');
    const inWindow = sender.protectRtp(rtp(200));
    for (let seq = 201; seq < 201 + 60; seq++) t.type(receiver.unprotectRtp(sender.protectRtp(rtp(seq))), Buffer);
    t.type(receiver.unprotectRtp(inWindow), Buffer, '60 behind the newest, first time: accepted');

    // The window is exactly 64 packets: 63 behind the newest is accepted, 64 behind is not.
    const edge = new Map<number, Buffer>();
    for (const seq of [1000, 1001]) edge.set(seq, sender.protectRtp(rtp(seq)));
    for (let seq = 1002; seq <= 1064; seq++) receiver.unprotectRtp(sender.protectRtp(rtp(seq)));
    t.type(receiver.unprotectRtp(edge.get(1001)!), Buffer, '63 behind the newest: accepted');
    t.equal(receiver.unprotectRtp(edge.get(1000)!), 'replay', '64 behind the newest: refused');
  });

  t.test(`${name}: tampered packets are refused and counted, never thrown`, async (t) => {
    const keys = newKeys(profile);
    const sender = new SrtpContext({ profile, ...keys });
    const receiver = new SrtpContext({ profile, ...keys });
    const good = sender.protectRtp(rtp(500));
    for (const offset of [1, 13, 60, good.length - 1]) {
      const bad = Buffer.from(good);
      bad[offset] = bad[offset]! ^ 0x01;
      t.equal(receiver.unprotectRtp(bad), 'auth', `a bit flipped at byte ${offset}`);
    }
    t.equal(receiver.unprotectRtp(Buffer.from(good.subarray(0, 30))), 'auth', 'truncated');
    t.equal(receiver.unprotectRtp(Buffer.from([0x80, 0x00, 0x01])), 'malformed');
    t.equal(receiver.unprotectRtp(Buffer.alloc(40)), 'malformed', 'not RTP version 2');
    const otherKeys = new SrtpContext({ profile, ...newKeys(profile) });
    t.equal(otherKeys.unprotectRtp(Buffer.from(good)), 'auth', 'another key');
    t.type(receiver.unprotectRtp(Buffer.from(good)), Buffer, 'the untouched packet still passes afterwards');
    t.same(receiver.stats, { authFailures: 5, replays: 0, malformed: 2, expired: 0 });

    const srtcp = sender.protectRtcp(senderReport(1, 1));
    const badRtcp = Buffer.from(srtcp);
    badRtcp[10] = badRtcp[10]! ^ 0x80;
    t.equal(receiver.unprotectRtcp(badRtcp), 'auth', 'SRTCP bit flipped');
    t.type(receiver.unprotectRtcp(Buffer.from(srtcp)), Buffer);
    t.equal(receiver.unprotectRtcp(Buffer.from(srtcp)), 'replay', 'SRTCP replay');
    t.equal(receiver.unprotectRtcp(Buffer.alloc(10, 0x80)), 'malformed');
  });
}

t.test('a master salt of the wrong length for the profile is refused', async (t) => {
  t.throws(() => new SrtpContext({ profile: SRTP_AEAD_AES_128_GCM, masterKey: randomBytes(16), masterSalt: randomBytes(14) }));
  t.throws(() => new SrtpContext({ profile: SRTP_AES128_CM_HMAC_SHA1_80, masterKey: randomBytes(16), masterSalt: randomBytes(12) }));
  t.throws(() => new SrtpContext({ profile: 0x0003 as SrtpProfileId, masterKey: randomBytes(16), masterSalt: randomBytes(14) }));
  t.throws(
    () => new SrtpContext({ profile: SRTP_AEAD_AES_256_GCM, masterKey: randomBytes(16), masterSalt: randomBytes(12) }),
    /master key must be 32 bytes/,
  );
});

t.test('RFC 6188 7.2: AES_256_CM_PRF session keys from a 32-byte master key', async (t) => {
  const masterKey = hex('f0f04914b513f2763a1b1fa130f10e2998f6f6e43e4309d1e622a0e332b9f1b6');
  const masterSalt = hex('3b04803de51ee7c96423ab5b78d2');
  t.equal(deriveSrtpKey(masterKey, masterSalt, 0, 32).toString('hex'), '5ba1064e30ec51613cad926c5a28ef731ec7fb397f70a960653caf06554cd8c4', 'cipher key');
  t.equal(deriveSrtpKey(masterKey, masterSalt, 2, 14).toString('hex'), 'fa31791685ca444a9e07c6c64e93', 'cipher salt');
  t.equal(deriveSrtpKey(masterKey, masterSalt, 1, 20).toString('hex'), 'fd9c32d39ed5fbb5a9dc96b30818454d1313dc05', 'auth key');
});

t.test('AES_CM_128_HMAC_SHA1_80 and _32: the known answer of RFC 3711 B.3 keys (libsrtp test packet)', async (t) => {
  const masterKey = hex('e1f97a0d3e018be0d64fa32c06de4139');
  const masterSalt = hex('0ec675ad498afeebb6960b3aabe6');
  const plain = hex(`800f1234decafbadcafebabe ${'ab'.repeat(16)}`);
  const cipher = '800f1234decafbadcafebabe4e55dc4ce79978d88ca4d215949d2402';
  const tag80 = 'b78d6acc99ea179b8dbb';
  const p80 = new SrtpContext({ profile: SRTP_AES128_CM_HMAC_SHA1_80, masterKey, masterSalt }).protectRtp(plain);
  t.equal(p80.toString('hex'), cipher + tag80);
  const p32 = new SrtpContext({ profile: SRTP_AES128_CM_HMAC_SHA1_32, masterKey, masterSalt }).protectRtp(plain);
  t.equal(p32.toString('hex'), cipher + tag80.slice(0, 8), 'the same ciphertext, the first 32 bits of the tag');
  const back = new SrtpContext({ profile: SRTP_AES128_CM_HMAC_SHA1_32, masterKey, masterSalt }).unprotectRtp(p32);
  t.same(back, plain);
});

/** RFC 7714 sections 16 and 17: session key 00 01 .. (16 or 32 bytes), session salt "Quid pro quo". */
const RFC7714 = {
  salt: hex('517569642070726f2071756f'),
  rtp: hex('8040f17b8041f8d35501a0b247616c6c696120657374206f6d6e69732064697669736120696e207061727465732074726573'),
  rtcp: hex('81c8000d4d6172734e5450314e545032525450200000042a0000e9304c756e61deadbeefdeadbeefdeadbeefdeadbeefdeadbeef'),
  cases: [
    {
      name: 'AEAD_AES_128_GCM (16.1, 17.1)',
      profile: SRTP_AEAD_AES_128_GCM,
      keyLength: 16,
      srtp: '8040f17b8041f8d35501a0b2f24de3a3fb34de6cacba861c9d7e4bcabe633bd50d294e6f42a5f47a51c7d19b36de3adf8833899d7f27beb16a9152cf765ee4390cce',
      srtcp: '81c8000d4d61727363e94885dcdab67ca727d7662f6b7e997ff5c0f76c06f32dc676a5f1730d6fda4ce09b4686303ded0bb9275bc84aa45896cf4d2fc5abf87245d9eade800005d4',
    },
    {
      name: 'AEAD_AES_256_GCM (16.2, 17.2)',
      profile: SRTP_AEAD_AES_256_GCM,
      keyLength: 32,
      srtp: '8040f17b8041f8d35501a0b232b1de78a822fe12ef9f78fa332e33aab18012389a58e2f3b50b2a0276ffae0f1ba63799b87b7aa3db36dfffd6b0f9bb7878d7a76c13',
      srtcp: '81c8000d4d617273d50ae4d1f5ce5d304ba297e47d470c282c3ece5dbffe0a50a2eaa5c1110555be8415f658c61de0476f1b6fad1d1eb30c4446839f57ff6f6cb26ac3be800005d4',
    },
  ],
} as const;

for (const c of RFC7714.cases) {
  t.test(`RFC 7714 ${c.name}: SRTP and SRTCP vectors with the published session keys`, async (t) => {
    const key = Buffer.from(Array.from({ length: c.keyLength }, (_, i) => i));
    const session = { key, salt: RFC7714.salt, auth: Buffer.alloc(0) };
    const context = (): SrtpContext => new SrtpContext({ profile: c.profile, sessionKeys: { rtp: session, rtcp: session } });
    t.equal(context().protectRtp(RFC7714.rtp).toString('hex'), c.srtp, 'SRTP encryption');
    t.same(context().unprotectRtp(hex(c.srtp)), RFC7714.rtp, 'SRTP decryption');
    const sender = context();
    for (let i = 0; i < 0x5d4; i++) sender.protectRtcp(RFC7714.rtcp);
    t.equal(sender.protectRtcp(RFC7714.rtcp).toString('hex'), c.srtcp, 'SRTCP encryption at index 0x5d4');
    t.same(context().unprotectRtcp(hex(c.srtcp)), RFC7714.rtcp, 'SRTCP decryption');
    const tampered = hex(c.srtp);
    tampered[20] = tampered[20]! ^ 0x01;
    t.equal(context().unprotectRtp(tampered), 'auth', 'a flipped bit is refused');
  });
}

t.test('the master key lifetime: protect stops and received packets are dropped once it is used up', async (t) => {
  const keys = newKeys(SRTP_AES128_CM_HMAC_SHA1_80);
  const sender = new SrtpContext({ profile: SRTP_AES128_CM_HMAC_SHA1_80, ...keys, lifetime: 3 });
  const receiver = new SrtpContext({ profile: SRTP_AES128_CM_HMAC_SHA1_80, ...keys, lifetime: 2 });
  const wire = [sender.protectRtp(rtp(1)), sender.protectRtp(rtp(2)), sender.protectRtcp(senderReport(1, 1))];
  t.ok(sender.expired, 'three packets used a lifetime of 3');
  t.throws(() => sender.protectRtp(rtp(3)), /lifetime/);
  t.type(receiver.unprotectRtp(wire[0]!), Buffer);
  t.equal(receiver.unprotectRtp(Buffer.from(wire[0]!)), 'replay', 'a replay does not use up the lifetime');
  t.type(receiver.unprotectRtp(wire[1]!), Buffer);
  t.equal(receiver.unprotectRtcp(wire[2]!), 'expired');
  t.equal(receiver.stats.expired, 1);
});

t.test('AEAD_AES_128_GCM: keystreams made ahead for the next packets give what node:crypto gives for each packet alone', async (t) => {
  // Session keys given directly, so that node:crypto can protect each packet on its own (RFC 7714 8.1 IV and AAD).
  const rtpKeys = { key: randomBytes(16), salt: randomBytes(12), auth: Buffer.alloc(0) };
  const sessionKeys = { rtp: rtpKeys, rtcp: { key: randomBytes(16), salt: randomBytes(12), auth: Buffer.alloc(0) } };
  const sender = new SrtpContext({ profile: SRTP_AEAD_AES_128_GCM, sessionKeys });
  const receiver = new SrtpContext({ profile: SRTP_AEAD_AES_128_GCM, sessionKeys });
  const ssrc = 0x11223344;
  const sizes = [0, 20, 160, 240, 241, 1200, 60, 61];
  // Across a sequence wrap (the ROC moves to 1), in order; then delivered out of order and with gaps.
  const sent: Array<{ plain: Buffer; wire: Buffer }> = [];
  let mismatches = 0;
  for (let k = 0; k < 40; k++) {
    const seq = (65520 + k) & 0xffff;
    const roc = 65520 + k > 0xffff ? 1 : 0;
    const plain = rtp(seq, { ssrc, payload: randomBytes(sizes[k % sizes.length]!) });
    const wire = sender.protectRtp(plain);
    const iv = Buffer.alloc(12);
    iv.writeUInt32BE(ssrc, 2);
    iv.writeUInt32BE(roc, 6);
    iv.writeUInt16BE(seq, 10);
    for (let i = 0; i < 12; i++) iv[i] = iv[i]! ^ rtpKeys.salt[i]!;
    const reference = createCipheriv('aes-128-gcm', rtpKeys.key, iv).setAAD(plain.subarray(0, 12));
    const expected = Buffer.concat([plain.subarray(0, 12), reference.update(plain.subarray(12)), reference.final(), reference.getAuthTag()]);
    if (!wire.equals(expected)) mismatches++;
    sent.push({ plain, wire });
  }
  t.equal(mismatches, 0, '40 packets of 0-1200 bytes across a sequence wrap, each as node:crypto protects it');
  const order = [0, 2, 1, 5, 3, 4, 9, 6, 8, 7, 20, 10, 11, 30, 12, 13, 14, 15, 16, 17, 18, 19, 21, 25, 22, 23, 24, 26, 27, 28, 29, 39, 31, 32, 33, 34, 35, 36, 37, 38];
  let refused = 0;
  for (const k of order) {
    const back = receiver.unprotectRtp(Buffer.from(sent[k]!.wire));
    if (typeof back === 'string' || !back.equals(sent[k]!.plain)) refused++;
  }
  t.equal(refused, 0, 'every packet unprotected, delivered out of order');
  t.equal(receiver.unprotectRtp(Buffer.from(sent[5]!.wire)), 'replay', 'a replay is still refused');
});
