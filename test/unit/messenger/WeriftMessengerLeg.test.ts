import dgram from 'node:dgram';
import t from 'tap';
import type { Test } from 'tap';
import { pino } from 'pino';
import sdpTransform from 'sdp-transform';
import { MessengerLegError } from '../../../src/core/errors.js';
import { WeriftMessengerLegFactory } from '../../../src/messenger/WeriftMessengerLegFactory.js';
import type { WeriftMessengerLeg } from '../../../src/messenger/WeriftMessengerLeg.js';
import { MetaMediaServer } from '../../../src/simulator/media/MetaMediaServer.js';
import type { MetaMediaSession } from '../../../src/simulator/media/MetaMediaServer.js';
import { OpusCapture, OpusToneSender, lastDominant, waitUntil } from '../../helpers/opusTone.js';
import { settledUdpHandles, timerHandles as timers, udpHandles } from '../../helpers/handles.js';

const log = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });

async function rejectionOf(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => undefined,
    (err: unknown) => err,
  );
}

/** The promise rejects with a MessengerLegError of this reason. */
async function rejectsWithReason(t: Test, promise: Promise<unknown>, reason: string, what: string): Promise<void> {
  const err = await rejectionOf(promise);
  t.ok(err instanceof MessengerLegError, `${what}: rejects with MessengerLegError`);
  t.equal((err as MessengerLegError | undefined)?.reason, reason, `${what}: reason ${reason}`);
}

/** State of both ends, for failure messages. */
function describeCall(leg: WeriftMessengerLeg, session: MetaMediaSession): string {
  return JSON.stringify({
    leg: { stats: leg.stats(), timings: leg.timings, diagnostics: leg.diagnostics() },
    meta: { packetsReceived: session.packetsReceived, packetsSent: session.packetsSent },
  });
}

/** waitUntil for media, reporting both ends' state on timeout. */
async function waitMedia(
  leg: WeriftMessengerLeg,
  session: MetaMediaSession,
  condition: () => boolean,
  timeoutMs: number,
  what: string,
): Promise<void> {
  await waitUntil(condition, timeoutMs, what).catch((err: Error) => {
    throw new Error(`${err.message}: ${describeCall(leg, session)}`);
  });
}

let server: MetaMediaServer;
t.before(async () => {
  server = await MetaMediaServer.create({ listenIp: '127.0.0.1', rtcMinPort: 42000, rtcMaxPort: 42999, log });
});
t.teardown(() => server.close());

function makeFactory(overrides: { iceTimeoutMs?: number; dtlsTimeoutMs?: number } = {}): WeriftMessengerLegFactory {
  return new WeriftMessengerLegFactory({
    iceListenIps: ['127.0.0.1'],
    iceTimeoutMs: overrides.iceTimeoutMs ?? 5000,
    dtlsTimeoutMs: overrides.dtlsTimeoutMs ?? 5000,
    log,
  });
}

const factory = makeFactory();

async function connectedPair(
  callId: string,
  answerOptions: { telephoneEvent?: boolean; tcpCandidates?: boolean } = {},
  rewriteAnswer: (sdp: string) => string = (s) => s,
): Promise<{ leg: WeriftMessengerLeg; session: MetaMediaSession }> {
  const leg = factory.create({ callId, log });
  const offer = await leg.createOffer();
  const { sdp, session } = await server.answerOffer(offer, answerOptions);
  await leg.applyAnswer(rewriteAnswer(sdp));
  await Promise.all([leg.whenConnected(AbortSignal.timeout(5000)), session.whenConnected()]);
  return { leg, session };
}

