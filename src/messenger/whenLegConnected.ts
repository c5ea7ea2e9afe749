/** The wait behind `MessengerLeg.whenConnected`, shared by the leg and by its stand-in on the main thread. */
import type { MessengerLegEvents } from '../calls/ports.js';
import { MessengerLegError } from '../core/errors.js';
import type { TypedEmitter } from '../core/TypedEmitter.js';

/**
 * Resolves once `leg` emits 'connected' (at once when `state` is already 'connected'); rejects with the leg's error
 * on 'failed', on 'closed' (or at once when already closed), or with the signal's reason when `signal` aborts.
 */
export function whenLegConnected(
  leg: TypedEmitter<MessengerLegEvents>,
  state: string,
  error: () => MessengerLegError | undefined,
  signal?: AbortSignal,
): Promise<void> {
  const closedError = (): MessengerLegError => error() ?? new MessengerLegError('closed', 'leg closed before it connected');
  if (state === 'connected') return Promise.resolve();
  if (state === 'closed') return Promise.reject(closedError());
  return new Promise((resolve, reject) => {
    const cleanup = (): void => {
      leg.off('connected', onConnected);
      leg.off('failed', onFailed);
      leg.off('closed', onClosed);
      signal?.removeEventListener('abort', onAbort);
    };
    const onConnected = (): void => {
      cleanup();
      resolve();
    };
    const onFailed = (err: MessengerLegError): void => {
      cleanup();
      reject(err);
    };
    const onClosed = (): void => {
      cleanup();
      reject(closedError());
    };
    const onAbort = (): void => {
      cleanup();
      reject(signal?.reason ?? new Error('aborted waiting for the Messenger leg'));
    };
    if (signal?.aborted) {
      onAbort();
      return;
    }
    leg.on('connected', onConnected);
    leg.on('failed', onFailed);
    leg.on('closed', onClosed);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
