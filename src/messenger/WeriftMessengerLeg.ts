/**
 * The WebRTC leg toward Meta's media servers, built on werift's parts (not its RTCPeerConnection): werift's ICE
 * agent (full, controlling) and its DTLS client; SRTP is ours (src/core/srtp.ts, keyed from the DTLS exporter).
 * Meta's servers are ICE-lite and answer
 * a=setup:passive, so this side nominates the pair and starts DTLS; it also stays the DTLS client when Meta sends
 * an offer. Using the parts directly gives us exact control of the SDP, of the DTLS start (werift's
 * RTCDtlsTransport waits a fixed 100 ms before its ClientHello; here the ClientHello leaves as soon as ICE is
 * connected) and of timeouts. Everything werift-specific lives in this file and in the patches behind
 * werift/index.ts.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import type { Socket } from 'node:dgram';
import { isIP, isIPv4, isIPv6 } from 'node:net';
import type { Logger } from 'pino';
import {
  Candidate,
  Connection,
  DtlsClient,
  ProtectionProfileAeadAes128Gcm,
  ProtectionProfileAes128CmHmacSha1_80,
  RtcpSenderInfo,
  RtcpSrPacket,
} from 'werift';
import type { CandidatePair, IceOptions, IceState, SrtpProfile, Transport } from 'werift';
import { InvalidStateError, MessengerLegError } from '../core/errors.js';
import { OwnedTimers } from '../core/OwnedTimers.js';
import { TypedEmitter } from '../core/TypedEmitter.js';
import type { MessengerLeg, MessengerLegEvents, MessengerNegotiated, RemoteReport } from '../calls/ports.js';
import { RoundTrips, ntpTimestamp, readReportBlocks, rttFromBlock, wallClockMs } from '../core/rtcp.js';
import {
  OPUS_PT,
  buildAnswer,
  buildOffer,
  parseRemoteDescription,
  pickTelephoneEvent,
  usableCandidates,
} from './sdp.js';
import type { LocalTransportParams, RemoteDescription, SdpCandidate, SdpFingerprint } from './sdp.js';
import type { DtlsCertificate } from './certificate.js';
import { SrtpContext, isSupportedSrtpProfile, srtpMasterKeyLength, srtpMasterSaltLength } from '../core/srtp.js';
import type { SrtpDropReason, SrtpProfileId } from '../core/srtp.js';
import { applyWeriftPatches, skipLookupForNumericAddresses } from './werift/index.js';
import { whenLegConnected } from './whenLegConnected.js';

/** Set-up timings of one leg, in milliseconds, for logs and benchmarks. */
export interface MessengerLegTimings {
  /** Candidate gathering (first createOffer/applyOffer). */
  gatherMs?: number;
  /** From applying Meta's SDP to ICE connected (pair nominated). */
  answerToIceMs?: number;
  /** From applying Meta's SDP to DTLS connected (SRTP keys ready). */
  answerToDtlsMs?: number;
  /** DTLS handshake alone (ClientHello to connected). */
  dtlsMs?: number;
}

export interface MessengerLegStats {
  packetsSent: number;
  bytesSent: number;
  packetsReceived: number;
  bytesReceived: number;
  /** RTP handed to sendRtp before the leg was connected (dropped). */
  packetsDroppedNotConnected: number;
  /** Inbound SRTP/SRTCP that failed authentication, was replayed or did not parse. */
  packetsDroppedInvalid: number;
}

/**
 * Where media to Meta goes: the nominated pair's bound socket and numeric remote address, taken from werift's ICE
 * agent once per pair (werift's own `Connection.send` goes through three async calls and a lookup per packet).
 */
interface MediaPath {
  pair: CandidatePair;
  socket: Socket;
  host: string;
  port: number;
}

export interface WeriftMessengerLegOptions {
  callId: string;
  log: Logger;
  certificate: Promise<DtlsCertificate>;
  /** Interface addresses to gather on (at most one IPv4 and one IPv6); undefined = every interface. */
  iceListenIps?: string[];
  /** Address written into our candidates instead of the local one of the same family (1:1 NAT). */
  announcedIp?: string;
  portRange?: [number, number];
  /** ICE must connect within this many ms after Meta's SDP is applied. */
  iceTimeoutMs: number;
  /** DTLS must complete within this many ms after ICE connected. */
  dtlsTimeoutMs: number;
  /** Consent is lost when no consent response arrived for this many ms (RFC 7675: 30000). */
  consentTimeoutMs: number;
  /** Interval of our RTCP sender reports, ms; 0 disables them. */
  rtcpIntervalMs: number;
  /** SRTP profiles our DTLS ClientHello offers, in order of preference. Default: AEAD_AES_128_GCM, AES_CM_128_HMAC_SHA1_80. */
  srtpProfiles?: DtlsSrtpProfileId[];
  /** An ICE agent gathered ahead of the call with the same addresses and ports (see `prepareIce`); the leg owns it. */
  preparedIce?: PreparedIce;
}

