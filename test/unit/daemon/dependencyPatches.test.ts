/** At start the daemon turns an optimisation that could not bind into one warning and a metric, never silence. */
import t from 'tap';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { reportDependencyPatches } from '../../../src/daemon/dependencyPatches.js';
import { Metrics } from '../../../src/observability/index.js';

t.test('a degraded optimisation: one warning naming it, and msb_dependency_patch_degraded 1', async (t) => {
  const lines: Record<string, unknown>[] = [];
  const log = pino(
    { level: 'debug' },
    new Writable({
      write(chunk, _enc, cb) {
        lines.push(JSON.parse(String(chunk)) as Record<string, unknown>);
        cb();
      },
    }),
  );
  const metrics = new Metrics();
  reportDependencyPatches(
    [
      { dependency: 'werift', version: '0.25.2', applied: ['UdpTransport.init'], degraded: [] },
      { dependency: 'node', version: '21.0.0', applied: [], degraded: [{ patch: 'dgram numeric lookup', reason: 'installed version 21.0.0' }] },
    ],
    log,
    metrics,
  );
  const warnings = lines.filter((l) => l['level'] === 40);
  t.equal(warnings.length, 1);
  t.match(warnings[0], { dependency: 'node', version: '21.0.0', patch: 'dgram numeric lookup', reason: 'installed version 21.0.0' });
  t.match(await metrics.text(), /msb_dependency_patch_degraded\{dependency="node",patch="dgram numeric lookup"\} 1/);
  t.notMatch(await metrics.text(), /msb_dependency_patch_degraded\{dependency="werift"/);
});
