/**
 * Call quality measured by the call's media object, with a real mediasoup worker and RTP on loopback: loss and
 * jitter induced by the test's PBX peer (dropped and delayed packets) move the reported loss, jitter and MOS; loss
 * from Meta's side likewise; one-way audio is raised within the configured time and cleared when audio returns.
 */
import t from 'tap';
import { estimateMos, mosFromR, rFactor } from '../../../src/media/quality/eModel.js';
import { CallQuality, pcmHasAudio } from '../../../src/media/quality/CallQuality.js';
import { createEngine, setupCall, sleep, until } from './setup.js';

t.test('E-model: a clean G.711 call rates about 4.4; loss, jitter and delay each lower it', async (t) => {
  const clean = estimateMos({ lossPct: 0, jitterMs: 2, rttMs: 20, codec: 'PCMU' });
  t.ok(clean >= 4.3 && clean <= 4.5, `clean ${clean}`);
  const lossy = estimateMos({ lossPct: 5, jitterMs: 2, rttMs: 20, codec: 'PCMU' });
  const veryLossy = estimateMos({ lossPct: 20, jitterMs: 2, rttMs: 20, codec: 'PCMU' });
  t.ok(lossy < clean - 0.4 && veryLossy < lossy - 0.5, `loss: ${clean} > ${lossy} > ${veryLossy}`);
  t.ok(estimateMos({ lossPct: 0, jitterMs: 80, rttMs: 20, codec: 'PCMU' }) < clean, 'jitter');
  t.ok(estimateMos({ lossPct: 0, jitterMs: 2, rttMs: 600, codec: 'PCMU' }) < clean - 0.5, 'delay past 177 ms one way');
  t.equal(mosFromR(0), 1);
  t.equal(mosFromR(100), 4.5);
  t.ok(rFactor({ lossPct: 0, jitterMs: 0, codec: 'opus' }) > 90);
});

t.test('audio vs silence: -45 dBFS threshold on samples (Opus: opusActivity.test.ts)', async (t) => {
  const tone = Int16Array.from({ length: 160 }, (_, i) => Math.round(4000 * Math.sin(i / 3)));
  t.ok(pcmHasAudio(tone));
  t.notOk(pcmHasAudio(new Int16Array(160)));
  t.notOk(pcmHasAudio(Int16Array.from({ length: 160 }, (_, i) => (i % 2 ? 50 : -50))), 'low-level noise is silence');
});

t.test('one-way audio logic: raised after N s of silence from one side while the other speaks, cleared when it returns', async (t) => {
  const q = new CallQuality(3000);
  q.start(0);
  for (let now = 0; now < 2900; now += 20) q.heard('messenger', true, now);
  t.equal(q.check(2900), undefined, 'not yet');
  q.heard('messenger', true, 3000);
  t.same(q.check(3000), { change: 'raised', oneWay: { silentSide: 'pbx', silentForMs: 3000 } });
  t.equal(q.oneWay, 'pbx');
  t.equal(q.check(3500), undefined, 'raised once');
  q.heard('pbx', false, 3600);
  t.equal(q.check(3600), undefined, 'silence from the PBX does not clear it');
  q.heard('pbx', true, 4000);
  t.match(q.check(4000), { change: 'cleared', oneWay: { silentSide: 'pbx' } });
  t.equal(q.oneWay, undefined);
  const quiet = new CallQuality(3000);
  quiet.start(0);
  t.equal(quiet.check(10_000), undefined, 'both sides silent: no one-way audio');
});

