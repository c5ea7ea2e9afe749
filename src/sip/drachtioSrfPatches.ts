/**
 * The one door to what the bridge does inside drachtio-srf 5.0.29: `applyDrachtioSrfPatches()` checks it at start,
 * `stopSrfReconnecting()` uses it.
 *
 * srf's `disconnect()` needs a live socket. A SIP leg closed while srf is reconnecting to drachtio-server (server down,
 * wrong secret) would otherwise keep reconnecting, and its retry timer would keep the process alive after shutdown. So
 * `stopSrfReconnecting()` reaches srf's private wire protocol (`srf._app.client.wp`): it sets `closing` (srf's own flag
 * that ends reconnection), clears `reconnectVars.retryTimer` and destroys the socket. This is needed, not an
 * optimisation: a version or shape mismatch stops start-up.
 */
import { createRequire } from 'node:module';
import { expectMethods, expectVersion, installedVersion } from '../core/dependencyPatch.js';
import { DependencyPatchError } from '../core/errors.js';
import type { PatchReport } from '../core/dependencyPatch.js';

/** The drachtio-srf version the wire-protocol reach-in was written for and checked against. */
export const DRACHTIO_SRF_PATCHED_VERSION = '5.0.29';
const STOP_RECONNECTING = 'stop reconnecting on close (_app.client.wp)';

/** srf's private wire protocol, as far as `stopSrfReconnecting` touches it. */
interface WireProtocolLike {
  closing?: boolean;
  socket?: { destroy(): void };
  reconnectVars?: { retryTimer?: NodeJS.Timeout | null };
}

type Constructor = { prototype: Record<string, unknown> } & (new (...args: never[]) => unknown);

let report: PatchReport | undefined;

function sourceOf(fn: unknown): string {
  return typeof fn === 'function' ? Function.prototype.toString.call(fn) : '';
}

/**
 * Check drachtio-srf's version and that its agent keeps the wire protocol in `client.wp`, whose retry state lives in
 * `reconnectVars.retryTimer` and whose reconnection stops on `closing`. Throws `DependencyPatchError` otherwise.
 * @param options.installedVersion the version to check instead of the installed one (tests of the mismatch path).
 */
export function checkDrachtioSrfPatches(options: { installedVersion?: string } = {}): PatchReport {
  const version = options.installedVersion ?? installedVersion('drachtio-srf');
  expectVersion('drachtio-srf', version, DRACHTIO_SRF_PATCHED_VERSION);
  const require = createRequire(import.meta.url);
  const Agent = require('drachtio-srf/lib/drachtio-agent.js') as Constructor;
  const WireProtocol = require('drachtio-srf/lib/wire-protocol.js') as Constructor;
  expectMethods('drachtio-srf', 'DrachtioAgent.prototype', Agent.prototype, ['connect', 'disconnect']);
  expectMethods('drachtio-srf', 'WireProtocol.prototype', WireProtocol.prototype, ['connect', 'initializeRetryVars', '_onConnectionGone']);
  if (!sourceOf(Agent.prototype['connect']).includes('this.wp = new WireProtocol')) {
    throw new DependencyPatchError('drachtio-srf', 'DrachtioAgent.connect no longer keeps its wire protocol in `wp`');
  }
  const retry = sourceOf(WireProtocol.prototype['_onConnectionGone']);
  if (!retry.includes('this.closing') || !retry.includes('reconnectVars.retryTimer')) {
    throw new DependencyPatchError('drachtio-srf', 'WireProtocol reconnection no longer stops on `closing` / `reconnectVars.retryTimer`');
  }
  return { dependency: 'drachtio-srf', version, applied: [STOP_RECONNECTING], degraded: [] };
}

/** Check once (`checkDrachtioSrfPatches`); throws `DependencyPatchError` on a mismatch. Idempotent. */
export function applyDrachtioSrfPatches(): PatchReport {
  report ??= checkDrachtioSrfPatches();
  return report;
}

/**
 * Stop srf reconnecting to drachtio-server and drop its socket (for a leg closed while not connected). Returns false
 * when srf has no wire protocol yet (it never started connecting: nothing to stop).
 */
export function stopSrfReconnecting(srf: object): boolean {
  const wp = (srf as { _app?: { client?: { wp?: WireProtocolLike } } })._app?.client?.wp;
  if (!wp) return false;
  wp.closing = true;
  if (wp.reconnectVars?.retryTimer) clearTimeout(wp.reconnectVars.retryTimer);
  if (wp.reconnectVars) wp.reconnectVars.retryTimer = null;
  wp.socket?.destroy();
  return true;
}
