/**
 * Interop bench for the Messenger leg: N consecutive call set-ups against each ICE-lite, DTLS-passive peer
 * (rtpengine and mediasoup on loopback), each with a tone detected both ways. Prints the success count and the time
 * from applying the answer to DTLS connected (p50/p99) per peer.
 *
 *   npx tsx bench/interop.ts [--calls 100] [--peer rtpengine|mediasoup|both] [--without-fix] [--reorder]
 *                            [--rtpengine-threads 2] [--concurrency 1]
 *
 * --without-fix runs werift's DTLS client as shipped (no src/messenger/dtlsFix.ts), to see the failure it fixes;
 * failed set-ups then wait for the leg's DTLS timeout (lowered to 4 s here).
 * --reorder sends the first transmission of every final flight record by record with the ChangeCipherSpec before the
 * CertificateVerify: what rtpengine's packet threads sometimes do by accident, on purpose.
 * --concurrency n sets up n calls at a time (a burst), still `--calls` in all per peer.
 */
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { isWeriftDtlsFixApplied, warmUpWeriftEcdhe } from '../src/messenger/dtlsFix.js';
import { WeriftMessengerLegFactory } from '../src/messenger/index.js';
import {
  MediasoupPeer,
  RtpenginePeer,
  interceptDtlsDatagrams,
  percentile,
  reorderFinalFlightOnce,
  runCall,
  type InteropPeer,
} from '../test/interop/harness.js';

const { values } = parseArgs({
  options: {
    calls: { type: 'string', default: '100' },
    peer: { type: 'string', default: 'both' },
    'without-fix': { type: 'boolean', default: false },
    reorder: { type: 'boolean', default: false },
    'rtpengine-threads': { type: 'string', default: '2' },
    concurrency: { type: 'string', default: '1' },
  },
});
const calls = Number(values.calls);
const withFix = !values['without-fix'];

const log = pino({ level: process.env['LOG_LEVEL'] ?? 'silent' });
const factory = new WeriftMessengerLegFactory({
  log,
  iceListenIps: ['127.0.0.1'],
  iceTimeoutMs: 5000,
  dtlsTimeoutMs: withFix ? 10_000 : 4000,
  weriftDtlsFix: withFix,
});
await factory.prepare();
// What the daemon does at start-up: otherwise the first handshake also builds the P-256 tables (~1 s).
const warmUpMs = await warmUpWeriftEcdhe();
if (isWeriftDtlsFixApplied() !== withFix) throw new Error('the werift DTLS client fix is not in the state asked for');

const peerNames = values.peer === 'both' ? ['rtpengine', 'mediasoup'] : [values.peer ?? 'both'];
const out = (line: string): void => void process.stdout.write(`${line}\n`);
out(
  `werift DTLS client fix: ${withFix ? 'applied' : 'NOT applied'}; ${calls} calls per peer` +
    (values.reorder ? '; final flight reordered on the wire' : '') +
    `; P-256 warm-up ${warmUpMs === undefined ? 'not possible' : `${warmUpMs.toFixed(0)} ms`}`,
);

let allOk = true;
for (const name of peerNames) {
  let peer: InteropPeer;
  if (name === 'rtpengine') peer = await RtpenginePeer.start({ numThreads: Number(values['rtpengine-threads']) });
  else if (name === 'mediasoup') peer = await MediasoupPeer.start();
  else throw new Error(`unknown peer ${name}`);
  const connectMs: number[] = [];
  const dtlsMs: number[] = [];
  const failures: string[] = [];
  let ok = 0;
  const started = performance.now();
  const concurrency = Math.max(1, Number(values.concurrency));
  if (values.reorder && concurrency > 1) throw new Error('--reorder works one call at a time');
  for (let first = 0; first < calls; first += concurrency) {
    const batch = Array.from({ length: Math.min(concurrency, calls - first) }, (_, k) => first + k);
    const restore = values.reorder ? await interceptDtlsDatagrams(reorderFinalFlightOnce().decide) : undefined;
    const results = await Promise.all(
      batch.map((i) => runCall(peer, factory, { callId: `bench-${name}-${i}-${Date.now()}`, log })),
    );
    restore?.();
    results.forEach((r, k) => {
      if (r.ok) {
        ok++;
        connectMs.push(r.answerToConnectedMs!);
        if (r.legTimings?.dtlsMs !== undefined) dtlsMs.push(r.legTimings.dtlsMs);
      } else {
        failures.push(`#${batch[k]}: ${r.error}`);
      }
    });
  }
  await peer.close();
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  out(`${name}: ${ok}/${calls} call set-ups with tone both ways (${seconds} s)`);
  out(
    `${name}: answer -> DTLS connected p50 ${percentile(connectMs, 50).toFixed(1)} ms, p99 ${percentile(connectMs, 99).toFixed(1)} ms` +
      (dtlsMs.length ? `; DTLS handshake alone p50 ${percentile(dtlsMs, 50)} ms, p99 ${percentile(dtlsMs, 99)} ms` : ''),
  );
  for (const f of failures.slice(0, 10)) out(`${name}: failed ${f}`);
  if (ok !== calls) allOk = false;
}
process.exitCode = allOk ? 0 : 1;
// Without the fix, werift keeps retransmitting for ~27 s after a failed leg closed; do not wait for it.
if (!withFix) process.exit();
