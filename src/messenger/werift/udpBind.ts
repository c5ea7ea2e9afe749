/**
 * A runtime fix for how werift 0.25.2 binds its ICE sockets, so that calls set up at the same time never crash the
 * daemon nor take each other's port.
 *
 * What goes wrong without it: with a port range (`messenger.ice.min_port`/`max_port`), werift first looks for a free
 * port by binding and closing a probe socket, scanning up from the lowest port every time, then binds its real socket
 * to the port it found, with no 'error' listener. Two ICE agents gathering at the same moment (two calls, or a call
 * and the prepared media pool) both find the same port free, both bind it, and the loser's EADDRINUSE is an uncaught
 * exception: the whole daemon exits. Any other program taking the port in between does the same. Each gathering also
 * costs one probe bind per port already in use.
 *
 * The fix patches `UdpTransport.prototype.init` (werift's internal, exported class): every bind waits for 'listening'
 * or 'error'; in a range, ports are tried from a random point, skipping those this process already holds, and a port
 * that is taken is simply passed over; a range with no free port (or any other bind error) rejects, which werift
 * reports as a gathering without that candidate and the leg as "no local ICE candidate could be gathered". A socket
 * keeps a listener for late 'error' events, so a socket-level error never becomes an uncaught exception.
 *
 * Applied through `applyWeriftPatches()` (./index.ts) before the first ICE agent gathers; idempotent.
 */
import type { Socket } from 'node:dgram';
import { UdpTransport } from 'werift';
import { expectMethods } from '../../core/dependencyPatch.js';
import { DependencyPatchError } from '../../core/errors.js';

type SocketType = 'udp4' | 'udp6';

/** The parts of werift's UdpTransport the fix uses (private in its type declarations). */
interface UdpTransportInternals {
  socketType: SocketType;
  options: { port?: number; portRange?: [number, number]; interfaceAddresses?: Partial<Record<SocketType, string>> };
  socket: Socket;
}

/** Ports held by this process's ICE sockets, per socket type and local address. */
const held = new Map<string, Set<number>>();

/** Bind errors after which the next port of a range is tried. */
const TRY_NEXT = new Set(['EADDRINUSE', 'EACCES']);

let applied = false;

/** The prototype whose `init` the fix replaces. */
export interface WeriftUdpBindTarget {
  init: (this: UdpTransportInternals) => Promise<void>;
}

/**
 * Find `UdpTransport.prototype.init` and check that an instance carries the fields the replacement reads (`socket`,
 * `socketType`, `options`); throws `DependencyPatchError` otherwise.
 */
export function findWeriftUdpBindTarget(): WeriftUdpBindTarget {
  const proto = UdpTransport.prototype as unknown as WeriftUdpBindTarget;
  expectMethods('werift', 'UdpTransport.prototype', proto, ['init']);
  // werift declares the constructor private (its factory also binds); the probe only constructs.
  const Probe = UdpTransport as unknown as new (socketType: SocketType, options: object) => Partial<UdpTransportInternals>;
  const probe = new Probe('udp4', {});
  try {
    expectMethods('werift', 'a new UdpTransport.socket', probe.socket, ['bind', 'on', 'once', 'close']);
    if (probe.socketType !== 'udp4' || typeof probe.options !== 'object') {
      throw new DependencyPatchError('werift', 'a new UdpTransport has no socketType/options fields: the ICE bind fix cannot bind');
    }
  } finally {
    probe.socket?.close();
  }
  return proto;
}

/** Replace `target.init` (from `findWeriftUdpBindTarget()`). Idempotent. Called by `applyWeriftPatches()`. */
export function applyWeriftUdpBindFix(target: WeriftUdpBindTarget): void {
  if (applied) return;
  const proto = target;
  proto.init = async function init(this: UdpTransportInternals): Promise<void> {
    const socket = this.socket;
    // A late socket error (after bind) is werift's to notice through failed sends; it must never reach the process.
    socket.on('error', () => undefined);
    const address = this.options.interfaceAddresses?.[this.socketType];
    const range = this.options.port ? undefined : this.options.portRange;
    if (range === undefined) {
      await bindSocket(socket, this.options.port ?? 0, address);
      return;
    }
    await bindInRange(socket, this.socketType, address, range);
  };
  applied = true;
}

/** Ports of `range` this process holds on `address` (for tests). */
export function heldIcePorts(socketType: SocketType, address: string | undefined): ReadonlySet<number> {
  return held.get(`${socketType}|${address ?? ''}`) ?? new Set();
}

async function bindInRange(socket: Socket, socketType: SocketType, address: string | undefined, range: [number, number]): Promise<void> {
  const [min, max] = range;
  const key = `${socketType}|${address ?? ''}`;
  let ports = held.get(key);
  if (ports === undefined) {
    ports = new Set();
    held.set(key, ports);
  }
  const span = max - min + 1;
  const start = Math.floor(Math.random() * span);
  let lastError: NodeJS.ErrnoException | undefined;
  for (let i = 0; i < span; i++) {
    const port = min + ((start + i) % span);
    if (ports.has(port)) continue;
    // Held before the bind starts, so that an agent gathering at the same moment passes over it.
    ports.add(port);
    try {
      await bindSocket(socket, port, address);
    } catch (err) {
      ports.delete(port);
      lastError = err as NodeJS.ErrnoException;
      if (TRY_NEXT.has(lastError.code ?? '')) continue;
      throw err;
    }
    const owned = ports;
    socket.once('close', () => owned.delete(port));
    return;
  }
  const why = lastError ? ` (last error: ${lastError.code ?? lastError.message})` : ' (all held by this process)';
  throw new Error(`no free UDP port for ICE in ${min}-${max} on ${address ?? 'any address'}${why}`);
}

function bindSocket(socket: Socket, port: number, address: string | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => {
      socket.off('listening', onListening);
      reject(err);
    };
    const onListening = (): void => {
      socket.off('error', onError);
      resolve();
    };
    socket.once('error', onError);
    socket.once('listening', onListening);
    socket.bind(address === undefined ? { port } : { port, address });
  });
}
