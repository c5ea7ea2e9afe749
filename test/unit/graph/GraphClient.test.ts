import t from 'tap';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { GraphError } from '../../../src/core/errors.js';
import { createHmac } from 'node:crypto';
import { parseConfigText } from '../../../src/config/index.js';
import { GraphClient, appSecretProof, graphClientFromConfig, parsePermission, type GraphClientOptions } from '../../../src/graph/index.js';
import { Metrics } from '../../../src/observability/index.js';
import { createGraphSimulator, type GraphSimulatorOptions } from '../../../src/simulator/graph/index.js';

const PAGE = '106378625516323';
const PSID = '5275811702471834';
const TOKEN = 'EAAG-page-token-secret';

/** A browser-style offer, enough for Meta's checks. */
const OFFER = [
  'v=0',
  'o=- 4611731400430051336 2 IN IP4 127.0.0.1',
  's=-',
  't=0 0',
  'a=group:BUNDLE 0',
  'm=audio 9 UDP/TLS/RTP/SAVPF 111 0 8',
  'c=IN IP4 0.0.0.0',
  'a=ice-ufrag:abcd',
  'a=ice-pwd:abcdefghijklmnopqrstuvwx',
  'a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF',
  'a=setup:actpass',
  'a=mid:0',
  'a=rtcp-mux',
  'a=rtpmap:111 opus/48000/2',
  '',
].join('\r\n');

interface Seen {
  method: string;
  url: string;
  authorization?: string;
  body: unknown;
}

async function setup(
  t: { teardown: (fn: () => unknown) => void },
  opts: { sim?: Partial<GraphSimulatorOptions>; client?: Partial<GraphClientOptions> } = {},
) {
  const sim = createGraphSimulator({ pages: { [PAGE]: TOKEN }, ...opts.sim });
  const seen: Seen[] = [];
  sim.app.addHook('preHandler', async (req) => {
    seen.push({ method: req.method, url: req.url, authorization: req.headers.authorization, body: req.body });
  });
  const address = await sim.app.listen({ host: '127.0.0.1', port: 0 });
  const logLines: string[] = [];
  const log = pino(
    { level: 'debug' },
    new Writable({
      write(chunk, _e, cb) {
        logLines.push(String(chunk));
        cb();
      },
    }),
  );
  const metrics = new Metrics();
  const client = new GraphClient({
    baseUrl: address,
    version: 'v23.0',
    pages: new Map([[PAGE, TOKEN]]),
    timeoutMs: 2000,
    log,
    metrics,
    retry: { attempts: 3, baseDelayMs: 10, maxDelayMs: 50 },
    ...opts.client,
  });
  t.teardown(() => sim.close());
  return { sim, client, seen, logLines, metrics, address };
}

async function graphError(p: Promise<unknown>): Promise<GraphError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof GraphError) return err;
    throw err;
  }
  throw new Error('expected a GraphError');
}

t.test('accept sends Meta\'s body with a bearer token and returns the answer', async (t) => {
  const { sim, client, seen, logLines } = await setup(t);
  const callId = sim.startConsumerCall({ pageId: PAGE, psid: PSID });
  const accepted: string[] = [];
  sim.events.on('accept', (e) => accepted.push(e.sdp));
  const result = await client.accept(PAGE, callId, OFFER);
  t.match(result.sdpAnswer, /^v=0\r\n/);
  t.match(result.sdpAnswer, /a=ice-lite/);
  t.equal(result.sdpRenegotiation, undefined);
  t.same(accepted, [OFFER]);
  t.equal(sim.calls.get(callId)?.state, 'accepted');
  t.equal(seen.length, 1);
  t.equal(seen[0]!.method, 'POST');
  t.equal(seen[0]!.url, `/v23.0/${PAGE}/calls`);
  t.equal(seen[0]!.authorization, `Bearer ${TOKEN}`);
  t.same(seen[0]!.body, { platform: 'messenger', call_id: callId, action: 'accept', session: { sdp_type: 'offer', sdp: OFFER } });
  t.notOk(logLines.join('').includes(TOKEN), 'token never logged');
});

