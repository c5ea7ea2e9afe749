/**
 * The rtpengine helper: bencode, the ng client, the daemon's lifetime.
 */
import t from 'tap';
import { bdecode, bencode, NgError, startRtpengine } from '../helpers/rtpengine.js';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

t.test('bencode encodes with sorted keys and decodes back', async (t) => {
  t.equal(bencode({ b: 1, a: 'x', c: ['l', -2] }).toString(), 'd1:a1:x1:bi1e1:cl1:li-2eee');
  t.equal(bencode({ 'call-id': 'é' }).toString('latin1'), 'd7:call-id2:\xc3\xa9e', 'lengths count bytes, not characters');
  t.equal(bencode({ a: undefined, b: 'y' }).toString(), 'd1:b1:ye', 'undefined entries are left out');
  t.same(bdecode(Buffer.from('d6:resulti0e3:sdp4:v=0\r4:listl1:a1:bee')), { result: 0, sdp: 'v=0\r', list: ['a', 'b'] });
  const value = { command: 'offer', flags: ['trust-address'], 'rtcp-mux': ['demux'], n: 42, sdp: 'v=0\r\nm=audio 9' };
  t.same(bdecode(bencode(value)), value, 'round trip');
  t.throws(() => bdecode(Buffer.from('d3:abc')), SyntaxError);
  t.throws(() => bdecode(Buffer.from('i1ei2e')), SyntaxError, 'trailing bytes');
  t.throws(() => bdecode(Buffer.from('5:ab')), SyntaxError, 'string past end');
});

t.test('the daemon answers ng, refuses a bad command clearly, and is gone after stop()', async (t) => {
  const daemon = await startRtpengine({ numThreads: 1 });
  t.teardown(() => daemon.stop());
  t.ok(alive(daemon.pid), 'running');
  await daemon.ng.ping();
  await t.rejects(
    daemon.ng.answer({ 'call-id': `no-such-call-${Date.now()}`, 'from-tag': 'a', 'to-tag': 'b', sdp: 'v=0\r\n' }),
    { name: 'NgError', message: /Unknown call-id/ },
    'answering an unknown call is an ng error with rtpengine\'s reason',
  );
  await t.rejects(daemon.ng.command('frobnicate'), NgError, 'an unknown command is an ng error');
  await daemon.stop();
  t.notOk(alive(daemon.pid), 'process gone');
  await daemon.stop();
  t.pass('stop() twice is fine');
});

t.test('the daemon is killed when its lifetime runs out', async (t) => {
  const daemon = await startRtpengine({ numThreads: 1, lifetimeMs: 1500 });
  const readyAt = performance.now();
  t.teardown(() => daemon.stop());
  t.ok(alive(daemon.pid));
  const outcome = await Promise.race([
    daemon.exited.then(() => 'exited'),
    new Promise((resolve) => setTimeout(resolve, 10_000, 'still running')),
  ]);
  t.equal(outcome, 'exited', 'killed at the end of its lifetime');
  t.ok(performance.now() - readyAt >= 1400, 'not before');
  t.notOk(alive(daemon.pid), 'process gone');
});
