/**
 * Faults during calls: a mediasoup worker killed, the drachtio connection dropped and restored, the Graph API
 * answering 500, timing out or returning each calling error code during accept and connect, Meta's media never
 * answering ICE, the PBX never answering, webhooks for calls this process no longer knows. Each ends the affected
 * call cleanly with a clear reason toward both sides, and a call that is not affected keeps its audio.
 */
import t, { type Test } from 'tap';
import { CALLING_ERRORS } from '../../src/graph/index.js';
import { callItems, callsEnvelope } from '../../src/simulator/webhookSender.js';
import { processState } from '../../src/threads/reapProcesses.js';
import { PAGE_ID, sleep, startHarness, until, type Harness } from '../helpers/bridgeHarness.js';
import type { PbxDialog } from '../helpers/drachtio/index.js';
import {
  assertNothingLeft,
  audioFlows,
  baseline,
  type Baseline,
  checkedFigure,
  figureAgainst,
  leakCount,
  leftOver,
  recordFigures,
  startLiveCall,
  summaries,
  type FigureRow,
  type LiveCall,
} from '../helpers/reliability.js';

const pbxSdp = ['v=0', 'o=pbx 1 1 IN IP4 127.0.0.1', 's=-', 'c=IN IP4 127.0.0.1', 't=0 0', 'm=audio 40000 RTP/AVP 0', 'a=rtpmap:0 PCMU/8000', 'a=sendrecv', ''].join('\r\n');
const figures: FigureRow[] = [];
let faultsInjected = 0;
let leaksFound = 0;
recordFigures('faults', () => ({
  title: 'Faults',
  figures: [['faults injected', faultsInjected], ...figures, figureAgainst('leaks found (calls, routers, mediasoup objects, UDP sockets, timers)', leaksFound, '==', 0)],
}));

async function endLive(h: Harness, live: LiveCall): Promise<void> {
  const ended = h.sim.waitForEnd(live.callId, 5000);
  h.sim.hangUp(live.callId);
  await ended;
  await live.dialog.waitForBye(3000).catch(() => undefined);
  live.close();
}

function summaryFor(h: Harness, metaCallId: string): Record<string, unknown> | undefined {
  return summaries(h).find((s) => s.metaCallId === metaCallId);
}

/** Asserts that the unaffected call still carries its tone both ways; returns whether it did. */
async function checkUnaffected(t: Test, live: LiveCall, what: string): Promise<boolean> {
  const audio = await audioFlows(live, 1000);
  return t.ok(audio.atPbx && audio.atMeta, `the unaffected call keeps its audio (${what}: ${JSON.stringify(audio)})`);
}

/**
 * After a worker or a media thread was killed mid-call and both calls ended: nothing left behind, and the two
 * figures (the hit call ended cleanly, the spared one kept its tone) checked and recorded.
 */
async function afterKill(
  t: Test,
  h: Harness,
  base: Baseline,
  { killed, hitEndedCleanly, sparedKeptAudio }: { killed: 'worker' | 'media thread'; hitEndedCleanly: boolean; sparedKeptAudio: boolean },
): Promise<void> {
  const other = killed === 'worker' ? 'worker' : 'thread';
  const left = await leftOver(h, base);
  assertNothingLeft(t, left, `after the ${killed} was killed`);
  leaksFound += leakCount(left);
  figures.push(
    checkedFigure(t, `${killed} killed mid-call: its call ended with Meta terminate, BYE and outcome media_failed (calls)`, Number(hitEndedCleanly), '==', 1),
    checkedFigure(t, `${killed} killed mid-call: the call on the other ${other} kept its tone both ways (calls)`, Number(sparedKeptAudio), '==', 1),
  );
}

