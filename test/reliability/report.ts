/**
 * Regenerates RELIABILITY.md from the figures the reliability test files wrote under test/reliability/results/.
 * Each test file also does this when it finishes; run this after a partial run: `npx tsx test/reliability/report.ts`.
 */
import { REPORT_FILE, writeReport } from '../helpers/reliability.js';

writeReport();
process.stdout.write(`${REPORT_FILE} written\n`);
