/** Errors across the thread boundary: same class, code, reason and message on the other side. */
import { BridgeError, InvalidStateError, MediaError, MessengerLegError } from '../core/errors.js';
import type { WireError } from './protocol.js';

export function toWire(err: unknown): WireError {
  if (err instanceof MessengerLegError) return { name: err.name, code: err.code, message: err.message, reason: err.reason };
  if (err instanceof BridgeError) return { name: err.name, code: err.code, message: err.message };
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return { name: err.name, message: err.message, ...(typeof code === 'string' ? { code } : {}) };
  }
  return { name: 'Error', message: String(err) };
}

const LEG_REASONS = new Set<string>(['ice', 'dtls', 'consent', 'sdp', 'closed']);

export function fromWire(wire: WireError): Error {
  switch (wire.name) {
    case 'MessengerLegError': {
      const reason = LEG_REASONS.has(wire.reason ?? '') ? (wire.reason as MessengerLegError['reason']) : 'closed';
      return new MessengerLegError(reason, wire.message);
    }
    case 'InvalidStateError':
      return new InvalidStateError(wire.message);
    case 'MediaError':
      return new MediaError(wire.code ?? 'MEDIA', wire.message);
    default: {
      if (wire.code !== undefined) return new BridgeError(wire.code, wire.message);
      const err = new Error(wire.message);
      err.name = wire.name;
      return err;
    }
  }
}