t.test('the offer looks like a browser offer and carries every candidate', async (t) => {
  const leg = factory.create({ callId: 'offer', log });
  t.teardown(() => leg.close());
  const offer = await leg.createOffer();
  const parsed = sdpTransform.parse(offer);
  t.same(parsed.groups, [{ type: 'BUNDLE', mids: '0' }]);
  t.equal(parsed.media.length, 1);
  const audio = parsed.media[0]!;
  t.equal(audio.type, 'audio');
  t.equal(audio.protocol, 'UDP/TLS/RTP/SAVPF');
  t.equal(audio.setup, 'actpass');
  t.equal(audio.rtcpMux, 'rtcp-mux');
  t.equal(audio.direction, 'sendrecv');
  t.match(audio.rtp, [
    { payload: 111, codec: 'opus', rate: 48000, encoding: 2 },
    { codec: 'telephone-event', rate: 48000 },
    { codec: 'telephone-event', rate: 8000 },
  ]);
  t.same(audio.fmtp.find((f) => f.payload === 111)?.config, 'minptime=10;useinbandfec=1');
  t.match(audio.fingerprint, { type: 'sha-256', hash: /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/ });
  t.ok(audio.iceUfrag && audio.icePwd, 'ICE credentials present');
  t.equal(audio.endOfCandidates, 'end-of-candidates', 'no trickle: gathering is complete');
  t.notOk(audio.iceOptions, 'no trickle advertised');
  t.ok(audio.candidates && audio.candidates.length > 0, 'has candidates');
  for (const c of audio.candidates ?? []) {
    t.equal(c.ip, '127.0.0.1', 'candidates only on the configured interface');
    t.equal(c.transport, 'udp');
  }
  t.equal(audio.ssrcs?.filter((s) => s.attribute === 'cname').length, 1, 'one a=ssrc');
  t.equal(audio.ssrcs?.[0]?.id, leg.ssrc);
});

t.test('portRange bounds our ports; announcedIp replaces the address in our candidates', async (t) => {
  const ranged = new WeriftMessengerLegFactory({
    iceListenIps: ['127.0.0.1'],
    announcedIp: '198.51.100.7',
    portRange: [45100, 45120],
    log,
  });
  const leg = ranged.create({ callId: 'ranged', log });
  t.teardown(() => leg.close());
  const audio = sdpTransform.parse(await leg.createOffer()).media[0]!;
  t.ok((audio.candidates ?? []).length > 0);
  for (const c of audio.candidates ?? []) {
    t.ok(c.port >= 45100 && c.port <= 45120, `port ${c.port} in range`);
    t.equal(c.ip, '198.51.100.7');
  }
  t.equal(audio.connection?.ip, '198.51.100.7');
  t.throws(() => new WeriftMessengerLegFactory({ iceListenIps: ['localhost'], log }), TypeError);
  t.throws(() => new WeriftMessengerLegFactory({ portRange: [5000, 4000], log }), TypeError);
});

t.test('connects to an ICE-lite DTLS server and carries a 1 kHz tone both ways', async (t) => {
  const { leg, session } = await connectedPair('tone');
  t.teardown(() => {
    leg.close();
    session.close();
  });
  t.same(leg.negotiated(), { opusPt: 111 }, 'Opus only, as in Meta sample answer');
  t.ok(leg.connected);
  t.type(leg.timings.answerToIceMs, 'number');
  t.type(leg.timings.answerToDtlsMs, 'number');
  t.ok(leg.timings.answerToDtlsMs! >= leg.timings.answerToIceMs!, 'DTLS completes after ICE');

  const capture = new OpusCapture(leg, { opusPt: 111 });
  const sender = new OpusToneSender(leg, { pt: 111, hz: 1000 }).start();
  t.teardown(() => sender.stop());
  session.startTone(1000);

  await waitMedia(leg, session, () => capture.samples >= 48000 * 0.8, 10000, 'audio at the leg');
  await waitMedia(leg, session, () => session.receivedPcm().length >= 48000 * 0.8, 10000, 'audio at Meta');
  const atLeg = lastDominant(capture.pcm());
  const atMeta = lastDominant(session.receivedPcm());
  t.equal(atLeg.frequency, 1000, 'leg hears 1 kHz');
  t.ok(atLeg.ratio > 0.5, `1 kHz dominates at the leg (${atLeg.ratio.toFixed(2)})`);
  t.equal(atMeta.frequency, 1000, 'Meta hears 1 kHz');
  t.ok(atMeta.ratio > 0.5, `1 kHz dominates at Meta (${atMeta.ratio.toFixed(2)})`);
  t.ok(leg.stats().packetsReceived > 30 && leg.stats().packetsSent > 30);
  t.equal(leg.stats().packetsDroppedInvalid, 0, 'every SRTP packet authenticated');
});

