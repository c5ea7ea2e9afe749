/**
 * One call's media: a mediasoup router with a PlainTransport (P) toward the PBX socket, bridging the Messenger leg
 * and the PBX with Opus passthrough or Opus <-> G.711 transcoding, and DTMF both ways.
 *
 *   Meta -> node (passthrough: header rewritten in place | Opus decode -> G.711) -> PbxRtpSocket -> PBX
 *   PBX -> PbxRtpSocket -> node (passthrough | G.711 decode -> Opus) -> MessengerStream -> Meta
 *
 * Neither direction crosses the worker: node reads every packet from a socket already and sends it on in the same
 * turn. Through the worker each packet cost a write into its payload channel (a Unix socket shared by the worker's
 * calls), the worker's own routing and a loopback send back to node: more than half of a passthrough packet's CPU
 * (bench/packetPath.ts). On the way back to node (a DirectTransport consumer), mediasoup 3.8.4 writes two small
 * messages per packet to a socket that holds ~140 packets and that node reads once per event-loop turn: on a loaded
 * machine that backlog grew to seconds. The router and P stay (a fan-out of the call's audio would feed the router);
 * the DirectTransport toward node that carried those packets is no longer made.
 * RTCP with the PBX is the PBX socket's (PbxRtcp): our reports, the PBX's, the round trip.
 *
 * Gaps from Meta (DTX silence, or loss longer than PLC covers) are passed to a G.711 PBX as gaps: the next packet
 * carries the timestamp jump and the marker bit, as RFC 3551 silence suppression does.
 */
import type { Logger } from 'pino';
import type { types as ms } from 'mediasoup';
import type {
  CallMedia,
  CallMediaEvents,
  CallMediaStats,
  DtmfEvent,
  MessengerLeg,
  MessengerNegotiated,
  PbxCodecName,
  SrtpMode,
} from '../calls/ports.js';
import { MediaError } from '../core/errors.js';
import { TypedEmitter } from '../core/TypedEmitter.js';
import { InbandDtmfWatcher } from './dsp/InbandDtmf.js';
import { decodePcma, decodePcmu, encodePcmaInto, encodePcmuInto } from './dsp/g711.js';
import { OpusDecoder } from './dsp/opus.js';
import { LateAudioGuard, type LateAudioTally } from './LateAudioGuard.js';
import { spendCpu } from './spendCpu.js';
import type { FrameClock } from './FrameClock.js';
import { FRAME_8K, MessengerStream, OPUS_CLOCK_RATE } from './MessengerStream.js';
import { PbxNegotiation, type PbxNegotiated } from './PbxNegotiation.js';
import type { PbxCodec, PbxRemoteAudio } from './pbxSdp.js';
import { pbxRefusesAudio } from './pbxSdp.js';
import { PbxRtpSocket, ReceiveStats } from './PbxRtpSocket.js';
import { CallQuality, legQuality, pcmHasAudio } from './quality/CallQuality.js';
import { OpusAudioJudge } from './quality/opusActivity.js';
import type { RtpEndpoint } from '../core/rtp.js';
import type { RtpHeader } from './rtp.js';
import { RTP_HEADER_BYTES, parseRtp, parseTelephoneEvent, randomSsrc, seqDiff } from './rtp.js';
import { TelephoneEventReceiver, TelephoneEventSender } from './telephoneEvents.js';

/** Payload types of the router's codecs. */
export const ROUTER_PTS: Record<PbxCodecName, number> = { opus: 111, PCMU: 0, PCMA: 8 };

/** The router's codecs: Opus 48k/2, PCMU, PCMA and telephone-event at 48 kHz and 8 kHz. */
export const ROUTER_MEDIA_CODECS: ms.RtpCodecCapability[] = [
  { kind: 'audio', mimeType: 'audio/opus', clockRate: 48000, channels: 2, preferredPayloadType: ROUTER_PTS.opus },
  { kind: 'audio', mimeType: 'audio/PCMU', clockRate: 8000, channels: 1, preferredPayloadType: ROUTER_PTS.PCMU },
  { kind: 'audio', mimeType: 'audio/PCMA', clockRate: 8000, channels: 1, preferredPayloadType: ROUTER_PTS.PCMA },
  { kind: 'audio', mimeType: 'audio/telephone-event', clockRate: 48000, preferredPayloadType: 102 },
  { kind: 'audio', mimeType: 'audio/telephone-event', clockRate: 8000, preferredPayloadType: 101 },
];

