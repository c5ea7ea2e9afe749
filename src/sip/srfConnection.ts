/**
 * drachtio-srf's connection to drachtio-server: the constructor, and stopping a connection in any state.
 */
import SrfModule from 'drachtio-srf';
import type { Logger } from 'pino';
import { stopSrfReconnecting } from './drachtioSrfPatches.js';
import type { Srf } from './srfTypes.js';

export const SrfConstructor = SrfModule as unknown as new () => Srf;

/**
 * Disconnect `srf` whether it is connected or still trying: srf's disconnect() needs a live socket, so while it
 * (re)connects its retry timer is stopped and its socket destroyed instead (drachtioSrfPatches.ts).
 */
export function stopSrf(srf: Srf, connected: boolean, log: Logger): void {
  if (connected) {
    try {
      srf.disconnect();
      return;
    } catch (err) {
      log.debug({ err }, 'srf disconnect failed');
    }
  }
  if (!stopSrfReconnecting(srf)) log.debug('srf had not started connecting: nothing to stop');
}
