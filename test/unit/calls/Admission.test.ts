/**
 * Admission by load, decided from injected readings on an injected clock: which signal refuses, that one bad sample
 * does not, that refusing stops only once the load stayed low (hysteresis), bursts (setup rate, projection).
 */
import t from 'tap';
import { Admission, type AdmissionLimits } from '../../../src/calls/Admission.js';
import type { AdmissionVerdict, LoadReading, LoadSignalKind } from '../../../src/calls/ports.js';

const SAMPLE_MS = 500;

/** An Admission on a clock the test moves, fed one sample at a time. */
function rig(limits: Partial<AdmissionLimits> = {}) {
  let now = 0;
  const admission = new Admission({ maxSetupsPerSecond: null, smoothingMs: 0, ...limits }, () => now);
  return {
    admission,
    /** One sample of these readings, SAMPLE_MS after the previous one. */
    sample(readings: LoadReading[]): void {
      now += SAMPLE_MS;
      admission.observe(readings, SAMPLE_MS);
    },
    advance(ms: number): void {
      now += ms;
    },
  };
}

const reading = (kind: LoadSignalKind, value: number, source = 'main'): LoadReading => ({ kind, source, value });
const refused = (v: AdmissionVerdict): string | undefined => (v.admit ? undefined : v.reason);

t.test('each signal over its limit refuses with its own reason, a Retry-After and a detail naming where', async (t) => {
  const cases: Array<[LoadSignalKind, number, string]> = [
    ['event_loop_delay', 80, 'main'],
    ['event_loop_utilization', 0.95, 'main'],
    ['media_worker_cpu', 0.97, 'mediasoup-worker-1'],
    ['late_audio', 12, 'all calls'],
    ['cpu_wait', 0.6, 'media-thread-0'],
  ];
  for (const [kind, value, source] of cases) {
    const r = rig({ retryAfterS: 7 });
    r.sample([reading(kind, value, source)]);
    r.sample([reading(kind, value, source)]);
    const verdict = r.admission.admit(4);
    t.equal(refused(verdict), kind, `${kind} refuses`);
    if (!verdict.admit) {
      t.equal(verdict.retryAfterS, 7, `${kind}: Retry-After from the config`);
      t.match(verdict.detail, new RegExp(`${kind} on ${source} .* \\(limit `), `${kind}: detail "${verdict.detail}"`);
    }
    const status = r.admission.status();
    t.ok(status.refusing, `${kind}: status says refusing`);
    t.same(status.reasons, [kind], `${kind}: status names the reason`);
  }
});

t.test('under every limit, calls are admitted', async (t) => {
  const r = rig();
  for (let i = 0; i < 10; i++) {
    r.sample([
      reading('event_loop_delay', 3),
      reading('event_loop_utilization', 0.3),
      reading('media_worker_cpu', 0.2, 'mediasoup-worker-0'),
      reading('late_audio', 0),
      reading('cpu_wait', 0.1),
    ]);
  }
  t.ok(r.admission.admit(10).admit);
  t.notOk(r.admission.status().refusing);
});

t.test('one slow sample (a GC pause) does not refuse; a lasting one does', async (t) => {
  const r = rig({ tripSamples: 2 });
  r.sample([reading('event_loop_delay', 5)]);
  r.sample([reading('event_loop_delay', 300)]);
  t.ok(r.admission.admit(1).admit, 'one sample above the limit: still admitted');
  r.sample([reading('event_loop_delay', 5)]);
  r.sample([reading('event_loop_delay', 300)]);
  t.ok(r.admission.admit(1).admit, 'isolated spikes never trip');
  r.sample([reading('event_loop_delay', 300)]);
  t.equal(refused(r.admission.admit(1)), 'event_loop_delay', 'two in a row trip');
});

