/**
 * The PBX-facing RTP port. A node UDP socket (SSRC-agnostic, unlike a mediasoup PlainTransport) that relays
 * audio from a mediasoup PlainTransport over loopback to the PBX (and RTCP both ways), hands the PBX's audio to
 * node, intercepts RFC 4733 packets, latches onto the PBX's real address (symmetric RTP) and owns the outgoing SSRC
 * and sequence numbers toward the PBX.
 */
import dgram from 'node:dgram';
import type { Logger } from 'pino';
import { MediaError } from '../core/errors.js';
import { LateAudioGuard } from './LateAudioGuard.js';
import type { RtpHeader } from './rtp.js';
import { buildRtp, isRtcp, parseRtp, randomSeq, randomSsrc, rewriteRtp, seqDiff, stripRtpHeaderExtension } from './rtp.js';

export interface PbxRtpSocketOptions {
  log: Logger;
  /** Local address to bind toward the PBX. */
  listenIp: string;
  /** Port range; `minPort` 0 binds an ephemeral port. */
  minPort: number;
  maxPort: number;
  /** Learn the PBX's address from its first packet (symmetric RTP). */
  comedia: boolean;
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
    const socket = dgram.createSocket(type);
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
    const socket = dgram.createSocket(type);
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
  readonly #createdAt = performance.now();
  readonly #tsBase = randomSsrc();

  readonly receive = new ReceiveStats();
  /** PBX audio that waited too long before we read it is not passed on (see LateAudioGuard). */
  readonly #lateFromPbx: LateAudioGuard;
  /** Audio toward the PBX that fell behind inside the bridge is not sent. */
  readonly #lateToPbx: LateAudioGuard;

  private constructor(log: Logger, outer: dgram.Socket, inner: dgram.Socket, comedia: boolean) {
    this.#log = log;
    this.#lateFromPbx = new LateAudioGuard({
      clockRate: this.#clockRate,
      onDrops: (report) => log.warn(report, 'late audio from the PBX dropped: the bridge fell behind reading it'),
    });
    this.#lateToPbx = new LateAudioGuard({
      clockRate: this.#clockRate,
      onDrops: (report) => log.warn(report, 'late audio toward the PBX dropped: the bridge fell behind'),
    });
    this.#outer = outer;
    this.#inner = inner;
    this.#comedia = comedia;
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
      inner = dgram.createSocket('udp4');
      await bindSocket(inner, 0, '127.0.0.1');
    } catch (err) {
      outer.close();
      throw new MediaError('NO_PORT', 'could not bind the loopback RTP socket', { cause: err });
    }
    const log = options.log.child({ pbxRtpPort: outer.address().port });
    return new PbxRtpSocket(log, outer, inner, options.comedia);
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
      this.#log.debug({ address, port }, 'PBX RTP target set');
    }
    if (changed || !this.#latched) this.#remote = { address, port, rtcpPort: rtcpMux ? port : (rtcpPort ?? port + 1) };
  }

  #sdpRemote?: { address: string; port: number };
  #sdpRtcpPort?: number;
  #rtcpMux = true;

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

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#handlers = undefined;
    this.#outer.close();
    this.#inner.close();
  }

  #sendToPbx(packet: Buffer, rtcp: boolean): void {
    if (this.#closed || !this.#sending || !this.#remote) return;
    this.#outer.send(packet, rtcp ? this.#remote.rtcpPort : this.#remote.port, this.#remote.address);
    if (!rtcp) this.#sentPackets++;
  }

  #onOuter(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (this.#closed) return;
    if (this.#comedia && !this.#latched) {
      this.#latched = true;
      // The SDP's a=rtcp port holds when the PBX sends from the address and port it announced (no NAT between us).
      const sdp = this.#sdpRemote;
      const announced = sdp?.address === rinfo.address && sdp.port === rinfo.port ? this.#sdpRtcpPort : undefined;
      const rtcpPort = this.#rtcpMux ? rinfo.port : (announced ?? rinfo.port + 1);
      this.#remote = { address: rinfo.address, port: rinfo.port, rtcpPort };
      this.#log.debug({ address: rinfo.address, port: rinfo.port }, 'latched onto PBX RTP source');
    }
    if (isRtcp(msg)) {
      this.forwardToMediasoup(msg);
      return;
    }
    const header = parseRtp(msg);
    if (!header) return;
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
    if (isRtcp(msg)) {
      // Sender reports describe mediasoup's consumer stream; the PBX knows it under our SSRC.
      if (msg[1] === 200) msg.writeUInt32BE(this.#ssrc, 4);
      this.#sendToPbx(msg, true);
      return;
    }
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
    if (this.#suppressAudio) return;
    // Keep the source's loss visible to the PBX, but never a huge jump.
    this.#seq = (this.#seq + (gap < 100 ? gap : 1)) & 0xffff;
    this.#lastTs = header.timestamp;
    this.#lastSentAt = performance.now();
    rewriteRtp(msg, { ssrc: this.#ssrc, sequenceNumber: this.#seq, payloadType: this.#audioPt });
    // The worker's packets carry a header extension block (mediasoup writes one on every forwarded packet); the PBX
    // negotiated none.
    this.#sendToPbx(stripRtpHeaderExtension(msg), false);
  }
}
