/**
 * SDP toward the PBX: RTP/AVP, or RTP/SAVP with SDES keys (`a=crypto`, media/sdes.ts); one audio m-line, G.711 and
 * Opus, RFC 4733 telephone-event.
 * Pure functions; the CallMedia owns the session id/version and the negotiated state.
 */
import * as sdpTransform from 'sdp-transform';
import type { MediaDescription, SessionDescription } from 'sdp-transform';
import type { PbxCodecName } from '../calls/ports.js';
import { MediaError } from '../core/errors.js';

export type SdpDirection = 'sendrecv' | 'sendonly' | 'recvonly' | 'inactive';

/** A codec toward the PBX with the payload type used on the wire. */
export interface PbxCodec {
  name: PbxCodecName;
  pt: number;
  /** RTP clock rate (Hz): 8000 for G.711, 48000 for Opus. */
  clockRate: number;
  channels: number;
}

export interface PbxTelephoneEvent {
  pt: number;
  clockRate: number;
}

/** What the PBX's SDP says about its audio, after negotiation. */
export interface PbxRemoteAudio {
  codec: PbxCodec;
  telephoneEvent?: PbxTelephoneEvent;
  /** Where to send RTP (c= and m= of the audio section); address '0.0.0.0' means hold (RFC 2543 style). */
  address: string;
  port: number;
  /** The PBX's direction, as written in its SDP. */
  direction: SdpDirection;
  rtcpMux: boolean;
  /** Where the PBX wants RTCP when it is not muxed (`a=rtcp:` of its SDP, RFC 3605); default RTP port + 1. */
  rtcpPort?: number;
  /** The PBX's a=ptime (ms), if any. */
  ptime?: number;
}

/** Our default payload types in offers. */
export const OFFER_PTS = { opus: 111, PCMU: 0, PCMA: 8, te8000: 101, te48000: 102 } as const;

const CODEC_INFO: Record<PbxCodecName, { clockRate: number; channels: number; rtpName: string }> = {
  opus: { clockRate: 48000, channels: 2, rtpName: 'opus' },
  PCMU: { clockRate: 8000, channels: 1, rtpName: 'PCMU' },
  PCMA: { clockRate: 8000, channels: 1, rtpName: 'PCMA' },
};

/** Static payload types (RFC 3551) for naming what a PBX offered without rtpmap lines. */
const STATIC_PT_NAMES: Record<number, string> = {
  0: 'PCMU/8000',
  3: 'GSM/8000',
  4: 'G723/8000',
  8: 'PCMA/8000',
  9: 'G722/8000',
  13: 'CN/8000',
  18: 'G729/8000',
};

export function codecFor(name: PbxCodecName, pt: number): PbxCodec {
  const info = CODEC_INFO[name];
  return { name, pt, clockRate: info.clockRate, channels: info.channels };
}

function ipVersion(address: string): 4 | 6 {
  return address.includes(':') ? 6 : 4;
}

/** Everything needed to write one SDP body toward the PBX. */
export interface PbxSdpBody {
  sessionId: string;
  version: number;
  address: string;
  port: number;
  codecs: PbxCodec[];
  telephoneEvents: PbxTelephoneEvent[];
  direction: SdpDirection;
  rtcpMux: boolean;
  /** Transport profile of the audio m-line. Default 'RTP/AVP', or 'RTP/SAVP' with `crypto` (an answer repeats the offer's). */
  protocol?: string;
  /** `a=crypto` values (SDES) of the audio section, in order of preference. */
  crypto?: string[];
  /**
   * Other m-lines of the PBX's offer, rejected (port 0) in our answer at their original index; the audio section
   * goes to `audioIndex`.
   */
  rejected?: { index: number; media: MediaDescription }[];
  audioIndex?: number;
}