t.test('smoothing: a single spike moves the average only part of the way', async (t) => {
  const r = rig({ smoothingMs: 1500, tripSamples: 1, maxEventLoopDelayMs: 40 });
  for (let i = 0; i < 6; i++) r.sample([reading('event_loop_delay', 2)]);
  r.sample([reading('event_loop_delay', 100)]);
  const value = r.admission.status().signals[0]!.value;
  t.ok(value > 2 && value < 40, `smoothed ${value.toFixed(1)} ms after one 100 ms sample`);
  t.ok(r.admission.admit(1).admit);
  for (let i = 0; i < 6; i++) r.sample([reading('event_loop_delay', 100)]);
  t.equal(refused(r.admission.admit(1)), 'event_loop_delay', 'a lasting rise crosses the limit');
});

t.test('hysteresis: refusing stops only after the load stayed below the clear level for clear_after_ms', async (t) => {
  const r = rig({ maxEventLoopUtilization: 0.8, clearRatio: 0.8, clearAfterMs: 2000 });
  r.sample([reading('event_loop_utilization', 0.9)]);
  r.sample([reading('event_loop_utilization', 0.9)]);
  t.equal(refused(r.admission.admit(5)), 'event_loop_utilization');
  // Just under the limit but above 0.8 x 0.8: still refusing (no flapping at the edge).
  for (let i = 0; i < 10; i++) r.sample([reading('event_loop_utilization', 0.75)]);
  t.equal(refused(r.admission.admit(5)), 'event_loop_utilization', 'just under the limit: still refusing');
  // Below the clear level, but not for long enough.
  r.sample([reading('event_loop_utilization', 0.5)]);
  r.sample([reading('event_loop_utilization', 0.5)]);
  t.equal(refused(r.admission.admit(5)), 'event_loop_utilization', 'below the clear level for 500 ms: still refusing');
  // A bounce above the clear level restarts the wait.
  r.sample([reading('event_loop_utilization', 0.7)]);
  for (let i = 0; i < 4; i++) r.sample([reading('event_loop_utilization', 0.5)]);
  t.equal(refused(r.admission.admit(5)), 'event_loop_utilization', 'the wait restarts after a bounce');
  r.sample([reading('event_loop_utilization', 0.5)]);
  t.ok(r.admission.admit(5).admit, 'below the clear level for 2 s: admitting again');
  t.notOk(r.admission.status().refusing);
});

t.test('each thread and worker is judged on its own: one busy media thread refuses', async (t) => {
  const r = rig();
  for (let i = 0; i < 2; i++) {
    r.sample([
      reading('event_loop_utilization', 0.2, 'main'),
      reading('event_loop_utilization', 0.95, 'media-thread-1'),
      reading('event_loop_utilization', 0.3, 'media-thread-2'),
    ]);
  }
  const verdict = r.admission.admit(3);
  t.equal(refused(verdict), 'event_loop_utilization');
  t.match(verdict.admit ? '' : verdict.detail, /media-thread-1/, 'the detail names the busy thread');
});

t.test('a source that stops reporting (a dead worker) is forgotten', async (t) => {
  const r = rig();
  r.sample([reading('media_worker_cpu', 0.99, 'mediasoup-worker-0')]);
  r.sample([reading('media_worker_cpu', 0.99, 'mediasoup-worker-0')]);
  t.equal(refused(r.admission.admit(1)), 'media_worker_cpu');
  r.sample([reading('media_worker_cpu', 0.1, 'mediasoup-worker-1')]);
  t.ok(r.admission.admit(1).admit, 'the replaced worker no longer counts');
});

