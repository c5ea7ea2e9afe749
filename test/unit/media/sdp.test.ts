import t from 'tap';
import * as sdpTransform from 'sdp-transform';
import { MediaError } from '../../../src/core/errors.js';
import { parsePbxSdp } from '../../../src/media/pbxSdp.js';
import { formatSdesCrypto, newSdesCrypto } from '../../../src/media/sdes.js';
import type { SdesSuite } from '../../../src/media/sdes.js';
import { FakeMessengerLeg } from './fakeMessengerLeg.js';
import { createEngine } from './setup.js';

const { pool, engine, log } = await createEngine();
t.teardown(() => {
  engine.close();
  pool.close();
});

async function newMedia(
  t: { teardown(fn: () => void): void },
  codecs: ('opus' | 'PCMU' | 'PCMA')[],
  srtp?: 'off' | 'optional' | 'prefer' | 'required',
) {
  const leg = new FakeMessengerLeg();
  const media = await engine.createMediasoupCallMedia({ callId: 'sdp', log, messenger: leg, codecs, ...(srtp ? { srtp } : {}) });
  t.teardown(() => media.close());
  return media;
}

function pbxOffer(body: { media: string[]; c?: string }): string {
  return [
    'v=0',
    'o=pbx 1 1 IN IP4 127.0.0.1',
    's=pbx',
    `c=IN IP4 ${body.c ?? '127.0.0.1'}`,
    't=0 0',
    ...body.media,
    '',
  ].join('\r\n');
}

t.test('offer toward the PBX: codecs in preference order, static PTs, telephone-event, ptime, rtcp-mux', async (t) => {
  const media = await newMedia(t, ['PCMA', 'opus', 'PCMU']);
  const first = sdpTransform.parse(media.createPbxOffer());
  const m = first.media[0]!;
  t.equal(m.protocol, 'RTP/AVP');
  t.equal(m.port, media.pbxPort);
  t.equal(m.payloads, '8 111 0 101 102');
  t.same(
    m.rtp.map((r) => `${r.payload} ${r.codec}/${r.rate}${r.encoding ? `/${r.encoding}` : ''}`),
    ['8 PCMA/8000', '111 opus/48000/2', '0 PCMU/8000', '101 telephone-event/8000', '102 telephone-event/48000'],
  );
  t.equal(m.ptime, 20);
  t.equal(m.direction, 'sendrecv');
  t.equal(m.rtcpMux, 'rtcp-mux');
  t.equal(first.connection?.ip, '127.0.0.1');
  const second = sdpTransform.parse(media.createPbxOffer());
  t.equal(second.origin.sessionId, first.origin.sessionId, 'same session');
  t.equal(Number(second.origin.sessionVersion), Number(first.origin.sessionVersion) + 1, 'o= version increments');
});

t.test('G.711-only offer has no telephone-event/48000', async (t) => {
  const media = await newMedia(t, ['PCMU']);
  const m = sdpTransform.parse(media.createPbxOffer()).media[0]!;
  t.equal(m.payloads, '0 101');
});

t.test('answering a PBX offer picks the first codec of our preference that the PBX offered', async (t) => {
  const media = await newMedia(t, ['opus', 'PCMA', 'PCMU']);
  const answer = media.answerPbxOffer(
    pbxOffer({
      media: ['m=audio 4000 RTP/AVP 0 8 96', 'a=rtpmap:0 PCMU/8000', 'a=rtpmap:8 PCMA/8000', 'a=rtpmap:96 telephone-event/8000'],
    }),
  );
  t.equal(media.pbxCodec, 'PCMA');
  const m = sdpTransform.parse(answer).media[0]!;
  t.equal(m.payloads, '8 96', 'PBX payload types are kept');
  t.equal(m.direction, 'sendrecv');
});

t.test('Opus offered by the PBX under another PT is matched by name', async (t) => {
  const media = await newMedia(t, ['opus', 'PCMU']);
  const answer = media.answerPbxOffer(
    pbxOffer({ media: ['m=audio 4000 RTP/AVP 0 98', 'a=rtpmap:98 opus/48000/2', 'a=rtpmap:0 PCMU/8000'] }),
  );
  t.equal(media.pbxCodec, 'opus');
  t.match(answer, /m=audio \d+ RTP\/AVP 98\r\n/);
});

