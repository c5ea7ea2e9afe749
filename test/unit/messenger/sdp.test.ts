import t from 'tap';
import sdpTransform from 'sdp-transform';
import { MessengerLegError } from '../../../src/core/errors.js';
import {
  buildAnswer,
  buildOffer,
  parseRemoteDescription,
  pickTelephoneEvent,
  usableCandidates,
} from '../../../src/messenger/sdp.js';
import type { LocalTransportParams } from '../../../src/messenger/sdp.js';

const local: LocalTransportParams = {
  iceUfrag: 'ufrg',
  icePwd: 'p'.repeat(24),
  fingerprint: { algorithm: 'sha-256', value: Array.from({ length: 32 }, () => '1F').join(':') },
  candidates: [
    { foundation: '1', component: 1, transport: 'udp', priority: 2130706431, ip: '192.0.2.10', port: 40000, type: 'host' },
  ],
  ssrc: 1234,
  cname: 'cn',
  streamId: 'stream',
  trackId: 'track',
  sessionId: '42',
};

function metaOffer(sections: string[], extraSession = ''): string {
  return [
    'v=0',
    'o=- 7 3 IN IP4 203.0.113.5',
    's=-',
    't=0 0',
    'a=ice-lite',
    extraSession,
    'a=ice-ufrag:meta',
    'a=ice-pwd:metapasswordmetapassword',
    `a=fingerprint:sha-256 ${Array.from({ length: 32 }, () => 'AA').join(':')}`,
    'a=setup:actpass',
    ...sections,
    '',
  ]
    .filter((l, i, a) => l !== '' || i === a.length - 1)
    .join('\r\n');
}

function audio(mid: string, direction: string, rtp: string[] = ['111 opus/48000/2']): string {
  const pts = rtp.map((r) => r.split(' ')[0]).join(' ');
  return [
    `m=audio 3480 UDP/TLS/RTP/SAVPF ${pts}`,
    'c=IN IP4 203.0.113.5',
    'a=candidate:1 1 udp 2130706431 203.0.113.5 3480 typ host',
    'a=candidate:2 1 udp 2130706431 2001:db8::5 3480 typ host',
    'a=candidate:3 1 tcp 1518280447 203.0.113.5 3478 typ host tcptype passive',
    `a=mid:${mid}`,
    `a=${direction}`,
    'a=rtcp-mux',
    ...rtp.map((r) => `a=rtpmap:${r}`),
  ].join('\r\n');
}

t.test('session-level transport attributes, candidates split by transport and family', async (t) => {
  const remote = parseRemoteDescription(metaOffer([audio('0', 'sendrecv')]), 'offer');
  t.equal(remote.iceLite, true);
  t.equal(remote.iceUfrag, 'meta');
  t.equal(remote.setup, 'actpass');
  t.equal(remote.version, 3);
  t.same(
    remote.candidates.map((c) => c.ip),
    ['203.0.113.5', '2001:db8::5'],
  );
  t.same(
    remote.ignoredCandidates.map((c) => [c.transport, c.port, c.tcptype]),
    [['tcp', 3478, 'passive']],
  );
  t.same(
    usableCandidates(remote.candidates, new Set([4])).map((c) => c.ip),
    ['203.0.113.5'],
  );
  t.same(
    usableCandidates(remote.candidates, new Set([6])).map((c) => c.ip),
    ['2001:db8::5'],
  );
});

t.test('an all-digit ice-ufrag or ice-pwd stays the exact string (sdp-transform reads it as a number)', async (t) => {
  const sdp = metaOffer([audio('0', 'sendrecv')])
    .replace('a=ice-ufrag:meta', 'a=ice-ufrag:3264')
    .replace('a=ice-pwd:metapasswordmetapassword', 'a=ice-pwd:123456789012345678901234');
  const remote = parseRemoteDescription(sdp, 'offer');
  t.equal(remote.iceUfrag, '3264');
  t.equal(remote.icePwd, '123456789012345678901234');
  const leadingZero = parseRemoteDescription(sdp.replace('a=ice-ufrag:3264', 'a=ice-ufrag:0264'), 'offer');
  t.equal(leadingZero.iceUfrag, '0264', 'a leading zero is kept');
});

