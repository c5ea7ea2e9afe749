/**
 * Three bridges behind one webhook URL, each in its own process with its own drachtio-server double, sharing a real
 * redis-server; Meta's webhooks go round-robin across them (each attempt to the next, as a balancer would).
 * Shows: calls both ways with tone both ways (1 kHz from Meta, 600 Hz from the PBX) whichever instance each webhook
 * lands on; a replayed webhook acted on once; an instance killed with SIGKILL has its calls terminated toward Meta
 * within 10 s while the others' calls keep audio; a Redis outage keeps live calls, refuses new ones, then heals.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import t, { type Test } from 'tap';
import { MetaSimulator } from '../../src/simulator/MetaSimulator.js';
import { startDrachtioDouble, type DrachtioDouble, type PbxDialog } from '../../src/simulator/drachtio/index.js';
import type { MetaMediaSession } from '../../src/simulator/media/MetaMediaServer.js';
import { createRtpPeer, type RtpPeer } from '../../src/simulator/pbx/rtpPeer.js';
import { APP_SECRET, PAGE_ID, PAGE_TOKEN, VERIFY_TOKEN, sdpTarget, sleep, until } from '../helpers/bridgeHarness.js';
import { RedisServer, freePort, redisServerMissing } from '../helpers/redisServer.js';
import { analyzeTail } from '../helpers/tone.js';

const root = path.resolve(import.meta.dirname, '../..');
const TONE_FROM_META = 1000;
const TONE_FROM_PBX = 600;

interface Instance {
  index: number;
  id: string;
  child: ChildProcess;
  drachtio: DrachtioDouble;
  webhookUrl: string;
  adminUrl: string;
  output(): string;
  exited: Promise<void>;
}

interface LiveCall {
  callId: string;
  /** Index of the instance whose PBX got the call. */
  owner: number;
  session: MetaMediaSession;
  pbx: RtpPeer;
  dialog?: PbxDialog;
}

const missing = redisServerMissing();
if (missing) t.comment(`SKIPPED LOUDLY: the cluster end-to-end test needs a real redis-server. ${missing}`);