t.test('a re-INVITE that still lists the current codec keeps it', async (t) => {
  const media = await newMedia(t, ['PCMU', 'PCMA']);
  media.answerPbxOffer(pbxOffer({ media: ['m=audio 4000 RTP/AVP 8', 'a=rtpmap:8 PCMA/8000'] }));
  t.equal(media.pbxCodec, 'PCMA');
  media.answerPbxOffer(pbxOffer({ media: ['m=audio 4000 RTP/AVP 0 8', 'a=rtpmap:0 PCMU/8000', 'a=rtpmap:8 PCMA/8000'] }));
  t.equal(media.pbxCodec, 'PCMA');
});

t.test('no common codec: NO_COMMON_CODEC naming what the PBX offered', async (t) => {
  const media = await newMedia(t, ['PCMU', 'PCMA']);
  const err = (() => {
    try {
      media.answerPbxOffer(pbxOffer({ media: ['m=audio 4000 RTP/AVP 18 3', 'a=rtpmap:18 G729/8000'] }));
    } catch (e) {
      return e;
    }
    return undefined;
  })();
  t.ok(err instanceof MediaError);
  t.equal((err as MediaError).code, 'NO_COMMON_CODEC');
  t.match((err as MediaError).message, /G729\/8000/);
  t.match((err as MediaError).message, /GSM\/8000/);
});

t.test('an offer with only video, or no media, is SDP_INVALID', async (t) => {
  const media = await newMedia(t, ['PCMU']);
  t.throws(() => media.answerPbxOffer(pbxOffer({ media: ['m=video 5000 RTP/AVP 96', 'a=rtpmap:96 H264/90000'] })), {
    code: 'SDP_INVALID',
    message: /video/,
  });
  t.throws(() => media.answerPbxOffer(pbxOffer({ media: [] })), { code: 'SDP_INVALID' });
  t.throws(() => media.applyPbxAnswer('garbage'), { code: 'SDP_INVALID' });
  t.throws(
    () =>
      media.answerPbxOffer(
        pbxOffer({ media: ['m=audio 4000 RTP/SAVP 0', 'a=rtpmap:0 PCMU/8000', 'a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x'] }),
      ),
    { code: 'SRTP_NEGOTIATION', message: /offered SRTP \(RTP\/SAVP\) and media.srtp is off/ },
    'with media.srtp off, SRTP offers are refused, not answered in clear',
  );
});

t.test('audio plus video: video is rejected with port 0 in its place', async (t) => {
  const media = await newMedia(t, ['PCMU']);
  const answer = media.answerPbxOffer(
    pbxOffer({ media: ['m=video 5000 RTP/AVP 96', 'a=rtpmap:96 H264/90000', 'm=audio 4000 RTP/AVP 0', 'a=rtpmap:0 PCMU/8000'] }),
  );
  const parsed = sdpTransform.parse(answer);
  t.equal(parsed.media.length, 2);
  t.equal(parsed.media[0]!.type, 'video');
  t.equal(parsed.media[0]!.port, 0);
  t.equal(parsed.media[1]!.type, 'audio');
  t.equal(parsed.media[1]!.port, media.pbxPort);
});

t.test('hold offers: sendonly -> recvonly, inactive -> inactive', async (t) => {
  const media = await newMedia(t, ['PCMU']);
  const base = ['m=audio 4000 RTP/AVP 0', 'a=rtpmap:0 PCMU/8000'];
  t.match(media.answerPbxOffer(pbxOffer({ media: [...base, 'a=sendonly'] })), /a=recvonly/);
  t.match(media.answerPbxOffer(pbxOffer({ media: [...base, 'a=inactive'] })), /a=inactive/);
  t.match(media.answerPbxOffer(pbxOffer({ media: [...base, 'a=recvonly'] })), /a=sendonly/);
});

