/**
 * What an operator watches: every metric moves when its event happens, /readyz follows drachtio and drain, and a
 * drain lets live calls finish while refusing new ones.
 */
import t, { type Test } from 'tap';
import { createRtpPeer, type RtpPeer } from '../helpers/rtpPeer.js';
import { PAGE_ID, PSID, sdpTarget, sleep, startHarness, until, type Harness } from '../helpers/bridgeHarness.js';
import type { PbxDialog } from '../helpers/drachtio/index.js';
import { PBX_TO_META_HZ, assertBothWays, listenBothWays } from '../helpers/tone.js';

async function metricsText(h: Harness): Promise<string> {
  return (await fetch(`${h.daemon.adminUrl}/metrics`)).text();
}

/** The value of one sample, e.g. value(text, 'msb_calls_started_total{direction="user_initiated"}'). */
function value(text: string, sample: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${sample} `));
  return line ? Number(line.slice(sample.length + 1)) : 0;
}

async function readyz(h: Harness): Promise<{ status: number; body: { ready?: boolean; checks?: Record<string, boolean> } }> {
  const res = await fetch(`${h.daemon.adminUrl}/readyz`);
  return { status: res.status, body: (await res.json()) as { ready?: boolean; checks?: Record<string, boolean> } };
}

function answerWith(h: Harness, peers: RtpPeer[], dialogs: PbxDialog[]): void {
  h.drachtio.pbx.onInvite(async (invite) => {
    const peer = await createRtpPeer({ codec: 'PCMU', tePt: 101 });
    peers.push(peer);
    const target = sdpTarget(invite.sdp);
    peer.setRemote(target.address, target.port);
    dialogs.push(await invite.answer(peer.sdp()));
    peer.startTone(PBX_TO_META_HZ);
  });
}

t.test('metrics move with calls, webhooks, Graph requests, SIP responses, media, transcoding and DTMF', async (t) => {
  const h = await startHarness({ codecs: ['PCMU'] });
  const peers: RtpPeer[] = [];
  t.teardown(async () => {
    for (const p of peers) p.close();
    await h.close();
  });
  answerWith(h, peers, []);
  const before = await metricsText(h);
  t.equal(value(before, 'msb_drachtio_connected'), 1, 'drachtio connected gauge');

  const callId = h.sim.placeCall({ pageId: PAGE_ID, psid: PSID });
  const session = await h.sim.waitForSession(callId);
  await session.whenConnected();
  session.startTone(1000);
  await sleep(300);
  const during = await metricsText(h);
  t.equal(value(during, 'msb_calls_active{direction="user_initiated"}'), 1, 'one active call');
  t.equal(value(during, 'msb_transcoding_sessions'), 1, 'one transcoding session');
  await peers[0]!.sendDigits('12', 120, 100);
  await sleep(800);
  const ended = h.sim.waitForEnd(callId);
  h.sim.hangUp(callId);
  await ended;
  await until(() => h.daemon.controller.registry.size === 0, 3000, 'call released');

  // A call refused by the PBX, and a webhook with a bad signature.
  h.drachtio.pbx.onInvite((invite) => invite.reject(486, 'Busy Here'));
  const rejected = h.sim.graph.events.waitFor('reject');
  h.sim.placeCall({ pageId: PAGE_ID, psid: PSID });
  await rejected;
  await until(() => h.daemon.controller.registry.size === 0, 3000, 'call released');
  const bad = await fetch(h.daemon.webhookUrl, { method: 'POST', headers: { 'content-type': 'application/json', 'x-hub-signature-256': `sha256=${'0'.repeat(64)}` }, body: '{"object":"page","entry":[]}' });
  t.equal(bad.status, 403, 'bad signature refused');

  const after = await metricsText(h);
  t.equal(value(after, 'msb_calls_started_total{direction="user_initiated"}'), 2, 'calls started');
  t.equal(value(after, 'msb_calls_ended_total{direction="user_initiated",outcome="completed"}'), 1, 'completed call counted');
  t.equal(value(after, 'msb_calls_ended_total{direction="user_initiated",outcome="rejected_pbx"}'), 1, 'refused call counted');
  t.equal(value(after, 'msb_calls_active{direction="user_initiated"}'), 0, 'no active call');
  t.equal(value(after, 'msb_transcoding_sessions'), 0, 'transcoding gauge back to 0');
  t.ok(value(after, 'msb_webhooks_total{event="connect",result="accepted"}') >= 2, 'connect webhooks accepted');
  t.ok(value(after, 'msb_webhooks_total{event="unknown",result="bad_signature"}') + value(after, 'msb_webhooks_total{event="none",result="bad_signature"}') + sumMatching(after, /^msb_webhooks_total\{[^}]*result="bad_signature"[^}]*\} (\d+)/) >= 1, 'bad signature counted');
  t.ok(sumMatching(after, /^msb_graph_requests_total\{action="accept",result="ok"[^}]*\} (\d+)/) >= 1, 'Graph accept counted');
  t.ok(sumMatching(after, /^msb_graph_requests_total\{action="reject",result="ok"[^}]*\} (\d+)/) >= 1, 'Graph reject counted');
  t.ok(sumMatching(after, /^msb_sip_responses_total\{direction="received",code="200"\} (\d+)/) >= 1, 'SIP 200 counted');
  t.ok(sumMatching(after, /^msb_sip_responses_total\{direction="received",code="486"\} (\d+)/) >= 1, 'SIP 486 counted');
  t.ok(value(after, 'msb_setup_webhook_to_invite_seconds_count') >= 2, 'webhook -> INVITE histogram');
  t.ok(value(after, 'msb_setup_pbx_answer_to_accept_seconds_count') >= 1, '200 OK -> accept histogram');
  t.ok(value(after, 'msb_media_packets_total{direction="to_pbx"}') > 10, 'media packets toward the PBX');
  t.ok(value(after, 'msb_media_packets_total{direction="to_messenger"}') > 10, 'media packets toward Messenger');
  t.ok(value(after, 'msb_dtmf_digits_total{direction="to_messenger"}') >= 2, 'DTMF digits counted');
});

function sumMatching(text: string, re: RegExp): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = re.exec(line);
    if (m) sum += Number(m[1]);
  }
  return sum;
}

t.test('/readyz goes false when drachtio drops and true when it is back', async (t) => {
  const h = await startHarness();
  t.teardown(() => h.close());
  t.equal((await readyz(h)).status, 200, 'ready');
  await h.drachtio.stop();
  await until(() => !h.daemon.sip.connected, 3000, 'disconnect noticed');
  const down = await readyz(h);
  t.equal(down.status, 503, 'not ready without drachtio');
  t.equal(down.body.checks?.drachtio, false, 'the failing check is named');
  t.equal(value(await metricsText(h), 'msb_drachtio_connected'), 0, 'gauge follows');
  const rejected = h.sim.graph.events.waitFor('reject');
  h.sim.placeCall({ pageId: PAGE_ID, psid: PSID });
  await rejected;
  t.pass('a call arriving meanwhile is rejected to Meta at once');
  await h.drachtio.restart();
  await until(() => h.daemon.sip.connected, 10_000, 'reconnected');
  t.equal((await readyz(h)).status, 200, 'ready again');
});

/** A bridge with one connected consumer-initiated call; the PBX side answers with RTP peers. */
async function withLiveCall(t: Test) {
  const h = await startHarness({ codecs: ['PCMU'] });
  const peers: RtpPeer[] = [];
  const dialogs: PbxDialog[] = [];
  t.teardown(async () => {
    for (const p of peers) p.close();
    await h.close();
  });
  answerWith(h, peers, dialogs);
  const callId = h.sim.placeCall({ pageId: PAGE_ID, psid: PSID });
  const session = await h.sim.waitForSession(callId);
  await session.whenConnected();
  return { h, peers, dialogs, callId, session };
}

t.test('drain: live call continues, new calls are refused (Meta reject, SIP 503), stop resolves when it ends', async (t) => {
  const { h, peers, dialogs, callId, session } = await withLiveCall(t);

  let stopped = false;
  const stopping = h.daemon.stop(30_000).then(() => (stopped = true));
  await sleep(100);
  const ready = await readyz(h).catch(() => ({ status: 0, body: {} }));
  t.equal(ready.status, 503, 'not ready while draining');

  const rejected = h.sim.graph.events.waitFor('reject');
  h.sim.placeCall({ pageId: PAGE_ID, psid: '42' });
  await rejected;
  t.pass('new Messenger call rejected while draining');
  const sipCall = h.drachtio.pbx.call({ user: PSID, sdp: peers[0]!.sdp() });
  t.equal((await sipCall.final).status, 503, 'new INVITE refused with 503 while draining');

  assertBothWays(t, await listenBothWays(session, peers[0]!), 'the live call still carries audio while draining');
  t.notOk(stopped, 'stop has not resolved while the call lasts');
  h.sim.hangUp(callId);
  await stopping;
  t.ok(stopped, 'stop resolved once the live call ended');
  await dialogs[0]!.waitForBye(2000);
});

t.test('drain timeout ends the remaining calls cleanly (BYE and Meta terminate)', async (t) => {
  const { h, dialogs, callId } = await withLiveCall(t);
  const ended = h.sim.waitForEnd(callId, 5000);
  await h.daemon.stop(300);
  t.equal((await ended).by, 'business', 'Meta got terminate');
  await dialogs[0]!.waitForBye(2000);
  t.pass('the PBX got BYE');
});

t.test('metrics: a dead mediasoup worker is replaced and counted; permission replies are counted', async (t) => {
  const h = await startHarness();
  t.teardown(() => h.close());
  const workerPids = async (): Promise<number[]> => (await h.daemon.media.inspect()).workers.map((w) => w.pid);
  const pid = (await workerPids())[0]!;
  process.kill(pid, 'SIGKILL');
  let restarts = 0;
  for (let i = 0; i < 100 && restarts < 1; i++) {
    restarts = value(await metricsText(h), 'msb_worker_restarts_total');
    if (restarts < 1) await sleep(100);
  }
  t.equal(restarts, 1, 'worker restart counted');
  let pids: number[] = [];
  for (let i = 0; i < 100 && !(pids.length === 1 && pids[0] !== pid); i++) {
    pids = await workerPids();
    if (!(pids.length === 1 && pids[0] !== pid)) await sleep(100);
  }
  t.ok(pids.length === 1 && pids[0] !== pid, 'a new worker process serves');

  h.sim.graph.replyPermission(PAGE_ID, PSID, 'approve');
  let replies = 0;
  for (let i = 0; i < 50 && replies < 1; i++) {
    replies = sumMatching(await metricsText(h), /^msb_permission_replies_total\{[^}]*\} (\d+)/);
    if (replies < 1) await sleep(100);
  }
  t.equal(replies, 1, 'permission reply counted');
});
