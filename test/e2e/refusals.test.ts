/**
 * Every refusal path, end to end: the Meta simulator, the bridge and the drachtio double; each produces the stated
 * Meta action or SIP response, and leaves no call behind.
 */
import t, { type Test } from 'tap';
import { PAGE_ID, PSID, startHarness, until, type Harness } from '../helpers/bridgeHarness.js';

const emptySdp = (codecs = 'PCMU') =>
  ['v=0', 'o=pbx 1 1 IN IP4 127.0.0.1', 's=-', 'c=IN IP4 127.0.0.1', 't=0 0', `m=audio 40000 RTP/AVP ${codecs === 'PCMU' ? 0 : 8}`, `a=rtpmap:${codecs === 'PCMU' ? '0 PCMU' : '8 PCMA'}/8000`, 'a=sendrecv', ''].join('\r\n');

async function released(t: Test, h: Harness): Promise<void> {
  await until(() => h.daemon.controller.registry.size === 0, 3000, 'no call left');
  t.equal(h.daemon.controller.registry.size, 0, 'no call left');
}

t.test('consumer-initiated refusals', async (t) => {
  t.test('PBX busy (486) -> Graph reject', async (t) => {
    const h = await startHarness();
    t.teardown(() => h.close());
    h.drachtio.pbx.onInvite((invite) => invite.reject(486, 'Busy Here'));
    const rejected = h.sim.graph.events.waitFor('reject');
    const callId = h.sim.placeCall({ pageId: PAGE_ID, psid: PSID });
    const [reject] = await rejected;
    t.equal(reject.callId, callId, 'Meta got reject for the call');
    t.equal(h.drachtio.sent({ method: 'INVITE' }).length, 1, 'a 486 is not retried on the next target');
    await released(t, h);
  });

  t.test('PBX that never answers -> CANCEL at the accept deadline, then reject', async (t) => {
    const h = await startHarness({ config: { calls: { accept_deadline_ms: 1500 } } });
    t.teardown(() => h.close());
    const invites: Array<import('../helpers/drachtio/index.js').PbxInvite> = [];
    h.drachtio.pbx.onInvite((invite) => {
      invites.push(invite);
      invite.ringing();
    });
    const rejected = h.sim.graph.events.waitFor('reject');
    const started = Date.now();
    h.sim.placeCall({ pageId: PAGE_ID, psid: PSID });
    await rejected;
    const elapsed = Date.now() - started;
    t.ok(elapsed >= 1400 && elapsed < 4000, `rejected at the deadline (${elapsed} ms)`);
    await invites[0]!.whenCanceled;
    t.ok(invites[0]!.canceled, 'the ringing INVITE was cancelled');
    await released(t, h);
  });

  t.test('the person hangs up while the PBX rings -> CANCEL, no reject', async (t) => {
    const h = await startHarness();
    t.teardown(() => h.close());
    const ringing = new Promise<import('../helpers/drachtio/index.js').PbxInvite>((resolve) =>
      h.drachtio.pbx.onInvite((invite) => {
        invite.ringing();
        resolve(invite);
      }),
    );
    const callId = h.sim.placeCall({ pageId: PAGE_ID, psid: PSID });
    const invite = await ringing;
    h.sim.hangUp(callId);
    await invite.whenCanceled;
    t.pass('CANCEL reached the PBX');
    await released(t, h);
    t.equal(h.sim.call(callId)?.state, 'terminated');
  });

  t.test('no route for the caller -> reject, no INVITE', async (t) => {
    const h = await startHarness({ routes: [{ name: 'vip-only', match: { psids: ['1'] }, targets: ['sip:vip@127.0.0.1:5080'] }] });
    t.teardown(() => h.close());
    const rejected = h.sim.graph.events.waitFor('reject');
    h.sim.placeCall({ pageId: PAGE_ID, psid: PSID });
    await rejected;
    t.equal(h.drachtio.sent({ method: 'INVITE' }).length, 0, 'no INVITE sent');
  });

  t.test('first target fails (503) -> second target answers', async (t) => {
    const h = await startHarness({ routes: [{ name: 'two', match: {}, targets: ['sip:first@127.0.0.1:5080', 'sip:second@127.0.0.1:5080'], codecs: ['PCMU'] }] });
    t.teardown(() => h.close());
    const seen: string[] = [];
    h.drachtio.pbx.onInvite(async (invite) => {
      seen.push(invite.requestUri);
      if (invite.requestUri.includes('first')) invite.reject(503, 'Service Unavailable');
      else await invite.answer(emptySdp());
    });
    const accepted = h.sim.graph.events.waitFor('accept');
    const callId = h.sim.placeCall({ pageId: PAGE_ID, psid: PSID });
    await accepted;
    t.same(seen, ['sip:first@127.0.0.1:5080', 'sip:second@127.0.0.1:5080'], 'targets tried in turn');
    h.sim.hangUp(callId);
    await released(t, h);
  });
});

