/**
 * An RTP endpoint for tests that behaves like a PBX's media side: a UDP socket on loopback, 20 ms packets on a
 * timer, a random SSRC and no a=ssrc in its SDP. It plays tones and RFC 4733 digits and records what it hears.
 *
 * `RtpMediaCore` is the socket-less part (codec, tone and DTMF sender, decoder and recorder) so that other test
 * doubles (a fake Messenger leg) can reuse it over another transport.
 */
import dgram from 'node:dgram';
import { OpusDecoder, OpusEncoder } from '../../media/dsp/opus.js';
import { decodePcma, decodePcmu, encodePcma, encodePcmu } from '../../media/dsp/g711.js';
import {
  buildRtp,
  buildTelephoneEvent,
  digitToEvent,
  eventToDigit,
  parseRtp,
  parseTelephoneEvent,
  randomSeq,
  randomSsrc,
} from '../../media/rtp.js';
import type { RtpHeader } from '../../media/rtp.js';
import { isRtcp } from '../../media/rtp.js';
import { SrtpContext } from '../../core/srtp.js';
import { chooseSdesCrypto, formatSdesCrypto, newSdesCrypto, sdesProfile } from '../../media/sdes.js';
import type { SdesCrypto, SdesSuite } from '../../media/sdes.js';

export type RtpPeerCodec = 'PCMU' | 'PCMA' | 'opus';

export interface RtpMediaCoreOptions {
  codec: RtpPeerCodec;
  /** Audio payload type. Default 0 (PCMU), 8 (PCMA), 111 (opus). */
  pt?: number;
  /** telephone-event payload type; undefined: no RFC 4733 (received telephone-events are ignored). */
  tePt?: number;
  /** telephone-event clock rate. Default: the codec's clock (8000, or 48000 for Opus). */
  teClockRate?: number;
  /** Where packets go. */
  transmit(packet: Buffer): void;
  /**
   * Load generation: do not decode or keep what arrives (only counts), and encode a tone frame once and resend it
   * (for tones with whole cycles per 20 ms). Default false.
   */
  lean?: boolean;
  /** Audio payloads for which this returns true are counted but not added to `receivedPcm()`. */
  ignorePayload?: (payload: Uint8Array) => boolean;
}

/** Packets and digits we sent and heard. */
export interface ReceivedPacket extends RtpHeader {
  at: number;
}

const DEFAULT_PT: Record<RtpPeerCodec, number> = { PCMU: 0, PCMA: 8, opus: 111 };

export class RtpMediaCore {
  readonly codec: RtpPeerCodec;
  readonly pt: number;
  readonly tePt?: number;
  readonly teClockRate: number;
  /** Sample rate of `receivedPcm()` and of the audio we send: 8000 for G.711, 48000 for Opus. */
  readonly sampleRate: number;
  /** RTP clock of the audio codec. */
  readonly clockRate: number;
  ssrc = randomSsrc();
  packetsReceived = 0;
  /** Packets of our audio payload type that our decoder refused (Opus only: any bytes are valid G.711). */
  decodeErrors = 0;
  packetsSent = 0;
  /** Every RTP packet heard (headers only). */
  readonly received: ReceivedPacket[] = [];

  readonly #transmit: (packet: Buffer) => void;
  readonly #lean: boolean;
  readonly #ignorePayload?: (payload: Uint8Array) => boolean;
  #cachedTone?: { hz: number; payload: Buffer };
  readonly #frameSamples: number;
  readonly #pcm: Int16Array[] = [];
  readonly #digits: string[] = [];
  readonly #endedEvents = new Set<number>();
  #encoder?: OpusEncoder;
  #decoder?: OpusDecoder;
  #seq = randomSeq();
  #ts = randomSsrc();
  #timer?: NodeJS.Timeout;
  #tone?: { hz: number; amplitude: number; n: number };
  #source?: (frame: Int16Array) => boolean;
  #dtmf?: { event: number; timestamp: number; frames: number; totalFrames: number; endSent: number; resolve: () => void };
  #closed = false;
  #lastTickAt?: number;
  #audioPackets = 0;
  /** The next audio packet starts a talkspurt (marker bit). */
  #talkspurt = true;
  /** Audio packets for which this returns true are counted (sequence number used) but not sent: loss. */
  drop?: (audioPacketIndex: number) => boolean;

