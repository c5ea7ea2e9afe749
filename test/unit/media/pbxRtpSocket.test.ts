import dgram from 'node:dgram';
import t from 'tap';
import { PbxRtpSocket } from '../../../src/media/PbxRtpSocket.js';
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
