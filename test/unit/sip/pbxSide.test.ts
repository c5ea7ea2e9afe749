import t from 'tap';
import { pino } from 'pino';
import { DrachtioSipLeg } from '../../../src/sip/DrachtioSipLeg.js';
import { SipError } from '../../../src/core/errors.js';
import { pbxBackends, type PbxSide } from '../../helpers/pbx.js';

// The same SIP-leg scenarios against each PBX backend: the double always, a real drachtio-server with sipp when
// DRACHTIO_HOST / DRACHTIO_PORT / DRACHTIO_SECRET / DRACHTIO_SIP are set (skipped with that reason otherwise).
const log = pino({ level: process.env.LOG_LEVEL ?? 'silent' });

const sdp = (port: number): string =>
  ['v=0', `o=- 7 1 IN IP4 127.0.0.1`, 's=-', 'c=IN IP4 127.0.0.1', 't=0 0', `m=audio ${port} RTP/AVP 0`, 'a=rtpmap:0 PCMU/8000', ''].join('\r\n');

for (const backend of pbxBackends()) {
  t.test(backend.name, { skip: backend.skip ?? false }, async (t) => {
    const pbx: PbxSide = await backend.create!();
    const leg = new DrachtioSipLeg({
      ...pbx.drachtio,
      acl: [`${pbx.sourceAddress}/32`],
      target: { psidFrom: 'request_uri', psidHeader: 'X-Messenger-PSID', pageHeader: 'X-Messenger-Page-ID' },
      fromUser: 'messenger',
      log,
    });
    t.teardown(async () => {
      leg.close();
      await pbx.close();
    });
    await leg.whenConnected(AbortSignal.timeout(5000));

    t.test('outbound call with caller context headers; we hang up', async (t) => {
      const inbound = await pbx.expectInvite({ sdp: sdp(41010), ringMs: 50 });
      const progress: number[] = [];
      const result = await leg.invite({
        targets: [inbound.targetUri],
        headers: { 'X-Messenger-PSID': '31415', 'X-Messenger-Page-ID': '2718' },
        sdp: sdp(40010),
        targetTimeoutMs: 5000,
        signal: AbortSignal.timeout(10_000),
        onProgress: (s) => progress.push(s),
      });
      t.match(result.sdp, /m=audio 41010 /, 'PBX answer SDP');
      t.ok(progress.includes(180), '180 reported');
      await new Promise((r) => setTimeout(r, 100));
      await result.dialog.end();
      const seen = await inbound.done;
      t.equal(seen.invite.header('X-Messenger-PSID'), '31415');
      t.equal(seen.invite.header('X-Messenger-Page-ID'), '2718');
      t.match(seen.invite.header('From') ?? '', /sip:messenger@/);
      t.match(seen.invite.sdp, /m=audio 40010 /);
      t.equal(seen.byeFrom, 'app');
    });

    t.test('outbound call: DTMF sent to the PBX as SIP INFO, in order, one transaction at a time', async (t) => {
      const inbound = await pbx.expectInvite({ sdp: sdp(41014), ringMs: 10, expectInfo: 3 });
      const result = await leg.invite({
        targets: [inbound.targetUri],
        headers: {},
        sdp: sdp(40014),
        targetTimeoutMs: 5000,
        signal: AbortSignal.timeout(10_000),
      });
      // Sent back to back: the dialog queues them so the PBX sees them in order.
      const sent = ['1', '#', 'D'].map((digit, i) => result.dialog.sendDtmf({ digit, durationMs: 100 + i * 20 }));
      await Promise.all(sent);
      await result.dialog.end();
      const seen = await inbound.done;
      t.same(
        seen.infoBodies?.map((b) => b.replace(/\r\n/g, '\n').trim()),
        ['Signal=1\nDuration=100', 'Signal=#\nDuration=120', 'Signal=D\nDuration=140'],
        'application/dtmf-relay bodies in order',
      );
      await t.rejects(result.dialog.sendDtmf({ digit: '5', durationMs: 100 }), /ended/, 'no INFO after the dialog ended');
    });

    t.test('outbound call; the PBX hangs up', async (t) => {
      const inbound = await pbx.expectInvite({ sdp: sdp(41012), ringMs: 10, hangupAfterMs: 200 });
      const result = await leg.invite({
        targets: [inbound.targetUri],
        headers: {},
        sdp: sdp(40012),
        targetTimeoutMs: 5000,
        signal: AbortSignal.timeout(10_000),
      });
      await result.dialog.waitFor('bye', AbortSignal.timeout(5000));
      t.equal(result.dialog.ended, true);
      t.equal((await inbound.done).byeFrom, 'pbx');
    });

    t.test('outbound call refused with 486', async (t) => {
      const inbound = await pbx.expectInvite({ reject: 486 });
      const err = await leg
        .invite({ targets: [inbound.targetUri], headers: {}, sdp: sdp(40014), targetTimeoutMs: 5000, signal: AbortSignal.timeout(10_000) })
        .catch((e: unknown) => e);
      t.ok(err instanceof SipError);
      t.equal((err as SipError).status, 486);
      await inbound.done;
    });

    t.test('a target that only rings is CANCELed at its timeout and the next target answers', async (t) => {
      const ringing = await pbx.expectInvite({ ringForever: true });
      const answering = await pbx.expectInvite({ sdp: sdp(41020), ringMs: 10 });
      const result = await leg.invite({
        targets: [ringing.targetUri, answering.targetUri],
        headers: {},
        sdp: sdp(40020),
        targetTimeoutMs: 700,
        signal: AbortSignal.timeout(10_000),
      });
      t.equal(result.target, answering.targetUri);
      const first = await ringing.done;
      t.equal(first.canceled, true, 'the ringing target saw CANCEL');
      await result.dialog.end();
      t.equal((await answering.done).byeFrom, 'app');
    });

    t.test('inbound call with INFO DTMF and a hold re-INVITE mid-call', async (t) => {
      const incoming = leg.waitFor('invite', AbortSignal.timeout(10_000));
      const placed = await pbx.placeCall({
        user: '5550001',
        sdp: sdp(41022),
        hangupAfterMs: 100,
        midCall: { dtmfDigit: '7', holdSdp: sdp(41022).replace('o=- 7 1', 'o=- 7 2') + 'a=sendonly\r\n' },
      });
      const [call] = await incoming;
      const dialog = await call.answer(sdp(40022));
      const offers: string[] = [];
      dialog.setReinviteHandler((offer) => {
        offers.push(offer);
        return sdp(40022).replace('o=- 7 1', 'o=- 7 2') + 'a=recvonly\r\n';
      });
      const digits: string[] = [];
      dialog.on('dtmf', (e) => digits.push(e.digit));
      const bye = dialog.waitFor('bye', AbortSignal.timeout(10_000));
      const end = await placed.done;
      await bye;
      t.same(digits, ['7']);
      t.equal(offers.length, 1);
      t.match(offers[0]!, /a=sendonly/);
      t.equal(end.midCall?.infoStatus, 200);
      t.equal(end.midCall?.reinviteStatus, 200);
      t.match(end.midCall?.reinviteAnswerSdp ?? '', /a=recvonly/);
    });

    t.test('inbound call: PSID from the Request-URI, answered; the PBX hangs up', async (t) => {
      const incoming = leg.waitFor('invite', AbortSignal.timeout(10_000));
      const placed = await pbx.placeCall({ user: '1122334455', headers: { 'X-Messenger-Page-ID': '6677' }, sdp: sdp(41016), hangupAfterMs: 200 });
      const [call] = await incoming;
      t.equal(call.psid, '1122334455');
      t.equal(call.pageId, '6677');
      t.match(call.sdp, /m=audio 41016 /);
      call.ringing();
      const dialog = await call.answer(sdp(40016));
      const bye = dialog.waitFor('bye', AbortSignal.timeout(5000));
      const end = await placed.done;
      await bye;
      t.equal(end.status, 200);
      t.match(end.answerSdp, /m=audio 40016 /);
    });

    t.test('inbound call; we hang up', async (t) => {
      const incoming = leg.waitFor('invite', AbortSignal.timeout(10_000));
      const placed = await pbx.placeCall({ user: '99', sdp: sdp(41018) });
      const [call] = await incoming;
      t.match(call.sdp, /^v=0\r?\n[\s\S]*m=audio 41018 /, 'an INVITE without extra headers carries its SDP as the body');
      const dialog = await call.answer(sdp(40018));
      await new Promise((r) => setTimeout(r, 100));
      await dialog.end();
      const end = await placed.done;
      t.equal(end.byeFrom, 'app');
    });
  });
}