t.test('three instances behind one URL with Redis', { timeout: 170_000, skip: missing ?? false }, async (t) => {
  const log = pino({ level: 'silent' });
  const dir = mkdtempSync(path.join(tmpdir(), 'msb-cluster-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const redis = await RedisServer.start();
  t.teardown(() => redis.close());
  const sim = await MetaSimulator.start({ pages: { [PAGE_ID]: PAGE_TOKEN }, appSecret: APP_SECRET, log });
  t.teardown(() => sim.close());
  const rtpPeers: RtpPeer[] = [];
  t.teardown(() => rtpPeers.forEach((p) => p.close()));

  // The PBX behind each instance answers every INVITE and sends 600 Hz.
  const calls = new Map<string, LiveCall & { pbxInvites: number }>();
  const answered = new Map<string, { owner: number; pbx: RtpPeer; dialog: PbxDialog }>();
  const invitesFor = new Map<string, number>();

  const instances: Instance[] = [];
  t.teardown(async () => {
    for (const instance of instances) if (instance.child.exitCode === null && instance.child.signalCode === null) instance.child.kill('SIGKILL');
    await Promise.all(instances.map((i) => i.exited));
    await Promise.all(instances.map((i) => i.drachtio.close()));
  });
  // On failure, what each bridge logged last says why.
  t.teardown(() => {
    if (t.passing()) return;
    for (const i of instances) {
      const lines = i.output().split('\n');
      t.comment(`--- ${i.id}: cluster lines ---\n${lines.filter((l) => l.includes('"component":"cluster"')).slice(-30).join('\n')}`);
      t.comment(`--- ${i.id}: last lines ---\n${lines.slice(-15).join('\n')}`);
    }
  });
  const startInstance = async (index: number): Promise<Instance> => {
    const drachtio = await startDrachtioDouble();
    drachtio.pbx.onInvite(async (invite) => {
      const metaCallId = invite.header('X-Messenger-Call-ID') ?? '';
      invitesFor.set(metaCallId, (invitesFor.get(metaCallId) ?? 0) + 1);
      const pbx = await createRtpPeer({ codec: 'PCMU' });
      rtpPeers.push(pbx);
      const target = sdpTarget(invite.sdp);
      pbx.setRemote(target.address, target.port);
      pbx.startTone(TONE_FROM_PBX);
      const dialog = await invite.answer(pbx.sdp());
      answered.set(metaCallId, { owner: index, pbx, dialog });
    });
    const [webhookPort, adminPort] = [await freePort(), await freePort()];
    const file = path.join(dir, `bridge-${index}.yaml`);
    writeFileSync(
      file,
      [
        `meta: { app_secret: "${APP_SECRET}", verify_token: "${VERIFY_TOKEN}", graph_base_url: "${sim.graphUrl}", graph_timeout_ms: 3000 }`,
        `pages: [{ id: "${PAGE_ID}", access_token: "${PAGE_TOKEN}" }]`,
        `webhook: { listen: { host: 127.0.0.1, port: ${webhookPort} } }`,
        `admin: { listen: { host: 127.0.0.1, port: ${adminPort} } }`,
        `sip: { drachtio: { host: 127.0.0.1, port: ${drachtio.port}, secret: cymru }, acl: ["127.0.0.1/32"], default_page: "${PAGE_ID}" }`,
        `routes: [{ name: default, match: {}, targets: ["${drachtio.pbx.uri('support')}"], codecs: [PCMU] }]`,
        `media: { workers: 1, rtp: { listen_ip: 127.0.0.1, min_port: 0, max_port: 0 }, internal_ports: { min_port: ${31000 + index * 1000}, max_port: ${31999 + index * 1000} } }`,
        `messenger: { ice: { listen_ip: 127.0.0.1, min_port: ${41000 + index * 1000}, max_port: ${41999 + index * 1000} } }`,
        // Load admission off, as in the other end-to-end tests: this file is about the cluster, not about a loaded host.
        'calls: { drain_timeout_ms: 1000, accept_deadline_ms: 10000, admission: { enabled: false } }',
        // The default heartbeat and peer timeout: shorter ones take a bridge stalled by a loaded machine for lost.
        `cluster: { enabled: true, instance_id: bridge-${index}, redis: { port: ${redis.port} }, heartbeat_ms: 1000, peer_timeout_ms: 4000 }`,
        '',
      ].join('\n'),
    );
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'src/main.ts'), '--config', file], { cwd: root, env: process.env });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const instance: Instance = {
      index,
      id: `bridge-${index}`,
      child,
      drachtio,
      webhookUrl: `http://127.0.0.1:${webhookPort}/webhook`,
      adminUrl: `http://127.0.0.1:${adminPort}`,
      output: () => out,
      exited,
    };
    instances.push(instance);
    return instance;
  };
  await Promise.all([0, 1, 2].map(startInstance));
  instances.sort((a, b) => a.index - b.index);
  const readyz = async (i: Instance): Promise<number> =>
    (await fetch(`${i.adminUrl}/readyz`, { signal: AbortSignal.timeout(2000) }).catch(() => undefined))?.status ?? 0;
  const allReady = async (list: Instance[], status: number, what: string, timeoutMs: number): Promise<void> => {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const states = await Promise.all(list.map(readyz));
      if (states.every((s) => s === status)) return;
      if (Date.now() > end) throw new Error(`${what}: /readyz ${JSON.stringify(states)} (wanted ${status})\n${list.map((i) => i.output().slice(-2000)).join('\n---\n')}`);
      await sleep(100);
    }
  };
  // Three daemons starting together (tsx, a mediasoup worker each) take a while on a loaded 2-core machine.
  await allReady(instances, 200, 'instances ready', 90_000);
  sim.setWebhookUrls(instances.map((i) => i.webhookUrl));

  const metric = async (list: Instance[], name: string, labels = ''): Promise<number> => {
    let sum = 0;
    for (const i of list) {
      const text = await (await fetch(`${i.adminUrl}/metrics`, { signal: AbortSignal.timeout(2000) })).text();
      for (const line of text.split('\n')) {
        if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) {
          if (labels && !line.includes(labels)) continue;
          sum += Number(line.split(' ').at(-1));
        }
      }
    }
    return sum;
  };

  const consumerCall = async (psid: string): Promise<LiveCall> => {
    const callId = sim.placeCall({ pageId: PAGE_ID, psid });
    const session = await sim.waitForSession(callId, 15_000);
    await session.whenConnected();
    session.startTone(TONE_FROM_META);
    const pbxSide = await until(() => answered.get(callId), 5000, `PBX answered ${callId}`);
    const call = { callId, owner: pbxSide.owner, session, pbx: pbxSide.pbx, dialog: pbxSide.dialog, pbxInvites: 1 };
    calls.set(callId, call);
    return call;
  };

  const businessCall = async (via: Instance, psid: string): Promise<LiveCall> => {
    const pbx = await createRtpPeer({ codec: 'PCMU' });
    rtpPeers.push(pbx);
    const connectSeen = sim.graph.events.waitFor('connect', AbortSignal.timeout(10_000));
    const invite = via.drachtio.pbx.call({ user: psid, sdp: pbx.sdp() });
    const [connect] = await connectSeen;
    // Both webhooks go round-robin: most land on an instance that does not own the call.
    sim.graph.consumerRinging(connect.callId);
    await invite.waitForProvisional(180, 5000);
    sim.graph.consumerAccept(connect.callId);
    const final = await invite.final;
    if (final.status !== 200) throw new Error(`business call answered ${final.status}`);
    const target = sdpTarget(final.sdp);
    pbx.setRemote(target.address, target.port);
    pbx.startTone(TONE_FROM_PBX);
    const session = await sim.waitForSession(connect.callId, 10_000);
    await session.whenConnected();
    session.startTone(TONE_FROM_META);
    const call = { callId: connect.callId, owner: via.index, session, pbx, ...(final.dialog ? { dialog: final.dialog } : {}), pbxInvites: 0 };
    calls.set(connect.callId, call);
    return call;
  };

  const checkAudio = async (t: Test, list: LiveCall[], when: string): Promise<void> => {
    for (const call of list) {
      call.pbx.clearReceived();
      call.session.clearReceived();
    }
    await sleep(1500);
    for (const call of list) {
      // The median of 100 ms windows over the last second: one stall of a loaded machine does not decide.
      const atPbx = analyzeTail(call.pbx.receivedPcm(), 8000, TONE_FROM_META, 1);
      const atMeta = analyzeTail(call.session.receivedPcm(), 48000, TONE_FROM_PBX, 1);
      t.ok(atPbx.detected, `${when}: call ${call.callId} (bridge-${call.owner}): ${TONE_FROM_META} Hz from Meta at the PBX (${atPbx.peakHz.toFixed(0)} Hz, power ratio ${atPbx.powerRatio.toFixed(2)})`);
      t.ok(atMeta.detected, `${when}: call ${call.callId} (bridge-${call.owner}): ${TONE_FROM_PBX} Hz from the PBX at Meta (${atMeta.peakHz.toFixed(0)} Hz, power ratio ${atMeta.powerRatio.toFixed(2)})`);
    }
  };

  // -- calls both ways, webhooks round-robin ---------------------------------------------------------------------
  const c1 = await consumerCall('1001');
  const c2 = await consumerCall('1002');
  const c3 = await consumerCall('1003');
  t.same(
    [c1, c2, c3].map((c) => c.owner).sort(),
    [0, 1, 2],
    'three connects landing round-robin on instances with room are taken where they land',
  );
  const b1 = await businessCall(instances[2]!, '2001');
  t.pass('business-initiated call through bridge-2: 180 and 200 OK from webhooks that landed round-robin');
  await checkAudio(t, [c1, c2, c3, b1], 'all calls');
  t.ok((await metric(instances, 'msb_cluster_webhooks_forwarded_total', 'direction="sent"')) >= 1, 'webhooks were handed to the owner');
  t.equal(
    await metric(instances, 'msb_cluster_webhooks_forwarded_total', 'direction="sent"'),
    await metric(instances, 'msb_cluster_webhooks_forwarded_total', 'direction="received"'),
    'every forwarded webhook reached its owner',
  );
  t.equal(await metric(instances, 'msb_cluster_owned_calls'), 4, 'the instances own 4 calls between them');
  t.equal(await metric([instances[0]!], 'msb_cluster_peers_seen'), 3, 'bridge-0 sees 3 live instances');

  // -- a webhook replayed to another instance is acted on once ----------------------------------------------------
  const c4 = await consumerCall('1004');
  const duplicatesBefore = await metric(instances, 'msb_cluster_webhooks_duplicate_total');
  const replay = await sim.webhooks.replay(1);
  t.ok(replay.delivered, 'the connect, replayed byte for byte, is acknowledged by the next instance');
  await sleep(800);
  t.equal(invitesFor.get(c4.callId), 1, 'the replayed connect did not reach a PBX a second time');
  t.equal(await metric(instances, 'msb_cluster_webhooks_duplicate_total'), duplicatesBefore + 1, 'the replay was dropped as a duplicate in Redis');
  t.equal(sim.call(c4.callId)?.state, 'accepted', 'the call stays accepted');
  const forwardedBefore = await metric(instances, 'msb_cluster_webhooks_forwarded_total', 'direction="received"');
  const bye4 = c4.dialog!.waitForBye(5000);
  sim.hangUp(c4.callId);
  await bye4;
  t.pass('the person hanging up (terminate webhook on any instance) sent BYE to the PBX of the owner');
  t.ok(
    (await metric(instances, 'msb_cluster_webhooks_forwarded_total', 'direction="received"')) >= forwardedBefore,
    'forward counters consistent after the hang-up',
  );

  // -- one instance killed with SIGKILL mid-call ------------------------------------------------------------------
  const victim = instances[c1.owner]!;
  const survivors = instances.filter((i) => i !== victim);
  const otherCalls = [c2, c3, b1].filter((c) => c.owner !== victim.index);
  const victimCalls = [c1, c2, c3, b1].filter((c) => c.owner === victim.index);
  const ends = victimCalls.map((c) => sim.waitForEnd(c.callId, 15_000));
  const killedAt = Date.now();
  victim.child.kill('SIGKILL');
  await victim.exited;
  sim.setWebhookUrls(survivors.map((i) => i.webhookUrl));
  for (const end of await Promise.all(ends)) {
    const seconds = (Date.now() - killedAt) / 1000;
    t.equal(end.by, 'business', `call ${end.callId} of the killed ${victim.id} ended by the business side (Graph ${end.call.state === 'rejected' ? 'reject' : 'terminate'})`);
    t.ok(seconds < 10, `... within 10 s of the kill (${seconds.toFixed(1)} s)`);
  }
  await until(() => survivors.some((i) => i.output().includes('instance lost: ending its calls toward Meta')), 3000, 'reaper log');
  const lostLines = instances.flatMap((i) => i.output().split('\n').filter((l) => l.includes('instance lost: ending its calls toward Meta')));
  t.equal(lostLines.filter((l) => l.includes(`"lost":"${victim.id}"`)).length, 1, 'exactly one survivor ended the lost instance\'s calls');
  t.equal(lostLines.length, 1, 'no live instance was taken for lost');
  // The reaper counts a call once Graph answered; Meta's terminate event comes just before that answer.
  const reaped = async (): Promise<number> => metric(survivors, 'msb_cluster_calls_reaped_total', 'result="ok"');
  for (let end = Date.now() + 8000; Date.now() < end && (await reaped()) < victimCalls.length; ) await sleep(100);
  t.equal(await reaped(), victimCalls.length, 'one Graph action per call of the lost instance');
  await checkAudio(t, otherCalls, 'after the kill');

  // -- Redis stopped and started again ----------------------------------------------------------------------------
  await redis.stop();
  await allReady(survivors, 503, 'not ready without Redis', 5000);
  t.pass('/readyz is 503 on the survivors while Redis is down');
  await checkAudio(t, otherCalls, 'Redis down');
  const refused = sim.placeCall({ pageId: PAGE_ID, psid: '1005' });
  await until(() => sim.call(refused)?.state === 'rejected', 8000, 'new call refused while Redis is down');
  t.pass('a new consumer call is rejected toward Meta while Redis is down');
  const pbxOut = await createRtpPeer({ codec: 'PCMU' });
  rtpPeers.push(pbxOut);
  const refusedInvite = await survivors[0]!.drachtio.pbx.call({ user: '2002', sdp: pbxOut.sdp() }).final;
  t.equal(refusedInvite.status, 503, 'a new INVITE from the PBX is answered 503 while Redis is down');
  await sleep(1500);
  for (const i of survivors) {
    const lines = i.output().split('\n').filter((line) => line.includes('cluster Redis unreachable'));
    t.equal(lines.length, 1, `${i.id} logged the outage once (not once per reconnect or call)`);
  }
  await redis.resume();
  await allReady(survivors, 200, 'ready again after Redis is back', 10_000);
  t.pass('the survivors reconnected by themselves and are ready again');
  const c5 = await consumerCall('1006');
  t.equal(sim.call(c5.callId)?.state, 'accepted', 'a new call is accepted again');
  await checkAudio(t, [...otherCalls, c5], 'after Redis is back');
  t.equal(await metric(survivors, 'msb_cluster_owned_calls'), otherCalls.length + 1, 'ownership of the live calls is written again');

  for (const call of [...otherCalls, c5]) sim.hangUp(call.callId);
  for (let end = Date.now() + 5000; Date.now() < end && (await metric(survivors, 'msb_cluster_owned_calls')) > 0; ) await sleep(100);
  for (const i of survivors) i.child.kill('SIGTERM');
  await Promise.all(survivors.map((i) => i.exited));
  t.same(
    survivors.map((i) => i.child.exitCode),
    survivors.map(() => 0),
    'the survivors drain and exit 0',
  );
});