  constructor(options: RtpMediaCoreOptions) {
    this.codec = options.codec;
    this.pt = options.pt ?? DEFAULT_PT[options.codec];
    this.tePt = options.tePt;
    this.clockRate = options.codec === 'opus' ? 48000 : 8000;
    this.sampleRate = this.clockRate;
    this.teClockRate = options.teClockRate ?? this.clockRate;
    this.#transmit = options.transmit;
    this.#lean = options.lean ?? false;
    this.#ignorePayload = options.ignorePayload;
    this.#frameSamples = this.sampleRate / 50;
  }

  /** Start sending a sine tone (level in dBFS, default -12) in 20 ms packets. */
  startTone(hz: number, dbfs = -12): void {
    this.#tone = { hz, amplitude: 32767 * 10 ** (dbfs / 20), n: 0 };
    this.#ensureTimer();
  }

  /**
   * Send audio produced by `fill` (one 20 ms frame at `sampleRate` per call) until it returns false.
   * Replaces the tone.
   */
  startSource(fill: (frame: Int16Array) => boolean): void {
    this.#tone = undefined;
    this.#source = fill;
    this.#ensureTimer();
  }

  /** Stop the tone; nothing is sent afterwards (unless a digit is being sent). */
  stopTone(): void {
    this.#tone = undefined;
    this.#source = undefined;
  }