t.test('without a=candidate, c= and the m= port are used', async (t) => {
  const sdp = metaOffer([audio('0', 'sendrecv').replace(/a=candidate:[^\r\n]+\r\n/g, '')]);
  const remote = parseRemoteDescription(sdp, 'answer');
  t.same(
    remote.candidates.map((c) => [c.ip, c.port, c.transport]),
    [['203.0.113.5', 3480, 'udp']],
  );
});

t.test('unusable SDP is refused with reason sdp', async (t) => {
  const bad = [
    'not sdp at all',
    metaOffer([audio('0', 'sendrecv', ['0 PCMU/8000'])]),
    metaOffer([audio('0', 'sendrecv').replace('m=audio 3480', 'm=audio 0')]),
    metaOffer([audio('0', 'sendrecv')]).replace(/a=fingerprint:[^\r\n]+\r\n/, ''),
    metaOffer([audio('0', 'sendrecv')]).replace(/a=ice-pwd:[^\r\n]+\r\n/, ''),
  ];
  for (const sdp of bad) {
    t.throws(() => parseRemoteDescription(sdp, 'answer'), MessengerLegError);
    try {
      parseRemoteDescription(sdp, 'answer');
    } catch (err) {
      t.equal((err as MessengerLegError).reason, 'sdp');
    }
  }
});

t.test('telephone-event: the 48 kHz one is preferred, else whatever was offered', async (t) => {
  t.same(pickTelephoneEvent([{ pt: 126, clockRate: 8000 }, { pt: 110, clockRate: 48000 }]), { pt: 110, clockRate: 48000 });
  t.same(pickTelephoneEvent([{ pt: 101, clockRate: 8000 }]), { pt: 101, clockRate: 8000 });
  t.equal(pickTelephoneEvent([]), undefined);
});

t.test('answer to a two-section offer: directions mirrored, SSRC on the sending one, other kinds rejected', async (t) => {
  const offer = parseRemoteDescription(
    metaOffer([
      audio('0', 'recvonly', ['111 opus/48000/2', '101 telephone-event/8000']),
      audio('1', 'sendonly', ['109 opus/48000/2']),
      'm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=rtpmap:96 VP8/90000',
    ]),
    'offer',
  );
  const built = buildAnswer(local, offer, 5);
  const parsed = sdpTransform.parse(built.sdp);
  t.same(
    parsed.media.map((m) => [m.type, String(m.mid), m.port === 0 ? 'rejected' : m.direction]),
    [
      ['audio', '0', 'sendonly'],
      ['audio', '1', 'recvonly'],
      ['video', '2', 'rejected'],
    ],
  );
  t.same(parsed.groups, [{ type: 'BUNDLE', mids: '0 1' }]);
  t.equal(parsed.origin?.sessionVersion, 5);
  t.equal(parsed.media[0]!.ssrcs?.[0]?.id, 1234);
  t.notOk(parsed.media[1]!.ssrcs);
  for (const m of parsed.media.slice(0, 2)) t.equal(m.setup, 'active');
  t.equal(built.sendIndex, 0);
  t.equal(built.opusPt, 111, 'codecs of the section Meta receives on');
  t.same(built.telephoneEvent, { pt: 101, clockRate: 8000 });
  t.same(
    parsed.media[0]!.rtp.map((r) => [r.payload, r.codec, r.rate]),
    [
      [111, 'opus', 48000],
      [101, 'telephone-event', 8000],
    ],
    'telephone-event answered at the offered clock rate',
  );
  t.equal(parsed.media[1]!.rtp[0]!.payload, 109, 'each section keeps its own payload type');
});

t.test('inactive stays inactive and nothing is sent', async (t) => {
  const offer = parseRemoteDescription(metaOffer([audio('0', 'inactive')]), 'offer');
  const built = buildAnswer(local, offer, 2);
  t.equal(sdpTransform.parse(built.sdp).media[0]!.direction, 'inactive');
  t.equal(built.sendIndex, undefined);
});

t.test('the offer uses the first candidate for c= and the m= port', async (t) => {
  const parsed = sdpTransform.parse(buildOffer(local, 1));
  t.equal(parsed.media[0]!.port, 40000);
  t.equal(parsed.media[0]!.connection?.ip, '192.0.2.10');
});
