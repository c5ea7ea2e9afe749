/**
 * Interop harness for the Messenger leg: two independent ICE-lite, DTLS-passive peers that answer the leg's offer the
 * way Meta's media servers do (session-level a=ice-lite, a=setup:passive, UDP host candidates, Opus), each bridging
 * to a plain RTP side on a loopback UDP socket where the test injects and captures Opus audio.
 *
 * - rtpengine (Debian's rtpengine-daemon, OpenSSL DTLS server, multi-threaded packet handling), driven over ng;
 * - mediasoup 3.8.4's WebRtcTransport (its own OpenSSL DTLS server, single-threaded worker) with a PlainTransport.
 *
 * Shared by test/interop/*.test.ts and bench/interop.ts.
 */
import { createSocket, type Socket } from 'node:dgram';
import { Decoder, Encoder } from '@evan/opus';
import type { Logger } from 'pino';
import { analyzeTone, type ToneAnalysis } from '../../src/media/dsp/tone.js';
import type { RtpEndpoint } from '../../src/core/rtp.js';
import { buildRtp as buildRtpPacket } from '../../src/media/rtp.js';
import type { MessengerLeg } from '../../src/calls/ports.js';
import { startRtpengine, type RtpengineDaemon, type RtpengineOptions } from '../helpers/rtpengine.js';

export const OPUS_PT = 111;
export const SAMPLE_RATE = 48000;
export const FRAME_SAMPLES = 960;
export const MEDIASOUP_WORKER_BIN = '/usr/lib/x86_64-linux-gnu/mediasoup/mediasoup-worker';

// ---------------------------------------------------------------------------------------------------------------
// RTP and Opus audio
// ---------------------------------------------------------------------------------------------------------------

export function buildRtp(pt: number, seq: number, timestamp: number, ssrc: number, payload: Uint8Array): Buffer {
  return buildRtpPacket({ payloadType: pt, sequenceNumber: seq, timestamp, ssrc, payload });
}

/** Payload type and payload of an RTP packet (CSRCs, extension and padding handled); undefined if not RTP. */
export function parseRtp(packet: Buffer): { pt: number; ssrc: number; payload: Buffer } | undefined {
  if (packet.length < 12 || packet[0]! >> 6 !== 2) return undefined;
  const pt = packet[1]! & 0x7f;
  if (pt >= 64 && pt <= 95) return undefined; // RTCP
  let offset = 12 + 4 * (packet[0]! & 0x0f);
  if (packet[0]! & 0x10) {
    if (packet.length < offset + 4) return undefined;
    offset += 4 + 4 * packet.readUInt16BE(offset + 2);
  }
  let end = packet.length;
  if (packet[0]! & 0x20) end -= packet[end - 1]!;
  if (offset > end) return undefined;
  return { pt, ssrc: packet.readUInt32BE(8), payload: packet.subarray(offset, end) };
}

/** A sine, 20 ms of Opus at a time, sent as RTP through `send` every 20 ms until stop(). */
export class OpusToneSource {
  readonly #encoder = new Encoder({ channels: 1, sample_rate: SAMPLE_RATE, application: 'voip' });
  readonly #send: (packet: Buffer) => void;
  readonly #hz: number;
  readonly #ssrc: number;
  #phase = 0;
  #seq = Math.floor(Math.random() * 0xffff);
  #timestamp = Math.floor(Math.random() * 0xffffffff);
  #timer: NodeJS.Timeout | undefined;
  packetsSent = 0;

  constructor(send: (packet: Buffer) => void, options: { hz: number; ssrc: number }) {
    this.#send = send;
    this.#hz = options.hz;
    this.#ssrc = options.ssrc;
  }

