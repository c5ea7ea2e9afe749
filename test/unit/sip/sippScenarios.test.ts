import t from 'tap';
import { spawnSync } from 'node:child_process';
import { createSippPbxSide } from '../../helpers/pbx.js';

// The sipp scenarios of the real-PBX backend, run against each other (sipp UAC -> sipp UAS, no drachtio):
// proves the XML, the placeholders and the message-log parsing before a real drachtio-server is involved.
const hasSipp = spawnSync('sipp', ['-v']).status !== null;
const dummy = { host: '127.0.0.1', port: 1, secret: 'x' };
const sdp = (port: number): string =>
  ['v=0', `o=- 1 1 IN IP4 127.0.0.1`, 's=-', 'c=IN IP4 127.0.0.1', 't=0 0', `m=audio ${port} RTP/AVP 0`, 'a=rtpmap:0 PCMU/8000'].join('\r\n');

function portOf(uri: string): number {
  return Number(/:(\d+)$/.exec(uri)![1]);
}

t.test('sipp scenarios', { skip: hasSipp ? false : 'sipp not installed (Debian package sip-tester)' }, async (t) => {
  t.test('UAC with headers -> UAS answers with our SDP, UAS hangs up', async (t) => {
    const callee = await createSippPbxSide({ drachtio: dummy, sip: { address: '127.0.0.1', port: 0 } });
    t.teardown(() => callee.close());
    const inbound = await callee.expectInvite({ sdp: sdp(41000), ringMs: 20, hangupAfterMs: 200 });
    const caller = await createSippPbxSide({ drachtio: dummy, sip: { address: '127.0.0.1', port: portOf(inbound.targetUri) } });
    t.teardown(() => caller.close());
    const placed = await caller.placeCall({ user: '4242', headers: { 'X-Messenger-PSID': '4242', 'X-Messenger-Page-ID': '99' }, sdp: sdp(42000) });
    const [side, call] = await Promise.all([inbound.done, placed.done]);
    t.equal(call.status, 200);
    t.match(call.answerSdp, /m=audio 41000 RTP\/AVP 0/, 'the UAS answered with the SDP we gave it');
    t.equal(side.invite.header('X-Messenger-PSID'), '4242', 'custom header arrived');
    t.equal(side.invite.header('X-Messenger-Page-ID'), '99');
    t.match(side.invite.requestUri, /^sip:4242@127\.0\.0\.1:\d+$/);
    t.match(side.invite.sdp, /m=audio 42000 /);
    t.equal(side.byeFrom, 'pbx');
    t.equal(call.byeFrom, 'app', 'from the caller, the BYE came from the other side');
  });

  t.test('UAC hangs up, UAS waits for the BYE', async (t) => {
    const callee = await createSippPbxSide({ drachtio: dummy, sip: { address: '127.0.0.1', port: 0 } });
    t.teardown(() => callee.close());
    const inbound = await callee.expectInvite({ sdp: sdp(41002), ringMs: 10 });
    const caller = await createSippPbxSide({ drachtio: dummy, sip: { address: '127.0.0.1', port: portOf(inbound.targetUri) } });
    t.teardown(() => caller.close());
    const placed = await caller.placeCall({ user: '1', sdp: sdp(42002), hangupAfterMs: 100 });
    const [side, call] = await Promise.all([inbound.done, placed.done]);
    t.equal(call.status, 200);
    t.equal(call.byeFrom, 'pbx');
    t.equal(side.byeFrom, 'app');
  });

  t.test('UAS rejects: the UAC reports the status', async (t) => {
    const callee = await createSippPbxSide({ drachtio: dummy, sip: { address: '127.0.0.1', port: 0 } });
    t.teardown(() => callee.close());
    const inbound = await callee.expectInvite({ reject: 486 });
    const caller = await createSippPbxSide({ drachtio: dummy, sip: { address: '127.0.0.1', port: portOf(inbound.targetUri) } });
    t.teardown(() => caller.close());
    const placed = await caller.placeCall({ user: '1', sdp: sdp(42004) });
    const call = await placed.done;
    t.equal(call.status, 486);
    t.equal((await inbound.done).byeFrom, 'none');
  });
});
