import t from 'tap';
import { Writable } from 'node:stream';
import { createLogger, callLogger, hashPsid, Metrics, buildAdminApp } from '../../../src/observability/index.js';
import type { CallMetricsSink } from '../../../src/calls/ports.js';

function capture(): { stream: Writable; lines: () => Record<string, unknown>[] } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      chunks.push(String(chunk));
      cb();
    },
  });
  return {
    stream,
    lines: () =>
      chunks
        .join('')
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

t.test('the logger redacts secrets wherever they sit', async (t) => {
  const out = capture();
  const log = createLogger({ level: 'debug', destination: out.stream });
  log.info(
    {
      access_token: 'tok-1',
      headers: { authorization: 'Bearer tok-2', 'x-hub-signature-256': 'sha256=abc' },
      config: { meta: { app_secret: 'sec-3', verify_token: 'vt-4' }, sip: { drachtio: { secret: 'dr-5' } } },
      req: { body: { password: 'pw-6' } },
      keep: 'visible',
    },
    'hello',
  );
  const text = JSON.stringify(out.lines());
  for (const secret of ['tok-1', 'tok-2', 'sha256=abc', 'sec-3', 'vt-4', 'dr-5', 'pw-6']) {
    t.notOk(text.includes(secret), `${secret} redacted`);
  }
  t.ok(text.includes('visible'));
  const line = out.lines()[0]!;
  t.equal(line.level, 'info');
  t.equal(line.msg, 'hello');
  t.equal(line.access_token, '[redacted]');
});

t.test('the level is honoured', async (t) => {
  const out = capture();
  const log = createLogger({ level: 'warn', destination: out.stream });
  log.info('dropped');
  log.warn('kept');
  t.same(
    out.lines().map((l) => l.msg),
    ['kept'],
  );
});

t.test('callLogger binds the call context and hashes the PSID on request', async (t) => {
  const out = capture();
  const log = createLogger({ destination: out.stream });
  callLogger(log, { callId: 'c1', direction: 'user_initiated', pageId: 'p1', psid: '5275811702471834' }).info('a');
  callLogger(log, { callId: 'c2', psid: '5275811702471834', hashPsid: true }).info('b');
  const [a, b] = out.lines();
  t.match(a, { callId: 'c1', direction: 'user_initiated', pageId: 'p1', psid: '5275811702471834', component: 'calls' });
  t.equal(b?.psid, hashPsid('5275811702471834'));
  t.not(b?.psid, '5275811702471834');
  t.match(String(b?.psid), /^[0-9a-f]{12}$/);
  t.not(hashPsid('1'), hashPsid('2'));
});

async function value(metrics: Metrics, name: string, labels: Record<string, string> = {}): Promise<number | undefined> {
  const metric = await metrics.registry.getSingleMetric(name)?.get();
  const found = metric?.values.find((v) =>
    Object.entries(labels).every(([k, want]) => String((v.labels as Record<string, unknown>)[k]) === want),
  );
  return found?.value;
}

t.test('metrics count what happened, per instance', async (t) => {
  const m = new Metrics();
  const other = new Metrics();
  m.callStarted('user_initiated');
  m.callStarted('user_initiated');
  m.callStarted('business_initiated');
  m.callEnded('user_initiated', 'completed', 12);
  m.webhook('connect', 'accepted');
  m.webhook('connect', 'duplicate');
  m.webhook('post', 'bad_signature');
  m.graphRequest('accept', 'error', 2018391, 0.2);
  m.graphRequest('accept', 'ok', '', 0.1);
  m.sipResponse('received', 486);
  m.mediaPackets('to_pbx', 50, 2);
  m.mediaJitter('to_pbx', 0.004);
  m.transcodingStarted();
  m.transcodingStarted();
  m.transcodingEnded();
  m.workerRestarted();
  m.drachtioConnection(true);
  m.permissionReply('granted');
  m.dtmf('to_messenger');
  m.transfer('succeeded');
  m.transfer('failed');
  m.transfer('failed');
  m.webhookToInvite(0.01);
  m.pbxAnswerToAccept(0.02);

  t.equal(await value(m, 'msb_calls_started_total', { direction: 'user_initiated' }), 2);
  t.equal(await value(m, 'msb_calls_active', { direction: 'user_initiated' }), 1);
  t.equal(await value(m, 'msb_calls_active', { direction: 'business_initiated' }), 1);
  t.equal(await value(m, 'msb_calls_ended_total', { direction: 'user_initiated', outcome: 'completed' }), 1);
  t.equal(await value(m, 'msb_webhooks_total', { event: 'connect', result: 'duplicate' }), 1);
  t.equal(await value(m, 'msb_graph_requests_total', { action: 'accept', result: 'error', code: '2018391' }), 1);
  t.equal(await value(m, 'msb_sip_responses_total', { direction: 'received', code: '486' }), 1);
  t.equal(await value(m, 'msb_media_packets_total', { direction: 'to_pbx' }), 50);
  t.equal(await value(m, 'msb_media_packets_lost_total', { direction: 'to_pbx' }), 2);
  t.equal(await value(m, 'msb_transcoding_sessions'), 1);
  t.equal(await value(m, 'msb_worker_restarts_total'), 1);
  t.equal(await value(m, 'msb_drachtio_connected'), 1);
  t.equal(await value(m, 'msb_permission_replies_total', { response: 'granted' }), 1);
  t.equal(await value(m, 'msb_dtmf_digits_total', { direction: 'to_messenger' }), 1);
  t.equal(await value(m, 'msb_transfers_total', { result: 'succeeded' }), 1);
  t.equal(await value(m, 'msb_transfers_total', { result: 'failed' }), 2);

  t.equal(await value(other, 'msb_calls_started_total', { direction: 'user_initiated' }), undefined, 'registries independent');

  const text = await m.text();
  for (const name of [
    'msb_setup_webhook_to_invite_seconds_count 1',
    'msb_setup_pbx_answer_to_accept_seconds_count 1',
    'msb_graph_request_seconds_count{action="accept"} 2',
    'msb_media_jitter_seconds_count{direction="to_pbx"} 1',
  ]) {
    t.ok(text.includes(name), name);
  }
});

t.test('admin app: /metrics, /healthz, /readyz', async (t) => {
  const metrics = new Metrics();
  metrics.callStarted('user_initiated');
  let state = { ready: false, checks: { drachtio: false, media: true } };
  const app = buildAdminApp({ metrics, readiness: () => state });
  t.teardown(() => app.close());

  const m = await app.inject({ method: 'GET', url: '/metrics' });
  t.equal(m.statusCode, 200);
  t.match(m.headers['content-type'], /^text\/plain/);
  t.match(m.body, /msb_calls_started_total\{direction="user_initiated"\} 1/);

  const h = await app.inject({ method: 'GET', url: '/healthz' });
  t.equal(h.statusCode, 200);

  const notReady = await app.inject({ method: 'GET', url: '/readyz' });
  t.equal(notReady.statusCode, 503);
  t.same(notReady.json(), state);

  state = { ready: true, checks: { drachtio: true, media: true } };
  const ready = await app.inject({ method: 'GET', url: '/readyz' });
  t.equal(ready.statusCode, 200);
  t.same(ready.json().checks, { drachtio: true, media: true });
});

t.test('a throwing readiness check means not ready', async (t) => {
  const app = buildAdminApp({
    metrics: new Metrics(),
    readiness: () => {
      throw new Error('boom');
    },
  });
  t.teardown(() => app.close());
  const r = await app.inject({ method: 'GET', url: '/readyz' });
  t.equal(r.statusCode, 503);
});

t.test('Metrics serves as the call controller\'s metrics sink', async (t) => {
  const sink: CallMetricsSink = new Metrics();
  sink.callStarted('business_initiated');
  sink.callEnded('business_initiated', 'rejected_no_permission', 0);
  sink.permissionReply('approve');
  sink.callEventRefused('active', 'meta_ringing');
  const text = await (sink as Metrics).text();
  t.match(text, /msb_call_events_refused_total\{state="active",event="meta_ringing"\} 1/);
  t.match(text, /msb_calls_ended_total\{direction="business_initiated",outcome="rejected_no_permission"\} 1/);
  t.match(text, /msb_calls_active\{direction="business_initiated"\} 0/);
});

t.test('admission metrics: every refusal reason exported from 0, load gauges follow the samples', async (t) => {
  const metrics = new Metrics();
  const zero = await metrics.text();
  for (const reason of ['capacity', 'setup_rate', 'event_loop_delay', 'event_loop_utilization', 'media_worker_cpu', 'late_audio', 'cpu_wait']) {
    t.match(zero, new RegExp(`msb_calls_refused_total\\{reason="${reason}"\\} 0`), `${reason} present at 0`);
  }
  metrics.callRefused('media_worker_cpu');
  metrics.callRefused('media_worker_cpu');
  metrics.load(new Map([['event_loop_utilization', 0.42]]), (kind) => (kind === 'late_audio' ? null : 0.85), true);
  const text = await metrics.text();
  t.match(text, /msb_calls_refused_total\{reason="media_worker_cpu"\} 2/);
  t.match(text, /msb_load\{signal="event_loop_utilization"\} 0.42/);
  t.notMatch(text, /msb_load\{signal="event_loop_delay"\}/, 'a signal without readings is absent, not 0');
  t.match(text, /msb_load_limit\{signal="event_loop_utilization"\} 0.85/);
  t.notMatch(text, /msb_load_limit\{signal="late_audio"\}/, 'an unwatched signal has no limit');
  t.match(text, /msb_admission_refusing 1/);
  metrics.load(new Map(), () => 0.85, false);
  t.match(await metrics.text(), /msb_admission_refusing 0/);
});
