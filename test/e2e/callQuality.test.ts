/**
 * A whole call's quality leaving the bridge: the call summary log line, the Prometheus histograms, and the report
 * to the simulated Meta's call_metrics endpoint with the fields Meta's Metrics page lists (or none when turned off,
 * and one attempt only when Meta refuses it).
 */
import t from 'tap';
import { CALL_METRICS_AUDIO_STATS } from '../../src/simulator/graph/index.js';
import type { MetaMediaSession } from '../../src/simulator/media/MetaMediaServer.js';
import { createRtpPeer } from '../helpers/rtpPeer.js';
import { PAGE_ID, PSID, sdpTarget, sleep, startHarness, until, type Harness, type HarnessOptions } from '../helpers/bridgeHarness.js';

/**
 * One call: the PBX answers and plays 440 Hz (5 % of its packets lost with `impair`), the person 1 kHz; Meta hangs up
 * after `durationMs` (default 2500). `connected` runs once Meta's media session is up.
 */
async function call(
  t: { teardown: (fn: () => unknown) => void },
  o: {
    options?: HarnessOptions;
    impair?: boolean;
    prepare?: (h: Harness) => void;
    durationMs?: number;
    connected?: (session: MetaMediaSession) => void;
  } = {},
): Promise<{ h: Harness; callId: string; reports: Array<{ pageId: string; body: Record<string, unknown> }>; hungUpAt: number }> {
  const h = await startHarness({ codecs: ['PCMU'], captureLogs: true, ...o.options });
  t.teardown(() => h.close());
  const reports: Array<{ pageId: string; body: Record<string, unknown> }> = [];
  h.sim.graph.events.on('call_metrics', (e) => reports.push(e));
  o.prepare?.(h);
  const pbx = await createRtpPeer({ codec: 'PCMU' });
  t.teardown(() => pbx.close());
  h.drachtio.pbx.onInvite(async (invite) => {
    const target = sdpTarget(invite.sdp);
    pbx.setRemote(target.address, target.port);
    await invite.answer(pbx.sdp());
  });
  const callId = h.sim.placeCall({ pageId: PAGE_ID, psid: PSID });
  const session = await h.sim.waitForSession(callId);
  await session.whenConnected();
  if (o.impair) pbx.impair({ drop: (i) => i % 20 === 7 });
  o.connected?.(session);
  pbx.startTone(440);
  session.startTone(1000);
  await sleep(o.durationMs ?? 2500);
  const hungUpAt = Date.now();
  h.sim.hangUp(callId);
  await until(() => h.daemon.controller.registry.size === 0, 3000, 'call released');
  return { h, callId, reports, hungUpAt };
}

t.test('after a call: quality in the summary line, in the histograms, and reported to Meta with the documented fields', async (t) => {
  const { h, reports } = await call(t, { impair: true });
  await until(() => reports.length > 0, 5000, 'call metrics reported');
  await sleep(100);
  const text = await h.metrics.registry.metrics();
  t.match(text, /msb_call_metrics_reports_total\{result="ok"\} 1/, 'one report, accepted by Meta');
  const summary = h.logs().find((l) => l.msg === 'call summary')?.summary as { quality?: Record<string, Record<string, number>> } | undefined;
  t.ok(summary?.quality, 'the summary line has quality');
  const fromPbx = summary!.quality!.fromPbx!;
  const fromMessenger = summary!.quality!.fromMessenger!;
  t.ok(fromPbx.packets > 30, `packets from the PBX (${fromPbx.packets})`);
  t.ok(fromPbx.lossPct >= 3 && fromPbx.lossPct <= 8, `5 % of the PBX's packets lost (${fromPbx.lossPct} %)`);
  t.ok(fromPbx.mos < fromMessenger.mos, `lossy leg rates lower (${fromPbx.mos} < ${fromMessenger.mos})`);
  t.ok(fromMessenger.firstAudioMs !== undefined, 'first audio time of the person');
  t.match(text, /msb_call_mos_count\{leg="from_pbx"\} 1/);
  t.match(text, /msb_call_mos_count\{leg="from_messenger"\} 1/);
  t.match(text, /msb_call_loss_ratio_bucket\{le="0.1",leg="from_pbx"\} 1/);
  t.notMatch(text, /callId|c_[A-Za-z0-9_-]{20}/, 'no per-call labels');
});

