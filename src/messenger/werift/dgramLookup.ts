/**
 * An optimisation on the sockets werift creates: `dgram.Socket.send` to an address string runs the socket's lookup for
 * every packet (for a numeric address, `dns.lookup` answers on the next tick). Node offers a `lookup` option only when
 * the socket is created, and werift creates it; so the socket's lookup (Node's internal `state symbol` -> `handle.lookup`)
 * is wrapped once to answer numeric addresses of its family at once and pass anything else to the original.
 *
 * `findDgramLookup()` checks at start that this Node keeps the lookup where the wrapper expects it; when it does not,
 * `applyWeriftPatches()` reports the patch as degraded (one warning, a metric) and sockets are left as Node made them.
 */
import { createSocket, type Socket } from 'node:dgram';
import { isIP } from 'node:net';
import { DependencyPatchError } from '../../core/errors.js';

type Callback = (err: Error | null, address?: string, family?: number) => void;
interface LookupHandle {
  lookup: (address: string, callback: Callback) => unknown;
}

const STATE_SYMBOL = 'state symbol';
const wrapped = new WeakSet<Socket>();
let bound = false;

function lookupHandle(socket: Socket): LookupHandle | undefined {
  const stateSymbol = Object.getOwnPropertySymbols(socket).find((s) => s.description === STATE_SYMBOL);
  if (stateSymbol === undefined) return undefined;
  const state = (socket as unknown as Record<symbol, { handle?: Partial<LookupHandle> } | undefined>)[stateSymbol];
  const handle = state?.handle;
  return typeof handle?.lookup === 'function' ? (handle as LookupHandle) : undefined;
}

/** Throws `DependencyPatchError` unless a new dgram socket of this Node has the internal lookup the wrapper replaces. */
export function findDgramLookup(): void {
  const probe = createSocket('udp4');
  try {
    if (lookupHandle(probe) === undefined) {
      throw new DependencyPatchError(
        `node ${process.version}`,
        `dgram sockets have no '${STATE_SYMBOL}'.handle.lookup: every packet to Meta goes through dns.lookup`,
      );
    }
  } finally {
    probe.close();
  }
}

/** Turn the wrapper on for this thread (after `findDgramLookup()` succeeded). */
export function enableDgramLookupSkip(): void {
  bound = true;
}

/** Wrap `socket`'s lookup so a numeric address of `family` is answered at once. No-op when the patch is not bound. */
export function skipLookupForNumericAddresses(socket: Socket, family: number): void {
  if (!bound || wrapped.has(socket)) return;
  wrapped.add(socket);
  const handle = lookupHandle(socket);
  if (handle === undefined) return;
  const original = handle.lookup;
  handle.lookup = (address: string, callback: Callback): unknown => {
    if (isIP(address) === family) {
      callback(null, address, family);
      return undefined;
    }
    return original.call(handle, address, callback);
  };
}
