/**
 * Shared pieces of the reliability suite (test/reliability/): counting what a process holds open, forcing garbage
 * collection, and recording each file's figures so RELIABILITY.md can be regenerated from them.
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import vm from 'node:vm';
import tap, { type Test } from 'tap';
import { currentCommit } from '../../bench/lib/report.js';
import type { LoopbackBridge } from '../../src/simulator/loopbackBridge.js';
import type { PbxDialog } from '../../src/simulator/drachtio/index.js';
import type { MetaMediaSession } from '../../src/simulator/media/MetaMediaServer.js';
import type { Harness } from './bridgeHarness.js';
import { PAGE_ID, sdpTarget, sleep, until } from './bridgeHarness.js';
import { createRtpPeer, type RtpPeer } from './rtpPeer.js';
import { META_TO_PBX_HZ, PBX_TO_META_HZ, analyzeTone } from './tone.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** Where each reliability test file writes its figures (not committed; RELIABILITY.md is). */
export const RESULTS_DIR = join(ROOT, 'test', 'reliability', 'results');
export const REPORT_FILE = join(ROOT, 'RELIABILITY.md');

/** Active libuv handles and requests by type (`UDPWrap`, `TCPWrap`, `Timeout`, ...). */
export function handles(): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const name of process.getActiveResourcesInfo()) counts[name] = (counts[name] ?? 0) + 1;
  return counts;
}

/** Live mediasoup objects of the bridge's workers by class (Router, PlainTransport, Producer, ...), for messages. */
export async function mediasoupObjectKinds(h: Harness): Promise<Record<string, number>> {
  return (await h.daemon.media.inspect()).mediasoupObjects;
}

/**
 * Routers (from the workers' dumps) and all live mediasoup objects in the bridge's workers, on every media thread;
 * `preparedRouters`: those of the media made ahead of calls (`calls.prepared_media`), ready for the next calls.
 */
export async function mediasoupObjects(h: Harness): Promise<{ routers: number; objects: number; preparedRouters: number }> {
  const { workers, mediasoupObjects: kinds, prepared } = await h.daemon.media.inspect();
  return {
    routers: workers.reduce((n, w) => n + w.routers, 0),
    objects: Object.values(kinds).reduce((a, b) => a + b, 0),
    preparedRouters: prepared?.media.ready ?? 0,
  };
}

/** Handles held open by this process's main thread and by the bridge's media threads, by type. */
export async function bridgeHandles(h: Harness): Promise<Record<string, number>> {
  const counts = handles();
  for (const [name, n] of Object.entries((await h.daemon.media.inspect()).threadHandles)) counts[name] = (counts[name] ?? 0) + n;
  return counts;
}

let gcFn: (() => void) | undefined;

/** A full garbage collection, without needing node to be started with --expose-gc. */
export function collectGarbage(): void {
  if (!gcFn) {
    const exposed = (globalThis as { gc?: () => void }).gc;
    if (exposed) gcFn = exposed;
    else {
      v8.setFlagsFromString('--expose-gc');
      gcFn = vm.runInNewContext('gc') as () => void;
    }
  }
  gcFn();
}

/** Heap in use after settling: several collections with pauses, so finalizers and weak callbacks have run. */
export async function settledHeapBytes(): Promise<number> {
  for (let i = 0; i < 4; i++) {
    collectGarbage();
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  collectGarbage();
  return process.memoryUsage().heapUsed;
}

export interface LeftOver {
  calls: number;
  /** Routers beyond those of the prepared media (which wait for the next calls by design). */
  routers: number;
  /** mediasoup objects beyond the baseline. */
  objects: number;
  udpSockets: number;
  timers: number;
}

export interface Baseline {
  handles: Record<string, number>;
  objects: number;
}

export async function baseline(h: Harness): Promise<Baseline> {
  return { handles: await bridgeHandles(h), objects: (await mediasoupObjects(h)).objects };
}

/**
 * What is left once every call has ended, compared with `base` (taken with the bridge idle): call records, routers,
 * worker objects, UDP sockets, timers (TCP is not counted: HTTP keep-alive connections come and go by themselves). Waits a little for things that close asynchronously.
 */
export async function leftOver(h: Harness, base: Baseline, settleMs = 5000): Promise<LeftOver> {
  await until(() => h.daemon.controller.registry.size === 0, settleMs, 'all calls released').catch(() => undefined);
  const measure = async (): Promise<LeftOver> => {
    const now = await bridgeHandles(h);
    const ms = await mediasoupObjects(h);
    return {
      calls: h.daemon.controller.registry.size,
      routers: Math.max(0, ms.routers - ms.preparedRouters),
      objects: Math.max(0, ms.objects - base.objects),
      udpSockets: Math.max(0, (now.UDPWrap ?? 0) - (base.handles.UDPWrap ?? 0)),
      timers: Math.max(0, (now.Timeout ?? 0) - (base.handles.Timeout ?? 0)),
    };
  };
  const end = Date.now() + settleMs;
  let left = await measure();
  while (Date.now() < end && Object.values(left).some((n) => n > 0)) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    left = await measure();
  }
  return left;
}