  /** Send one RFC 4733 digit (updates every 20 ms, end packet three times); resolves after its end packets. */
  sendDtmf(digit: string, durationMs: number): Promise<void> {
    const event = digitToEvent(digit);
    if (event === undefined || this.tePt === undefined) return Promise.reject(new Error(`cannot send digit ${digit}`));
    if (this.#dtmf) return Promise.reject(new Error('a digit is already being sent'));
    return new Promise((resolve) => {
      const timestamp = this.#ts;
      this.#dtmf = { event, timestamp, frames: 0, totalFrames: Math.max(1, Math.round(durationMs / 20)), endSent: 0, resolve };
      this.#ensureTimer();
    });
  }

  /** Send digits one after another with `gapMs` of pause. */
  async sendDigits(digits: string, durationMs = 100, gapMs = 80): Promise<void> {
    for (const digit of digits) {
      await this.sendDtmf(digit, durationMs);
      await new Promise((r) => setTimeout(r, gapMs));
    }
  }

  /** Everything heard so far, decoded, concatenated (gaps are not filled). */
  receivedPcm(): Int16Array {
    const total = this.#pcm.reduce((n, c) => n + c.length, 0);
    const out = new Int16Array(total);
    let offset = 0;
    for (const chunk of this.#pcm) {
      out.set(chunk, offset);
      offset += chunk.length;
    }
    return out;
  }

  /** Forget the audio heard so far. */
  clearReceived(): void {
    this.#pcm.length = 0;
  }

  /** Digits heard as RFC 4733 events (one per event, at its end). */
  receivedDtmf(): string[] {
    return [...this.#digits];
  }

  /** Handle one packet from the far end. */
  receive(packet: Buffer): void {
    const header = parseRtp(packet);
    if (!header || this.#closed) return;
    this.packetsReceived++;
    if (this.#lean) return;
    this.received.push({ ...header, at: performance.now() });
    const payload = packet.subarray(header.payloadOffset, header.payloadOffset + header.payloadLength);
    if (this.tePt !== undefined && header.payloadType === this.tePt) {
      const event = parseTelephoneEvent(payload);
      if (event?.end && !this.#endedEvents.has(header.timestamp)) {
        this.#endedEvents.add(header.timestamp);
        const digit = eventToDigit(event.event);
        if (digit) this.#digits.push(digit);
      }
      return;
    }
    if (header.payloadType !== this.pt) return;
    let pcm: Int16Array;
    try {
      pcm = this.#decode(payload);
    } catch {
      // Not our codec's payload (an Opus decoder refuses it): counted, like a PBX's decoder would conceal it.
      this.decodeErrors++;
      return;
    }
    if (!this.#ignorePayload?.(payload)) this.#pcm.push(pcm);
  }

  close(): void {
    this.#closed = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#encoder?.close();
    this.#decoder?.close();
  }

  #decode(payload: Uint8Array): Int16Array {
    if (this.codec === 'PCMU') return decodePcmu(payload);
    if (this.codec === 'PCMA') return decodePcma(payload);
    this.#decoder ??= new OpusDecoder({ channels: 1, sample_rate: 48000 });
    const out = this.#decoder.decode(payload);
    return new Int16Array(out.buffer.slice(out.byteOffset, out.byteOffset + out.byteLength));
  }

  #encode(pcm: Int16Array): Buffer {
    if (this.codec === 'PCMU') return encodePcmu(pcm);
    if (this.codec === 'PCMA') return encodePcma(pcm);
    if (!this.#encoder) {
      this.#encoder = new OpusEncoder({ channels: 1, sample_rate: 48000, application: 'voip' });
      this.#encoder.complexity = 3;
    }
    return Buffer.from(this.#encoder.encode(pcm));
  }

  #ensureTimer(): void {
    if (this.#timer || this.#closed) return;
    this.#talkspurt = true;
    // Timestamps keep pace with the wall clock across pauses (as after DTX or silence suppression).
    if (this.#lastTickAt !== undefined) {
      const frames = Math.round((performance.now() - this.#lastTickAt) / 20) - 1;
      if (frames > 0) this.#ts = (this.#ts + frames * this.#frameSamples) >>> 0;
    }
    this.#timer = setInterval(() => this.#tick(), 20);
  }

  #send(pt: number, payload: Uint8Array, marker: boolean, timestamp: number): void {
    this.#seq = (this.#seq + 1) & 0xffff;
    this.packetsSent++;
    this.#transmit(buildRtp({ payloadType: pt, sequenceNumber: this.#seq, timestamp, ssrc: this.ssrc, marker, payload }));
  }

  #sendAudio(pcm: Int16Array, timestamp: number): void {
    const index = this.#audioPackets++;
    let payload: Buffer;
    const tone = this.#tone;
    if (this.#lean && tone && (tone.hz * 20) % 1000 === 0) {
      if (this.#cachedTone?.hz !== tone.hz) this.#cachedTone = { hz: tone.hz, payload: this.#encode(pcm) };
      payload = this.#cachedTone.payload;
    } else {
      payload = this.#encode(pcm);
    }
    if (this.drop?.(index)) {
      this.#seq = (this.#seq + 1) & 0xffff;
      return;
    }
    this.#send(this.pt, payload, this.#talkspurt, timestamp);
    this.#talkspurt = false;
  }

  #tick(): void {
    if (this.#closed) return;
    this.#lastTickAt = performance.now();
    const dtmf = this.#dtmf;
    if (dtmf) {
      dtmf.frames++;
      const units = Math.round((dtmf.frames * 20 * this.teClockRate) / 1000);
      const end = dtmf.frames >= dtmf.totalFrames;
      const payload = buildTelephoneEvent({ event: dtmf.event, end, volume: 10, duration: units });
      if (!end) this.#send(this.tePt!, payload, dtmf.frames === 1, dtmf.timestamp);
      else {
        this.#send(this.tePt!, payload, false, dtmf.timestamp);
        if (++dtmf.endSent >= 3) {
          this.#dtmf = undefined;
          dtmf.resolve();
        }
        dtmf.frames--;
      }
    }
    // Audio timestamps keep running during the event; the audio itself pauses (RFC 4733 section 2.5.1.1).
    const frameTs = this.#ts;
    this.#ts = (this.#ts + this.#frameSamples) >>> 0;
    if (this.#tone && !dtmf) {
      const pcm = new Int16Array(this.#frameSamples);
      const w = (2 * Math.PI * this.#tone.hz) / this.sampleRate;
      for (let i = 0; i < pcm.length; i++) pcm[i] = Math.round(this.#tone.amplitude * Math.sin(w * this.#tone.n++));
      this.#sendAudio(pcm, frameTs);
    } else if (this.#source && !dtmf) {
      const pcm = new Int16Array(this.#frameSamples);
      if (this.#source(pcm)) this.#sendAudio(pcm, frameTs);
      else this.#source = undefined;
    }
    if (!this.#tone && !this.#source && !this.#dtmf && this.#timer) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
  }
}

export interface RtpPeerOptions {
  codec: RtpPeerCodec;
  pt?: number;
  tePt?: number;
  teClockRate?: number;
  /** Loopback address to bind. Default 127.0.0.1. */
  address?: string;
  /** Load generation only: count what arrives without decoding, reuse encoded tone frames. */
  lean?: boolean;
  /**
   * SRTP with SDES keys, like an SRTP PBX: its SDP is RTP/SAVP with an `a=crypto` line of this suite and a key of its
   * own; `useCrypto` takes the far end's line. Everything sent is protected; what fails to unprotect is counted.
   */
  srtp?: SdesSuite;
  /** Put `a=rtcp-mux` in its SDP (RTCP on the RTP port, where it listens). Default false. */
  rtcpMux?: boolean;
}

export interface RtpPeer {
  readonly port: number;
  readonly address: string;
  /** Sample rate of `receivedPcm()`: 8000 for G.711, 48000 for Opus. */
  readonly sampleRate: number;
  readonly packetsReceived: number;
  /** Packets of our audio payload type that our decoder refused (Opus only). */
  readonly decodeErrors: number;
  readonly packetsSent: number;
  /** Our SSRC (random; change it to act like a PBX that restarts its stream). */
  ssrc: number;
  /** Headers of every packet heard. */
  readonly received: ReceivedPacket[];
  /** Source address of the last packet heard. */
  readonly lastSource?: { address: string; port: number };
  /** An SDP body (offer or answer) describing this peer: one audio m-line, no a=ssrc. */
  sdp(direction?: 'sendrecv' | 'sendonly' | 'recvonly' | 'inactive'): string;
  /**
   * SRTP peers: take the far end's key from its SDP (the first usable `a=crypto` line: an answer to our offer, or the
   * line we answer, whose tag and suite our next `sdp()` repeats).
   */
  useCrypto(sdp: string): void;
  /** SRTP peers: a new key of our own (the next `sdp()` carries it). */
  renewKey(): void;
  /** Send one RTCP packet (protected as SRTCP by SRTP peers); `tamper` flips a bit after protection. */
  sendRtcp(packet: Buffer, tamper?: boolean): void;
  /** SRTP peers: what was unprotected, and what was refused. */
  readonly srtpStats: { rtp: number; rtcp: number; refused: number };
  setRemote(address: string, port: number): void;
  startTone(hz: number, dbfs?: number): void;
  /** Send audio from `fill` (20 ms frames at `sampleRate`) until it returns false. */
  startSource(fill: (frame: Int16Array) => boolean): void;
  stopTone(): void;
  sendDtmf(digit: string, durationMs: number): Promise<void>;
  sendDigits(digits: string, durationMs?: number, gapMs?: number): Promise<void>;
  /**
   * Impair what we send, as a bad network would: audio packet `i` (0, 1, ...) is lost when `drop(i)`, and leaves
   * `delayMs(i)` late (jitter). Undefined functions: no impairment.
   */
  impair(o: { drop?: (i: number) => boolean; delayMs?: (i: number) => number }): void;
  receivedPcm(): Int16Array;
  clearReceived(): void;
  receivedDtmf(): string[];
  close(): void;
}

export async function createRtpPeer(options: RtpPeerOptions): Promise<RtpPeer> {
  const address = options.address ?? '127.0.0.1';
  const socket = dgram.createSocket(address.includes(':') ? 'udp6' : 'udp4');
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(0, address, () => {
      socket.off('error', reject);
      resolve();
    });
  });
  let remote: { address: string; port: number } | undefined;
  let lastSource: { address: string; port: number } | undefined;
  let closed = false;
  // SRTP (SDES): our line (suite, tag, key) and the contexts.
  let local: SdesCrypto | undefined = options.srtp ? newSdesCrypto(1, options.srtp) : undefined;
  let outbound = local ? new SrtpContext({ profile: sdesProfile(local.suite), ...local.keys[0]! }) : undefined;
  let inbound: SrtpContext | undefined;
  const srtpStats = { rtp: 0, rtcp: 0, refused: 0 };
  let delayMs: ((i: number) => number) | undefined;
  let sentIndex = 0;
  const delayed = new Set<NodeJS.Timeout>();
  const core = new RtpMediaCore({
    codec: options.codec,
    pt: options.pt,
    tePt: options.tePt,
    teClockRate: options.teClockRate,
    lean: options.lean,
    transmit: (packet) => {
      const to = remote;
      if (!to || closed) return;
      const delay = delayMs?.(sentIndex++) ?? 0;
      if (delay <= 0) {
        socket.send(outbound ? outbound.protectRtp(packet) : packet, to.port, to.address);
        return;
      }
      const timer = setTimeout(() => {
        delayed.delete(timer);
        if (!closed) socket.send(outbound ? outbound.protectRtp(packet) : packet, to.port, to.address);
      }, delay);
      delayed.add(timer);
    },
  });
  socket.on('message', (msg, rinfo) => {
    lastSource = { address: rinfo.address, port: rinfo.port };
    if (local) {
      const rtcp = isRtcp(msg);
      const plain = inbound === undefined ? 'no key' : rtcp ? inbound.unprotectRtcp(msg) : inbound.unprotectRtp(msg);
      if (typeof plain === 'string') {
        srtpStats.refused++;
        return;
      }
      srtpStats[rtcp ? 'rtcp' : 'rtp']++;
      if (!rtcp) core.receive(plain);
      return;
    }
    core.receive(msg);
  });
  const port = socket.address().port;
  const sessionId = Math.floor(Math.random() * 1e9);
  let version = 0;
  const codecLine =
    options.codec === 'opus' ? `opus/48000/2` : options.codec === 'PCMU' ? 'PCMU/8000' : 'PCMA/8000';
  return {
    port,
    address,
    sampleRate: core.sampleRate,
    get packetsReceived() {
      return core.packetsReceived;
    },
    get decodeErrors() {
      return core.decodeErrors;
    },
    get packetsSent() {
      return core.packetsSent;
    },
    get ssrc() {
      return core.ssrc;
    },
    set ssrc(value: number) {
      core.ssrc = value;
    },
    received: core.received,
    get lastSource() {
      return lastSource;
    },
    sdp(direction = 'sendrecv') {
      const ipVer = address.includes(':') ? 'IP6' : 'IP4';
      const pts = [core.pt, ...(core.tePt !== undefined ? [core.tePt] : [])].join(' ');
      const lines = [
        'v=0',
        `o=peer ${sessionId} ${version++} IN ${ipVer} ${address}`,
        's=test peer',
        `c=IN ${ipVer} ${address}`,
        't=0 0',
        `m=audio ${port} ${local ? 'RTP/SAVP' : 'RTP/AVP'} ${pts}`,
        ...(local ? [`a=crypto:${formatSdesCrypto(local)}`] : []),
        `a=rtpmap:${core.pt} ${codecLine}`,
        ...(core.tePt !== undefined ? [`a=rtpmap:${core.tePt} telephone-event/${core.teClockRate}`, `a=fmtp:${core.tePt} 0-16`] : []),
        'a=ptime:20',
        ...(options.rtcpMux ? ['a=rtcp-mux'] : []),
        `a=${direction}`,
      ];
      return `${lines.join('\r\n')}\r\n`;
    },
    useCrypto(sdp: string) {
      const lines = [...sdp.matchAll(/^a=crypto:(.*)$/gm)].map((m) => m[1]!.trim());
      // Our own suite first, as a PBX configured for one suite would choose.
      const ours = local ? lines.filter((l) => l.split(' ')[1] === local!.suite) : [];
      const choice = chooseSdesCrypto([...ours, ...lines.filter((l) => !ours.includes(l))]);
      if ('reasons' in choice) throw new Error(`no usable a=crypto line: ${choice.reasons.join('; ')}`);
      const theirs = choice.crypto;
      if (local && (local.suite !== theirs.suite || local.tag !== theirs.tag)) {
        local = local.suite === theirs.suite ? { ...local, tag: theirs.tag } : newSdesCrypto(theirs.tag, theirs.suite);
        outbound = new SrtpContext({ profile: sdesProfile(local.suite), ...local.keys[0]! });
      }
      inbound = new SrtpContext({ profile: sdesProfile(theirs.suite), ...theirs.keys[0]! });
    },
    renewKey() {
      if (!local) return;
      local = newSdesCrypto(local.tag, local.suite);
      outbound = new SrtpContext({ profile: sdesProfile(local.suite), ...local.keys[0]! });
    },
    srtpStats,
    sendRtcp(packet: Buffer, tamper = false) {
      if (!remote || closed) return;
      const wire = outbound ? outbound.protectRtcp(packet) : Buffer.from(packet);
      if (tamper) wire[wire.length - 1] = wire[wire.length - 1]! ^ 0x01;
      socket.send(wire, remote.port, remote.address);
    },
    setRemote(addr: string, p: number) {
      remote = { address: addr, port: p };
    },
    startTone: (hz, dbfs) => core.startTone(hz, dbfs),
    startSource: (fill) => core.startSource(fill),
    stopTone: () => core.stopTone(),
    sendDtmf: (digit, durationMs) => core.sendDtmf(digit, durationMs),
    sendDigits: (digits, durationMs, gapMs) => core.sendDigits(digits, durationMs, gapMs),
    receivedPcm: () => core.receivedPcm(),
    clearReceived: () => core.clearReceived(),
    receivedDtmf: () => core.receivedDtmf(),
    impair(o) {
      core.drop = o.drop;
      delayMs = o.delayMs;
    },
    close() {
      if (closed) return;
      closed = true;
      for (const timer of delayed) clearTimeout(timer);
      delayed.clear();
      core.close();
      socket.close();
    },
  };
}