t.test('accept reads sdp_response and sdp_renegotiation in both shapes', async (t) => {
  const { sim, client } = await setup(t, { sim: { acceptAnswerShape: 'object' } });
  const callId = sim.startConsumerCall({ pageId: PAGE, psid: PSID });
  const objectShape = await client.accept(PAGE, callId, OFFER);
  t.match(objectShape.sdpAnswer, /a=ice-lite/);

  sim.failNext('accept', { status: 200, body: { success: true, session: { sdp_response: 'v=0\r\nanswer', sdp_renegotiation: { sdp_type: 'offer', sdp: 'v=0\r\nreoffer' } } } });
  t.same(await client.accept(PAGE, 'any', OFFER), { sdpAnswer: 'v=0\r\nanswer', sdpRenegotiation: 'v=0\r\nreoffer' });
  sim.failNext('accept', { status: 200, body: { success: true, session: { sdp_response: { sdp_type: 'answer', sdp: 'v=0\r\na' }, sdp_renegotiation: 'v=0\r\nb' } } });
  t.same(await client.accept(PAGE, 'any', OFFER), { sdpAnswer: 'v=0\r\na', sdpRenegotiation: 'v=0\r\nb' });
  sim.failNext('accept', { status: 200, body: { success: true } });
  t.equal((await graphError(client.accept(PAGE, 'any', OFFER))).code, 'GRAPH_BAD_RESPONSE');
});

t.test('Meta errors become GraphErrors with clear codes', async (t) => {
  const { sim, client } = await setup(t);
  const callId = sim.startConsumerCall({ pageId: PAGE, psid: PSID });

  const unknown = await graphError(client.accept(PAGE, 'c_unknown', OFFER));
  t.equal(unknown.code, 'GRAPH_CALL_NOT_FOUND');
  t.equal(unknown.metaCode, 2018389);
  t.equal(unknown.httpStatus, 400);
  t.equal(unknown.retryable, false);
  t.ok(unknown.fbtraceId);
  t.match(unknown.message, /2018389/);

  const badSdp = await graphError(client.accept(PAGE, callId, 'v=0\r\nm=audio 9 RTP/AVP 0\r\n'));
  t.equal(badSdp.code, 'GRAPH_CALL_INVALID_SDP');
  t.match(badSdp.message, /fingerprint/);

  await client.accept(PAGE, callId, OFFER);
  t.equal((await graphError(client.accept(PAGE, callId, OFFER))).code, 'GRAPH_CALL_ALREADY_ACCEPTED');
  t.equal((await graphError(client.reject(PAGE, callId))).code, 'GRAPH_CALL_ALREADY_ACCEPTED');
  await client.terminate(PAGE, callId);
  t.equal((await graphError(client.terminate(PAGE, callId))).code, 'GRAPH_CALL_ENDED');

  const other = new GraphClient({ baseUrl: (await setup(t)).address, version: 'v23.0', pages: () => 'wrong-token', timeoutMs: 1000, log: pino({ level: 'silent' }) });
  const bad = await graphError(other.reject(PAGE, callId));
  t.equal(bad.code, 'GRAPH_BAD_TOKEN');
  t.equal(bad.metaCode, 190);

  const noPage = await graphError(client.reject('42', callId));
  t.equal(noPage.code, 'GRAPH_UNKNOWN_PAGE');
});

t.test('accept after the 60 s window (shortened here) fails, and Meta ends the call', async (t) => {
  const { sim, client } = await setup(t, { sim: { acceptDeadlineMs: 100 } });
  const callId = sim.startConsumerCall({ pageId: PAGE, psid: PSID });
  const [ended] = await sim.events.waitFor('terminate', AbortSignal.timeout(2000));
  t.equal(ended.callId, callId);
  t.equal(ended.by, 'timeout');
  t.equal(ended.call.endReason, 'Not Answered');
  t.equal(ended.duration, undefined);
  t.equal((await graphError(client.accept(PAGE, callId, OFFER))).code, 'GRAPH_CALL_ENDED');
});