t.test('a renegotiation offer with a second m=audio keeps audio flowing both ways', async (t) => {
  const { leg, session } = await connectedPair('reneg');
  t.teardown(() => {
    leg.close();
    session.close();
  });
  const capture = new OpusCapture(leg, { opusPt: 111 });
  const sender = new OpusToneSender(leg, { pt: 111, hz: 1000 }).start();
  t.teardown(() => sender.stop());
  session.startTone(1000);
  await waitMedia(leg, session, () => capture.samples > 48000 * 0.3, 10000, 'audio before renegotiation');

  const offer = session.renegotiationOffer({ secondMLine: true });
  const answer = await leg.applyOffer(offer);
  const parsed = sdpTransform.parse(answer);
  t.equal(parsed.media.length, 2, 'one answer section per offered section');
  t.same(
    parsed.media.map((m) => [m.mid, m.direction, m.setup]),
    [
      ['0', 'sendonly', 'active'],
      ['1', 'recvonly', 'active'],
    ],
    'we send on the section Meta receives on, and stay DTLS client',
  );
  t.equal(parsed.media[0]!.ssrcs?.[0]?.id, leg.ssrc, 'our SSRC is on the sending section');
  t.notOk(parsed.media[1]!.ssrcs, 'no SSRC on the receive-only section');
  t.same(parsed.groups, [{ type: 'BUNDLE', mids: '0 1' }]);
  await session.applyRenegotiationAnswer(answer);
  t.same(leg.negotiated(), { opusPt: 111 });

  capture.clear();
  session.clearReceived();
  session.startTone(1000);
  sender.setTone(1000);
  await waitMedia(leg, session, () => capture.samples >= 48000 * 0.8, 10000, 'audio at the leg after renegotiation');
  await waitMedia(leg, session, () => session.receivedPcm().length >= 48000 * 0.8, 10000, 'audio at Meta after renegotiation');
  t.equal(lastDominant(capture.pcm()).frequency, 1000, 'leg still hears 1 kHz');
  t.equal(lastDominant(session.receivedPcm()).frequency, 1000, 'Meta still hears 1 kHz');
  t.ok(leg.connected, 'same transport, still connected');
});

t.test('an offer from Meta (connect with an offer): we answer setup:active and connect as DTLS client', async (t) => {
  const { sdp: offer, session } = await server.createOffer({ telephoneEvent: true });
  const leg = factory.create({ callId: 'meta-offers', log });
  t.teardown(() => {
    leg.close();
    session.close();
  });
  const answer = await leg.applyOffer(offer);
  const m = sdpTransform.parse(answer).media;
  t.equal(m.length, 1);
  t.equal(m[0]!.setup, 'active');
  t.equal(m[0]!.direction, 'sendrecv');
  t.equal(m[0]!.endOfCandidates, 'end-of-candidates');
  t.same(leg.negotiated(), { opusPt: 111, telephoneEvent: { pt: 110, clockRate: 48000 } });
  await session.applyAnswer(answer);
  await Promise.all([leg.whenConnected(AbortSignal.timeout(5000)), session.whenConnected()]);

  const capture = new OpusCapture(leg, { opusPt: 111 });
  const sender = new OpusToneSender(leg, { pt: 111, hz: 1000 }).start();
  t.teardown(() => sender.stop());
  session.startTone(1000);
  await waitMedia(leg, session, () => capture.samples >= 48000 * 0.5, 10000, 'audio at the leg');
  await waitMedia(leg, session, () => session.receivedPcm().length >= 48000 * 0.5, 10000, 'audio at Meta');
  t.equal(lastDominant(capture.pcm()).frequency, 1000);
  t.equal(lastDominant(session.receivedPcm()).frequency, 1000);
});

