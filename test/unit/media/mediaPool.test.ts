import dgram from 'node:dgram';
import t from 'tap';
import type { Test } from 'tap';
import type { Logger } from 'pino';
import type { types as ms } from 'mediasoup';
import { MediaPool } from '../../../src/media/MediaPool.js';
import type { MediasoupCallMedia } from '../../../src/media/MediasoupCallMedia.js';
import type { MediasoupMediaEngine } from '../../../src/media/MediasoupMediaEngine.js';
import type { WorkerPool } from '../../../src/media/WorkerPool.js';
import { FakeMessengerLeg } from './fakeMessengerLeg.js';
import { analyzeTail, createEngine, sleep, testLogger, until } from './setup.js';
import { createRtpPeer } from '../../helpers/rtpPeer.js';
import { settledUdpHandles, udpHandles } from '../../helpers/handles.js';

const log = testLogger();

/** Resolve once the async `check()` is true (polling every 20 ms), or reject after `timeoutMs`. */
async function untilAsync(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** A real loopback UDP socket as the pooled item; `closed` is tracked because dgram has no such property. */
interface Item {
  socket: dgram.Socket;
  closed: boolean;
}

function bindItem(): Promise<Item> {
  const socket = dgram.createSocket('udp4');
  const item: Item = { socket, closed: false };
  socket.once('close', () => (item.closed = true));
  return new Promise((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(0, '127.0.0.1', () => resolve(item));
  });
}

function socketPool(size: number, extra: { create?: () => Promise<Item>; retryDelayMs?: number } = {}): {
  pool: MediaPool<Item>;
  made: Item[];
} {
  const made: Item[] = [];
  const pool = new MediaPool<Item>({
    size,
    what: 'test socket',
    log,
    retryDelayMs: extra.retryDelayMs ?? 20,
    create: async () => {
      const item = await (extra.create ?? bindItem)();
      made.push(item);
      return item;
    },
    destroy: (item) => {
      if (!item.closed) item.socket.close();
    },
    usable: (item) => !item.closed,
  });
  return { pool, made };
}

t.test('MediaPool fills to its size, replaces what is taken, and frees everything on close', async (t) => {
  const before = await settledUdpHandles();
  const { pool, made } = socketPool(3);
  t.teardown(() => pool.close());
  await pool.whenReady();
  t.equal(pool.stats().ready, 3, 'three ready');
  t.equal(udpHandles() - before, 3, 'three sockets open');

  const taken = pool.take();
  t.ok(taken && !taken.closed, 'a ready, open item is handed out');
  t.equal(pool.stats().ready, 2, 'the taken item left the pool');
  await until(() => pool.stats().ready === 3, 2000, 'replacement');
  t.equal(made.length, 4, 'one replacement made');
  t.equal(pool.stats().hits, 1, 'one take served');

  pool.close();
  t.ok(pool.closed);
  t.equal(pool.take(), undefined, 'nothing is handed out once closed');
  t.equal(await settledUdpHandles(), before + 1, 'closing freed the pooled sockets; the taken one is its taker\'s');
  t.notOk(taken!.closed, 'the taken item is not closed by the pool');
  taken!.socket.close();
  t.equal(await settledUdpHandles(), before, 'nothing else left');
});

t.test('MediaPool never holds more than its size, however fast items are taken', async (t) => {
  const { pool, made } = socketPool(2);
  t.teardown(() => pool.close());
  await pool.whenReady();
  const taken: Item[] = [];
  for (let i = 0; i < 10; i++) {
    const item = pool.take();
    if (item) taken.push(item);
    t.ok(pool.stats().ready + pool.stats().creating <= 2, `at most two held or being made (take ${i + 1})`);
  }
  t.equal(taken.length, 2, 'only the two ready items were handed out');
  t.equal(pool.stats().misses, 8, 'the other takes found the pool empty');
  await until(() => pool.stats().ready === 2, 2000, 'refill');
  await sleep(50);
  t.equal(made.length, 4, 'refilled to two, not once per take');
  for (const item of taken) item.socket.close();
});

t.test('MediaPool drops items that died while they waited, never hands one out, and replaces them', async (t) => {
  const before = await settledUdpHandles();
  const { pool, made } = socketPool(2);
  t.teardown(() => pool.close());
  await pool.whenReady();
  // Their resources close under the pool, as a dead worker closes its routers.
  for (const item of made) item.socket.close();
  await until(() => made.every((item) => item.closed), 2000, 'sockets closed');
  t.equal(pool.take(), undefined, 'no dead item is handed out');
  t.equal(pool.stats().dropped, 2, 'both dropped');
  await until(() => pool.stats().ready === 2, 2000, 'replacements');
  const alive = made.filter((item) => !item.closed);
  t.equal(alive.length, 2, 'two new open items');
  alive[0]!.socket.close();
  await until(() => alive[0]!.closed, 2000, 'socket closed');
  pool.prune();
  t.equal(pool.stats().dropped, 3, 'prune dropped the one that died');
  await until(() => pool.stats().ready === 2, 2000, 'replacement');
  pool.close();
  t.equal(await settledUdpHandles(), before, 'no socket left');
});

t.test('MediaPool retries a failing create with a growing delay, and start-up does not wait for it', async (t) => {
  let failures = 3;
  const { pool } = socketPool(1, {
    retryDelayMs: 10,
    create: async () => {
      if (failures > 0) {
        failures--;
        throw new Error('no worker');
      }
      return bindItem();
    },
  });
  t.teardown(() => pool.close());
  await pool.whenReady();
  t.equal(pool.stats().ready, 0, 'whenReady resolved on the first failure');
  t.equal(pool.take(), undefined, 'an empty pool hands out nothing');
  await until(() => pool.stats().ready === 1, 3000, 'success after retries');
  t.equal(pool.stats().failures, 3, 'three failures counted');
  pool.close();
});

t.test('MediaPool frees an item that arrives after close', async (t) => {
  const before = await settledUdpHandles();
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  const { pool, made } = socketPool(1, {
    create: async () => {
      const item = await bindItem();
      await gate;
      return item;
    },
  });
  await sleep(50);
  t.equal(udpHandles() - before, 1, 'the socket is being made');
  pool.close();
  release();
  await until(() => made.length === 1, 2000, 'arrival');
  t.ok(made[0]!.closed, 'closed on arrival');
  t.equal(await settledUdpHandles(), before, 'no socket left');
});

t.test('MediaPool of size 0 makes nothing and hands out nothing', async (t) => {
  const { pool, made } = socketPool(0);
  await pool.whenReady();
  t.equal(pool.take(), undefined, 'nothing handed out');
  await sleep(30);
  t.equal(made.length, 0, 'nothing made');
  pool.close();
  t.throws(() => socketPool(-1), RangeError, 'a negative size is refused');
});

// ---------------------------------------------------------------------------------------------------------------
// The engine's prepared call media: real mediasoup workers, real sockets
// ---------------------------------------------------------------------------------------------------------------

async function routerIds(workers: ms.Worker[]): Promise<string[]> {
  const ids: string[] = [];
  for (const w of workers) ids.push(...((await w.dump()) as { routerIds: string[] }).routerIds);
  return ids;
}

/** Pid of the worker holding the router `id`. */
async function workerOf(workers: ms.Worker[], id: string): Promise<number | undefined> {
  for (const w of workers) if (((await w.dump()) as { routerIds: string[] }).routerIds.includes(id)) return w.pid;
  return undefined;
}

/** An engine making `preparedCalls` calls' media ahead on `size` workers, closed when the test ends. */
async function preparedEngine(
  t: Test,
  size: number,
  preparedCalls: number,
  options: { log?: Logger; comedia?: boolean } = {},
): Promise<{ workers: WorkerPool; engine: MediasoupMediaEngine }> {
  const { pool: workers, engine } = await createEngine({ size, preparedCalls, comedia: options.comedia ?? true, ...(options.log ? { log: options.log } : {}) });
  t.teardown(() => {
    engine.close();
    workers.close();
  });
  return { workers, engine };
}

/** A call's media from `engine` on a fake Messenger leg, closed when the test ends. */
async function callMedia(t: Test, engine: MediasoupMediaEngine, callId: string, callLog: Logger = log): Promise<MediasoupCallMedia> {
  const leg = new FakeMessengerLeg();
  const media = await engine.createMediasoupCallMedia({ callId, log: callLog, messenger: leg, codecs: ['PCMU'] });
  t.teardown(() => {
    media.close();
    leg.close();
  });
  return media;
}

t.test('prepared call media: a call takes a ready router and carries audio; the engine makes the next one', async (t) => {
  const udpBefore = await settledUdpHandles();
  const { workers, engine } = await preparedEngine(t, 1, 2);
  await engine.whenPrepared();
  const ready = await routerIds(workers.workers);
  t.equal(ready.length, 2, 'two routers ready before any call');
  // Per prepared call: the PBX socket and its loopback side.
  t.equal((await settledUdpHandles()) - udpBefore, 4, 'two prepared PBX RTP sockets (outer and loopback side)');

  const leg = new FakeMessengerLeg();
  const media = await engine.createMediasoupCallMedia({ callId: 'prepared-1', log, messenger: leg, codecs: ['PCMU'] });
  t.ok(ready.includes(media.router.id), 'the call got one of the ready routers');
  t.equal(engine.preparedPool?.stats().hits, 1, 'served from the pool');

  const peer = await createRtpPeer({ codec: 'PCMU', tePt: 101 });
  t.teardown(() => peer.close());
  media.createPbxOffer();
  peer.setRemote('127.0.0.1', media.pbxPort);
  media.applyPbxAnswer(peer.sdp());
  media.start();
  leg.core.startTone(1000, -12);
  peer.startTone(1000, -12);
  await until(() => peer.packetsReceived > 40 && leg.core.packetsReceived > 60, 10_000, 'audio both ways');
  await sleep(300);
  t.ok(analyzeTail(peer.receivedPcm(), peer.sampleRate, 1000).detected, 'the PBX hears Meta\'s tone');
  t.ok(analyzeTail(leg.core.receivedPcm(), 48000, 1000).detected, 'Meta hears the PBX\'s tone');
  peer.stopTone();
  leg.core.stopTone();

  await until(() => engine.preparedPool?.stats().ready === 2, 5000, 'replacement');
  t.equal((await routerIds(workers.workers)).length, 3, 'two ready plus the call\'s');
  media.close();
  leg.close();
  await untilAsync(async () => (await routerIds(workers.workers)).length === 2, 5000, 'call router closed');

  engine.close();
  t.equal((await routerIds(workers.workers)).length, 0, 'closing the engine closes the prepared routers');
  peer.close();
  t.equal(await settledUdpHandles(), udpBefore, 'and their sockets');
});

t.test('prepared call media: a worker death drops what was prepared on it, frees its sockets and prepares again on the replacement', async (t) => {
  const udpBefore = await settledUdpHandles();
  const { workers, engine } = await preparedEngine(t, 1, 2);
  await engine.whenPrepared();
  const oldPid = workers.workers[0]!.pid;
  const restarted = workers.waitFor('workerRestarted', AbortSignal.timeout(10_000));
  process.kill(oldPid, 'SIGKILL');
  const [info] = await restarted;
  await until(() => engine.preparedPool?.stats().ready === 2, 10_000, 'prepared again');
  t.equal(engine.preparedPool?.stats().dropped, 2, 'both prepared calls of the dead worker dropped');
  t.equal((await routerIds(workers.workers)).length, 2, 'two routers ready on the replacement worker');
  t.equal((await settledUdpHandles()) - udpBefore, 4, 'the dead ones\' sockets closed: only the two new prepared calls\' are open');

  const media = await callMedia(t, engine, 'after-death');
  t.equal(await workerOf(workers.workers, media.router.id), info.pid, 'a call after the death runs on the replacement');
  t.notOk(media.closed, 'and is open');
});

t.test('prepared call media: a call goes to the worker carrying the fewest calls', async (t) => {
  const { workers, engine } = await preparedEngine(t, 2, 4);
  await engine.whenPrepared();
  const pids: number[] = [];
  for (let i = 0; i < 4; i++) {
    const media = await callMedia(t, engine, `spread-${i}`);
    pids.push((await workerOf(workers.workers, media.router.id))!);
    await until(() => engine.preparedPool?.stats().ready === 4, 5000, 'refill');
  }
  const perWorker = new Map<number, number>();
  for (const pid of pids) perWorker.set(pid, (perWorker.get(pid) ?? 0) + 1);
  t.same([...perWorker.values()].sort(), [2, 2], 'two calls on each worker');
});

t.test('prepared call media: closing the engine while media is being prepared leaves no router or socket', async (t) => {
  const udpBefore = await settledUdpHandles();
  const { workers, engine } = await preparedEngine(t, 1, 3);
  // Close at once: the three preparations are in flight.
  engine.close();
  await sleep(300);
  t.equal((await routerIds(workers.workers)).length, 0, 'no router left');
  t.equal(await settledUdpHandles(), udpBefore, 'no socket left');
  await t.rejects(
    engine.createMediasoupCallMedia({ callId: 'late', log, messenger: new FakeMessengerLeg(), codecs: ['PCMU'] }),
    { code: 'INVALID_STATE' },
  );
});

t.test('prepared call media: the PBX RTP socket made before the call logs with the call\'s bindings once taken', async (t) => {
  const lines: Array<Record<string, unknown>> = [];
  const { pino } = await import('pino');
  const debugLog = pino({ level: 'debug' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
  const { engine } = await preparedEngine(t, 1, 1, { log: debugLog, comedia: false });
  await engine.whenPrepared();
  const media = await callMedia(t, engine, 'adopted-call', debugLog.child({ callId: 'adopted-call' }));
  t.equal(engine.preparedPool?.stats().hits, 1, 'the media came from the pool');
  const peer = await createRtpPeer({ codec: 'PCMU' });
  t.teardown(() => peer.close());
  media.createPbxOffer();
  media.applyPbxAnswer(peer.sdp());
  const line = lines.find((l) => l.msg === 'PBX RTP target set');
  t.ok(line, 'the socket logged');
  t.equal(line?.callId, 'adopted-call', 'with the call id');
  t.equal(line?.pbxRtpPort, media.pbxPort, 'and its own port');
});
