/**
 * Whole-call load and set-up latency, the bridge side by side with rtpengine, on loopback.
 *
 *   npx tsx bench/calls.ts load  [--engine bridge|rtpengine|both] [--mode passthrough|transcode|both]
 *                                [--calls 25,50,100] [--seconds 15] [--warmup 2]
 *   npx tsx bench/calls.ts setup [--calls 1000] [--concurrency 1] [--prepared 0]
 *
 * The bridge runs as its own process (`node --import tsx src/main.ts --config <file>`, one mediasoup worker), so its
 * CPU and memory are the daemon's and its worker's alone. This process plays everything else: Meta (the simulator:
 * Graph API, signed webhooks, ICE-lite DTLS-passive mediasoup media servers), the drachtio-server double with its
 * fake PBX, and one RTP peer per call on the PBX side.
 *
 * rtpengine (Debian's daemon, userspace, on loopback, driven over ng) does the same job for the comparison: the PBX
 * peer's RTP/AVP offer goes through rtpengine toward Meta as UDP/TLS/RTP/SAVPF with ICE (Meta's ICE-lite media server
 * answers), so rtpengine runs full ICE and the DTLS client, then SRTP <-> RTP, and Opus <-> PCMU with --mode
 * transcode. The same Meta media servers and PBX peers are used for both engines.
 *
 * Media: each call sends 50 packets/s each way (20 ms frames, a 1 kHz tone encoded once). Packets are stamped by
 * their RTP timestamp: the sender notes when it sent each frame and the receiver when it heard it, both in this
 * process, so latency is one-way, measured at both ends, and includes the Meta media server's own hop (an upper
 * bound on what the bridge adds). Jitter is RFC 3550's interarrival jitter.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, cpus, getPriority as osPriority, loadavg, totalmem } from 'node:os';
import path from 'node:path';
import type { Writable } from 'node:stream';
import { parseArgs } from 'node:util';
import type { types as ms } from 'mediasoup';

process.env.MEDIASOUP_WORKER_BIN ??= '/usr/lib/x86_64-linux-gnu/mediasoup/mediasoup-worker';

const { pino } = await import('pino');
const mediasoup = await import('mediasoup');
const { Encoder } = await import('@evan/opus');
const { encodePcmu } = await import('../src/media/dsp/g711.js');
const { buildRtp } = await import('../src/media/rtp.js');
const { MetaSimulator } = await import('../src/simulator/MetaSimulator.js');
const { startDrachtioDouble } = await import('../src/simulator/drachtio/index.js');
const { DEMO_APP_SECRET, DEMO_PAGE_ID, DEMO_PAGE_TOKEN, DEMO_VERIFY_TOKEN } = await import('../src/simulator/loopbackBridge.js');
const { startRtpengine } = await import('../test/helpers/rtpengine.js');
const { percentile } = await import('../test/interop/harness.js');

type Sim = Awaited<ReturnType<typeof MetaSimulator.start>>;
type Drachtio = Awaited<ReturnType<typeof startDrachtioDouble>>;
type Session = Awaited<ReturnType<Sim['waitForSession']>>;
type Rtpengine = Awaited<ReturnType<typeof startRtpengine>>;
type Mode = 'passthrough' | 'transcode';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    engine: { type: 'string', default: 'both' },
    mode: { type: 'string', default: 'both' },
    calls: { type: 'string' },
    seconds: { type: 'string', default: '15' },
    warmup: { type: 'string', default: '2' },
    concurrency: { type: 'string', default: '1' },
    'cpu-prof': { type: 'string' },
    /** setup: the bridge's calls.prepared_media (media made ahead of calls). */
    prepared: { type: 'string', default: '0' },
  },
});
const command = positionals[0] ?? 'load';
const ROOT = path.resolve(import.meta.dirname, '..');
const CLK_TCK = 100;
const FRAME_MS = 20;
const log = pino({ level: process.env['LOG_LEVEL'] ?? 'warn' });
const out = (line: string): void => void process.stdout.write(`${line}\n`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------------------------
// processes: CPU and memory from /proc
// ---------------------------------------------------------------------------------------------------------------

function procStat(pid: number): { cpu: number; ppid: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { cpu: (Number(f[11]) + Number(f[12])) / CLK_TCK, ppid: Number(f[1]) };
}

/**
 * Time the process's threads spent runnable but waiting for a CPU (s, /proc/<pid>/task/<tid>/schedstat, summed).
 * CPU time says what a process got; this says what it asked for and did not get: a starved process falls behind
 * without looking busy.
 */
function runWait(pid: number): number {
  let total = 0;
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        total += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[1]) / 1e9;
      } catch {
        // thread gone meanwhile
      }
    }
  } catch {
    // process gone
  }
  return total;
}

/**
 * With autogroup scheduling (Linux's default for desktop and many server kernels) each session's processes share one
 * scheduling group, and groups share the CPUs equally: `nice` orders the processes inside our session only, not
 * against other sessions' work. Say so when it applies, since it decides what a loaded machine leaves the bench.
 */