/** Lost Opus frames from Meta concealed by PLC; a longer gap is passed on as a gap. */
const MAX_PLC_FRAMES = 3;
const NO_FRAMES: Int16Array[] = [];
/**
 * No audio from Meta for this long (ms: DTX silence, or the person's app stopped sending) and the in-band detector
 * is flushed, so a digit whose tone was the last thing sent still ends and reaches the PBX.
 */
const WATCHER_IDLE_MS = 100;
/** How much earlier than `WATCHER_IDLE_MS` the idle timer may fire (timer clock granularity), ms. */
const WATCHER_IDLE_SLACK_MS = 2;

export interface CallMediaDtmfOptions {
  /**
   * Detect DTMF tones in Meta's audio (when Meta negotiated no telephone-event) and send them to the PBX as
   * RFC 4733. 'auto': only when the PBX leg is G.711 (its audio is decoded anyway; with an Opus PBX detection
   * would cost a decoder per call, and the tones pass through to the PBX untouched).
   */
  inbandDetect: boolean | 'auto';
  /** Play PBX digits as tones toward Meta when Meta negotiated no telephone-event (else they are dropped). */
  inbandGenerate: boolean;
}

/** A Messenger leg whose audio is in this thread: the one a call's media bridges. */
export type MessengerMediaLeg = MessengerLeg & RtpEndpoint;

/** The leg's audio is reachable from here (not a stand-in for a leg living on another thread). */
export function carriesRtp(leg: MessengerLeg): leg is MessengerMediaLeg {
  const candidate = leg as Partial<RtpEndpoint>;
  return typeof candidate.sendRtp === 'function' && typeof candidate.onRtp === 'function';
}

export interface MediasoupCallMediaOptions {
  callId: string;
  log: Logger;
  messenger: MessengerMediaLeg;
  codecs: PbxCodecName[];
  /** SRTP toward the PBX (`media.srtp`, or the route's). Default 'off'. */
  srtp?: SrtpMode;
  router: ms.Router;
  worker: ms.Worker;
  plain: ms.PlainTransport;
  socket: PbxRtpSocket;
  /** Address written into our SDP toward the PBX. */
  announcedIp: string;
  dtmf: CallMediaDtmfOptions;
  encoderComplexity?: number;
  /** Tells whether the worker died (rather than being closed by us). */
  workerDied(worker: ms.Worker): boolean;
  onClose?(): void;
  /** Late packets dropped are also counted here (all calls of an engine). */
  lateAudio?: LateAudioTally;
  /** Busy CPU time added to each audio packet, both ways (µs; `media.simulated_packet_cost_us`, for tests). */
  packetCostUs?: number;
  /** No audio from one side for this long while the other speaks is one-way audio (ms); 0 = not watched. Default 10000. */
  oneWayAudioAfterMs?: number;
  /** The 20 ms clock shared by the engine's calls for their silence filler (see FrameClock). Default: one of its own. */
  frameClock?: FrameClock;
}

/** How often the one-way audio check runs (ms). */
const QUALITY_CHECK_MS = 500;

export class MediasoupCallMedia extends TypedEmitter<CallMediaEvents> implements CallMedia {
  readonly #o: MediasoupCallMediaOptions;
  readonly #log: Logger;
  readonly #stream: MessengerStream;
  readonly #negotiation: PbxNegotiation;
  readonly #quality: CallQuality;
  /** Audio or silence in Opus passed through undecoded, per direction. */
  readonly #metaOpusAudio = new OpusAudioJudge();
  readonly #pbxOpusAudio = new OpusAudioJudge();
  #qualityTimer: NodeJS.Timeout | undefined;
  #closed = false;
  #failed = false;

  #pbx?: PbxRemoteAudio;
  #started = false;
  #messengerFormat?: MessengerNegotiated;
  #unsubscribeMessenger?: () => void;

