/**
 * The mediasoup door: the payload-channel write batching binds against the locked mediasoup (a probe producer writes
 * through the socket it corks); another version or a changed payload channel is reported as degraded, not silently
 * skipped, and never stops start-up (it is an optimisation).
 */
import t from 'tap';
import { createRequire } from 'node:module';
import { installedVersion } from '../../../src/core/dependencyPatch.js';
import { MEDIASOUP_PATCHED_VERSION, applyMediasoupPatches, checkMediasoupPatches } from '../../../src/media/mediasoupPatches.js';
import { replaceForTest } from '../../helpers/replaceForTest.js';

const require = createRequire(import.meta.url);

t.test('binds against the locked mediasoup, once', async (t) => {
  t.equal(installedVersion('mediasoup'), MEDIASOUP_PATCHED_VERSION);
  const report = applyMediasoupPatches();
  t.same(report, { dependency: 'mediasoup', version: '3.8.4', applied: ['payload channel write batching'], degraded: [] });
  t.equal(applyMediasoupPatches(), report, 'idempotent');
});

t.test('another mediasoup version is reported as degraded, with both versions', async (t) => {
  const report = checkMediasoupPatches({ installedVersion: '3.14.0' });
  t.same(report.applied, []);
  t.equal(report.degraded.length, 1);
  t.match(report.degraded[0], { patch: 'payload channel write batching', reason: /installed version 3\.14\.0, .*written for 3\.8\.4/ });
});

t.test('a payload channel that no longer writes through its producer socket is reported as degraded', async (t) => {
  const { PayloadChannel } = require('mediasoup/lib/PayloadChannel.js') as { PayloadChannel: { prototype: object } };
  replaceForTest(t, PayloadChannel.prototype, 'notify', () => undefined);
  const report = checkMediasoupPatches();
  t.same(report.applied, []);
  t.match(report.degraded[0], { reason: /Producer\.send does not write to the payload channel socket/ });
});