/** Sum of everything left (the "leaks found" figure). */
export function leakCount(left: LeftOver): number {
  return Object.values(left).reduce((a, b) => a + b, 0);
}

/** Assert nothing is left, one assertion per kind so a failure names what leaked. */
export function assertNothingLeft(t: Test, left: LeftOver, what = ''): void {
  const suffix = what ? ` ${what}` : '';
  t.equal(left.calls, 0, `no call record left${suffix}`);
  t.equal(left.routers, 0, `no mediasoup router left${suffix}`);
  t.equal(left.objects, 0, `no mediasoup transport, producer or consumer left${suffix}`);
  t.equal(left.udpSockets, 0, `no UDP socket left${suffix}`);
  t.equal(left.timers, 0, `no timer left${suffix}`);
}

/** Parsed JSON log lines whose `msg` is `msg`. */
export function logsWith(h: Harness, msg: string | RegExp): Array<Record<string, unknown>> {
  return h.logs().filter((l) => (typeof msg === 'string' ? l.msg === msg : msg.test(String(l.msg))));
}

/** The summary objects of the `call summary` log lines. */
export function summaries(h: Harness): Array<Record<string, unknown>> {
  return logsWith(h, 'call summary').map((l) => l.summary as Record<string, unknown>);
}

// ---------------------------------------------------------------------------------------------------------------
// A live call with audio both ways
// ---------------------------------------------------------------------------------------------------------------

export interface LiveCall {
  callId: string;
  session: MetaMediaSession;
  dialog: PbxDialog;
  peer: RtpPeer;
  close(): void;
}

/**
 * A consumer-initiated call that the fake PBX answers with an RTP peer (PCMU); Meta plays META_TO_PBX_HZ (1 kHz),
 * the PBX PBX_TO_META_HZ (440 Hz).
 * Resolves once media toward Meta is connected. Only this call's INVITE is answered (later ones get 486).
 */
export async function startLiveCall(h: LoopbackBridge, psid = '7000000000000001'): Promise<LiveCall> {
  const peer = await createRtpPeer({ codec: 'PCMU' });
  let taken = false;
  const answered = new Promise<PbxDialog>((resolve, reject) => {
    h.drachtio.pbx.onInvite(async (invite) => {
      if (taken) return invite.reject(486, 'Busy Here');
      taken = true;
      try {
        const target = sdpTarget(invite.sdp);
        peer.setRemote(target.address, target.port);
        resolve(await invite.answer(peer.sdp()));
      } catch (err) {
        reject(err);
      }
    });
  });
  const callId = h.sim.placeCall({ pageId: PAGE_ID, psid });
  const dialog = await answered;
  const session = await h.sim.waitForSession(callId, 15_000);
  await session.whenConnected();
  peer.startTone(PBX_TO_META_HZ);
  session.startTone(META_TO_PBX_HZ);
  const call = { callId, session, dialog, peer, close: () => peer.close() };
  // On a loaded machine DTLS can take a while after ICE: the call counts as live once audio flows both ways.
  const end = Date.now() + 15_000;
  for (;;) {
    const audio = await audioFlows(call, 500);
    if (audio.atPbx && audio.atMeta) break;
    if (Date.now() > end) throw new Error(`live call: no audio both ways within 15 s (${JSON.stringify(audio)})`);
  }
  return call;
}

