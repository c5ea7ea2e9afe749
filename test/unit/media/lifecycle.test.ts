import t from 'tap';
import { MediaError } from '../../../src/core/errors.js';
import { OPUS_SILENCE_FRAME } from '../../../src/media/MessengerStream.js';
import { parseRtp } from '../../../src/media/rtp.js';
import { createRtpPeer } from '../../helpers/rtpPeer.js';
import { analyzeTail, createEngine, setupCall, sleep, until } from './setup.js';

const { pool, engine, log } = await createEngine();
t.teardown(() => {
  engine.close();
  pool.close();
});

t.test('send first: silence flows toward Meta before the PBX sends, with clean RTP', async (t) => {
  const { leg, peer } = await setupCall(t, engine, log, { codec: 'PCMU', metaTe: { pt: 126, clockRate: 48000 } });
  await sleep(500);
  t.equal(peer.packetsSent, 0, 'the PBX has sent nothing');
  const headers = leg.sent.map((p) => parseRtp(p)!);
  t.ok(headers.length >= 10, `${headers.length} packets in 500 ms (25 expected)`);
  t.ok(leg.sent.every((p) => p.subarray(12).equals(OPUS_SILENCE_FRAME)), 'Opus silence frames');
  t.equal(new Set(headers.map((h) => h.ssrc)).size, 1, 'one SSRC');
  t.ok(headers.every((h) => h.payloadType === 111), 'negotiated Opus PT');
  for (let i = 1; i < headers.length; i++) {
    t.equal((headers[i]!.sequenceNumber - headers[i - 1]!.sequenceNumber) & 0xffff, 1, 'consecutive seq');
    const dts = (headers[i]!.timestamp - headers[i - 1]!.timestamp) >>> 0;
    // Whole frames; more than one only after an event-loop stall (the media clock follows the wall clock).
    t.ok(dts >= 960 && dts % 960 === 0 && dts <= 960 * 15, `timestamp advances by whole frames (${dts})`);
  }
});

t.test('timestamps toward Meta follow the wall clock across silence, PBX audio and silence again', async (t) => {
  const { leg, peer } = await setupCall(t, engine, log, { codec: 'PCMA', metaTe: { pt: 126, clockRate: 48000 } });
  const arrivals = leg.sentAt;
  await sleep(300);
  peer.startTone(1000);
  await sleep(500);
  peer.stopTone();
  await sleep(300);
  const headers = leg.sent.map((p) => parseRtp(p)!);
  t.equal(new Set(headers.map((h) => h.ssrc)).size, 1, 'one SSRC throughout');
  const first = headers[0]!;
  const driftAt = (i: number): number =>
    (((headers[i]!.timestamp - first.timestamp) >>> 0) * 1000) / 48000 - (arrivals[i]! - arrivals[0]!);
  let worst = 0;
  for (let i = 1; i < headers.length; i++) {
    t.equal((headers[i]!.sequenceNumber - headers[i - 1]!.sequenceNumber) & 0xffff, 1);
    t.ok(((headers[i]!.timestamp - headers[i - 1]!.timestamp) | 0) > 0, 'timestamps never stuck or backwards');
    worst = Math.max(worst, Math.abs(driftAt(i)));
  }
  // Packets delayed by a stalled (loaded) machine arrive late but keep their media time: allow that, not drift.
  const end = Math.abs(driftAt(headers.length - 1));
  t.ok(end < 100, `media clock ends within 100 ms of the wall clock (${end.toFixed(1)} ms)`);
  t.ok(worst < 400, `media clock never strays far from the wall clock (worst ${worst.toFixed(1)} ms)`);
  t.ok(headers.filter((h) => h.marker).length <= 3, 'marker only at the start of talkspurts');
});

