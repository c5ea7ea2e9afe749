/**
 * The werift door: every patch binds against the locked werift, applying twice (once per thread that runs legs)
 * changes nothing, and a different version or a missing method stops start-up with a message that names it.
 */
import t from 'tap';
import { DtlsClient, DtlsSocket, RTCDtlsTransport, UdpTransport } from 'werift';
import { DependencyPatchError } from '../../../src/core/errors.js';
import { installedVersion } from '../../../src/core/dependencyPatch.js';
import {
  WERIFT_PATCHED_VERSION,
  applyWeriftPatches,
  checkWeriftPatches,
  isWeriftDtlsFixApplied,
} from '../../../src/messenger/werift/index.js';
import { replaceForTest } from '../../helpers/replaceForTest.js';

t.test('binds every patch against the locked werift, once', async (t) => {
  t.equal(installedVersion('werift'), WERIFT_PATCHED_VERSION, 'package-lock installs the version the patches were written for');
  const report = applyWeriftPatches();
  t.equal(report.version, WERIFT_PATCHED_VERSION);
  t.same(
    [...report.applied].sort(),
    [
      'DtlsClient.connect',
      'DtlsSocket.close',
      'Flight.transmit',
      'Flight5.exec',
      'RTCDtlsTransport.start',
      'UdpTransport.init',
      'dgram numeric-address lookup skip',
    ],
    'all seven patches in force',
  );
  t.same(report.degraded, [], 'no optimisation left out on this Node');
  t.ok(isWeriftDtlsFixApplied());
  const start = RTCDtlsTransport.prototype.start;
  t.equal(applyWeriftPatches({ installedVersion: '9.9.9' }), report, 'a second call (another worker thread) returns the first report');
  t.equal(RTCDtlsTransport.prototype.start, start, 'and wraps nothing twice');
});

t.test('another werift version is refused, naming both versions', async (t) => {
  const err = t.throws(() => checkWeriftPatches({ installedVersion: '0.26.0' })) as unknown;
  t.type(err, DependencyPatchError);
  t.equal((err as DependencyPatchError).code, 'DEPENDENCY_PATCH_MISMATCH');
  t.match((err as Error).message, /^werift: installed version 0\.26\.0, but the runtime patches were written for 0\.25\.2/);
});

t.test('a method a patch replaces that is gone is refused, naming it', async (t) => {
  t.test('RTCDtlsTransport.start', async (t) => {
    replaceForTest(t, RTCDtlsTransport.prototype, 'start', undefined);
    t.throws(() => checkWeriftPatches(), { code: 'DEPENDENCY_PATCH_MISMATCH', message: /RTCDtlsTransport\.prototype has no start/ });
  });
  t.test('DtlsSocket.close', async (t) => {
    replaceForTest(t, DtlsSocket.prototype, 'close', undefined);
    t.throws(() => checkWeriftPatches(), { message: /DtlsSocket\.prototype has no close/ });
  });
  t.test('UdpTransport.init', async (t) => {
    replaceForTest(t, UdpTransport.prototype, 'init', undefined);
    t.throws(() => checkWeriftPatches(), { message: /UdpTransport\.prototype has no init/ });
  });
  t.test('DtlsClient.connect', async (t) => {
    replaceForTest(t, DtlsClient.prototype, 'connect', undefined);
    t.throws(() => checkWeriftPatches(), { message: /DtlsClient\.prototype has no connect/ });
  });
  t.test('after a failed check the locked version still checks clean', async (t) => {
    t.doesNotThrow(() => checkWeriftPatches());
  });
});