t.test('a mediasoup worker killed mid-call ends its call; the call on the other worker carries on', async (t) => {
  // One media thread with two mediasoup workers.
  const h = await startHarness({ codecs: ['PCMU'], captureLogs: true, config: { media: { threads: 1, workers: 2 } } });
  t.teardown(() => h.close());
  const base = await baseline(h);
  const first = await startLiveCall(h, '7100000000000001');
  const second = await startLiveCall(h, '7100000000000002');
  // Least-loaded placement put the two calls on different workers; kill one holding a call.
  const workers = (await h.daemon.media.inspect()).workers;
  t.equal(workers.length, 2, 'two workers');
  const victim = workers.find((w) => w.routers > 0) ?? workers[0]!;
  const ends = [h.sim.waitForEnd(first.callId, 10_000).catch(() => undefined), h.sim.waitForEnd(second.callId, 10_000).catch(() => undefined)];
  process.kill(victim.pid, 'SIGKILL');
  faultsInjected++;
  const ended = await Promise.race(ends.map((p, i) => p.then((e) => (e ? { i, e } : undefined))));
  t.ok(ended, 'one call ended');
  const [hit, spared] = ended?.i === 0 ? [first, second] : [second, first];
  t.equal(ended?.e.by, 'business', 'the bridge terminated the call toward Meta');
  await hit.dialog.waitForBye(3000);
  t.pass('BYE sent to the PBX');
  await until(() => h.daemon.controller.registry.size === 1, 5000, 'one call left');
  const summary = summaryFor(h, hit.callId);
  const hitEndedCleanly = t.match(summary, { outcome: 'media_failed' }, `clear reason: ${String(summary?.reason)}`) && ended?.e.by === 'business';
  const sparedKeptAudio = await checkUnaffected(t, spared, 'worker killed');
  const workerCount = async (): Promise<number> => (await h.daemon.media.inspect()).workers.filter((w) => w.pid !== victim.pid).length;
  for (let i = 0; i < 100 && (await workerCount()) !== 2; i++) await sleep(100);
  t.equal(await workerCount(), 2, 'the dead worker was replaced');
  await endLive(h, spared);
  hit.close();
  await afterKill(t, h, base, { killed: 'worker', hitEndedCleanly, sparedKeptAudio });
});

t.test('a media thread killed mid-call ends its call cleanly; the call on the other thread keeps audio; a new call is served', async (t) => {
  const h = await startHarness({ codecs: ['PCMU'], captureLogs: true, config: { media: { threads: 2, workers: 2 } } });
  t.teardown(() => h.close());
  const threads = h.daemon.media.threads!;
  const base = await baseline(h);
  const first = await startLiveCall(h, '7100000000000011');
  const second = await startLiveCall(h, '7100000000000012');
  t.same(
    threads.threads().map((s) => s.placed),
    [1, 1],
    'least-loaded placement put one call on each media thread',
  );
  const ends = [h.sim.waitForEnd(first.callId, 10_000).catch(() => undefined), h.sim.waitForEnd(second.callId, 10_000).catch(() => undefined)];
  const replaced = threads.waitFor('threadRestarted', AbortSignal.timeout(20_000));
  const reaped = threads.waitFor('workersReaped', AbortSignal.timeout(20_000));
  const victimWorkers = (await h.daemon.media.inspect()).workers.filter((w) => w.thread === 0).map((w) => w.pid);
  t.equal(victimWorkers.length, 1, 'the thread has its own mediasoup worker');
  await threads.terminateThread(0);
  faultsInjected++;
  const ended = await Promise.race(ends.map((p, i) => p.then((e) => (e ? { i, e } : undefined))));
  t.ok(ended, 'one call ended');
  const [hit, spared] = ended?.i === 0 ? [first, second] : [second, first];
  t.equal(ended?.e.by, 'business', 'the bridge terminated the call toward Meta (Graph terminate)');
  await hit.dialog.waitForBye(3000);
  t.pass('BYE sent to the PBX');
  await until(() => h.daemon.controller.registry.size === 1, 5000, 'one call left');
  const summary = summaryFor(h, hit.callId);
  const hitEndedCleanly = t.match(summary, { outcome: 'media_failed' }, `clear reason: ${String(summary?.reason)}`) && ended?.e.by === 'business';
  const sparedKeptAudio = await checkUnaffected(t, spared, 'media thread killed');
  await replaced;
  t.equal(threads.threads().filter((s) => s.ready).length, 2, 'the dead thread was replaced');
  // Neither running nor a zombie (a killed child whose exit status the dead thread's event loop can no longer collect).
  await reaped;
  const inProc = (pid: number): string | undefined => processState(pid)?.state;
  t.same(
    victimWorkers.map(inProc),
    victimWorkers.map(() => undefined),
    "no mediasoup worker process of the dead thread is left in /proc (running or zombie)",
  );
  const third = await startLiveCall(h, '7100000000000013');
  t.pass('a new call after the thread death connects with audio both ways');
  await endLive(h, spared);
  await endLive(h, third);
  hit.close();
  await afterKill(t, h, base, { killed: 'media thread', hitEndedCleanly, sparedKeptAudio });
});