t.test('the call_metrics body Meta receives', async (t) => {
  const { callId, reports, hungUpAt } = await call(t);
  await until(() => reports.length > 0, 5000, 'call_metrics received');
  const { pageId, body } = reports[0]!;
  const before = Math.floor(hungUpAt / 1000);
  t.equal(pageId, PAGE_ID);
  t.match(body, { platform: 'messenger', call_id: callId, end_call_reason: 'Hangup_Call', end_call_subreason: /^completed: / });
  t.ok((body.call_ended_time as number) >= before && (body.call_ended_time as number) <= before + 5, 'call_ended_time: unix seconds of the end');
  t.type(body.first_audio_packet_received_time, 'number');
  const stats = body.audio_stats as Record<string, number>;
  for (const key of CALL_METRICS_AUDIO_STATS) t.type(stats[key], 'number', `audio_stats.${key}`);
  t.ok(stats.packets_received! > 30, `packets_received ${stats.packets_received}`);
  t.equal(stats.packets_lost, 0);
  await sleep(300);
  t.equal(reports.length, 1, 'one report per call');
});

t.test('report_to_meta: false sends none; a refused report is logged once and not retried', async (t) => {
  const off = await call(t, { options: { config: { calls: { quality: { report_to_meta: false } } } } });
  await sleep(500);
  t.equal(off.reports.length, 0);
  t.notMatch(await off.h.metrics.registry.metrics(), /msb_call_metrics_reports_total\{/);

  const requests: number[] = [];
  const { h } = await call(t, {
    prepare: (h) => {
      h.sim.graph.failNext('call_metrics', { status: 400, body: { error: { message: 'Invalid parameter', type: 'OAuthException', code: 100 } } });
      h.sim.graph.events.on('request', (r) => {
        if (r.action === 'call_metrics') requests.push(r.status);
      });
    },
  });
  await until(() => h.logs().some((l) => l.msg === 'call metrics not accepted by Meta (not retried)'), 5000, 'refusal logged');
  await sleep(800);
  t.same(requests, [400], 'one attempt, not retried');
  t.match(await h.metrics.registry.metrics(), /msb_call_metrics_reports_total\{result="error"\} 1/);
});

interface MetaSideQuality {
  fromMessenger: { rttMs?: number };
  atMessenger?: { lossPct: number; lost: number; jitterMs: number; rttMs?: number };
}

/** The summary line's quality of the call that ended. */
function summaryQuality(h: Harness): MetaSideQuality | undefined {
  return (h.logs().find((l) => l.msg === 'call summary')?.summary as { quality?: MetaSideQuality } | undefined)?.quality;
}

// Meta's media server reports on our stream every ~5 s (mediasoup's producer RTCP interval, as Meta's own); our
// first sender report leaves 1 s after DTLS: a 7.5 s call has at least one report that gives a round trip.
const RTCP_CALL_MS = 7500;

for (const threads of [0, 1]) {
  t.test(`Meta's reports on our audio (media.threads ${threads}): round trip, loss and jitter in the summary, the histogram and call_metrics`, async (t) => {
    const { h, reports } = await call(t, { durationMs: RTCP_CALL_MS, options: { config: { media: { threads } } } });
    await until(() => reports.length > 0, 5000, 'call metrics reported');
    const q = summaryQuality(h);
    const rtt = q?.fromMessenger.rttMs;
    // Measured, and small. It may read 0: on loopback the round trip is below a millisecond, and mediasoup counts DLSR
    // in whole milliseconds, so one report can put it anywhere within a millisecond either side (below 0 counts as 0).
    t.ok(rtt !== undefined && rtt >= 0 && rtt < 50, `RTT toward Meta on loopback: measured, a few ms at most (${rtt} ms)`);
    t.match(q?.atMessenger, { lossPct: 0, lost: 0, rttMs: rtt }, "Meta's report: nothing lost");
    const jitter = q?.atMessenger?.jitterMs;
    t.ok(jitter !== undefined && jitter >= 0 && jitter < 20, `jitter Meta measured (${jitter} ms)`);
    const stats = reports[0]!.body.audio_stats as Record<string, number>;
    t.equal(stats.round_trip_time_ms, rtt, 'the round trip reaches call_metrics');
    t.match(await h.metrics.registry.metrics(), /msb_call_rtt_seconds_count\{leg="from_messenger"\} 1/, 'and the RTT histogram');
  });
}

t.test('packets lost on the way to Meta show in its reports, hence in the summary', async (t) => {
  let relay: ReturnType<MetaMediaSession['impair']> | undefined;
  const { h } = await call(t, {
    durationMs: RTCP_CALL_MS,
    options: { metaMediaRelay: true },
    connected: (session) => {
      relay = session.impair({ dropToMeta: (i) => i % 10 === 3 });
    },
  });
  const at = summaryQuality(h)?.atMessenger;
  t.ok(relay!.dropped > 20, `the path dropped 1 packet in 10 toward Meta (${relay!.dropped})`);
  t.ok(at !== undefined && at.lost > 0 && at.lost <= relay!.dropped, `Meta counted them lost (${at?.lost} of ${relay!.dropped})`);
  t.ok(at !== undefined && at.lossPct >= 5 && at.lossPct <= 15, `about 10 % lost in Meta's last report (${at?.lossPct} %)`);
});