t.test('reject and terminate are retried on 5xx and timeouts', async (t) => {
  const { sim, client, seen, metrics } = await setup(t, { client: { timeoutMs: 1000 } });
  const callId = sim.startConsumerCall({ pageId: PAGE, psid: PSID });
  sim.failNext('reject', { status: 500 });
  sim.failNext('reject', { delayMs: 2500 });
  await client.reject(PAGE, callId);
  t.equal(seen.filter((s) => (s.body as { action?: string }).action === 'reject').length, 3);
  t.equal(sim.calls.get(callId)?.state, 'rejected');
  const m = await metrics.registry.getSingleMetric('msb_graph_requests_total')?.get();
  const count = (result: string) => m?.values.filter((v) => v.labels.action === 'reject' && v.labels.result === result).reduce((a, v) => a + v.value, 0);
  t.equal(count('error'), 1);
  t.equal(count('timeout'), 1);
  t.equal(count('ok'), 1);
});

t.test('retries stop at the attempt limit', async (t) => {
  const { sim, client, seen } = await setup(t);
  for (let i = 0; i < 5; i++) sim.failNext('terminate', { status: 502 });
  const err = await graphError(client.terminate(PAGE, 'c_x'));
  t.equal(err.code, 'GRAPH_META_SERVICE', 'the simulator answers Meta\'s transient code 2');
  t.equal(err.httpStatus, 502);
  t.equal(err.retryable, true);
  t.equal(seen.length, 3);
});

t.test('retries stop at the deadline', async (t) => {
  const { sim, client, seen } = await setup(t, { client: { retry: { attempts: 10, baseDelayMs: 100, maxDelayMs: 100, deadlineMs: 120 } } });
  for (let i = 0; i < 10; i++) sim.failNext('reject', { status: 500 });
  const err = await graphError(client.reject(PAGE, 'c'));
  t.equal(err.retryable, true);
  t.ok(seen.length >= 1 && seen.length <= 3, `${seen.length} attempts within the deadline, not 10`);
});

t.test('accept and connect are never retried after Meta may have acted', async (t) => {
  const { sim, client, seen } = await setup(t, { client: { timeoutMs: 1000 } });
  const callId = sim.startConsumerCall({ pageId: PAGE, psid: PSID });
  sim.failNext('accept', { status: 503, body: '<html>upstream unavailable</html>' });
  const err = await graphError(client.accept(PAGE, callId, OFFER));
  t.equal(err.code, 'GRAPH_SERVER_ERROR');
  t.equal(err.retryable, true);
  t.equal(seen.length, 1);
  t.equal(sim.calls.get(callId)?.state, 'ringing');

  sim.failNext('connect', { delayMs: 2500 });
  const timeout = await graphError(client.connect(PAGE, PSID, OFFER));
  t.equal(timeout.code, 'GRAPH_TIMEOUT');
  t.equal(timeout.retryable, true);
  t.equal(timeout.httpStatus, 0);
  t.equal(seen.length, 2);
});

t.test('a lost response is not retried for accept, but is for terminate', async (t) => {
  const { sim, client, seen } = await setup(t);
  const callId = sim.startConsumerCall({ pageId: PAGE, psid: PSID });
  sim.failNext('accept', { drop: true });
  const lost = await graphError(client.accept(PAGE, callId, OFFER));
  t.equal(lost.code, 'GRAPH_NETWORK');
  t.equal(lost.retryable, true, 'the caller may decide; the client did not');
  t.equal(seen.length, 1);
  sim.failNext('terminate', { drop: true });
  await client.terminate(PAGE, 'c_any').catch(() => undefined);
  t.equal(seen.filter((s) => (s.body as { action?: string }).action === 'terminate').length, 2, 'terminate retried once the connection dropped');
});

