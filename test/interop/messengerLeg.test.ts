/**
 * The Messenger leg (WeriftMessengerLeg with the DTLS client fix) against two independent ICE-lite, DTLS-passive
 * peers on loopback: rtpengine (OpenSSL, two packet threads) and mediasoup's WebRtcTransport. Each call set-up must
 * connect and carry a tone both ways. INTEROP_CALLS sets the number of set-ups per peer (default 10; the bench runs
 * 100).
 */
import t from 'tap';
import { pino } from 'pino';
import { MessengerLegError } from '../../src/core/errors.js';
import { applyWeriftPatches, warmUpWeriftEcdhe } from '../../src/messenger/werift/index.js';
import { WeriftMessengerLegFactory } from '../../src/messenger/index.js';
import {
  MediasoupPeer,
  RtpenginePeer,
  interceptDtlsDatagrams,
  percentile,
  reorderFinalFlightOnce,
  runCall,
  serverRetransmitsAndFinishesTogether,
  type InteropPeer,
} from './harness.js';

applyWeriftPatches();
await warmUpWeriftEcdhe();

const CALLS = Number(process.env['INTEROP_CALLS'] ?? 10);
/** Call set-ups started at the same time, per peer. */
const BURST = 8;
const log = pino({ level: 'silent' });

function legFactory(dtlsTimeoutMs = 10_000): WeriftMessengerLegFactory {
  return new WeriftMessengerLegFactory({ log, iceListenIps: ['127.0.0.1'], iceTimeoutMs: 5000, dtlsTimeoutMs });
}

const peers: Record<string, () => Promise<InteropPeer>> = {
  // Two packet threads, as rtpengine runs in production: they may hand one stream's datagrams over out of order.
  rtpengine: () => RtpenginePeer.start({ numThreads: 2 }),
  mediasoup: () => MediasoupPeer.start(),
};

for (const [name, startPeer] of Object.entries(peers)) {
  t.test(`${name}: ${CALLS} consecutive call set-ups connect and carry a tone both ways`, async (t) => {
    const peer = await startPeer();
    t.teardown(() => peer.close());
    const factory = legFactory();
    await factory.prepare();
    const connectMs: number[] = [];
    const failures: string[] = [];
    for (let i = 0; i < CALLS; i++) {
      const r = await runCall(peer, factory, { callId: `interop-${name}-${i}-${Date.now()}`, log });
      if (r.ok) connectMs.push(r.answerToConnectedMs!);
      else failures.push(`call ${i}: ${r.error}`);
    }
    t.same(failures, [], `every set-up against ${name} succeeded`);
    t.equal(connectMs.length, CALLS);
    t.comment(
      `${name}: ${connectMs.length}/${CALLS} ok; answer -> DTLS connected p50 ${percentile(connectMs, 50).toFixed(1)} ms, ` +
        `p99 ${percentile(connectMs, 99).toFixed(1)} ms`,
    );
  });

  t.test(`${name}: a final flight reordered on the wire (ChangeCipherSpec first) is recovered`, async (t) => {
    const peer = await startPeer();
    t.teardown(() => peer.close());
    const factory = legFactory();
    await factory.prepare();
    const results = [];
    for (let i = 0; i < 2; i++) {
      const reorder = reorderFinalFlightOnce();
      const restore = await interceptDtlsDatagrams(reorder.decide);
      try {
        results.push(await runCall(peer, factory, { callId: `reorder-${name}-${i}-${Date.now()}`, log }));
      } finally {
        restore();
      }
      t.equal(reorder.fired(), 1, 'the final flight was reordered');
    }
    for (const r of results) {
      t.ok(r.ok, `connected with audio both ways after a reordered final flight (${r.error ?? 'ok'})`);
      // Recovery needs one retransmission of the final flight: werift's first timer is 500 ms.
      t.ok(r.answerToConnectedMs! < 5000, `connected in ${r.answerToConnectedMs?.toFixed(0)} ms`);
    }
  });
}

for (const [name, startPeer] of Object.entries(peers)) {
  t.test(`${name}: ${BURST} call set-ups at once all connect and carry a tone both ways`, async (t) => {
    const peer = await startPeer();
    t.teardown(() => peer.close());
    const factory = legFactory();
    await factory.prepare();
    const results = await Promise.all(
      Array.from({ length: BURST }, (_, i) => runCall(peer, factory, { callId: `burst-${name}-${i}-${Date.now()}`, log })),
    );
    t.same(
      results.filter((r) => !r.ok).map((r) => r.error),
      [],
      'every set-up of the burst succeeded',
    );
  });
}

t.test('mediasoup: a server flight retransmitted in the same datagram as the server Finished', async (t) => {
  const peer = await MediasoupPeer.start();
  t.teardown(() => peer.close());
  // mediasoup retransmits its flight after 100 ms; hold our final flight back 300 ms so that it does.
  const scenario = serverRetransmitsAndFinishesTogether(300);
  const restore = await interceptDtlsDatagrams(scenario.decide, scenario.incoming);
  t.teardown(restore);
  const factory = legFactory();
  await factory.prepare();
  const r = await runCall(peer, factory, { callId: `merged-${Date.now()}`, log });
  t.equal(scenario.merged(), 1, 'the retransmitted flight and the Finished arrived as one datagram');
  t.ok(r.ok, `connected with audio both ways (${r.error ?? 'ok'})`);
});

t.test('a handshake that never completes ends in exactly one failed event (reason dtls), then closed', async (t) => {
  const peer = await RtpenginePeer.start({ numThreads: 1 });
  t.teardown(() => peer.close());
  // The final flight never reaches the server: the handshake stalls however often it is retransmitted.
  let finalFlightsSent = 0;
  const restore = await interceptDtlsDatagrams((batch) => {
    if (!batch.types.includes(20)) return undefined;
    finalFlightsSent++;
    return [];
  });
  t.teardown(restore);
  const dtlsTimeoutMs = 2500;
  const factory = legFactory(dtlsTimeoutMs);
  const leg = factory.create({ callId: `stall-${Date.now()}`, log });
  const failed: MessengerLegError[] = [];
  let closedEvents = 0;
  leg.on('failed', (err) => failed.push(err));
  leg.on('closed', () => closedEvents++);
  const call = await peer.answer(await leg.createOffer(), `stall-${Date.now()}`);
  t.teardown(() => call.close());
  const appliedAt = performance.now();
  await leg.applyAnswer(call.answer);
  const err = await leg.whenConnected(AbortSignal.timeout(15_000)).then(
    () => undefined,
    (e: unknown) => e,
  );
  const elapsed = performance.now() - appliedAt;
  t.type(err, MessengerLegError, 'whenConnected rejects with the leg error');
  t.equal((err as MessengerLegError).reason, 'dtls');
  t.ok(elapsed >= dtlsTimeoutMs - 100 && elapsed < dtlsTimeoutMs + 2000, `failed after ${elapsed.toFixed(0)} ms`);
  t.ok(finalFlightsSent >= 3, `the final flight was retransmitted (${finalFlightsSent} times) before giving up`);
  const sentAtFailure = finalFlightsSent;
  // Let any late retransmission timer fire: still one event, and nothing more on the wire.
  await new Promise((resolve) => setTimeout(resolve, 3000));
  t.equal(finalFlightsSent, sentAtFailure, 'no retransmission after the leg closed');
  t.equal(failed.length, 1, 'one failed event');
  t.equal(failed[0]?.reason, 'dtls');
  t.equal(closedEvents, 1, 'one closed event');
  t.ok(leg.closed, 'the leg closed itself');
});