t.test('offers asking us to be DTLS server, or restarting ICE, are refused with reason sdp', async (t) => {
  const { sdp: offer, session } = await server.createOffer();
  t.teardown(() => session.close());
  const leg = factory.create({ callId: 'bad-offers', log });
  t.teardown(() => leg.close());
  await rejectsWithReason(t, leg.applyOffer(offer.replace(/a=setup:actpass/g, 'a=setup:active')), 'sdp', 'setup:active');
  await session.applyAnswer(await leg.applyOffer(offer));
  await leg.whenConnected(AbortSignal.timeout(5000));
  const restart = session.renegotiationOffer({ secondMLine: false }).replace(/a=ice-ufrag:\S+/g, 'a=ice-ufrag:zzzz');
  await rejectsWithReason(t, leg.applyOffer(restart), 'sdp', 'ICE restart');
  const newCert = session
    .renegotiationOffer({ secondMLine: false })
    .replace(/a=fingerprint:sha-256 \S+/g, `a=fingerprint:sha-256 ${Array.from({ length: 32 }, () => '00').join(':')}`);
  await rejectsWithReason(t, leg.applyOffer(newCert), 'sdp', 'new DTLS fingerprint');
  t.ok(leg.connected, 'a refused offer leaves the call up');
});

t.test('TCP candidates and candidates of a family we do not have are ignored', async (t) => {
  let answer = '';
  const { leg, session } = await connectedPair('families', { tcpCandidates: true }, (sdp) => {
    // Meta also lists IPv6 host candidates; this machine's leg gathers IPv4 only.
    answer = sdp.replace(/(a=candidate:[^\r\n]+\r\n)/, '$1a=candidate:9 1 udp 2122262783 2001:db8::1 40000 typ host\r\n');
    return answer;
  });
  t.teardown(() => {
    leg.close();
    session.close();
  });
  t.match(answer, / tcp \d+ 127\.0\.0\.1 \d+ typ host tcptype passive/, 'the answer had a TCP candidate');
  t.match(answer, /2001:db8::1/, 'the answer had an IPv6 candidate');
  t.ok(leg.connected, 'connected over UDP/IPv4');
});

t.test('unusable answers are refused with reason sdp', async (t) => {
  const leg = factory.create({ callId: 'bad-sdp', log });
  t.teardown(() => leg.close());
  const offer = await leg.createOffer();
  const { sdp, session } = await server.answerOffer(offer);
  t.teardown(() => session.close());
  const cases: Array<[string, string]> = [
    ['no fingerprint', sdp.replace(/a=fingerprint:[^\r\n]+\r\n/g, '')],
    ['no ufrag', sdp.replace(/a=ice-ufrag:[^\r\n]+\r\n/g, '')],
    ['no Opus', sdp.replace(/opus\/48000\/2/g, 'G722/8000')],
    ['no audio', sdp.replace(/m=audio/g, 'm=video')],
  ];
  for (const [name, bad] of cases) {
    await rejectsWithReason(t, leg.applyAnswer(bad), 'sdp', name);
  }
  t.notOk(leg.closed, 'a refused answer leaves the leg usable');
  await leg.applyAnswer(sdp);
  await leg.whenConnected(AbortSignal.timeout(5000));
});

