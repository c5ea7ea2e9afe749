/**
 * A burst of connect webhooks (and of PBX INVITEs) beyond the concurrency limit: calls up to the limit go ahead,
 * the excess is refused cleanly (Meta reject / SIP 503) while the admitted calls still ring, so nothing waits for a
 * slot to free up, and once the calls end the bridge takes new ones again with nothing left behind. How fast the
 * refusals come is bounded loosely (10 s for the whole burst on a loaded 2-core machine) and reported: it is the time
 * to work through 60 webhooks and 6 call set-ups, not a queue.
 */
import t from 'tap';
import { PAGE_ID, startHarness, until } from '../helpers/bridgeHarness.js';
import type { PbxInvite } from '../helpers/drachtio/index.js';
import {
  assertNothingLeft,
  baseline,
  checkedFigure,
  figureAgainst,
  leakCount,
  leftOver,
  recordFigures,
  type FigureRow,
} from '../helpers/reliability.js';

const LIMIT = 6;
const BURST = 60;

const pbxOffer = ['v=0', 'o=pbx 1 1 IN IP4 127.0.0.1', 's=-', 'c=IN IP4 127.0.0.1', 't=0 0', 'm=audio 40000 RTP/AVP 0', 'a=rtpmap:0 PCMU/8000', ''].join('\r\n');

t.test(`a burst of ${BURST} calls against a limit of ${LIMIT}`, async (t) => {
  const h = await startHarness({
    routes: [{ name: 'default', match: {}, targets: ['sip:support@127.0.0.1:5080'], target_timeout_ms: 30_000, codecs: ['PCMU'] }],
    config: { calls: { max_concurrent: LIMIT, accept_deadline_ms: 30_000 } },
  });
  t.teardown(() => h.close());
  const base = await baseline(h);

  // The PBX rings and never answers: every admitted call holds its slot until the person hangs up.
  const ringing: PbxInvite[] = [];
  h.drachtio.pbx.onInvite((invite) => {
    invite.ringing();
    ringing.push(invite);
  });
  const rejects = new Map<string, number>();
  h.sim.graph.events.on('reject', (r) => rejects.set(r.callId, Date.now()));
  let peak = 0;
  const watch = setInterval(() => (peak = Math.max(peak, h.daemon.controller.registry.size)), 5);
  t.teardown(() => clearInterval(watch));

  const sentAt = Date.now();
  const callIds = Array.from({ length: BURST }, (_, i) => h.sim.placeCall({ pageId: PAGE_ID, psid: String(3_000_000 + i) }));
  await until(() => rejects.size >= BURST - LIMIT, 20_000, 'the excess rejected');
  await until(() => ringing.length >= LIMIT, 20_000, 'the admitted calls ringing');
  await new Promise((resolve) => setTimeout(resolve, 500));
  const rejectDelays = [...rejects.values()].map((at) => at - sentAt).sort((a, b) => a - b);

  const figures: FigureRow[] = [
    ['concurrency limit', LIMIT],
    ['connect webhooks in the burst', BURST],
    checkedFigure(t, 'calls that reached the PBX', ringing.length, '==', LIMIT),
    checkedFigure(t, 'rejected toward Meta', rejects.size, '==', BURST - LIMIT),
    checkedFigure(
      t,
      'slowest reject after the burst was sent, while the admitted calls still rang (ms)',
      rejectDelays[rejectDelays.length - 1] ?? Infinity,
      '<',
      10_000,
      `fastest ${rejectDelays[0]} ms`,
    ),
    checkedFigure(t, 'peak calls held', peak, '<=', LIMIT),
  ];
  const admitted = callIds.filter((id) => !rejects.has(id));
  t.equal(admitted.length, LIMIT, 'every call was either admitted or rejected');
  t.ok(admitted.every((id) => h.sim.call(id)?.state === 'ringing'), 'admitted calls are still ringing at Meta: no reject waited for a slot');

  // Business-initiated calls during the overload: 503 at once.
  const overflow = await Promise.all(Array.from({ length: 10 }, (_, i) => h.drachtio.pbx.call({ user: String(4_000_000 + i), sdp: pbxOffer }).final));
  t.same(overflow.map((f) => f.status), overflow.map(() => 503), 'agent calls refused with 503 while full');
  figures.push(checkedFigure(t, 'agent INVITEs refused with 503 while full', overflow.filter((f) => f.status === 503).length, '==', overflow.length));

  // The people hang up: slots free up, CANCEL reaches the PBX, and a new call is taken again.
  for (const id of admitted) h.sim.hangUp(id);
  await Promise.all(ringing.map((invite) => invite.whenCanceled));
  await until(() => h.daemon.controller.registry.size === 0, 5000, 'slots freed');
  const again = h.sim.placeCall({ pageId: PAGE_ID, psid: '3999999' });
  await until(() => ringing.length === LIMIT + 1, 10_000, 'a new call after the burst');
  figures.push(checkedFigure(t, 'new calls taken once the slots were free', ringing.length - LIMIT, '==', 1));
  h.sim.hangUp(again);
  await ringing[LIMIT]!.whenCanceled;

  clearInterval(watch);
  const left = await leftOver(h, base);
  assertNothingLeft(t, left, 'after the burst');
  recordFigures('load', {
    title: 'Load: burst beyond the concurrency limit',
    figures: [...figures, figureAgainst('leaks found', leakCount(left), '==', 0)],
  });
});
