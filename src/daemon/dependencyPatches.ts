/**
 * What the daemon says about the runtime patches of its dependencies at start. Each dependency's door
 * (`applyWeriftPatches`, `applyDrachtioSrfPatches`) runs first, before anything uses the
 * dependency: a patch the bridge needs that cannot bind throws `DependencyPatchError` there and start-up stops with
 * its message. This reports the rest: what is in force (debug), and each optimisation that could not bind (one warning
 * and `msb_dependency_patch_degraded{dependency,patch} 1`).
 */
import type { Logger } from 'pino';
import type { PatchReport } from '../core/dependencyPatch.js';
import type { Metrics } from '../observability/index.js';

export function reportDependencyPatches(reports: PatchReport[], log: Logger, metrics: Pick<Metrics, 'dependencyPatchDegraded'>): void {
  for (const { dependency, version, applied, degraded } of reports) {
    log.debug({ dependency, version, applied }, 'dependency patches applied');
    for (const { patch, reason } of degraded) {
      log.warn({ dependency, version, patch, reason }, 'dependency optimisation not applied: running without it');
      metrics.dependencyPatchDegraded(dependency, patch);
    }
  }
}
