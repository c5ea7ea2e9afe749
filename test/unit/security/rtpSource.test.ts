/**
 * Attacks on the PBX-facing RTP port from elsewhere on the voice LAN: a third party (127.0.0.2 here, the PBX being
 * 127.0.0.1) injecting audio, an RFC 4733 digit or RTCP into a call, or racing the PBX for the comedia latch to
 * receive the caller's audio. Only the PBX is heard; the rest is dropped and counted.
 */
import dgram from 'node:dgram';
import t from 'tap';
import type { Test } from 'tap';
import { PbxRtpSocket, RELATCH_PACKETS } from '../../../src/media/PbxRtpSocket.js';
import { buildRtp } from '../../../src/media/rtp.js';
import { Metrics } from '../../../src/observability/Metrics.js';
import { testLogger } from '../media/setup.js';
import { createRtpPeer } from '../../helpers/rtpPeer.js';
import { acceptedBusinessCall, sdpTarget, sleep, startHarness, until } from '../../helpers/bridgeHarness.js';

const AUDIO_PT = 0;
const TE_PT = 101;

interface Peer {
  socket: dgram.Socket;
  address: string;
  port: number;
  got: Buffer[];
  sendAudio(to: number, seq: number): void;
  sendDigit(to: number, seq: number): void;
  sendRtcp(to: number): void;
}

async function peer(t: Test, address: string): Promise<Peer> {
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, address, () => resolve()));
  t.teardown(() => socket.close());
  const got: Buffer[] = [];
  socket.on('message', (m) => got.push(m));
  const ssrc = 0x1000 + Math.floor(Math.random() * 0xffff);
  const send = (to: number, pt: number, seq: number, payload: Buffer): void => {
    socket.send(buildRtp({ payloadType: pt, sequenceNumber: seq, timestamp: seq * 160, ssrc, payload }), to, '127.0.0.1');
  };
  return {
    socket,
    address,
    port: socket.address().port,
    got,
    sendAudio: (to, seq) => send(to, AUDIO_PT, seq, Buffer.alloc(160, 0xd5)),
    // Digit 9, end bit clear, volume 10, duration 160.
    sendDigit: (to, seq) => send(to, TE_PT, seq, Buffer.from([9, 10, 0, 160])),
    sendRtcp: (to) => socket.send(Buffer.from([0x80, 201, 0, 1, 0, 0, 0, 1]), to, '127.0.0.1'),
  };
}

const settle = (ms = 80): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function bridgeSocket(t: Test, comedia: boolean, extra: { latchAllowed?: (a: string) => boolean } = {}) {
  const metrics = new Metrics();
  const socket = await PbxRtpSocket.create({
    log: testLogger(),
    listenIp: '127.0.0.1',
    minPort: 0,
    maxPort: 0,
    comedia,
    metrics,
    ...extra,
  });
  t.teardown(() => socket.close());
  socket.setFormats({ audioPt: AUDIO_PT, clockRate: 8000, tePt: TE_PT, innerPt: AUDIO_PT });
  const heard: { audio: number[]; digits: number[] } = { audio: [], digits: [] };
  socket.setHandlers({
    onAudio: (_p, h) => heard.audio.push(h.ssrc),
    onTelephoneEvent: (_p, h) => heard.digits.push(h.ssrc),
  });
  // Stands in for the media worker: what reaches it from the PBX side (RTCP) and what it sends toward the PBX.
  const worker = await peer(t, '127.0.0.1');
  socket.setMediasoupPort(worker.port);
  const fromWorker = (seq: number): void => {
    worker.socket.send(
      buildRtp({ payloadType: AUDIO_PT, sequenceNumber: seq, timestamp: seq * 160, ssrc: 77, payload: Buffer.alloc(160, 0x55) }),
      socket.innerPort,
      '127.0.0.1',
    );
  };
  return { socket, metrics, heard, worker, fromWorker };
}

async function dropped(metrics: Pick<Metrics, 'text'>, reason: string): Promise<number> {
  const line = (await metrics.text()).split('\n').find((l) => l.startsWith(`msb_rtp_dropped_total{reason="${reason}"}`));
  return line ? Number(line.split(' ')[1]) : 0;
}