  start(): this {
    if (this.#timer) return this;
    this.#timer = setInterval(() => this.#frame(), 20);
    this.#frame();
    return this;
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #frame(): void {
    const pcm = new Int16Array(FRAME_SAMPLES);
    const w = (2 * Math.PI * this.#hz) / SAMPLE_RATE;
    for (let n = 0; n < FRAME_SAMPLES; n++) pcm[n] = Math.round(8000 * Math.sin(this.#phase + w * n));
    this.#phase = (this.#phase + w * FRAME_SAMPLES) % (2 * Math.PI);
    const payload = this.#encoder.encode(pcm);
    this.#send(buildRtp(OPUS_PT, this.#seq, this.#timestamp, this.#ssrc, payload));
    this.#seq = (this.#seq + 1) & 0xffff;
    this.#timestamp = (this.#timestamp + FRAME_SAMPLES) >>> 0;
    this.packetsSent++;
  }
}

/** Decodes received Opus RTP (payload type 111) to 48 kHz mono PCM and analyses the last part of it. */
export class OpusSink {
  readonly #decoder = new Decoder({ channels: 1, sample_rate: SAMPLE_RATE });
  #chunks: Int16Array[] = [];
  packets = 0;

  push(packet: Buffer): void {
    const rtp = parseRtp(packet);
    if (rtp === undefined || rtp.pt !== OPUS_PT) return;
    this.packets++;
    const bytes = this.#decoder.decode(rtp.payload);
    this.#chunks.push(new Int16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2).slice());
    if (this.#chunks.length > 200) this.#chunks.shift();
  }

  /** Tone analysis of the last `ms` of decoded audio (undefined when less than that arrived). */
  analyzeLast(ms: number, expectedHz: number): ToneAnalysis | undefined {
    const want = (SAMPLE_RATE * ms) / 1000;
    const frames: Int16Array[] = [];
    let have = 0;
    for (let i = this.#chunks.length - 1; i >= 0 && have < want; i--) {
      frames.unshift(this.#chunks[i]!);
      have += this.#chunks[i]!.length;
    }
    if (have < want) return undefined;
    const pcm = new Int16Array(have);
    let offset = 0;
    for (const f of frames) {
      pcm.set(f, offset);
      offset += f.length;
    }
    return analyzeTone(pcm.subarray(have - want), SAMPLE_RATE, expectedHz);
  }
}

/** Tone into and out of any RtpEndpoint (the Messenger leg). */
export class EndpointAudio {
  readonly source: OpusToneSource;
  readonly sink = new OpusSink();
  readonly #unsubscribe: () => void;

  constructor(endpoint: RtpEndpoint, options: { hz: number; ssrc: number }) {
    this.source = new OpusToneSource((p) => endpoint.sendRtp(p), options);
    this.#unsubscribe = endpoint.onRtp((p) => this.sink.push(p));
  }

  stop(): void {
    this.source.stop();
    this.#unsubscribe();
  }
}

/** The plain RTP side of a peer: a UDP socket on loopback that sends a tone to the peer and decodes what it gets. */
export class PlainRtpSide {
  readonly sink = new OpusSink();
  #source: OpusToneSource | undefined;
  readonly #socket: Socket;
  #remote: { ip: string; port: number } | undefined;

  private constructor(socket: Socket) {
    this.#socket = socket;
    socket.on('message', (msg) => this.sink.push(msg));
  }

  static async open(): Promise<PlainRtpSide> {
    const socket = createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(0, '127.0.0.1', () => {
        socket.off('error', reject);
        resolve();
      });
    });
    socket.on('error', () => {
      /* ICMP port unreachable on loopback after the peer closed: nothing to do, the call is ending */
    });
    return new PlainRtpSide(socket);
  }

  get port(): number {
    return this.#socket.address().port;
  }

  setRemote(ip: string, port: number): void {
    this.#remote = { ip, port };
  }

  startTone(hz: number, ssrc: number): void {
    if (this.#source) return;
    this.#source = new OpusToneSource((p) => {
      if (this.#remote) this.#socket.send(p, this.#remote.port, this.#remote.ip);
    }, { hz, ssrc }).start();
  }

  get packetsSent(): number {
    return this.#source?.packetsSent ?? 0;
  }

  close(): void {
    this.#source?.stop();
    this.#socket.close();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Peers
// ---------------------------------------------------------------------------------------------------------------

export interface PeerCall {
  /** The peer's SDP answer for the leg (ICE-lite, setup:passive). */
  readonly answer: string;
  readonly plain: PlainRtpSide;
  close(): Promise<void>;
}

export interface InteropPeer {
  readonly name: string;
  answer(offerSdp: string, callId: string): Promise<PeerCall>;
  close(): Promise<void>;
}

function plainAnswerSdp(port: number): string {
  return [
    'v=0',
    'o=- 1 1 IN IP4 127.0.0.1',
    's=-',
    'c=IN IP4 127.0.0.1',
    't=0 0',
    `m=audio ${port} RTP/AVP ${OPUS_PT}`,
    `a=rtpmap:${OPUS_PT} opus/48000/2`,
    'a=sendrecv',
    '',
  ].join('\r\n');
}

/**
 * rtpengine between the leg (WebRTC side, tag A) and a plain RTP side (tag B). The offer makes rtpengine ICE-lite
 * toward A ("ICE-lite": "backward"), the answer makes it answer A with UDP/TLS/RTP/SAVPF, ICE, DTLS passive and
 * rtcp-mux, like Meta. Opus passes through untouched.
 */
export class RtpenginePeer implements InteropPeer {
  readonly name = 'rtpengine';
  readonly daemon: RtpengineDaemon;

  private constructor(daemon: RtpengineDaemon) {
    this.daemon = daemon;
  }

  static async start(options: RtpengineOptions = {}): Promise<RtpenginePeer> {
    return new RtpenginePeer(await startRtpengine(options));
  }

  async answer(offerSdp: string, callId: string): Promise<PeerCall> {
    const ng = this.daemon.ng;
    const plain = await PlainRtpSide.open();
    try {
      const towardPlain = await ng.offer({
        'call-id': callId,
        'from-tag': 'messenger',
        sdp: offerSdp,
        'transport-protocol': 'RTP/AVP',
        ICE: 'remove',
        'ICE-lite': 'backward',
        DTLS: 'off',
        'rtcp-mux': ['demux'],
        flags: ['trust-address'],
      });
      const media = /m=audio (\d+) /.exec(towardPlain);
      const conn = /c=IN IP4 (\S+)/.exec(towardPlain);
      if (!media || !conn) throw new Error(`rtpengine offer has no audio address:\n${towardPlain}`);
      plain.setRemote(conn[1]!, Number(media[1]));
      const answer = await ng.answer({
        'call-id': callId,
        'from-tag': 'messenger',
        'to-tag': 'plain',
        sdp: plainAnswerSdp(plain.port),
        'transport-protocol': 'UDP/TLS/RTP/SAVPF',
        ICE: 'force',
        DTLS: 'passive',
        'rtcp-mux': ['require'],
        flags: ['trust-address', 'full-rtcp-attribute'],
      });
      return {
        answer,
        plain,
        close: async () => {
          plain.close();
          await ng.delete(callId);
        },
      };
    } catch (err) {
      plain.close();
      throw err;
    }
  }

  async close(): Promise<void> {
    await this.daemon.stop();
  }
}

// mediasoup is imported dynamically: MEDIASOUP_WORKER_BIN must be in the environment when the module loads.
type Mediasoup = typeof import('mediasoup');
type MsWorker = Awaited<ReturnType<Mediasoup['createWorker']>>;
type MsRouter = Awaited<ReturnType<MsWorker['createRouter']>>;

function sdpAttribute(sdp: string, pattern: RegExp): RegExpExecArray {
  const m = pattern.exec(sdp);
  if (!m) throw new Error(`offer lacks ${pattern}`);
  return m;
}

/**
 * mediasoup's WebRtcTransport (ICE-lite by nature, DTLS server because the remote is told to be the client), with a
 * PlainTransport on the other side of its router. Answers like Meta's sample answer.
 */
export class MediasoupPeer implements InteropPeer {
  readonly name = 'mediasoup';
  readonly #worker: MsWorker;
  readonly #router: MsRouter;

  private constructor(worker: MsWorker, router: MsRouter) {
    this.#worker = worker;
    this.#router = router;
  }

  static async start(options: { rtcMinPort?: number; rtcMaxPort?: number } = {}): Promise<MediasoupPeer> {
    process.env['MEDIASOUP_WORKER_BIN'] ??= MEDIASOUP_WORKER_BIN;
    const mediasoup: Mediasoup = await import('mediasoup');
    const base = 50000 + 200 * Math.floor(Math.random() * 45);
    const worker = await mediasoup.createWorker({
      logLevel: (process.env['MEDIASOUP_LOG_LEVEL'] as 'warn' | undefined) ?? 'warn',
      logTags: ['ice', 'dtls', 'rtp', 'srtp', 'rtcp'],
      rtcMinPort: options.rtcMinPort ?? base,
      rtcMaxPort: options.rtcMaxPort ?? base + 199,
    });
    const router = await worker.createRouter({
      mediaCodecs: [
        { kind: 'audio', mimeType: 'audio/opus', clockRate: 48000, channels: 2, preferredPayloadType: OPUS_PT },
      ],
    });
    return new MediasoupPeer(worker, router);
  }

  async answer(offerSdp: string): Promise<PeerCall> {
    const fingerprint = sdpAttribute(offerSdp, /a=fingerprint:(\S+) (\S+)/);
    const legSsrc = Number(sdpAttribute(offerSdp, /a=ssrc:(\d+) /)[1]);
    const mid = /a=mid:(\S+)/.exec(offerSdp)?.[1] ?? '0';
    const plain = await PlainRtpSide.open();
    const webrtc = await this.#router.createWebRtcTransport({
      listenIps: [{ ip: '127.0.0.1' }],
      enableUdp: true,
      enableTcp: false,
    });
    const plainTransport = await this.#router.createPlainTransport({
      listenIp: { ip: '127.0.0.1' },
      rtcpMux: true,
      comedia: false,
    });
    const close = async (): Promise<void> => {
      webrtc.close();
      plainTransport.close();
      plain.close();
    };
    try {
      await plainTransport.connect({ ip: '127.0.0.1', port: plain.port });
      plain.setRemote('127.0.0.1', plainTransport.tuple.localPort);
      const algorithm = fingerprint[1]!.toLowerCase() as 'sha-256';
      await webrtc.connect({ dtlsParameters: { role: 'client', fingerprints: [{ algorithm, value: fingerprint[2]! }] } });

      const opus = { mimeType: 'audio/opus', payloadType: OPUS_PT, clockRate: 48000, channels: 2 };
      const consumerCaps = {
        codecs: [{ kind: 'audio' as const, mimeType: 'audio/opus', clockRate: 48000, channels: 2, preferredPayloadType: OPUS_PT }],
        headerExtensions: [],
      };
      // leg -> WebRtcTransport -> PlainTransport -> plain side
      const fromLeg = await webrtc.produce({ kind: 'audio', rtpParameters: { codecs: [opus], encodings: [{ ssrc: legSsrc }] } });
      await plainTransport.consume({ producerId: fromLeg.id, rtpCapabilities: consumerCaps });
      // plain side -> PlainTransport -> WebRtcTransport -> leg
      const fromPlain = await plainTransport.produce({
        kind: 'audio',
        rtpParameters: { codecs: [opus], encodings: [{ ssrc: PLAIN_SSRC }] },
      });
      const toLeg = await webrtc.consume({ producerId: fromPlain.id, rtpCapabilities: consumerCaps });
      const toLegSsrc = toLeg.rtpParameters.encodings?.[0]?.ssrc ?? 0;

      const { usernameFragment, password } = webrtc.iceParameters;
      const dtlsFingerprint = webrtc.dtlsParameters.fingerprints.find((f) => f.algorithm === 'sha-256')!;
      const candidates = webrtc.iceCandidates.map(
        (c) => `a=candidate:${c.foundation} 1 ${c.protocol} ${c.priority} ${c.ip} ${c.port} typ ${c.type}`,
      );
      const answer = [
        'v=0',
        `o=- ${Date.now()} 2 IN IP4 127.0.0.1`,
        's=-',
        't=0 0',
        'a=ice-lite',
        `a=group:BUNDLE ${mid}`,
        'a=msid-semantic: WMS *',
        `m=audio ${webrtc.iceCandidates[0]!.port} UDP/TLS/RTP/SAVPF ${OPUS_PT}`,
        'c=IN IP4 127.0.0.1',
        'a=rtcp:9 IN IP4 0.0.0.0',
        ...candidates,
        'a=end-of-candidates',
        `a=ice-ufrag:${usernameFragment}`,
        `a=ice-pwd:${password}`,
        `a=fingerprint:sha-256 ${dtlsFingerprint.value}`,
        'a=setup:passive',
        `a=mid:${mid}`,
        'a=sendrecv',
        'a=rtcp-mux',
        `a=rtpmap:${OPUS_PT} opus/48000/2`,
        `a=fmtp:${OPUS_PT} minptime=10;useinbandfec=1;usedtx=1;maxplaybackrate=16000;maxaveragebitrate=20000`,
        `a=ssrc:${toLegSsrc} cname:mediasoup`,
        '',
      ].join('\r\n');
      return { answer, plain, close };
    } catch (err) {
      await close();
      throw err;
    }
  }

  async close(): Promise<void> {
    this.#worker.close();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// One call set-up with audio both ways
// ---------------------------------------------------------------------------------------------------------------

export interface LegFactoryLike {
  create(options: { callId: string; log: Logger }): MessengerLeg & RtpEndpoint & { timings?: { answerToDtlsMs?: number; answerToIceMs?: number; dtlsMs?: number } };
}

export interface CallResult {
  ok: boolean;
  /** Answer applied -> DTLS connected, ms (measured here, independent of the leg's own timings). */
  answerToConnectedMs?: number;
  /** The leg's own timings when it has them. */
  legTimings?: { answerToIceMs?: number; answerToDtlsMs?: number; dtlsMs?: number };
  toPeer?: ToneAnalysis;
  toLeg?: ToneAnalysis;
  error?: string;
}

/** Tones used in each direction: different, so a loop-back or a crossed stream cannot pass. */
export const LEG_TO_PEER_HZ = 1000;
export const PEER_TO_LEG_HZ = 440;
/** SSRC of the plain side's stream (mediasoup's PlainTransport producer expects it). */
export const PLAIN_SSRC = 0x11223344;

/**
 * One call: the leg offers, the peer answers, ICE + DTLS connect, a tone is sent each way and must be detected at the
 * other end within `audioTimeoutMs`. Everything is closed before it returns.
 */
export async function runCall(
  peer: InteropPeer,
  factory: LegFactoryLike,
  options: { callId: string; log: Logger; connectTimeoutMs?: number; audioTimeoutMs?: number; analyzeMs?: number },
): Promise<CallResult> {
  const leg = factory.create({ callId: options.callId, log: options.log });
  let call: PeerCall | undefined;
  let audio: EndpointAudio | undefined;
  const result: CallResult = { ok: false };
  try {
    const offer = await leg.createOffer();
    call = await peer.answer(offer, options.callId);
    const appliedAt = performance.now();
    await leg.applyAnswer(call.answer);
    await leg.whenConnected(AbortSignal.timeout(options.connectTimeoutMs ?? 15_000));
    result.answerToConnectedMs = performance.now() - appliedAt;
    result.legTimings = { ...leg.timings };

    // Send first (Meta drops calls that get no media), then the plain side answers with its own tone.
    audio = new EndpointAudio(leg, { hz: LEG_TO_PEER_HZ, ssrc: 0x55667788 });
    audio.source.start();
    call.plain.startTone(PEER_TO_LEG_HZ, PLAIN_SSRC);
    const analyzeMs = options.analyzeMs ?? 200;
    const deadline = performance.now() + (options.audioTimeoutMs ?? 3000);
    for (;;) {
      result.toPeer = call.plain.sink.analyzeLast(analyzeMs, LEG_TO_PEER_HZ);
      result.toLeg = audio.sink.analyzeLast(analyzeMs, PEER_TO_LEG_HZ);
      if (result.toPeer?.detected && result.toLeg?.detected) break;
      if (performance.now() > deadline) {
        throw new Error(
          `tone not detected: leg->${peer.name} ${describe(result.toPeer)} (${audio.source.packetsSent} sent, ` +
            `${call.plain.sink.packets} received), ${peer.name}->leg ${describe(result.toLeg)} ` +
            `(${call.plain.packetsSent} sent, ${audio.sink.packets} received)` +
            (process.env['INTEROP_DEBUG'] ? ` leg stats ${JSON.stringify((leg as { stats?: () => unknown }).stats?.())}` : ''),
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 40));
    }
    result.ok = true;
  } catch (err) {
    result.error = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  } finally {
    audio?.stop();
    leg.close();
    await call?.close().catch((err: unknown) => options.log.warn({ err }, 'peer call close failed'));
  }
  return result;
}

function describe(a: ToneAnalysis | undefined): string {
  if (!a) return 'no audio';
  return `peak ${a.peakHz.toFixed(0)} Hz, ratio ${a.powerRatio.toFixed(2)}, ${a.levelDbfs.toFixed(1)} dBFS`;
}

/** Nearest-rank percentile (p in 0..100) of a list of numbers. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1]!;
}

// ---------------------------------------------------------------------------------------------------------------
// A hostile path for the leg's DTLS datagrams
// ---------------------------------------------------------------------------------------------------------------

/** DTLS records of one batch of datagrams the client wrote in the same tick (a flight, or part of one). */
export interface DtlsBatch {
  records: Buffer[];
  /** Content types of the records, in order (20 = ChangeCipherSpec, 22 = handshake). */
  types: number[];
}

function splitRecords(datagram: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let pos = 0;
  while (pos + 13 <= datagram.length) {
    const end = pos + 13 + datagram.readUInt16BE(pos + 11);
    out.push(datagram.subarray(pos, end));
    pos = end;
  }
  return out;
}

/**
 * Intercepts what werift's DTLS clients put on the wire (below any record writer), batched per tick, and lets
 * `decide` return the datagrams to send instead (each Buffer one datagram; [] drops the batch; its `send` argument
 * puts a datagram on the wire later). `incoming`, when
 * given, sees each datagram the client receives and returns the datagrams to hand to it instead ([] holds it back).
 * Returns the function that removes the interception. Process-wide, like the patch it sits under.
 */
export async function interceptDtlsDatagrams(
  decide: (batch: DtlsBatch, send: (datagram: Buffer) => void) => Buffer[] | undefined,
  incoming?: (datagram: Buffer) => Buffer[],
): Promise<() => void> {
  const { DtlsClient } = await import('werift');
  const proto = DtlsClient.prototype as unknown as { connect: () => Promise<void> };
  const connect = proto.connect;
  proto.connect = function (this: {
    transport: { socket: { send: (b: Buffer) => Promise<void>; onData: (b: Buffer, ...rest: unknown[]) => void } };
  }) {
    const socket = this.transport.socket;
    const send = socket.send.bind(socket);
    let pending: Buffer[] = [];
    socket.send = (datagram: Buffer) => {
      pending.push(datagram);
      if (pending.length === 1) {
        queueMicrotask(() => {
          const datagrams = pending;
          pending = [];
          const records = datagrams.flatMap(splitRecords);
          const replaced = decide({ records, types: records.map((r) => r[0]!) }, (d) => void send(d));
          for (const d of replaced ?? datagrams) void send(d);
        });
      }
      return Promise.resolve();
    };
    if (incoming) {
      const deliver = socket.onData;
      socket.onData = (datagram: Buffer, ...rest: unknown[]) => {
        for (const d of incoming(datagram)) deliver(d, ...rest);
      };
    }
    return connect.call(this);
  };
  return () => {
    proto.connect = connect;
  };
}

/**
 * The server retransmits its flight and finishes in one datagram, as mediasoup does on a busy machine: our first
 * final flight is held back `delayMs` (so the server's retransmission timer fires first), and the server's
 * retransmitted flight is held until its ChangeCipherSpec and Finished arrive, then both are handed over as one.
 */
export function serverRetransmitsAndFinishesTogether(delayMs: number): {
  decide: (batch: DtlsBatch, send: (datagram: Buffer) => void) => Buffer[] | undefined;
  incoming: (datagram: Buffer) => Buffer[];
  merged: () => number;
} {
  let finalFlights = 0;
  let serverHellos = 0;
  let held: Buffer | undefined;
  let merged = 0;
  return {
    decide: (batch, send) => {
      if (!batch.types.includes(20) || finalFlights++ > 0) return undefined;
      const flight = Buffer.concat(batch.records);
      setTimeout(() => send(flight), delayMs);
      return [];
    },
    incoming: (datagram) => {
      // A server flight 4 starts with a ServerHello: handshake record (22), epoch 0, msg_type 2 right after the header.
      const isServerHello = datagram[0] === 22 && datagram.readUInt16BE(3) === 0 && datagram[13] === 2;
      if (isServerHello && ++serverHellos >= 2) {
        // Keep the latest retransmission (the earlier ones are copies) until the server's answer comes.
        held = datagram;
        return [];
      }
      // The server's answer to our final flight starts with its ChangeCipherSpec (20).
      if (held && datagram[0] === 20) {
        const together = Buffer.concat([held, datagram]);
        held = undefined;
        merged++;
        return [together];
      }
      return [datagram];
    },
    merged: () => merged,
  };
}

/**
 * The reordering that stalls werift against OpenSSL: the first time the final flight goes out, every record in its
 * own datagram and the ChangeCipherSpec moved before the CertificateVerify (the record before it). Later
 * transmissions pass untouched. `fired` counts the reorderings done.
 */
export function reorderFinalFlightOnce(): { decide: (batch: DtlsBatch) => Buffer[] | undefined; fired: () => number } {
  let fired = 0;
  return {
    decide: (batch) => {
      const ccs = batch.types.indexOf(20);
      if (fired > 0 || ccs < 1) return undefined;
      fired++;
      const records = [...batch.records];
      const [moved] = records.splice(ccs, 1);
      records.splice(ccs - 1, 0, moved!);
      return records;
    },
    fired: () => fired,
  };
}