export interface AudioCheck {
  /** Meta's tone (META_TO_PBX_HZ) heard at the PBX in at least half the window's 100 ms blocks. */
  atPbx: boolean;
  /** The PBX's tone (PBX_TO_META_HZ) heard at Meta in at least half the window's 100 ms blocks. */
  atMeta: boolean;
  /** Fraction of the window's expected samples that arrived, each side. */
  pbxFill: number;
  metaFill: number;
  /** Packets each side sent and received in the window. */
  packets: { pbxSent: number; pbxReceived: number; metaSent: number; metaReceived: number };
}

/**
 * Fraction of 100 ms blocks in which `hz` (default 1 kHz) is detected (0 when nothing arrived). Blocks, not the whole
 * window: on a loaded machine frames arrive late or are lost, and the splices would blur one long analysis.
 */
export function toneInBlocks(pcm: Int16Array, sampleRate: number, hz = 1000): number {
  const block = sampleRate / 10;
  let blocks = 0;
  let withTone = 0;
  for (let at = 0; at + block <= pcm.length; at += block) {
    blocks++;
    if (analyzeTone(pcm.subarray(at, at + block), sampleRate, hz).detected) withTone++;
  }
  return blocks === 0 ? 0 : withTone / blocks;
}

/** Marks the start of an audio window; `check()` analyses what each side received since. */
export function audioWindow(call: LiveCall): { check(): AudioCheck } {
  const pbxStart = call.peer.receivedPcm().length;
  const metaStart = call.session.receivedPcm().length;
  const started = Date.now();
  const p0 = { ps: call.peer.packetsSent, pr: call.peer.packetsReceived, ms: call.session.packetsSent, mr: call.session.packetsReceived };
  return {
    check(): AudioCheck {
      const seconds = (Date.now() - started) / 1000;
      const atPbx = call.peer.receivedPcm().slice(pbxStart);
      const atMeta = call.session.receivedPcm().slice(metaStart);
      return {
        atPbx: toneInBlocks(atPbx, 8000, META_TO_PBX_HZ) >= 0.5,
        atMeta: toneInBlocks(atMeta, 48000, PBX_TO_META_HZ) >= 0.5,
        pbxFill: atPbx.length / (8000 * seconds),
        metaFill: atMeta.length / (48000 * seconds),
        packets: {
          pbxSent: call.peer.packetsSent - p0.ps,
          pbxReceived: call.peer.packetsReceived - p0.pr,
          metaSent: call.session.packetsSent - p0.ms,
          metaReceived: call.session.packetsReceived - p0.mr,
        },
      };
    },
  };
}

/** Let audio flow for `ms`, then say whether it flowed both ways. */
export async function audioFlows(call: LiveCall, ms = 1000): Promise<AudioCheck> {
  const window = audioWindow(call);
  await sleep(ms);
  return window.check();
}

// ---------------------------------------------------------------------------------------------------------------
// Figures and RELIABILITY.md
// ---------------------------------------------------------------------------------------------------------------

export type Figure = number | string;

/** How a figure is compared with its threshold. */
export type Comparison = '>=' | '<=' | '==' | '>' | '<';

/** The threshold a figure was checked against, and whether it held. */
export interface Threshold {
  op: Comparison;
  limit: number;
  held: boolean;
}

/** One row of a section: a figure given for information, or a figure with the threshold the test checked. */
export type FigureRow = [label: string, value: Figure] | [label: string, value: number, threshold: Threshold];

export interface FigureSet {
  /** Section title in RELIABILITY.md. */
  title: string;
  /** Ordered rows. */
  figures: FigureRow[];
}

/** A figure set as written to the results directory: with the run it came from and its outcome. */
export interface RecordedFigureSet extends FigureSet {
  /** The test file that produced it, from the repository root. */
  file: string;
  /** Every assertion of that test file passed (false: the figures are not a result, they are a failure's trace). */
  passed: boolean;
  /** The commit the run was made from (`bench/lib/report.ts`'s `currentCommit`). */
  commit: string;
  /** When the test file finished, UTC. */
  finishedAt: string;
}

