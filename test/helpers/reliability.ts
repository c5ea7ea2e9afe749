/**
 * Shared pieces of the reliability suite (test/reliability/): counting what a process holds open, forcing garbage
 * collection, and recording each file's figures so RELIABILITY.md can be regenerated from them.
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import vm from 'node:vm';
import type { Test } from 'tap';
import { loadMediasoup } from '../../src/media/WorkerPool.js';
import type { LoopbackBridge } from '../../src/simulator/loopbackBridge.js';
import type { PbxDialog } from '../../src/simulator/drachtio/index.js';
import type { MetaMediaSession } from '../../src/simulator/media/MetaMediaServer.js';
import type { Harness } from './bridgeHarness.js';
import { PAGE_ID, sdpTarget, sleep, until } from './bridgeHarness.js';
import { createRtpPeer, type RtpPeer } from './rtpPeer.js';
import { analyzeTone } from './tone.js';

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

type Observed = { observer: { on(event: string, fn: (child: Observed) => void): void; once(event: string, fn: () => void): void } };

/** Live mediasoup objects (routers, transports, producers, consumers) per worker, from mediasoup's observers. */
const liveObjects = new Map<unknown, Set<unknown>>();
let tracking: Promise<void> | undefined;

/**
 * Count mediasoup objects as they are created and closed. Call before the bridge starts its workers
 * (before `startHarness`); objects of workers started earlier are not seen.
 */
export function trackMediasoup(): Promise<void> {
  tracking ??= loadMediasoup().then((ms) => {
    const watch = (set: Set<unknown>, obj: Observed, children: string[]): void => {
      set.add(obj);
      obj.observer.once('close', () => set.delete(obj));
      for (const event of children) obj.observer.on(event, (child) => watch(set, child, event === 'newtransport' ? ['newproducer', 'newconsumer', 'newdataproducer', 'newdataconsumer'] : []));
    };
    (ms.observer as unknown as Observed['observer']).on('newworker', (worker) => {
      const set = new Set<unknown>();
      liveObjects.set(worker, set);
      worker.observer.once('close', () => liveObjects.delete(worker));
      worker.observer.on('newrouter', (router) => watch(set, router, ['newtransport', 'newrtpobserver']));
    });
  });
  return tracking;
}

/** Live mediasoup objects of the bridge's workers by class (Router, PlainTransport, Producer, ...), for messages. */
export function mediasoupObjectKinds(h: Harness): Record<string, number> {
  const kinds: Record<string, number> = {};
  for (const worker of h.daemon.pool.workers) {
    for (const obj of liveObjects.get(worker) ?? []) {
      const name = (obj as object).constructor.name;
      kinds[name] = (kinds[name] ?? 0) + 1;
    }
  }
  return kinds;
}

/** Routers (from the workers' dumps) and all live objects (from `trackMediasoup`) in the bridge's workers. */
export async function mediasoupObjects(h: Harness): Promise<{ routers: number; objects: number }> {
  let routers = 0;
  let objects = 0;
  for (const worker of h.daemon.pool.workers) {
    const dump = (await worker.dump()) as { routerIds: string[] };
    routers += dump.routerIds.length;
    objects += liveObjects.get(worker)?.size ?? 0;
  }
  return { routers, objects };
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
  return { handles: handles(), objects: (await mediasoupObjects(h)).objects };
}

/**
 * What is left once every call has ended, compared with `base` (taken with the bridge idle): call records, routers,
 * worker objects, UDP sockets, timers (TCP is not counted: HTTP keep-alive connections come and go by themselves). Waits a little for things that close asynchronously.
 */
export async function leftOver(h: Harness, base: Baseline, settleMs = 5000): Promise<LeftOver> {
  await until(() => h.daemon.controller.registry.size === 0, settleMs, 'all calls released').catch(() => undefined);
  const measure = async (): Promise<LeftOver> => {
    const now = handles();
    const ms = await mediasoupObjects(h);
    return {
      calls: h.daemon.controller.registry.size,
      routers: ms.routers,
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
 * A consumer-initiated call that the fake PBX answers with an RTP peer (PCMU); a 1 kHz tone plays from each side.
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
  peer.startTone(1000);
  session.startTone(1000);
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
  /** 1 kHz heard at the PBX in the window. */
  atPbx: boolean;
  /** 1 kHz heard at Meta in the window. */
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
        atPbx: toneInBlocks(atPbx, 8000) >= 0.5,
        atMeta: toneInBlocks(atMeta, 48000) >= 0.5,
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

export interface FigureSet {
  /** Section title in RELIABILITY.md. */
  title: string;
  /** Ordered rows: label -> value. */
  figures: Array<[string, Figure]>;
}

/** Write one test file's figures (test/reliability/results/<name>.json; `<file>-<part>` for a file with several sets) and regenerate RELIABILITY.md. */
export function recordFigures(name: string, set: FigureSet): void {
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(join(RESULTS_DIR, `${name}.json`), `${JSON.stringify(set, null, 2)}\n`);
  writeReport();
}

/** RELIABILITY.md from every results file present, in file-name order. Returns the text written. */
export function writeReport(): string {
  let files: string[] = [];
  try {
    files = readdirSync(RESULTS_DIR).filter((f) => f.endsWith('.json')).sort();
  } catch {
    files = [];
  }
  const sets = files.map((f) => ({ name: f.replace(/\.json$/, ''), set: JSON.parse(readFileSync(join(RESULTS_DIR, f), 'utf8')) as FigureSet }));
  const lines = [
    '# Reliability',
    '',
    'Figures from the last run of the reliability suite (`test/reliability/`), on loopback. Each test file records',
    'its own figures; this file is regenerated from them (`npx tsx test/reliability/report.ts`, and at the end of',
    'each reliability test file). Run it with `npx tap test/reliability/*.test.ts` (about 3 minutes on 2 busy cores).',
    '',
  ];
  let leaks = 0;
  for (const { name, set } of sets) {
    lines.push(`## ${set.title}`, '', `\`test/reliability/${name.split('-')[0]}.test.ts\``, '', '| figure | value |', '| --- | --- |');
    for (const [label, value] of set.figures) {
      lines.push(`| ${label} | ${value} |`);
      if (/^leaks found/.test(label) && typeof value === 'number') leaks += value;
    }
    lines.push('');
  }
  lines.push(`Leaks found, all files: **${leaks}**.`, '');
  const text = lines.join('\n');
  // Several test files may finish at once: write whole, then rename.
  const tmp = `${REPORT_FILE}.${process.pid}.tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, REPORT_FILE);
  return text;
}