function schedulingNote(): string {
  try {
    if (readFileSync('/proc/sys/kernel/sched_autogroup_enabled', 'utf8').trim() !== '1') return 'autogroup off';
    const group = readFileSync('/proc/self/autogroup', 'utf8').trim();
    return `autogroup on (${group}): nice works within this session only`;
  } catch {
    return 'autogroup unknown';
  }
}

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : 0;
}

function childPids(pid: number): number[] {
  const kids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (procStat(Number(name)).ppid === pid) kids.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return kids;
}

function selfCpu(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

// Ctrl-C ends the bench through process.exit, so that 'exit' handlers stop the bridge processes.
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => process.exit(130));

// ---------------------------------------------------------------------------------------------------------------
// the bridge as a child process
// ---------------------------------------------------------------------------------------------------------------

interface BridgeProcess {
  pid: number;
  workerPid: number;
  /** JSON log lines seen so far. */
  lines: Array<Record<string, unknown>>;
  readonly exitCode: number | null;
  stop(): Promise<void>;
}

async function startBridge(o: {
  sim: Sim;
  drachtio: Drachtio;
  codecs: string[];
  cpuProfDir?: string;
  /** calls.prepared_media; default the bridge's (0). */
  preparedMedia?: number;
}): Promise<BridgeProcess> {
  const dir = mkdtempSync(path.join(tmpdir(), 'msb-bench-'));
  const file = path.join(dir, 'config.yaml');
  writeFileSync(
    file,
    [
      `meta: { app_secret: "${DEMO_APP_SECRET}", verify_token: "${DEMO_VERIFY_TOKEN}", graph_base_url: "${o.sim.graphUrl}" }`,
      `pages: [{ id: "${DEMO_PAGE_ID}", access_token: "${DEMO_PAGE_TOKEN}" }]`,
      'webhook: { listen: { host: 127.0.0.1, port: 0 } }',
      'admin: { listen: { host: 127.0.0.1, port: 0 } }',
      `sip: { drachtio: { host: 127.0.0.1, port: ${o.drachtio.port}, secret: "${o.drachtio.secret}" } }`,
      `routes: [{ name: bench, match: {}, targets: ["${o.drachtio.pbx.uri('support')}"], target_timeout_ms: 10000, codecs: [${o.codecs.join(', ')}] }]`,
      'media: { workers: 1, rtp: { listen_ip: 127.0.0.1, min_port: 0, max_port: 0 } }',
      'messenger: { ice: { listen_ip: 127.0.0.1, min_port: 20000, max_port: 29999 } }',
      `calls: { max_concurrent: 5000, accept_deadline_ms: 30000, drain_timeout_ms: 2000${o.preparedMedia !== undefined ? `, prepared_media: ${o.preparedMedia}` : ''} }`,
      'logging: { level: info }',
      '',
    ].join('\n'),
  );
  const nodeArgs = ['--import', 'tsx'];
  if (o.cpuProfDir) nodeArgs.push('--cpu-prof', `--cpu-prof-dir=${o.cpuProfDir}`);
  const child: ChildProcess = spawn(process.execPath, [...nodeArgs, path.join(ROOT, 'src/main.ts'), '--config', file], {
    cwd: ROOT,
    env: { ...process.env, MEDIASOUP_WORKER_BIN: process.env.MEDIASOUP_WORKER_BIN },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: Array<Record<string, unknown>> = [];
  let partial = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (chunk: string) => {
    partial += chunk;
    const parts = partial.split('\n');
    partial = parts.pop() ?? '';
    for (const line of parts) {
      try {
        lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // not JSON
      }
    }
  });
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  // The bridge does not outlive the bench, however the bench ends.
  const kill = (): void => void child.kill('SIGKILL');
  process.once('exit', kill);
  const deadline = Date.now() + 30_000;
  let started: Record<string, unknown> | undefined;
  while (!(started = lines.find((l) => l.msg === 'messenger-sip-bridge started'))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`the bridge did not start:\n${stderr.slice(-2000)}`);
    }
    await sleep(50);
  }
  o.sim.setWebhookUrl(String(started.webhook));
  const pid = child.pid!;
  // tsx has its own helper process under the daemon: the worker is the one running mediasoup-worker.
  const workers = childPids(pid).filter((k) => readFileSync(`/proc/${k}/comm`, 'utf8').startsWith('mediasoup'));
  if (workers.length !== 1) throw new Error(`expected one mediasoup worker under pid ${pid}, found ${workers.length}`);
  return {
    pid,
    workerPid: workers[0]!,
    lines,
    get exitCode() {
      return child.exitCode;
    },
    async stop() {
      child.kill('SIGTERM');
      const force = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(force);
      process.off('exit', kill);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Meta media sessions: the simulator's mediasoup objects, found through mediasoup's observer
// ---------------------------------------------------------------------------------------------------------------

/** The simulator's DirectTransport producer (what Meta sends) and consumer (what Meta hears) of one router. */
interface MetaEnds {
  producer?: { send(rtp: Buffer): void; rtpParameters: { encodings?: Array<{ ssrc?: number }> } };
  consumer?: { on(e: 'rtp', f: (b: Buffer) => void): void; removeAllListeners(e: string): void };
}
let claim: MetaEnds | undefined;
mediasoup.observer.on('newworker', (worker: ms.Worker) => {
  worker.observer.on('newrouter', (router: ms.Router) => {
    const ends = claim;
    if (!ends) return;
    router.observer.on('newtransport', (transport: ms.Transport) => {
      if (transport.constructor.name !== 'DirectTransport') return;
      transport.observer.on('newproducer', (p: ms.Producer) => (ends.producer = p as unknown as MetaEnds['producer']));
      transport.observer.on('newconsumer', (c: ms.Consumer) => (ends.consumer = c as unknown as MetaEnds['consumer']));
    });
  });
});

// ---------------------------------------------------------------------------------------------------------------
// streams: stamped sending and receiving
// ---------------------------------------------------------------------------------------------------------------

/** One direction of one call. */
class Stream {
  readonly sentAt: number[] = [];
  /** Heard packets in runs: a run restarts at a marker bit (the bridge marks PBX audio resuming after filler). */
  readonly runs: Array<Array<{ idx: number; at: number }>> = [];
  /** Silence frames the bridge sent on its own (PBX audio late by more than 60 ms). */
  fillers = 0;
  /** When our side started sending (what the far side sends before that is not ours). */
  startAt: number | undefined;
  #ts0 = 0;
  #jitter = 0;
  #last: { at: number; ts: number } | undefined;
  constructor(
    readonly ticksPerFrame: number,
    readonly clock: number,
  ) {}

  get heard(): number {
    return this.runs.reduce((n, r) => n + r.length, 0);
  }

  sent(at: number): void {
    this.startAt ??= at;
    this.sentAt.push(at);
  }

  /** Retransmissions (answers to NACKs) heard again. */
  duplicates = 0;
  readonly #seqs = new Set<number>();

  receive(seq: number, ts: number, at: number, marker: boolean, filler: boolean): void {
    if (this.startAt === undefined) return;
    if (this.#seqs.has(seq)) {
      this.duplicates++;
      return;
    }
    this.#seqs.add(seq);
    if (filler) {
      this.fillers++;
      return;
    }
    if (this.runs.length === 0 || marker) {
      this.runs.push([]);
      this.#ts0 = ts;
    } else if (this.#last) {
      const d = at - this.#last.at - (((ts - this.#last.ts) | 0) / this.clock) * 1000;
      this.#jitter += (Math.abs(d) - this.#jitter) / 16;
    }
    this.runs.at(-1)!.push({ idx: Math.round(((ts - this.#ts0) | 0) / this.ticksPerFrame), at });
    this.#last = { at, ts };
  }

  get jitterMs(): number {
    return this.#jitter;
  }

  /** One-way latency of the packets heard from `from` on, run by run. */
  latencies(from: number): number[] {
    return this.runs.flatMap((run) => this.#runLatencies(run, from));
  }

  /**
   * A packet heard at least 100 ms after the start anchors the match: it is the frame last sent before it arrived
   * or an earlier one, the latest for which no packet of the run would have arrived before it was sent.
   */
  #runLatencies(run: Array<{ idx: number; at: number }>, from: number): number[] {
    const anchor = run.find((h) => h.at >= (this.startAt ?? 0) + 100);
    if (!anchor) return [];
    let j = -1;
    for (let i = 0; i < this.sentAt.length && this.sentAt[i]! <= anchor.at; i++) j = i;
    for (let k = j - anchor.idx; k >= j - anchor.idx - 50; k--) {
      const ls: number[] = [];
      let ok = true;
      for (const h of run) {
        const s = this.sentAt[h.idx + k];
        if (s === undefined || h.at < anchor.at) continue;
        if (h.at < s) {
          ok = false;
          break;
        }
        if (h.at >= from) ls.push(h.at - s);
      }
      if (ok) return ls;
    }
    return [];
  }
}

/** An RTP packet of the bench's streams (no marker, no extension). */
function rtpPacket(pt: number, seq: number, ts: number, ssrc: number, payload: Uint8Array): Buffer {
  return buildRtp({ payloadType: pt, sequenceNumber: seq, timestamp: ts, ssrc, payload });
}

function tonePcm(rate: number): Int16Array {
  const n = (rate * FRAME_MS) / 1000;
  const pcm = new Int16Array(n);
  for (let i = 0; i < n; i++) pcm[i] = Math.round(8000 * Math.sin((2 * Math.PI * 1000 * i) / rate));
  return pcm;
}

const opusEncoder = new Encoder({ channels: 1, sample_rate: 48000, application: 'voip' });
let OPUS_FRAME = new Uint8Array();
for (let i = 0; i < 10; i++) OPUS_FRAME = opusEncoder.encode(tonePcm(48000)).slice();
/** The bridge's own 20 ms Opus silence frame (its filler). */
const SILENCE = Buffer.from([0xf8, 0xff, 0xfe]);
/** The payload is the bridge's silence frame (the header may carry CSRCs and extensions). */
function isSilence(b: Buffer): boolean {
  let off = 12 + 4 * (b[0]! & 0x0f);
  if (b[0]! & 0x10) off += 4 + 4 * b.readUInt16BE(off + 2);
  const end = b[0]! & 0x20 ? b.length - b[b.length - 1]! : b.length;
  return end - off === SILENCE.length && b.subarray(off, end).equals(SILENCE);
}
const PCMU_FRAME = encodePcmu(tonePcm(8000));

/** One call as the bench sees it: Meta's end and the PBX peer's end, each with its send state. */
class BenchCall {
  readonly toPbx: Stream;
  readonly toMeta = new Stream(960, 48000);
  readonly socket = dgram.createSocket('udp4');
  remote: { address: string; port: number } | undefined;
  readonly ends: MetaEnds = {};
  session: Session | undefined;
  metaCallId = '';
  metaPt = 111;
  #metaSeq = 0;
  #metaTs = Math.floor(Math.random() * 2 ** 31);
  #pbxSeq = 0;
  #pbxTs = Math.floor(Math.random() * 2 ** 31);
  readonly #pbxSsrc = Math.floor(Math.random() * 2 ** 32);
  readonly pbxPt: number;

  constructor(readonly mode: Mode) {
    this.pbxPt = mode === 'passthrough' ? 111 : 0;
    this.toPbx = mode === 'passthrough' ? new Stream(960, 48000) : new Stream(160, 8000);
    this.socket.on('message', (msg) => {
      if (msg.length < 12 || (msg[1]! & 0x7f) !== this.pbxPt) return;
      this.toPbx.receive(msg.readUInt16BE(2), msg.readUInt32BE(4), performance.now(), (msg[1]! & 0x80) !== 0, false);
    });
  }

  async bind(): Promise<number> {
    await new Promise<void>((r) => this.socket.bind(0, '127.0.0.1', () => r()));
    return this.socket.address().port;
  }

  pbxSdp(): string {
    const port = this.socket.address().port;
    const codec = this.mode === 'passthrough' ? ['a=rtpmap:111 opus/48000/2', 'a=fmtp:111 minptime=10;useinbandfec=1'] : ['a=rtpmap:0 PCMU/8000'];
    return `${['v=0', 'o=pbx 1 1 IN IP4 127.0.0.1', 's=pbx', 'c=IN IP4 127.0.0.1', 't=0 0', `m=audio ${port} RTP/AVP ${this.pbxPt}`, ...codec, 'a=ptime:20', 'a=sendrecv', `a=ssrc:${this.#pbxSsrc} cname:pbx`].join('\r\n')}\r\n`;
  }

  /** Take over the Meta end: our stamped stream instead of the simulator's tone, our receiver instead of its decoder. */
  attachMeta(): void {
    if (!this.ends.producer || !this.ends.consumer) throw new Error('Meta media objects not found');
    this.ends.consumer.removeAllListeners('rtp');
    this.ends.consumer.on('rtp', (b: Buffer) => {
      if ((b[1]! & 0x7f) !== this.metaPt) return;
      this.toMeta.receive(b.readUInt16BE(2), b.readUInt32BE(4), performance.now(), (b[1]! & 0x80) !== 0, isSilence(b));
    });
  }

  tick(now: number): void {
    const ssrc = this.ends.producer!.rtpParameters.encodings?.[0]?.ssrc ?? 0;
    this.ends.producer!.send(rtpPacket(this.metaPt, this.#metaSeq++, this.#metaTs, ssrc, OPUS_FRAME));
    this.#metaTs += 960;
    this.toPbx.sent(now);
    if (this.remote) {
      const payload = this.mode === 'passthrough' ? OPUS_FRAME : PCMU_FRAME;
      this.socket.send(rtpPacket(this.pbxPt, this.#pbxSeq++, this.#pbxTs, this.#pbxSsrc, payload), this.remote.port, this.remote.address);
      this.#pbxTs += this.mode === 'passthrough' ? 960 : 160;
      this.toMeta.sent(now);
    }
  }

  close(): void {
    this.socket.close();
  }
}

function sdpAudioTarget(sdp: string): { address: string; port: number } {
  const c = /c=IN IP[46] (\S+)/.exec(sdp);
  const m = /m=audio (\d+)/.exec(sdp);
  if (!c || !m) throw new Error(`no audio address in SDP:\n${sdp}`);
  return { address: c[1]!, port: Number(m[1]) };
}

function opusPtOf(sdp: string): number {
  const m = /a=rtpmap:(\d+) opus\/48000/i.exec(sdp);
  return m ? Number(m[1]) : 111;
}

// ---------------------------------------------------------------------------------------------------------------
// engines: how one call is set up and torn down
// ---------------------------------------------------------------------------------------------------------------

interface Engine {
  name: string;
  pids(): { main: number; worker?: number };
  setUp(call: BenchCall, i: number): Promise<void>;
  tearDown(call: BenchCall): Promise<void>;
  /** Warnings and errors the engine logged so far, counted by message; whether it is still running. */
  health(): string;
  close(): Promise<void>;
}

async function bridgeEngine(sim: Sim, drachtio: Drachtio, mode: Mode, cpuProfDir?: string): Promise<Engine> {
  const bridge = await startBridge({ sim, drachtio, codecs: mode === 'passthrough' ? ['opus'] : ['PCMU'], ...(cpuProfDir ? { cpuProfDir } : {}) });
  let current: BenchCall | undefined;
  drachtio.pbx.onInvite(async (invite) => {
    const call = current;
    if (!call) return invite.reject(486);
    call.remote = sdpAudioTarget(invite.sdp);
    await invite.answer(call.pbxSdp());
  });
  return {
    name: 'bridge',
    pids: () => ({ main: bridge.pid, worker: bridge.workerPid }),
    async setUp(call, i) {
      current = call;
      claim = call.ends;
      call.metaCallId = sim.placeCall({ pageId: DEMO_PAGE_ID, psid: String(7_000_000_000 + i) });
      call.session = await sim.waitForSession(call.metaCallId, 20_000);
      await call.session.whenConnected();
      call.metaPt = opusPtOf(sim.call(call.metaCallId)?.answer ?? '');
      claim = undefined;
      current = undefined;
    },
    async tearDown(call) {
      const ended = sim.waitForEnd(call.metaCallId, 10_000).catch(() => undefined);
      sim.hangUp(call.metaCallId);
      await ended;
    },
    health() {
      const counts = new Map<string, number>();
      for (const l of bridge.lines) if (Number(l.level) >= 40) counts.set(String(l.msg), (counts.get(String(l.msg)) ?? 0) + 1);
      // Calls that ended while the media ran (before the bench hung up) say why in their summary.
      for (const l of bridge.lines) {
        const summary = l.summary as { outcome?: string; reason?: string } | undefined;
        if (summary && summary.outcome !== 'completed') counts.set(`ended ${summary.outcome}: ${summary.reason}`, (counts.get(`ended ${summary.outcome}: ${summary.reason}`) ?? 0) + 1);
      }
      const top = [...counts].sort((x, y) => y[1] - x[1]).slice(0, 5).map(([m, n]) => `${n}x ${m}`);
      return `${bridge.exitCode === null ? 'running' : `EXITED ${bridge.exitCode}`}; ${top.join('; ') || 'no warnings'}`;
    },
    close: () => bridge.stop(),
  };
}

async function rtpengineEngine(sim: Sim, mode: Mode): Promise<Engine> {
  const daemon: Rtpengine = await startRtpengine({ numThreads: 2, lifetimeMs: 30 * 60_000, portMin: 42000, portMax: 47999, logLevel: 3 });
  return {
    name: 'rtpengine',
    pids: () => ({ main: daemon.pid }),
    async setUp(call, i) {
      const callId = `bench-${i}-${Date.now()}`;
      call.metaCallId = callId;
      const toMeta = await daemon.ng.offer({
        'call-id': callId,
        'from-tag': 'pbx',
        sdp: call.pbxSdp(),
        'transport-protocol': 'UDP/TLS/RTP/SAVPF',
        ICE: 'force',
        DTLS: 'active',
        SDES: ['off'],
        'rtcp-mux': ['offer', 'require'],
        flags: ['trust-address', 'generate-mid'],
        ...(mode === 'transcode' ? { codec: { mask: ['PCMU'], transcode: ['opus/48000/2'] } } : {}),
      });
      claim = call.ends;
      const { sdp: metaAnswer, session } = await sim.mediaServer.answerOffer(toMeta);
      claim = undefined;
      call.session = session;
      call.metaPt = opusPtOf(metaAnswer);
      const toPbx = await daemon.ng.answer({
        'call-id': callId,
        'from-tag': 'pbx',
        'to-tag': 'meta',
        sdp: metaAnswer,
        'transport-protocol': 'RTP/AVP',
        ICE: 'remove',
        DTLS: 'off',
        'rtcp-mux': ['demux'],
        flags: ['trust-address'],
      });
      call.remote = sdpAudioTarget(toPbx);
      await session.whenConnected();
    },
    async tearDown(call) {
      call.session?.close();
      await daemon.ng.delete(call.metaCallId).catch(() => undefined);
    },
    health: () => `${daemon.logs.filter((l) => /ERR|WARN|CRIT/.test(l)).length} warning/error lines`,
    close: () => daemon.stop(),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// load: N calls, measure, tear down
// ---------------------------------------------------------------------------------------------------------------

interface LoadResult {
  engine: string;
  mode: Mode;
  calls: number;
  wall: number;
  mainPct: number;
  workerPct: number;
  /** The same process with no call (timers, health checks), subtracted from the per-call figures. */
  idleMainPct: number;
  idleWorkerPct: number;
  benchPct: number;
  simWorkerPct: number;
  /** Runnable but waiting for a CPU, % of the wall time (threads summed): the daemon (or rtpengine), its worker, this process. */
  waitMainPct: number;
  waitWorkerPct: number;
  waitBenchPct: number;
  mainMbPerCall: number;
  workerMbPerCall: number;
  lossToPbx: number;
  lossToMeta: number;
  latToPbx: { p50: number; p99: number };
  latToMeta: { p50: number; p99: number };
  jitToPbx: number;
  jitToMeta: number;
  fillers: number;
  duplicates: number;
  load: string;
  setupFailures: number;
}

async function runLoad(engine: Engine, mode: Mode, n: number, seconds: number): Promise<LoadResult> {
  const pids = engine.pids();
  const rss = (): { main: number; worker: number } => ({ main: rssMb(pids.main), worker: pids.worker ? rssMb(pids.worker) : 0 });
  // Let start-up work (module loading, the P-256 warm-up) finish before the idle baseline.
  await sleep(3000);
  const rss0 = rss();
  const idle0 = { main: procStat(pids.main).cpu, worker: pids.worker ? procStat(pids.worker).cpu : 0, at: performance.now() };
  await sleep(3000);
  const idleWall = (performance.now() - idle0.at) / 1000;
  const idleMainPct = ((procStat(pids.main).cpu - idle0.main) / idleWall) * 100;
  const idleWorkerPct = (((pids.worker ? procStat(pids.worker).cpu : 0) - idle0.worker) / idleWall) * 100;
  const calls: BenchCall[] = [];
  let setupFailures = 0;
  for (let i = 0; i < n; i++) {
    const call = new BenchCall(mode);
    await call.bind();
    try {
      await engine.setUp(call, i);
      call.attachMeta();
      calls.push(call);
    } catch (err) {
      setupFailures++;
      log.warn({ err }, 'call set-up failed');
      call.close();
    }
  }
  // One clock for every stream: 50 frames per second, catching up after a late timer.
  const start = performance.now();
  let frames = 0;
  // Meta's packets enter the simulator's worker through its payload channel: one write for the whole tick, as the
  // bridge does (src/media/workerWrites.ts), not two small ones per packet.
  const metaChannel = (calls[0]?.ends.producer as unknown as { _payloadChannel?: { _producerSocket?: Writable } } | undefined)
    ?._payloadChannel?._producerSocket;
  const timer = setInterval(() => {
    const due = Math.floor((performance.now() - start) / FRAME_MS) + 1;
    metaChannel?.cork();
    for (let budget = Math.min(due - frames, 5); budget > 0; budget--) {
      frames++;
      const now = performance.now();
      for (const c of calls) c.tick(now);
    }
    metaChannel?.uncork();
  }, FRAME_MS);
  await sleep(Number(values.warmup) * 1000);
  // The load generator: this process and the Meta simulator's mediasoup worker.
  const simWorkers = childPids(process.pid).filter((k) => readFileSync(`/proc/${k}/comm`, 'utf8').startsWith('mediasoup'));
  const snap = () => ({
    sim: simWorkers.reduce((t, k) => t + procStat(k).cpu, 0),
    main: procStat(pids.main).cpu,
    worker: pids.worker ? procStat(pids.worker).cpu : 0,
    bench: selfCpu(),
    waitMain: runWait(pids.main),
    waitWorker: pids.worker ? runWait(pids.worker) : 0,
    waitBench: runWait(process.pid),
    at: performance.now(),
  });
  const a = snap();
  const rss1 = rss();
  await sleep(seconds * 1000);
  const b = snap();
  clearInterval(timer);
  await sleep(500);
  const wall = (b.at - a.at) / 1000;
  const pct = (x: number): number => (x / wall) * 100;
  const sentToPbx = calls.reduce((s, c) => s + c.toPbx.sentAt.length, 0);
  const heardAtPbx = calls.reduce((s, c) => s + c.toPbx.heard, 0);
  const sentToMeta = calls.reduce((s, c) => s + c.toMeta.sentAt.length, 0);
  const heardAtMeta = calls.reduce((s, c) => s + c.toMeta.heard, 0);
  if (process.env['BENCH_DEBUG']) {
    const c = calls[0]!;
    out(`debug toPbx runs ${c.toPbx.runs.map((r) => r.length).join(',')} sent ${c.toPbx.sentAt.length}; toMeta runs ${c.toMeta.runs.map((r) => r.length).join(',')} sent ${c.toMeta.sentAt.length}`);
    out(`debug toPbx lat ${c.toPbx.latencies(0).filter((_, i) => i % 25 === 0).map((x) => x.toFixed(0)).join(' ')}`);
    out(`debug toMeta lat ${c.toMeta.latencies(0).filter((_, i) => i % 25 === 0).map((x) => x.toFixed(0)).join(' ')}`);
    out(`debug toMeta idx ${c.toMeta.runs[0]!.filter((_, i) => i % 25 === 0).map((h) => h.idx).join(' ')}`);
  }
  const latPbx = calls.flatMap((c) => c.toPbx.latencies(a.at));
  const latMeta = calls.flatMap((c) => c.toMeta.latencies(a.at));
  const mean = (xs: number[]): number => xs.reduce((s, x) => s + x, 0) / Math.max(1, xs.length);
  const k = Math.max(1, calls.length);
  const result: LoadResult = {
    engine: engine.name,
    mode,
    calls: calls.length,
    wall,
    mainPct: pct(b.main - a.main),
    workerPct: pct(b.worker - a.worker),
    idleMainPct,
    idleWorkerPct,
    benchPct: pct(b.bench - a.bench),
    simWorkerPct: pct(b.sim - a.sim),
    waitMainPct: pct(b.waitMain - a.waitMain),
    waitWorkerPct: pct(b.waitWorker - a.waitWorker),
    waitBenchPct: pct(b.waitBench - a.waitBench),
    mainMbPerCall: (rss1.main - rss0.main) / k,
    workerMbPerCall: (rss1.worker - rss0.worker) / k,
    lossToPbx: 1 - heardAtPbx / Math.max(1, sentToPbx),
    lossToMeta: 1 - heardAtMeta / Math.max(1, sentToMeta),
    latToPbx: { p50: percentile(latPbx, 50), p99: percentile(latPbx, 99) },
    latToMeta: { p50: percentile(latMeta, 50), p99: percentile(latMeta, 99) },
    jitToPbx: mean(calls.map((c) => c.toPbx.jitterMs)),
    jitToMeta: mean(calls.map((c) => c.toMeta.jitterMs)),
    fillers: calls.reduce((s, c) => s + c.toMeta.fillers, 0),
    duplicates: calls.reduce((s, c) => s + c.toMeta.duplicates + c.toPbx.duplicates, 0),
    load: loadavg().map((x) => x.toFixed(2)).join(' '),
    setupFailures,
  };
  for (const c of calls) await engine.tearDown(c).catch(() => undefined);
  for (const c of calls) c.close();
  await sleep(1000);
  return result;
}

function printLoad(r: LoadResult): void {
  const mainCall = (r.mainPct - r.idleMainPct) / Math.max(1, r.calls);
  const workerCall = (r.workerPct - r.idleWorkerPct) / Math.max(1, r.calls);
  const perCore = 100 / Math.max(1e-9, mainCall + workerCall);
  const two = (x: number): string => x.toFixed(2);
  out(
    `| ${r.engine} | ${r.mode} | ${r.calls}${r.setupFailures ? ` (${r.setupFailures} failed)` : ''} | ` +
      `${mainCall.toFixed(3)} % (${two(r.mainPct)} / idle ${two(r.idleMainPct)}) | ` +
      `${r.engine === 'bridge' ? `${workerCall.toFixed(3)} % (${two(r.workerPct)} / idle ${two(r.idleWorkerPct)})` : '-'} | ` +
      `${perCore.toFixed(0)} | ${two(r.mainMbPerCall + r.workerMbPerCall)} MB | ` +
      `${(r.lossToPbx * 100).toFixed(3)} % / ${(r.lossToMeta * 100).toFixed(3)} % | ` +
      `${two(r.latToPbx.p50)} / ${two(r.latToPbx.p99)} | ${two(r.latToMeta.p50)} / ${two(r.latToMeta.p99)} | ` +
      `${two(r.jitToPbx)} / ${two(r.jitToMeta)} | ${r.fillers} / ${r.duplicates} | ${r.benchPct.toFixed(0)} % + ${r.simWorkerPct.toFixed(0)} % | ` +
      `${r.waitMainPct.toFixed(0)} % / ${r.engine === 'bridge' ? `${r.waitWorkerPct.toFixed(0)} %` : '-'} / ${r.waitBenchPct.toFixed(0)} % | ${r.load} |`,
  );
}

async function withPeers<T>(fn: (sim: Sim, drachtio: Drachtio) => Promise<T>): Promise<T> {
  const sim = await MetaSimulator.start({
    pages: { [DEMO_PAGE_ID]: DEMO_PAGE_TOKEN },
    appSecret: DEMO_APP_SECRET,
    log,
    rtcMinPort: 30000,
    rtcMaxPort: 39999,
  });
  const drachtio = await startDrachtioDouble();
  try {
    return await fn(sim, drachtio);
  } finally {
    await sim.close();
    await drachtio.close();
  }
}

function machine(): string {
  const c = cpus();
  return `${c.length} x ${c[0]?.model ?? '?'}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB, Node ${process.version}`;
}

async function load(): Promise<void> {
  const engines = values.engine === 'both' ? ['bridge', 'rtpengine'] : [values.engine!];
  const modes: Mode[] = values.mode === 'both' ? ['passthrough', 'transcode'] : [values.mode as Mode];
  const ns = (values.calls ?? '25,50,100').split(',').map(Number);
  const seconds = Number(values.seconds);
  out(`machine: ${machine()}; ${seconds} s per step; ${schedulingNote()}, nice ${osPriority()}`);
  out('| engine | mode | calls | main process per call (% of a core; total / idle) | mediasoup worker per call | calls per core | memory per call | loss to PBX / to Meta | latency to PBX p50 / p99 (ms) | latency to Meta p50 / p99 (ms) | jitter to PBX / to Meta (ms) | filler frames to Meta / duplicates | load generator CPU (node + Meta media worker) | waiting for a CPU: main / worker / bench (% of wall, all threads) | load average |');
  out('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
  const notes: string[] = [];
  await withPeers(async (sim, drachtio) => {
    for (const mode of modes) {
      for (const n of ns) {
        for (const name of engines) {
          // A fresh engine per step: memory per call is then growth over a clean start.
          const engine = name === 'bridge' ? await bridgeEngine(sim, drachtio, mode, values['cpu-prof']) : await rtpengineEngine(sim, mode);
          try {
            printLoad(await runLoad(engine, mode, n, seconds));
            notes.push(`${engine.name} ${mode} ${n}: ${engine.health()}`);
          } finally {
            await engine.close();
          }
        }
      }
    }
  });
  for (const note of notes) out(`- ${note}`);
}

// ---------------------------------------------------------------------------------------------------------------
// setup: the two set-up steps over many calls, from the bridge's own call summaries
// ---------------------------------------------------------------------------------------------------------------

async function setup(): Promise<void> {
  const total = Number(values.calls ?? '1000');
  const concurrency = Number(values.concurrency);
  const prepared = Number(values.prepared);
  out(`machine: ${machine()}; ${total} calls, ${concurrency} at a time; calls.prepared_media ${prepared}`);
  await withPeers(async (sim, drachtio) => {
    const bridge = await startBridge({
      sim,
      drachtio,
      codecs: ['PCMU'],
      preparedMedia: prepared,
      ...(values['cpu-prof'] ? { cpuProfDir: values['cpu-prof'] } : {}),
    });
    drachtio.pbx.onInvite(async (invite) => {
      await invite.answer(
        `${['v=0', 'o=pbx 1 1 IN IP4 127.0.0.1', 's=pbx', 'c=IN IP4 127.0.0.1', 't=0 0', 'm=audio 9 RTP/AVP 0', 'a=rtpmap:0 PCMU/8000', 'a=sendrecv'].join('\r\n')}\r\n`,
      );
    });
    const started = performance.now();
    let next = 0;
    let failed = 0;
    const one = async (i: number): Promise<void> => {
      const callId = sim.placeCall({ pageId: DEMO_PAGE_ID, psid: String(6_000_000_000 + i) });
      try {
        const session = await sim.waitForSession(callId, 20_000);
        await session.whenConnected();
      } catch {
        failed++;
      }
      const ended = sim.waitForEnd(callId, 10_000).catch(() => undefined);
      sim.hangUp(callId);
      await ended;
    };
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < total) await one(next++);
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    await sleep(500);
    await bridge.stop();
    const steps = bridge.lines
      .filter((l) => l.msg === 'call summary')
      .map((l) => (l.summary as { setupSteps?: { webhookToInviteMs?: number; pbxAnswerToAcceptMs?: number } }).setupSteps)
      .filter((s) => s !== undefined);
    const show = (name: string, xs: number[]): void =>
      out(
        `${name}: n=${xs.length} p50 ${percentile(xs, 50).toFixed(2)} ms, p90 ${percentile(xs, 90).toFixed(2)} ms, ` +
          `p99 ${percentile(xs, 99).toFixed(2)} ms, max ${Math.max(...xs).toFixed(2)} ms, first call ${xs[0]?.toFixed(2)} ms`,
      );
    out(`${total - failed}/${total} calls connected in ${seconds.toFixed(1)} s; load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
    show('connect webhook received -> INVITE sent', steps.map((s) => s.webhookToInviteMs!).filter((x) => x !== undefined));
    show('PBX 200 OK received -> Graph accept sent', steps.map((s) => s.pbxAnswerToAcceptMs!).filter((x) => x !== undefined));
  });
}

if (command === 'load') await load();
else if (command === 'setup') await setup();
else throw new Error(`unknown command ${command} (load | setup)`);
