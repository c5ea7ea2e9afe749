/**
 * SDP toward Meta: our browser-shaped offer, parsing of Meta's answers and offers, and our answers to Meta's
 * renegotiation offers. Pure functions; nothing here knows the WebRTC stack underneath.
 */
import { isIPv4, isIPv6 } from 'node:net';
import sdpTransform from 'sdp-transform';
import { MessengerLegError } from '../core/errors.js';

/** Opus as Chrome offers it. */
export const OPUS_PT = 111;
/** telephone-event payload types as Chrome offers them. */
export const TELEPHONE_EVENT_48K_PT = 110;
export const TELEPHONE_EVENT_8K_PT = 126;
const OPUS_FMTP = 'minptime=10;useinbandfec=1';

export type MediaDirection = 'sendrecv' | 'sendonly' | 'recvonly' | 'inactive';

export interface SdpCandidate {
  foundation: string;
  component: number;
  transport: string;
  priority: number;
  ip: string;
  port: number;
  type: string;
  tcptype?: string;
}

export interface SdpFingerprint {
  algorithm: string;
  value: string;
}

/** What our side puts in every SDP it writes. */
export interface LocalTransportParams {
  iceUfrag: string;
  icePwd: string;
  fingerprint: SdpFingerprint;
  /** Complete: we never trickle toward Meta. */
  candidates: SdpCandidate[];
  ssrc: number;
  cname: string;
  streamId: string;
  trackId: string;
  sessionId: string;
}

export interface TelephoneEventCodec {
  pt: number;
  clockRate: number;
}

/** One m= section of Meta's SDP. */
export interface RemoteMediaSection {
  index: number;
  kind: string;
  mid: string | undefined;
  port: number;
  protocol: string;
  direction: MediaDirection;
  opusPt: number | undefined;
  telephoneEvents: TelephoneEventCodec[];
  /** All payload types listed on the m= line, as text (for rejecting sections). */
  payloads: string;
  ssrcs: number[];
}

/** Meta's SDP (answer or offer), reduced to what the leg uses. */
export interface RemoteDescription {
  type: 'offer' | 'answer';
  iceLite: boolean;
  iceUfrag: string;
  icePwd: string;
  fingerprints: SdpFingerprint[];
  setup: string | undefined;
  /** UDP candidates of the bundle transport, in SDP order. */
  candidates: SdpCandidate[];
  /** Candidates we do not use (TCP), kept for the log. */
  ignoredCandidates: SdpCandidate[];
  sections: RemoteMediaSection[];
  /** Session version from the o= line. */
  version: number;
}

function sdpError(message: string, cause?: unknown): MessengerLegError {
  return new MessengerLegError('sdp', message, cause === undefined ? undefined : { cause });
}

function ipVersion(ip: string): 4 | 6 {
  return isIPv6(ip) ? 6 : 4;
}

function candidateLine(c: SdpCandidate): string {
  let line = `a=candidate:${c.foundation} ${c.component} ${c.transport} ${c.priority} ${c.ip} ${c.port} typ ${c.type}`;
  if (c.tcptype !== undefined) line += ` tcptype ${c.tcptype}`;
  return `${line} generation 0`;
}

/** Transport lines shared by the offer and every answer section. */
function transportLines(local: LocalTransportParams, setup: 'actpass' | 'active'): string[] {
  const lines = [
    `a=ice-ufrag:${local.iceUfrag}`,
    `a=ice-pwd:${local.icePwd}`,
    `a=fingerprint:${local.fingerprint.algorithm} ${local.fingerprint.value}`,
    `a=setup:${setup}`,
  ];
  return lines;
}

function connectionLines(local: LocalTransportParams): { port: number; lines: string[] } {
  const first = local.candidates[0];
  const ip = first?.ip ?? '0.0.0.0';
  const port = first?.port ?? 9;
  const lines = [`c=IN IP${ipVersion(ip)} ${ip}`, 'a=rtcp:9 IN IP4 0.0.0.0'];
  for (const c of local.candidates) lines.push(candidateLine(c));
  lines.push('a=end-of-candidates');
  return { port, lines };
}

function sessionLines(local: LocalTransportParams, version: number, mids: string[]): string[] {
  return [
    'v=0',
    `o=- ${local.sessionId} ${version} IN IP4 127.0.0.1`,
    's=-',
    't=0 0',
    `a=group:BUNDLE ${mids.join(' ')}`,
    `a=msid-semantic: WMS ${local.streamId}`,
  ];
}

function ssrcLines(local: LocalTransportParams): string[] {
  return [
    `a=msid:${local.streamId} ${local.trackId}`,
    `a=ssrc:${local.ssrc} cname:${local.cname}`,
    `a=ssrc:${local.ssrc} msid:${local.streamId} ${local.trackId}`,
  ];
}

