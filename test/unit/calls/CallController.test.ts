import t from 'tap';
import {
  FakeIncoming,
  connectEvent as connect,
  fakeController as setup,
  pollUntil as until,
  terminateEvent as terminate,
  graphError,
} from '../../helpers/callFakes.js';

t.test('consumer-initiated: INVITE with caller context, PBX answers, accept, bridged; Meta hang-up sends BYE', async (t) => {
  const { sip, graph, media, legs, controller, metrics } = setup();
  controller.handleMetaEvent(connect());
  const invite = await sip.inviteArrived.promise;
  t.same(invite.options.headers, { 'X-Messenger-PSID': '555', 'X-Messenger-Page-ID': '100', 'X-Messenger-Call-ID': 'c1' });
  t.same(invite.options.targets, ['sip:a@127.0.0.1', 'sip:b@127.0.0.1']);
  t.same(graph.actions(), [], 'nothing sent to Meta before the PBX answers');
  const dialog = invite.answer();
  await graph.waitFor('accept').promise;
  const call = controller.registry.byMetaCallId('c1')!;
  await new Promise((r) => setImmediate(r));
  t.equal(call.state, 'active');
  t.same(legs.created[0]!.answers, ['v=0 meta-answer'], "Meta's answer applied to the leg");
  t.ok(media.created[0]!.started > 0, 'media started');

  controller.handleMetaEvent(terminate('c1'));
  await call.done;
  t.equal(dialog.byeSent, 1, 'BYE sent to the PBX');
  t.ok(media.created[0]!.closed, 'media closed');
  t.ok(legs.created[0]!.closed, 'leg closed');
  t.equal(controller.registry.size, 0);
  t.same(metrics.ended, [{ direction: 'user_initiated', outcome: 'completed' }]);
  t.same(graph.actions(), ['accept'], 'no reject/terminate to Meta: Meta ended the call');
});

t.test('consumer-initiated: BYE from the PBX sends Graph terminate', async (t) => {
  const { sip, graph, controller } = setup();
  controller.handleMetaEvent(connect());
  const invite = await sip.inviteArrived.promise;
  const dialog = invite.answer();
  await graph.waitFor('accept').promise;
  const call = controller.registry.byMetaCallId('c1')!;
  dialog.remoteBye();
  await call.done;
  t.same(graph.actions(), ['accept', 'terminate']);
});

t.test('consumer-initiated: PBX busy -> Graph reject', async (t) => {
  const { sip, graph, controller, metrics } = setup();
  controller.handleMetaEvent(connect());
  const invite = await sip.inviteArrived.promise;
  invite.fail(486);
  await graph.waitFor('reject').promise;
  await controller.registry.whenEmpty();
  t.same(graph.actions(), ['reject']);
  t.same(metrics.ended, [{ direction: 'user_initiated', outcome: 'rejected_pbx' }]);
});

t.test('consumer-initiated: terminate before the PBX answers CANCELs the INVITE, nothing sent to Meta', async (t) => {
  const { sip, graph, controller, metrics } = setup();
  controller.handleMetaEvent(connect());
  const invite = await sip.inviteArrived.promise;
  controller.handleMetaEvent(terminate('c1'));
  await controller.registry.whenEmpty();
  t.ok(invite.canceled, 'INVITE cancelled');
  t.same(graph.actions(), []);
  t.same(metrics.ended, [{ direction: 'user_initiated', outcome: 'canceled' }]);
});

t.test('consumer-initiated: PBX that never answers is cancelled at the accept deadline and the call rejected', async (t) => {
  const { sip, graph, controller, metrics } = setup({ acceptDeadlineMs: 150 });
  controller.handleMetaEvent(connect());
  const invite = await sip.inviteArrived.promise;
  await graph.waitFor('reject').promise;
  t.ok(invite.canceled, 'INVITE cancelled at the deadline');
  await controller.registry.whenEmpty();
  t.same(metrics.ended, [{ direction: 'user_initiated', outcome: 'pbx_timeout' }]);
});

