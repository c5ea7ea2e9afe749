/**
 * A stand-in for Meta's media servers, on mediasoup: its WebRtcTransport is ICE-lite and acts as DTLS server,
 * exactly Meta's role. It answers the business's offer with an SDP shaped like Meta's sample answer, sends and
 * captures Opus through a DirectTransport (tones, DTMF), sends renegotiation offers with a second m=audio like
 * Meta's media_update, and reports calls that receive no media (Meta ends those after about 20 s).
 */
import { randomBytes } from 'node:crypto';
import { accessSync, constants as fsConstants } from 'node:fs';
import { isIPv6 } from 'node:net';
import { OpusDecoder, OpusEncoder } from '../../media/dsp/opus.js';
import type { types as ms } from 'mediasoup';
import type { Logger } from 'pino';
import sdpTransform from 'sdp-transform';
import { InvalidStateError, MediaError } from '../../core/errors.js';
import { TypedEmitter } from '../../core/TypedEmitter.js';
import {
  FRAME_SAMPLES,
  InbandDtmfDetector,
  SineSource,
  buildRtpPacket,
  dtmfFrequencies,
  parseRtpPacket,
} from './audio.js';
import { MediaRelay, type MediaRelayImpairment } from './MediaRelay.js';

export const DEFAULT_WORKER_BIN = '/usr/lib/x86_64-linux-gnu/mediasoup/mediasoup-worker';
/** Meta's sample answer fmtp for Opus. */
const META_OPUS_FMTP = 'minptime=10;useinbandfec=1;usedtx=1;maxplaybackrate=16000;maxaveragebitrate=20000';
/** Longest capture kept by receivedPcm() (samples at 48 kHz): 2 minutes. */
const MAX_CAPTURE_SAMPLES = 48000 * 120;

type MediasoupModule = typeof import('mediasoup');

async function loadMediasoup(workerBin: string | undefined): Promise<MediasoupModule> {
  const bin = workerBin ?? process.env.MEDIASOUP_WORKER_BIN ?? DEFAULT_WORKER_BIN;
  try {
    accessSync(bin, fsConstants.X_OK);
  } catch (err) {
    throw new MediaError('WORKER_BIN_MISSING', `mediasoup worker binary not executable at ${bin}`, { cause: err });
  }
  // mediasoup reads the variable when it loads; set it before the first import.
  process.env.MEDIASOUP_WORKER_BIN ??= bin;
  const mod = (await import('mediasoup')) as Partial<MediasoupModule> & { default?: MediasoupModule };
  return mod.createWorker !== undefined ? (mod as MediasoupModule) : mod.default!;
}

export interface MetaMediaServerOptions {
  /** Address the WebRtcTransports listen on (e.g. 127.0.0.1). */
  listenIp: string;
  /** Address written into candidates instead of listenIp. */
  announcedIp?: string;
  log: Logger;
  rtcMinPort?: number;
  rtcMaxPort?: number;
  /** mediasoup worker binary; default MEDIASOUP_WORKER_BIN, else the Debian path. */
  workerBin?: string;
  /**
   * Put a MediaRelay in front of each session's UDP candidate, so that a test can drop the business's packets on
   * their way in (`session.impair`). Default false.
   */
  relay?: boolean;
}

export interface AnswerOptions {
  /** Keep telephone-event/48000 in the answer (Meta's sample answer is Opus only). Default false. */
  telephoneEvent?: boolean;
  /** Also offer ICE-TCP passive candidates, as Meta does (port is mediasoup's, not 3478). Default false. */
  tcpCandidates?: boolean;
  /** Emit 'no-media' when no RTP arrived from the business for this long (ms). Default: never. */
  noMediaTimeoutMs?: number;
}

export interface ReceivedDtmf {
  digit: string;
  durationMs: number;
  via: 'rfc4733' | 'inband';
}

/**
 * An RFC 4733 event from the business, seen through mediasoup's producer trace: the header only (mediasoup does not
 * hand telephone-event payloads to any consumer), so the digit itself is unknown.
 */
export interface ReceivedTelephoneEvent {
  /** RTP timestamp shared by all packets of the event. */
  timestamp: number;
  /** Marker bit of the first packet seen (set on the first packet of an event). */
  marker: boolean;
  packets: number;
}

