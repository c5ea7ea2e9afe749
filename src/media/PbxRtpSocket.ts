/**
 * The PBX-facing RTP port. A node UDP socket (SSRC-agnostic, unlike a mediasoup PlainTransport) that relays
 * audio from a mediasoup PlainTransport over loopback to the PBX, hands the PBX's audio to node, intercepts RFC 4733
 * packets, latches onto the PBX's real address (symmetric RTP), owns the outgoing SSRC and sequence numbers toward
 * the PBX, and speaks RTCP with it (PbxRtcp: our sender reports, the PBX's reports and the round trip they give; the
 * worker's own RTCP describes a stream the PBX never sees under its SSRC, and is not passed on).
 *
 * Who may send to it (anyone on the voice LAN can reach the port):
 * - without comedia, only the address the PBX's SDP names (any port: a PBX may send from another port than it
 *   receives on);
 * - with comedia, the first RTP packet from the SDP's address or from a source `latchAllowed` accepts (the SIP ACL)
 *   latches; from then on only that address and port are heard (RTCP: that address), and the latch moves only to
 *   another port of the same address after {@link RELATCH_PACKETS} consecutive RTP packets from it with none from
 *   the latched port in between (a NAT that re-mapped the PBX's port);
 * - before the PBX's SDP, with comedia off, nobody.
 * Everything else is dropped and counted by reason ({@link RtpDropReason}).
 */
import dgram from 'node:dgram';
import dns from 'node:dns';
import { isIP } from 'node:net';
import type { Logger } from 'pino';
import { MediaError } from '../core/errors.js';
import type { RemoteReport } from '../calls/ports.js';
import type { RtpDropReason } from '../core/rtp.js';
import { LateAudioGuard, type LateAudioTally } from './LateAudioGuard.js';
import { PbxRtcp } from './PbxRtcp.js';
import { PbxSrtp, SRTP_DROP_LABELS } from './PbxSrtp.js';
import type { PbxSrtpKeys } from './PbxSrtp.js';
import type { RtpHeader } from './rtp.js';
import {
  buildRtp,
  isRtcp,
  parseRtp,
  randomSeq,
  randomSsrc,
  seqDiff,
  stripRtpHeaderExtension,
  writeRtpHeader,
} from './rtp.js';

/** RTCP report interval toward the PBX (ms), and when the first report leaves (RFC 3550 6.2: half an interval is allowed). */
const DEFAULT_RTCP_INTERVAL_MS = 5000;
const FIRST_REPORT_AFTER_MS = 1000;
/** Header of the packets we send the PBX: no CSRC, no extension (stripped), no padding. */
const RTP_HEADER_BYTES = 12;

/** Consecutive RTP packets from a new port of the latched address that move the comedia latch there. */
export const RELATCH_PACKETS = 5;

/** An address as a socket reports it, comparable to one from an SDP (IPv4-mapped IPv6 becomes IPv4). */
function hostKey(address: string): string {
  const a = address.toLowerCase();
  return a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a;
}

export interface PbxRtpSocketOptions {
  log: Logger;
  /** Local address to bind toward the PBX. */
  listenIp: string;
  /** Port range; `minPort` 0 binds an ephemeral port. */
  minPort: number;
  maxPort: number;
  /** Learn the PBX's address from its first packet (symmetric RTP). */
  comedia: boolean;
  /**
   * With comedia: sources besides the SDP's address that the socket may latch onto (the SIP ACL). Asked per
   * candidate packet, so a reload applies. Default: none.
   */
  latchAllowed?: (address: string) => boolean;
  /** Where each dropped packet is counted (msb_rtp_dropped_total); must not throw. */
  metrics?: RtpDropMetrics;
  /** Late packets dropped are also counted here (all calls of an engine). */
  lateAudio?: LateAudioTally;
  /** RTCP report interval toward the PBX (ms; the first report leaves after at most 1 s). Default 5000; 0: none. */
  rtcpIntervalMs?: number;
}

/** What a PBX RTP port counts: each packet it drops, by reason. */
export interface RtpDropMetrics {
  rtpDropped(reason: RtpDropReason): void;
}