t.test('hold stops sending to the PBX, unhold resumes; Meta keeps receiving', async (t) => {
  const { leg, media, peer } = await setupCall(t, engine, log, { codec: 'PCMU', start: false });
  // The PBX re-INVITEs: first a normal offer, then hold.
  media.answerPbxOffer(peer.sdp('sendrecv'));
  media.start();
  leg.core.startTone(1000);
  await until(() => peer.packetsReceived > 10, 3000, 'audio at the PBX');
  const answer = media.answerPbxOffer(peer.sdp('sendonly'));
  t.match(answer, /a=recvonly/, 'we answer recvonly to a sendonly offer');
  await sleep(100);
  const atHold = peer.packetsReceived;
  const metaBefore = leg.sent.length;
  await sleep(400);
  t.equal(peer.packetsReceived, atHold, 'nothing sent to the PBX on hold');
  // 20 expected; a loaded test machine may delay timers, so only insist that the stream goes on.
  t.ok(leg.sent.length - metaBefore >= 8, `Meta still receives packets during hold (${leg.sent.length - metaBefore})`);
  t.match(media.answerPbxOffer(peer.sdp('sendrecv')), /a=sendrecv/);
  await until(() => peer.packetsReceived > atHold + 10, 3000, 'audio after unhold');
  t.pass('audio resumes after unhold');
});

t.test('a re-INVITE with a new address retargets the PBX audio', async (t) => {
  const { leg, media, peer } = await setupCall(t, engine, log, { codec: 'PCMU' });
  leg.core.startTone(1000);
  await until(() => peer.packetsReceived > 10, 3000, 'audio at the first address');
  const moved = await createRtpPeer({ codec: 'PCMU', tePt: 101 });
  t.teardown(() => moved.close());
  moved.setRemote('127.0.0.1', media.pbxPort);
  media.answerPbxOffer(moved.sdp());
  const before = peer.packetsReceived;
  await until(() => moved.packetsReceived > 10, 3000, 'audio at the new address');
  await sleep(100);
  t.ok(peer.packetsReceived - before <= 3, 'the old address no longer receives');
  moved.startTone(700);
  await until(() => leg.core.received.length > 80, 3000);
  await sleep(300);
  const heard = analyzeTail(leg.core.receivedPcm(), 48000, 700, 0.2);
  t.ok(heard.detected, 'audio from the new address reaches Meta');
});

t.test('a PBX that changes its SSRC keeps reaching Meta', async (t) => {
  const { leg, peer } = await setupCall(t, engine, log, { codec: 'PCMU' });
  peer.startTone(1000);
  await sleep(400);
  peer.ssrc = (peer.ssrc + 12345) >>> 0;
  peer.stopTone();
  peer.startTone(600);
  await sleep(600);
  const heard = analyzeTail(leg.core.receivedPcm(), 48000, 600, 0.3);
  t.ok(heard.detected, `600 Hz after the SSRC change (${JSON.stringify(heard)})`);
});

t.test('Opus loss is concealed and DTX gaps reach a G.711 PBX as a timestamp jump with the marker bit', async (t) => {
  const { leg, peer } = await setupCall(t, engine, log, { codec: 'PCMU' });
  leg.core.drop = (i) => i === 20;
  leg.core.startTone(1000);
  await sleep(800);
  leg.core.stopTone();
  await sleep(300);
  leg.core.startTone(1000);
  await sleep(400);
  leg.core.stopTone();
  await sleep(100);
  const audio = peer.received.filter((h) => h.payloadType === 0);
  let jumps = 0;
  let markedJumps = 0;
  let breaks = 0;
  for (let i = 1; i < audio.length; i++) {
    const dts = (audio[i]!.timestamp - audio[i - 1]!.timestamp) | 0;
    t.ok(dts > 0, 'timestamps move forward');
    if ((audio[i]!.sequenceNumber - audio[i - 1]!.sequenceNumber) & 0xffff ^ 1) breaks++;
    if (dts > 160) {
      jumps++;
      if (audio[i]!.marker) markedJumps++;
      t.ok(Math.abs(dts - 8 * 320) < 8 * 120, `the gap of ~300 ms is kept (${dts})`);
    }
  }
  t.equal(breaks, 0, 'no sequence gap: the lost packet was concealed');
  t.equal(jumps, 1, 'one timestamp jump (the DTX pause)');
  t.equal(markedJumps, 1, 'the jump carries the marker bit');
  t.ok(analyzeTail(peer.receivedPcm(), 8000, 1000, 0.3).detected);
});