t.test('drachtio connection dropped and restored mid-call', async (t) => {
  const h = await startHarness({ codecs: ['PCMU'], captureLogs: true });
  t.teardown(() => h.close());
  const base = await baseline(h);
  const live = await startLiveCall(h);
  await h.drachtio.stop();
  faultsInjected++;
  await until(() => !h.daemon.sip.connected, 5000, 'bridge sees the drop');
  const audioWhileDown = await checkUnaffected(t, live, 'while drachtio is gone');
  // A call offered while SIP is down is refused toward Meta at once.
  const rejected = h.sim.graph.events.waitFor('reject');
  const during = h.sim.placeCall({ pageId: PAGE_ID, psid: '7200000000000001' });
  const [reject] = await rejected;
  const rejectedWhileDown = t.equal(reject.callId, during, 'a new call while SIP is down is rejected');
  await h.drachtio.restart();
  await until(() => h.daemon.sip.connected, 15_000, 'bridge reconnects');
  t.ok(h.daemon.sip.connected, 'the bridge reconnected');
  const audioAfter = await checkUnaffected(t, live, 'after drachtio came back');
  await endLive(h, live);
  const left = await leftOver(h, base);
  assertNothingLeft(t, left, 'after the drachtio outage');
  leaksFound += leakCount(left);
  figures.push(
    checkedFigure(t, 'drachtio dropped and restored: live call kept its tone both ways, while down and after (checks)', Number(audioWhileDown) + Number(audioAfter), '==', 2),
    checkedFigure(t, 'drachtio dropped: new calls rejected toward Meta while down', Number(rejectedWhileDown), '==', 1),
  );
});

