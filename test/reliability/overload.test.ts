/**
 * Overload: the bridge is offered about twice the calls it can carry and refuses the excess instead of letting every
 * call degrade.
 *
 * The capacity is made test-sized with a real load: every audio packet costs `PACKET_COST_US` of busy CPU on the
 * media thread's event loop (`media.simulated_packet_cost_us`), so each call with media fills a known share of the
 * loop and admission by load (event-loop utilization and delay, worker CPU, late audio; no setup-rate limit, no
 * count) has to notice, from the thread's reports, which reach the main thread only after the calls put on it. Calls arrive one every `OFFER_EVERY_MS`. Checked: every admitted call carries its tone both ways in
 * every second of a hold window (Meta plays 1 kHz, the PBX 600 Hz, each checked at the far side); every other call is
 * refused cleanly (Graph reject toward Meta, no INVITE to the PBX; INVITEs from the PBX get 503 with Retry-After and a
 * Reason); /readyz, the refusals metric and the summary lines say why; once the calls end the bridge takes calls
 * again and nothing is left behind.
 */
import t from 'tap';
import type { PbxDialog } from '../../src/simulator/drachtio/index.js';
import type { MetaMediaSession } from '../../src/simulator/media/MetaMediaServer.js';
import { PAGE_ID, sdpTarget, sleep, startHarness, until } from '../helpers/bridgeHarness.js';
import { assertNothingLeft, baseline, leakCount, leftOver, recordFigures, summaries, toneInBlocks } from '../helpers/reliability.js';
import { createRtpPeer, type RtpPeer } from '../helpers/rtpPeer.js';

/** Busy CPU per audio packet, each way (µs): ~100 packets/s per call make each call cost ~6 % of the loop. */
const PACKET_COST_US = Number(process.env.OVERLOAD_PACKET_COST_US ?? 600);
/**
 * Media threads carrying the calls (each reports its load to admission once per sample, after the calls put on it).
 * One: the test process itself (Meta and PBX stand-ins, on the main thread) needs the machine's other core.
 */
const MEDIA_THREADS = Number(process.env.OVERLOAD_MEDIA_THREADS ?? 1);
/** Event-loop utilization above which calls are refused: room for about 6-8 such calls, fewer on a busy machine. */
const UTILIZATION_LIMIT = 0.7;
/** Calls offered at most (consumer-initiated); offering stops once about as many were refused as admitted. */
const MAX_OFFERED = 30;
/** Refusals to see at least. */
const MIN_REFUSED = 3;
const OFFER_EVERY_MS = 300;
/** A bridge that does not take calls again within this long (ms) with the calls it holds is full. */
const READY_WAIT_MS = 10_000;
/** INVITEs from the PBX offered while the bridge refuses. */
const PBX_OFFERED = 4;
/** Seconds of audio checked, second by second, on every admitted call. */
const HOLD_SECONDS = 5;
const META_HZ = 1000;
const PBX_HZ = 600;
const LOAD_OUTCOMES = new Set(['event_loop_utilization', 'event_loop_delay', 'media_worker_cpu', 'late_audio', 'cpu_wait']);

const pbxOffer = ['v=0', 'o=pbx 1 1 IN IP4 127.0.0.1', 's=-', 'c=IN IP4 127.0.0.1', 't=0 0', 'm=audio 40000 RTP/AVP 0', 'a=rtpmap:0 PCMU/8000', ''].join('\r\n');

interface Admitted {
  callId: string;
  peer: RtpPeer;
  dialog: PbxDialog;
  session?: MetaMediaSession;
}

/** At each second boundary of the hold window: samples the receiving side had, packets the sending side had sent. */
interface Mark {
  received: number;
  sent: number;
}

/**
 * The seconds in which the tone did not come through: less than half of what the far side sent that second arrived,
 * or it was not the right frequency. A second in which the sender (in this process, timer-paced) sent less than
 * half a second of audio is not the bridge's to carry and is not judged: `judged` counts the others.
 */
