/**
 * ICE sockets in a configured port range: agents gathering at the same moment each get their own port, a taken port
 * is passed over, and a range with no free port is a clear per-leg failure, never an uncaught exception.
 */
import dgram from 'node:dgram';
import t from 'tap';
import type { Test } from 'tap';
import { pino } from 'pino';
import { WeriftMessengerLegFactory } from '../../../src/messenger/WeriftMessengerLegFactory.js';
import { closePreparedIce, preparedIceUsable, type PreparedIce } from '../../../src/messenger/WeriftMessengerLeg.js';
import { heldIcePorts } from '../../../src/messenger/werift/udpBind.js';
import { MessengerLegError } from '../../../src/core/errors.js';

const log = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });

/** A port range of `size` ports that nothing on this machine holds right now (checked by binding each). */
async function freeRange(size: number): Promise<[number, number]> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const min = 44000 + Math.floor(Math.random() * 900) * 20;
    const probes: dgram.Socket[] = [];
    let ok = true;
    for (let p = min; p < min + size && ok; p++) {
      const s = dgram.createSocket('udp4');
      probes.push(s);
      ok = await new Promise<boolean>((resolve) => {
        s.once('error', () => resolve(false));
        s.bind(p, '127.0.0.1', () => resolve(true));
      });
    }
    await Promise.all(probes.map((s) => new Promise<void>((r) => s.close(() => r()))));
    if (ok) return [min, min + size - 1];
  }
  throw new Error('no free port range found for the test');
}

function factory(portRange: [number, number]): WeriftMessengerLegFactory {
  return new WeriftMessengerLegFactory({ iceListenIps: ['127.0.0.1'], portRange, iceTimeoutMs: 2000, dtlsTimeoutMs: 2000, log });
}

const portOf = (p: PreparedIce): number => p.agent.localCandidates[0]!.port;

/** Uncaught exceptions during the test (a bind error without a listener would be one). */
function captureUncaught(t: Test): Error[] {
  const uncaught: Error[] = [];
  const onUncaught = (err: Error): void => {
    uncaught.push(err);
  };
  process.on('uncaughtException', onUncaught);
  t.teardown(() => process.off('uncaughtException', onUncaught));
  return uncaught;
}

t.test('agents gathering at the same moment in a small range each get their own port', async (t) => {
  const uncaught = captureUncaught(t);

  const AGENTS = 12;
  const range = await freeRange(AGENTS);
  const f = factory(range);
  const agents = await Promise.all(Array.from({ length: AGENTS }, () => f.prepareIce()));
  t.teardown(() => Promise.all(agents.map(closePreparedIce)));

  t.same(uncaught.map((e) => e.message), [], 'no uncaught bind error');
  t.ok(agents.every(preparedIceUsable), 'every agent gathered a candidate');
  const ports = agents.map(portOf);
  t.equal(new Set(ports).size, AGENTS, `${AGENTS} distinct ports: ${ports.join(' ')}`);
  t.ok(ports.every((p) => p >= range[0] && p <= range[1]), 'all inside the configured range');
  t.equal(heldIcePorts('udp4', '127.0.0.1').size >= AGENTS, true, 'the process knows it holds them');

  await Promise.all(agents.map(closePreparedIce));
  for (const p of ports) t.notOk(heldIcePorts('udp4', '127.0.0.1').has(p), `port ${p} released when its agent closed`);
});

t.test('a port taken by another program is passed over', async (t) => {
  const range = await freeRange(3);
  const squatters: dgram.Socket[] = [];
  for (const p of [range[0], range[0] + 1]) {
    const s = dgram.createSocket('udp4');
    await new Promise<void>((r) => s.bind(p, '127.0.0.1', () => r()));
    squatters.push(s);
  }
  t.teardown(() => squatters.forEach((s) => s.close()));

  const f = factory(range);
  for (let i = 0; i < 3; i++) {
    const agent = await f.prepareIce();
    t.equal(portOf(agent), range[1], `gathering ${i + 1}: the one free port`);
    await closePreparedIce(agent);
  }
});

t.test('a port another program takes at the moment of the bind is passed over, without an uncaught error', async (t) => {
  const uncaught = captureUncaught(t);

  const range = await freeRange(4);
  const squatters: dgram.Socket[] = [];
  t.teardown(() => squatters.forEach((s) => s.close()));
  // The first time an ICE socket (one that already listens for datagrams, unlike a port probe) binds a port of the
  // range, another socket takes that port just before.
  const originalBind = dgram.Socket.prototype.bind;
  let squatted: number | undefined;
  dgram.Socket.prototype.bind = function bind(this: dgram.Socket, ...args: unknown[]) {
    const options = args[0] as { port?: number } | undefined;
    const port = typeof options === 'object' ? options.port : undefined;
    if (squatted === undefined && port !== undefined && port >= range[0] && port <= range[1] && this.listenerCount('message') > 0) {
      squatted = port;
      const squatter = dgram.createSocket('udp4');
      squatters.push(squatter);
      squatter.bind(port, '127.0.0.1', () => originalBind.apply(this, args as Parameters<typeof originalBind>));
      return this;
    }
    return originalBind.apply(this, args as Parameters<typeof originalBind>);
  } as typeof originalBind;
  t.teardown(() => {
    dgram.Socket.prototype.bind = originalBind;
  });

  const agent = await factory(range).prepareIce();
  t.teardown(() => closePreparedIce(agent));
  dgram.Socket.prototype.bind = originalBind;
  await new Promise((r) => setTimeout(r, 20));
  t.ok(squatted !== undefined, `another socket took port ${squatted} at the moment of the bind`);
  t.same(uncaught.map((e) => e.message), [], 'no uncaught EADDRINUSE');
  t.ok(preparedIceUsable(agent), 'the agent gathered a candidate all the same');
  t.not(portOf(agent), squatted, 'on another port of the range');
});

t.test('a range with no free port fails the leg with a clear error; the process carries on', async (t) => {
  const uncaught = captureUncaught(t);

  const range = await freeRange(2);
  const f = factory(range);
  const holders = await Promise.all([f.prepareIce(), f.prepareIce()]);
  t.teardown(() => Promise.all(holders.map(closePreparedIce)));

  const leg = f.create({ callId: 'no-port', log });
  t.teardown(() => leg.close());
  const err = await leg.createOffer().then(
    () => undefined,
    (e: unknown) => e,
  );
  t.type(err, MessengerLegError, 'the offer fails as a Messenger leg error');
  t.match((err as Error).message, /no local ICE candidate/, 'saying no candidate could be gathered');
  t.same(uncaught.map((e) => e.message), [], 'no uncaught bind error');

  // Once a port is free again, the next leg gets it.
  await closePreparedIce(holders[0]!);
  const again = await f.prepareIce();
  t.teardown(() => closePreparedIce(again));
  t.ok(preparedIceUsable(again), 'a freed port is used by the next agent');
});