t.test('Graph, Meta media and PBX faults end the affected call cleanly; the live call carries on', async (t) => {
  const h = await startHarness({
    codecs: ['PCMU'],
    captureLogs: true,
    config: { meta: { graph_timeout_ms: 1000 }, messenger: { ice_timeout_ms: 1500, dtls_timeout_ms: 2000 }, calls: { accept_deadline_ms: 2000, connect_timeout_ms: 3000 } },
    routes: [{ name: 'default', match: {}, targets: ['sip:support@127.0.0.1:5080'], target_timeout_ms: 5000, codecs: ['PCMU'] }],
  });
  t.teardown(() => h.close());
  const base = await baseline(h);
  const live = await startLiveCall(h);

  // From now on the PBX answers every INVITE (without media) unless told to stay silent.
  let pbxSilent = false;
  const dialogs = new Map<string, Promise<PbxDialog>>();
  h.drachtio.pbx.onInvite((invite) => {
    const callId = invite.header('X-Messenger-Call-ID') ?? '';
    if (pbxSilent) {
      invite.ringing();
      dialogs.set(callId, invite.whenCanceled.then(() => undefined as unknown as PbxDialog));
      return;
    }
    dialogs.set(callId, invite.answer(pbxSdp));
  });

  // Accept answered with 500, timing out, and each calling error code.
  const acceptFaults: Array<[string, Parameters<typeof h.sim.graph.failNext>[1]]> = [
    ['HTTP 500', { status: 500 }],
    ['timeout', { delayMs: 2500 }],
    ...Object.entries(CALLING_ERRORS).map(([code, info]): [string, Parameters<typeof h.sim.graph.failNext>[1]] => [
      `${code} ${info.code}`,
      { status: 400, body: { error: { message: info.description, type: 'OAuthException', code: Number(code), fbtrace_id: 'rel' } } },
    ]),
  ];
  let n = 0;
  let acceptEndedCleanly = 0;
  for (const [name, fault] of acceptFaults) {
    h.sim.graph.failNext('accept', fault);
    faultsInjected++;
    const rejected = h.sim.graph.events.waitFor('reject', AbortSignal.timeout(10_000)).catch(() => undefined);
    const callId = h.sim.placeCall({ pageId: PAGE_ID, psid: String(7_300_000 + n++) });
    await until(() => dialogs.has(callId), 10_000, `${name}: INVITE`);
    const dialog = await dialogs.get(callId)!;
    await dialog.waitForBye(10_000);
    await until(() => summaryFor(h, callId), 10_000, `${name}: summary`);
    const summary = summaryFor(h, callId)!;
    if (t.match(summary, { outcome: 'meta_error', reason: /Graph accept failed/ }, `accept ${name}: BYE to the PBX, ${String(summary.reason)}`)) {
      acceptEndedCleanly++;
    }
    await rejected;
  }
  figures.push(
    ['Graph accept faults injected (500, timeout, each calling error code)', acceptFaults.length],
    checkedFigure(t, '  calls ended with BYE to the PBX and outcome meta_error', acceptEndedCleanly, '==', acceptFaults.length),
  );

  // Connect (agent call) answered with 500, timing out, and each calling error code: a SIP error with a Reason.
  const connectStatuses: string[] = [];
  let connectRefusedWithReason = 0;
  for (const [name, fault] of acceptFaults) {
    h.sim.graph.failNext('connect', fault);
    faultsInjected++;
    const final = await h.drachtio.pbx.call({ user: String(7_400_000 + n++), sdp: pbxSdp }).final;
    connectStatuses.push(`${name}: ${final.status}`);
    const expected = name.includes('PERMISSION') ? 403 : name === 'HTTP 500' || name === 'timeout' ? 503 : 480;
    const statusRight = t.equal(final.status, expected, `connect ${name}: ${expected}`);
    const reasonGiven = t.match(final.response.get('reason') ?? '', /SIP;cause=\d+/, `connect ${name}: Reason header`);
    if (statusRight && reasonGiven) connectRefusedWithReason++;
  }
  figures.push(
    ['Graph connect faults injected (the same set)', acceptFaults.length],
    checkedFigure(t, '  INVITEs refused with the mapped SIP status and a Reason header', connectRefusedWithReason, '==', acceptFaults.length),
  );

  // Meta's media never answers ICE: the session is closed as soon as Meta answered the offer.
  h.sim.on('media', ({ session }) => session.close());
  faultsInjected++;
  const iceCall = h.sim.placeCall({ pageId: PAGE_ID, psid: '7500000000000001' });
  const iceEnd = await h.sim.waitForEnd(iceCall, 15_000);
  const iceTerminated = t.equal(iceEnd.by, 'business', 'Meta media silent: the bridge terminated the call');
  const iceDialog = await dialogs.get(iceCall)!;
  await iceDialog.waitForBye(5000);
  await until(() => summaryFor(h, iceCall), 5000, 'summary of the ICE call');
  const iceOutcome = t.match(summaryFor(h, iceCall), { outcome: 'media_failed' }, `Meta media silent: ${String(summaryFor(h, iceCall)?.reason)}`);
  h.sim.removeAllListeners('media');
  figures.push(
    checkedFigure(t, 'Meta media never answering ICE: calls ended with Meta terminate, BYE and outcome media_failed', Number(iceTerminated && iceOutcome), '==', 1),
  );

  // The PBX never answers: CANCEL at the accept deadline, reject toward Meta.
  pbxSilent = true;
  faultsInjected++;
  const silentCall = h.sim.placeCall({ pageId: PAGE_ID, psid: '7600000000000001' });
  const silentEnd = await h.sim.waitForEnd(silentCall, 10_000);
  const silentRejected = t.equal(silentEnd.by, 'business', 'PBX silent: Meta got reject');
  await dialogs.get(silentCall);
  await until(() => summaryFor(h, silentCall), 5000, 'summary of the silent PBX call');
  const silentOutcome = t.match(summaryFor(h, silentCall), { outcome: 'pbx_timeout' }, 'PBX silent: CANCEL and pbx_timeout');
  pbxSilent = false;
  figures.push(
    checkedFigure(t, 'PBX never answering: calls ended with CANCEL, Meta reject and outcome pbx_timeout', Number(silentRejected && silentOutcome), '==', 1),
  );

  // Webhooks for calls this process no longer knows (ended ones): acknowledged, nothing done.
  await until(() => h.daemon.controller.registry.size === 1, 5000, 'only the live call left');
  await new Promise((resolve) => setTimeout(resolve, 300));
  const graphBefore = h.sim.graph.calls.size;
  const invitesBefore = h.drachtio.sent({ method: 'INVITE' }).length;
  const requests: string[] = [];
  let acknowledged = 0;
  let staleWebhooks = 0;
  const onRequest = (r: { action: string }): void => void requests.push(r.action);
  h.sim.graph.events.on('request', onRequest);
  for (const callId of [iceCall, silentCall]) {
    for (const item of [
      callItems.terminate({ callId, status: 'Completed' }),
      callItems.callStatus({ callId, psid: '1', status: 'accepted' }),
      callItems.mediaUpdate({ callId, version: 99, sdp: 'v=0\r\n' }),
    ]) {
      const res = await h.sim.webhooks.send(callsEnvelope(PAGE_ID, [item]));
      if (t.equal(res.status, 200, `${item.event} for an ended call acknowledged`)) acknowledged++;
      staleWebhooks++;
      faultsInjected++;
    }
  }
  await new Promise((resolve) => setTimeout(resolve, 500));
  h.sim.graph.events.off('request', onRequest);
  t.same(requests, [], `no Graph request for calls no longer known (${requests.join(', ')})`);
  t.equal(h.sim.graph.calls.size, graphBefore);
  figures.push(
    ['webhooks sent for calls no longer known', staleWebhooks],
    checkedFigure(t, '  acknowledged with 200', acknowledged, '==', staleWebhooks),
    checkedFigure(t, '  Graph requests or INVITEs they caused', requests.length + h.drachtio.sent({ method: 'INVITE' }).length - invitesBefore, '==', 0),
  );

  figures.push(checkedFigure(t, 'the live call kept its tone both ways after every fault (calls)', Number(await checkUnaffected(t, live, 'after every fault')), '==', 1));
  t.equal(h.sim.call(live.callId)?.state, 'accepted', 'the live call is still up at Meta');
  await endLive(h, live);
  const left = await leftOver(h, base);
  assertNothingLeft(t, left, 'after the faults');
  leaksFound += leakCount(left);
  t.comment(connectStatuses.join('; '));
});

