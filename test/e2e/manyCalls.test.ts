/**
 * Calls in a row and at once through the whole bridge: each ends with exactly one summary line, and afterwards no
 * call record, mediasoup router or transport, UDP socket or timer of a call is left.
 */
import t, { type Test } from 'tap';
import { createRtpPeer, type RtpPeer } from '../helpers/rtpPeer.js';
import { PAGE_ID, sdpTarget, startHarness, until, type Harness } from '../helpers/bridgeHarness.js';

const IN_A_ROW = Number(process.env.MANY_CALLS_IN_A_ROW ?? 50);
const AT_ONCE = Number(process.env.MANY_CALLS_AT_ONCE ?? 20);

function handles(): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const name of process.getActiveResourcesInfo()) counts[name] = (counts[name] ?? 0) + 1;
  return counts;
}

async function routersAlive(h: Harness): Promise<number> {
  const { workers } = await h.daemon.media.inspect();
  return workers.reduce((n, w) => n + w.routers, 0);
}

/** The PBX answers every INVITE with its own RTP peer; returns the peers for closing. */
function answerAll(h: Harness): RtpPeer[] {
  const peers: RtpPeer[] = [];
  h.drachtio.pbx.onInvite(async (invite) => {
    const peer = await createRtpPeer({ codec: 'PCMU' });
    peers.push(peer);
    const target = sdpTarget(invite.sdp);
    peer.setRemote(target.address, target.port);
    await invite.answer(peer.sdp());
    peer.startTone(1000);
  });
  return peers;
}

async function oneCall(h: Harness, psid: string): Promise<void> {
  const callId = h.sim.placeCall({ pageId: PAGE_ID, psid });
  const session = await h.sim.waitForSession(callId, 15_000);
  await session.whenConnected();
  const ended = h.sim.waitForEnd(callId, 10_000);
  h.sim.hangUp(callId);
  await ended;
}

async function assertNothingLeft(t: Test, h: Harness, baseline: Record<string, number>, peers: RtpPeer[]): Promise<void> {
  await until(() => h.daemon.controller.registry.size === 0, 5000, 'all calls released');
  for (const p of peers) p.close();
  t.equal(h.daemon.controller.registry.size, 0, 'no call record left');
  t.equal(await routersAlive(h), 0, 'no mediasoup router left in the workers');
  await until(() => (handles().UDPWrap ?? 0) <= (baseline.UDPWrap ?? 0), 3000, 'UDP sockets closed').catch(() => undefined);
  const now = handles();
  t.ok((now.UDPWrap ?? 0) <= (baseline.UDPWrap ?? 0), `no UDP socket left (${now.UDPWrap ?? 0} vs ${baseline.UDPWrap ?? 0} before)`);
  t.ok((now.Timeout ?? 0) <= (baseline.Timeout ?? 0) + 2, `no call timer left (${now.Timeout ?? 0} vs ${baseline.Timeout ?? 0} before)`);
}

function summaries(h: Harness): Array<Record<string, unknown>> {
  return h.logs()
    .filter((l) => l.msg === 'call summary')
    .map((l) => l.summary as Record<string, unknown>);
}

t.test(`${IN_A_ROW} calls in a row`, async (t) => {
  const h = await startHarness({ codecs: ['PCMU'], captureLogs: true });
  t.teardown(() => h.close());
  const peers = answerAll(h);
  const baseline = handles();
  for (let i = 0; i < IN_A_ROW; i++) await oneCall(h, String(9_000_000 + i));
  await assertNothingLeft(t, h, baseline, peers);
  const lines = summaries(h);
  t.equal(lines.length, IN_A_ROW, 'one summary line per call');
  const first = lines[0]!;
  t.match(first, { direction: 'user_initiated', pageId: PAGE_ID, route: 'default', outcome: 'completed', sipStatus: 200, codec: 'PCMU' }, 'summary carries direction, page, route, outcome, SIP status, codec');
  t.ok(typeof first.metaStatus === 'string' && typeof first.durationSeconds === 'number' && typeof first.setupMs === 'number', 'Meta status and durations');
  t.ok(lines.every((l) => l.outcome === 'completed'), 'every call completed');
});

t.test(`${AT_ONCE} calls at once`, async (t) => {
  const h = await startHarness({ codecs: ['PCMU'], captureLogs: true });
  t.teardown(() => h.close());
  const peers = answerAll(h);
  const baseline = handles();
  await Promise.all(Array.from({ length: AT_ONCE }, (_, i) => oneCall(h, String(8_000_000 + i))));
  await assertNothingLeft(t, h, baseline, peers);
  const lines = summaries(h);
  t.equal(lines.length, AT_ONCE, 'one summary line per call');
  t.ok(lines.every((l) => l.outcome === 'completed'), 'every call completed');
});
