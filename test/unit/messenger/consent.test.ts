/**
 * ICE consent (RFC 7675): a leg whose peer stops answering consent checks fails with reason 'consent' and closes;
 * a healthy leg keeps its consent over several check intervals. werift sends a consent check every 4-6 s, so this
 * file takes about 20 s.
 */
import t from 'tap';
import { pino } from 'pino';
import type { MessengerLegError } from '../../../src/core/errors.js';
import { WeriftMessengerLegFactory } from '../../../src/messenger/WeriftMessengerLegFactory.js';
import { MetaMediaServer } from '../../../src/simulator/media/MetaMediaServer.js';

const log = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
const CONSENT_TIMEOUT_MS = 7000;

t.test('consent is kept while the peer answers, and lost when it stops', async (t) => {
  const server = await MetaMediaServer.create({ listenIp: '127.0.0.1', rtcMinPort: 44000, rtcMaxPort: 44099, log });
  t.teardown(() => server.close());
  const factory = new WeriftMessengerLegFactory({
    iceListenIps: ['127.0.0.1'],
    consentTimeoutMs: CONSENT_TIMEOUT_MS,
    log,
  });
  const leg = factory.create({ callId: 'consent', log });
  t.teardown(() => leg.close());
  const { sdp, session } = await server.answerOffer(await leg.createOffer());
  await leg.applyAnswer(sdp);
  await leg.whenConnected(AbortSignal.timeout(5000));

  const failures: MessengerLegError[] = [];
  leg.on('failed', (err) => failures.push(err));
  await new Promise((resolve) => setTimeout(resolve, CONSENT_TIMEOUT_MS + 1500));
  t.same(failures, [], 'no failure while the peer answers consent checks');
  t.ok(leg.connected);

  // The peer disappears: its transport is gone, consent checks go unanswered.
  session.close();
  const lostAt = performance.now();
  const err = await leg.waitFor('failed', AbortSignal.timeout(CONSENT_TIMEOUT_MS + 8000)).then(([e]) => e);
  const elapsed = performance.now() - lostAt;
  t.equal(err.reason, 'consent');
  t.ok(elapsed <= CONSENT_TIMEOUT_MS + 7000, `consent lost ${Math.round(elapsed)} ms after the peer went away`);
  t.ok(leg.closed, 'the leg closed itself');
  await leg.whenReleased();
  t.equal(failures.length, 1, 'one failed event');
});
