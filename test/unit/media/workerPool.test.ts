import t from 'tap';
import { MediaError } from '../../../src/core/errors.js';
import { WorkerPool } from '../../../src/media/WorkerPool.js';
import { ROUTER_MEDIA_CODECS } from '../../../src/media/MediasoupCallMedia.js';
import { testLogger, workerPorts } from './setup.js';

t.test('a missing worker binary is a clear WORKER_BIN_MISSING naming the path and the Debian package', async (t) => {
  const err = await WorkerPool.create({
    log: testLogger(),
    size: 1,
    ...workerPorts(),
    workerBin: '/nonexistent/dir/mediasoup-worker',
  }).catch((e: unknown) => e);
  t.ok(err instanceof MediaError);
  t.equal((err as MediaError).code, 'WORKER_BIN_MISSING');
  t.match((err as MediaError).message, /\/nonexistent\/dir\/mediasoup-worker/);
  t.match((err as MediaError).message, /Debian package mediasoup-worker/);
});

t.test('routers go to the least-loaded worker; closing a router frees its slot', async (t) => {
  const pool = await WorkerPool.create({ log: testLogger(), size: 2, ...workerPorts() });
  t.teardown(() => pool.close());
  t.equal(pool.workers.length, 2);
  t.ok(pool.healthy);
  const placed = [];
  for (let i = 0; i < 4; i++) placed.push(await pool.createRouter({ mediaCodecs: ROUTER_MEDIA_CODECS }));
  const perWorker = new Map<number, number>();
  for (const { worker } of placed) perWorker.set(worker.pid, (perWorker.get(worker.pid) ?? 0) + 1);
  t.same([...perWorker.values()].sort(), [2, 2], 'two routers on each worker');
  // Free both routers of one worker: the next router goes there.
  const pid = placed[0]!.worker.pid;
  for (const p of placed.filter((p) => p.worker.pid === pid)) p.router.close();
  const next = await pool.createRouter({ mediaCodecs: ROUTER_MEDIA_CODECS });
  t.equal(next.worker.pid, pid);
  pool.close();
  t.notOk(pool.healthy);
  t.ok(next.router.closed, 'closing the pool closes the routers');
  await t.rejects(pool.createRouter({ mediaCodecs: ROUTER_MEDIA_CODECS }), { code: 'INVALID_STATE' });
});

t.test('a dead worker is replaced and reported', async (t) => {
  const pool = await WorkerPool.create({ log: testLogger(), size: 1, ...workerPorts(), restartDelayMs: 20 });
  t.teardown(() => pool.close());
  const oldPid = pool.workers[0]!.pid;
  const died = pool.waitFor('workerDied', AbortSignal.timeout(5000));
  const restarted = pool.waitFor('workerRestarted', AbortSignal.timeout(5000));
  process.kill(oldPid, 'SIGKILL');
  const [dead] = await died;
  t.equal(dead.pid, oldPid);
  t.notOk(pool.healthy, 'no live worker until the replacement is up');
  const [info] = await restarted;
  t.equal(info.replacedPid, oldPid);
  t.not(info.pid, oldPid);
  t.ok(pool.healthy);
  const { worker } = await pool.createRouter({ mediaCodecs: ROUTER_MEDIA_CODECS });
  t.equal(worker.pid, info.pid);
});