export interface PbxRtpSocketHandlers {
  /** An audio packet from the PBX (any SSRC), on time (see LateAudioGuard). */
  onAudio(packet: Buffer, header: RtpHeader): void;
  /** A telephone-event packet from the PBX. */
  onTelephoneEvent(packet: Buffer, header: RtpHeader): void;
}

export interface StreamStats {
  packets: number;
  lost: number;
  /** Interarrival jitter (RFC 3550 section 6.4.1), ms. */
  jitterMs: number;
}

/** Receive-side statistics for one RTP stream: loss from sequence gaps, jitter per RFC 3550. */
export class ReceiveStats {
  packets = 0;
  /** Loss counted on earlier SSRCs of this direction. */
  #lostBefore = 0;
  #stream?: { ssrc: number; baseSeq: number; highestSeq: number; received: number };
  #jitter = 0;
  #lastTransit?: number;
  #clockRate = 8000;

  update(header: RtpHeader, clockRate: number): void {
    this.packets++;
    this.#clockRate = clockRate;
    const stream = this.#stream;
    if (!stream || stream.ssrc !== header.ssrc) {
      // A new SSRC starts its own count so that the change does not look like loss.
      if (stream) this.#lostBefore += ReceiveStats.#lostIn(stream);
      this.#stream = { ssrc: header.ssrc, baseSeq: header.sequenceNumber, highestSeq: header.sequenceNumber, received: 1 };
      this.#lastTransit = undefined;
    } else {
      stream.received++;
      const diff = seqDiff(header.sequenceNumber, stream.highestSeq & 0xffff);
      if (diff > 0) stream.highestSeq += diff;
    }
    const transit = (performance.now() * clockRate) / 1000 - header.timestamp;
    if (this.#lastTransit !== undefined) {
      const d = Math.abs(transit - this.#lastTransit);
      if (d < clockRate) this.#jitter += (d - this.#jitter) / 16;
    }
    this.#lastTransit = transit;
  }

  static #lostIn(stream: { baseSeq: number; highestSeq: number; received: number }): number {
    return Math.max(0, stream.highestSeq - stream.baseSeq + 1 - stream.received);
  }

  get lost(): number {
    return this.#lostBefore + (this.#stream ? ReceiveStats.#lostIn(this.#stream) : 0);
  }

  get jitterMs(): number {
    return (this.#jitter * 1000) / this.#clockRate;
  }

  snapshot(): StreamStats {
    return { packets: this.packets, lost: this.lost, jitterMs: Math.round(this.jitterMs * 100) / 100 };
  }

  /** The current stream, as an RTCP reception report describes it (RFC 3550 6.4.1); undefined before a packet. */
  reception(): StreamReception | undefined {
    const stream = this.#stream;
    if (!stream) return undefined;
    return {
      ssrc: stream.ssrc,
      extendedHighestSeq: stream.highestSeq >>> 0,
      expected: stream.highestSeq - stream.baseSeq + 1,
      received: stream.received,
      jitter: Math.round(this.#jitter),
    };
  }
}

/** One received stream as a reception report needs it. */
export interface StreamReception {
  ssrc: number;
  /** Highest sequence number received, with its wrap count above 16 bits. */
  extendedHighestSeq: number;
  /** Packets expected (from the first and highest sequence numbers) and received. */
  expected: number;
  received: number;
  /** Interarrival jitter, RTP timestamp units. */
  jitter: number;
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string, family: number) => void;

/**
 * The sockets' lookup: every send names its destination by address string, and dgram's default lookup sends a
 * numeric one through `dns.lookup` too, whose answer comes on the next tick, so each packet cost a closure and a
 * tick before its system call. A numeric address (all the PBX's SDP and latching give) is answered at once; a name
 * still goes to `dns.lookup`.
 */
function lookupNumericAtOnce(hostname: string, family: unknown, callback: LookupCallback): void {
  const numeric = isIP(hostname);
  if (numeric !== 0) callback(null, hostname, numeric);
  else dns.lookup(hostname, { family: family === 6 ? 6 : 4 }, callback);
}

function createUdpSocket(type: 'udp4' | 'udp6'): dgram.Socket {
  return dgram.createSocket({ type, lookup: lookupNumericAtOnce as unknown as dgram.SocketOptions['lookup'] });
}

function bindSocket(socket: dgram.Socket, port: number, address: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    socket.once('error', onError);
    socket.bind({ port, address, exclusive: true }, () => {
      socket.off('error', onError);
      resolve();
    });
  });
}

