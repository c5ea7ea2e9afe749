/**
 * The drachtio-server test double: `startDrachtioDouble({ secret })` gives a TCP admin port that drachtio-srf
 * connects to, and a fake PBX on the SIP side of it. Everything stays in-process and on loopback.
 */
import { DrachtioServerDouble, type AdminFrame, type WireEntry } from './server.js';
import { FakePbx } from './fakePbx.js';
import type { SipMsg } from './sip.js';
import { UdpSipNetwork } from './udpNetwork.js';

export { DrachtioServerDouble, FakePbx };
export type { AdminFrame, WireEntry };
export { PbxCall, PbxDialog, PbxInvite } from './fakePbx.js';
export { SipMsg } from './sip.js';

export interface DrachtioDouble {
  /** Admin port on 127.0.0.1. */
  readonly port: number;
  readonly host: '127.0.0.1';
  readonly secret: string;
  readonly server: DrachtioServerDouble;
  readonly pbx: FakePbx;
  /** SIP messages on the double's "wire", both directions, in order. */
  readonly wire: WireEntry[];
  /** Admin frames, both directions, in order. */
  readonly frames: AdminFrame[];
  /** Messages the server sent toward the PBX (requests or responses), optionally only `method` requests / `status` responses. */
  sent(filter?: { method?: string; status?: number }): SipMsg[];
  /** Messages the PBX sent toward the server. */
  received(filter?: { method?: string; status?: number }): SipMsg[];
  /** drachtio-server goes away: stop listening, drop app connections. */
  stop(): Promise<void>;
  /** Come back on the same admin port. */
  restart(): Promise<void>;
  close(): Promise<void>;
}

/**
 * `sipNetwork: 'udp'` puts a real UDP SIP socket on loopback behind the double instead of the fake PBX (which then
 * sees nothing): real user agents reach the app through it at `server.sip`.
 */
export async function startDrachtioDouble(
  options: { secret?: string; port?: number; sipNetwork?: 'fake' | 'udp' } = {},
): Promise<DrachtioDouble> {
  const secret = options.secret ?? 'cymru';
  const udp = options.sipNetwork === 'udp' ? await UdpSipNetwork.create() : undefined;
  const server = new DrachtioServerDouble({ secret, ...(udp ? { sip: udp.address } : {}) });
  const pbx = new FakePbx(server);
  if (udp) {
    udp.attach(server);
    server.attach(udp);
  } else {
    server.attach(pbx);
  }
  const port = await server.listen(options.port ?? 0);
  const pick = (direction: WireEntry['direction'], filter?: { method?: string; status?: number }): SipMsg[] =>
    server.wire
      .filter((e) => e.direction === direction)
      .map((e) => e.msg)
      .filter((m) => (filter?.method === undefined || (m.kind === 'request' && m.method === filter.method)))
      .filter((m) => (filter?.status === undefined || (m.kind === 'response' && m.status === filter.status)));
  let closed = false;
  return {
    port,
    host: '127.0.0.1',
    secret,
    server,
    pbx,
    wire: server.wire,
    frames: server.frames,
    sent: (filter) => pick('server->pbx', filter),
    received: (filter) => pick('pbx->server', filter),
    stop: () => server.stop(),
    restart: async () => {
      await server.listen(port);
    },
    close: async () => {
      if (closed) return;
      closed = true;
      udp?.close();
      await server.stop();
    },
  };
}