t.test('with a real worker', async (t) => {
  const { pool, engine, log } = await createEngine({ oneWayAudioAfterMs: 1000 });
  t.teardown(() => pool.close());

  t.test('loss and jitter induced by the PBX move loss, jitter and MOS of its leg', async (t) => {
    const clean = await setupCall(t, engine, log, { codec: 'PCMU' });
    const bad = await setupCall(t, engine, log, { codec: 'PCMU' });
    // 10 % lost; every other packet 0-40 ms late.
    bad.peer.impair({ drop: (i) => i % 10 === 5, delayMs: (i) => (i % 2 === 0 ? 0 : 10 + ((i * 7) % 31)) });
    clean.peer.startTone(1000);
    bad.peer.startTone(1000);
    await sleep(2500);
    const good = clean.media.stats().quality!.fromPbx;
    const poor = bad.media.stats().quality!.fromPbx;
    t.ok(good.packets > 40 && poor.packets > 36, `packets counted (${good.packets}, ${poor.packets})`);
    t.equal(good.lost, 0, 'no loss on the clean call');
    // Both peers send from the same timer: the host's own scheduling jitter is in both, the induced delays in one.
    t.ok(poor.jitterMs > good.jitterMs + 5, `induced jitter seen (${good.jitterMs} -> ${poor.jitterMs} ms)`);
    t.ok(good.mos >= 4.2, `clean MOS ${good.mos}`);
    t.ok(poor.lossPct >= 8 && poor.lossPct <= 12, `about 10 % lost (${poor.lossPct} %)`);
    t.ok(poor.mos < good.mos - 0.7 && poor.mos < 3.7, `MOS falls (${good.mos} -> ${poor.mos})`);
    t.ok(good.firstAudioMs !== undefined && good.firstAudioMs < 1000, `first audio from the PBX after ${good.firstAudioMs} ms`);
  });

  t.test('loss from Meta moves the Messenger leg', async (t) => {
    const { leg, media } = await setupCall(t, engine, log, { codec: 'PCMU' });
    let n = 0;
    leg.dropToBridge = () => n++ % 5 === 2;
    leg.core.startTone(1000);
    await sleep(1500);
    const q = media.stats().quality!.fromMessenger;
    t.ok(q.lossPct >= 17 && q.lossPct <= 23, `about 20 % lost (${q.lossPct} %)`);
    t.ok(q.mos < 3.5, `MOS ${q.mos}`);
  });

  t.test('one-way audio: raised within the configured time, cleared when the PBX is heard again', async (t) => {
    const { leg, media, peer } = await setupCall(t, engine, log, { codec: 'PCMU' });
    const events: Array<{ silentSide: string; active: boolean; silentForMs: number; at: number }> = [];
    media.on('oneWayAudio', (e) => events.push({ ...e, at: performance.now() }));
    const started = performance.now();
    leg.core.startTone(1000);
    await until(() => events.length > 0, 3000, 'one-way audio raised');
    t.match(events[0], { silentSide: 'pbx', active: true });
    const after = events[0]!.at - started;
    t.ok(events[0]!.silentForMs >= 1000, `the PBX was silent for the configured 1000 ms (${events[0]!.silentForMs} ms)`);
    t.ok(after < 1700, `raised ${Math.round(after)} ms after Meta's side started speaking (configured 1000 ms, checked every 500 ms)`);
    t.equal(media.stats().quality!.oneWayAudio, 'pbx');
    peer.startTone(500);
    const back = performance.now();
    await until(() => events.length > 1, 2000, 'one-way audio cleared');
    t.match(events[1], { silentSide: 'pbx', active: false });
    t.ok(events[1]!.at - back < 800, 'cleared within a check period of audio returning');
    t.equal(media.stats().quality!.oneWayAudio, undefined);
  });

  t.test('Opus passed through: a PBX sending near-silent Opus frames (not DTX, 20-30 bytes each) is silent; its tone clears it', async (t) => {
    const { leg, media, peer } = await setupCall(t, engine, log, { codec: 'opus' });
    const events: Array<{ silentSide: string; active: boolean }> = [];
    media.on('oneWayAudio', (e) => events.push(e));
    peer.startTone(440, -70);
    leg.core.startTone(1000);
    await until(() => events.length > 0, 3000, 'one-way audio raised');
    t.match(events[0], { silentSide: 'pbx', active: true }, "the PBX's -70 dBFS frames are not audio; Meta's tone, passed through, is");
    peer.startTone(440, -12);
    await until(() => events.length > 1, 2000, 'one-way audio cleared');
    t.match(events[1], { silentSide: 'pbx', active: false }, "the PBX's tone is audio");
    t.equal(media.stats().transcoding, false, 'no transcoding: judged from the Opus packets');
  });
});