/**
 * Our offer, shaped like a browser's: BUNDLE 0, rtcp-mux, setup:actpass, Opus 111, telephone-event at 48 kHz and
 * 8 kHz, one a=ssrc. It carries every candidate (no trickle).
 */
export function buildOffer(local: LocalTransportParams, version: number): string {
  const { port, lines: conn } = connectionLines(local);
  const lines = [
    ...sessionLines(local, version, ['0']),
    `m=audio ${port} UDP/TLS/RTP/SAVPF ${OPUS_PT} ${TELEPHONE_EVENT_48K_PT} ${TELEPHONE_EVENT_8K_PT}`,
    ...conn,
    ...transportLines(local, 'actpass'),
    'a=mid:0',
    'a=sendrecv',
    'a=rtcp-mux',
    `a=rtpmap:${OPUS_PT} opus/48000/2`,
    `a=fmtp:${OPUS_PT} ${OPUS_FMTP}`,
    `a=rtpmap:${TELEPHONE_EVENT_48K_PT} telephone-event/48000`,
    `a=rtpmap:${TELEPHONE_EVENT_8K_PT} telephone-event/8000`,
    ...ssrcLines(local),
  ];
  return `${lines.join('\r\n')}\r\n`;
}

function parseDirection(value: string | undefined): MediaDirection {
  if (value === 'sendonly' || value === 'recvonly' || value === 'inactive') return value;
  return 'sendrecv';
}

function toSdpCandidate(c: NonNullable<sdpTransform.MediaDescription['candidates']>[number]): SdpCandidate {
  const out: SdpCandidate = {
    foundation: String(c.foundation),
    component: Number(c.component),
    transport: String(c.transport).toLowerCase(),
    priority: Number(c.priority),
    ip: c.ip,
    port: Number(c.port),
    type: c.type,
  };
  if (c.tcptype !== undefined) out.tcptype = c.tcptype;
  return out;
}

/**
 * Parse Meta's SDP. Throws MessengerLegError('sdp') when there is no usable audio section (no audio m-line,
 * no Opus) or the transport parameters (ufrag, pwd, fingerprint) are missing.
 */
export function parseRemoteDescription(sdp: string, type: 'offer' | 'answer'): RemoteDescription {
  let session: sdpTransform.SessionDescription;
  try {
    session = sdpTransform.parse(sdp);
  } catch (err) {
    throw sdpError('SDP does not parse', err);
  }
  const media = session.media ?? [];
  if (media.length === 0) throw sdpError('SDP has no media section');

  const sections: RemoteMediaSection[] = media.map((m, index) => {
    const opus = m.rtp.find((r) => r.codec.toLowerCase() === 'opus' && r.rate === 48000);
    const telephoneEvents = m.rtp
      .filter((r) => r.codec.toLowerCase() === 'telephone-event')
      .map((r) => ({ pt: r.payload, clockRate: r.rate ?? 8000 }));
    const ssrcs = [...new Set((m.ssrcs ?? []).map((s) => Number(s.id)))];
    return {
      index,
      kind: m.type,
      mid: m.mid === undefined ? undefined : String(m.mid),
      port: m.port,
      protocol: m.protocol,
      direction: parseDirection(m.direction ?? session.direction),
      opusPt: opus?.payload,
      telephoneEvents,
      payloads: String(m.payloads ?? ''),
      ssrcs,
    };
  });

  const usable = sections.filter((s) => s.kind === 'audio' && s.port !== 0 && s.opusPt !== undefined);
  if (!sections.some((s) => s.kind === 'audio')) throw sdpError('SDP has no audio section');
  if (usable.length === 0) throw sdpError('SDP has no audio section with Opus/48000');

  // BUNDLE: the transport is the one of the first bundled section (all sections share it).
  const transportMedia = media[usable[0]!.index]!;
  // sdp-transform turns an all-digit value into a number (only when it reads back the same, so String() restores it).
  const rawUfrag: unknown = transportMedia.iceUfrag ?? session.iceUfrag;
  const rawPwd: unknown = transportMedia.icePwd ?? session.icePwd;
  const iceUfrag = rawUfrag === undefined || rawUfrag === '' ? undefined : String(rawUfrag);
  const icePwd = rawPwd === undefined || rawPwd === '' ? undefined : String(rawPwd);
  if (!iceUfrag || !icePwd) throw sdpError('SDP has no ice-ufrag/ice-pwd');
  const fingerprintAttr = transportMedia.fingerprint ?? session.fingerprint;
  if (!fingerprintAttr?.hash) throw sdpError('SDP has no DTLS fingerprint');
  const fingerprints = [{ algorithm: fingerprintAttr.type.toLowerCase(), value: fingerprintAttr.hash }];
  const setup = transportMedia.setup ?? session.setup;

  const all = (transportMedia.candidates ?? []).map(toSdpCandidate).filter((c) => c.component === 1);
  const candidates = all.filter((c) => c.transport === 'udp');
  const ignoredCandidates = all.filter((c) => c.transport !== 'udp');
  if (all.length === 0) {
    // No a=candidate: fall back to c= and the m= port, as a plain host candidate.
    const ip = transportMedia.connection?.ip ?? session.connection?.ip;
    if (ip && ip !== '0.0.0.0' && transportMedia.port > 9) {
      candidates.push({
        foundation: 'c0',
        component: 1,
        transport: 'udp',
        priority: 2130706431,
        ip,
        port: transportMedia.port,
        type: 'host',
      });
    }
  }

  return {
    type,
    iceLite: session.icelite === 'ice-lite',
    iceUfrag,
    icePwd,
    fingerprints,
    setup,
    candidates,
    ignoredCandidates,
    sections,
    version: Number(session.origin?.sessionVersion ?? 0),
  };
}

