/**
 * Per-packet breakdown of the bridge's media path: microseconds of CPU per packet, both directions, Opus passthrough
 * and Opus <-> PCMU transcoding, in one process (the bridge's), with Meta's side in a child process.
 *
 *   npx tsx bench/packetPath.ts [--packets 10000] [--rounds 5] [--section "bench/packetPath.ts"] [--no-write]
 *
 * Two parts:
 * - Whole path: a real call's media (WeriftMessengerLeg with ICE, DTLS and SRTP toward the simulator's media server in
 *   a child process; MediasoupCallMedia on a real mediasoup worker; PbxRtpSocket toward a "PBX" socket of this
 *   process). Packets are sent from one side as fast as a loaded bridge gets them (bursts every 2 ms) and the CPU of
 *   this process (`process.cpuUsage()`, minus the idle call's timers and the PBX sender's own sends, both measured
 *   alone) and of the bridge's mediasoup worker (/proc) is divided by the packets that went through.
 * - Steps: each function the path calls, timed alone on the same packets in a loop (the real functions, not copies).
 *   What the whole path costs beyond the steps' sum is the glue: event emitters, werift's ICE dispatch, closures,
 *   timers, and garbage collection of what the steps allocate.
 * Each figure is the median of `rounds` rounds after a warm-up round, so other load on the machine matters little
 * (CPU time, not wall time). Writes its block into BENCHMARKS.md between the markers of `--section`.
 */
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import type { Writable } from 'node:stream';
import { parseArgs } from 'node:util';
import { Decoder, Encoder } from '@evan/opus';
import { pino } from 'pino';
import type { types as ms } from 'mediasoup';
import type { PbxCodecName } from '../src/calls/ports.js';
import { SRTP_AEAD_AES_128_GCM, SrtpContext, srtpMasterKeyLength, srtpMasterSaltLength } from '../src/core/srtp.js';
import { decodePcmu, encodePcmu } from '../src/media/dsp/g711.js';
import { InbandDtmfWatcher } from '../src/media/dsp/InbandDtmf.js';
import { LateAudioGuard } from '../src/media/LateAudioGuard.js';
import { MediasoupMediaEngine } from '../src/media/MediasoupMediaEngine.js';
import { ReceiveStats } from '../src/media/PbxRtpSocket.js';
import { CallQuality, pcmHasAudio } from '../src/media/quality/CallQuality.js';
import { OpusAudioJudge } from '../src/media/quality/opusActivity.js';
import { buildRtp, parseRtp, stripRtpHeaderExtension, writeRtpHeader } from '../src/media/rtp.js';
import { WorkerPool } from '../src/media/WorkerPool.js';
import { WeriftMessengerLegFactory } from '../src/messenger/WeriftMessengerLegFactory.js';
import { SineSource } from '../src/simulator/media/audio.js';
import { startMetaPeer } from './lib/metaPeerProcess.js';
import { markdownTable, renderBlock, startRun, writeGeneratedSection } from './lib/report.js';

const { values } = parseArgs({
  options: {
    packets: { type: 'string', default: '10000' },
    rounds: { type: 'string', default: '5' },
    section: { type: 'string', default: 'bench/packetPath.ts' },
    'no-write': { type: 'boolean', default: false },
    /** Only the whole path of one mode (for a CPU profile of it): opus or PCMU. */
    profile: { type: 'string' },
  },
});
const PACKETS = Number(values.packets);
const ROUNDS = Number(values.rounds);
/** Packets per burst and ms between bursts on the whole path (5,000 packets/s: a loaded bridge's reads). */
const BURST = 10;
const BURST_INTERVAL_MS = 2;
const CLK_TCK = 100;
const run = startRun('bench/packetPath.ts');
const log = pino({ level: 'warn' });

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const nextTurn = (): Promise<void> => new Promise((r) => setImmediate(r));
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function cpuMicros(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

/** CPU microseconds (user + system) of another process, from /proc/<pid>/stat (10 ms resolution). */
function procCpuMicros(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) / CLK_TCK) * 1e6;
}

/** Median of `ROUNDS` rounds after one warm-up; each round returns microseconds per packet. */
async function rounds(round: () => number | Promise<number>): Promise<number> {
  await round();
  const out: number[] = [];
  for (let i = 0; i < ROUNDS; i++) out.push(await round());
  return median(out);
}

