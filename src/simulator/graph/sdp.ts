/**
 * SDP checks and the canned answer of the simulated Meta Graph API.
 */
import { randomBytes } from 'node:crypto';

/** What Meta needs in an offer before it answers: the problem, or undefined when the offer is usable. */
export function offerProblem(sdp: unknown): string | undefined {
  if (typeof sdp !== 'string' || sdp.trim() === '') return 'session.sdp is missing';
  const lines = sdp.split(/\r?\n/);
  if (lines[0]?.trim() !== 'v=0') return 'SDP must start with v=0';
  if (!lines.some((l) => l.startsWith('m=audio '))) return 'SDP has no m=audio section';
  if (!lines.some((l) => l.startsWith('a=fingerprint:'))) return 'SDP has no a=fingerprint (DTLS is required)';
  if (!lines.some((l) => l.startsWith('a=ice-ufrag:'))) return 'SDP has no a=ice-ufrag (ICE is required)';
  return undefined;
}

function hex(bytes: Buffer): string {
  return [...bytes].map((b) => b.toString(16).toUpperCase().padStart(2, '0')).join(':');
}

/**
 * An answer shaped like Meta's sample answer: session-level ice-lite, one m=audio with Opus only, host candidates
 * over UDP (IPv4, IPv6) and passive TCP on 3478, its own ufrag/pwd and fingerprint, setup:passive.
 * No media server stands behind it: for signalling tests only.
 */
export function cannedAnswer(offerSdp: string): string {
  const mid = /^a=mid:(\S+)/m.exec(offerSdp)?.[1] ?? '0';
  const ufrag = randomBytes(3).toString('hex');
  const pwd = randomBytes(12).toString('base64url');
  const port = 3480;
  return [
    'v=0',
    `o=- ${Date.now()} 2 IN IP4 127.0.0.1`,
    's=-',
    't=0 0',
    'a=ice-lite',
    `a=group:BUNDLE ${mid}`,
    'a=msid-semantic: WMS',
    `m=audio ${port} UDP/TLS/RTP/SAVPF 111`,
    'c=IN IP4 127.0.0.1',
    'a=rtcp:9 IN IP4 0.0.0.0',
    `a=candidate:1 1 udp 2122260223 127.0.0.1 ${port} typ host generation 0`,
    `a=candidate:2 1 udp 2122262783 ::1 ${port} typ host generation 0`,
    'a=candidate:3 1 tcp 1518280447 127.0.0.1 3478 typ host tcptype passive generation 0',
    'a=candidate:4 1 tcp 1518283007 ::1 3478 typ host tcptype passive generation 0',
    `a=ice-ufrag:${ufrag}`,
    `a=ice-pwd:${pwd}`,
    `a=fingerprint:sha-256 ${hex(randomBytes(32))}`,
    'a=setup:passive',
    `a=mid:${mid}`,
    'a=sendrecv',
    'a=rtcp-mux',
    'a=rtpmap:111 opus/48000/2',
    'a=fmtp:111 minptime=10;useinbandfec=1;maxaveragebitrate=20000;maxplaybackrate=16000;usedtx=1',
    `a=ssrc:${randomBytes(4).readUInt32BE()} cname:meta`,
    '',
  ].join('\r\n');
}