t.test('consumer-initiated: refusals without a call: no route, capacity, SIP down, draining', async (t) => {
  {
    const { graph, controller, metrics } = setup({ selectRoute: () => undefined });
    controller.handleMetaEvent(connect('nr'));
    await graph.waitFor('reject').promise;
    t.same(metrics.ended[0]?.outcome, 'rejected_no_route');
  }
  {
    const { sip, graph, controller, metrics } = setup({ maxConcurrent: 1 });
    controller.handleMetaEvent(connect('a'));
    await sip.inviteArrived.promise;
    controller.handleMetaEvent(connect('b'));
    await graph.waitFor('reject').promise;
    t.same(graph.calls[0], { action: 'reject', pageId: '100', callId: 'b' }, 'the excess call is rejected at once');
    t.same(metrics.ended[0]?.outcome, 'rejected_capacity');
    await controller.close();
  }
  {
    const { sip, graph, controller, metrics } = setup();
    sip.connected = false;
    controller.handleMetaEvent(connect('s'));
    await graph.waitFor('reject').promise;
    t.same(metrics.ended[0]?.outcome, 'sip_failed');
  }
  {
    const { graph, controller, metrics } = setup();
    await controller.drain(10);
    controller.handleMetaEvent(connect('d'));
    await graph.waitFor('reject').promise;
    t.same(metrics.ended[0]?.outcome, 'rejected_draining');
  }
});

t.test('consumer-initiated: a connect older than the accept window is ignored', async (t) => {
  const { sip, graph, controller } = setup();
  controller.handleMetaEvent(connect('old', { timestamp: Math.floor(Date.now() / 1000) - 120 }));
  await new Promise((r) => setTimeout(r, 20));
  t.equal(sip.invites.length, 0);
  t.same(graph.actions(), []);
});

t.test('consumer-initiated: accept failing at Meta hangs up the PBX', async (t) => {
  const { sip, graph, controller, metrics } = setup();
  graph.acceptResult = graphError(false);
  controller.handleMetaEvent(connect());
  const invite = await sip.inviteArrived.promise;
  const dialog = invite.answer();
  await controller.registry.whenEmpty();
  t.equal(dialog.byeSent, 1, 'BYE to the PBX');
  t.same(metrics.ended[0]?.outcome, 'meta_error');
});

t.test('consumer-initiated: answer mode immediate accepts before the INVITE', async (t) => {
  const { sip, graph, controller } = setup({
    selectRoute: () => ({ name: 'now', targets: ['sip:a@127.0.0.1'], targetTimeoutMs: 1000, codecs: ['PCMU'], answerMode: 'immediate' }),
  });
  controller.handleMetaEvent(connect());
  const invite = await sip.inviteArrived.promise;
  t.same(graph.actions(), ['accept'], 'accepted before the PBX answered');
  invite.fail(503);
  await controller.registry.whenEmpty();
  t.same(graph.actions(), ['accept', 'terminate'], 'an accepted call is terminated, not rejected');
});

t.test('consumer-initiated, answer mode immediate: a 183 with SDP bridges early media; a 200 OK without SDP keeps it', async (t) => {
  const { sip, graph, media, controller } = setup({
    selectRoute: () => ({ name: 'now', targets: ['sip:a@127.0.0.1'], targetTimeoutMs: 1000, codecs: ['PCMU'], answerMode: 'immediate' }),
  });
  controller.handleMetaEvent(connect());
  const invite = await sip.inviteArrived.promise;
  const callMedia = media.created[0]!;
  t.equal(callMedia.sendingToMessenger, 1, 'accepted at once: silence toward Meta while the PBX rings');
  invite.options.onProgress?.(180, 'sip:a@127.0.0.1');
  t.same(callMedia.answers, [], 'a 180 without SDP changes nothing');
  invite.options.onProgress?.(183, 'sip:a@127.0.0.1', 'v=0 early PCMA');
  t.same(callMedia.answers, ['v=0 early PCMA'], 'the 183\'s SDP is applied to the media');
  t.ok(callMedia.started >= 1, 'and the bridge started: the person hears the PBX before it answers');
  t.equal(callMedia.pbxCodec, 'PCMA');
  invite.options.onProgress?.(183, 'sip:a@127.0.0.1', 'v=0 no-codec');
  t.same(callMedia.answers, ['v=0 early PCMA'], 'an unusable early SDP is ignored');
  t.notOk(controller.registry.size === 0, 'and the call goes on');

  const dialog = invite.answer('');
  await until(() => (callMedia.answers.length === 2 ? true : undefined));
  t.same(callMedia.answers, ['v=0 early PCMA', 'v=0 early PCMA'], 'a 200 OK without SDP: the early answer stands');
  t.same(graph.actions(), ['accept'], 'accepted once, before the INVITE');
  dialog.safeEmit('bye');
  await controller.registry.whenEmpty();
});

