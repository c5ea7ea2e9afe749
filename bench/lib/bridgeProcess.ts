/**
 * The bridge as a child process for benches (`node --import tsx src/main.ts --config <file>`), so that what a bench
 * measures of it is the daemon's alone, not the load generator's sharing its event loop.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { REPO_ROOT } from './report.js';

export interface BridgeChild {
  pid: number;
  /** The webhook URL and the admin listener's `http://host:port`, as the bridge logged them. */
  webhookUrl: string;
  adminUrl: string;
  /** JSON log lines seen so far. */
  lines: Array<Record<string, unknown>>;
  /** SIGTERM (drain), SIGKILL after `graceMs`; removes the config. Idempotent. */
  stop(graceMs?: number): Promise<void>;
}

/** Start the bridge with this YAML; resolves once it logged that it started (or rejects with its stderr's tail). */
export async function startBridgeChild(configYaml: string, startTimeoutMs = 30_000): Promise<BridgeChild> {
  const dir = mkdtempSync(path.join(tmpdir(), 'msb-bench-'));
  const file = path.join(dir, 'config.yaml');
  writeFileSync(file, configYaml);
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'src/main.ts'), '--config', file], {
    cwd: REPO_ROOT,
    env: process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: Array<Record<string, unknown>> = [];
  let partial = '';
  let stderr = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    const parts = (partial + chunk).split('\n');
    partial = parts.pop() ?? '';
    for (const line of parts) {
      try {
        lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // not a log line
      }
    }
  });
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const kill = (): void => void child.kill('SIGKILL');
  process.once('exit', kill);
  let stopped = false;
  const stop = async (graceMs = 10_000): Promise<void> => {
    if (stopped) return;
    stopped = true;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const force = setTimeout(kill, graceMs);
      await exited;
      clearTimeout(force);
    }
    process.off('exit', kill);
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + startTimeoutMs;
  for (;;) {
    const started = lines.find((l) => l.msg === 'messenger-sip-bridge started');
    if (started) return { pid: child.pid!, webhookUrl: String(started.webhook), adminUrl: String(started.admin), lines, stop };
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop(0);
      throw new Error(`the bridge did not start:\n${stderr}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