t.test('business-initiated refusals carry the right SIP code and a Reason header', async (t) => {
  const cases: Array<{ name: string; status: number; prepare?: (h: Harness) => void; call?: Partial<import('../helpers/drachtio/fakePbx.js').PbxCallOptions> }> = [
    { name: 'no call permission -> 403', status: 403, prepare: (h) => h.sim.graph.setPermission(PAGE_ID, PSID, 'no_permission') },
    { name: 'unknown page -> 404', status: 404, call: { headers: { 'X-Messenger-Page-ID': '999' } } },
    { name: 'Meta error on connect (500) -> 503', status: 503, prepare: (h) => h.sim.graph.failNext('connect', { status: 500 }) },
    {
      name: 'Meta refuses connect (invalid SDP, 2018390) -> 480',
      status: 480,
      prepare: (h) => h.sim.graph.failNext('connect', { status: 400, body: { error: { message: 'Invalid SDP', type: 'OAuthException', code: 2018390, fbtrace_id: 'x' } } }),
    },
    {
      name: 'Meta says permission missing on connect (2018391) -> 403',
      status: 403,
      prepare: (h) => h.sim.graph.failNext('connect', { status: 400, body: { error: { message: 'No permission', type: 'OAuthException', code: 2018391, fbtrace_id: 'x' } } }),
    },
    { name: 'source outside the ACL -> 403', status: 403, call: { source: { address: '127.0.0.2', port: 5070 } } },
    { name: 'SDP with only video -> 488', status: 488, call: { sdp: emptySdp().replace('m=audio 40000 RTP/AVP 0', 'm=video 40000 RTP/AVP 96').replace('a=rtpmap:0 PCMU/8000', 'a=rtpmap:96 VP8/90000') } },
  ];
  for (const c of cases) {
    t.test(c.name, async (t) => {
      const h = await startHarness();
      t.teardown(() => h.close());
      c.prepare?.(h);
      const call = h.drachtio.pbx.call({ user: PSID, sdp: emptySdp(), ...c.call });
      const final = await call.final;
      t.equal(final.status, c.status, `${c.status} received`);
      t.match(final.response.get('reason') ?? '', /SIP;cause=\d+;text=".+"/, 'Reason header present');
      await released(t, h);
    });
  }

  t.test('over capacity -> 503', async (t) => {
    const h = await startHarness({ config: { calls: { max_concurrent: 1 } } });
    t.teardown(() => h.close());
    const first = h.drachtio.pbx.call({ user: PSID, sdp: emptySdp() });
    await h.sim.graph.events.waitFor('connect');
    const second = h.drachtio.pbx.call({ user: PSID, sdp: emptySdp() });
    t.equal((await second.final).status, 503, 'second call refused while the first is up');
    first.cancel();
    t.equal((await first.final).status, 487, 'first call cancelled');
    await released(t, h);
  });

  t.test('CANCEL from the PBX while Meta rings -> Graph terminate', async (t) => {
    const h = await startHarness();
    t.teardown(() => h.close());
    const connected = h.sim.graph.events.waitFor('connect');
    const call = h.drachtio.pbx.call({ user: PSID, sdp: emptySdp() });
    const [connect] = await connected;
    h.sim.graph.consumerRinging(connect.callId);
    await call.waitForProvisional(180, 3000);
    const ended = h.sim.waitForEnd(connect.callId, 3000);
    call.cancel();
    t.equal((await call.final).status, 487);
    t.equal((await ended).by, 'business', 'Meta saw the terminate');
    await released(t, h);
  });

  t.test('the person does not answer -> 480 when connect times out', async (t) => {
    const h = await startHarness({ config: { calls: { connect_timeout_ms: 1000 } } });
    t.teardown(() => h.close());
    const call = h.drachtio.pbx.call({ user: PSID, sdp: emptySdp() });
    t.equal((await call.final).status, 480);
    await released(t, h);
  });
});