function compare(value: number, op: Comparison, limit: number): boolean {
  switch (op) {
    case '>=':
      return value >= limit;
    case '<=':
      return value <= limit;
    case '==':
      return value === limit;
    case '>':
      return value > limit;
    case '<':
      return value < limit;
  }
}

/**
 * Asserts `value op limit` and returns the report row that shows the figure with that threshold: the figure in
 * RELIABILITY.md and the assertion are one and the same, so they cannot drift apart.
 * @param detail added to the assertion message (e.g. "1415 of 1780 packets")
 */
export function checkedFigure(t: Test, label: string, value: number, op: Comparison, limit: number, detail?: string): FigureRow {
  const held = compare(value, op, limit);
  t.ok(held, `${label.trim()}: ${value} ${op} ${limit}${detail ? ` (${detail})` : ''}`);
  return [label, value, { op, limit, held }];
}

/**
 * The report row of a figure whose threshold a test asserted by other means (e.g. `assertNothingLeft` for the
 * leaks each part of a file found): the row shows the threshold and whether the figure meets it.
 */
export function figureAgainst(label: string, value: number, op: Comparison, limit: number): FigureRow {
  return [label, value, { op, limit, held: compare(value, op, limit) }];
}

/** The reliability test file this process runs, from the repository root (undefined when not one). */
const RUNNING_FILE = ((): string | undefined => {
  const file = relative(ROOT, process.argv[1] ?? '');
  return /^test\/reliability\/[^/]+\.test\.ts$/.test(file) ? file : undefined;
})();

/**
 * Results a previous run of this same file left behind are removed when it starts: if this run never gets to write
 * its own (killed, timed out), the report then has none for the file rather than an old run's that passed.
 */
function forgetPreviousResults(): void {
  if (RUNNING_FILE === undefined) return;
  let names: string[] = [];
  try {
    names = readdirSync(RESULTS_DIR).filter((f) => f.endsWith('.json'));
  } catch {
    return;
  }
  for (const name of names) {
    try {
      const set = JSON.parse(readFileSync(join(RESULTS_DIR, name), 'utf8')) as Partial<RecordedFigureSet>;
      if (set.file === RUNNING_FILE) rmSync(join(RESULTS_DIR, name));
    } catch {
      // unreadable or removed meanwhile: the report writer will say so
    }
  }
}
forgetPreviousResults();

/** Figure sets recorded by this test file, written when the file ends (when its outcome is known). */
const pendingSets = new Map<string, FigureSet | (() => FigureSet)>();
let flushRegistered = false;

/**
 * Record one test file's figures (`<file>` or `<file>-<part>` for a file with several sets), or a function that
 * returns them once the file's tests have run. They are written to
 * test/reliability/results/<name>.json when the test file ends, with whether every assertion of the file passed,
 * and RELIABILITY.md is regenerated then (see `writeReport`: a failing run does not overwrite it).
 */
export function recordFigures(name: string, set: FigureSet | (() => FigureSet)): void {
  pendingSets.set(name, set);
  if (flushRegistered) return;
  flushRegistered = true;
  // At exit, not at the root test's teardown: a file whose assertions passed but whose process does not end (a
  // handle left open) is killed by tap's timeout and must not leave results that say it passed.
  process.once('exit', (code) => {
    const passed = tap.passing() && code === 0;
    const commit = currentCommit();
    const finishedAt = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    const file = RUNNING_FILE ?? 'test/reliability';
    mkdirSync(RESULTS_DIR, { recursive: true });
    for (const [setName, figureSet] of pendingSets) {
      const recorded: RecordedFigureSet = { ...(typeof figureSet === 'function' ? figureSet() : figureSet), file, passed, commit, finishedAt };
      writeFileSync(join(RESULTS_DIR, `${setName}.json`), `${JSON.stringify(recorded, null, 2)}\n`);
    }
    const outcome = writeReport();
    if (!outcome.written) process.stderr.write(`${outcome.reason}\n`);
  });
}