  // Meta -> PBX.
  readonly #metaStats = new ReceiveStats();
  /** Meta's audio that waited too long before we read it is neither decoded nor passed on (see LateAudioGuard). */
  readonly #lateFromMeta: LateAudioGuard;
  /** RTP timestamp (PBX clock) of the last audio toward the PBX; the PBX socket owns the SSRC and sequence numbers. */
  #dTs = randomSsrc();
  /** Meta's last packet passed on (updated in place: no object per packet). */
  readonly #lastMeta = { known: false, ssrc: 0, seq: 0, ts: 0, at: 0 };
  #decoder?: OpusDecoder;
  #lastToc = 0x78;
  /** In-band digit detection on Meta's audio, while it is wanted (see `#updateWatcher`). */
  #watcher?: InbandDtmfWatcher;
  /** Flushes the watcher when Meta's audio pauses (DTX). */
  #watcherIdle?: NodeJS.Timeout;
  #watcherIdleCheck?: NodeJS.Immediate;
  /** performance.now() of the last audio fed to the watcher. */
  #lastWatchAt = 0;
  /** RTP timestamp (48 kHz) just after the last audio fed to the watcher. */
  #watchNextTs?: number;
  /**
   * A pause flush ended `digit` while it sounded: if Meta's audio resumes without a timestamp gap (the pause was
   * our own stall, not Meta's) and the same digit is confirmed within `frames` packets, it is the same key press.
   */
  #splitGuard?: { digit: string; nextTs: number; frames: number };
  /** A digit found to continue a key press already reported: neither begun nor reported again. */
  #continuedDigit?: string;
  /** The detected digit whose RFC 4733 event toward the PBX began at its confirmation and is not yet ended. */
  #liveDigit?: string;
  #metaTeReceiver?: { pt: number; receiver: TelephoneEventReceiver };
  #pbxTeSender?: TelephoneEventSender;
  #pbxTeReceiver?: TelephoneEventReceiver;
  #pbxTeKey?: string;