/** A synchronous step: `prepare` (untimed) returns the loop body, called `PACKETS` times. */
function loop(prepare: () => (i: number) => void): Promise<number> {
  return rounds(() => {
    const body = prepare();
    const t0 = cpuMicros();
    for (let i = 0; i < PACKETS; i++) body(i);
    return (cpuMicros() - t0) / PACKETS;
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Packets
// ---------------------------------------------------------------------------------------------------------------

const tone48k = new SineSource([1000], 0.3);
const metaEncoder = new Encoder({ channels: 1, sample_rate: 48000, application: 'voip' });
const opusPayloads = Array.from({ length: 50 }, () => Buffer.from(metaEncoder.encode(tone48k.next())));
const pcm8k = (() => {
  const out = new Int16Array(160);
  for (let i = 0; i < 160; i++) out[i] = Math.round(Math.sin((2 * Math.PI * 1000 * i) / 8000) * 0.3 * 32767);
  return out;
})();
const pcmuPayload = encodePcmu(pcm8k);
const SSRC = 0x1234abcd;

function rtpOf(payload: Uint8Array, i: number, pt: number, step: number): Buffer {
  return buildRtp({ payloadType: pt, sequenceNumber: i & 0xffff, timestamp: (i * step) >>> 0, ssrc: SSRC, payload });
}
const opusPacket = (i: number): Buffer => rtpOf(opusPayloads[i % opusPayloads.length]!, i, 111, 960);
const pcmuPacket = (i: number): Buffer => rtpOf(pcmuPayload, i, 0, 160);

/** An RTP packet as mediasoup's worker forwards it: with a one-byte header extension block (abs-send-time etc.). */
function withExtension(packet: Buffer): Buffer {
  const ext = Buffer.from([0xbe, 0xde, 0x00, 0x01, 0x10, 0xff, 0x00, 0x00]);
  const out = Buffer.concat([packet.subarray(0, 12), ext, packet.subarray(12)]);
  out[0] = out[0]! | 0x10;
  return out;
}

function srtpPair(): { sender: SrtpContext; receiver: SrtpContext } {
  const profile = SRTP_AEAD_AES_128_GCM;
  const keys = { masterKey: Buffer.alloc(srtpMasterKeyLength(profile), 7), masterSalt: Buffer.alloc(srtpMasterSaltLength(profile), 9) };
  return { sender: new SrtpContext({ profile, ...keys }), receiver: new SrtpContext({ profile, ...keys }) };
}

async function bindLoopback(socket: dgram.Socket): Promise<number> {
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', () => resolve()));
  return socket.address().port;
}

/** A loopback port nobody listens on (datagrams to it are sent, then dropped by the kernel). */
async function unboundPort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  const port = await bindLoopback(s);
  s.close();
  return port;
}

// ---------------------------------------------------------------------------------------------------------------
// Steps
// ---------------------------------------------------------------------------------------------------------------

/** Microseconds per datagram sent by `socket` to an unbound loopback port, in bursts per event-loop turn. */
async function sendCost(socket: dgram.Socket, packet: Buffer, port: number): Promise<number> {
  return rounds(async () => {
    const t0 = cpuMicros();
    for (let i = 0; i < PACKETS; i += BURST) {
      for (let j = 0; j < BURST; j++) socket.send(packet, port, '127.0.0.1');
      await nextTurn();
    }
    return (cpuMicros() - t0) / PACKETS;
  });
}

/** Microseconds per datagram received into a JS 'message' callback: send + receive, minus send alone. */
async function receiveCost(packet: Buffer): Promise<number> {
  const sender = dgram.createSocket('udp4');
  const receiver = dgram.createSocket('udp4');
  await bindLoopback(sender);
  const port = await bindLoopback(receiver);
  let received = 0;
  receiver.on('message', () => received++);
  const nowhere = await unboundPort();
  const sendOnly = await sendCost(sender, packet, nowhere);
  const both = await rounds(async () => {
    const before = received;
    const t0 = cpuMicros();
    for (let i = 0; i < PACKETS; i += BURST) {
      for (let j = 0; j < BURST; j++) sender.send(packet, port, '127.0.0.1');
      await nextTurn();
    }
    while (received - before < PACKETS * 0.99) await nextTurn();
    return (cpuMicros() - t0) / (received - before);
  });
  sender.close();
  receiver.close();
  return both - sendOnly;
}

interface Steps {
  udpReceive: number;
  sendByAddressString: number;
  sendLookupSkipped: number;
  unprotect: number;
  protect: number;
  parse: number;
  lateGuard: number;
  qualityOpus: number;
  qualityPcm: number;
  opusDecodePcmuEncode: number;
  pcmuDecodeOpusEncode: number;
  inbandWatch: number;
  build: number;
  rewrite: number;
  toWorker: number;
}

async function measureSteps(): Promise<Steps> {
  const nowhere = await unboundPort();
  const plainSocket = dgram.createSocket('udp4');
  await bindLoopback(plainSocket);
  const skipSocket = dgram.createSocket({
    type: 'udp4',
    lookup: (address, _options, callback) => (callback as (e: null, a: string, f: number) => void)(null, address, 4),
  });
  await bindLoopback(skipSocket);
  const sample = opusPacket(1);
  const steps: Partial<Steps> = {};
  steps.udpReceive = await receiveCost(sample);
  steps.sendByAddressString = await sendCost(plainSocket, sample, nowhere);
  steps.sendLookupSkipped = await sendCost(skipSocket, sample, nowhere);
  plainSocket.close();
  skipSocket.close();

  steps.unprotect = await loop(() => {
    const { sender, receiver } = srtpPair();
    const wire = Array.from({ length: PACKETS }, (_, i) => sender.protectRtp(opusPacket(i)));
    return (i) => {
      receiver.unprotectRtp(wire[i]!);
    };
  });
  steps.protect = await loop(() => {
    const { sender } = srtpPair();
    const packets = Array.from({ length: 64 }, (_, i) => opusPacket(i));
    return (i) => {
      const p = packets[i & 63]!;
      p.writeUInt16BE(i & 0xffff, 2);
      sender.protectRtp(p, SSRC);
    };
  });
  steps.parse = await loop(() => (i) => {
    parseRtp(i & 1 ? sample : withExtensionSample);
  });
  steps.lateGuard = await loop(() => {
    const guard = new LateAudioGuard({ clockRate: 48000 });
    return (i) => {
      guard.admit(SSRC, (i * 960) >>> 0, false);
    };
  });
  const header = parseRtp(sample)!;
  const payload = sample.subarray(12);
  /** The receive statistics and the "audio heard" check, as each leg's packets meet them. */
  const quality = (clockRate: number, step: number, heard: () => boolean): Promise<number> =>
    loop(() => {
      const stats = new ReceiveStats();
      const calls = new CallQuality(10_000);
      return (i) => {
        header.sequenceNumber = i & 0xffff;
        header.timestamp = (i * step) >>> 0;
        stats.update(header, clockRate);
        calls.heard('messenger', heard());
      };
    });
  const judge = new OpusAudioJudge();
  steps.qualityOpus = await quality(48000, 960, () => judge.hasAudio(payload));
  steps.qualityPcm = await quality(8000, 160, () => pcmHasAudio(pcm8k));
  steps.opusDecodePcmuEncode = await loop(() => {
    const decoder = new Decoder({ channels: 1, sample_rate: 8000 });
    return (i) => {
      const out = decoder.decode(opusPayloads[i % opusPayloads.length]!);
      encodePcmu(new Int16Array(out.buffer.slice(out.byteOffset, out.byteOffset + out.byteLength)));
    };
  });
  steps.pcmuDecodeOpusEncode = await loop(() => {
    const encoder = new Encoder({ channels: 1, sample_rate: 8000, application: 'voip' });
    encoder.complexity = 3;
    return () => {
      Buffer.from(encoder.encode(decodePcmu(pcmuPayload)));
    };
  });
  steps.inbandWatch = await loop(() => {
    const watcher = new InbandDtmfWatcher({ sampleRate: 8000, clockRate: 48000 });
    return (i) => {
      watcher.push(pcm8k, (i * 960) >>> 0);
    };
  });
  steps.build = await loop(() => (i) => {
    buildRtp({ payloadType: 111, sequenceNumber: i & 0xffff, timestamp: i * 960, ssrc: SSRC, marker: false, payload });
  });
  steps.rewrite = await loop(() => {
    const packets = Array.from({ length: PACKETS }, (_, i) => withExtension(opusPacket(i)));
    return (i) => {
      const p = packets[i]!;
      writeRtpHeader(p, 0, false, i, i * 160, SSRC);
      stripRtpHeaderExtension(p);
    };
  });
  steps.toWorker = await toWorkerCost();
  return steps as Steps;
}
const withExtensionSample = withExtension(opusPacket(2));

/** The write toward the worker (payload channel, batched per event-loop turn) minus the same turns without it. */
async function toWorkerCost(): Promise<number> {
  const pool = await WorkerPool.create({ log, size: 1, rtcMinPort: 47000, rtcMaxPort: 47099 });
  try {
    const router = await pool.workers[0]!.createRouter({
      mediaCodecs: [{ kind: 'audio', mimeType: 'audio/opus', clockRate: 48000, channels: 2 }],
    });
    const direct = await router.createDirectTransport();
    const producer: ms.Producer = await direct.produce({
      kind: 'audio',
      rtpParameters: { codecs: [{ mimeType: 'audio/opus', payloadType: 111, clockRate: 48000, channels: 2 }], encodings: [{ ssrc: SSRC }] },
    });
    const packets = Array.from({ length: 64 }, (_, i) => opusPacket(i));
    // The payload channel's socket (mediasoup 3.8.4 internals), corked for a burst: one writev per turn, as the bridge
    // wrote when its packets went through the worker.
    const channel = (producer as unknown as { _payloadChannel?: { _producerSocket?: Writable } })._payloadChannel?._producerSocket;
    const turns = async (send: boolean): Promise<number> => {
      const t0 = cpuMicros();
      for (let i = 0; i < PACKETS; i += BURST) {
        if (send) {
          channel?.cork();
          for (let j = 0; j < BURST; j++) producer.send(packets[(i + j) & 63]!);
          channel?.uncork();
        }
        await nextTurn();
      }
      return (cpuMicros() - t0) / PACKETS;
    };
    const idle = await rounds(() => turns(false));
    return (await rounds(() => turns(true))) - idle;
  } finally {
    pool.close();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Whole path
// ---------------------------------------------------------------------------------------------------------------

function pbxSdp(port: number, codec: PbxCodecName): string {
  const [pt, line] = codec === 'opus' ? [111, 'opus/48000/2'] : [0, 'PCMU/8000'];
  return [
    'v=0',
    'o=pbx 1 1 IN IP4 127.0.0.1',
    's=bench PBX',
    'c=IN IP4 127.0.0.1',
    't=0 0',
    `m=audio ${port} RTP/AVP ${pt} 101`,
    `a=rtpmap:${pt} ${line}`,
    'a=rtpmap:101 telephone-event/8000',
    'a=fmtp:101 0-16',
    'a=ptime:20',
    'a=rtcp-mux',
    'a=sendrecv',
    '',
  ].join('\r\n');
}

interface WholePath {
  /** This process, microseconds per packet. */
  metaToPbx: number;
  pbxToMeta: number;
  /** The bridge's mediasoup worker, microseconds per packet. */
  workerMetaToPbx: number;
  workerPbxToMeta: number;
}

async function wholePath(codec: PbxCodecName): Promise<WholePath> {
  const pool = await WorkerPool.create({ log, size: 1, rtcMinPort: 47100, rtcMaxPort: 47199 });
  const engine = new MediasoupMediaEngine({ pool, log, rtp: { listenIp: '127.0.0.1', minPort: 0, maxPort: 0, comedia: false } });
  const legs = new WeriftMessengerLegFactory({ iceListenIps: ['127.0.0.1'], log, rtcpIntervalMs: 5000 });
  const meta = startMetaPeer();
  const leg = legs.create({ callId: `bench-${codec}`, log });
  const pbx = dgram.createSocket('udp4');
  try {
    const metaAnswer = await meta.answer(await leg.createOffer());
    await leg.applyAnswer(metaAnswer);
    await Promise.all([leg.whenConnected(AbortSignal.timeout(10_000)), meta.connected()]);
    const media = await engine.createMediasoupCallMedia({ callId: `bench-${codec}`, log, messenger: leg, codecs: [codec] });
    await bindLoopback(pbx);
    media.createPbxOffer();
    media.applyPbxAnswer(pbxSdp(await unboundPort(), codec));
    media.start();
    await sleep(500);
    const workerPid = pool.workers[0]!.pid;

    // What the idle call costs (the silence filler, consent and RTCP timers), per ms of wall time.
    const idleRound = async (): Promise<number> => {
      const t0 = cpuMicros();
      const w0 = performance.now();
      await sleep(500);
      return (cpuMicros() - t0) / (performance.now() - w0);
    };
    const idlePerMs = await rounds(idleRound);

    const metaToPbx: number[] = [];
    const workerMetaToPbx: number[] = [];
    for (let r = 0; r <= ROUNDS; r++) {
      const received0 = leg.stats().packetsReceived;
      const toPbx0 = media.stats().toPbx.packets;
      const t0 = cpuMicros();
      const wk0 = procCpuMicros(workerPid);
      const w0 = performance.now();
      await meta.send(PACKETS, BURST, BURST_INTERVAL_MS);
      let last = -1;
      while (media.stats().toPbx.packets !== last) {
        last = media.stats().toPbx.packets;
        await sleep(50);
      }
      const wall = performance.now() - w0;
      const received = leg.stats().packetsReceived - received0;
      if (media.stats().toPbx.packets - toPbx0 < received * 0.95) throw new Error(`Meta -> PBX: ${received} in, ${media.stats().toPbx.packets - toPbx0} out`);
      if (r === 0) continue;
      metaToPbx.push((cpuMicros() - t0 - idlePerMs * wall) / received);
      workerMetaToPbx.push((procCpuMicros(workerPid) - wk0) / received);
    }

    const packets = Array.from({ length: 64 }, (_, i) => (codec === 'opus' ? opusPacket(i) : pcmuPacket(i)));
    let seq = 0;
    const pbxSend = async (port: number): Promise<number> => {
      const t0 = cpuMicros();
      for (let i = 0; i < PACKETS; i += BURST) {
        for (let j = 0; j < BURST; j++) {
          const p = packets[seq & 63]!;
          p.writeUInt16BE(seq & 0xffff, 2);
          p.writeUInt32BE((seq * (codec === 'opus' ? 960 : 160)) >>> 0, 4);
          seq++;
          pbx.send(p, port, '127.0.0.1');
        }
        await sleep(BURST_INTERVAL_MS);
      }
      return cpuMicros() - t0;
    };
    const nowhere = await unboundPort();
    const senderAlone = await rounds(async () => {
      const w0 = performance.now();
      const cpu = await pbxSend(nowhere);
      return (cpu - idlePerMs * (performance.now() - w0)) / PACKETS;
    });
    const pbxToMeta: number[] = [];
    const workerPbxToMeta: number[] = [];
    for (let r = 0; r <= ROUNDS; r++) {
      const sent0 = media.stats().toMessenger.packets;
      const wk0 = procCpuMicros(workerPid);
      const w0 = performance.now();
      const cpu = await pbxSend(media.pbxPort);
      await sleep(100);
      const wall = performance.now() - w0;
      const sent = media.stats().toMessenger.packets - sent0;
      if (sent < PACKETS * 0.95) throw new Error(`PBX -> Meta: ${PACKETS} in, ${sent} out`);
      if (r === 0) continue;
      pbxToMeta.push((cpu - idlePerMs * wall) / PACKETS - senderAlone);
      workerPbxToMeta.push((procCpuMicros(workerPid) - wk0) / PACKETS);
    }
    media.close();
    return {
      metaToPbx: median(metaToPbx),
      pbxToMeta: median(pbxToMeta),
      workerMetaToPbx: median(workerMetaToPbx),
      workerPbxToMeta: median(workerPbxToMeta),
    };
  } finally {
    pbx.close();
    leg.close();
    meta.close();
    engine.close();
    pool.close();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------------------------

if (values.profile !== undefined) {
  process.stdout.write(`${JSON.stringify(await wholePath(values.profile === 'opus' ? 'opus' : 'PCMU'))}\n`);
  process.exit(0);
}
const us = (x: number): string => x.toFixed(2);
const passthrough = await wholePath('opus');
const transcoding = await wholePath('PCMU');
const s = await measureSteps();

/** Calls per core from CPU per packet (50 packets/s each way), summed over the bridge's processes. */
const callsPerCore = (w: WholePath): number =>
  Math.floor(1e6 / (50 * (w.metaToPbx + w.pbxToMeta + w.workerMetaToPbx + w.workerPbxToMeta)));

const whole = markdownTable(
  ['mode', 'direction', 'bridge process (us/packet)', 'its mediasoup worker (us/packet)', 'sum', 'calls per core (both directions, 50 packets/s each)'],
  [
    ['Opus passthrough', 'Meta -> PBX', us(passthrough.metaToPbx), us(passthrough.workerMetaToPbx), us(passthrough.metaToPbx + passthrough.workerMetaToPbx), callsPerCore(passthrough)],
    ['Opus passthrough', 'PBX -> Meta', us(passthrough.pbxToMeta), us(passthrough.workerPbxToMeta), us(passthrough.pbxToMeta + passthrough.workerPbxToMeta), ''],
    ['Opus <-> PCMU', 'Meta -> PBX', us(transcoding.metaToPbx), us(transcoding.workerMetaToPbx), us(transcoding.metaToPbx + transcoding.workerMetaToPbx), callsPerCore(transcoding)],
    ['Opus <-> PCMU', 'PBX -> Meta', us(transcoding.pbxToMeta), us(transcoding.workerPbxToMeta), us(transcoding.pbxToMeta + transcoding.workerPbxToMeta), ''],
  ],
);

type Row = [string, number, number];
/** Steps of one direction: [step, passthrough us, transcoding us]; plus the rest of the whole path. */
function stepRows(direction: string, rows: Row[], wholePass: number, wholeTrans: number): (string | number)[][] {
  const sumPass = rows.reduce((n, r) => n + r[1], 0);
  const sumTrans = rows.reduce((n, r) => n + r[2], 0);
  return [
    ...rows.map(([step, p, t]) => [direction, step, us(p), us(t)]),
    [direction, '**sum of the steps**', us(sumPass), us(sumTrans)],
    [direction, 'rest of the whole path (glue, dispatch, GC of what the steps allocate)', us(wholePass - sumPass), us(wholeTrans - sumTrans)],
  ];
}
const metaRows: Row[] = [
  ['receive callback (UDP datagram into JavaScript, Messenger leg socket)', s.udpReceive, s.udpReceive],
  ['SRTP unprotect (AEAD_AES_128_GCM, one context per stream)', s.unprotect, s.unprotect],
  ['RTP header parse', s.parse, s.parse],
  ['late-audio guard', s.lateGuard, s.lateGuard],
  ['quality counters (jitter/loss, audio heard)', s.qualityOpus, s.qualityPcm],
  ['DSP: Opus decode (8 kHz) + PCMU encode', 0, s.opusDecodePcmuEncode],
  ['in-band DTMF detection (Meta negotiated no telephone-event, G.711 PBX: dtmf.inband_detect auto)', 0, s.inbandWatch],
  ['RTP header rewrite in place (passthrough) / packet built (transcoding)', s.rewrite, s.build],
  ['PBX-side socket send (numeric address, no lookup)', s.sendLookupSkipped, s.sendLookupSkipped],
];
const pbxRows: Row[] = [
  ['receive callback (UDP datagram into JavaScript, PBX socket)', s.udpReceive, s.udpReceive],
  ['RTP header parse (twice: before and after the SRTP step)', 2 * s.parse, 2 * s.parse],
  ['late-audio guard', s.lateGuard, s.lateGuard],
  ['quality counters (jitter/loss, audio heard)', s.qualityOpus, s.qualityPcm],
  ['DSP: PCMU decode + Opus encode (8 kHz, complexity 3)', 0, s.pcmuDecodeOpusEncode],
  ['RTP build toward Meta', s.build, s.build],
  ['SRTP protect (AEAD_AES_128_GCM)', s.protect, s.protect],
  ['Meta-side socket send (numeric address, no lookup)', s.sendLookupSkipped, s.sendLookupSkipped],
];
const steps = markdownTable(
  ['direction', 'step', 'passthrough (us/packet)', 'transcoding (us/packet)'],
  [
    ...stepRows('Meta -> PBX', metaRows, passthrough.metaToPbx, transcoding.metaToPbx),
    ...stepRows('PBX -> Meta', pbxRows, passthrough.pbxToMeta, transcoding.pbxToMeta),
  ],
);
const sockets = markdownTable(
  ['socket send or crossing, one packet', 'us/packet'],
  [
    ['by address string (dgram default: dns.lookup, answered on the next tick)', us(s.sendByAddressString)],
    ['numeric address, lookup answered at once', us(s.sendLookupSkipped)],
    ['write toward a mediasoup worker (payload channel, one writev per turn; no longer on the path)', us(s.toWorker)],
  ],
);

const body = [
  `Whole path: ${PACKETS} packets per round in bursts of ${BURST} every ${BURST_INTERVAL_MS} ms, median of ${ROUNDS} rounds after a warm-up;` +
    ' the bridge process minus the idle call and the PBX sender alone; the worker from /proc (10 ms resolution).',
  '',
  ...whole,
  '',
  `Steps, each timed alone on the same packets (${PACKETS} per round, median of ${ROUNDS} rounds after a warm-up), in the order a packet meets them:`,
  '',
  ...steps,
  '',
  ...sockets,
];
const block = renderBlock(run, body);
process.stdout.write(`${block}\n`);
if (!values['no-write']) {
  const file = writeGeneratedSection('BENCHMARKS.md', values.section, block);
  process.stdout.write(`written into ${file}\n`);
}
process.exit(0);