/** An ICE agent whose candidates were gathered before its call, so that the call's offer does not wait for it. */
export interface PreparedIce {
  readonly agent: Connection;
}

type IceAddressOptions = Pick<WeriftMessengerLegOptions, 'iceListenIps' | 'portRange'>;

function iceOptions(o: IceAddressOptions): Partial<IceOptions> {
  const ips = o.iceListenIps;
  const options: Partial<IceOptions> = { useTcp: false, iceLite: false };
  if (o.portRange !== undefined) options.portRange = o.portRange;
  if (ips !== undefined && ips.length > 0) {
    const v4 = ips.find((ip) => isIPv4(ip));
    const v6 = ips.find((ip) => isIPv6(ip));
    // werift binds each family's socket to interfaceAddresses[family] and advertises the gathered address;
    // gathering exactly the configured addresses keeps both the same.
    options.useIpv4 = false;
    options.useIpv6 = false;
    options.additionalHostAddresses = [v4, v6].filter((ip): ip is string => ip !== undefined);
    options.interfaceAddresses = { ...(v4 ? { udp4: v4 } : {}), ...(v6 ? { udp6: v6 } : {}) };
    const allowed = new Set(options.additionalHostAddresses);
    options.filterCandidatePair = (pair: CandidatePair) => allowed.has(pair.localCandidate.host);
  } else {
    options.useIpv4 = true;
    options.useIpv6 = true;
  }
  return options;
}

function newIceAgent(o: IceAddressOptions): Connection {
  // Binds that never collide with another agent's nor crash the process (werift/udpBind.ts); idempotent, and done
  // already where the daemon or a leg factory started.
  applyWeriftPatches();
  const ice = new Connection(true, iceOptions(o));
  // werift falls back to a public STUN server when none is configured; we never ask one.
  ice.stunServer = undefined;
  return ice;
}

/** Gather an ICE agent's candidates ahead of a call (binds its sockets); free it with `closePreparedIce`. */
export async function prepareIce(o: IceAddressOptions): Promise<PreparedIce> {
  const agent = newIceAgent(o);
  try {
    await agent.gatherCandidates();
  } catch (err) {
    // The gathering error is what the caller reports; closing what it half-opened may fail the same way.
    await agent.close().catch(() => undefined);
    throw err;
  }
  return { agent };
}

/** False once a prepared agent cannot serve a call (closed, or it found no candidate). */
export function preparedIceUsable(prepared: PreparedIce): boolean {
  return prepared.agent.state === 'completed' && prepared.agent.localCandidates.some((c) => c.transport.toLowerCase() === 'udp');
}

/** Close a prepared agent that no call took (its sockets). */
export function closePreparedIce(prepared: PreparedIce): Promise<void> {
  return prepared.agent.close();
}

type LegState = 'new' | 'gathering' | 'ready' | 'connecting' | 'dtls' | 'connected' | 'closed';

/** The SRTP profiles werift's DTLS client can negotiate (core/srtp.ts implements more, for SDES). */
export type DtlsSrtpProfileId = typeof ProtectionProfileAeadAes128Gcm | typeof ProtectionProfileAes128CmHmacSha1_80;
const SRTP_PROFILES: DtlsSrtpProfileId[] = [ProtectionProfileAeadAes128Gcm, ProtectionProfileAes128CmHmacSha1_80];
/** Seconds between 1900 (NTP epoch) and 1970. */

function normalizeFingerprint(value: string): string {
  return value.trim().toUpperCase();
}

function certificateFingerprint(der: Buffer, algorithm: string): string | undefined {
  const hash = algorithm.toLowerCase().replace('-', '');
  if (!['sha1', 'sha224', 'sha256', 'sha384', 'sha512'].includes(hash)) return undefined;
  const hex = createHash(hash).update(der).digest('hex').toUpperCase();
  return hex.match(/.{2}/g)!.join(':');
}

/** The first sender report toward Meta leaves this long after DTLS connected (ms); then every `rtcpIntervalMs`. */
const FIRST_SR_AFTER_MS = 1000;

function isDtlsRecord(b: number): boolean {
  return b >= 20 && b <= 63;
}

function isRtpOrRtcp(b: number): boolean {
  return b >= 128 && b <= 191;
}