t.test('consumer-initiated, answer mode on_pbx_answer: a 183\'s SDP is not bridged before the 200 OK (Meta has not accepted)', async (t) => {
  const { sip, graph, media, controller } = setup();
  controller.handleMetaEvent(connect());
  const invite = await sip.inviteArrived.promise;
  const callMedia = media.created[0]!;
  invite.options.onProgress?.(183, 'sip:a@127.0.0.1', 'v=0 early PCMA');
  t.same(callMedia.answers, [], 'nothing applied while Meta still rings');
  t.equal(callMedia.started, 0, 'no bridge yet');
  t.same(graph.actions(), [], 'no accept yet');
  t.equal(callMedia.sendingToMessenger, 0, 'nothing sent toward Meta before it accepted');
  invite.answer('');
  await graph.waitFor('accept').promise;
  t.same(callMedia.answers, ['v=0 early PCMA'], 'the 200 OK without SDP takes the 183\'s answer');
  await controller.close();
});

t.test('consumer-initiated: SIP INFO DTMF and re-INVITE reach the media', async (t) => {
  const { sip, graph, media, controller } = setup();
  controller.handleMetaEvent(connect());
  const invite = await sip.inviteArrived.promise;
  const dialog = invite.answer();
  await graph.waitFor('accept').promise;
  dialog.safeEmit('dtmf', { digit: '5', durationMs: 160 });
  t.same(media.created[0]!.dtmfToMessenger, [{ digit: '5', durationMs: 160 }]);
  t.equal(dialog.reinvite?.('v=0 hold'), 'v=0 pbx-answer', 're-INVITE answered by the media');
  await controller.close();
});

t.test('digits from the person go to the PBX as SIP INFO when RTP cannot carry them (sip_info: auto)', async (t) => {
  const { sip, graph, media, controller } = setup();
  controller.handleMetaEvent(connect());
  const invite = await sip.inviteArrived.promise;
  const dialog = invite.answer();
  await graph.waitFor('accept').promise;
  const callMedia = media.created[0]!;
  callMedia.safeEmit('dtmf', { digit: '1', durationMs: 100, direction: 'to_pbx', via: 'rfc4733' });
  callMedia.safeEmit('dtmf', { digit: '2', durationMs: 120, direction: 'to_pbx', via: 'inband' });
  callMedia.safeEmit('dtmf', { digit: '#', durationMs: 140, direction: 'to_pbx', via: 'none' });
  callMedia.safeEmit('dtmf', { digit: '9', durationMs: 160, direction: 'to_messenger', via: 'inband' });
  await new Promise((resolve) => setImmediate(resolve));
  t.same(
    dialog.infoDigits,
    [
      { digit: '2', durationMs: 120 },
      { digit: '#', durationMs: 140 },
    ],
    'tones left in band and events the PBX cannot take go as INFO; RFC 4733 digits and digits toward Meta do not',
  );
  await controller.close();
});

t.test('sip_info true sends every digit toward the PBX as INFO; false sends none', async (t) => {
  for (const [setting, expected] of [
    [true, ['1', '2']],
    [false, []],
  ] as const) {
    const { sip, graph, media, controller } = setup({ dtmfSipInfo: setting });
    controller.handleMetaEvent(connect());
    const invite = await sip.inviteArrived.promise;
    const dialog = invite.answer();
    await graph.waitFor('accept').promise;
    media.created[0]!.safeEmit('dtmf', { digit: '1', durationMs: 100, direction: 'to_pbx', via: 'rfc4733' });
    media.created[0]!.safeEmit('dtmf', { digit: '2', durationMs: 100, direction: 'to_pbx', via: 'none' });
    await new Promise((resolve) => setImmediate(resolve));
    t.same(dialog.infoDigits.map((d) => d.digit), expected, `sip_info: ${setting}`);
    await controller.close();
  }
});

t.test('business-initiated: permission, connect, ringing -> 180, accepted -> 200 OK, terminate -> BYE', async (t) => {
  const { graph, controller, sip, metrics } = setup();
  const incoming = new FakeIncoming('555', '100');
  sip.safeEmit('invite', incoming);
  const call = await until(() => controller.registry.byMetaCallId('meta-b-1'));
  t.ok(call, 'call indexed under the Meta call id');
  controller.handleMetaEvent({ kind: 'call_status', pageId: '100', callId: 'meta-b-1', timestamp: 1, status: 'ringing' });
  t.equal(incoming.ringingSent, 1, '180 sent');
  controller.handleMetaEvent({ kind: 'call_status', pageId: '100', callId: 'meta-b-1', timestamp: 2, status: 'accepted' });
  t.equal(await incoming.final.promise, 200);
  t.equal(await incoming.answered.promise, 'v=0 pbx-answer');
  await new Promise((r) => setImmediate(r));
  t.equal(call!.state, 'active');
  controller.handleMetaEvent(terminate('meta-b-1'));
  await call!.done;
  t.equal(incoming.dialog!.byeSent, 1);
  t.same(graph.actions(), ['permission', 'connect']);
  t.same(metrics.ended, [{ direction: 'business_initiated', outcome: 'completed' }]);
});

