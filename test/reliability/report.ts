/**
 * Regenerates RELIABILITY.md from the figures the reliability test files wrote under test/reliability/results/.
 * Each test file also does this when it ends; run this after a partial run: `npx tsx test/reliability/report.ts`.
 * Exits 1 without touching RELIABILITY.md when any of those results comes from a failing run.
 */
import { writeReport } from '../helpers/reliability.js';

const outcome = writeReport();
if (outcome.written) {
  process.stdout.write(`${outcome.file} written\n`);
} else {
  process.stderr.write(`${outcome.reason}\n`);
  process.exitCode = 1;
}
