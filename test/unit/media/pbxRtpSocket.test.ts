import dgram from 'node:dgram';
import t from 'tap';
import { PbxRtpSocket } from '../../../src/media/PbxRtpSocket.js';
import { buildRtp, isRtcp, parseRtp } from '../../../src/media/rtp.js';
import { testLogger } from './setup.js';

async function freePort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

t.test('binds a port from the configured range; an exhausted range is NO_PORT', async (t) => {
  const port = await freePort();
  const log = testLogger();
  const first = await PbxRtpSocket.create({ log, listenIp: '127.0.0.1', minPort: port, maxPort: port, comedia: false });
  t.teardown(() => first.close());
  t.equal(first.port, port);
  await t.rejects(PbxRtpSocket.create({ log, listenIp: '127.0.0.1', minPort: port, maxPort: port, comedia: false }), {
    code: 'NO_PORT',
  });
  first.close();
  first.close();
  t.ok(first.closed);
  const again = await PbxRtpSocket.create({ log, listenIp: '127.0.0.1', minPort: port, maxPort: port, comedia: false });
  t.equal(again.port, port, 'the port is free again after close');
  again.close();
});

t.test("our RTCP reports: an SR of what we sent, to the SDP's a=rtcp port without rtcp-mux, else RTP port + 1, and with rtcp-mux the RTP port; the worker's RTCP is not passed on", async (t) => {
  const log = testLogger();
  const listen = async (): Promise<{ socket: dgram.Socket; port: number; rtcp: Buffer[] }> => {
    const socket = dgram.createSocket('udp4');
    await new Promise<void>((r) => socket.bind(0, '127.0.0.1', () => r()));
    const rtcp: Buffer[] = [];
    socket.on('message', (m) => {
      if (isRtcp(m)) rtcp.push(m);
    });
    t.teardown(() => socket.close());
    return { socket, port: socket.address().port, rtcp };
  };
  const rtp = await listen();
  const rtcp = await listen();
  const plusOne = dgram.createSocket('udp4');
  const plusOneGot: Buffer[] = [];
  plusOne.on('message', (m) => plusOneGot.push(m));
  // RTP port + 1 may be taken by another test: then that case is left out rather than sending somewhere else.
  const plusOneBound = await new Promise<boolean>((r) => {
    plusOne.once('error', () => r(false));
    plusOne.bind(rtp.port + 1, '127.0.0.1', () => r(true));
  });
  t.teardown(() => plusOne.close());

  const pbx = await PbxRtpSocket.create({ log, listenIp: '127.0.0.1', minPort: 0, maxPort: 0, comedia: false, rtcpIntervalMs: 100 });
  t.teardown(() => pbx.close());
  pbx.setFormats({ audioPt: 0, clockRate: 8000, innerPt: 0 });
  pbx.setSending(true);
  const worker = dgram.createSocket('udp4');
  t.teardown(() => worker.close());
  const waitFor = async (list: Buffer[], n: number): Promise<void> => {
    const deadline = Date.now() + 3000;
    while (list.length < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  };

  pbx.setRemote('127.0.0.1', rtp.port, false, rtcp.port);
  // One packet of audio from the worker (160 bytes of payload), and an RR of the worker's own.
  worker.send(buildRtp({ payloadType: 0, sequenceNumber: 1, timestamp: 8000, ssrc: 77, payload: Buffer.alloc(160, 0xd5) }), pbx.innerPort, '127.0.0.1');
  worker.send(Buffer.from([0x80, 201, 0, 1, 0, 0, 0, 1]), pbx.innerPort, '127.0.0.1');
  await waitFor(rtcp.rtcp, 1);
  const sr = rtcp.rtcp[0]!;
  t.equal(sr[1], 200, 'a sender report, at the a=rtcp port');
  t.equal(sr.readUInt32BE(4), pbx.ssrc, 'about our stream');
  const ntpSeconds = sr.readUInt32BE(8) - 2_208_988_800;
  t.ok(Math.abs(ntpSeconds - Date.now() / 1000) < 2, 'NTP time: the wall clock');
  t.ok(((sr.readUInt32BE(16) - 8000) | 0) >= 0 && ((sr.readUInt32BE(16) - 8000) | 0) < 8000, 'RTP time: after our last packet, within a second at 8 kHz');
  t.same([sr.readUInt32BE(20), sr.readUInt32BE(24)], [1, 160], 'packets and payload octets sent');
  t.equal(sr[28 + 1], 202, 'an SDES (CNAME) follows');
  t.equal(rtp.rtcp.length, 0, 'no RTCP at the RTP port');
  t.notOk([...rtcp.rtcp].some((m) => m[1] === 201 && m.readUInt32BE(4) === 1), "the worker's own RTCP is not passed on");

  if (plusOneBound) {
    pbx.setRemote('127.0.0.1', rtp.port, false);
    await waitFor(plusOneGot, 1);
    t.ok(plusOneGot.length >= 1, 'RTCP at RTP port + 1 when the SDP names none');
  }

  pbx.setRemote('127.0.0.1', rtp.port, true, rtcp.port);
  await new Promise((r) => setTimeout(r, 150));
  const atRtcpPort = rtcp.rtcp.length;
  await waitFor(rtp.rtcp, 2);
  t.ok(rtp.rtcp.length >= 2, 'with rtcp-mux RTCP shares the RTP port');
  t.equal(rtcp.rtcp.length, atRtcpPort, 'and a=rtcp is not used');
});

t.test('after a codec change, packets of the previous codec still coming from the worker never reach the PBX', async (t) => {
  const log = testLogger();
  const pbxSide = dgram.createSocket('udp4');
  await new Promise<void>((r) => pbxSide.bind(0, '127.0.0.1', () => r()));
  const got: Buffer[] = [];
  pbxSide.on('message', (m) => got.push(m));
  t.teardown(() => pbxSide.close());
  const pbx = await PbxRtpSocket.create({ log, listenIp: '127.0.0.1', minPort: 0, maxPort: 0, comedia: false });
  t.teardown(() => pbx.close());
  const worker = dgram.createSocket('udp4');
  t.teardown(() => worker.close());
  pbx.setRemote('127.0.0.1', pbxSide.address().port, true);
  pbx.setSending(true);
  const fromWorker = (pt: number, seq: number, ssrc: number, bytes: number): void => {
    worker.send(buildRtp({ payloadType: pt, sequenceNumber: seq, timestamp: seq * 160, ssrc, payload: Buffer.alloc(bytes, 0xd5) }), pbx.innerPort, '127.0.0.1');
  };
  const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 100));

  // PCMU toward the PBX (its PT 0; the worker's PCMU stream also carries 0).
  pbx.setFormats({ audioPt: 0, clockRate: 8000, innerPt: 0 });
  fromWorker(0, 1, 1111, 160);
  await settle();
  t.equal(got.length, 1, 'PCMU forwarded');
  // The PBX (or a transfer target) now takes Opus as PT 96; the worker's Opus stream carries 111.
  pbx.setFormats({ audioPt: 96, clockRate: 48000, innerPt: 111 });
  fromWorker(0, 2, 1111, 160); // a PCMU packet that was on its way
  fromWorker(111, 1, 2222, 40);
  await settle();
  const after = got.slice(1).map((m) => parseRtp(m)!);
  t.equal(after.length, 1, 'only the Opus packet reached the PBX');
  t.equal(after[0]?.payloadType, 96, 'under the PBX\'s Opus payload type');
  t.equal(after[0]?.payloadLength, 40, 'with the Opus payload, not the late PCMU one');
});