  constructor(options: MediasoupCallMediaOptions) {
    super();
    this.#o = options;
    this.#log = options.log;
    this.#negotiation = new PbxNegotiation({
      codecs: options.codecs,
      announcedIp: options.announcedIp,
      port: options.socket.port,
      ...(options.srtp ? { srtp: options.srtp } : {}),
      log: options.log,
    });
    this.#quality = new CallQuality(options.oneWayAudioAfterMs ?? 10_000);
    this.#lateFromMeta = new LateAudioGuard({
      clockRate: OPUS_CLOCK_RATE,
      tally: options.lateAudio,
      onDrops: (report) => options.log.warn(report, 'late audio from Meta dropped: the bridge fell behind reading it'),
    });
    this.#stream = new MessengerStream({
      leg: options.messenger,
      log: options.log,
      encoderComplexity: options.encoderComplexity,
      inbandGenerate: options.dtmf.inbandGenerate,
      ...(options.frameClock ? { clock: options.frameClock } : {}),
    });
    options.socket.setHandlers({
      onAudio: (packet, header) => this.#onPbxAudio(packet, header),
      onTelephoneEvent: (packet, header) => this.#onPbxTelephoneEvent(packet, header),
    });
    // mediasoup closes a dead worker's routers and transports before it emits 'died': decide once that ran.
    const onClosedUnderUs = (what: string): void => {
      queueMicrotask(() => {
        if (this.#o.workerDied(this.#o.worker)) {
          this.#fail(new MediaError('WORKER_DIED', `media worker ${this.#o.worker.pid} died`));
        } else if (this.#o.worker.closed) {
          this.#fail(new MediaError('WORKER_CLOSED', 'media worker closed (shutdown)'));
        } else {
          this.#fail(new MediaError('TRANSPORT_CLOSED', `${what} closed under the call`));
        }
      });
    };
    options.router.on('workerclose', () => onClosedUnderUs('media worker'));
    options.plain.on('routerclose', () => onClosedUnderUs('PBX transport'));
  }

  get closed(): boolean {
    return this.#closed;
  }

  get pbxCodec(): PbxCodecName | undefined {
    return this.#pbx?.codec.name;
  }

  /** The router (for tests and monitoring; mediasoup's own close state tells whether it was freed). */
  get router(): ms.Router {
    return this.#o.router;
  }

  /** The PBX-facing socket's port. */
  get pbxPort(): number {
    return this.#o.socket.port;
  }

  createPbxOffer(): string {
    this.#assertOpen();
    return this.#negotiation.createOffer();
  }

  applyPbxAnswer(sdp: string): void {
    this.#assertOpen();
    this.applyPbxRemote(this.#negotiation.applyAnswer(sdp));
  }

  answerPbxOffer(sdp: string): string {
    this.#assertOpen();
    const { answer, ...negotiated } = this.#negotiation.answerOffer(sdp);
    this.applyPbxRemote(negotiated);
    return answer;
  }

  /**
   * Apply what was negotiated with the PBX (here, or by a media thread's main-thread stand-in, which negotiates the
   * SDP and sends only the result).
   */
  applyPbxRemote(negotiated: PbxNegotiated): void {
    this.#assertOpen();
    this.#o.socket.setSrtp(negotiated.srtp);
    this.#setRemote(negotiated.remote);
  }

  start(): void {
    this.#assertOpen();
    const pbx = this.#pbx;
    if (!pbx) throw new MediaError('NOT_NEGOTIATED', 'start() before the PBX side was negotiated');
    const negotiated = this.#o.messenger.negotiated();
    if (!negotiated) throw new MediaError('NOT_NEGOTIATED', 'start() before the Messenger leg was negotiated');
    this.#messengerFormat = negotiated;
    this.#stream.setFormat(negotiated);
    const te = negotiated.telephoneEvent;
    if (te?.pt !== this.#metaTeReceiver?.pt || te?.clockRate !== this.#metaTeReceiver?.receiver.clockRate) {
      this.#metaTeReceiver?.receiver.close();
      this.#metaTeReceiver = undefined;
    }
    this.#metaTeReceiver ??= te ? this.#makeMetaTeReceiver(te) : undefined;
    this.#updateWatcher();
    this.#unsubscribeMessenger ??= this.#o.messenger.onRtp((packet) => this.#onMessengerRtp(packet));
    if (!this.#started) this.#log.info({ codec: pbx.codec.name, transcoding: this.#transcoding }, 'media bridge started');
    this.#started = true;
    this.#stream.start();
    this.#quality.start();
    this.#qualityTimer ??= setInterval(() => this.#checkQuality(), QUALITY_CHECK_MS).unref();
  }

  /** One-way audio raised or cleared: an event for the call (logs, metrics); the check itself stays here. */
  #checkQuality(): void {
    const result = this.#quality.check();
    if (result) this.safeEmit('oneWayAudio', { ...result.oneWay, active: result.change === 'raised' });
  }

  startSendingToMessenger(): void {
    this.#assertOpen();
    if (this.#started || this.#stream.started) return;
    const negotiated = this.#o.messenger.negotiated();
    if (!negotiated) throw new MediaError('NOT_NEGOTIATED', 'startSendingToMessenger() before the Messenger leg was negotiated');
    this.#messengerFormat = negotiated;
    this.#stream.setFormat(negotiated);
    this.#stream.start();
    this.#log.debug('sending silence to Meta until the PBX side is bridged');
  }

  sendDtmfToMessenger(event: DtmfEvent): void {
    if (this.#closed) return;
    const via = this.#stream.playDigit(event.digit, event.durationMs);
    if (via) this.safeEmit('dtmf', { ...event, direction: 'to_messenger', via });
  }

  /** In-band digits from Meta are being watched for (Meta has no telephone-event and detection is on). */
  get inbandDetecting(): boolean {
    return this.#watcher !== undefined;
  }

  stats(): CallMediaStats {
    const pbxIn = this.#o.socket.receive.snapshot();
    const metaIn = this.#metaStats.snapshot();
    const q = this.#quality;
    const remote = this.#o.messenger.remoteReport?.();
    const pbxRemote = this.#o.socket.remoteReport();
    return {
      codec: this.#pbx?.codec.name,
      ...(this.#negotiation.srtpSuite ? { srtp: this.#negotiation.srtpSuite } : {}),
      transcoding: this.#transcoding,
      toPbx: { packets: this.#o.socket.sentPackets, lost: metaIn.lost, jitterMs: metaIn.jitterMs },
      toMessenger: { packets: this.#stream.sentPackets, lost: pbxIn.lost, jitterMs: pbxIn.jitterMs },
      quality: {
        fromMessenger: legQuality(metaIn, { codec: 'opus', rttMs: remote?.rttMs, startedAt: q.startedAt, firstAudioAt: q.messenger.firstAudioAt }),
        fromPbx: legQuality(pbxIn, {
          codec: this.#pbx?.codec.name ?? 'PCMU',
          rttMs: pbxRemote?.rttMs,
          startedAt: q.startedAt,
          firstAudioAt: q.pbx.firstAudioAt,
        }),
        ...(remote !== undefined ? { atMessenger: remote } : {}),
        ...(pbxRemote !== undefined ? { atPbx: pbxRemote } : {}),
        ...(q.messenger.firstPacketAt !== undefined ? { firstPacketFromMessengerAt: q.messenger.firstPacketAt } : {}),
        ...(q.oneWay !== undefined ? { oneWayAudio: q.oneWay } : {}),
      },
    };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#qualityTimer);
    this.#unsubscribeMessenger?.();
    this.#unsubscribeMessenger = undefined;
    this.#stream.close();
    this.#stopWatcher(false);
    this.#metaTeReceiver?.receiver.close();
    this.#pbxTeReceiver?.close();
    this.#pbxTeSender?.close();
    this.#o.socket.close();
    // Closing the router closes its transports, producers and consumers.
    this.#o.router.close();
    this.#decoder?.close();
    this.#decoder = undefined;
    this.#metaOpusAudio.close();
    this.#pbxOpusAudio.close();
    this.#log.debug('call media closed');
    this.#o.onClose?.();
  }

  get #transcoding(): boolean {
    return this.#pbx !== undefined && this.#pbx.codec.name !== 'opus';
  }

  #assertOpen(): void {
    if (this.#closed) throw new MediaError('CLOSED', 'call media is closed');
  }

  #fail(error: MediaError): void {
    if (this.#closed || this.#failed) return;
    this.#failed = true;
    this.#log.error({ err: error }, 'call media failed');
    this.safeEmit('failed', error);
    this.close();
  }

  #setRemote(remote: PbxRemoteAudio): void {
    const prev = this.#pbx;
    this.#pbx = remote;
    const socket = this.#o.socket;
    socket.setFormats({
      audioPt: remote.codec.pt,
      clockRate: remote.codec.clockRate,
      tePt: remote.telephoneEvent?.pt,
      innerPt: ROUTER_PTS[remote.codec.name],
    });
    const hold = pbxRefusesAudio(remote);
    if (!hold) socket.setRemote(remote.address, remote.port, remote.rtcpMux, remote.rtcpPort);
    socket.setSending(!hold);
    if (prev && (prev.address !== remote.address || prev.port !== remote.port || pbxRefusesAudio(prev) !== hold)) {
      this.#log.info({ address: remote.address, port: remote.port, hold }, 'PBX media updated');
    }
    const teKey = remote.telephoneEvent ? `${remote.telephoneEvent.pt}/${remote.telephoneEvent.clockRate}` : undefined;
    if (teKey !== this.#pbxTeKey) {
      this.#pbxTeKey = teKey;
      this.#pbxTeReceiver?.close();
      this.#pbxTeSender?.close();
      this.#pbxTeReceiver = undefined;
      this.#pbxTeSender = undefined;
      // A detected digit begun on the old sender ends on the new one as a whole event.
      this.#liveDigit = undefined;
      const te = remote.telephoneEvent;
      if (te) {
        this.#pbxTeReceiver = new TelephoneEventReceiver(te.clockRate, {
          begin: (digit) => this.#stream.relayBegin(digit),
          end: (digit, durationMs) => {
            const via = this.#stream.relayEnd(digit, durationMs);
            if (via) this.safeEmit('dtmf', { digit, durationMs, direction: 'to_messenger', via });
          },
        });
        this.#pbxTeSender = new TelephoneEventSender({
          clockRate: te.clockRate,
          timestampNow: () => socket.timestampNow(te.clockRate),
          emit: (payload, marker, timestamp) => socket.sendTelephoneEvent(payload, marker, timestamp),
          onBusy: () => socket.setAudioSuppressed(true),
          onIdle: () => socket.setAudioSuppressed(false),
        });
      }
    }
    if (this.#started) this.#updateWatcher();
  }

  #makeMetaTeReceiver(te: { pt: number; clockRate: number }): { pt: number; receiver: TelephoneEventReceiver } {
    return {
      pt: te.pt,
      receiver: new TelephoneEventReceiver(te.clockRate, {
        begin: (digit) => this.#pbxTeSender?.begin(digit),
        end: (digit, durationMs) => this.#digitToPbx(digit, durationMs, true),
      }),
    };
  }

  #digitToPbx(digit: string, durationMs: number, live: boolean): void {
    if (!this.#pbxTeSender) {
      this.#log.info({ digit, durationMs }, 'digit from Meta cannot go to the PBX in RTP (PBX has no telephone-event)');
      this.safeEmit('dtmf', { digit, durationMs, direction: 'to_pbx', via: 'none' });
      return;
    }
    if (live) this.#pbxTeSender.end(digit, durationMs);
    else this.#pbxTeSender.play(digit, durationMs);
    this.safeEmit('dtmf', { digit, durationMs, direction: 'to_pbx', via: 'rfc4733' });
  }

  // ---------------------------------------------------------------------------------------------------------
  // In-band digits from Meta
  //
  // A digit is confirmed about 35 ms into its tone and reported when it ends (about 30 ms after the tone stops).
  // At confirmation the RFC 4733 event toward the PBX begins, and the PBX socket holds back audio while an event
  // runs, so from then on the tone no longer reaches the PBX in band (a PBX detecting tones itself would otherwise
  // count the digit twice). The first ~35 ms of tone do pass: catching them would need a look-ahead delay on
  // the voice path, or muting on mere candidates, which clips speech; 35 ms is below what a Q.24 detector must
  // accept (40 ms), so PBX detectors rarely act on it.
  // With a PBX that negotiated no telephone-event the tones are left in the audio, where they are the only way
  // the digit can reach it, and the `dtmf` event (via 'inband') lets the call controller add SIP INFO.
  // ---------------------------------------------------------------------------------------------------------

  #inbandDetectWanted(): boolean {
    if (this.#messengerFormat?.telephoneEvent || !this.#pbx) return false;
    const setting = this.#o.dtmf.inbandDetect;
    return setting === 'auto' ? this.#pbx.codec.name !== 'opus' : setting;
  }

  #updateWatcher(): void {
    if (!this.#inbandDetectWanted()) {
      this.#stopWatcher(true);
      return;
    }
    if (this.#watcher) return;
    const watcher = new InbandDtmfWatcher({ sampleRate: 8000, clockRate: OPUS_CLOCK_RATE });
    watcher.on('digit', (d) => this.#onInbandDigit(d.digit, d.durationMs));
    this.#watcher = watcher;
    this.#log.debug('watching Meta audio for in-band digits');
  }

  /** Stop detecting; with `report`, a digit still sounding is reported first. */
  #stopWatcher(report: boolean): void {
    const watcher = this.#watcher;
    if (!watcher) return;
    if (report) watcher.flush();
    watcher.close();
    this.#watcher = undefined;
    if (this.#watcherIdle) clearTimeout(this.#watcherIdle);
    if (this.#watcherIdleCheck) clearImmediate(this.#watcherIdleCheck);
    this.#watcherIdle = undefined;
    this.#watcherIdleCheck = undefined;
    this.#liveDigit = undefined;
    this.#splitGuard = undefined;
    this.#continuedDigit = undefined;
  }

  /** Feed decoded audio (concealed frames first, they end just before the packet's timestamp) to the watcher. */
  #watch(watcher: InbandDtmfWatcher, concealed: Int16Array[], pcm: Int16Array | undefined, timestamp: number): void {
    const scale = OPUS_CLOCK_RATE / 8000;
    let ts = timestamp - concealed.reduce((n, f) => n + f.length, 0) * scale;
    const guard = this.#splitGuard;
    if (guard && (guard.nextTs !== ts >>> 0 || --guard.frames < 0)) this.#splitGuard = undefined;
    for (const frame of concealed) {
      watcher.push(frame, ts >>> 0, true);
      ts += frame.length * scale;
    }
    if (pcm) {
      watcher.push(pcm, timestamp);
      ts = timestamp + pcm.length * scale;
    }
    this.#watchNextTs = ts >>> 0;
    if (this.#watcher !== watcher) return;
    const sounding = watcher.sounding;
    if (sounding !== undefined && sounding === this.#splitGuard?.digit) {
      this.#splitGuard = undefined;
      this.#continuedDigit = sounding;
      this.#log.debug({ digit: sounding }, 'in-band digit continues after a stall: not repeated');
    }
    if (sounding !== undefined && sounding !== this.#liveDigit && sounding !== this.#continuedDigit && this.#pbxTeSender) {
      this.#liveDigit = sounding;
      this.#pbxTeSender.begin(sounding);
    }
    this.#lastWatchAt = performance.now();
    this.#watcherIdle ??= setTimeout(() => this.#onWatcherIdle(), WATCHER_IDLE_MS);
    this.#watcherIdle.refresh();
  }

  /**
   * Flushing while the person still holds a key would split the digit in two, so a pause must be real. Timers run
   * on the event loop's cached clock, which lags behind a busy loop, so the timer can fire before 100 ms of real
   * time have passed: it is then armed again. The decision itself is taken after this turn's I/O (packets queued
   * during an event-loop stall are read first); a packet read meanwhile re-arms the timer through `#watch`. A flush
   * that still splits a held key is caught by the split guard.
   */
  #onWatcherIdle(): void {
    const timer = this.#watcherIdle;
    if (!this.#watcher || !timer || this.#watcherIdleCheck) return;
    const lastWatchAt = this.#lastWatchAt;
    if (performance.now() - lastWatchAt < WATCHER_IDLE_MS - WATCHER_IDLE_SLACK_MS) {
      timer.refresh();
      return;
    }
    this.#watcherIdleCheck = setImmediate(() => {
      this.#watcherIdleCheck = undefined;
      if (!this.#watcher || this.#lastWatchAt !== lastWatchAt) return;
      const nextTs = this.#watchNextTs;
      const found = this.#watcher.flush();
      const last = found.at(-1);
      this.#splitGuard = last && nextTs !== undefined ? { digit: last.digit, nextTs, frames: 5 } : undefined;
    });
  }

  #onInbandDigit(digit: string, durationMs: number): void {
    if (this.#closed) return;
    if (this.#continuedDigit === digit) {
      this.#continuedDigit = undefined;
      return;
    }
    if (!this.#pbxTeSender) {
      this.#log.info({ digit, durationMs }, 'digit from Meta passes to the PBX in band only (PBX has no telephone-event)');
      this.safeEmit('dtmf', { digit, durationMs, direction: 'to_pbx', via: 'inband' });
      return;
    }
    const live = this.#liveDigit === digit;
    if (live) this.#liveDigit = undefined;
    this.#digitToPbx(digit, durationMs, live);
  }

  // ---------------------------------------------------------------------------------------------------------
  // PBX -> Meta
  // ---------------------------------------------------------------------------------------------------------

  #onPbxAudio(packet: Buffer, header: RtpHeader): void {
    const pbx = this.#pbx;
    if (this.#closed || !this.#started || !pbx) return;
    if (this.#o.packetCostUs) spendCpu(this.#o.packetCostUs);
    const payload = packet.subarray(header.payloadOffset, header.payloadOffset + header.payloadLength);
    if (pbx.codec.name === 'opus') {
      this.#quality.heard('pbx', this.#pbxOpusAudio.hasAudio(payload));
      this.#stream.sendPassthrough(payload, header.timestamp);
      return;
    }
    const pcm = pbx.codec.name === 'PCMU' ? decodePcmu(payload) : decodePcma(payload);
    this.#quality.heard('pbx', pcmHasAudio(pcm));
    this.#stream.sendPcm8k(pcm);
  }

  #onPbxTelephoneEvent(packet: Buffer, header: RtpHeader): void {
    const event = parseTelephoneEvent(packet.subarray(header.payloadOffset, header.payloadOffset + header.payloadLength));
    if (event && this.#started) this.#pbxTeReceiver?.onPacket(header, event);
  }

  // ---------------------------------------------------------------------------------------------------------
  // Meta -> PBX
  // ---------------------------------------------------------------------------------------------------------

  #onMessengerRtp(packet: Buffer): void {
    if (this.#closed) return;
    const header = parseRtp(packet);
    const format = this.#messengerFormat;
    if (!header || !format) return;
    const payload = packet.subarray(header.payloadOffset, header.payloadOffset + header.payloadLength);
    if (this.#metaTeReceiver && header.payloadType === this.#metaTeReceiver.pt) {
      const event = parseTelephoneEvent(payload);
      if (event) this.#metaTeReceiver.receiver.onPacket(header, event);
      return;
    }
    if (header.payloadType !== format.opusPt || payload.length === 0) return;
    if (this.#o.packetCostUs) spendCpu(this.#o.packetCostUs);
    this.#metaStats.update(header, OPUS_CLOCK_RATE);
    // Dropped before `#lastMeta` moves on: the next packet on time sees the gap (concealment, or a marked jump).
    if (!this.#lateFromMeta.admit(header.ssrc, header.timestamp, header.marker)) return;

    const last = this.#lastMeta;
    const sameStream = last.known && last.ssrc === header.ssrc;
    const seqGap = sameStream ? seqDiff(header.sequenceNumber, last.seq) : 1;
    if (sameStream && seqGap <= 0) return; // duplicate or late: the decoder has moved on
    const tsDelta = sameStream ? (header.timestamp - last.ts) | 0 : 0;
    const hadLast = last.known;
    const lastAt = last.at;
    const now = performance.now();
    last.known = true;
    last.ssrc = header.ssrc;
    last.seq = header.sequenceNumber;
    last.ts = header.timestamp;
    last.at = now;

    const pbx = this.#pbx;
    const watcher = this.#watcher;
    const needPcm = pbx?.codec.name !== 'opus' || watcher !== undefined;
    let pcm: Int16Array | undefined;
    let concealed: Int16Array[] = NO_FRAMES;
    if (needPcm) {
      if (seqGap >= 2 && seqGap <= MAX_PLC_FRAMES + 1) concealed = this.#conceal(seqGap - 1);
      pcm = this.#decode(payload);
      if (watcher) this.#watch(watcher, concealed, pcm, header.timestamp);
    }
    this.#quality.heard('messenger', pcm !== undefined ? pcmHasAudio(pcm) : this.#metaOpusAudio.hasAudio(payload));
    if (!pbx) return;

    // Timestamps toward the PBX follow Meta's (scaled to the PBX clock); a new stream continues from the wall clock.
    const scale = pbx.codec.clockRate / OPUS_CLOCK_RATE;
    let advance: number;
    if (sameStream && tsDelta > 0 && tsDelta < OPUS_CLOCK_RATE * 60) advance = Math.round(tsDelta * scale);
    else if (hadLast) advance = Math.max(1, Math.round(((now - lastAt) * pbx.codec.clockRate) / 1000));
    else advance = 0;
    const frameUnits = Math.round(FRAME_8K * (pbx.codec.clockRate / 8000));
    const gapBeyondPlc = seqGap > MAX_PLC_FRAMES + 1;
    const marker = header.marker || !sameStream || advance > frameUnits * (seqGap > 0 ? seqGap : 1) || gapBeyondPlc;

    // Straight to the PBX socket, in this turn: Meta's packet crosses JavaScript once (see the module comment).
    const socket = this.#o.socket;
    if (pbx.codec.name === 'opus') {
      this.#dTs = (this.#dTs + advance) >>> 0;
      // Meta's packet itself, its header rewritten in place: a gap in Meta's sequence stays visible to the PBX.
      socket.sendAudio(packet, this.#dTs, marker, Math.max(1, Math.min(seqGap, 100)));
      return;
    }
    if (!pcm) return;
    // #dTs is the PBX-clock timestamp of the current packet's first sample; concealed frames sit just before it.
    const start = (this.#dTs + advance) >>> 0;
    this.#dTs = start;
    let ts = start;
    for (const frame of concealed) ts -= frame.length;
    ts >>>= 0;
    let first = true;
    const encode = pbx.codec.name === 'PCMU' ? encodePcmuInto : encodePcmaInto;
    for (let f = 0; f <= concealed.length; f++) {
      const frame = f < concealed.length ? concealed[f]! : pcm;
      for (let offset = 0; offset < frame.length; offset += FRAME_8K) {
        const end = Math.min(frame.length, offset + FRAME_8K);
        const out = Buffer.allocUnsafe(RTP_HEADER_BYTES + end - offset);
        out[0] = 0x80;
        encode(frame, offset, end, out, RTP_HEADER_BYTES);
        socket.sendAudio(out, ts, first && marker, 1);
        first = false;
        ts = (ts + end - offset) >>> 0;
      }
    }
  }

  #decode(payload: Uint8Array): Int16Array | undefined {
    this.#decoder ??= new OpusDecoder({ channels: 1, sample_rate: 8000 });
    try {
      const out = this.#decoder.decode(payload);
      this.#lastToc = payload[0]!;
      // The addon returns a view of a shared buffer: copy into our own samples.
      return new Int16Array(out.buffer.slice(out.byteOffset, out.byteOffset + out.byteLength));
    } catch (err) {
      this.#log.debug({ err }, 'Opus frame from Meta could not be decoded');
      return undefined;
    }
  }

  /** Packet loss concealment: decoding a TOC-only packet makes libopus conceal one frame of the last frame size. */
  #conceal(frames: number): Int16Array[] {
    const out: Int16Array[] = [];
    if (!this.#decoder) return out;
    const toc = Uint8Array.of(this.#lastToc & 0xfc);
    for (let i = 0; i < frames; i++) {
      const pcm = this.#decode(toc);
      if (pcm) out.push(pcm);
    }
    return out;
  }
}
