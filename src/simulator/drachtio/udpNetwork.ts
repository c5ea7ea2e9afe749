/**
 * A real SIP network behind the drachtio-server double: a UDP socket on loopback that is the double's SIP address.
 * What the app sends goes out to real SIP user agents (baresip in the SRTP tests), and what they send comes in, so
 * a real UA can be the PBX without a drachtio-server. Only loopback, only UDP.
 */
import dgram from 'node:dgram';
import type { DrachtioServerDouble, NetworkSide, Peer } from './server.js';
import { SipMsg } from './sip.js';

export class UdpSipNetwork implements NetworkSide {
  readonly #socket: dgram.Socket;
  #server?: DrachtioServerDouble;
  #closed = false;

  private constructor(socket: dgram.Socket) {
    this.#socket = socket;
    socket.on('message', (data, rinfo) => {
      if (this.#closed || !this.#server) return;
      let msg: SipMsg;
      try {
        msg = SipMsg.parse(data.toString('utf8'));
      } catch {
        return; // not SIP: keep-alives and noise
      }
      this.#server.receive(msg, { address: rinfo.address, port: rinfo.port });
    });
  }

  /** Binds 127.0.0.1 on an ephemeral port. */
  static async create(): Promise<UdpSipNetwork> {
    const socket = dgram.createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(0, '127.0.0.1', () => {
        socket.off('error', reject);
        resolve();
      });
    });
    return new UdpSipNetwork(socket);
  }

  /** The SIP address the double must report (and write into Via and Contact). */
  get address(): Peer {
    const { address, port } = this.#socket.address();
    return { address, port };
  }

  attach(server: DrachtioServerDouble): void {
    this.#server = server;
  }

  fromServer(msg: SipMsg, _from: Peer, to: Peer): void {
    if (this.#closed) return;
    this.#socket.send(msg.toString(), to.port, to.address);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#socket.close();
  }
}