t.test('waiting for a CPU: refuses at the default limit (0.3 of the time), clears below 0.8 of it after clear_after_ms', async (t) => {
  const r = rig({ clearAfterMs: 1000 });
  r.sample([reading('cpu_wait', 0.25, 'media-thread-1')]);
  r.sample([reading('cpu_wait', 0.25, 'media-thread-1')]);
  t.ok(r.admission.admit(1).admit, 'a quarter of the time waiting: admitted');
  r.sample([reading('cpu_wait', 0.45, 'media-thread-1')]);
  r.sample([reading('cpu_wait', 0.45, 'media-thread-1')]);
  const verdict = r.admission.admit(1);
  t.equal(refused(verdict), 'cpu_wait', 'lasting waits over the limit refuse');
  if (!verdict.admit) t.match(verdict.detail, /cpu_wait on media-thread-1 45 % of the time waiting for a CPU \(limit 30 %/);
  r.sample([reading('cpu_wait', 0.26, 'media-thread-1')]);
  r.sample([reading('cpu_wait', 0.26, 'media-thread-1')]);
  r.sample([reading('cpu_wait', 0.26, 'media-thread-1')]);
  t.equal(refused(r.admission.admit(1)), 'cpu_wait', 'under the limit but over 0.8 of it: still refusing');
  r.sample([reading('cpu_wait', 0.1, 'media-thread-1')]);
  r.sample([reading('cpu_wait', 0.1, 'media-thread-1')]);
  r.sample([reading('cpu_wait', 0.1, 'media-thread-1')]);
  t.ok(r.admission.admit(1).admit, 'well under it for clear_after_ms: admitted again');
});

t.test('a limit set to null is not watched; enabled false admits everything', async (t) => {
  {
    const r = rig({ maxLatePacketsPerSecond: null });
    for (let i = 0; i < 4; i++) r.sample([reading('late_audio', 500)]);
    t.ok(r.admission.admit(1).admit, 'late audio not watched');
  }
  {
    const r = rig({ maxCpuWait: null });
    for (let i = 0; i < 4; i++) r.sample([reading('cpu_wait', 0.9)]);
    t.ok(r.admission.admit(1).admit, 'waiting for a CPU not watched');
  }
  {
    const r = rig({ enabled: false, maxSetupsPerSecond: 1 });
    for (let i = 0; i < 4; i++) r.sample([reading('event_loop_delay', 500)]);
    t.ok([1, 2, 3].every(() => r.admission.admit(1).admit), 'disabled: admitted');
    t.notOk(r.admission.status().refusing, 'disabled: readiness is not affected');
  }
});

t.test('setup rate: a burst beyond max_setups_per_second is refused, the bucket refills with time', async (t) => {
  const r = rig({ maxSetupsPerSecond: 5 });
  const verdicts = Array.from({ length: 8 }, (_, i) => r.admission.admit(i));
  t.same(verdicts.map(refused), [undefined, undefined, undefined, undefined, undefined, 'setup_rate', 'setup_rate', 'setup_rate']);
  t.notOk(r.admission.status().refusing, 'a setup-rate refusal is per call, not a readiness state');
  r.advance(400);
  t.same([r.admission.admit(5), r.admission.admit(6), r.admission.admit(7)].map(refused), [undefined, undefined, 'setup_rate'], '2 tokens back after 400 ms');
});

t.test('projection: calls admitted but not yet in the signals count at the settled calls average', async (t) => {
  const r = rig({ maxEventLoopUtilization: 0.8, settleMs: 3000 });
  // 4 settled calls at 0.4: 0.1 each.
  r.sample([reading('event_loop_utilization', 0.4)]);
  r.sample([reading('event_loop_utilization', 0.4)]);
  t.ok(r.admission.admit(4).admit, '5th call: 0.5 projected');
  t.ok(r.admission.admit(5).admit, '6th call: 0.6 projected');
  t.ok(r.admission.admit(6).admit, '7th call: 0.7 projected');
  t.ok(r.admission.admit(7).admit, '8th call: 0.8 projected');
  const verdict = r.admission.admit(8);
  t.equal(refused(verdict), 'event_loop_utilization', '9th call: 0.9 projected, refused before the signal rose');
  t.match(verdict.admit ? '' : verdict.detail, /projected/);
  t.notOk(r.admission.status().refusing, 'no signal is over its limit ...');
  t.match(r.admission.status(8), { refusing: true, reasons: ['event_loop_utilization'], detail: /projected/ }, '... but readiness, told the calls held, says the next call would be refused');
  // Once those calls are in the signal, the projection is the measurement itself.
  r.advance(3000);
  r.sample([reading('event_loop_utilization', 0.6)]);
  r.sample([reading('event_loop_utilization', 0.6)]);
  t.ok(r.admission.admit(8).admit, 'settled: 8 calls at 0.6 leave room for a 9th (0.675)');
});

t.test('projection does not apply to delay or late audio (not proportional to calls), nor without settled calls', async (t) => {
  const r = rig({ maxEventLoopDelayMs: 40, maxEventLoopUtilization: 0.8 });
  r.sample([reading('event_loop_delay', 30), reading('event_loop_utilization', 0.7)]);
  t.ok(r.admission.admit(0).admit, 'no settled call: nothing to project from');
  t.ok(r.admission.admit(1).admit, 'all calls recent: nothing to project from');
});

t.test('reload: new limits apply at once, the smoothed signals are kept', async (t) => {
  const r = rig({ maxEventLoopUtilization: 0.9 });
  r.sample([reading('event_loop_utilization', 0.7)]);
  r.sample([reading('event_loop_utilization', 0.7)]);
  t.ok(r.admission.admit(20).admit);
  r.admission.configure({ maxEventLoopUtilization: 0.5, maxSetupsPerSecond: null, smoothingMs: 0 });
  r.sample([reading('event_loop_utilization', 0.7)]);
  r.sample([reading('event_loop_utilization', 0.7)]);
  t.equal(refused(r.admission.admit(20)), 'event_loop_utilization');
  t.equal(r.admission.limitOf('event_loop_utilization'), 0.5);
});

t.test('non-finite readings are ignored', async (t) => {
  const r = rig();
  r.sample([reading('event_loop_delay', Number.NaN)]);
  r.sample([reading('event_loop_delay', Number.POSITIVE_INFINITY)]);
  t.ok(r.admission.admit(1).admit);
  t.same(r.admission.status().signals, []);
});

/** Media threads as admission sees them, with the reservations it makes (placed on the next call's leg). */
function places(spec: Array<{ carrying: number; pending?: number; ready?: boolean }>) {
  const state = spec.map((p, index) => ({ index, source: `media-thread-${index}`, ready: p.ready ?? true, carrying: p.carrying, pending: p.pending ?? 0 }));
  const reserved: number[] = [];
  return {
    state,
    reserved,
    places: {
      places: () => state.map((p) => ({ ...p, pending: p.pending + reserved.filter((i) => i === p.index).length })),
      reserve: (index: number) => void reserved.push(index),
    },
  };
}

t.test('with media threads: calls put on a thread since its last report count as load to come, until none has room', async (t) => {
  const r = rig({ maxEventLoopUtilization: 0.7 });
  // Two threads, each carrying 2 calls at 0.2 (0.1 a call); their next reports are late.
  const p = places([{ carrying: 2 }, { carrying: 2 }]);
  r.admission.usePlaces(p.places);
  r.sample([reading('event_loop_utilization', 0.2, 'media-thread-0'), reading('event_loop_utilization', 0.2, 'media-thread-1'), reading('event_loop_utilization', 0.1)]);
  const verdicts = Array.from({ length: 12 }, () => r.admission.admit(4));
  // Each thread has room for 5 more (0.2 + 5 x 0.1 = 0.7): 10 admitted, shared out, the rest refused.
  t.equal(verdicts.filter((v) => v.admit).length, 10, 'as many admitted as the two threads have room for, on stale reports');
  t.same([p.reserved.filter((i) => i === 0).length, p.reserved.filter((i) => i === 1).length], [5, 5], 'each call reserved on the thread with the most headroom');
  const last = verdicts.at(-1)!;
  t.equal(refused(last), 'event_loop_utilization', 'then refused by the threads\' load');
  if (!last.admit) t.match(last.detail, /event_loop_utilization on media-thread-\d 0\.20 with 2 calls, 0\.80 projected with 6 more \(limit 0\.70\)/, last.detail);
  t.ok(r.admission.status(14).refusing, 'readiness says refusing while no thread has room');
});

t.test('with media threads: a thread over its limit closes that thread only; the call goes to the other', async (t) => {
  const r = rig({ maxEventLoopUtilization: 0.7 });
  const p = places([{ carrying: 6 }, { carrying: 1 }]);
  r.admission.usePlaces(p.places);
  for (let i = 0; i < 2; i++) r.sample([reading('event_loop_utilization', 0.9, 'media-thread-0'), reading('event_loop_utilization', 0.15, 'media-thread-1')]);
  t.ok(r.admission.admit(7).admit, 'admitted while one thread has room');
  t.same(p.reserved, [1], 'on the thread with room');
  t.notOk(r.admission.status().refusing, 'not refusing while a thread has room');
  // A thread that carries no call yet costs what a call costs elsewhere (0.15 a call on thread 1).
  p.state[1]!.carrying = 0;
  p.reserved.length = 0;
  r.sample([reading('event_loop_utilization', 0.9, 'media-thread-0'), reading('event_loop_utilization', 0.05, 'media-thread-1')]);
  const admitted = Array.from({ length: 6 }, () => r.admission.admit(7)).filter((v) => v.admit).length;
  t.equal(admitted, 4, 'an idle thread takes the calls a learned per-call cost leaves room for (0.05 + 4 x 0.15 <= 0.7)');
  // The main thread over its limit closes every thread.
  for (let i = 0; i < 2; i++) r.sample([reading('event_loop_utilization', 0.1, 'media-thread-0'), reading('event_loop_utilization', 0.1, 'media-thread-1'), reading('event_loop_delay', 90)]);
  t.equal(refused(r.admission.admit(7)), 'event_loop_delay', "the main thread's own signal refuses on every thread");
});

t.test('with media threads about as free as each other, the call goes to the one carrying the fewest calls', async (t) => {
  const r = rig({ maxEventLoopUtilization: 0.7 });
  const p = places([{ carrying: 1 }, { carrying: 0 }]);
  r.admission.usePlaces(p.places);
  r.sample([reading('event_loop_utilization', 0.02, 'media-thread-0'), reading('event_loop_utilization', 0.01, 'media-thread-1')]);
  p.state[0]!.carrying = 0;
  t.ok(r.admission.admit(0).admit && r.admission.admit(1).admit && r.admission.admit(2).admit, 'admitted');
  t.same(p.reserved, [0, 1, 0], 'idle threads take calls in turn');
});

t.test('with media threads, a thread found full takes calls again only with clearRatio of headroom (no flapping at the limit)', async (t) => {
  const r = rig({ maxEventLoopUtilization: 0.7, clearRatio: 0.8 });
  const p = places([{ carrying: 6 }]);
  r.admission.usePlaces(p.places);
  r.sample([reading('event_loop_utilization', 0.66, 'media-thread-0')]);
  t.equal(refused(r.admission.admit(6)), 'event_loop_utilization', 'full: 0.66 + 0.11 over 0.7');
  r.sample([reading('event_loop_utilization', 0.55, 'media-thread-0')]);
  p.state[0]!.carrying = 5;
  t.equal(refused(r.admission.admit(5)), 'event_loop_utilization', 'one call fewer (0.55 + 0.11 = 0.66): still refused, above 0.8 x 0.7');
  t.ok(r.admission.status(5).refusing, 'and readiness says so');
  r.sample([reading('event_loop_utilization', 0.4, 'media-thread-0')]);
  p.state[0]!.carrying = 4;
  t.ok(r.admission.admit(4).admit, 'taken again once 0.4 + 0.1 = 0.5 is under 0.56');
});
