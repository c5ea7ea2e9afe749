/**
 * The drachtio-srf door: the reach into srf's wire protocol (stop reconnecting when a leg closes while not connected)
 * binds against the locked drachtio-srf; another version or a changed wire protocol stops start-up, naming it.
 */
import t from 'tap';
import { createRequire } from 'node:module';
import { installedVersion } from '../../../src/core/dependencyPatch.js';
import {
  DRACHTIO_SRF_PATCHED_VERSION,
  applyDrachtioSrfPatches,
  checkDrachtioSrfPatches,
  stopSrfReconnecting,
} from '../../../src/sip/drachtioSrfPatches.js';
import { replaceForTest } from '../../helpers/replaceForTest.js';

const require = createRequire(import.meta.url);

t.test('binds against the locked drachtio-srf', async (t) => {
  t.equal(installedVersion('drachtio-srf'), DRACHTIO_SRF_PATCHED_VERSION);
  const report = applyDrachtioSrfPatches();
  t.same(report.degraded, []);
  t.equal(report.applied.length, 1);
  t.equal(applyDrachtioSrfPatches(), report, 'idempotent');
});

t.test('another drachtio-srf version stops start-up', async (t) => {
  t.throws(() => checkDrachtioSrfPatches({ installedVersion: '5.1.0' }), {
    code: 'DEPENDENCY_PATCH_MISMATCH',
    message: /^drachtio-srf: installed version 5\.1\.0, but the runtime patches were written for 5\.0\.29/,
  });
});

t.test('a wire protocol whose reconnection no longer stops on `closing` stops start-up', async (t) => {
  const WireProtocol = require('drachtio-srf/lib/wire-protocol.js') as { prototype: object };
  replaceForTest(t, WireProtocol.prototype, '_onConnectionGone', function reconnectAlways() {
    return undefined;
  });
  t.throws(() => checkDrachtioSrfPatches(), { message: /no longer stops on `closing`/ });
});

t.test('stopSrfReconnecting ends the retry timer and the socket', async (t) => {
  let fired = false;
  let destroyed = false;
  const retryTimer = setTimeout(() => (fired = true), 20);
  const wp = { closing: false, reconnectVars: { retryTimer }, socket: { destroy: () => (destroyed = true) } };
  t.equal(stopSrfReconnecting({ _app: { client: { wp } } }), true);
  await new Promise((resolve) => setTimeout(resolve, 40));
  t.same({ fired, destroyed, closing: wp.closing, retryTimer: wp.reconnectVars.retryTimer }, { fired: false, destroyed: true, closing: true, retryTimer: null });
  t.equal(stopSrfReconnecting({ _app: {} }), false, 'nothing to stop before srf started connecting');
});