export interface MetaMediaSessionEvents {
  /** DTLS connected: SRTP flows. */
  connected: [];
  /** ICE or DTLS failed / closed under the session. */
  failed: [Error];
  /** No RTP from the business for noMediaTimeoutMs. */
  'no-media': [];
  closed: [];
}

/** The business's SDP (offer or answer), reduced to what the simulator uses. */
interface BusinessSdp {
  mid: string;
  setup: string | undefined;
  opusPt: number;
  /** telephone-event/48000 PT the business offered, if any. */
  telephoneEventPt: number | undefined;
  fingerprint: { algorithm: string; value: string };
  ssrc: number;
}

function parseBusinessSdp(sdp: string): BusinessSdp {
  const session = sdpTransform.parse(sdp);
  const audio = (session.media ?? []).find((m) => m.type === 'audio' && m.port !== 0);
  if (audio === undefined) throw new MediaError('SDP_INVALID', 'SDP has no audio section');
  const opus = audio.rtp.find((r) => r.codec.toLowerCase() === 'opus' && r.rate === 48000);
  if (opus === undefined) throw new MediaError('SDP_INVALID', 'SDP has no Opus/48000');
  const te = audio.rtp.find((r) => r.codec.toLowerCase() === 'telephone-event' && r.rate === 48000);
  const fp = audio.fingerprint ?? session.fingerprint;
  if (fp === undefined) throw new MediaError('SDP_INVALID', 'SDP has no fingerprint');
  const ssrc = audio.ssrcs?.[0]?.id;
  if (ssrc === undefined) throw new MediaError('SDP_INVALID', 'SDP has no a=ssrc');
  return {
    mid: audio.mid === undefined ? '0' : String(audio.mid),
    setup: audio.setup ?? session.setup,
    opusPt: opus.payload,
    telephoneEventPt: te?.payload,
    fingerprint: { algorithm: fp.type.toLowerCase(), value: fp.hash },
    ssrc: Number(ssrc),
  };
}

export class MetaMediaServer {
  readonly #options: MetaMediaServerOptions;
  readonly #worker: ms.Worker;
  readonly #log: Logger;
  readonly #sessions = new Set<MetaMediaSession>();
  #closed = false;

  private constructor(options: MetaMediaServerOptions, worker: ms.Worker) {
    this.#options = options;
    this.#worker = worker;
    this.#log = options.log;
  }

  /** Start one mediasoup worker; resolves once it runs. */
  static async create(options: MetaMediaServerOptions): Promise<MetaMediaServer> {
    const mediasoup = await loadMediasoup(options.workerBin);
    const worker = await mediasoup.createWorker({
      logLevel: 'warn',
      ...(options.rtcMinPort !== undefined ? { rtcMinPort: options.rtcMinPort } : {}),
      ...(options.rtcMaxPort !== undefined ? { rtcMaxPort: options.rtcMaxPort } : {}),
    });
    const log = options.log.child({ component: 'meta-media' });
    const server = new MetaMediaServer({ ...options, log }, worker);
    worker.on('died', (err: Error) => {
      log.error({ err }, 'mediasoup worker died');
      server.close();
    });
    return server;
  }

  get closed(): boolean {
    return this.#closed;
  }

  get sessionCount(): number {
    return this.#sessions.size;
  }