t.test('a refused connection is retried for accept (the request never left)', async (t) => {
  // A port with nothing listening: every attempt is refused.
  const { address, sim } = await setup(t);
  await sim.close();
  const client = new GraphClient({ baseUrl: address, version: 'v23.0', pages: new Map([[PAGE, TOKEN]]), timeoutMs: 500, log: pino({ level: 'silent' }), retry: { attempts: 2, baseDelayMs: 5 } });
  const err = await graphError(client.accept(PAGE, 'c', OFFER));
  t.equal(err.code, 'GRAPH_NETWORK');
  t.equal(err.retryable, true);
});

t.test('rate limits are reported retryable but not hammered', async (t) => {
  const { sim, client, seen } = await setup(t);
  sim.failNext('terminate', { status: 400, body: { error: { message: 'Application request limit reached', type: 'OAuthException', code: 4, fbtrace_id: 'x' } } });
  const err = await graphError(client.terminate(PAGE, 'c'));
  t.equal(err.code, 'GRAPH_RATE_LIMITED');
  t.equal(err.retryable, true);
  t.equal(seen.length, 1);
});

t.test('the caller\'s signal aborts at once, without retries', async (t) => {
  const { sim, client, seen } = await setup(t);
  sim.failNext('check_permission', { delayMs: 3000 });
  const started = Date.now();
  const err = await graphError(client.checkPermission(PAGE, PSID, AbortSignal.timeout(50)));
  t.equal(err.code, 'GRAPH_ABORTED');
  t.ok(Date.now() - started < 2500, 'did not wait for the server');
  t.equal(seen.length, 1);
});

t.test('connect: permission enforced, call id and answer returned', async (t) => {
  const { sim, client, seen } = await setup(t);
  sim.setPermission(PAGE, PSID, 'no_permission');
  const denied = await graphError(client.connect(PAGE, PSID, OFFER));
  t.equal(denied.code, 'GRAPH_CALL_PERMISSION_MISSING');
  t.equal(denied.metaCode, 2018391);

  sim.setPermission(PAGE, PSID, 'has_permission');
  const connected: string[] = [];
  sim.events.on('connect', (e) => connected.push(e.callId));
  const result = await client.connect(PAGE, PSID, OFFER);
  t.match(result.callId, /^c_/);
  t.match(result.sdpAnswer, /a=ice-lite/);
  t.same(connected, [result.callId]);
  t.same(seen.at(-1)!.body, { platform: 'messenger', to: PSID, action: 'connect', session: { sdp_type: 'offer', sdp: OFFER } });
  t.equal(sim.calls.get(result.callId)?.direction, 'business_initiated');
});

t.test('mediaUpdate sends versions, tracks and the optional offer', async (t) => {
  const { sim, client, seen } = await setup(t);
  const { callId } = await client.connect(PAGE, PSID, OFFER);
  const plain = await client.mediaUpdate(PAGE, callId, { fromVersion: 1, toVersion: 2, tracks: [{ msid: 'm1', label: 'default_audio', status: 'disabled' }] });
  t.same(plain, {});
  t.same(seen.at(-1)!.body, {
    platform: 'messenger',
    call_id: callId,
    action: 'media_update',
    from_version: 1,
    to_version: 2,
    tracks: [{ msid: 'm1', label: 'default_audio', status: 'disabled' }],
  });
  const withOffer = await client.mediaUpdate(PAGE, callId, { fromVersion: 2, toVersion: 3, tracks: [{ label: 'default_audio', status: 'enabled' }], sdpOffer: OFFER });
  t.match(withOffer.sdpAnswer, /a=ice-lite/);
});

t.test('checkPermission reads Meta\'s documented answer', async (t) => {
  const { sim, client, seen } = await setup(t);
  t.equal((await client.checkPermission(PAGE, PSID)).canCall, true, 'default permission');
  t.equal(seen[0]!.url, `/v23.0/${PAGE}/messenger_call_permissions?psid=${PSID}`);
  t.notOk(seen[0]!.url.includes(TOKEN));
  sim.setPermission(PAGE, PSID, 'no_permission');
  t.equal((await client.checkPermission(PAGE, PSID)).canCall, false);
  const expires = Math.floor(Date.now() / 1000) + 3600;
  sim.setPermission(PAGE, PSID, 'temporary_permission', expires);
  const temp = await client.checkPermission(PAGE, PSID);
  t.equal(temp.canCall, true);
  t.equal(temp.expiresAt, expires);
});