/** Keep candidates of the address families we can reach. */
export function usableCandidates(candidates: SdpCandidate[], families: Set<4 | 6>): SdpCandidate[] {
  return candidates.filter((c) => (isIPv4(c.ip) && families.has(4)) || (isIPv6(c.ip) && families.has(6)));
}

/** telephone-event to use with Meta: the 48 kHz one when offered (Opus clock), else the first. */
export function pickTelephoneEvent(list: TelephoneEventCodec[]): TelephoneEventCodec | undefined {
  return list.find((t) => t.clockRate === 48000) ?? list[0];
}

function answerDirection(offered: MediaDirection): MediaDirection {
  switch (offered) {
    case 'recvonly':
      return 'sendonly';
    case 'sendonly':
      return 'recvonly';
    default:
      return offered;
  }
}

export interface BuiltAnswer {
  sdp: string;
  /** Index of the section we send on (the one Meta receives on), if any. */
  sendIndex: number | undefined;
  /** Index of the section whose codecs we use toward Meta. */
  codecIndex: number;
  opusPt: number;
  telephoneEvent: TelephoneEventCodec | undefined;
}

/**
 * Our answer to an offer from Meta: one section per offered section (non-Opus ones rejected with port 0), all in
 * one BUNDLE on our existing transport, a=setup:active (we stay the DTLS client). We send on the first section
 * Meta receives on; our a=ssrc goes there only.
 */
export function buildAnswer(local: LocalTransportParams, offer: RemoteDescription, version: number): BuiltAnswer {
  const accepted = offer.sections.filter((s) => s.kind === 'audio' && s.port !== 0 && s.opusPt !== undefined);
  const sendSection = accepted.find((s) => {
    const d = answerDirection(s.direction);
    return d === 'sendrecv' || d === 'sendonly';
  });
  const codecSection = sendSection ?? accepted[0]!;
  const { port, lines: conn } = connectionLines(local);
  const mids = accepted.map((s) => s.mid ?? String(s.index));
  const lines = sessionLines(local, version, mids);

  for (const s of offer.sections) {
    const mid = s.mid ?? String(s.index);
    if (!accepted.includes(s)) {
      lines.push(`m=${s.kind} 0 ${s.protocol} ${s.payloads || '0'}`, 'c=IN IP4 0.0.0.0', `a=mid:${mid}`, 'a=inactive');
      continue;
    }
    const te = pickTelephoneEvent(s.telephoneEvents);
    const opusPt = s.opusPt!;
    const pts = te ? `${opusPt} ${te.pt}` : `${opusPt}`;
    const direction = answerDirection(s.direction);
    lines.push(
      `m=audio ${port} UDP/TLS/RTP/SAVPF ${pts}`,
      ...conn,
      ...transportLines(local, 'active'),
      `a=mid:${mid}`,
      `a=${direction}`,
      'a=rtcp-mux',
      `a=rtpmap:${opusPt} opus/48000/2`,
      `a=fmtp:${opusPt} ${OPUS_FMTP}`,
    );
    if (te) lines.push(`a=rtpmap:${te.pt} telephone-event/${te.clockRate}`);
    if (s === sendSection) lines.push(...ssrcLines(local));
  }
  return {
    sdp: `${lines.join('\r\n')}\r\n`,
    sendIndex: sendSection?.index,
    codecIndex: codecSection.index,
    opusPt: codecSection.opusPt!,
    telephoneEvent: pickTelephoneEvent(codecSection.telephoneEvents),
  };
}
