/**
 * The call state machine is a table that decides: an event the table does not allow in the call's state is refused
 * (logged, counted in msb_call_events_refused_total) and changes nothing; the SIP teardown is picked in one place.
 */
import t from 'tap';
import { CALL_STATE_TABLE, nextCallState, sipTeardownFor, type CallEvent, type CallState } from '../../../src/calls/callState.js';
import { FakeIncoming, connectEvent as connect, fakeController as setup, pollUntil as until, terminateEvent as terminate } from '../../helpers/callFakes.js';

t.test('the table: every live state can end, ending only releases, ended accepts nothing', async (t) => {
  const states = Object.keys(CALL_STATE_TABLE) as CallState[];
  for (const state of states.filter((s) => s !== 'ending' && s !== 'ended')) t.equal(nextCallState(state, 'end'), 'ending', `${state} -end-> ending`);
  t.same(CALL_STATE_TABLE.ending, { released: 'ended' });
  t.same(CALL_STATE_TABLE.ended, {});
  t.equal(nextCallState('active', 'refer'), 'transferring');
  t.equal(nextCallState('media', 'refer'), undefined, 'no REFER before the audio is bridged');
  t.equal(nextCallState('connecting', 'meta_ringing'), 'meta_ringing');
  t.equal(nextCallState('active', 'meta_ringing'), undefined, 'a late ringing does not move a bridged call');
});

t.test('the SIP teardown: BYE with a dialog, else a final response to their INVITE, else CANCEL of ours', async (t) => {
  t.equal(sipTeardownFor({ hasDialog: true, hasIncomingInvite: true }), 'bye');
  t.equal(sipTeardownFor({ hasDialog: true, hasIncomingInvite: false }), 'bye');
  t.equal(sipTeardownFor({ hasDialog: false, hasIncomingInvite: true }), 'refuse');
  t.equal(sipTeardownFor({ hasDialog: false, hasIncomingInvite: false }), 'cancel');
});

t.test('a whole call applies only allowed events', async (t) => {
  const { sip, controller, metrics } = setup();
  controller.handleMetaEvent(connect());
  const invite = await sip.inviteArrived.promise;
  invite.answer();
  const call = await until(() => controller.registry.byMetaCallId('c1'));
  await until(() => call.state === 'active');
  controller.handleMetaEvent(terminate('c1'));
  await call.done;
  t.equal(call.state, 'ended');
  t.same(metrics.refusedEvents, [], 'nothing refused in a normal call');
});

t.test('a disallowed event is refused, counted and not applied', async (t) => {
  const { sip, controller, metrics } = setup();
  const incoming = new FakeIncoming('555', '100');
  sip.safeEmit('invite', incoming);
  const call = await until(() => controller.registry.byMetaCallId('meta-b-1'));
  controller.handleMetaEvent({ kind: 'call_status', pageId: '100', callId: 'meta-b-1', timestamp: 1, status: 'accepted' });
  await until(() => call.state === 'active');
  controller.handleMetaEvent({ kind: 'call_status', pageId: '100', callId: 'meta-b-1', timestamp: 2, status: 'ringing' });
  t.equal(call.state, 'active', 'a ringing after the call was answered changes nothing');
  t.equal(incoming.ringingSent, 0, 'and sends no 180');
  t.same(metrics.refusedEvents, ['active/meta_ringing'], 'it is counted, with the state and the event');
  call.hangUp('test over');
  await call.done;
});

t.test('events after the end are refused: the teardown runs once', async (t) => {
  const events: CallEvent[] = ['invite', 'accept', 'answered', 'media_connected', 'refer', 'transfer_over', 'end'];
  for (const event of events) t.equal(nextCallState('ended', event), undefined, `ended refuses ${event}`);
  for (const event of events) t.equal(nextCallState('ending', event), undefined, `ending refuses ${event}`);
});
