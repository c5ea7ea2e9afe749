/**
 * What every runtime patch of a dependency shares: read the installed version, check it and the shape being replaced,
 * and say what was applied. Each dependency has one door (`applyWeriftPatches`,
 * `applyDrachtioSrfPatches`) that the daemon calls at start; a patch the bridge needs throws `DependencyPatchError`
 * when it cannot bind, a patch that is only an optimisation is reported as `degraded` (the daemon logs one warning and
 * sets `msb_dependency_patch_degraded`).
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { DependencyPatchError } from './errors.js';

/** What one dependency's door did. */
export interface PatchReport {
  dependency: string;
  /** The installed version that was checked. */
  version: string;
  /** Patches in force. */
  applied: string[];
  /** Optimisations that could not bind, with why; the bridge works without them, slower. */
  degraded: { patch: string; reason: string }[];
}

const require = createRequire(import.meta.url);

/**
 * The version in `name`'s package.json, as installed where this project resolves it (a package whose `exports` hide
 * package.json is found from its main entry).
 */
export function installedVersion(name: string): string {
  let dir: string;
  try {
    dir = dirname(require.resolve(name));
  } catch (err) {
    throw new DependencyPatchError(name, 'package not installed', { cause: err });
  }
  for (;;) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === name && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // No package.json at this level (or not the package's own): keep walking up.
    }
    const parent = dirname(dir);
    if (parent === dir) throw new DependencyPatchError(name, 'package.json not found');
    dir = parent;
  }
}

/** Throws unless `installed` is exactly the version the patches were written for. */
export function expectVersion(dependency: string, installed: string, writtenFor: string): void {
  if (installed !== writtenFor) {
    throw new DependencyPatchError(
      dependency,
      `installed version ${installed}, but the runtime patches were written for ${writtenFor}: ` +
        `check each patch against the new version and update it (and the version it names) before running this one`,
    );
  }
}

/** Throws unless `target` (named `what` in the message) has a function under each of `methods`. */
export function expectMethods(dependency: string, what: string, target: object | undefined | null, methods: string[]): void {
  const missing = methods.filter((m) => typeof (target as Record<string, unknown> | undefined | null)?.[m] !== 'function');
  if (missing.length > 0) {
    throw new DependencyPatchError(dependency, `${what} has no ${missing.join(', ')}: the runtime patch cannot bind`);
  }
}

/** The message of a check that threw, for a `degraded` entry. */
export function reasonOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
