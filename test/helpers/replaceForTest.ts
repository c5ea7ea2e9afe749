/** Replace `target[key]` for the rest of test `t` (restored at its teardown): simulates a dependency that changed. */
import type { Test } from 'tap';

export function replaceForTest(t: Test, target: object, key: string, value: unknown): void {
  const record = target as Record<string, unknown>;
  const had = Object.prototype.hasOwnProperty.call(record, key);
  const saved = record[key];
  record[key] = value;
  t.teardown(() => {
    if (had) record[key] = saved;
    else delete record[key];
  });
}
