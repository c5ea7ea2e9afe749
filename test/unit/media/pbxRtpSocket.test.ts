import dgram from 'node:dgram';
import t from 'tap';
import { PbxRtpSocket } from '../../../src/media/PbxRtpSocket.js';
import { buildRtp, parseRtp } from '../../../src/media/rtp.js';
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

t.test("without rtcp-mux, RTCP goes to the SDP's a=rtcp port, or else to the RTP port + 1", async (t) => {
  const log = testLogger();
  const listen = async (): Promise<{ socket: dgram.Socket; port: number; got: Buffer[] }> => {
    const socket = dgram.createSocket('udp4');
    await new Promise<void>((r) => socket.bind(0, '127.0.0.1', () => r()));
    const got: Buffer[] = [];
    socket.on('message', (m) => got.push(m));
    t.teardown(() => socket.close());
    return { socket, port: socket.address().port, got };
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

  const pbx = await PbxRtpSocket.create({ log, listenIp: '127.0.0.1', minPort: 0, maxPort: 0, comedia: false });
  t.teardown(() => pbx.close());
  pbx.setSending(true);
  // A receiver report (PT 201) as the media worker would send it to the socket's loopback side.
  const rr = Buffer.from([0x80, 201, 0, 1, 0, 0, 0, 1]);
  const worker = dgram.createSocket('udp4');
  t.teardown(() => worker.close());
  const waitFor = async (list: Buffer[], n: number): Promise<void> => {
    const deadline = Date.now() + 2000;
    while (list.length < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  };

  pbx.setRemote('127.0.0.1', rtp.port, false, rtcp.port);
  worker.send(rr, pbx.innerPort, '127.0.0.1');
  await waitFor(rtcp.got, 1);
  t.equal(rtcp.got.length, 1, 'RTCP at the a=rtcp port');
  t.equal(rtp.got.length, 0, 'not at the RTP port');

  if (plusOneBound) {
    pbx.setRemote('127.0.0.1', rtp.port, false);
    worker.send(rr, pbx.innerPort, '127.0.0.1');
    await waitFor(plusOneGot, 1);
    t.equal(plusOneGot.length, 1, 'RTCP at RTP port + 1 when the SDP names none');
  }

  pbx.setRemote('127.0.0.1', rtp.port, true, rtcp.port);
  worker.send(rr, pbx.innerPort, '127.0.0.1');
  await waitFor(rtp.got, 1);
  t.equal(rtp.got.length, 1, 'with rtcp-mux RTCP shares the RTP port');
  t.equal(rtcp.got.length, 1, 'and a=rtcp is not used');
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
