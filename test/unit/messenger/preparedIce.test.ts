import t from 'tap';
import { pino } from 'pino';
import sdpTransform from 'sdp-transform';
import { WeriftMessengerLegFactory } from '../../../src/messenger/WeriftMessengerLegFactory.js';
import { closePreparedIce, preparedIceUsable, type PreparedIce } from '../../../src/messenger/WeriftMessengerLeg.js';
import { MetaMediaServer } from '../../../src/simulator/media/MetaMediaServer.js';
import { OpusCapture, OpusToneSender, lastDominant, waitUntil } from '../../helpers/opusTone.js';
import { settledUdpHandles, udpHandles } from '../../helpers/handles.js';

const log = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });

let server: MetaMediaServer;
t.before(async () => {
  server = await MetaMediaServer.create({ listenIp: '127.0.0.1', rtcMinPort: 43000, rtcMaxPort: 43999, log });
});
t.teardown(() => server.close());

/** A factory whose legs take from `ready` (one prepared agent per leg while there are some). */
function factoryWith(ready: PreparedIce[]): WeriftMessengerLegFactory {
  return new WeriftMessengerLegFactory({
    iceListenIps: ['127.0.0.1'],
    iceTimeoutMs: 5000,
    dtlsTimeoutMs: 5000,
    takePreparedIce: () => ready.shift(),
    log,
  });
}

t.test('a leg built on a prepared ICE agent offers its candidates and credentials, connects and carries audio', async (t) => {
  const ready: PreparedIce[] = [];
  const factory = factoryWith(ready);
  const prepared = await factory.prepareIce();
  t.ok(preparedIceUsable(prepared), 'gathered and usable');
  const port = prepared.agent.localCandidates[0]!.port;
  ready.push(prepared);

  const leg = factory.create({ callId: 'prepared', log });
  t.teardown(() => leg.close());
  t.equal(ready.length, 0, 'the leg took the prepared agent');
  const offer = await leg.createOffer();
  const audio = sdpTransform.parse(offer).media[0]!;
  // String(): sdp-transform reads an all-digit ufrag as a number.
  t.equal(String(audio.iceUfrag), prepared.agent.localUsername, 'the offer carries the prepared agent\'s ufrag');
  t.same(
    (audio.candidates ?? []).map((c) => `${c.ip}:${c.port}`),
    [`127.0.0.1:${port}`],
    'and its candidate on the configured interface',
  );

  const { sdp, session } = await server.answerOffer(offer);
  await leg.applyAnswer(sdp);
  await Promise.all([leg.whenConnected(AbortSignal.timeout(5000)), session.whenConnected()]);
  t.ok(leg.connected, 'ICE and DTLS up');

  const pt = leg.negotiated()!.opusPt;
  const capture = new OpusCapture(leg, { opusPt: pt });
  const sender = new OpusToneSender(leg, { pt, hz: 1000 }).start();
  t.teardown(() => sender.stop());
  session.startTone(1000);
  await waitUntil(() => capture.samples >= 48000 * 0.5 && session.receivedPcm().length >= 48000 * 0.5, 10_000, 'audio both ways');
  t.equal(lastDominant(capture.pcm()).frequency, 1000, 'the leg hears 1 kHz');
  t.equal(lastDominant(session.receivedPcm()).frequency, 1000, 'Meta hears 1 kHz');
});

t.test('a leg that takes a prepared agent and closes before any offer closes its sockets', async (t) => {
  const before = await settledUdpHandles();
  const ready: PreparedIce[] = [];
  const factory = factoryWith(ready);
  ready.push(await factory.prepareIce());
  t.ok((await settledUdpHandles()) > before, 'the prepared agent holds a socket');
  const leg = factory.create({ callId: 'closed-early', log });
  leg.close();
  await leg.whenReleased();
  t.equal(await settledUdpHandles(), before, 'no socket left');
});

t.test('a factory without prepared agents gathers per leg; a closed prepared agent is no longer usable', async (t) => {
  const before = await settledUdpHandles();
  const factory = factoryWith([]);
  const leg = factory.create({ callId: 'plain', log });
  const offer = await leg.createOffer();
  t.ok((sdpTransform.parse(offer).media[0]!.candidates ?? []).length > 0, 'the leg gathered its own candidates');
  leg.close();
  await leg.whenReleased();
  const prepared = await factory.prepareIce();
  await closePreparedIce(prepared);
  t.notOk(preparedIceUsable(prepared), 'closed: not usable');
  t.equal(await settledUdpHandles(), before, 'no socket left');
});
