/**
 * The PBX side's SDP offer/answer state of one call: our session id and version, our direction, the SDES keys
 * (SdesSession), and what the PBX negotiated. Pure (no sockets): the call's media applies the result (`PbxRemoteAudio`
 * and the SRTP keys) to its RTP socket; a media thread's main-thread stand-in negotiates here and sends only the
 * result to the thread.
 */
import type { Logger } from 'pino';
import type { PbxCodecName, SrtpMode } from '../calls/ports.js';
import type { PbxSrtpKeys } from './PbxSrtp.js';
import type { PbxCodec, PbxRemoteAudio, PbxTelephoneEvent, SdpDirection } from './pbxSdp.js';
import {
  OFFER_PTS,
  answerDirection,
  chooseCodec,
  chooseTelephoneEvent,
  codecFor,
  parsePbxSdp,
  remoteAudioOf,
  writePbxSdp,
} from './pbxSdp.js';
import { SdesSession } from './SdesSession.js';

export interface PbxNegotiationOptions {
  /** Codec preference toward the PBX. */
  codecs: readonly PbxCodecName[];
  /** Address written into our SDP. */
  announcedIp: string;
  /** Our RTP port toward the PBX. */
  port: number;
  /** SRTP toward the PBX. Default 'off'. */
  srtp?: SrtpMode;
  log: Logger;
}

/** What one negotiation step decided: where and how the PBX's audio goes, and the SRTP keys (undefined: plain). */
export interface PbxNegotiated {
  remote: PbxRemoteAudio;
  srtp: PbxSrtpKeys | undefined;
}

export class PbxNegotiation {
  readonly #o: PbxNegotiationOptions;
  readonly #sdes: SdesSession;
  readonly #sessionId = String(Math.floor(Math.random() * 1e12));
  #sdpVersion = 0;
  #remote: PbxRemoteAudio | undefined;
  /** Our direction in the last SDP we wrote. */
  #localDirection: SdpDirection = 'sendrecv';

  constructor(options: PbxNegotiationOptions) {
    this.#o = { ...options, codecs: [...options.codecs] };
    this.#sdes = new SdesSession(options.srtp ?? 'off', options.log);
  }

  /** What the PBX negotiated last; undefined before its first answer or offer. */
  get remote(): PbxRemoteAudio | undefined {
    return this.#remote;
  }

  /** The SRTP suite in use toward the PBX; undefined for plain RTP. */
  get srtpSuite(): string | undefined {
    return this.#sdes.suite;
  }

  /** Our offer, codecs in the configured preference. */
  createOffer(): string {
    const codecs: PbxCodec[] = this.#o.codecs.map((name) => codecFor(name, OFFER_PTS[name]));
    const telephoneEvents: PbxTelephoneEvent[] = [{ pt: OFFER_PTS.te8000, clockRate: 8000 }];
    if (codecs.some((c) => c.name === 'opus')) telephoneEvents.push({ pt: OFFER_PTS.te48000, clockRate: 48000 });
    this.#localDirection = 'sendrecv';
    return writePbxSdp({
      sessionId: this.#sessionId,
      version: this.#sdpVersion++,
      address: this.#o.announcedIp,
      port: this.#o.port,
      codecs,
      telephoneEvents,
      direction: 'sendrecv',
      rtcpMux: true,
      crypto: this.#sdes.offer(),
    });
  }

  /** The PBX's answer to our offer. Throws MediaError('NO_COMMON_CODEC' | 'SDP_INVALID' | 'SRTP_NEGOTIATION'). */
  applyAnswer(sdp: string): PbxNegotiated {
    const parsed = parsePbxSdp(sdp);
    const codec = chooseCodec(parsed, this.#o.codecs);
    const srtp = this.#sdes.answered(parsed);
    this.#remote = remoteAudioOf(parsed, codec, chooseTelephoneEvent(parsed, codec));
    return { remote: this.#remote, srtp };
  }

  /** Our answer to the PBX's offer (keeping the current codec when the PBX still offers it). */
  answerOffer(sdp: string): PbxNegotiated & { answer: string } {
    const parsed = parsePbxSdp(sdp);
    const codec = chooseCodec(parsed, this.#o.codecs, this.#remote?.codec.name);
    const telephoneEvent = chooseTelephoneEvent(parsed, codec);
    const srtp = this.#sdes.answer(parsed);
    const remote = remoteAudioOf(parsed, codec, telephoneEvent);
    this.#remote = remote;
    this.#localDirection = answerDirection(parsed.direction);
    const answer = writePbxSdp({
      sessionId: this.#sessionId,
      version: this.#sdpVersion++,
      address: this.#o.announcedIp,
      port: this.#o.port,
      codecs: [codec],
      telephoneEvents: telephoneEvent ? [telephoneEvent] : [],
      direction: this.#localDirection,
      rtcpMux: parsed.rtcpMux,
      protocol: parsed.audio.protocol,
      ...(srtp ? { crypto: [srtp.crypto] } : {}),
      audioIndex: parsed.audioIndex,
      rejected: parsed.all.flatMap((media, index) => (index === parsed.audioIndex ? [] : [{ index, media }])),
    });
    return { answer, remote, srtp: srtp?.keys };
  }
}