t.test('an answer whose ICE address is dead fails with reason ice within the timeout', async (t) => {
  const dead = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => dead.bind(0, '127.0.0.1', resolve));
  t.teardown(() => dead.close());
  let datagrams = 0;
  dead.on('message', () => datagrams++);
  const deadPort = dead.address().port;

  const fast = makeFactory({ iceTimeoutMs: 1500 });
  const leg = fast.create({ callId: 'dead-ice', log });
  const offer = await leg.createOffer();
  const { sdp, session } = await server.answerOffer(offer);
  t.teardown(() => session.close());
  const failures: MessengerLegError[] = [];
  let closedEvents = 0;
  leg.on('failed', (err) => failures.push(err));
  leg.on('closed', () => closedEvents++);
  const started = performance.now();
  const connected = leg.whenConnected();
  await leg.applyAnswer(sdp.replace(/(a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1) \d+/g, `$1 ${deadPort}`));
  const err = await rejectionOf(connected);
  const elapsed = performance.now() - started;
  t.type(err, MessengerLegError);
  t.equal((err as MessengerLegError).reason, 'ice');
  t.ok(elapsed < 1500 + 3000, `failed within the timeout (${Math.round(elapsed)} ms)`);
  t.ok(datagrams > 0, 'checks were sent to the dead address');
  await new Promise((resolve) => setTimeout(resolve, 200));
  t.equal(failures.length, 1, 'exactly one failed event');
  t.equal(closedEvents, 1, 'closed once');
  t.ok(leg.closed, 'the leg closed itself');
  await leg.whenReleased();
});

t.test('a DTLS server that never answers fails with reason dtls', async (t) => {
  // The Meta session answers ICE but has never been told our fingerprint as a DTLS client... so point the leg at
  // an ICE-lite responder that drops DTLS instead: werift's own lite agent, with no DTLS behind it.
  const { Connection } = await import('werift');
  const lite = new Connection(false, {
    iceLite: true,
    useIpv4: false,
    useIpv6: false,
    additionalHostAddresses: ['127.0.0.1'],
    interfaceAddresses: { udp4: '127.0.0.1' },
  });
  lite.stunServer = undefined;
  await lite.gatherCandidates();
  t.teardown(() => lite.close());
  let dtlsRecords = 0;
  lite.onData.subscribe((data) => {
    if (data[0]! >= 20 && data[0]! <= 63) dtlsRecords++;
  });

  const fast = makeFactory({ dtlsTimeoutMs: 1500 });
  const leg = fast.create({ callId: 'dead-dtls', log });
  const offer = await leg.createOffer();
  const o = sdpTransform.parse(offer).media[0]!;
  lite.setRemoteParams({ iceLite: false, usernameFragment: o.iceUfrag!, password: o.icePwd! });
  void lite.connect().catch(() => undefined);
  const c = lite.localCandidates[0]!;
  const answer = [
    'v=0',
    'o=- 1 1 IN IP4 127.0.0.1',
    's=-',
    't=0 0',
    'a=ice-lite',
    'a=group:BUNDLE 0',
    `m=audio ${c.port} UDP/TLS/RTP/SAVPF 111`,
    'c=IN IP4 127.0.0.1',
    `a=candidate:1 1 udp 2130706431 127.0.0.1 ${c.port} typ host`,
    `a=ice-ufrag:${lite.localUsername}`,
    `a=ice-pwd:${lite.localPassword}`,
    `a=fingerprint:sha-256 ${Array.from({ length: 32 }, () => 'AB').join(':')}`,
    'a=setup:passive',
    'a=mid:0',
    'a=sendrecv',
    'a=rtcp-mux',
    'a=rtpmap:111 opus/48000/2',
    '',
  ].join('\r\n');
  const failures: MessengerLegError[] = [];
  leg.on('failed', (err) => failures.push(err));
  const started = performance.now();
  await leg.applyAnswer(answer);
  await rejectsWithReason(t, leg.whenConnected(), 'dtls', 'whenConnected');
  const elapsed = performance.now() - started;
  t.type(leg.timings.answerToIceMs, 'number', 'ICE connected first');
  t.ok(elapsed < 1500 + 3000, `failed soon after the DTLS timeout (${Math.round(elapsed)} ms)`);
  t.ok(dtlsRecords > 0, 'our ClientHello reached the peer');
  await new Promise((resolve) => setTimeout(resolve, 100));
  t.equal(failures.length, 1, 'exactly one failed event');
  t.ok(leg.closed);
  await leg.whenReleased();
});