t.test('business-initiated: the media toward the PBX uses media.codecs, not a fixed list', async (t) => {
  const { controller, sip, media } = setup({ businessCodecs: ['PCMA', 'opus'] });
  sip.safeEmit('invite', new FakeIncoming('555', '100'));
  const call = await until(() => controller.registry.byMetaCallId('meta-b-1'));
  t.same(media.codecs, [['PCMA', 'opus']], 'created with the configured preference');
  t.same(call.route?.codecs, ['PCMA', 'opus']);
  call.hangUp('test over');
  await call.done;
});

t.test('business-initiated: events that beat the connect response are replayed', async (t) => {
  const { graph, controller, sip } = setup();
  graph.connectResult = { callId: 'early-1' };
  controller.handleMetaEvent({ kind: 'call_status', pageId: '100', callId: 'early-1', timestamp: 1, status: 'ringing' });
  const incoming = new FakeIncoming('555', '100');
  sip.safeEmit('invite', incoming);
  await until(() => controller.registry.byMetaCallId('early-1'));
  t.equal(incoming.ringingSent, 1, 'early ringing replayed as 180');
  controller.handleMetaEvent({ kind: 'media_update', pageId: '100', callId: 'early-1', timestamp: 2, version: 1, session: { sdpType: 'offer', sdp: 'v=0 meta-offer' } });
  controller.handleMetaEvent({ kind: 'call_status', pageId: '100', callId: 'early-1', timestamp: 3, status: 'accepted' });
  t.equal(await incoming.final.promise, 200);
  await controller.close();
});

t.test('business-initiated refusals carry the right SIP code', async (t) => {
  const cases: Array<[string, (s: ReturnType<typeof setup>) => FakeIncoming, number]> = [
    ['no permission', (s) => ((s.graph.permission = false), new FakeIncoming('555', '100')), 403],
    ['unknown page', () => new FakeIncoming('555', '999'), 404],
    ['no PSID', () => new FakeIncoming(undefined, '100'), 404],
    ['permission check: Meta 5xx', (s) => ((s.graph.permission = graphError(true)), new FakeIncoming('555', '100')), 503],
    ['connect refused by Meta', (s) => ((s.graph.connectResult = graphError(false)), new FakeIncoming('555', '100')), 480],
    ['video-only SDP', () => new FakeIncoming('555', '100', 'v=0 video-only'), 488],
    ['media down', (s) => ((s.media.healthy = false), new FakeIncoming('555', '100')), 503],
  ];
  for (const [name, make, status] of cases) {
    const s = setup();
    const incoming = make(s);
    s.sip.safeEmit('invite', incoming);
    t.equal(await incoming.final.promise, status, name);
    t.ok(incoming.rejected?.reason, `${name}: has a reason`);
    await s.controller.registry.whenEmpty();
  }
  {
    const s = setup({ maxConcurrent: 0 });
    const incoming = new FakeIncoming('555', '100');
    s.sip.safeEmit('invite', incoming);
    t.equal(await incoming.final.promise, 503, 'over capacity');
  }
});

t.test('business-initiated: CANCEL from the PBX terminates the Meta call', async (t) => {
  const { graph, controller, sip } = setup();
  const incoming = new FakeIncoming('555', '100');
  sip.safeEmit('invite', incoming);
  await until(() => controller.registry.byMetaCallId('meta-b-1'));
  incoming.cancel();
  await graph.waitFor('terminate').promise;
  await controller.registry.whenEmpty();
  t.same(graph.actions(), ['permission', 'connect', 'terminate']);
});

t.test('business-initiated: no answer from the person within the connect timeout -> 480 and terminate', async (t) => {
  const { graph, controller, sip, metrics } = setup({ connectTimeoutMs: 100 });
  const incoming = new FakeIncoming('555', '100');
  sip.safeEmit('invite', incoming);
  t.equal(await incoming.final.promise, 480);
  await controller.registry.whenEmpty();
  t.same(graph.actions(), ['permission', 'connect', 'terminate']);
  t.same(metrics.ended[0]?.outcome, 'not_answered');
});

t.test('drain lets a live call finish, then resolves; drain timeout hangs up the rest', async (t) => {
  const { sip, graph, controller } = setup();
  controller.handleMetaEvent(connect());
  const invite = await sip.inviteArrived.promise;
  const dialog = invite.answer();
  await graph.waitFor('accept').promise;
  const started = Date.now();
  await controller.drain(100);
  t.ok(Date.now() - started >= 90, 'waited for the drain timeout');
  t.equal(dialog.byeSent, 1, 'the remaining call was hung up');
  t.same(graph.actions(), ['accept', 'terminate']);
});