export function writePbxSdp(body: PbxSdpBody): string {
  const ipVer = ipVersion(body.address);
  const rtp: MediaDescription['rtp'] = [];
  const fmtp: MediaDescription['fmtp'] = [];
  for (const codec of body.codecs) {
    const info = CODEC_INFO[codec.name];
    rtp.push({ payload: codec.pt, codec: info.rtpName, rate: info.clockRate, ...(codec.channels > 1 ? { encoding: 2 } : {}) });
    if (codec.name === 'opus') fmtp.push({ payload: codec.pt, config: 'minptime=10;useinbandfec=1' });
  }
  for (const te of body.telephoneEvents) {
    rtp.push({ payload: te.pt, codec: 'telephone-event', rate: te.clockRate });
    fmtp.push({ payload: te.pt, config: '0-16' });
  }
  const audio: MediaDescription = {
    type: 'audio',
    port: body.port,
    protocol: body.protocol ?? (body.crypto?.length ? 'RTP/SAVP' : 'RTP/AVP'),
    payloads: [...body.codecs.map((c) => c.pt), ...body.telephoneEvents.map((t) => t.pt)].join(' '),
    rtp,
    fmtp,
    ptime: 20,
    direction: body.direction,
    ...(body.rtcpMux ? { rtcpMux: 'rtcp-mux' as const } : {}),
    ...(body.crypto?.length ? { crypto: body.crypto.map(cryptoEntry) } : {}),
  };
  const media: MediaDescription[] = [];
  const total = 1 + (body.rejected?.length ?? 0);
  const audioIndex = body.audioIndex ?? 0;
  const rejected = new Map((body.rejected ?? []).map((r) => [r.index, r.media]));
  for (let i = 0; i < total; i++) {
    if (i === audioIndex) {
      media.push(audio);
      continue;
    }
    const other = rejected.get(i);
    if (!other) continue;
    media.push({
      type: other.type,
      port: 0,
      protocol: other.protocol,
      payloads: other.payloads ?? '0',
      rtp: [],
      fmtp: [],
    });
  }
  const session: SessionDescription = {
    version: 0,
    origin: {
      username: '-',
      sessionId: body.sessionId,
      sessionVersion: body.version,
      netType: 'IN',
      ipVer,
      address: body.address,
    },
    name: 'messenger-sip-bridge',
    connection: { version: ipVer, ip: body.address },
    timing: { start: 0, stop: 0 },
    media,
  };
  return sdpTransform.write(session);
}

/** sdp-transform's shape of one `a=crypto` value we wrote (tag, suite, key parameters; we write no session parameters). */
function cryptoEntry(value: string): { id: number; suite: string; config: string } {
  const [tag, suite, config] = value.split(' ');
  return { id: Number(tag), suite: suite!, config: config! };
}

/**
 * The `a=crypto` values of one m-section, read from the SDP text: sdp-transform keeps only the first session
 * parameter of a line, and a parameter we do not understand must make the line unusable, not vanish.
 */
function cryptoAttributes(sdp: string, mediaIndex: number): string[] {
  const values: string[] = [];
  let index = -1;
  for (const line of sdp.split(/\r?\n/)) {
    if (line.startsWith('m=')) index++;
    else if (index === mediaIndex && line.startsWith('a=crypto:')) values.push(line.slice('a=crypto:'.length).trim());
  }
  return values;
}

/** One codec the PBX listed, as it named it (for error messages and matching). */
interface OfferedFormat {
  pt: number;
  name: string;
  clockRate: number;
  channels: number;
}

export interface ParsedPbxSdp {
  /** Index of the first audio m-line with a non-zero port among all m-lines. */
  audioIndex: number;
  audio: MediaDescription;
  all: MediaDescription[];
  address: string;
  formats: OfferedFormat[];
  direction: SdpDirection;
  rtcpMux: boolean;
  /** `a=rtcp:` port of the audio section (RFC 3605), when given and valid. */
  rtcpPort?: number;
  sessionVersion?: number;
  /** The audio m-line is RTP/SAVP or RTP/SAVPF (SRTP). */
  secure: boolean;
  /** Its `a=crypto` values, as written (SDES keys: secret). */
  crypto: string[];
}

/** Where and how to send audio to the PBX, from its parsed SDP and the codec and telephone-event chosen in it. */
export function remoteAudioOf(parsed: ParsedPbxSdp, codec: PbxCodec, telephoneEvent: PbxTelephoneEvent | undefined): PbxRemoteAudio {
  return {
    codec,
    telephoneEvent,
    address: parsed.address,
    port: parsed.audio.port,
    direction: parsed.direction,
    rtcpMux: parsed.rtcpMux,
    rtcpPort: parsed.rtcpPort,
    ptime: parsed.audio.ptime,
  };
}

function describeFormats(formats: OfferedFormat[]): string {
  return formats.length === 0
    ? 'no payload formats'
    : formats.map((f) => `${f.name}/${f.clockRate}${f.channels > 1 ? `/${f.channels}` : ''} (PT ${f.pt})`).join(', ');
}