t.test('close() releases every socket, is idempotent, and rejects later use', async (t) => {
  const before = await settledUdpHandles();
  const { leg, session } = await connectedPair('close');
  t.teardown(() => session.close());
  t.ok(udpHandles() > before, 'the leg holds UDP sockets while open');
  let closedEvents = 0;
  leg.on('closed', () => closedEvents++);
  leg.close();
  leg.close();
  t.equal(closedEvents, 1, 'closed emitted once');
  await leg.whenReleased();
  await waitUntil(() => udpHandles() === before, 2000, 'UDP sockets to close');
  t.equal(udpHandles(), before, 'no UDP socket left');
  t.doesNotThrow(() => leg.sendRtp(Buffer.alloc(20)), 'sendRtp after close drops silently');
  await t.rejects(leg.createOffer(), /closed/);
  await rejectsWithReason(t, leg.whenConnected(), 'closed', 'whenConnected after close');
});

t.test('whenConnected honours its abort signal; calls out of order are refused', async (t) => {
  const leg = factory.create({ callId: 'abort', log });
  t.teardown(() => leg.close());
  await t.rejects(leg.applyAnswer('v=0\r\n'), /without our offer/);
  await leg.createOffer();
  const reason = new Error('gave up');
  const controller = new AbortController();
  const waiting = leg.whenConnected(controller.signal);
  controller.abort(reason);
  t.equal(await rejectionOf(waiting), reason);
  t.notOk(leg.closed, 'aborting a wait does not close the leg');
  t.equal(leg.stats().packetsDroppedNotConnected, 0);
  leg.sendRtp(Buffer.alloc(32, 0x80));
  t.equal(leg.stats().packetsDroppedNotConnected, 1, 'RTP before connected is dropped and counted');
});

t.test('closing during candidate gathering leaves no socket behind', async (t) => {
  const before = await settledUdpHandles();
  const leg = factory.create({ callId: 'close-early', log });
  const offer = leg.createOffer();
  leg.close();
  await t.rejects(offer);
  await leg.whenReleased();
  await waitUntil(() => udpHandles() === before, 2000, 'UDP sockets to close');
  t.equal(udpHandles(), before);
});

t.test('20 calls in a row leak no sockets, timers or sessions', async (t) => {
  const beforeUdp = await settledUdpHandles();
  const beforeTimers = timers();
  for (let i = 0; i < 20; i++) {
    const { leg, session } = await connectedPair(`loop-${i}`);
    const capture = new OpusCapture(leg, { opusPt: 111 });
    session.startTone(1000);
    const sender = new OpusToneSender(leg, { pt: 111, hz: 1000 }).start();
    await waitUntil(() => capture.packets >= 3 && session.packetsReceived >= 3, 10000, `media on call ${i}`).catch(
      (err: Error) => {
        throw new Error(`${err.message}: ${describeCall(leg, session)}`);
      },
    );
    sender.stop();
    leg.close();
    session.close();
    await leg.whenReleased();
  }
  await waitUntil(() => udpHandles() === beforeUdp, 10000, 'UDP sockets to close');
  t.equal(udpHandles(), beforeUdp, 'no UDP socket left');
  t.equal(server.sessionCount, 0, 'no media session left');
  // werift's last STUN transaction timers run out on their own within about a second.
  await waitUntil(() => timers() <= beforeTimers, 10000, 'timers to run out').catch(() => undefined);
  t.ok(timers() <= beforeTimers, `no timer left (${beforeTimers} before, ${timers()} after)`);
});