t.test('applyPbxAnswer without a common codec throws NO_COMMON_CODEC; start() needs both sides', async (t) => {
  const media = await newMedia(t, ['PCMU']);
  t.throws(() => media.start(), { code: 'NOT_NEGOTIATED' });
  media.createPbxOffer();
  t.throws(() => media.applyPbxAnswer(pbxOffer({ media: ['m=audio 4000 RTP/AVP 8', 'a=rtpmap:8 PCMA/8000'] })), {
    code: 'NO_COMMON_CODEC',
  });
});

t.test("the PBX's a=rtcp port (RFC 3605) is read; a missing or broken one is left out", async (t) => {
  const base = ['m=audio 40000 RTP/AVP 0', 'a=rtpmap:0 PCMU/8000'];
  t.equal(parsePbxSdp(pbxOffer({ media: [...base, 'a=rtcp:40011 IN IP4 127.0.0.1'] })).rtcpPort, 40011);
  t.equal(parsePbxSdp(pbxOffer({ media: [...base, 'a=rtcp:40003'] })).rtcpPort, 40003);
  t.equal(parsePbxSdp(pbxOffer({ media: base })).rtcpPort, undefined);
  t.equal(parsePbxSdp(pbxOffer({ media: [...base, 'a=rtcp:99999'] })).rtcpPort, undefined, 'out of range');
});

/** An `a=crypto` line with a fresh key. */
function cryptoLine(tag: number, suite: SdesSuite, extra = ''): string {
  return `a=crypto:${formatSdesCrypto(newSdesCrypto(tag, suite))}${extra}`;
}
const keyOf = (sdp: string): string | undefined => /^a=crypto:\d+ \S+ inline:(\S+)/m.exec(sdp)?.[1];

t.test('SRTP offers toward the PBX (prefer, required): RTP/SAVP, one fresh key per suite and per call, kept on a re-offer', async (t) => {
  const a = await newMedia(t, ['PCMU'], 'required');
  const b = await newMedia(t, ['PCMU'], 'prefer');
  const offerA = a.createPbxOffer();
  t.match(offerA, /^m=audio \d+ RTP\/SAVP 0 101\r$/m);
  const lines = [...offerA.matchAll(/^a=crypto:(\d+) (\S+) inline:(\S+)\r$/gm)];
  t.same(lines.map((l) => `${l[1]} ${l[2]}`), ['1 AES_CM_128_HMAC_SHA1_80', '2 AES_CM_128_HMAC_SHA1_32']);
  t.not(lines[0]![3], lines[1]![3], 'a key per line');
  t.not(keyOf(b.createPbxOffer()), keyOf(offerA), 'another call, another key');
  t.equal(keyOf(a.createPbxOffer()), keyOf(offerA), 'the same call offering again (a transfer) keeps its keys');
  const plain = await newMedia(t, ['PCMU'], 'optional');
  t.match(plain.createPbxOffer(), /^m=audio \d+ RTP\/AVP /m, 'optional offers plain RTP');
  t.notMatch(plain.createPbxOffer(), /a=crypto/);
});

t.test('answers to our SRTP offer: the tag we offered, or a clear failure; prefer takes a plain answer, required does not', async (t) => {
  const required = await newMedia(t, ['PCMU'], 'required');
  required.createPbxOffer();
  const plainAnswer = pbxOffer({ media: ['m=audio 4000 RTP/AVP 0', 'a=rtpmap:0 PCMU/8000'] });
  t.throws(() => required.applyPbxAnswer(plainAnswer), { code: 'SRTP_NEGOTIATION', message: /answered plain RTP\/AVP .* media.srtp is required/ });
  t.throws(
    () => required.applyPbxAnswer(pbxOffer({ media: ['m=audio 4000 RTP/SAVP 0', 'a=rtpmap:0 PCMU/8000', cryptoLine(7, 'AES_CM_128_HMAC_SHA1_80')] })),
    { code: 'SRTP_NEGOTIATION', message: /tag 7 \(AES_CM_128_HMAC_SHA1_80\) is not one we offered/ },
  );
  t.throws(
    () =>
      required.applyPbxAnswer(
        pbxOffer({ media: ['m=audio 4000 RTP/SAVP 0', 'a=rtpmap:0 PCMU/8000', cryptoLine(1, 'AES_CM_128_HMAC_SHA1_80', '|2^20|1:4')] }),
      ),
    { code: 'SRTP_NEGOTIATION', message: /MKI is not supported/ },
  );
  required.applyPbxAnswer(pbxOffer({ media: ['m=audio 4000 RTP/SAVP 0', 'a=rtpmap:0 PCMU/8000', cryptoLine(2, 'AES_CM_128_HMAC_SHA1_32')] }));
  t.equal(required.stats().srtp, 'AES_CM_128_HMAC_SHA1_32', 'the answer chose our second line');
  const prefer = await newMedia(t, ['PCMU'], 'prefer');
  prefer.createPbxOffer();
  prefer.applyPbxAnswer(plainAnswer);
  t.equal(prefer.stats().srtp, undefined, 'prefer: a plain answer gives a plain call');
  const off = await newMedia(t, ['PCMU'], 'off');
  off.createPbxOffer();
  t.throws(
    () => off.applyPbxAnswer(pbxOffer({ media: ['m=audio 4000 RTP/SAVP 0', 'a=rtpmap:0 PCMU/8000', cryptoLine(1, 'AES_CM_128_HMAC_SHA1_80')] })),
    { code: 'SRTP_NEGOTIATION', message: /answered RTP\/SAVP to a plain RTP\/AVP offer/ },
  );
});