/** Parse the PBX's SDP; throws MediaError('SDP_INVALID') when it has no usable audio section. */
export function parsePbxSdp(sdp: string): ParsedPbxSdp {
  let session: SessionDescription;
  try {
    session = sdpTransform.parse(sdp);
  } catch (err) {
    throw new MediaError('SDP_INVALID', 'PBX SDP could not be parsed', { cause: err });
  }
  const all = session.media ?? [];
  if (all.length === 0) throw new MediaError('SDP_INVALID', 'PBX SDP has no media section');
  const audioIndex = all.findIndex((m) => m.type === 'audio' && m.port !== 0);
  if (audioIndex < 0) {
    const offered = all.map((m) => `${m.type} port ${m.port} (${m.protocol})`).join(', ');
    throw new MediaError('SDP_INVALID', `PBX SDP has no active audio section; it offered: ${offered}`);
  }
  const audio = all[audioIndex]!;
  // DTLS-SRTP (UDP/TLS/RTP/SAVP) and ZRTP are not for the PBX leg: SDES keys or plain RTP.
  if (!/^RTP\/S?AVPF?$/i.test(audio.protocol)) {
    throw new MediaError('SDP_INVALID', `PBX audio uses unsupported transport ${audio.protocol} (RTP/AVP, or RTP/SAVP with SDES keys)`);
  }
  const address = audio.connection?.ip ?? session.connection?.ip;
  if (!address) throw new MediaError('SDP_INVALID', 'PBX SDP has no connection address (c=)');
  const formats: OfferedFormat[] = [];
  for (const token of String(audio.payloads ?? '').trim().split(/\s+/)) {
    if (token === '') continue;
    const pt = Number(token);
    if (!Number.isInteger(pt)) continue;
    const rtpmap = audio.rtp.find((r) => r.payload === pt);
    if (rtpmap) {
      formats.push({ pt, name: rtpmap.codec, clockRate: rtpmap.rate ?? 8000, channels: rtpmap.encoding ?? 1 });
    } else if (STATIC_PT_NAMES[pt]) {
      const [name, rate] = STATIC_PT_NAMES[pt]!.split('/');
      formats.push({ pt, name: name!, clockRate: Number(rate), channels: 1 });
    } else {
      formats.push({ pt, name: `PT${pt}`, clockRate: 8000, channels: 1 });
    }
  }
  const direction = (audio.direction ?? (session as { direction?: SdpDirection }).direction ?? 'sendrecv') as SdpDirection;
  return {
    audioIndex,
    audio,
    all,
    address,
    formats,
    direction,
    rtcpMux: audio.rtcpMux === 'rtcp-mux',
    ...(validPort(audio.rtcp?.port) ? { rtcpPort: audio.rtcp!.port } : {}),
    sessionVersion: session.origin?.sessionVersion,
    secure: /^RTP\/SAVPF?$/i.test(audio.protocol),
    crypto: cryptoAttributes(sdp, audioIndex),
  };
}

function validPort(port: unknown): port is number {
  return typeof port === 'number' && Number.isInteger(port) && port > 0 && port < 65536;
}

function matchCodec(name: PbxCodecName, f: OfferedFormat): boolean {
  const info = CODEC_INFO[name];
  if (f.name.toLowerCase() !== info.rtpName.toLowerCase() || f.clockRate !== info.clockRate) return false;
  // Opus is always opus/48000/2 in SDP (RFC 7587).
  return name !== 'opus' || f.channels === 2;
}

/**
 * Pick the codec toward the PBX: the first of `preference` that the PBX lists (`keep`, when still listed, wins
 * so that a re-INVITE does not switch codecs mid-call). Throws MediaError('NO_COMMON_CODEC') naming what was offered.
 */
export function chooseCodec(parsed: ParsedPbxSdp, preference: readonly PbxCodecName[], keep?: PbxCodecName): PbxCodec {
  const order = keep ? [keep, ...preference.filter((c) => c !== keep)] : preference;
  for (const name of order) {
    const format = parsed.formats.find((f) => matchCodec(name, f));
    if (format) return codecFor(name, format.pt);
  }
  throw new MediaError(
    'NO_COMMON_CODEC',
    `no common audio codec with the PBX: we support ${preference.join(', ')}; PBX offered ${describeFormats(parsed.formats)}`,
  );
}

/** The PBX's telephone-event format, preferring the one at the codec's clock rate. */
export function chooseTelephoneEvent(parsed: ParsedPbxSdp, codec: PbxCodec): PbxTelephoneEvent | undefined {
  const events = parsed.formats.filter((f) => f.name.toLowerCase() === 'telephone-event');
  const best = events.find((f) => f.clockRate === codec.clockRate) ?? events.find((f) => f.clockRate === 8000) ?? events[0];
  return best ? { pt: best.pt, clockRate: best.clockRate } : undefined;
}

/** The direction we answer with, given the PBX's offered direction (RFC 3264 section 6.1). */
export function answerDirection(offered: SdpDirection): SdpDirection {
  switch (offered) {
    case 'sendonly':
      return 'recvonly';
    case 'recvonly':
      return 'sendonly';
    case 'inactive':
      return 'inactive';
    default:
      return 'sendrecv';
  }
}

/** True when the PBX's SDP says it does not want to receive our audio (hold). */
export function pbxRefusesAudio(remote: Pick<PbxRemoteAudio, 'direction' | 'address'>): boolean {
  return (
    remote.direction === 'sendonly' ||
    remote.direction === 'inactive' ||
    remote.address === '0.0.0.0' ||
    remote.address === '::'
  );
}
