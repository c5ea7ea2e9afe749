/**
 * Media engine load: N concurrent calls, each with a fake Meta leg sending Opus at 50 packets/s and an RTP peer
 * as the PBX sending a tone at 50 packets/s, through real mediasoup workers on loopback.
 *
 *   npx tsx bench/media.ts [--calls 20] [--seconds 10] [--workers 1] [--mode passthrough|PCMU|both]
 *
 * Prints CPU per call for the node process (minus the load generators' own cost, measured first with the same
 * traffic and no bridge) and for the worker processes (/proc/<pid>/stat), and packet loss each way.
 */
import { readFileSync } from 'node:fs';
import dgram from 'node:dgram';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import type { PbxCodecName } from '../src/calls/ports.js';
import { MediasoupMediaEngine } from '../src/media/MediasoupMediaEngine.js';
import type { MediasoupCallMedia } from '../src/media/MediasoupCallMedia.js';
import { WorkerPool } from '../src/media/WorkerPool.js';
import { createRtpPeer } from '../test/helpers/rtpPeer.js';
import type { RtpPeer } from '../test/helpers/rtpPeer.js';
import { FakeMessengerLeg } from '../test/unit/media/fakeMessengerLeg.js';

const { values } = parseArgs({
  options: {
    calls: { type: 'string', default: '20' },
    seconds: { type: 'string', default: '10' },
    workers: { type: 'string', default: '1' },
    mode: { type: 'string', default: 'both' },
  },
});
const CALLS = Number(values.calls);
const SECONDS = Number(values.seconds);
const WORKERS = Number(values.workers);
const MODES: PbxCodecName[] = values.mode === 'both' ? ['opus', 'PCMU'] : [values.mode === 'passthrough' ? 'opus' : (values.mode as PbxCodecName)];
const CLK_TCK = 100;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** CPU seconds (user + system) of a process from /proc/<pid>/stat. */
function procCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

function nodeCpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** CPU share (% of one core) the load generators alone cost: same traffic into a sink, no bridge. */
async function generatorBaseline(codec: PbxCodecName): Promise<number> {
  const sink = dgram.createSocket('udp4');
  await new Promise<void>((r) => sink.bind(0, '127.0.0.1', () => r()));
  const legs: FakeMessengerLeg[] = [];
  const peers: RtpPeer[] = [];
  for (let i = 0; i < CALLS; i++) {
    const leg = new FakeMessengerLeg({ lean: true });
    leg.onRtp(() => undefined);
    const peer = await createRtpPeer({ codec, lean: true });
    peer.setRemote('127.0.0.1', sink.address().port);
    legs.push(leg);
    peers.push(peer);
  }
  for (const leg of legs) leg.core.startTone(1000);
  for (const peer of peers) peer.startTone(1000);
  await sleep(1000);
  const cpu0 = nodeCpuSeconds();
  const t0 = performance.now();
  await sleep(SECONDS * 500);
  const share = ((nodeCpuSeconds() - cpu0) / ((performance.now() - t0) / 1000)) * 100;
  for (const leg of legs) leg.close();
  for (const peer of peers) peer.close();
  sink.close();
  return share;
}

async function run(codec: PbxCodecName, engine: MediasoupMediaEngine, pool: WorkerPool): Promise<void> {
  const baseline = await generatorBaseline(codec);
  const log = pino({ level: 'warn' });
  const calls: { leg: FakeMessengerLeg; peer: RtpPeer; media: MediasoupCallMedia }[] = [];
  for (let i = 0; i < CALLS; i++) {
    const leg = new FakeMessengerLeg({ lean: true });
    const media = await engine.createMediasoupCallMedia({ callId: `bench-${i}`, log, messenger: leg, codecs: [codec] });
    const peer = await createRtpPeer({ codec, tePt: 101, lean: true });
    media.createPbxOffer();
    peer.setRemote('127.0.0.1', media.pbxPort);
    media.applyPbxAnswer(peer.sdp());
    media.start();
    calls.push({ leg, peer, media });
  }
  for (const c of calls) {
    c.leg.core.startTone(1000);
    c.peer.startTone(1000);
  }
  await sleep(1000);
  const pids = pool.workers.map((w) => w.pid);
  const snap = () => ({
    node: nodeCpuSeconds(),
    workers: pids.reduce((n, pid) => n + procCpuSeconds(pid), 0),
    at: performance.now(),
    metaSent: calls.reduce((n, c) => n + c.leg.core.packetsSent, 0),
    pbxReceived: calls.reduce((n, c) => n + c.peer.packetsReceived, 0),
    pbxSent: calls.reduce((n, c) => n + c.peer.packetsSent, 0),
    metaReceivedAudio: calls.reduce((n, c) => n + c.leg.sentAudioCount, 0),
  });
  const a = snap();
  await sleep(SECONDS * 1000);
  for (const c of calls) {
    c.leg.core.stopTone();
    c.peer.stopTone();
  }
  await sleep(300);
  const b = snap();
  const wall = (b.at - a.at) / 1000;
  const nodeShare = ((b.node - a.node) / wall) * 100;
  const workerShare = ((b.workers - a.workers) / wall) * 100;
  const lossToPbx = 1 - (b.pbxReceived - a.pbxReceived) / Math.max(1, b.metaSent - a.metaSent);
  const lossToMeta = 1 - (b.metaReceivedAudio - a.metaReceivedAudio) / Math.max(1, b.pbxSent - a.pbxSent);
  const perCall = (x: number): string => `${(x / CALLS).toFixed(3)} %`;
  process.stdout.write(
    [
      `mode ${codec === 'opus' ? 'Opus passthrough' : `Opus <-> ${codec}`}, ${CALLS} calls, ${WORKERS} worker(s), ${wall.toFixed(1)} s`,
      `  node process: ${nodeShare.toFixed(1)} % of a core total, load generators alone ${baseline.toFixed(1)} %`,
      `  node per call (bridge only): ${perCall(nodeShare - baseline)} of a core`,
      `  worker(s): ${workerShare.toFixed(1)} % of a core total, per call ${perCall(workerShare)}`,
      `  packet loss Meta -> PBX: ${(Math.max(0, lossToPbx) * 100).toFixed(2)} %, PBX -> Meta: ${(Math.max(0, lossToMeta) * 100).toFixed(2)} %`,
      '',
    ].join('\n'),
  );
  for (const c of calls) {
    c.media.close();
    c.peer.close();
    c.leg.close();
  }
}

const log = pino({ level: 'warn' });
const pool = await WorkerPool.create({ log, size: WORKERS, rtcMinPort: 47000, rtcMaxPort: 47999 });
const engine = new MediasoupMediaEngine({ pool, log, rtp: { listenIp: '127.0.0.1', minPort: 0, maxPort: 0, comedia: true } });
try {
  for (const codec of MODES) await run(codec, engine, pool);
} finally {
  engine.close();
  pool.close();
}