t.test('comedia off: audio, a digit and RTCP from a third party are dropped before and after the PBX speaks', async (t) => {
  const b = await bridgeSocket(t, false);
  const pbx = await peer(t, '127.0.0.1');
  const attacker = await peer(t, '127.0.0.2');
  b.socket.setRemote('127.0.0.1', pbx.port, true);
  b.socket.setSending(true);

  // Before the PBX's first packet (it is still ringing).
  attacker.sendAudio(b.socket.port, 1);
  attacker.sendDigit(b.socket.port, 2);
  attacker.sendRtcp(b.socket.port);
  await settle();
  t.same(b.heard, { audio: [], digits: [] }, 'nothing from the third party is played or taken as a digit');
  t.equal(b.worker.got.length, 0, 'its RTCP does not reach the media worker');

  pbx.sendAudio(b.socket.port, 1);
  pbx.sendDigit(b.socket.port, 2);
  pbx.sendRtcp(b.socket.port);
  await settle();
  t.equal(b.heard.audio.length, 1, "the PBX's audio is played");
  t.equal(b.heard.digits.length, 1, "the PBX's digit is taken");
  t.equal(b.worker.got.length, 1, "the PBX's RTCP reaches the media worker");

  // After: the stream is established, the third party keeps trying.
  for (let i = 0; i < 10; i++) attacker.sendAudio(b.socket.port, 10 + i);
  attacker.sendDigit(b.socket.port, 30);
  attacker.sendRtcp(b.socket.port);
  b.fromWorker(1);
  await settle();
  t.equal(b.heard.audio.length, 1, 'no third-party audio after the PBX spoke either');
  t.equal(b.heard.digits.length, 1, 'no third-party digit');
  t.equal(b.worker.got.length, 1, 'no third-party RTCP');
  t.equal(attacker.got.length, 0, 'the caller\'s audio never goes to the third party');
  t.equal(pbx.got.length, 1, 'it goes to the PBX');
  t.equal(b.socket.dropped.wrong_source, 15);
  t.equal(await dropped(b.metrics, 'wrong_source'), 15, 'msb_rtp_dropped_total{reason="wrong_source"} counts them');
});

t.test('comedia off: before the PBX\'s SDP nothing is heard', async (t) => {
  const b = await bridgeSocket(t, false);
  const anyone = await peer(t, '127.0.0.1');
  anyone.sendAudio(b.socket.port, 1);
  anyone.sendDigit(b.socket.port, 2);
  await settle();
  t.same(b.heard, { audio: [], digits: [] });
  t.equal(await dropped(b.metrics, 'before_sdp'), 2);
});

t.test('comedia on: a third party sending first does not win the latch; the caller\'s audio goes to the PBX', async (t) => {
  const b = await bridgeSocket(t, true, { latchAllowed: () => false });
  const pbx = await peer(t, '127.0.0.1');
  const attacker = await peer(t, '127.0.0.2');
  b.socket.setRemote('127.0.0.1', pbx.port, true);
  b.socket.setSending(true);

  for (let i = 0; i < 5; i++) attacker.sendAudio(b.socket.port, 1 + i);
  attacker.sendDigit(b.socket.port, 6);
  attacker.sendRtcp(b.socket.port);
  await settle();
  t.same(b.heard, { audio: [], digits: [] }, 'the racing third party is not heard');
  t.same(b.socket.remote, { address: '127.0.0.1', port: pbx.port }, 'and not latched onto');

  // The PBX's first packet comes from another port than its SDP names (NAT): that latches.
  const pbxNat = await peer(t, '127.0.0.1');
  pbxNat.sendAudio(b.socket.port, 1);
  await settle();
  t.same(b.socket.remote, { address: '127.0.0.1', port: pbxNat.port }, 'the PBX\'s address latches');
  for (let i = 0; i < 5; i++) b.fromWorker(1 + i);
  // After the latch.
  for (let i = 0; i < 10; i++) attacker.sendAudio(b.socket.port, 20 + i);
  attacker.sendDigit(b.socket.port, 40);
  await settle();
  t.equal(pbxNat.got.length, 5, "all of the caller's audio reaches the PBX");
  t.equal(attacker.got.length, 0, 'none reaches the third party');
  t.equal(b.heard.audio.length, 1, 'only the PBX\'s audio is played');
  t.equal(b.heard.digits.length, 0, 'no third-party digit');
  t.equal(await dropped(b.metrics, 'wrong_source'), 18);
});