t.test('parsePermission tolerates the shapes it documents', async (t) => {
  const now = 1_700_000_000;
  t.equal(parsePermission({ permission: { status: 'no_permission' } }, now).canCall, false);
  t.equal(parsePermission({ permission: { status: 'has_permission' } }, now).canCall, true);
  t.equal(parsePermission({ permission: { status: 'has_permission' }, actions: [{ action_name: 'start_call', can_perform: false }] }, now).canCall, false, 'actions decide');
  t.equal(parsePermission({ data: [{ permission_status: 'granted', expiration_time: now + 10 }] }, now).canCall, true);
  t.equal(parsePermission({ data: [{ status: 'GRANTED', expiration_time: now - 10 }] }, now).canCall, false, 'expired');
  t.equal(parsePermission({ data: [] }, now).canCall, false);
  t.equal(parsePermission('nonsense', now).canCall, false);
});

t.test('requestPermission sends the calling_optin template, limited to 2 a day', async (t) => {
  const { sim, client, seen } = await setup(t);
  const requests: string[] = [];
  sim.events.on('permission_request', (e) => requests.push(e.psid));
  await client.requestPermission(PAGE, PSID);
  t.same(seen[0]!.body, { recipient: { id: PSID }, message: { attachment: { type: 'template', payload: { template_type: 'calling_optin' } } } });
  t.equal(seen[0]!.url, `/v23.0/${PAGE}/messages`);
  await client.requestPermission(PAGE, PSID);
  const limited = await graphError(client.requestPermission(PAGE, PSID));
  t.equal(limited.code, 'GRAPH_CALL_LIMIT');
  t.same(requests, [PSID, PSID]);
});

t.test('a non-JSON success body is an error, not a crash', async (t) => {
  const { sim, client } = await setup(t);
  sim.failNext('terminate', { status: 200, body: 'not json at all' });
  t.equal((await graphError(client.terminate(PAGE, 'c'))).code, 'GRAPH_BAD_RESPONSE');
  sim.failNext('terminate', { status: 200, body: { success: false } });
  t.equal((await graphError(client.terminate(PAGE, 'c'))).code, 'GRAPH_UNSUCCESSFUL');
});

t.test('appsecret_proof is sent when configured, and required where the app demands it', async (t) => {
  const APP_SECRET = 'the-app-secret';
  const { sim, client, seen, address } = await setup(t, { sim: { requireAppSecretProof: APP_SECRET } });
  const refused = await graphError(client.checkPermission(PAGE, PSID));
  t.equal(refused.code, 'GRAPH_BAD_PARAMETER');
  t.match(refused.message, /appsecret_proof/);

  const config = parseConfigText(
    `meta: { app_secret: ${APP_SECRET}, verify_token: v, graph_base_url: "${address}", appsecret_proof: true }\npages: [{ id: "${PAGE}", access_token: ${TOKEN} }]\n`,
    {},
  );
  const proving = graphClientFromConfig(config, pino({ level: 'silent' }));
  t.equal((await proving.checkPermission(PAGE, PSID)).canCall, true);
  const url = new URL(seen.at(-1)!.url, 'http://x');
  t.equal(url.searchParams.get('appsecret_proof'), appSecretProof(TOKEN, APP_SECRET));
  t.equal(url.searchParams.get('appsecret_proof'), createHmac('sha256', APP_SECRET).update(TOKEN).digest('hex'));
  t.notOk(seen.at(-1)!.url.includes(TOKEN), 'the token itself stays out of the URL');
  const callId = sim.startConsumerCall({ pageId: PAGE, psid: PSID });
  t.match((await proving.accept(PAGE, callId, OFFER)).sdpAnswer, /a=ice-lite/, 'POSTs carry it too');
});
