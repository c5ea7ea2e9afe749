/**
 * Ends the mediasoup worker processes of a media thread that died, and collects their exit status.
 *
 * A child process belongs to the thread that spawned it: libuv waits only for the children of its own loop, so when
 * a media thread ends, its mediasoup workers are left running (nothing tells them), and once killed, as zombies
 * (their exit status has nobody left to collect it) until the daemon exits. Node has no waitpid of its own: it is
 * called from libc through koffi (an npm package with prebuilt binaries), and only for the pids given, never for
 * "any child", so that no other thread's child is taken from libuv.
 */
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';

/** waitpid's WNOHANG: return at once when the child has not exited yet. */
const WNOHANG = 1;

type WaitPid = (pid: number, status: number[], options: number) => number;

let waitpid: WaitPid | null | undefined;

/** libc's waitpid, or null (logged once by the caller) when koffi or libc cannot be loaded. */
async function loadWaitpid(): Promise<{ fn: WaitPid | null; error?: unknown }> {
  if (waitpid !== undefined) return { fn: waitpid };
  try {
    const koffi = (await import('koffi')).default;
    waitpid = koffi.load('libc.so.6').func('int waitpid(int pid, _Out_ int *status, int options)') as WaitPid;
    return { fn: waitpid };
  } catch (err) {
    waitpid = null;
    return { fn: null, error: err };
  }
}

/** The parent pid and the state letter of a process, from /proc; undefined when it is gone. */
export function processState(pid: number): { ppid: number; state: string } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { state: fields[0] ?? '?', ppid: Number(fields[1]) };
  } catch {
    return undefined;
  }
}

export interface ReapResult {
  /** Killed (if still running) and their exit status collected: nothing of them is left. */
  reaped: number[];
  /** Not this process's children any more (already collected, or never ours): left alone. */
  notOurs: number[];
  /** Still there at the deadline, or waitpid unavailable (then zombies until the daemon exits). */
  left: number[];
}

/**
 * SIGKILL each pid that is still this process's child, then wait (up to `deadlineMs`) until its exit status is
 * collected.
 */
export async function reapProcesses(pids: readonly number[], log: Logger, deadlineMs = 2000): Promise<ReapResult> {
  const result: ReapResult = { reaped: [], notOurs: [], left: [] };
  const ours = pids.filter((pid) => {
    const state = processState(pid);
    // A pid whose process is gone, or whose parent is not this process, may be someone else's by now.
    if (state?.ppid === process.pid) return true;
    result.notOurs.push(pid);
    return false;
  });
  if (ours.length === 0) return result;
  for (const pid of ours) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch (err) {
      log.debug({ err, pid }, 'mediasoup worker already gone');
    }
  }
  const { fn, error } = await loadWaitpid();
  if (!fn) {
    log.error({ err: error, pids: ours }, 'cannot collect the exit status of the dead media thread\'s mediasoup workers (koffi/libc not loaded): they stay as zombies until the daemon exits');
    result.left.push(...ours);
    return result;
  }
  const end = performance.now() + deadlineMs;
  let waiting = ours;
  while (waiting.length > 0) {
    waiting = waiting.filter((pid) => {
      const got = fn(pid, [0], WNOHANG);
      if (got === pid) result.reaped.push(pid);
      else if (got === -1) result.notOurs.push(pid);
      return got === 0;
    });
    if (waiting.length === 0 || performance.now() >= end) break;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  result.left.push(...waiting);
  return result;
}