t.test('answering SRTP offers: the first usable line, our own key for its suite, kept on re-offers, renewed for another suite', async (t) => {
  const media = await newMedia(t, ['PCMU'], 'optional');
  const offer = (...cryptos: string[]): string => pbxOffer({ media: ['m=audio 4000 RTP/SAVP 0', 'a=rtpmap:0 PCMU/8000', ...cryptos] });
  const first = offer(cryptoLine(1, 'AES_CM_128_HMAC_SHA1_80', '|2^20|1:32'), cryptoLine(2, 'AEAD_AES_256_GCM'), cryptoLine(3, 'AES_CM_128_HMAC_SHA1_80'));
  const answer = media.answerPbxOffer(first);
  t.match(answer, /^m=audio \d+ RTP\/SAVP 0\r$/m, 'RTP/SAVP answered');
  const line = /^a=crypto:(\d+) (\S+) inline:(\S+)\r$/m.exec(answer);
  t.same([line?.[1], line?.[2]], ['2', 'AEAD_AES_256_GCM'], 'tag 1 has an MKI: the first usable line is tag 2');
  t.equal(Buffer.from(line![3]!, 'base64').length, 44, 'our AEAD_AES_256_GCM key: 32 + 12 bytes');
  t.equal([...answer.matchAll(/a=crypto/g)].length, 1, 'one line in the answer');
  const reoffer = media.answerPbxOffer(offer(cryptoLine(2, 'AEAD_AES_256_GCM')).replace('a=rtpmap:0 PCMU/8000', 'a=rtpmap:0 PCMU/8000\r\na=sendonly'));
  t.equal(keyOf(reoffer), line![3], 'hold with a new PBX key: our key stays');
  t.match(reoffer, /a=recvonly/);
  const other = media.answerPbxOffer(offer(cryptoLine(5, 'AES_CM_128_HMAC_SHA1_80')));
  t.match(other, /^a=crypto:5 AES_CM_128_HMAC_SHA1_80 inline:/m);
  t.not(keyOf(other), line![3], 'another suite: a new key of ours');
  t.throws(() => media.answerPbxOffer(offer(cryptoLine(1, 'AES_CM_128_HMAC_SHA1_80', '|2^20|1:32'))), {
    code: 'SRTP_NEGOTIATION',
    message: /no usable SDES key in the PBX's offer: a=crypto tag 1 .*MKI is not supported/,
  });
  t.throws(() => media.answerPbxOffer(offer()), { code: 'SRTP_NEGOTIATION', message: /no a=crypto line/ });
  const plain = media.answerPbxOffer(pbxOffer({ media: ['m=audio 4000 RTP/AVP 0', 'a=rtpmap:0 PCMU/8000'] }));
  t.match(plain, /^m=audio \d+ RTP\/AVP 0\r$/m, 'optional: a plain re-offer gives plain RTP');
  t.equal(media.stats().srtp, undefined);
});
