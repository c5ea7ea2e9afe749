/**
 * SRTP toward the PBX: what protecting and unprotecting costs per packet and per call, for each SDES suite, beside
 * plain RTP (which costs nothing here: the PBX socket sends and receives the packet as it is).
 *
 *   npx tsx bench/srtp.ts [--packets 100000] [--payload 160] [--rounds 3]
 *
 * One process, no network: a context protects a G.711 packet (12-byte header + `payload` bytes, the 20 ms of PCMU a
 * PBX sends) and another unprotects it, `packets` times per round; CPU time is `process.cpuUsage()`. A call at 50
 * packets/s each way does 50 protects and 50 unprotects a second, so "% of a core per call" is
 * 50 x (protect + unprotect) / 1 s. Prints the median round per suite.
 */
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { SrtpContext, srtpMasterKeyLength, srtpMasterSaltLength } from '../src/core/srtp.js';
import { SDES_SUITES } from '../src/media/sdes.js';
import type { SdesSuite } from '../src/media/sdes.js';

const { values } = parseArgs({
  options: {
    packets: { type: 'string', default: '100000' },
    payload: { type: 'string', default: '160' },
    rounds: { type: 'string', default: '3' },
  },
});
const PACKETS = Number(values.packets);
const PAYLOAD = Number(values.payload);
const ROUNDS = Number(values.rounds);
const PACKETS_PER_SECOND = 50;

function cpuMicros(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

function rtp(seq: number, payload: Buffer): Buffer {
  const header = Buffer.alloc(12);
  header[0] = 0x80;
  header[1] = 0;
  header.writeUInt16BE(seq & 0xffff, 2);
  header.writeUInt32BE((seq * 160) >>> 0, 4);
  header.writeUInt32BE(0x5eed5eed, 8);
  return Buffer.concat([header, payload]);
}

/** One round: microseconds of CPU per protect and per unprotect. */
function round(suite: SdesSuite): { protectUs: number; unprotectUs: number } {
  const profile = SDES_SUITES[suite];
  const keys = { masterKey: randomBytes(srtpMasterKeyLength(profile)), masterSalt: randomBytes(srtpMasterSaltLength(profile)) };
  const sender = new SrtpContext({ profile, ...keys });
  const receiver = new SrtpContext({ profile, ...keys });
  const payload = randomBytes(PAYLOAD);
  const plain = Array.from({ length: 1024 }, (_, i) => rtp(i, payload));
  const wire: Buffer[] = new Array<Buffer>(PACKETS);
  let t0 = cpuMicros();
  for (let i = 0; i < PACKETS; i++) {
    const packet = plain[i & 1023]!;
    packet.writeUInt16BE(i & 0xffff, 2);
    wire[i] = sender.protectRtp(packet);
  }
  const protectUs = (cpuMicros() - t0) / PACKETS;
  let refused = 0;
  t0 = cpuMicros();
  for (let i = 0; i < PACKETS; i++) {
    if (typeof receiver.unprotectRtp(wire[i]!) === 'string') refused++;
  }
  const unprotectUs = (cpuMicros() - t0) / PACKETS;
  if (refused > 0) throw new Error(`${suite}: ${refused} packets refused`);
  return { protectUs, unprotectUs };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

process.stdout.write(
  `SRTP per packet (12 + ${PAYLOAD} bytes), ${PACKETS} packets x ${ROUNDS} rounds, median round; per call = ${PACKETS_PER_SECOND} packets/s each way\n`,
);
process.stdout.write('| suite | protect (us) | unprotect (us) | per call (% of a core) | calls per core (SRTP alone) |\n|---|---|---|---|---|\n');
process.stdout.write('| plain RTP/AVP | 0 | 0 | 0 | - |\n');
for (const suite of Object.keys(SDES_SUITES) as SdesSuite[]) {
  round(suite); // warm-up
  const rounds = Array.from({ length: ROUNDS }, () => round(suite));
  const p = median(rounds.map((r) => r.protectUs));
  const u = median(rounds.map((r) => r.unprotectUs));
  const perCall = ((PACKETS_PER_SECOND * (p + u)) / 1e6) * 100;
  process.stdout.write(`| ${suite} | ${p.toFixed(2)} | ${u.toFixed(2)} | ${perCall.toFixed(3)} % | ${Math.floor(100 / perCall)} |\n`);
}