  /** Answer the business's offer like Meta does (ICE-lite, setup:passive, Opus only unless asked). */
  async answerOffer(offerSdp: string, options: AnswerOptions = {}): Promise<{ sdp: string; session: MetaMediaSession }> {
    if (this.#closed) throw new InvalidStateError('MetaMediaServer is closed');
    const offer = parseBusinessSdp(offerSdp);
    const telephoneEventPt = options.telephoneEvent ? offer.telephoneEventPt : undefined;
    const session = await this.#createSession(offer.mid, offer.opusPt, telephoneEventPt, options);
    try {
      return { sdp: await session.answer(offer), session };
    } catch (err) {
      session.close();
      throw err;
    }
  }

  /**
   * Offer first, as Meta may do (a connect carrying an offer, WhatsApp-style): ICE-lite, a=setup:actpass, Opus 111
   * (and telephone-event/48000 as 110 when asked). Apply the business's answer with session.applyAnswer().
   */
  async createOffer(options: AnswerOptions = {}): Promise<{ sdp: string; session: MetaMediaSession }> {
    if (this.#closed) throw new InvalidStateError('MetaMediaServer is closed');
    const session = await this.#createSession('0', 111, options.telephoneEvent ? 110 : undefined, options);
    try {
      return { sdp: await session.offer(), session };
    } catch (err) {
      session.close();
      throw err;
    }
  }

  async #createSession(
    mid: string,
    opusPt: number,
    telephoneEventPt: number | undefined,
    options: AnswerOptions,
  ): Promise<MetaMediaSession> {
    const mediaCodecs: ms.RtpCodecCapability[] = [
      { kind: 'audio', mimeType: 'audio/opus', clockRate: 48000, channels: 2, preferredPayloadType: opusPt },
    ];
    if (telephoneEventPt !== undefined) {
      mediaCodecs.push({
        kind: 'audio',
        mimeType: 'audio/telephone-event',
        clockRate: 48000,
        preferredPayloadType: telephoneEventPt,
      });
    }
    const router = await this.#worker.createRouter({ mediaCodecs });
    const session = new MetaMediaSession({
      router,
      mid,
      opusPt,
      telephoneEventPt,
      listenIp: this.#options.listenIp,
      ...(this.#options.announcedIp !== undefined ? { announcedIp: this.#options.announcedIp } : {}),
      tcpCandidates: options.tcpCandidates ?? false,
      relay: this.#options.relay ?? false,
      ...(options.noMediaTimeoutMs !== undefined ? { noMediaTimeoutMs: options.noMediaTimeoutMs } : {}),
      log: this.#log.child({ session: router.id }),
    });
    this.#sessions.add(session);
    session.on('closed', () => this.#sessions.delete(session));
    return session;
  }

  /** Idempotent: closes every session and the worker. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const session of [...this.#sessions]) session.close();
    this.#worker.close();
  }
}

interface SessionInit {
  router: ms.Router;
  mid: string;
  opusPt: number;
  telephoneEventPt: number | undefined;
  listenIp: string;
  announcedIp?: string;
  tcpCandidates: boolean;
  relay: boolean;
  noMediaTimeoutMs?: number;
  log: Logger;
}

export class MetaMediaSession extends TypedEmitter<MetaMediaSessionEvents> {
  readonly #init: SessionInit;
  readonly #log: Logger;
  readonly #router: ms.Router;
  #transport: ms.WebRtcTransport | undefined;
  /** In front of the UDP candidate, when the server has relays. */
  #relay: MediaRelay | undefined;
  #direct: ms.DirectTransport | undefined;
  /** Business -> us: producer on the WebRtcTransport, consumer on the DirectTransport. */
  #producer: ms.Producer | undefined;
  #capture: ms.Consumer | undefined;
  /** Us -> business: producer on the DirectTransport, consumer on the WebRtcTransport. */
  #source: ms.Producer | undefined;
  #sink: ms.Consumer | undefined;
  #state: 'new' | 'connected' | 'closed' = 'new';
  readonly #connected: Promise<void>;
  #resolveConnected!: () => void;
  #rejectConnected!: (err: Error) => void;
  #sdpVersion = 2;
  readonly #sessionId = String(randomBytes(6).readUIntBE(0, 6));
  #offerMid: string;
  #pendingOffer: { secondMLine: boolean } | undefined;
  #awaitingAnswer = false;
  #businessSsrc: number | undefined;
  // Sending
  readonly #encoder = new OpusEncoder({ channels: 1, sample_rate: 48000, application: 'voip' });
  readonly #sendSsrc = randomBytes(4).readUInt32BE(0);
  #seq = randomBytes(2).readUInt16BE(0);
  #timestamp = randomBytes(4).readUInt32BE(0);
  #tone: SineSource | undefined;
  #dtmfQueue: Array<{ frames: number; sent: number; source: SineSource }> = [];
  #sendTimer: NodeJS.Timeout | undefined;
  #sendClockStart = 0;
  #framesSent = 0;
  // Receiving
  readonly #decoder = new OpusDecoder({ channels: 1, sample_rate: 48000 });
  #pcmChunks: Int16Array[] = [];
  #pcmSamples = 0;
  readonly #dtmf: ReceivedDtmf[] = [];
  readonly #inband: InbandDtmfDetector;
  #telephoneEvents: ReceivedTelephoneEvent[] = [];
  #idleTimer: NodeJS.Timeout | undefined;
  #packetsReceived = 0;
  #packetsSent = 0;
  #receivedPts = new Map<number, number>();
  #noMediaTimer: NodeJS.Timeout | undefined;

  constructor(init: SessionInit) {
    super();
    this.#init = init;
    this.#router = init.router;
    this.#log = init.log;
    this.#offerMid = init.mid;
    this.#connected = new Promise((resolve, reject) => {
      this.#resolveConnected = resolve;
      this.#rejectConnected = reject;
    });
    // A rejection nobody awaits must not crash the process.
    this.#connected.catch(() => undefined);
    this.#inband = new InbandDtmfDetector((digit, durationMs) => {
      this.#dtmf.push({ digit, durationMs, via: 'inband' });
    });
  }

  get closed(): boolean {
    return this.#state === 'closed';
  }

  /** RTP packets received from the business (all payload types). */
  get packetsReceived(): number {
    return this.#packetsReceived;
  }

  get packetsSent(): number {
    return this.#packetsSent;
  }

  /** Count of received packets per payload type. */
  receivedPayloadTypes(): Map<number, number> {
    return new Map(this.#receivedPts);
  }

  /** True when telephone-event/48000 was kept in the answer. */
  get telephoneEvent(): boolean {
    return this.#init.telephoneEventPt !== undefined;
  }

  /** Resolves when DTLS is connected; rejects if the session fails or closes first. */
  whenConnected(): Promise<void> {
    return this.#connected;
  }

  /** Answer mode (server.answerOffer): transports, the business's stream, DTLS server; returns Meta's answer. */
  async answer(offer: BusinessSdp): Promise<string> {
    await this.#createTransports();
    await this.#connectBusiness(offer);
    return this.#sdp({
      version: 1,
      setup: 'passive',
      sections: [{ mid: this.#offerMid, direction: 'sendrecv', sending: true }],
    });
  }

  /** Offer mode (server.createOffer): transports only; the business's answer comes through applyAnswer(). */
  async offer(): Promise<string> {
    await this.#createTransports();
    this.#awaitingAnswer = true;
    return this.#sdp({
      version: 1,
      setup: 'actpass',
      sections: [{ mid: this.#offerMid, direction: 'sendrecv', sending: true }],
    });
  }

  /** Apply the business's answer to server.createOffer(): it must take the DTLS client role (a=setup:active). */
  async applyAnswer(sdp: string): Promise<void> {
    this.#assertOpen();
    if (!this.#awaitingAnswer) throw new InvalidStateError('no initial offer pending');
    const answer = parseBusinessSdp(sdp);
    if (answer.setup !== 'active') {
      throw new MediaError('SDP_INVALID', `answer must be a=setup:active (we never start DTLS), got ${answer.setup}`);
    }
    this.#awaitingAnswer = false;
    await this.#connectBusiness(answer);
  }

  async #createTransports(): Promise<void> {
    const { router, listenIp, announcedIp } = this.#init;
    const transport = await router.createWebRtcTransport({
      listenIps: [{ ip: listenIp, ...(announcedIp !== undefined ? { announcedIp } : {}) }],
      enableUdp: true,
      enableTcp: this.#init.tcpCandidates,
      preferUdp: true,
    });
    this.#transport = transport;
    transport.on('dtlsstatechange', (state: ms.DtlsState) => {
      this.#log.debug({ state }, 'DTLS state');
      if (state === 'connected' && this.#state === 'new') {
        this.#state = 'connected';
        this.#resolveConnected();
        this.safeEmit('connected');
      } else if (state === 'failed' || state === 'closed') {
        this.#failed(new MediaError('DTLS_FAILED', `DTLS ${state}`));
      }
    });
    transport.on('icestatechange', (state: ms.IceState) => this.#log.debug({ state }, 'ICE state'));
    if (this.#init.relay) {
      const udp = transport.iceCandidates.find((c) => c.protocol === 'udp')!;
      this.#relay = await MediaRelay.create(listenIp, { ip: listenIp, port: udp.port });
      if (this.#state === 'closed') this.#relay.close();
    }
    this.#direct = await router.createDirectTransport();
    this.#source = await this.#direct.produce({
      kind: 'audio',
      rtpParameters: { codecs: this.#codecParameters(), encodings: [{ ssrc: this.#sendSsrc }] },
    });
    this.#sink = await this.#consumeToBusiness();
  }

  async #connectBusiness(remote: BusinessSdp): Promise<void> {
    await this.#produceFromBusiness(remote.ssrc);
    await this.#transport!.connect({
      dtlsParameters: {
        // The business is the DTLS client; mediasoup becomes the server, as Meta's media servers are.
        role: 'client',
        fingerprints: [
          { algorithm: remote.fingerprint.algorithm as ms.DtlsFingerprint['algorithm'], value: remote.fingerprint.value },
        ],
      },
    });
    this.#armNoMedia();
  }

  /**
   * Lose the business's RTP on its way in (the server was created with `relay`): `dropToMeta(i)` picks the packets,
   * counted from now. Returns the relay, whose `dropped` counts them.
   */
  impair(o: MediaRelayImpairment): MediaRelay {
    this.#assertOpen();
    if (!this.#relay) throw new InvalidStateError('this media server has no relays (MetaMediaServerOptions.relay)');
    this.#relay.impair(o);
    return this.#relay;
  }

  /** Start sending a continuous sine tone (replaces the current one). */
  startTone(hz: number, amplitude = 0.3): void {
    this.#assertOpen();
    this.#tone = new SineSource([hz], amplitude);
    this.#ensureSending();
  }

  stopTone(): void {
    this.#tone = undefined;
  }

  /**
   * Send a DTMF digit as an in-band dual tone in the Opus stream, followed by 40 ms of silence. Meta's answers
   * carry no telephone-event; and even when this simulator keeps it in the SDP, mediasoup 3.8.4 consumers forward
   * no telephone-event packets, so digits from this side are always in-band.
   */
  sendDtmf(digit: string, durationMs = 160): void {
    this.#assertOpen();
    const source = new SineSource(dtmfFrequencies(digit), 0.4);
    const frames = Math.max(2, Math.round(durationMs / 20));
    this.#dtmfQueue.push({ frames, sent: 0, source });
    this.#ensureSending();
  }

  /** Decoded audio received from the business: 48 kHz mono. */
  receivedPcm(): Int16Array {
    const out = new Int16Array(this.#pcmSamples);
    let offset = 0;
    for (const chunk of this.#pcmChunks) {
      out.set(chunk, offset);
      offset += chunk.length;
    }
    return out;
  }

  /** Forget captured audio and digits. */
  clearReceived(): void {
    this.#pcmChunks = [];
    this.#pcmSamples = 0;
    this.#dtmf.length = 0;
    this.#telephoneEvents = [];
  }

  /** Digits detected in the audio from the business (in-band tones). */
  receivedDtmf(): ReceivedDtmf[] {
    return [...this.#dtmf];
  }

  /** RFC 4733 events from the business, when telephone-event was negotiated (headers only, see the type). */
  receivedTelephoneEvents(): ReceivedTelephoneEvent[] {
    return this.#telephoneEvents.map((e) => ({ ...e }));
  }

  /**
   * An offer like Meta's media_update: same ICE/DTLS transport, a=setup:actpass, and with secondMLine two
   * m=audio sections: mid 0 recvonly (Meta receives on it) and mid 1 sendonly (Meta sends on it).
   */
  renegotiationOffer(options: { secondMLine: boolean } = { secondMLine: true }): string {
    this.#assertOpen();
    this.#pendingOffer = { secondMLine: options.secondMLine };
    const version = this.#sdpVersion++;
    if (!options.secondMLine) {
      return this.#sdp({ version, setup: 'actpass', sections: [{ mid: this.#offerMid, direction: 'sendrecv', sending: true }] });
    }
    return this.#sdp({
      version,
      setup: 'actpass',
      sections: [
        { mid: this.#offerMid, direction: 'recvonly', sending: false },
        { mid: String(Number(this.#offerMid) + 1 || 1), direction: 'sendonly', sending: true },
      ],
    });
  }

  /** Apply the business's answer to renegotiationOffer(): follow its sending SSRC and restart our stream. */
  async applyRenegotiationAnswer(sdp: string): Promise<void> {
    this.#assertOpen();
    const pending = this.#pendingOffer;
    if (pending === undefined) throw new InvalidStateError('no renegotiation offer pending');
    this.#pendingOffer = undefined;
    const session = sdpTransform.parse(sdp);
    const media = session.media ?? [];
    const setup = media[0]?.setup ?? session.setup;
    if (setup !== 'active') {
      throw new MediaError('SDP_INVALID', `answer must be a=setup:active (we never start DTLS), got ${setup}`);
    }
    const sending = media.find((m) => m.port !== 0 && (m.direction === 'sendonly' || m.direction === 'sendrecv'));
    const ssrc = sending?.ssrcs?.[0]?.id;
    if (sending === undefined || ssrc === undefined) {
      throw new MediaError('SDP_INVALID', 'answer has no sending audio section with a=ssrc');
    }
    if (pending.secondMLine) {
      const expected = media[0];
      if (expected?.direction !== 'sendonly') {
        throw new MediaError('SDP_INVALID', `answer sends on the wrong m-line (mid ${sending.mid})`);
      }
    }
    if (Number(ssrc) !== this.#businessSsrc) {
      this.#producer?.close();
      this.#capture?.close();
      await this.#produceFromBusiness(Number(ssrc));
    }
    this.#log.info({ ssrc, secondMLine: pending.secondMLine }, 'renegotiation applied');
  }

  /**
   * Hear the business's audio under another SSRC than its SDP announced. A relay that transcodes (rtpengine) sends
   * under an SSRC of its own that no SDP carries; Meta's SFU binds a receiver to the signalled SSRC only, so such
   * media is lost. The benchmark learns the SSRC from the wire and rebinds with this, so that both engines it
   * compares do the same work.
   */
  async acceptBusinessSsrc(ssrc: number): Promise<void> {
    this.#assertOpen();
    if (ssrc === this.#businessSsrc) return;
    this.#producer?.close();
    this.#capture?.close();
    await this.#produceFromBusiness(ssrc);
    this.#log.info({ ssrc }, 'business audio rebound to the SSRC heard');
  }

  /** Idempotent. */
  close(): void {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    clearInterval(this.#sendTimer);
    clearTimeout(this.#noMediaTimer);
    clearTimeout(this.#idleTimer);
    this.#sendTimer = undefined;
    this.#noMediaTimer = undefined;
    this.#inband.flush();
    this.#relay?.close();
    this.#encoder.close();
    this.#decoder.close();
    this.#rejectConnected(new InvalidStateError('session closed'));
    // Closing the router closes its transports, producers and consumers.
    this.#router.close();
    this.safeEmit('closed');
    this.removeAllListeners();
  }

  // -------------------------------------------------------------------------------------------------------------

  #assertOpen(): void {
    if (this.#state === 'closed') throw new InvalidStateError('MetaMediaSession is closed');
  }

  #failed(err: Error): void {
    if (this.#state === 'closed') return;
    this.#log.warn({ err }, 'session failed');
    this.#rejectConnected(err);
    this.safeEmit('failed', err);
  }

  #codecParameters(): ms.RtpCodecParameters[] {
    const codecs: ms.RtpCodecParameters[] = [
      {
        mimeType: 'audio/opus',
        payloadType: this.#init.opusPt,
        clockRate: 48000,
        channels: 2,
        parameters: { minptime: 10, useinbandfec: 1 },
      },
    ];
    if (this.#init.telephoneEventPt !== undefined) {
      codecs.push({ mimeType: 'audio/telephone-event', payloadType: this.#init.telephoneEventPt, clockRate: 48000 });
    }
    return codecs;
  }

  #rtpCapabilities(): ms.RtpCapabilities {
    return { codecs: this.#router.rtpCapabilities.codecs ?? [], headerExtensions: [] };
  }

  async #produceFromBusiness(ssrc: number): Promise<void> {
    const producer = await this.#transport!.produce({
      kind: 'audio',
      rtpParameters: { codecs: this.#codecParameters(), encodings: [{ ssrc }] },
    });
    const capture = await this.#direct!.consume({ producerId: producer.id, rtpCapabilities: this.#rtpCapabilities() });
    capture.on('rtp', (packet: Buffer) => this.#onRtp(packet));
    const tePt = this.#init.telephoneEventPt;
    if (tePt !== undefined) {
      // mediasoup forwards no telephone-event to consumers; the producer's trace still reports each packet's header.
      await producer.enableTraceEvent(['rtp']);
      producer.on('trace', (trace: ms.ProducerTraceEventData) => {
        const info = trace.info as { payloadType?: number; timestamp?: number; marker?: boolean; sequenceNumber?: number };
        if (trace.type === 'rtp' && info.payloadType === tePt) this.#onTelephoneEventHeader(info);
      });
    }
    this.#producer = producer;
    this.#businessSsrc = ssrc;
    this.#capture = capture;
  }

  async #consumeToBusiness(): Promise<ms.Consumer> {
    return this.#transport!.consume({ producerId: this.#source!.id, rtpCapabilities: this.#rtpCapabilities() });
  }

  #sdp(spec: {
    version: number;
    setup: 'passive' | 'actpass';
    sections: Array<{ mid: string; direction: string; sending: boolean }>;
  }): string {
    const transport = this.#transport!;
    const found = transport.iceCandidates.find((c) => c.protocol === 'udp')!;
    const relayPort = this.#relay?.port;
    const udp = relayPort !== undefined ? { ...found, port: relayPort } : found;
    const ipv = isIPv6(udp.ip) ? 'IP6' : 'IP4';
    const fingerprint =
      transport.dtlsParameters.fingerprints.find((f) => f.algorithm === 'sha-256') ??
      transport.dtlsParameters.fingerprints[0]!;
    const opusPt = this.#init.opusPt;
    const tePt = this.#init.telephoneEventPt;
    const pts = tePt === undefined ? `${opusPt}` : `${opusPt} ${tePt}`;
    const sinkSsrc = this.#sink?.rtpParameters.encodings?.[0]?.ssrc;
    const lines = [
      'v=0',
      `o=- ${this.#sessionId} ${spec.version} IN ${ipv} ${udp.ip}`,
      's=-',
      't=0 0',
      'a=ice-lite',
      `a=group:BUNDLE ${spec.sections.map((s) => s.mid).join(' ')}`,
      'a=msid-semantic: WMS *',
    ];
    for (const section of spec.sections) {
      lines.push(`m=audio ${udp.port} UDP/TLS/RTP/SAVPF ${pts}`, `c=IN ${ipv} ${udp.ip}`);
      for (const c of transport.iceCandidates.map((c) => (c.protocol === 'udp' ? { ...c, port: udp.port } : c))) {
        let line = `a=candidate:${c.foundation} 1 ${c.protocol} ${c.priority} ${c.ip} ${c.port} typ ${c.type}`;
        if (c.protocol === 'tcp') line += ` tcptype ${c.tcpType ?? 'passive'}`;
        lines.push(line);
      }
      lines.push(
        `a=ice-ufrag:${transport.iceParameters.usernameFragment}`,
        `a=ice-pwd:${transport.iceParameters.password}`,
        `a=fingerprint:${fingerprint.algorithm} ${fingerprint.value.toUpperCase()}`,
        `a=setup:${spec.setup}`,
        `a=mid:${section.mid}`,
        `a=${section.direction}`,
        'a=rtcp-mux',
        `a=rtpmap:${opusPt} opus/48000/2`,
        `a=fmtp:${opusPt} ${META_OPUS_FMTP}`,
      );
      if (tePt !== undefined) lines.push(`a=rtpmap:${tePt} telephone-event/48000`, `a=fmtp:${tePt} 0-15`);
      if (section.sending && sinkSsrc !== undefined) lines.push(`a=ssrc:${sinkSsrc} cname:meta-media`);
    }
    return `${lines.join('\r\n')}\r\n`;
  }

  #armNoMedia(): void {
    const ms = this.#init.noMediaTimeoutMs;
    if (ms === undefined || this.#state === 'closed') return;
    clearTimeout(this.#noMediaTimer);
    this.#noMediaTimer = setTimeout(() => {
      this.#noMediaTimer = undefined;
      if (this.#state === 'closed') return;
      this.#log.info({ ms }, 'no media from the business');
      this.safeEmit('no-media');
    }, ms);
  }

  #onRtp(packet: Buffer): void {
    const rtp = parseRtpPacket(packet);
    if (rtp === undefined) return;
    this.#packetsReceived++;
    this.#receivedPts.set(rtp.payloadType, (this.#receivedPts.get(rtp.payloadType) ?? 0) + 1);
    this.#armNoMedia();
    if (rtp.payloadType !== this.#init.opusPt || rtp.payload.length === 0) return;
    let pcm: Int16Array;
    try {
      const decoded = this.#decoder.decode(rtp.payload);
      pcm = new Int16Array(decoded.buffer, decoded.byteOffset, decoded.byteLength / 2).slice();
    } catch (err) {
      this.#log.debug({ err }, 'Opus decode failed');
      return;
    }
    if (this.#pcmSamples + pcm.length <= MAX_CAPTURE_SAMPLES) {
      this.#pcmChunks.push(pcm);
      this.#pcmSamples += pcm.length;
    }
    this.#inband.push(pcm);
    // A digit at the end of a talk spurt (then DTX) is reported once the stream pauses.
    clearTimeout(this.#idleTimer);
    this.#idleTimer = setTimeout(() => this.#inband.flush(), 200);
  }

  #onTelephoneEventHeader(info: { timestamp?: number; marker?: boolean }): void {
    this.#armNoMedia();
    const last = this.#telephoneEvents.at(-1);
    if (last !== undefined && last.timestamp === info.timestamp) {
      last.packets++;
      return;
    }
    this.#telephoneEvents.push({ timestamp: info.timestamp ?? 0, marker: info.marker ?? false, packets: 1 });
  }

  #ensureSending(): void {
    if (this.#sendTimer !== undefined) return;
    this.#sendClockStart = performance.now();
    this.#framesSent = 0;
    // Catch up on timer drift so the stream keeps 50 packets per second.
    this.#sendTimer = setInterval(() => {
      const due = Math.floor((performance.now() - this.#sendClockStart) / 20) + 1;
      let budget = Math.min(due - this.#framesSent, 5);
      while (budget-- > 0) {
        this.#framesSent++;
        if (!this.#sendFrame()) {
          clearInterval(this.#sendTimer);
          this.#sendTimer = undefined;
          return;
        }
      }
    }, 20);
  }

  /** Send one 20 ms frame; false when there is nothing left to send. */
  #sendFrame(): boolean {
    if (this.#state === 'closed' || this.#source === undefined) return false;
    const dtmf = this.#dtmfQueue[0];
    if (dtmf !== undefined) {
      // The digit, then two frames of silence so a detector sees where it ends.
      this.#sendOpus(dtmf.sent < dtmf.frames ? dtmf.source.next() : new Int16Array(FRAME_SAMPLES));
      dtmf.sent++;
      if (dtmf.sent >= dtmf.frames + 2) this.#dtmfQueue.shift();
      return true;
    }
    if (this.#tone !== undefined) {
      this.#sendOpus(this.#tone.next());
      return true;
    }
    return false;
  }

  #sendOpus(pcm: Int16Array): void {
    this.sendOpusPayload(this.#encoder.encode(pcm));
  }

  /** Send one Opus payload as the next 20 ms frame (a bench that paces packets itself, encoded ahead). */
  sendOpusPayload(payload: Uint8Array): void {
    if (this.#state === 'closed' || this.#source === undefined) return;
    this.#send(this.#init.opusPt, false, this.#timestamp, payload);
    this.#timestamp = (this.#timestamp + FRAME_SAMPLES) >>> 0;
  }

  #send(pt: number, marker: boolean, timestamp: number, payload: Uint8Array): void {
    this.#seq = (this.#seq + 1) & 0xffff;
    const packet = buildRtpPacket(
      { payloadType: pt, marker, sequenceNumber: this.#seq, timestamp, ssrc: this.#sendSsrc },
      payload,
    );
    try {
      this.#source!.send(packet);
      this.#packetsSent++;
    } catch (err) {
      this.#log.debug({ err }, 'send failed');
    }
  }
}