async function bindInRange(type: 'udp4' | 'udp6', address: string, minPort: number, maxPort: number): Promise<dgram.Socket> {
  if (minPort === 0) {
    const socket = createUdpSocket(type);
    await bindSocket(socket, 0, address);
    return socket;
  }
  const span = maxPort - minPort + 1;
  // A random start spreads calls over the range; then walk it, so that a nearly full range still finds its gaps.
  const attempts = Math.min(span, 1000);
  const start = Math.floor(Math.random() * span);
  let lastError: unknown;
  for (let i = 0; i < attempts; i++) {
    const port = minPort + ((start + i) % span);
    const socket = createUdpSocket(type);
    try {
      await bindSocket(socket, port, address);
      return socket;
    } catch (err) {
      lastError = err;
      socket.close();
    }
  }
  throw new MediaError('NO_PORT', `no free RTP port in ${minPort}-${maxPort} on ${address}`, { cause: lastError });
}

export class PbxRtpSocket {
  readonly #log: Logger;
  readonly #outer: dgram.Socket;
  readonly #inner: dgram.Socket;
  readonly #comedia: boolean;
  readonly #latchAllowed: (address: string) => boolean;
  readonly #metrics: RtpDropMetrics | undefined;
  /** Packets dropped so far, by reason. */
  readonly dropped: Record<RtpDropReason, number> = {
    wrong_source: 0,
    before_sdp: 0,
    malformed: 0,
    srtp_auth: 0,
    srtp_replay: 0,
    srtp_expired: 0,
  };
  /** SRTP toward the PBX (SDES keys); undefined: plain RTP. */
  #srtp?: PbxSrtp;
  #srtpExpiredLogged = false;
  /** A port of the latched address that may take over the latch, and its run of consecutive packets. */
  #relatch?: { port: number; packets: number };
  #handlers?: PbxRtpSocketHandlers;
  /** The mediasoup PlainTransport's loopback port. */
  #mediasoupPort?: number;
  #remote?: { address: string; port: number; rtcpPort: number };
  #latched = false;
  #sending = false;
  #closed = false;

  #audioPt?: number;
  #innerPt?: number;
  #tePt?: number;
  #clockRate = 8000;

  // Outgoing stream toward the PBX.
  readonly #ssrc = randomSsrc();
  #seq = randomSeq();
  #lastInSeq?: number;
  #lastInSsrc?: number;
  #lastTs?: number;
  #lastSentAt = 0;
  #suppressAudio = false;
  #sentPackets = 0;
  /** Payload octets sent (for our sender reports). */
  #sentOctets = 0;
  readonly #rtcp: PbxRtcp;
  readonly #rtcpIntervalMs: number;
  #rtcpTimer: NodeJS.Timeout | undefined;
  readonly #createdAt = performance.now();
  readonly #tsBase = randomSsrc();

  readonly receive = new ReceiveStats();
  /** PBX audio that waited too long before we read it is not passed on (see LateAudioGuard). */
  readonly #lateFromPbx: LateAudioGuard;
  /** Audio toward the PBX that fell behind inside the bridge is not sent. */
  readonly #lateToPbx: LateAudioGuard;