function toneSeconds(pcm: Int16Array, marks: Mark[], sampleRate: number, hz: number): { bad: string[]; judged: number } {
  const bad: string[] = [];
  let judged = 0;
  for (let s = 0; s + 1 < marks.length; s++) {
    const sent = marks[s + 1]!.sent - marks[s]!.sent;
    if (sent < 25) continue;
    judged++;
    const second = pcm.subarray(marks[s]!.received, marks[s + 1]!.received);
    const fill = second.length / (sent * 0.02 * sampleRate);
    const tone = toneInBlocks(second, sampleRate, hz);
    if (fill < 0.5 || tone < 0.5) bad.push(`second ${s + 1}: ${(fill * 100).toFixed(0)} % of what was sent arrived, ${hz} Hz in ${(tone * 100).toFixed(0)} % of it`);
  }
  return { bad, judged };
}

t.test('calls offered until as many were refused as admitted: twice what the bridge can carry', async (t) => {
  const h = await startHarness({
    codecs: ['PCMU'],
    captureLogs: true,
    config: {
      media: { threads: MEDIA_THREADS, simulated_packet_cost_us: PACKET_COST_US },
      calls: {
        max_concurrent: 100,
        accept_deadline_ms: 30_000,
        admission: {
          enabled: true,
          sample_interval_ms: 250,
          smoothing_ms: 750,
          trip_samples: 2,
          max_event_loop_utilization: UTILIZATION_LIMIT,
          max_event_loop_delay_ms: 200,
          max_setups_per_second: null,
          // The capacity here is the media thread's own CPU (test-sized); the wait for a CPU would refuse on the load
          // of whatever else runs on the machine (the rest of the suite), not on the calls' (unit-tested instead).
          max_cpu_wait: null,
          clear_after_ms: 2000,
          settle_ms: 2500,
          retry_after_s: 3,
        },
      },
    },
  });
  t.teardown(() => h.close());
  const base = await baseline(h);

  const admitted = new Map<string, Admitted>();
  const peers: RtpPeer[] = [];
  t.teardown(() => peers.forEach((p) => p.close()));
  h.drachtio.pbx.onInvite(async (invite) => {
    const callId = invite.header('X-Messenger-Call-ID') ?? '';
    const peer = await createRtpPeer({ codec: 'PCMU' });
    peers.push(peer);
    const target = sdpTarget(invite.sdp);
    peer.setRemote(target.address, target.port);
    const dialog = await invite.answer(peer.sdp());
    peer.startTone(PBX_HZ);
    admitted.set(callId, { callId, peer, dialog });
  });
  const rejected = new Set<string>();
  h.sim.graph.events.on('reject', (r) => rejected.add(r.callId));
  h.sim.on('media', ({ callId, session }) => {
    void session.whenConnected().then(
      () => session.startTone(META_HZ),
      () => undefined,
    );
    // Meta answers the bridge's offer once the PBX answered: the call is in `admitted` by now.
    const call = admitted.get(callId);
    if (call) call.session = session;
  });

  // The bridge has settled after start-up (its first samples cover the start itself).
  const quiet = (): boolean => {
    const status = h.daemon.admission.status();
    return !status.refusing && status.signals.some((x) => x.kind === 'event_loop_utilization' && x.value < UTILIZATION_LIMIT / 2);
  };
  await until(quiet, 30_000, 'the bridge idle after start-up');

  // Offer calls one after the other. While the bridge takes calls, each is offered once the previous one is set up
  // and the bridge is ready again (a set-up costs more than a call's media for a moment, far more on a busy
  // machine): the calls it admits are those its steady load leaves room for. Once it stays refusing with the calls
  // it holds (or refuses a call), the rest are offered until about as many were refused as admitted: twice what fits.
  const offered: string[] = [];
  let full = false;
  /** Offer one call; resolves true when it was refused. */
  const offer = async (): Promise<boolean> => {
    const callId = h.sim.placeCall({ pageId: PAGE_ID, psid: String(6_000_000 + offered.length) });
    offered.push(callId);
    const settled = (): boolean => {
      const call = admitted.get(callId);
      if (call) call.session ??= h.sim.session(callId);
      return rejected.has(callId) || call?.session !== undefined;
    };
    await until(settled, 30_000, `call ${offered.length} admitted or refused`);
    if (rejected.has(callId)) return true;
    await admitted.get(callId)!.session!.whenConnected();
    return false;
  };
  while (!full && offered.length < MAX_OFFERED) {
    full = !(await until(() => !h.daemon.readiness().load?.refusing, READY_WAIT_MS, 'taking calls').then(
      () => true,
      () => false,
    ));
    if (!full) full = await offer();
  }
  while (offered.length < MAX_OFFERED && rejected.size < Math.max(admitted.size, MIN_REFUSED)) {
    await offer();
    await sleep(OFFER_EVERY_MS);
  }
  await sleep(1000);

  t.ok(admitted.size >= 1, `calls were admitted (${admitted.size})`);
  t.ok(rejected.size >= admitted.size && rejected.size >= MIN_REFUSED, `as many again were refused (${rejected.size} of ${offered.length})`);
  t.equal(admitted.size + rejected.size, offered.length, 'every offered call was either admitted or refused');
  t.same([...admitted.keys()].filter((id) => rejected.has(id)), [], 'no call was both admitted and refused');
  t.equal(h.drachtio.pbx.invites.length, admitted.size, 'refused calls never reached the PBX');
  t.ok([...rejected].every((id) => h.sim.call(id)?.state === 'rejected'), 'Meta saw reject for each refused call');

  // Every admitted call, every second of the hold window: its tone both ways.
  const calls = [...admitted.values()];
  let suffered = 0;
  const marks = new Map<string, { atPbx: Mark[]; atMeta: Mark[] }>(calls.map((c) => [c.callId, { atPbx: [], atMeta: [] }]));
  const mark = (): void => {
    for (const c of calls) {
      const m = marks.get(c.callId)!;
      m.atPbx.push({ received: c.peer.receivedPcm().length, sent: c.session!.packetsSent });
      m.atMeta.push({ received: c.session!.receivedPcm().length, sent: c.peer.packetsSent });
    }
  };
  mark();
  for (let s = 0; s < HOLD_SECONDS; s++) {
    await sleep(1000);
    mark();
  }
  for (const c of calls) {
    const m = marks.get(c.callId)!;
    const atPbx = toneSeconds(c.peer.receivedPcm(), m.atPbx, 8000, META_HZ);
    const atMeta = toneSeconds(c.session!.receivedPcm(), m.atMeta, 48000, PBX_HZ);
    t.same(atPbx.bad, [], `call ${c.callId}: Meta's ${META_HZ} Hz at the PBX in each of ${atPbx.judged} s`);
    t.same(atMeta.bad, [], `call ${c.callId}: the PBX's ${PBX_HZ} Hz at Meta in each of ${atMeta.judged} s`);
    t.ok(atPbx.judged >= HOLD_SECONDS - 2 && atMeta.judged >= HOLD_SECONDS - 2, `call ${c.callId}: audio sent both ways in most of the ${HOLD_SECONDS} s`);
    if (atPbx.bad.length > 0 || atMeta.bad.length > 0) suffered++;
  }

  // While the calls go on the bridge says it is not ready, and why; INVITEs from the PBX are refused with 503.
  await until(() => h.daemon.readiness().load?.refusing, 15_000, 'refusing by load');
  const readyz = await fetch(`${h.daemon.adminUrl}/readyz`);
  const body = (await readyz.json()) as { checks: Record<string, boolean>; load: { refusing: boolean; reasons: string[]; detail: string } };
  t.equal(readyz.status, 503, '/readyz is 503 while refusing by load');
  t.equal(body.checks.load, false, '/readyz names the load check');
  t.ok(body.load.reasons.length > 0 && body.load.reasons.every((r) => LOAD_OUTCOMES.has(r)), `/readyz says why: ${body.load.detail}`);

  const fromPbx = await Promise.all(Array.from({ length: PBX_OFFERED }, (_, i) => h.drachtio.pbx.call({ user: String(6_100_000 + i), sdp: pbxOffer }).final));
  t.same(fromPbx.map((f) => f.status), fromPbx.map(() => 503), 'INVITEs from the PBX refused with 503');
  t.ok(fromPbx.every((f) => f.response.get('retry-after') === '3'), 'each 503 carries Retry-After');
  t.ok(fromPbx.every((f) => /cause=503;text="bridge overloaded \(/.test(f.response.get('reason') ?? '')), `each 503 carries a Reason: ${fromPbx[0]?.response.get('reason')}`);

  // Counted by reason; each refused call's summary line says why.
  const metrics = await h.metrics.text();
  const byReason = [...metrics.matchAll(/^msb_calls_refused_total\{reason="([a-z_]+)"\} (\d+)/gm)].map((m) => [m[1]!, Number(m[2])] as const);
  const loadRefusals = byReason.filter(([reason]) => LOAD_OUTCOMES.has(reason)).reduce((sum, [, n]) => sum + n, 0);
  t.equal(loadRefusals, rejected.size + PBX_OFFERED, `refusals counted by load reason: ${byReason.filter(([, n]) => n > 0).map(([r, n]) => `${r} ${n}`).join(', ')}`);
  t.equal(byReason.find(([r]) => r === 'capacity')?.[1], 0, 'none refused by count');
  const refusedLines = summaries(h).filter((s) => s.outcome === 'rejected_overload');
  t.equal(refusedLines.length, rejected.size + PBX_OFFERED, 'one summary line per refused call, outcome rejected_overload');
  t.ok(refusedLines.every((s) => /limit/.test(String(s.reason))), `the summary says why: ${String(refusedLines[0]?.reason)}`);

  // The people hang up: the bridge recovers and takes a call again; nothing is left behind.
  for (const c of calls) h.sim.hangUp(c.callId);
  await Promise.all(calls.map((c) => c.dialog.waitForBye(10_000)));
  for (const c of calls) c.peer.close();
  await until(() => h.daemon.controller.registry.size === 0, 10_000, 'calls released');
  await until(() => !h.daemon.readiness().load?.refusing, 20_000, 'taking calls again');
  const again = h.sim.placeCall({ pageId: PAGE_ID, psid: '6999999' });
  await until(() => admitted.has(again), 15_000, 'a new call admitted after the load fell');
  t.pass('a new call is admitted once the load fell');
  h.sim.hangUp(again);
  await admitted.get(again)!.dialog.waitForBye(10_000);
  admitted.get(again)!.peer.close();

  const left = await leftOver(h, base);
  assertNothingLeft(t, left, 'after the overload');
  recordFigures('overload', {
    title: 'Overload: about twice the calls the bridge can carry',
    figures: [
      ['media threads', MEDIA_THREADS],
      ['busy CPU per audio packet (µs, test-sized capacity)', PACKET_COST_US],
      ['event-loop utilization limit', UTILIZATION_LIMIT],
      ['consumer calls offered (each once the previous one was set up or refused)', offered.length],
      ['admitted', calls.length],
      ['refused toward Meta (Graph reject)', rejected.size],
      ['INVITEs from the PBX refused with 503 + Retry-After', fromPbx.filter((f) => f.status === 503).length],
      ['admitted calls with tone both ways in every second', calls.length - suffered],
      ['leaks found', leakCount(left)],
    ],
  });
});