t.test('worker killed mid-call: failed with WORKER_DIED, a replacement starts and the next call works', async (t) => {
  const { media } = await setupCall(t, engine, log, { codec: 'PCMU' });
  const failed = media.waitFor('failed', AbortSignal.timeout(5000));
  const restarted = pool.waitFor('workerRestarted', AbortSignal.timeout(5000));
  const pid = pool.workers[0]!.pid;
  process.kill(pid, 'SIGKILL');
  const [err] = await failed;
  t.ok(err instanceof MediaError);
  t.equal(err.code, 'WORKER_DIED');
  t.ok(media.closed, 'the call media closed itself');
  const [info] = await restarted;
  t.equal(info.replacedPid, pid);
  t.ok(engine.healthy);

  const next = await setupCall(t, engine, log, { codec: 'opus' });
  next.peer.startTone(1000);
  next.leg.core.startTone(1000);
  await until(() => next.peer.packetsReceived > 20 && next.leg.core.packetsReceived > 40, 5000, 'audio on the next call');
  await sleep(300);
  t.ok(analyzeTail(next.peer.receivedPcm(), 48000, 1000, 0.2).detected, 'next call carries audio');
});

t.test('close() frees router, transports, sockets, timers and listeners; it is idempotent', async (t) => {
  await sleep(200);
  const countResources = (): Record<string, number> => {
    const counts: Record<string, number> = {};
    for (const r of process.getActiveResourcesInfo()) counts[r] = (counts[r] ?? 0) + 1;
    return counts;
  };
  const worker = pool.workers[0]!;
  const routersBefore = (await worker.dump()).routerIds.length;
  const before = countResources();
  const { leg, media, peer } = await setupCall(t, engine, log, {
    codec: 'PCMU',
    metaTe: { pt: 126, clockRate: 48000 },
  });
  peer.startTone(1000);
  leg.core.startTone(1000);
  await until(() => peer.packetsReceived > 10, 3000);
  media.sendDtmfToMessenger({ digit: '7', durationMs: 400 });
  await sleep(100);
  t.equal((await worker.dump()).routerIds.length, routersBefore + 1, 'one router while the call runs');
  t.ok(engine.activeCalls >= 1);
  peer.close();
  leg.core.close();
  media.close();
  media.close();
  t.ok(media.closed);
  t.ok(media.router.closed, 'router closed');
  await sleep(100);
  t.equal((await worker.dump()).routerIds.length, routersBefore, 'worker has no router of this call');
  t.equal(leg.listenerTotal, 0, 'no RTP listener left on the Messenger leg');
  const after = countResources();
  t.equal(after.UDPWrap ?? 0, before.UDPWrap ?? 0, 'no UDP socket left');
  t.equal(after.Timeout ?? 0, before.Timeout ?? 0, 'no timer left');
  t.equal(after.Immediate ?? 0, before.Immediate ?? 0, 'no immediate left');
  t.throws(() => media.createPbxOffer(), { code: 'CLOSED' });
});

t.test('symmetric RTP: with comedia the PBX audio goes where its packets come from, without it to its SDP', async (t) => {
  for (const comedia of [true, false]) {
    const e = await createEngine({ comedia });
    t.teardown(() => {
      e.engine.close();
      e.pool.close();
    });
    // The PBX announces one port (sdpPeer) but sends from another (natPeer), as behind a NAT.
    const { leg, media, peer: sdpPeer } = await setupCall(t, e.engine, e.log, { codec: 'PCMU' });
    const natPeer = await createRtpPeer({ codec: 'PCMU', tePt: 101 });
    t.teardown(() => natPeer.close());
    natPeer.setRemote('127.0.0.1', media.pbxPort);
    natPeer.startTone(1000);
    leg.core.startTone(1000);
    if (comedia) await until(() => natPeer.packetsReceived > 10, 5000, 'audio at the NAT source');
    else await until(() => sdpPeer.packetsReceived > 10, 5000, 'audio at the SDP address');
    natPeer.stopTone();
    const latched = natPeer.packetsReceived;
    const announced = sdpPeer.packetsReceived;
    if (comedia) t.ok(announced <= 5, `comedia: NAT source gets ${latched}, SDP address ${announced}`);
    else t.equal(latched, 0, `no comedia: SDP address gets ${announced}, NAT source ${latched}`);
  }
});

t.test('closing the pool under live calls fails them with WORKER_CLOSED (shutdown), not WORKER_DIED', async (t) => {
  const e = await createEngine();
  const { media } = await setupCall(t, e.engine, e.log, { codec: 'PCMU' });
  const failed = media.waitFor('failed', AbortSignal.timeout(3000));
  e.pool.close();
  const [err] = await failed;
  t.equal(err.code, 'WORKER_CLOSED');
  t.ok(media.closed);
  t.equal(e.engine.activeCalls, 0);
  e.engine.close();
});
