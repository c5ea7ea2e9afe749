/**
 * DTMF through the whole bridge, with Meta negotiating Opus only (its sample answer) and with telephone-event.
 */
import t from 'tap';
import { createRtpPeer, type RtpPeer } from '../helpers/rtpPeer.js';
import { PAGE_ID, PSID, sdpTarget, sleep, startHarness, until, type Harness } from '../helpers/bridgeHarness.js';
import type { MetaMediaSession } from '../../src/simulator/media/MetaMediaServer.js';
import type { PbxDialog } from '../helpers/drachtio/index.js';

const DIGITS = '0123456789*#';

async function connectedCall(h: Harness, peer: RtpPeer): Promise<{ session: MetaMediaSession; dialog: PbxDialog; callId: string }> {
  const answered = new Promise<PbxDialog>((resolve, reject) => {
    h.drachtio.pbx.onInvite(async (invite) => {
      try {
        const target = sdpTarget(invite.sdp);
        peer.setRemote(target.address, target.port);
        resolve(await invite.answer(peer.sdp()));
      } catch (err) {
        reject(err);
      }
    });
  });
  const callId = h.sim.placeCall({ pageId: PAGE_ID, psid: PSID });
  const dialog = await answered;
  const session = await h.sim.waitForSession(callId);
  await session.whenConnected();
  await sleep(300);
  return { session, dialog, callId };
}

t.test('Meta negotiates Opus only: digits from the PBX (RFC 4733 at 8 kHz) reach the person as in-band tones, in order', async (t) => {
  const h = await startHarness({ codecs: ['PCMU'] });
  t.teardown(() => h.close());
  const peer = await createRtpPeer({ codec: 'PCMU', tePt: 101, teClockRate: 8000 });
  t.teardown(() => peer.close());
  const { session } = await connectedCall(h, peer);
  await peer.sendDigits(DIGITS, 120, 100);
  await until(() => session.receivedDtmf().length >= DIGITS.length, 5000, 'digits at Meta').catch(() => undefined);
  t.equal(session.receivedDtmf().map((d) => d.digit).join(''), DIGITS, 'digits detected in the audio Meta received');
  t.ok(session.receivedDtmf().every((d) => d.via === 'inband'), 'as tones: Meta has no telephone-event');
});

t.test('Meta negotiates Opus only: tones from the person reach the PBX as RFC 4733 events, in order', async (t) => {
  const h = await startHarness({ codecs: ['PCMU'] });
  t.teardown(() => h.close());
  const peer = await createRtpPeer({ codec: 'PCMU', tePt: 101, teClockRate: 8000 });
  t.teardown(() => peer.close());
  const { session } = await connectedCall(h, peer);
  for (const digit of DIGITS) {
    session.sendDtmf(digit, 120);
    await sleep(220);
  }
  await until(() => peer.receivedDtmf().length >= DIGITS.length, 5000, 'digits at the PBX').catch(() => undefined);
  t.equal(peer.receivedDtmf().join(''), DIGITS, 'digits at the PBX as RFC 4733');
});

t.test('Meta keeps telephone-event/48000: digits from the PBX are relayed as RFC 4733 events, not tones', async (t) => {
  const h = await startHarness({ codecs: ['PCMU'], telephoneEvent: true });
  t.teardown(() => h.close());
  const peer = await createRtpPeer({ codec: 'PCMU', tePt: 101, teClockRate: 8000 });
  t.teardown(() => peer.close());
  const { session } = await connectedCall(h, peer);
  await peer.sendDigits('1234', 120, 100);
  // The simulated Meta sees telephone-event packets through mediasoup's producer trace (headers only).
  await until(() => session.receivedTelephoneEvents().length >= 4, 5000, 'events at Meta').catch(() => undefined);
  const events = session.receivedTelephoneEvents();
  t.comment(`te=${session.telephoneEvent} pts=${JSON.stringify([...session.receivedPayloadTypes()])} events=${JSON.stringify(events)}`);
  t.equal(events.length, 4, 'four RFC 4733 events reached Meta');
  t.ok(events.every((e) => e.packets >= 3), 'each event has its packets (start, updates, 3 end packets)');
  t.equal(session.receivedDtmf().filter((d) => d.via === 'inband').length, 0, 'no in-band tones were mixed in');
});

t.test('SIP INFO (application/dtmf-relay) from the PBX reaches the person', async (t) => {
  const h = await startHarness({ codecs: ['PCMU'] });
  t.teardown(() => h.close());
  const peer = await createRtpPeer({ codec: 'PCMU', tePt: 101, teClockRate: 8000 });
  t.teardown(() => peer.close());
  const { session, dialog } = await connectedCall(h, peer);
  for (const digit of '159#') {
    const res = await dialog.info('application/dtmf-relay', `Signal=${digit}\r\nDuration=160\r\n`);
    t.equal(res.status, 200, `INFO ${digit} answered 200`);
    await sleep(250);
  }
  await until(() => session.receivedDtmf().length >= 4, 5000, 'digits at Meta').catch(() => undefined);
  t.equal(session.receivedDtmf().map((d) => d.digit).join(''), '159#');
});

t.test('a PBX without telephone-event gets the person\'s digits as SIP INFO, in order, and the tones in band', async (t) => {
  const h = await startHarness({ codecs: ['PCMU'] });
  t.teardown(() => h.close());
  const peer = await createRtpPeer({ codec: 'PCMU' });
  t.teardown(() => peer.close());
  const { session, dialog } = await connectedCall(h, peer);
  t.notMatch(dialog.localSdp, /telephone-event/, 'the PBX answered without telephone-event');
  const digits = '25#';
  for (const digit of digits) {
    session.sendDtmf(digit, 120);
    await sleep(250);
  }
  const infos = (): string[] =>
    dialog.requests.filter((r) => r.method === 'INFO').map((r) => /Signal=(\S+)/.exec(r.body)?.[1] ?? '?');
  await until(() => infos().length >= digits.length, 5000, 'INFOs at the PBX').catch(() => undefined);
  t.equal(infos().join(''), digits, 'one INFO per digit, in order');
  const info = dialog.requests.find((r) => r.method === 'INFO');
  t.match(info?.get('content-type') ?? '', /^application\/dtmf-relay/, 'as application/dtmf-relay');
  t.match(info?.body ?? '', /Duration=\d+/, 'with the duration');
  t.same(peer.receivedDtmf(), [], 'no RFC 4733 events toward a PBX that did not negotiate them');
});
