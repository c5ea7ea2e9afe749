/**
 * Which configuration keys a reload (SIGHUP) applies to the running daemon, and which need a restart. A reload that
 * changes any of the latter is refused as a whole, naming them: the daemon never runs with a mix, and never keeps an
 * old secret or ACL silently. Keys added to the schema later need a restart until they are listed here.
 */
import type { Config } from './schema.js';

/** Applied by `Daemon.reload` (a key covers everything under it). */
export const RELOADABLE_KEYS: readonly string[] = [
  'meta.app_secret',
  'meta.verify_token',
  'meta.appsecret_proof',
  'pages',
  'sip.acl',
  'sip.digest',
  'sip.headers',
  'sip.default_page',
  'sip.from_user',
  'sip.transfer',
  'sip.per_source',
  'routes',
  'media.srtp',
  'calls.max_concurrent',
  'calls.accept_deadline_ms',
  'calls.connect_timeout_ms',
  'calls.permission_check',
  'calls.request_permission_on_denied',
  'calls.admission',
  'logging.hash_psid',
];

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Paths (`sip.drachtio.secret`) whose values differ; arrays and scalars compare as a whole. */
export function changedKeys(before: unknown, after: unknown, prefix = ''): string[] {
  if (isPlainObject(before) && isPlainObject(after)) {
    const keys = new Set([...Object.keys(before), ...Object.keys(after)]);
    return [...keys].flatMap((k) => changedKeys(before[k], after[k], prefix ? `${prefix}.${k}` : k));
  }
  return JSON.stringify(before) === JSON.stringify(after) ? [] : [prefix || '(root)'];
}

/** The keys a reload from `current` to `next` changes that only a restart applies. */
export function keysNeedingRestart(current: Config, next: Config): string[] {
  return changedKeys(current, next).filter((path) => !RELOADABLE_KEYS.some((key) => path === key || path.startsWith(`${key}.`)));
}