  private constructor(log: Logger, outer: dgram.Socket, inner: dgram.Socket, options: PbxRtpSocketOptions) {
    this.#log = log;
    this.#comedia = options.comedia;
    this.#latchAllowed = options.latchAllowed ?? (() => false);
    this.#rtcp = new PbxRtcp(this.#ssrc);
    this.#rtcpIntervalMs = options.rtcpIntervalMs ?? DEFAULT_RTCP_INTERVAL_MS;
    this.#metrics = options.metrics;
    this.#listenIp = options.listenIp;
    this.#lateFromPbx = new LateAudioGuard({
      clockRate: this.#clockRate,
      tally: options.lateAudio,
      onDrops: (report) => log.warn(report, 'late audio from the PBX dropped: the bridge fell behind reading it'),
    });
    this.#lateToPbx = new LateAudioGuard({
      clockRate: this.#clockRate,
      tally: options.lateAudio,
      onDrops: (report) => log.warn(report, 'late audio toward the PBX dropped: the bridge fell behind'),
    });
    this.#outer = outer;
    this.#inner = inner;
    outer.on('message', (msg, rinfo) => this.#onOuter(msg, rinfo));
    inner.on('message', (msg) => this.#onInner(msg));
    outer.on('error', (err) => this.#log.warn({ err }, 'PBX RTP socket error'));
    inner.on('error', (err) => this.#log.warn({ err }, 'loopback RTP socket error'));
  }

  static async create(options: PbxRtpSocketOptions): Promise<PbxRtpSocket> {
    const type = options.listenIp.includes(':') ? 'udp6' : 'udp4';
    const outer = await bindInRange(type, options.listenIp, options.minPort, options.maxPort);
    let inner: dgram.Socket;
    try {
      inner = createUdpSocket('udp4');
      await bindSocket(inner, 0, '127.0.0.1');
    } catch (err) {
      outer.close();
      throw new MediaError('NO_PORT', 'could not bind the loopback RTP socket', { cause: err });
    }
    const log = options.log.child({ pbxRtpPort: outer.address().port });
    return new PbxRtpSocket(log, outer, inner, options);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** The port announced to the PBX. */
  get port(): number {
    return this.#outer.address().port;
  }

  /** The loopback port mediasoup's PlainTransport must send to. */
  get innerPort(): number {
    return this.#inner.address().port;
  }

  /** Where we send to the PBX now (latched or from its SDP). */
  get remote(): { address: string; port: number } | undefined {
    return this.#remote ? { address: this.#remote.address, port: this.#remote.port } : undefined;
  }

  get sending(): boolean {
    return this.#sending;
  }

  get sentPackets(): number {
    return this.#sentPackets;
  }

  get ssrc(): number {
    return this.#ssrc;
  }

  /** What the PBX's RTCP reports say of our stream, with the mean round trip to the PBX, once one arrived. */
  remoteReport(): RemoteReport | undefined {
    return this.#rtcp.remoteReport();
  }

  setHandlers(handlers: PbxRtpSocketHandlers): void {
    this.#handlers = handlers;
  }

  setMediasoupPort(port: number): void {
    this.#mediasoupPort = port;
  }

  /**
   * What the PBX negotiated: its audio payload type (rewritten onto our packets), its telephone-event payload type
   * (intercepted) and the audio clock rate. `innerPt`: the payload type the media worker's stream of that codec
   * carries on the loopback side; packets with another one (the previous codec's stream, still draining after a
   * codec change) are dropped, so that the PBX never gets the old codec's payload under the new payload type.
   */
  setFormats(formats: { audioPt: number; clockRate: number; tePt?: number; innerPt?: number }): void {
    this.#audioPt = formats.audioPt;
    this.#innerPt = formats.innerPt;
    this.#clockRate = formats.clockRate;
    this.#lateFromPbx.setClockRate(formats.clockRate);
    this.#lateToPbx.setClockRate(formats.clockRate);
    this.#tePt = formats.tePt;
  }

  /**
   * Where the PBX wants RTP (its SDP). A changed address restarts latching; `rtcpMux` false sends RTCP to
   * `rtcpPort` (the SDP's `a=rtcp:`), or else to port + 1.
   */
  setRemote(address: string, port: number, rtcpMux: boolean, rtcpPort?: number): void {
    this.#rtcpMux = rtcpMux;
    this.#sdpRtcpPort = rtcpPort;
    const changed = !this.#sdpRemote || this.#sdpRemote.address !== address || this.#sdpRemote.port !== port;
    this.#sdpRemote = { address, port };
    if (changed) {
      this.#latched = false;
      this.#relatch = undefined;
      this.#log.debug({ address, port }, 'PBX RTP target set');
    }
    if (changed || !this.#latched) this.#remote = { address, port, rtcpPort: rtcpMux ? port : (rtcpPort ?? port + 1) };
    if (!rtcpMux) this.#openRtcpPort();
    if (this.#rtcpTimer === undefined && this.#rtcpIntervalMs > 0) this.#scheduleReport(Math.min(FIRST_REPORT_AFTER_MS, this.#rtcpIntervalMs));
  }

  /** Our next RTCP report toward the PBX in `delayMs`, then every interval (sent only while sending to the PBX). */
  #scheduleReport(delayMs: number): void {
    this.#rtcpTimer = setTimeout(() => {
      if (this.#closed) return;
      this.#sendReport();
      this.#scheduleReport(this.#rtcpIntervalMs);
    }, delayMs);
    this.#rtcpTimer.unref();
  }

  #sendReport(): void {
    const sent = {
      packets: this.#sentPackets,
      octets: this.#sentOctets,
      rtpTimestampNow: this.#lastTs === undefined ? undefined : this.timestampNow(this.#clockRate),
    };
    const report = this.#rtcp.report(sent, this.receive.reception());
    if (report) this.#sendToPbx(report, true);
  }

  #sdpRemote?: { address: string; port: number };
  #sdpRtcpPort?: number;
  #rtcpMux = true;
  readonly #listenIp: string;
  /**
   * Our RTP port + 1, opened when the PBX declines rtcp-mux: where such a PBX sends its RTCP (RFC 3550 11; our SDP
   * names no a=rtcp port), and where ours leaves from. 'unavailable' when that port was taken.
   */
  #rtcpSocket: dgram.Socket | 'opening' | 'unavailable' | undefined;

  /** Open our RTP port + 1 for the RTCP of a PBX that does not multiplex (best effort: without it, no round trip). */
  #openRtcpPort(): void {
    if (this.#rtcpSocket !== undefined || this.#closed) return;
    const port = this.port + 1;
    if (port > 65535) {
      this.#rtcpSocket = 'unavailable';
      return;
    }
    this.#rtcpSocket = 'opening';
    const socket = dgram.createSocket(this.#listenIp.includes(':') ? 'udp6' : 'udp4');
    bindSocket(socket, port, this.#listenIp).then(
      () => {
        if (this.#closed) {
          socket.close();
          return;
        }
        this.#rtcpSocket = socket;
        socket.on('message', (msg, rinfo) => {
          if (isRtcp(msg)) this.#onOuter(msg, rinfo);
          else this.#drop('malformed', rinfo);
        });
        socket.on('error', (err) => this.#log.warn({ err }, 'PBX RTCP socket error'));
      },
      (err: unknown) => {
        this.#rtcpSocket = 'unavailable';
        socket.close();
        this.#log.info({ err, port }, "the PBX declined rtcp-mux and our RTCP port is taken: no round trip to the PBX on this call");
      },
    );
  }

  /**
   * SRTP keys from the SDP (undefined: plain RTP). Everything sent is protected and everything received must
   * authenticate; the same key again keeps its context, a new key starts a new one (see PbxSrtp).
   */
  setSrtp(keys: PbxSrtpKeys | undefined): void {
    if (keys === undefined) {
      if (this.#srtp) this.#log.info('SRTP toward the PBX off: plain RTP');
      this.#srtp = undefined;
      return;
    }
    this.#srtp ??= new PbxSrtp();
    const renewed = this.#srtp.set(keys);
    if (renewed.newLocal || renewed.newRemote) {
      this.#log.info({ srtpProfile: keys.local.profile, ...renewed, remoteKnown: keys.remote !== undefined }, 'SRTP keys toward the PBX set');
    }
  }

  /** Hold: false stops everything we send to the PBX. */
  setSending(sending: boolean): void {
    if (sending !== this.#sending) this.#log.debug({ sending }, 'PBX RTP sending');
    this.#sending = sending;
  }

  /** Pass a packet from the PBX on to mediasoup's PlainTransport (RTCP; audio is handled in node). */
  forwardToMediasoup(packet: Buffer): void {
    if (this.#closed || this.#mediasoupPort === undefined) return;
    this.#inner.send(packet, this.#mediasoupPort, '127.0.0.1');
  }

  /** Audio from mediasoup is held back while a telephone event is being sent (RFC 4733 section 2.5.1.1). */
  setAudioSuppressed(suppressed: boolean): void {
    this.#suppressAudio = suppressed;
  }

  /** The RTP timestamp an event starting now should carry, in `clockRate` units. */
  timestampNow(clockRate: number): number {
    const now = performance.now();
    if (this.#lastTs === undefined) return (this.#tsBase + Math.round(((now - this.#createdAt) * clockRate) / 1000)) >>> 0;
    const scale = clockRate / this.#clockRate;
    return (Math.round(this.#lastTs * scale) + Math.round(((now - this.#lastSentAt) * clockRate) / 1000)) >>> 0;
  }

  /** Inject a telephone-event packet into our stream toward the PBX. */
  sendTelephoneEvent(payload: Buffer, marker: boolean, timestamp: number): void {
    if (this.#tePt === undefined) return;
    this.#seq = (this.#seq + 1) & 0xffff;
    const packet = buildRtp({ payloadType: this.#tePt, sequenceNumber: this.#seq, timestamp, ssrc: this.#ssrc, marker, payload });
    this.#sendToPbx(packet, false);
  }

  /**
   * Send one packet of the call's audio toward the PBX (Meta's, passed through or transcoded in this thread). Its
   * header is rewritten in place: our SSRC, our sequence number moved on by `seqAdvance` (a gap in the source stays
   * visible to the PBX as loss), the PBX's payload type, `timestamp` (PBX clock) and `marker`; a header extension is
   * removed. Held back while a telephone event is sent, on hold, and before the PBX's SDP.
   */
  sendAudio(packet: Buffer, timestamp: number, marker: boolean, seqAdvance: number): void {
    const pt = this.#audioPt;
    if (this.#suppressAudio || pt === undefined) return;
    this.#seq = (this.#seq + seqAdvance) & 0xffff;
    this.#lastTs = timestamp;
    this.#lastSentAt = performance.now();
    writeRtpHeader(packet, pt, marker, this.#seq, timestamp, this.#ssrc);
    this.#sendToPbx(stripRtpHeaderExtension(packet), false);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#rtcpTimer);
    if (typeof this.#rtcpSocket === 'object') this.#rtcpSocket.close();
    this.#handlers = undefined;
    this.#outer.close();
    this.#inner.close();
  }

  #sendToPbx(packet: Buffer, rtcp: boolean): void {
    if (this.#closed || !this.#sending || !this.#remote) return;
    const wire = this.#srtp ? this.#srtp.protect(packet, rtcp) : packet;
    if (wire === undefined) {
      if (!this.#srtpExpiredLogged) this.#log.warn('our SRTP key lifetime toward the PBX is used up: nothing more is sent');
      this.#srtpExpiredLogged = true;
      return;
    }
    if (rtcp) {
      const from = !this.#rtcpMux && typeof this.#rtcpSocket === 'object' ? this.#rtcpSocket : this.#outer;
      from.send(wire, this.#remote.rtcpPort, this.#remote.address);
      return;
    }
    this.#outer.send(wire, this.#remote.port, this.#remote.address);
    this.#sentPackets++;
    this.#sentOctets += packet.length - RTP_HEADER_BYTES;
  }

  #drop(reason: RtpDropReason, rinfo: dgram.RemoteInfo): false {
    if (this.dropped[reason]++ === 0) {
      this.#log.warn({ reason, address: rinfo.address, port: rinfo.port }, 'packet on the PBX RTP port dropped (further drops counted)');
    }
    this.#metrics?.rtpDropped(reason);
    return false;
  }

  /** Whether a packet from `rinfo` is heard (see the module comment); latches or moves the latch as a side effect. */
  #admitSource(rtcp: boolean, rinfo: dgram.RemoteInfo): boolean {
    const source = hostKey(rinfo.address);
    const sdp = this.#sdpRemote;
    if (!this.#comedia) {
      if (!sdp) return this.#drop('before_sdp', rinfo);
      if (source !== hostKey(sdp.address)) return this.#drop('wrong_source', rinfo);
      return true;
    }
    if (!this.#latched) {
      const allowed = (sdp !== undefined && source === hostKey(sdp.address)) || this.#latchAllowed(source);
      if (!allowed) return this.#drop('wrong_source', rinfo);
      // RTCP may come from the next port up: only RTP says where the PBX's audio comes from.
      if (!rtcp) this.#latch(rinfo, 'latched onto PBX RTP source');
      return true;
    }
    const latched = this.#remote!;
    if (source !== hostKey(latched.address)) return this.#drop('wrong_source', rinfo);
    if (rtcp || rinfo.port === latched.port) {
      if (!rtcp) this.#relatch = undefined;
      return true;
    }
    const run = this.#relatch?.port === rinfo.port ? this.#relatch.packets + 1 : 1;
    this.#relatch = { port: rinfo.port, packets: run };
    if (run < RELATCH_PACKETS) return this.#drop('wrong_source', rinfo);
    this.#relatch = undefined;
    this.#latch(rinfo, 'PBX RTP source moved to another port of its address');
    return true;
  }

  #latch(rinfo: dgram.RemoteInfo, message: string): void {
    this.#latched = true;
    // The SDP's a=rtcp port holds when the PBX sends from the address and port it announced (no NAT between us).
    const sdp = this.#sdpRemote;
    const announced = sdp?.address === rinfo.address && sdp.port === rinfo.port ? this.#sdpRtcpPort : undefined;
    const rtcpPort = this.#rtcpMux ? rinfo.port : (announced ?? rinfo.port + 1);
    this.#remote = { address: rinfo.address, port: rinfo.port, rtcpPort };
    this.#log.info({ address: rinfo.address, port: rinfo.port }, message);
  }

  #onOuter(wire: Buffer, rinfo: dgram.RemoteInfo): void {
    if (this.#closed) return;
    const rtcp = isRtcp(wire);
    if (!rtcp && !parseRtp(wire)) {
      this.#drop('malformed', rinfo);
      return;
    }
    // SRTP before the source check: only an authenticated packet may latch.
    const msg = this.#srtp ? this.#srtp.unprotect(wire, rtcp) : wire;
    if (typeof msg === 'string') {
      this.#drop(SRTP_DROP_LABELS[msg], rinfo);
      return;
    }
    const header = rtcp ? undefined : parseRtp(msg);
    if (!rtcp && !header) {
      this.#drop('malformed', rinfo);
      return;
    }
    if (!this.#admitSource(rtcp, rinfo)) return;
    if (!header) {
      this.#rtcp.received(msg, this.#clockRate);
      this.forwardToMediasoup(msg);
      return;
    }
    if (header.payloadType === this.#tePt) {
      this.#handlers?.onTelephoneEvent(msg, header);
      return;
    }
    if (header.payloadType !== this.#audioPt) return;
    this.receive.update(header, this.#clockRate);
    if (!this.#lateFromPbx.admit(header.ssrc, header.timestamp, header.marker)) return;
    this.#handlers?.onAudio(msg, header);
  }

  #onInner(msg: Buffer): void {
    if (this.#closed) return;
    // The worker's reports describe its consumer's stream (its counts, its clock); the PBX hears ours (PbxRtcp).
    if (isRtcp(msg)) return;
    const header = parseRtp(msg);
    if (!header) return;
    if (this.#innerPt !== undefined && header.payloadType !== this.#innerPt) return; // the previous codec's stream
    // A new consumer (codec change) starts its own SSRC and sequence: continue our stream from it.
    const newStream = this.#lastInSsrc !== header.ssrc || this.#lastInSeq === undefined;
    let gap = newStream ? 1 : seqDiff(header.sequenceNumber, this.#lastInSeq!);
    if (gap <= 0 && gap > -100) return; // duplicate or late
    // Dropped before the sequence bookkeeping: the PBX sees the gap as loss.
    if (!this.#lateToPbx.admit(header.ssrc, header.timestamp, header.marker)) return;
    if (gap <= 0) gap = 1;
    this.#lastInSsrc = header.ssrc;
    this.#lastInSeq = header.sequenceNumber;
    // Keep the source's loss visible to the PBX, but never a huge jump. The worker's packets carry a header extension
    // block (mediasoup writes one on every forwarded packet); the PBX negotiated none.
    this.sendAudio(msg, header.timestamp, header.marker, gap < 100 ? gap : 1);
  }
}
