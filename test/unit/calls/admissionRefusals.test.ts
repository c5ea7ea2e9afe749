/**
 * The controller with admission by load: a call refused for load gets Graph reject (consumer-initiated) or 503 with
 * Retry-After and a Reason (PBX INVITE), nothing is set up for it, the refusal is counted by reason and its summary
 * line says why; max_concurrent still refuses first; an admitted call goes ahead.
 */
import t from 'tap';
import pino from 'pino';
import { CallController } from '../../../src/calls/CallController.js';
import type { AdmissionPort, AdmissionVerdict } from '../../../src/calls/ports.js';
import {
  FakeGraph,
  FakeIncoming,
  FakeLegs,
  FakeMediaEngine,
  FakeSip,
  RecordingMetrics,
  connectEvent,
  controllerOptions,
  pollUntil,
} from '../../helpers/callFakes.js';

class FakeAdmission implements AdmissionPort {
  readonly retryAfterS = 9;
  verdict: AdmissionVerdict = { admit: true };
  asked: number[] = [];
  admit(activeCalls: number): AdmissionVerdict {
    this.asked.push(activeCalls);
    return this.verdict;
  }
}

const OVERLOADED: AdmissionVerdict = {
  admit: false,
  reason: 'event_loop_utilization',
  detail: 'event_loop_utilization on main 0.93 (limit 0.85)',
  retryAfterS: 9,
};

function rig(maxConcurrent = 10) {
  const lines: Array<Record<string, unknown>> = [];
  const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
  const sip = new FakeSip();
  const graph = new FakeGraph();
  const media = new FakeMediaEngine();
  const metrics = new RecordingMetrics();
  const admission = new FakeAdmission();
  const controller = new CallController({ sip, graph, media, legs: new FakeLegs(), metrics, admission, log, options: controllerOptions({ maxConcurrent }) });
  const summaries = (): Array<Record<string, unknown>> => lines.filter((l) => l.msg === 'call summary').map((l) => l.summary as Record<string, unknown>);
  return { sip, graph, media, metrics, admission, controller, summaries };
}

t.test('consumer-initiated call refused for load: Graph reject, no INVITE, counted, summary says why', async (t) => {
  const r = rig();
  r.admission.verdict = OVERLOADED;
  r.controller.handleMetaEvent(connectEvent('c-load'));
  await r.graph.waitFor('reject').promise;
  t.same(r.graph.calls, [{ action: 'reject', pageId: '100', callId: 'c-load' }], 'Meta is sent reject, nothing else');
  t.equal(r.sip.invites.length, 0, 'no INVITE to the PBX');
  t.equal(r.controller.registry.size, 0, 'no call held');
  t.same(r.metrics.refused, ['event_loop_utilization'], 'refusal counted by reason');
  t.same(r.metrics.ended, [{ direction: 'user_initiated', outcome: 'rejected_overload' }]);
  await pollUntil(() => r.summaries().length === 1 || undefined);
  t.match(r.summaries()[0], { direction: 'user_initiated', outcome: 'rejected_overload', reason: OVERLOADED.detail, metaCallId: 'c-load' });
});

t.test('PBX INVITE refused for load: 503 with Retry-After and a Reason, counted, summary says why', async (t) => {
  const r = rig();
  r.admission.verdict = OVERLOADED;
  const incoming = new FakeIncoming('555', '100');
  r.sip.safeEmit('invite', incoming);
  t.equal(await incoming.final.promise, 503);
  t.same(incoming.rejected, { status: 503, reason: 'bridge overloaded (event_loop_utilization)', retryAfterS: 9 });
  t.same(r.graph.calls, [], 'Meta is not asked anything');
  t.same(r.metrics.refused, ['event_loop_utilization']);
  t.match(r.summaries(), [{ direction: 'business_initiated', outcome: 'rejected_overload', sipStatus: 503, reason: OVERLOADED.detail }]);
});

t.test('max_concurrent refuses before load is asked, with Retry-After toward the PBX', async (t) => {
  const r = rig(0);
  const incoming = new FakeIncoming('555', '100');
  r.sip.safeEmit('invite', incoming);
  t.equal(await incoming.final.promise, 503);
  t.same(incoming.rejected, { status: 503, reason: 'bridge at capacity', retryAfterS: 9 });
  r.controller.handleMetaEvent(connectEvent('c-cap'));
  await r.graph.waitFor('reject').promise;
  t.same(r.admission.asked, [], 'the load decision is not asked when the hard cap refuses');
  t.same(r.metrics.refused, ['capacity', 'capacity']);
  t.same(r.metrics.ended.map((e) => e.outcome), ['rejected_capacity', 'rejected_capacity']);
});

t.test('an admitted call goes ahead; the decision is told how many calls are held', async (t) => {
  const r = rig();
  r.controller.handleMetaEvent(connectEvent('c-ok'));
  await r.sip.inviteArrived.promise;
  t.same(r.admission.asked, [0]);
  r.controller.handleMetaEvent(connectEvent('c-ok2'));
  await pollUntil(() => r.admission.asked.length === 2 || undefined);
  t.same(r.admission.asked, [0, 1]);
  t.same(r.metrics.refused, []);
  await r.controller.close();
});
