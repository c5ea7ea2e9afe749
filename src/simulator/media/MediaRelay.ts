/**
 * A stretch of network between the business and a simulated Meta media server, so that a test can lose packets on
 * the way to Meta: one UDP socket on loopback that Meta's answer names as its candidate. Datagrams from the business
 * go on to mediasoup's port, mediasoup's go back to the business's last address; RTP from the business that
 * `dropToMeta` picks is dropped (STUN, DTLS and RTCP always pass), as a lossy path would drop it.
 */
import dgram from 'node:dgram';
import { isIPv6 } from 'node:net';

export interface MediaRelayImpairment {
  /** Drop the business's `i`-th RTP packet (0-based, counted from the call of `impair`). */
  dropToMeta?: (i: number) => boolean;
}

/** SRTP (not SRTCP) by its first two bytes: RTP version 2, and a payload type outside RTCP's 64-95 (RFC 5761). */
function isRtp(packet: Buffer): boolean {
  if (packet.length < 12 || packet[0]! >> 6 !== 2) return false;
  const pt = packet[1]! & 0x7f;
  return pt < 64 || pt > 95;
}

export class MediaRelay {
  readonly #socket: dgram.Socket;
  readonly #target: { ip: string; port: number };
  #business: { address: string; port: number } | undefined;
  #drop: ((i: number) => boolean) | undefined;
  #rtpSeen = 0;
  #dropped = 0;
  #closed = false;

  private constructor(socket: dgram.Socket, target: { ip: string; port: number }) {
    this.#socket = socket;
    this.#target = target;
    socket.on('message', (msg, rinfo) => this.#onMessage(msg, rinfo));
    // A relay is a test's network: a send error is a lost datagram, as on a network.
    socket.on('error', () => undefined);
  }

  /** Bind on `listenIp` (any port) in front of mediasoup's `target`. */
  static async create(listenIp: string, target: { ip: string; port: number }): Promise<MediaRelay> {
    const socket = dgram.createSocket(isIPv6(listenIp) ? 'udp6' : 'udp4');
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(0, listenIp, () => {
        socket.off('error', reject);
        resolve();
      });
    });
    return new MediaRelay(socket, target);
  }

  /** The port Meta's answer names. */
  get port(): number {
    return this.#socket.address().port;
  }

  /** RTP packets from the business dropped so far. */
  get dropped(): number {
    return this.#dropped;
  }

  impair(o: MediaRelayImpairment): void {
    this.#drop = o.dropToMeta;
    this.#rtpSeen = 0;
  }

  /** Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#socket.close();
  }

  #onMessage(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (this.#closed) return;
    const target = this.#target;
    if (rinfo.address === target.ip && rinfo.port === target.port) {
      const business = this.#business;
      if (business) this.#socket.send(msg, business.port, business.address);
      return;
    }
    this.#business = { address: rinfo.address, port: rinfo.port };
    if (this.#drop && isRtp(msg) && this.#drop(this.#rtpSeen++)) {
      this.#dropped++;
      return;
    }
    this.#socket.send(msg, target.port, target.ip);
  }
}