/** Where a refused report goes instead of RELIABILITY.md (not committed). */
export const FAILED_REPORT_FILE = join(RESULTS_DIR, 'RELIABILITY.failed.md');

function thresholdCell(row: FigureRow): string {
  if (row.length === 2) return 'for information';
  const { op, limit, held } = row[2];
  return `${op} ${limit}${held ? '' : ' **FAILED**'}`;
}

/** The report's text from recorded figure sets (in the order given). */
export function renderReport(sets: ReadonlyArray<{ name: string; set: RecordedFigureSet }>): string {
  const lines = [
    '# Reliability',
    '',
    'Figures from the last passing run of each reliability test file (`test/reliability/`), on loopback. Each test',
    'file records its figures when it ends, with whether all its assertions passed; this file is regenerated from',
    'them (`npx tsx test/reliability/report.ts`, and at the end of each reliability test file) only when every file',
    'present passed: a failing run leaves it as it is and writes `test/reliability/results/RELIABILITY.failed.md`.',
    'A figure with a threshold is the value the test asserted against it; "for information" figures are not',
    'checked. Run the suite with `npx tap test/reliability/*.test.ts` (about 3 minutes on 2 busy cores).',
    '',
  ];
  let leaks = 0;
  for (const { name, set } of sets) {
    lines.push(
      `## ${set.title}`,
      '',
      `\`${set.file ?? `test/reliability/${name.split('-')[0]}.test.ts`}\`: ${set.passed ? 'passed' : '**FAILED**'}, ` +
        `commit ${set.commit}, finished ${set.finishedAt}.`,
      '',
      '| figure | value | checked against |',
      '| --- | --- | --- |',
    );
    for (const row of set.figures) {
      lines.push(`| ${row[0]} | ${row[1]} | ${thresholdCell(row)} |`);
      if (/^leaks found/.test(row[0]) && typeof row[1] === 'number') leaks += row[1];
    }
    lines.push('');
  }
  lines.push(`Leaks found, all files: **${leaks}**.`, '');
  return lines.join('\n');
}

/** The reliability test files, from the repository root (test/reliability/*.test.ts). */
function reliabilityTestFiles(): string[] {
  return readdirSync(join(ROOT, 'test', 'reliability'))
    .filter((f) => f.endsWith('.test.ts'))
    .sort()
    .map((f) => `test/reliability/${f}`);
}

/**
 * Regenerates RELIABILITY.md from every results file present, in file-name order, if every reliability test file
 * has results and every one of them comes from a passing run. Otherwise RELIABILITY.md is left alone and the report
 * goes to FAILED_REPORT_FILE.
 */
export function writeReport(): { written: boolean; file: string; reason?: string; text: string } {
  let files: string[] = [];
  try {
    files = readdirSync(RESULTS_DIR).filter((f) => f.endsWith('.json')).sort();
  } catch {
    files = [];
  }
  const sets = files.map((f) => ({
    name: f.replace(/\.json$/, ''),
    set: JSON.parse(readFileSync(join(RESULTS_DIR, f), 'utf8')) as RecordedFigureSet,
  }));
  const text = renderReport(sets);
  const failed = sets.filter(({ set }) => set.passed !== true).map(({ name }) => name);
  // Every reliability test file must have passed, not just those that have finished so far: a report made of the
  // files that happened to pass would drop the failing ones' sections without a word.
  const missing = reliabilityTestFiles().filter((file) => !sets.some(({ set }) => set.file === file));
  const target = failed.length === 0 && missing.length === 0 ? REPORT_FILE : FAILED_REPORT_FILE;
  mkdirSync(dirname(target), { recursive: true });
  // Several test files may finish at once: write whole, then rename.
  const tmp = `${target}.${process.pid}.tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, target);
  if (target === REPORT_FILE) return { written: true, file: target, text };
  const why = [
    failed.length > 0 ? `results of a failing run (${failed.join(', ')})` : '',
    missing.length > 0 ? `no results yet from ${missing.join(', ')}` : '',
  ].filter((x) => x !== '');
  const reason = `${REPORT_FILE} left as it is: ${why.join('; ')}; the report so far is in ${FAILED_REPORT_FILE}`;
  return { written: false, file: target, reason, text };
}
