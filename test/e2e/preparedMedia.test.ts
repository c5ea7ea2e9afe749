import t, { type Test } from 'tap';
import { startHarness, until, type Harness } from '../helpers/bridgeHarness.js';
import { assertNothingLeft, audioFlows, baseline, leftOver, mediasoupObjects, startLiveCall, summaries } from '../helpers/reliability.js';
import { udpHandles } from '../helpers/handles.js';

// The first two tests look at the pools of prepared media directly: they run the media in the main thread
// (media.threads 0). The last runs it in media threads, whose pools the bridge reports through `media.inspect()`.

const PREPARED = 2;
const CALLS = 4;

/** CALLS calls one after the other, each with audio both ways, hung up and released; `then` after each. */
async function callsOneByOne(t: Test, h: Harness, firstPsid: string, then: (i: number) => Promise<void>): Promise<void> {
  for (let i = 0; i < CALLS; i++) {
    const call = await startLiveCall(h, String(BigInt(firstPsid) + BigInt(i)));
    t.pass(`call ${i + 1}: audio both ways`);
    const ended = h.sim.waitForEnd(call.callId, 10_000);
    h.sim.hangUp(call.callId);
    await ended;
    call.close();
    await until(() => h.daemon.controller.registry.size === 0, 5000, 'call released');
    await then(i);
  }
}

t.test(`with calls.prepared_media ${PREPARED}, calls take prepared media, carry audio, and leave only the prepared media behind`, async (t) => {
  const h = await startHarness({ codecs: ['PCMU'], captureLogs: true, config: { calls: { prepared_media: PREPARED }, media: { threads: 0 } } });
  let closed = false;
  t.teardown(() => (closed ? undefined : h.close()));
  const mediaPool = h.daemon.media.local!.media.preparedPool!;
  const icePool = h.daemon.media.local!.preparedIce!;
  t.equal(mediaPool.stats().ready, PREPARED, 'call media prepared before the bridge takes calls');
  t.equal(icePool.stats().ready, PREPARED, 'ICE agents gathered before the bridge takes calls');
  const idle = { udp: udpHandles(), ...(await mediasoupObjects(h)) };
  t.equal(idle.routers, PREPARED, 'one router per prepared call');

  await callsOneByOne(t, h, '7100000000000100', async () => {
    await until(() => mediaPool.stats().ready === PREPARED && icePool.stats().ready === PREPARED, 5000, 'pools refilled');
  });
  t.equal(mediaPool.stats().hits, CALLS, 'every call took prepared call media');
  t.equal(icePool.stats().hits, CALLS, 'every call took a prepared ICE agent');
  t.equal(mediaPool.stats().misses + icePool.stats().misses, 0, 'no call had to wait for its own');
  const steps = summaries(h).map((s) => s.setupSteps as { webhookToInviteMs?: number } | undefined);
  t.equal(steps.filter((s) => typeof s?.webhookToInviteMs === 'number').length, CALLS, 'each summary has its set-up step');
  t.ok(summaries(h).every((s) => s.outcome === 'completed'), 'every call completed');

  await until(() => udpHandles() === idle.udp, 5000, 'sockets back to idle').catch(() => undefined);
  t.equal(udpHandles(), idle.udp, 'as many UDP sockets as when idle: the calls\' are closed, the prepared ones replaced');
  const after = await mediasoupObjects(h);
  t.equal(after.routers, PREPARED, 'only the prepared routers are left');
  t.equal(after.objects, idle.objects, 'and their transports, nothing else');

  closed = true;
  await h.close();
  t.ok(mediaPool.closed && icePool.closed, 'shutdown closes both pools');
});