t.test('comedia on: a NAT address allowed by the SIP ACL latches; one outside it does not', async (t) => {
  const b = await bridgeSocket(t, true, { latchAllowed: (a) => a === '127.0.0.3' });
  b.socket.setRemote('10.0.0.5', 4000, true);
  b.socket.setSending(true);
  const outside = await peer(t, '127.0.0.2');
  const nat = await peer(t, '127.0.0.3');
  outside.sendAudio(b.socket.port, 1);
  await settle();
  t.same(b.socket.remote, { address: '10.0.0.5', port: 4000 }, 'an address outside the ACL does not latch');
  nat.sendAudio(b.socket.port, 1);
  await settle();
  t.same(b.socket.remote, { address: '127.0.0.3', port: nat.port }, 'the ACL-allowed NAT address latches');
  t.equal(b.heard.audio.length, 1);
});

t.test(`comedia on: the latch moves only to a new port of the same address, after ${RELATCH_PACKETS} packets in a row`, async (t) => {
  const b = await bridgeSocket(t, true, { latchAllowed: () => true });
  const pbx = await peer(t, '127.0.0.1');
  const moved = await peer(t, '127.0.0.1');
  const elsewhere = await peer(t, '127.0.0.2');
  b.socket.setRemote('127.0.0.1', pbx.port, true);
  pbx.sendAudio(b.socket.port, 1);
  await settle(30);
  // Another address, even one the ACL allows, never takes over a latch.
  for (let i = 0; i < RELATCH_PACKETS * 2; i++) elsewhere.sendAudio(b.socket.port, 10 + i);
  await settle(30);
  t.same(b.socket.remote, { address: '127.0.0.1', port: pbx.port }, 'another address does not move the latch');
  // A new port interleaved with the latched one does not either.
  for (let i = 0; i < RELATCH_PACKETS * 2; i++) {
    moved.sendAudio(b.socket.port, 100 + i);
    await settle(5);
    if (i % 2 === 0) pbx.sendAudio(b.socket.port, 2 + i);
    await settle(5);
  }
  await settle(30);
  t.same(b.socket.remote, { address: '127.0.0.1', port: pbx.port }, 'a port interleaved with the latched one does not');
  for (let i = 0; i < RELATCH_PACKETS; i++) {
    moved.sendAudio(b.socket.port, 200 + i);
    await settle(5);
  }
  await settle(30);
  t.same(b.socket.remote, { address: '127.0.0.1', port: moved.port }, `${RELATCH_PACKETS} packets in a row from a new port move it`);
});

for (const threads of [0, 1]) {
  t.test(`a call with media.threads ${threads}: third-party RTP on its PBX port reaches msb_rtp_dropped_total`, async (t) => {
    const h = await startHarness({ codecs: ['PCMU'], config: { media: { threads, workers: 1 } } });
    t.teardown(() => h.close());
    const pbx = await createRtpPeer({ codec: 'PCMU' });
    t.teardown(() => pbx.close());
    const { callId, final } = await acceptedBusinessCall(h, pbx.sdp());
    t.equal(final.status, 200, 'the call is answered');
    const port = sdpTarget(final.sdp).port;
    pbx.setRemote('127.0.0.1', port);
    await (await h.sim.waitForSession(callId)).whenConnected();

    const before = await dropped(h.metrics, 'wrong_source');
    const attacker = await peer(t, '127.0.0.2');
    for (let i = 0; i < 12; i++) attacker.sendAudio(port, 1 + i);
    // From a media thread the counts come with its next load report: wait for them, then one report more, so that
    // a count sent twice would show too.
    for (let waited = 0; waited < 5000 && (await dropped(h.metrics, 'wrong_source')) === before; waited += 100) await sleep(100);
    await sleep(threads > 0 ? 1500 : 100);
    t.equal((await dropped(h.metrics, 'wrong_source')) - before, 12, 'the 12 packets from the third party counted as wrong_source');

    h.sim.hangUp(callId);
    await final.dialog!.waitForBye(2000);
    await until(() => h.daemon.controller.registry.size === 0, 2000, 'call released');
  });
}