function isRtcpPacket(buf: Buffer): boolean {
  const pt = buf[1]! & 0x7f;
  return pt >= 64 && pt <= 95;
}

export class WeriftMessengerLeg extends TypedEmitter<MessengerLegEvents> implements MessengerLeg {
  readonly callId: string;
  readonly timings: MessengerLegTimings = {};
  readonly #options: WeriftMessengerLegOptions;
  readonly #log: Logger;
  readonly #listeners = new Set<(packet: Buffer) => void>();
  readonly #stats: MessengerLegStats = {
    packetsSent: 0,
    bytesSent: 0,
    packetsReceived: 0,
    bytesReceived: 0,
    packetsDroppedNotConnected: 0,
    packetsDroppedInvalid: 0,
  };
  readonly #ssrc = randomBytes(4).readUInt32BE(0);
  /** What Meta's last reception report said of our stream. */
  #remoteReport: RemoteReport | undefined;
  readonly #roundTrips = new RoundTrips();
  readonly #identity = {
    cname: randomBytes(12).toString('base64url'),
    streamId: randomUUID(),
    trackId: randomUUID(),
    sessionId: String(randomBytes(6).readUIntBE(0, 6)),
  };
  #state: LegState = 'new';
  #error: MessengerLegError | undefined;
  #ice: Connection | undefined;
  #dtls: DtlsClient | undefined;
  #dtlsTransport: Transport | undefined;
  /** Protects what we send (our DTLS keys). */
  #outbound: SrtpContext | undefined;
  /** Unprotects what Meta sends (its DTLS keys). */
  #inbound: SrtpContext | undefined;
  #mediaPath: MediaPath | undefined;
  /** Transports whose SRTP comes to the leg directly (see `#receiveDirectly`). */
  readonly #directTransports = new WeakSet<object>();
  #dropsLogged = 0;
  #local: LocalTransportParams | undefined;
  #gathering: Promise<LocalTransportParams> | undefined;
  #remote: RemoteDescription | undefined;
  #negotiated: MessengerNegotiated | undefined;
  #sdpVersion = 1;
  #offered = false;
  #remoteAppliedAt = 0;
  /** The last RTP packet sent: its timestamp and performance.now() (updated in place, no object per packet). */
  readonly #lastRtp = { sent: false, timestamp: 0, at: 0 };
  readonly #timers = new OwnedTimers();
  #consentTimer: NodeJS.Timeout | undefined;
  #rtcpTimer: NodeJS.Timeout | undefined;
  #released: Promise<void> = Promise.resolve();
  #sendErrorsLogged = 0;

  constructor(options: WeriftMessengerLegOptions) {
    super();
    this.#options = options;
    this.callId = options.callId;
    this.#log = options.log;
    // Owned from now on: close() closes it even if no offer was ever made.
    this.#ice = options.preparedIce?.agent;
  }

  get closed(): boolean {
    return this.#state === 'closed';
  }

  /** True once ICE and DTLS are up. */
  get connected(): boolean {
    return this.#state === 'connected';
  }

  /** The SSRC we send with (sendRtp rewrites packets to it). */
  get ssrc(): number {
    return this.#ssrc;
  }

  /** ICE state of the underlying agent, for diagnostics. */
  get iceState(): IceState | undefined {
    return this.#ice?.state;
  }

  /** Meta's view of the audio we send (RTCP reception reports), once one arrived. */
  remoteReport(): RemoteReport | undefined {
    return this.#remoteReport;
  }

  stats(): MessengerLegStats {
    return { ...this.#stats };
  }

  /** ICE/DTLS details for logs when something looks wrong (shape may change; not for program logic). */
  diagnostics(): Record<string, unknown> {
    const ice = this.#ice;
    const pair = ice?.nominated;
    return {
      state: this.#state,
      iceState: ice?.state,
      consentFresh: (ice as unknown as { consentFresh?: boolean } | undefined)?.consentFresh,
      pairs: ice?.candidatePairs.map((p) => ({
        local: `${p.localCandidate.host}:${p.localCandidate.port}`,
        remote: p.remoteAddr.join(':'),
        state: p.state,
        nominated: p.nominated,
      })),
      nominated: pair
        ? {
            local: `${pair.localCandidate.host}:${pair.localCandidate.port}`,
            remote: pair.remoteAddr.join(':'),
            packetsSent: pair.packetsSent,
            packetsReceived: pair.packetsReceived,
            responsesReceived: pair.responsesReceived,
          }
        : undefined,
      dtlsState: this.#dtls === undefined ? undefined : this.#dtls.connected ? 'connected' : 'connecting',
    };
  }

  /** Resolves once the sockets of this leg are closed (after close()). */
  whenReleased(): Promise<void> {
    return this.#released;
  }

  negotiated(): MessengerNegotiated | undefined {
    return this.#negotiated === undefined ? undefined : { ...this.#negotiated };
  }

  async createOffer(): Promise<string> {
    this.#assertOpen('createOffer');
    if (this.#remote !== undefined) throw new InvalidStateError('createOffer after a remote description');
    const local = await this.#gather();
    this.#assertOpen('createOffer');
    this.#offered = true;
    return buildOffer(local, this.#sdpVersion++);
  }

  async applyAnswer(sdp: string): Promise<void> {
    this.#assertOpen('applyAnswer');
    if (!this.#offered || this.#local === undefined) throw new InvalidStateError('applyAnswer without our offer');
    if (this.#remote !== undefined) throw new InvalidStateError('an answer was already applied');
    const remote = parseRemoteDescription(sdp, 'answer');
    const section = remote.sections.find((s) => s.kind === 'audio' && s.port !== 0 && s.opusPt !== undefined)!;
    if (remote.setup === 'active') {
      throw new MessengerLegError('sdp', 'answer asks us to be the DTLS server (a=setup:active); only client is supported');
    }
    const te = pickTelephoneEvent(section.telephoneEvents);
    this.#negotiated = te === undefined ? { opusPt: section.opusPt! } : { opusPt: section.opusPt!, telephoneEvent: te };
    this.#remote = remote;
    this.#log.info(
      { iceLite: remote.iceLite, candidates: remote.candidates.length, negotiated: this.#negotiated },
      'answer applied',
    );
    this.#startIce(remote);
  }

  async applyOffer(sdp: string): Promise<string> {
    this.#assertOpen('applyOffer');
    const offer = parseRemoteDescription(sdp, 'offer');
    if (offer.setup === 'active') {
      throw new MessengerLegError('sdp', 'offer asks us to be the DTLS server (a=setup:active); only client is supported');
    }
    const initial = this.#remote === undefined;
    if (!initial) {
      const current = this.#remote!;
      if (current.iceUfrag !== offer.iceUfrag || current.icePwd !== offer.icePwd) {
        throw new MessengerLegError('sdp', 'offer restarts ICE (new ufrag/pwd); ICE restart is not supported');
      }
      const known = new Set(current.fingerprints.map((f) => normalizeFingerprint(f.value)));
      if (!offer.fingerprints.some((f) => known.has(normalizeFingerprint(f.value)))) {
        throw new MessengerLegError('sdp', 'offer changes the DTLS fingerprint; a new DTLS session is not supported');
      }
    }
    const local = await this.#gather();
    this.#assertOpen('applyOffer');
    const answer = buildAnswer(local, offer, this.#sdpVersion++);
    this.#negotiated =
      answer.telephoneEvent === undefined
        ? { opusPt: answer.opusPt }
        : { opusPt: answer.opusPt, telephoneEvent: answer.telephoneEvent };
    this.#log.info(
      {
        initial,
        sections: offer.sections.map((s) => ({ mid: s.mid, direction: s.direction })),
        sendIndex: answer.sendIndex,
        negotiated: this.#negotiated,
      },
      'offer applied',
    );
    if (initial) {
      this.#remote = offer;
      this.#startIce(offer);
    } else {
      // Same transport: keep the original candidates and fingerprint, take the new sections.
      const known = new Set(this.#remote!.candidates.map((c) => `${c.ip}:${c.port}`));
      const added = offer.candidates.filter((c) => !known.has(`${c.ip}:${c.port}`));
      if (added.length > 0) {
        this.#log.warn(
          { candidates: added.map((c) => `${c.ip}:${c.port}`) },
          'renegotiation offer lists new candidates; the selected pair is kept',
        );
      }
      this.#remote = { ...this.#remote!, sections: offer.sections, version: offer.version };
    }
    return answer.sdp;
  }

  sendRtp(packet: Buffer): void {
    const outbound = this.#outbound;
    if (outbound === undefined || this.#state !== 'connected') {
      this.#stats.packetsDroppedNotConnected++;
      return;
    }
    let encrypted: Buffer;
    try {
      encrypted = outbound.protectRtp(packet, this.#ssrc);
    } catch (err) {
      this.#log.debug({ err }, 'outbound RTP packet dropped');
      return;
    }
    const last = this.#lastRtp;
    last.sent = true;
    last.timestamp = packet.readUInt32BE(4);
    last.at = performance.now();
    this.#stats.packetsSent++;
    this.#stats.bytesSent += packet.length;
    this.#sendMedia(encrypted);
  }

  onRtp(listener: (packet: Buffer) => void): () => void {
    this.#listeners.add(listener);
    return () => {
      this.#listeners.delete(listener);
    };
  }

  whenConnected(signal?: AbortSignal): Promise<void> {
    return whenLegConnected(this, this.#state, () => this.#error, signal);
  }

  close(): void {
    if (this.#state === 'closed') return;
    const previous = this.#state;
    this.#state = 'closed';
    this.#timers.clearAll();
    clearInterval(this.#consentTimer);
    clearTimeout(this.#rtcpTimer);
    this.#consentTimer = undefined;
    this.#rtcpTimer = undefined;
    this.#listeners.clear();
    this.#outbound = undefined;
    this.#inbound = undefined;
    this.#mediaPath = undefined;
    if (this.#dtls !== undefined) {
      try {
        this.#dtls.close();
      } catch (err) {
        this.#log.debug({ err }, 'DTLS close failed');
      }
    }
    const ice = this.#ice;
    const gathering = this.#gathering;
    this.#released = (async () => {
      // A gathering in flight opens sockets after close(): wait for it, then close them too (its failure was the
      // leg's to report while it was open; now only its sockets matter).
      if (gathering !== undefined) await gathering.catch(() => undefined);
      await ice?.close();
    })().catch((err: unknown) => {
      this.#log.warn({ err }, 'ICE agent close failed');
    });
    this.#log.info({ previous, stats: this.#stats, timings: this.timings }, 'leg closed');
    this.safeEmit('closed');
    this.removeAllListeners();
  }

  // -------------------------------------------------------------------------------------------------------------

  #assertOpen(what: string): void {
    if (this.#state === 'closed') throw new InvalidStateError(`${what}: leg is closed`);
  }

  #fail(reason: 'ice' | 'dtls' | 'consent', message: string, cause?: unknown): void {
    if (this.#state === 'closed') return;
    const err = new MessengerLegError(reason, message, cause === undefined ? undefined : { cause });
    this.#error = err;
    this.#log.warn({ err, reason, timings: this.timings }, 'leg failed');
    this.safeEmit('failed', err);
    this.close();
  }

  #families(): Set<4 | 6> {
    const ips = this.#options.iceListenIps;
    if (ips === undefined || ips.length === 0) return new Set([4, 6]);
    const out = new Set<4 | 6>();
    for (const ip of ips) out.add(isIPv6(ip) ? 6 : 4);
    return out;
  }

  #gather(): Promise<LocalTransportParams> {
    if (this.#gathering !== undefined) return this.#gathering;
    this.#state = 'gathering';
    const started = performance.now();
    const prepared = this.#options.preparedIce !== undefined;
    const ice = this.#ice ?? newIceAgent(this.#options);
    this.#ice = ice;
    this.#gathering = (async () => {
      const [certificate] = await Promise.all([this.#options.certificate, prepared ? undefined : ice.gatherCandidates()]);
      const announced = this.#options.announcedIp;
      const candidates: SdpCandidate[] = ice.localCandidates
        .filter((c) => c.transport.toLowerCase() === 'udp')
        .map((c) => ({
          foundation: c.foundation,
          component: c.component,
          transport: 'udp',
          priority: c.priority,
          ip: announced !== undefined && isIPv6(announced) === isIPv6(c.host) ? announced : c.host,
          port: c.port,
          type: c.type,
        }));
      if (candidates.length === 0) throw new MessengerLegError('ice', 'no local ICE candidate could be gathered');
      this.timings.gatherMs = Math.round(performance.now() - started);
      const local: LocalTransportParams = {
        iceUfrag: ice.localUsername,
        icePwd: ice.localPassword,
        fingerprint: certificate.fingerprint,
        candidates,
        ssrc: this.#ssrc,
        ...this.#identity,
      };
      this.#local = local;
      if (this.#state === 'gathering') this.#state = 'ready';
      this.#log.debug({ candidates: candidates.map((c) => `${c.ip}:${c.port}`), ms: this.timings.gatherMs }, 'gathered');
      ice.onData.subscribe((data) => this.#onIceData(data));
      ice.stateChanged.subscribe((state) => this.#onIceState(state));
      return local;
    })();
    return this.#gathering;
  }

  #startIce(remote: RemoteDescription): void {
    const ice = this.#ice!;
    for (const c of remote.ignoredCandidates) {
      this.#log.debug({ candidate: `${c.transport} ${c.ip}:${c.port} ${c.tcptype ?? ''}` }, 'ICE-TCP candidate ignored');
    }
    const candidates = usableCandidates(remote.candidates, this.#families());
    if (candidates.length < remote.candidates.length) {
      this.#log.debug(
        { dropped: remote.candidates.length - candidates.length },
        'candidates of an address family we do not have ignored',
      );
    }
    this.#state = 'connecting';
    this.#remoteAppliedAt = performance.now();
    ice.setRemoteParams({ iceLite: remote.iceLite, usernameFragment: remote.iceUfrag, password: remote.icePwd });
    for (const c of candidates) {
      void ice.addRemoteCandidate(
        new Candidate(c.foundation, c.component, c.transport, c.priority, c.ip, c.port, c.type),
      );
    }
    void ice.addRemoteCandidate(undefined);
    const iceTimer = this.#timers.after(this.#options.iceTimeoutMs, () => {
      this.#fail('ice', `ICE did not connect within ${this.#options.iceTimeoutMs} ms`);
    });
    if (candidates.length === 0) {
      // Nothing to check: fail now rather than at the timeout.
      this.#timers.clear(iceTimer);
      this.#fail('ice', 'no usable remote ICE candidate (UDP, reachable address family)');
      return;
    }
    ice.connect().then(
      () => {
        this.#timers.clear(iceTimer);
        if (this.#state !== 'connecting') return;
        this.timings.answerToIceMs = Math.round(performance.now() - this.#remoteAppliedAt);
        const pair = ice.nominated;
        this.#log.info(
          {
            ms: this.timings.answerToIceMs,
            pair: pair ? `${pair.localCandidate.host}:${pair.localCandidate.port} -> ${pair.remoteAddr.join(':')}` : undefined,
          },
          'ICE connected',
        );
        this.#startDtls(remote.fingerprints);
      },
      (err: unknown) => {
        this.#timers.clear(iceTimer);
        if (this.#state !== 'connecting') return;
        this.#fail('ice', 'ICE connectivity checks failed', err);
      },
    );
  }

  #startDtls(fingerprints: SdpFingerprint[]): void {
    this.#state = 'dtls';
    const ice = this.#ice!;
    const certificatePromise = this.#options.certificate;
    const dtlsTimer = this.#timers.after(this.#options.dtlsTimeoutMs, () => {
      this.#fail('dtls', `DTLS did not complete within ${this.#options.dtlsTimeoutMs} ms`);
    });
    void certificatePromise.then((certificate) => {
      if (this.#state !== 'dtls') return;
      const transport: Transport = {
        type: 'ice',
        address: {} as Transport['address'],
        closed: false,
        onData: () => undefined,
        send: (data: Buffer) => ice.send(data),
        close: async () => {
          transport.closed = true;
        },
      };
      this.#dtlsTransport = transport;
      const dtls = new DtlsClient({
        cert: certificate.certPem,
        key: certificate.keyPem,
        signatureHash: certificate.signatureHash,
        transport,
        srtpProfiles: this.#options.srtpProfiles ?? SRTP_PROFILES,
        extendedMasterSecret: true,
      });
      this.#dtls = dtls;
      const started = performance.now();
      dtls.onConnect.once(() => {
        this.#timers.clear(dtlsTimer);
        if (this.#state !== 'dtls') return;
        this.timings.dtlsMs = Math.round(performance.now() - started);
        this.#onDtlsConnected(dtls, fingerprints);
      });
      dtls.onError.once((err: Error) => {
        this.#timers.clear(dtlsTimer);
        this.#fail('dtls', 'DTLS handshake failed', err);
      });
      // werift's RTCDtlsTransport sleeps 100 ms here; the ICE pair is nominated already, so we start at once.
      dtls.connect().catch((err: unknown) => {
        this.#timers.clear(dtlsTimer);
        this.#fail('dtls', 'DTLS handshake failed', err);
      });
    }, (err: unknown) => {
      this.#timers.clear(dtlsTimer);
      this.#fail('dtls', 'no DTLS certificate', err);
    });
  }

  #onDtlsConnected(dtls: DtlsClient, fingerprints: SdpFingerprint[]): void {
    const der = dtls.remoteCertificate;
    if (der === undefined) {
      this.#fail('dtls', 'DTLS peer sent no certificate');
      return;
    }
    const matches = fingerprints.some((f) => {
      const actual = certificateFingerprint(der, f.algorithm);
      return actual !== undefined && actual === normalizeFingerprint(f.value);
    });
    if (!matches) {
      this.#fail('dtls', 'DTLS peer certificate does not match the SDP fingerprint');
      return;
    }
    const profile = dtls.srtp.srtpProfile as SrtpProfile | undefined;
    if (profile === undefined) {
      this.#fail('dtls', 'DTLS peer negotiated no SRTP profile');
      return;
    }
    if (!isSupportedSrtpProfile(profile)) {
      this.#fail('dtls', `DTLS peer chose SRTP profile ${profile}, which we did not offer`);
      return;
    }
    // RFC 5764 4.2: client write key and salt are ours (outbound), the server's are Meta's (inbound).
    const keys = dtls.extractSessionKeys(srtpMasterKeyLength(profile), srtpMasterSaltLength(profile));
    this.#outbound = new SrtpContext({ profile, masterKey: keys.localKey, masterSalt: keys.localSalt });
    this.#inbound = new SrtpContext({ profile, masterKey: keys.remoteKey, masterSalt: keys.remoteSalt });
    this.#state = 'connected';
    this.timings.answerToDtlsMs = Math.round(performance.now() - this.#remoteAppliedAt);
    this.#log.info({ timings: this.timings, srtpProfile: profile }, 'connected');
    this.#startConsentMonitor();
    this.#startRtcp();
    const pair = this.#ice?.nominated;
    if (pair !== undefined && this.#mediaPath?.pair !== pair) this.#resolveMediaPath(pair);
    this.safeEmit('connected');
  }

  #onIceData(data: Buffer): void {
    if (data.length < 2) return;
    const first = data[0]!;
    if (isDtlsRecord(first)) {
      this.#dtlsTransport?.onData(data, ['', 0]);
      return;
    }
    if (!isRtpOrRtcp(first)) return;
    const inbound = this.#inbound;
    if (inbound === undefined) return;
    // The datagram is ours (a new buffer per message): it is decrypted in place.
    if (isRtcpPacket(data)) {
      const rtcp = inbound.unprotectRtcp(data);
      if (typeof rtcp === 'string') this.#onInboundDropped(rtcp, 'SRTCP', inbound);
      else this.#onRtcp(rtcp);
      return;
    }
    const plain = inbound.unprotectRtp(data);
    if (typeof plain === 'string') {
      this.#onInboundDropped(plain, 'SRTP', inbound);
      return;
    }
    this.#stats.packetsReceived++;
    this.#stats.bytesReceived += plain.length;
    for (const listener of this.#listeners) {
      try {
        listener(plain);
      } catch (err) {
        this.#log.warn({ err }, 'RTP listener threw');
      }
    }
  }

  #onIceState(state: IceState): void {
    if (this.#state === 'closed') return;
    this.#log.debug({ state }, 'ICE state');
    if (state === 'failed' && (this.#state === 'connected' || this.#state === 'dtls')) {
      this.#fail('consent', 'ICE consent expired');
    }
  }

  #startConsentMonitor(): void {
    const ice = this.#ice!;
    let lastCount = -1;
    let lastFreshAt = Date.now();
    const period = Math.min(1000, Math.max(100, Math.floor(this.#options.consentTimeoutMs / 4)));
    this.#consentTimer = setInterval(() => {
      const pair = ice.nominated;
      const count = pair?.responsesReceived ?? 0;
      if (count !== lastCount) {
        lastCount = count;
        lastFreshAt = Date.now();
        return;
      }
      if (Date.now() - lastFreshAt > this.#options.consentTimeoutMs) {
        this.#fail('consent', `no ICE consent response for ${this.#options.consentTimeoutMs} ms`);
      }
    }, period);
  }

  /** Keeps Meta's latest report about our stream, and the round trips measured (every few seconds: no per-packet work). */
  #onRtcp(rtcp: Buffer): void {
    const block = readReportBlocks(rtcp).find((b) => b.ssrc === this.#ssrc);
    if (block === undefined) return;
    const rttMs = rttFromBlock(block, wallClockMs());
    if (rttMs !== undefined) this.#roundTrips.add(rttMs);
    const meanRttMs = this.#roundTrips.meanMs;
    this.#remoteReport = {
      fractionLost: block.fractionLost,
      cumulativeLost: block.cumulativeLost,
      jitterMs: (block.jitter * 1000) / 48000,
      ...(meanRttMs !== undefined ? { rttMs: meanRttMs } : {}),
    };
  }

  /**
   * Sender reports every `rtcpIntervalMs`, the first one sooner (RFC 3550 6.2 allows half the interval; a second is
   * enough for our first packets to be out): Meta's next reception report then gives a round trip, even on a short call.
   */
  #startRtcp(): void {
    const interval = this.#options.rtcpIntervalMs;
    if (interval <= 0) return;
    const next = (delayMs: number): void => {
      this.#rtcpTimer = setTimeout(() => {
        if (this.#state === 'closed') return;
        this.#sendSenderReport();
        next(interval);
      }, delayMs);
    };
    next(Math.min(FIRST_SR_AFTER_MS, interval));
  }

  #sendSenderReport(): void {
    const outbound = this.#outbound;
    const last = this.#lastRtp;
    if (outbound === undefined || !last.sent) return;
    const now = wallClockMs();
    // Extrapolate the RTP clock (48 kHz) from the last packet sent.
    const rtpTimestamp = (last.timestamp + Math.round(((performance.now() - last.at) * 48000) / 1000)) >>> 0;
    try {
      const sr = new RtcpSrPacket({
        ssrc: this.#ssrc,
        senderInfo: new RtcpSenderInfo({
          ntpTimestamp: ntpTimestamp(now),
          rtpTimestamp,
          packetCount: this.#stats.packetsSent >>> 0,
          octetCount: this.#stats.bytesSent >>> 0,
        }),
        reports: [],
      });
      this.#sendMedia(outbound.protectRtcp(sr.serialize()));
    } catch (err) {
      this.#log.debug({ err }, 'RTCP sender report not sent');
    }
  }

  /**
   * Sends SRTP/SRTCP on the nominated pair, straight to its socket. Keeps werift's rules and books: nothing is sent
   * without ICE consent (RFC 7675), and the pair's counters move as with `Connection.send`.
   */
  #sendMedia(data: Buffer): void {
    const ice = this.#ice;
    if (ice === undefined || !(ice as unknown as { canSendApplicationData(): boolean }).canSendApplicationData()) return;
    const pair = ice.nominated!;
    let path = this.#mediaPath;
    if (path === undefined || path.pair !== pair) {
      path = this.#resolveMediaPath(pair);
      if (path === undefined) {
        // Not a plain UDP pair: werift's own path.
        ice.send(data).catch((err: unknown) => this.#onSendError(err));
        return;
      }
    }
    try {
      path.socket.send(data, path.port, path.host);
    } catch (err) {
      // A socket closed under us (leg closing): the same as werift, which drops the packet.
      this.#onSendError(err);
      return;
    }
    pair.packetsSent++;
    pair.bytesSent += data.length;
  }

  #resolveMediaPath(pair: CandidatePair): MediaPath | undefined {
    const transport = (pair.protocol as unknown as { transport?: { socket?: unknown; closed?: boolean; onData?: unknown } }).transport;
    const socket = transport?.socket;
    const [host, port] = pair.remoteAddr;
    const family = isIP(host);
    if (pair.protocol.type !== 'stun' || transport?.closed !== false || family === 0 || typeof socket !== 'object') {
      return undefined;
    }
    skipLookupForNumericAddresses(socket as Socket, family);
    this.#receiveDirectly(pair, transport);
    this.#mediaPath = { pair, socket: socket as Socket, host, port };
    this.#log.debug({ remote: `${host}:${port}` }, 'media path resolved');
    return this.#mediaPath;
  }

  /**
   * SRTP and SRTCP read on the pair's socket come to the leg straight from werift's UDP transport: werift would hand
   * each datagram through two of its events, each `execute` starting an async function (two promises per packet),
   * after trying to parse it as STUN. STUN and DTLS keep werift's path; the pair's counters move as werift's do.
   * A transport of another shape (not werift 0.25.2's) keeps werift's path.
   */
  #receiveDirectly(pair: CandidatePair, transport: { onData?: unknown }): void {
    const weriftOnData = transport.onData;
    if (typeof weriftOnData !== 'function' || this.#directTransports.has(transport)) return;
    this.#directTransports.add(transport);
    const forward = weriftOnData as (data: Buffer, addr: unknown) => void;
    transport.onData = (data: Buffer, addr: unknown): void => {
      if (data.length >= 2 && isRtpOrRtcp(data[0]!) && this.#inbound !== undefined) {
        const active = this.#mediaPath?.pair ?? pair;
        active.packetsReceived++;
        active.bytesReceived += data.length;
        this.#onIceData(data);
        return;
      }
      forward(data, addr);
    };
  }

  #onInboundDropped(reason: SrtpDropReason, what: 'SRTP' | 'SRTCP', context: SrtpContext): void {
    this.#stats.packetsDroppedInvalid++;
    // The first few, then one in 500: a flood of bad packets must not flood the log.
    if (this.#dropsLogged++ % 500 < 3) {
      this.#log.debug({ reason, what, srtp: context.stats }, 'inbound packet refused');
    }
  }

  #onSendError(err: unknown): void {
    // One line per burst is enough: a lost path shows up as consent failure.
    if (this.#sendErrorsLogged++ % 500 === 0) this.#log.debug({ err }, 'send failed');
  }
}
