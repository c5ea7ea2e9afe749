/**
 * Creates Messenger legs with one shared configuration and one DTLS certificate per factory.
 */
import { isIP } from 'node:net';
import type { Logger } from 'pino';
import type { MessengerLegFactory } from '../calls/ports.js';
import { createDtlsCertificate } from './certificate.js';
import { applyWeriftPatches, warmUpWeriftEcdhe } from './werift/index.js';
import type { DtlsCertificate } from './certificate.js';
import { WeriftMessengerLeg, prepareIce } from './WeriftMessengerLeg.js';
import type { PreparedIce } from './WeriftMessengerLeg.js';

export interface WeriftMessengerLegFactoryOptions {
  /** Interface addresses to gather candidates on (at most one IPv4 and one IPv6); default: every interface. */
  iceListenIps?: string[];
  /** Public address to write into our candidates instead of the local one (1:1 NAT). */
  announcedIp?: string;
  /** UDP port range [min, max] for the ICE sockets; default: ephemeral ports. */
  portRange?: [number, number];
  /** ICE must connect within this many ms after Meta's SDP is applied. Default 10000. */
  iceTimeoutMs?: number;
  /** DTLS must complete within this many ms after ICE connected. Default 10000. */
  dtlsTimeoutMs?: number;
  /** The leg fails with 'consent' when no ICE consent response arrived for this many ms. Default 30000 (RFC 7675). */
  consentTimeoutMs?: number;
  /** RTCP sender report interval in ms; 0 disables. Default 5000. */
  rtcpIntervalMs?: number;
  /**
   * Apply the fix to werift's DTLS client (werift/dtlsFix.ts: one datagram per flight, fresh record numbers on
   * retransmission) so that OpenSSL-based DTLS servers complete the handshake. Default true. The factory applies every
   * werift patch (`applyWeriftPatches`, once per thread); the first call in a thread decides.
   */
  weriftDtlsFix?: boolean;
  /**
   * Where `create` takes an ICE agent gathered ahead of the call (made with `prepareIce`), when there is one ready;
   * without one (or when it returns undefined) the leg gathers its own when it makes its offer.
   */
  takePreparedIce?: () => PreparedIce | undefined;
  log: Logger;
}

export class WeriftMessengerLegFactory implements MessengerLegFactory {
  readonly #options: Readonly<
    Required<
      Omit<WeriftMessengerLegFactoryOptions, 'iceListenIps' | 'announcedIp' | 'portRange' | 'weriftDtlsFix' | 'takePreparedIce'>
    >
  > &
    Pick<WeriftMessengerLegFactoryOptions, 'iceListenIps' | 'announcedIp' | 'portRange' | 'takePreparedIce'>;
  #certificate: Promise<DtlsCertificate> | undefined;

  constructor(options: WeriftMessengerLegFactoryOptions) {
    for (const ip of [...(options.iceListenIps ?? []), ...(options.announcedIp ? [options.announcedIp] : [])]) {
      if (isIP(ip) === 0) throw new TypeError(`not an IP address: ${ip}`);
    }
    const range = options.portRange;
    if (range !== undefined && !(range[0] > 0 && range[0] <= range[1] && range[1] <= 65535)) {
      throw new TypeError(`invalid portRange ${range.join('-')}`);
    }
    const ips = options.iceListenIps ?? [];
    if (ips.filter((ip) => isIP(ip) === 4).length > 1 || ips.filter((ip) => isIP(ip) === 6).length > 1) {
      options.log.warn({ iceListenIps: ips }, 'only the first IPv4 and the first IPv6 address of iceListenIps are used');
    }
    applyWeriftPatches({ dtlsFix: options.weriftDtlsFix ?? true });
    this.#options = Object.freeze({
      iceListenIps: options.iceListenIps,
      announcedIp: options.announcedIp,
      portRange: options.portRange,
      iceTimeoutMs: options.iceTimeoutMs ?? 10_000,
      dtlsTimeoutMs: options.dtlsTimeoutMs ?? 10_000,
      consentTimeoutMs: options.consentTimeoutMs ?? 30_000,
      rtcpIntervalMs: options.rtcpIntervalMs ?? 5_000,
      takePreparedIce: options.takePreparedIce,
      log: options.log,
    });
  }

  /**
   * Optional, at start-up: generate the DTLS certificate and warm werift's ECDHE code now, so the first call does not
   * pay for them (about 0.2 s and 0.3-1 s of CPU on this kind of machine). Resolves with the time it took (ms).
   */
  async prepare(): Promise<number> {
    const started = performance.now();
    await Promise.all([this.#getCertificate(), warmUpWeriftEcdhe()]);
    const ms = Math.round(performance.now() - started);
    this.#options.log.debug({ ms }, 'Messenger legs prepared');
    return ms;
  }

  /**
   * An ICE agent with its candidates gathered on this factory's addresses and ports, for a pool of agents made ahead
   * of calls (see `takePreparedIce`).
   */
  prepareIce(): Promise<PreparedIce> {
    const o = this.#options;
    return prepareIce({
      ...(o.iceListenIps !== undefined ? { iceListenIps: o.iceListenIps } : {}),
      ...(o.portRange !== undefined ? { portRange: o.portRange } : {}),
    });
  }

  create(options: { callId: string; log: Logger }): WeriftMessengerLeg {
    const o = this.#options;
    const preparedIce = o.takePreparedIce?.();
    return new WeriftMessengerLeg({
      callId: options.callId,
      log: options.log.child({ component: 'messenger' }),
      certificate: this.#getCertificate(),
      ...(o.iceListenIps !== undefined ? { iceListenIps: o.iceListenIps } : {}),
      ...(o.announcedIp !== undefined ? { announcedIp: o.announcedIp } : {}),
      ...(o.portRange !== undefined ? { portRange: o.portRange } : {}),
      iceTimeoutMs: o.iceTimeoutMs,
      dtlsTimeoutMs: o.dtlsTimeoutMs,
      consentTimeoutMs: o.consentTimeoutMs,
      rtcpIntervalMs: o.rtcpIntervalMs,
      ...(preparedIce !== undefined ? { preparedIce } : {}),
    });
  }

  #getCertificate(): Promise<DtlsCertificate> {
    if (this.#certificate === undefined) {
      this.#certificate = createDtlsCertificate();
      this.#certificate.catch((err: unknown) => {
        this.#options.log.error({ err }, 'DTLS certificate generation failed');
        this.#certificate = undefined;
      });
    }
    return this.#certificate;
  }
}
