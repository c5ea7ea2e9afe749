/**
 * Showing a configuration without its secrets: `check-config` output and start-up logs.
 */
import YAML from 'yaml';
import { isSecretPath } from './loadConfig.js';
import type { Config } from './schema.js';

export const REDACTED = '[redacted]';

function redactNode(node: unknown, path: (string | number)[]): unknown {
  if (Array.isArray(node)) return node.map((item, i) => redactNode(item, [...path, i]));
  if (typeof node === 'object' && node !== null) {
    const out: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(node)) {
      const childPath = [...path, key];
      out[key] = isSecretPath(childPath) && value !== undefined ? REDACTED : redactNode(value, childPath);
    }
    return out;
  }
  return node;
}

/** A deep copy of `config` with every secret replaced by "[redacted]". */
export function redactConfig(config: Config): Config {
  return redactNode(config, []) as Config;
}

/** The effective configuration (defaults applied) as YAML, secrets redacted: what `check-config` prints. */
export function formatConfig(config: Config): string {
  return YAML.stringify(redactConfig(config), { lineWidth: 0 });
}
