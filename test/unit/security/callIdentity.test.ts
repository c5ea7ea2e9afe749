/**
 * A PBX (or anything that passed the ACL) reusing one Call-ID for many INVITEs, or flooding INVITEs from one
 * address: each call is keyed by its own id, a second INVITE with a live call's Call-ID is refused 482, and per-source
 * limits refuse the excess with 503 while calls from other sources still go through.
 */
import t from 'tap';
import { PSID, startHarness, until } from '../../helpers/bridgeHarness.js';
import { SourceLimits } from '../../../src/calls/SourceLimits.js';

const offer = ['v=0', 'o=pbx 1 1 IN IP4 127.0.0.1', 's=-', 'c=IN IP4 127.0.0.1', 't=0 0', 'm=audio 40000 RTP/AVP 0', 'a=rtpmap:0 PCMU/8000', ''].join('\r\n');

t.test('six INVITEs sharing one Call-ID: one call, the others 482, while it rings and once it is answered', async (t) => {
  const h = await startHarness({ captureLogs: true, config: { calls: { max_concurrent: 2 } } });
  t.teardown(() => h.close());
  const connects: string[] = [];
  h.sim.graph.events.on('connect', (c) => connects.push(c.callId));
  const callId = 'same-call-id@127.0.0.1';
  const first = h.drachtio.pbx.call({ user: PSID, sdp: offer, callId });
  await until(() => connects.length === 1, 5000, 'the first INVITE reaches Meta');
  const ringing = await Promise.all([0, 1, 2].map(() => h.drachtio.pbx.call({ user: PSID, sdp: offer, callId }).final));
  t.same(ringing.map((f) => f.status), [482, 482, 482], 'while the first rings, each later INVITE with its Call-ID is refused 482');
  t.match(ringing[0]!.response.get('reason') ?? '', /Call-ID is in progress/);
  t.ok(
    h.logs().some((l) => l.msg === 'INVITE with the Call-ID of an INVITE in progress refused'),
    'the refusal is logged',
  );

  h.sim.graph.consumerAccept(connects[0]!);
  const answered = await first.final;
  t.equal(answered.status, 200, 'the first call is still the one answered');
  const later = await Promise.all([0, 1].map(() => h.drachtio.pbx.call({ user: PSID, sdp: offer, callId }).final));
  t.same(later.map((f) => f.status), [482, 482], 'once it is answered, a new INVITE with its Call-ID is refused 482 too');
  t.match(later[0]!.response.get('reason') ?? '', /Loop Detected/);
  t.equal(connects.length, 1, 'only one Graph connect for the six INVITEs');
  t.equal(h.daemon.controller.registry.size, 1, 'one live call');
  // The first call is the one the bridge tracks: ending it leaves nothing.
  await answered.dialog!.bye();
  await until(() => h.daemon.controller.registry.size === 0, 5000, 'the call released');
});

t.test('a CANCEL of the first INVITE still ends the call after a duplicate was refused', async (t) => {
  const h = await startHarness();
  t.teardown(() => h.close());
  let connects = 0;
  h.sim.graph.events.on('connect', () => connects++);
  const callId = 'cancel-after-duplicate@127.0.0.1';
  const first = h.drachtio.pbx.call({ user: PSID, sdp: offer, callId });
  await until(() => connects === 1, 5000, 'the first INVITE reaches Meta');
  t.equal((await h.drachtio.pbx.call({ user: PSID, sdp: offer, callId }).final).status, 482);
  first.cancel();
  t.equal((await first.final).status, 487);
  await until(() => h.daemon.controller.registry.size === 0, 5000, 'the canceled call released');
});

t.test('per-source limits: calls in progress and INVITE rate from one address', async (t) => {
  const h = await startHarness({
    config: { calls: { max_concurrent: 20 }, sip: { acl: ['127.0.0.0/8'], per_source: { max_calls: 2, invites_per_second: 0.01, invite_burst: 4 } } },
  });
  t.teardown(() => h.close());
  let connects = 0;
  h.sim.graph.events.on('connect', () => connects++);
  const flooder = { address: '127.0.0.7', port: 5060 };
  const calls = [0, 1].map(() => h.drachtio.pbx.call({ user: PSID, sdp: offer, source: flooder }));
  await until(() => connects === 2, 5000, 'two calls from the flooder reach Meta');
  const third = await h.drachtio.pbx.call({ user: PSID, sdp: offer, source: flooder }).final;
  t.equal(third.status, 503, 'a third call in progress from that address: 503');
  t.match(third.response.get('reason') ?? '', /too many calls from this source/);
  const fourth = await h.drachtio.pbx.call({ user: PSID, sdp: offer, source: flooder }).final;
  const fifth = await h.drachtio.pbx.call({ user: PSID, sdp: offer, source: flooder }).final;
  t.equal(fourth.status, 503);
  t.match(fifth.response.get('reason') ?? '', /too many INVITEs from this source/, 'past the burst, the rate limit answers');
  t.equal(connects, 2, 'none of them reached Meta');
  // Another address of the PBX side still gets through.
  const other = h.drachtio.pbx.call({ user: PSID, sdp: offer });
  await until(() => connects === 3, 5000, 'a call from another source reaches Meta');
  for (const c of [...calls, other]) c.cancel();
  await until(() => h.daemon.controller.registry.size === 0, 5000, 'calls released');
});

t.test('SourceLimits: a source gets its burst back at its rate, and slots back when calls end', async (t) => {
  let now = 0;
  const limits = new SourceLimits(() => ({ maxConcurrent: 1, perSecond: 2, burst: 2 }), () => now);
  t.equal(limits.check('a'), undefined);
  let end!: () => void;
  limits.hold('a', new Promise<void>((r) => (end = r)));
  t.equal(limits.check('a'), 'concurrent', 'one call in progress is the limit');
  t.equal(limits.check('a'), 'rate', 'the burst of 2 is used up');
  t.equal(limits.check('b'), undefined, 'another source is not affected');
  end();
  await Promise.resolve();
  t.equal(limits.live('a'), 0, 'the slot is released when the call ends');
  now += 500;
  t.equal(limits.check('a'), undefined, 'half a second later one INVITE is allowed again');
  t.equal(limits.check('a'), 'rate');
});