t.test('with prepared media on two workers, calls spread over both; a worker killed mid-call ends only its call and the pool is made again', async (t) => {
  const h = await startHarness({
    codecs: ['PCMU'],
    captureLogs: true,
    config: { calls: { prepared_media: PREPARED }, media: { threads: 0, workers: 2 } },
  });
  t.teardown(() => h.close());
  const mediaPool = h.daemon.media.local!.media.preparedPool!;
  const first = await startLiveCall(h, '7100000000000201');
  await until(() => mediaPool.stats().ready === PREPARED, 5000, 'pool refilled');
  const second = await startLiveCall(h, '7100000000000202');
  await until(() => mediaPool.stats().ready === PREPARED, 5000, 'pool refilled');
  t.equal(mediaPool.stats().hits, 2, 'both calls took prepared media');

  const pids = h.daemon.media.local!.pool.workers.map((w) => w.pid);
  t.equal((await mediasoupObjects(h)).routers, PREPARED + 2, 'two calls\' routers and the prepared ones');

  const ends = [h.sim.waitForEnd(first.callId, 10_000).catch(() => undefined), h.sim.waitForEnd(second.callId, 10_000).catch(() => undefined)];
  const restarted = h.daemon.media.local!.pool.waitFor('workerRestarted', AbortSignal.timeout(10_000));
  process.kill(pids[0]!, 'SIGKILL');
  const ended = await Promise.race(ends.map((p, i) => p.then((e) => (e ? i : undefined))));
  t.ok(ended !== undefined, 'a call on the killed worker ended');
  const spared = ended === 0 ? second : first;
  const hit = ended === 0 ? first : second;
  await until(() => h.daemon.controller.registry.size === 1, 5000, 'one call left').catch(() => undefined);
  t.equal(h.daemon.controller.registry.size, 1, 'only one call ended: the two calls were on different workers');
  const audio = await audioFlows(spared, 1000);
  t.ok(audio.atPbx && audio.atMeta, 'the call on the other worker keeps its audio');
  await restarted;
  await until(() => mediaPool.stats().ready === PREPARED, 10_000, 'prepared media made again');
  t.equal(h.daemon.media.local!.pool.workers.length, 2, 'the dead worker was replaced');

  const third = await startLiveCall(h, '7100000000000203');
  t.pass('a new call after the worker death connects with audio both ways');
  for (const live of [spared, third]) {
    const done = h.sim.waitForEnd(live.callId, 10_000);
    h.sim.hangUp(live.callId);
    await done;
    live.close();
  }
  hit.close();
  await until(() => h.daemon.controller.registry.size === 0, 5000, 'calls released');
  const left = await mediasoupObjects(h);
  t.equal(left.routers, PREPARED, 'only the prepared routers are left');
});

t.test(`in media threads, with calls.prepared_media ${PREPARED}: each thread prepares its own, calls take it, the pools refill, and the leak check counts the prepared routers as idle`, async (t) => {
  const threads = 2;
  const h = await startHarness({ codecs: ['PCMU'], config: { calls: { prepared_media: PREPARED }, media: { threads, workers: threads } } });
  t.teardown(() => h.close());
  const prepared = async () => (await h.daemon.media.inspect()).prepared;
  const idle = await prepared();
  t.same(
    idle?.byThread.map((p) => [p.thread, p.media.ready, p.ice?.ready]),
    Array.from({ length: threads }, (_, i) => [i, PREPARED, PREPARED]),
    'each media thread prepared its calls\' media and ICE agents before the bridge takes calls',
  );
  const base = await baseline(h);
  t.equal((await mediasoupObjects(h)).routers, PREPARED * threads, 'one router per prepared call, on each thread');

  await callsOneByOne(t, h, '7100000000000300', async (i) => {
    const full = async (): Promise<boolean> => {
      const p = await prepared();
      return p?.media.ready === PREPARED * threads && p.ice?.ready === PREPARED * threads;
    };
    for (let waited = 0; waited < 5000 && !(await full()); waited += 50) await new Promise((resolve) => setTimeout(resolve, 50));
    t.ok(await full(), `call ${i + 1}: the pools refilled`);
  });
  const after = await prepared();
  t.equal(after?.media.hits, CALLS, 'every call took media prepared in its thread');
  t.equal(after?.ice?.hits, CALLS, 'every call took an ICE agent gathered in its thread');
  t.equal((after?.media.misses ?? 0) + (after?.ice?.misses ?? 0), 0, 'no call had to wait for its own');
  t.ok(after!.byThread.every((p) => p.media.hits > 0), `calls were spread over the threads (${after!.byThread.map((p) => p.media.hits).join(', ')} hits)`);
  t.equal((await mediasoupObjects(h)).routers, PREPARED * threads, 'the prepared routers are there again');
  assertNothingLeft(t, await leftOver(h, base), 'beyond the prepared media');
});
