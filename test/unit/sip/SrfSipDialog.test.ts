import t from 'tap';
import { pino } from 'pino';
import { SrfSipDialog, parseReferTo } from '../../../src/sip/SrfSipDialog.js';
import type { SrfDialog, SrfRequest, SrfResponse } from '../../../src/sip/srfTypes.js';
import type { TransferRequest } from '../../../src/calls/ports.js';
import { FakeSrfDialog } from '../../helpers/srfDialogFake.js';

// Session-timer behaviour with short intervals on a stand-in for srf's Dialog (the real intervals are >= 90 s;
// the SIP side of refreshes is covered against the drachtio double in DrachtioSipLeg.test.ts).
const log = pino({ level: 'silent' });

/** A REFER arriving on `fake` as srf delivers it; resolves with the response the dialog sent. */
function referOn(fake: FakeSrfDialog, headers: Record<string, string>): { sent: Promise<{ status: number; headers?: Record<string, string> }> } {
  let resolve!: (v: { status: number; headers?: Record<string, string> }) => void;
  const sent = new Promise<{ status: number; headers?: Record<string, string> }>((r) => (resolve = r));
  const lower = new Map(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
  const req = { method: 'REFER', body: '', get: (name: string) => lower.get(name.toLowerCase()), has: (name: string) => lower.has(name.toLowerCase()) };
  const res = { send: (status: number, opts?: { headers?: Record<string, string> }) => resolve({ status, headers: opts?.headers }) };
  fake.emit('refer', req as unknown as SrfRequest, res as unknown as SrfResponse);
  return { sent };
}

t.test('we refresh: re-INVITE with our SDP and Session-Expires every half interval', async (t) => {
  const fake = new FakeSrfDialog();
  const dialog = new SrfSipDialog({ dialog: fake as unknown as SrfDialog, log, sessionTimer: { expiresSec: 0.2, refresher: 'us' } });
  const deadline = Date.now() + 3000;
  while (fake.modifies.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  t.ok(fake.modifies.length >= 2, 'refreshed again and again');
  t.equal(fake.modifies[0]!.sdp, fake.local.sdp, 'unchanged SDP');
  t.equal(fake.modifies[0]!.headers?.['Session-Expires'], '0.2;refresher=uac');
  await dialog.end();
  const count = fake.modifies.length;
  await new Promise((r) => setTimeout(r, 150));
  t.equal(fake.modifies.length, count, 'no refresh after end()');
});

t.test('a failed refresh ends the call', async (t) => {
  const fake = new FakeSrfDialog();
  fake.failModify = true;
  const dialog = new SrfSipDialog({ dialog: fake as unknown as SrfDialog, log, sessionTimer: { expiresSec: 0.1, refresher: 'us' } });
  await dialog.waitFor('bye', AbortSignal.timeout(2000));
  t.equal(dialog.ended, true);
  t.equal(fake.destroys, 1, 'BYE sent');
});

t.test('the PBX refreshes: no refresh for the interval ends the call; the far end BYE stops the timer', async (t) => {
  const fake = new FakeSrfDialog();
  const dialog = new SrfSipDialog({ dialog: fake as unknown as SrfDialog, log, sessionTimer: { expiresSec: 0.15, refresher: 'them' } });
  const started = Date.now();
  await dialog.waitFor('bye', AbortSignal.timeout(2000));
  t.ok(Date.now() - started >= 90, 'not before expires - expires/3');
  t.equal(fake.destroys, 1);
  t.equal(fake.modifies.length, 0, 'we never refresh');

  const fake2 = new FakeSrfDialog();
  const dialog2 = new SrfSipDialog({ dialog: fake2 as unknown as SrfDialog, log, sessionTimer: { expiresSec: 0.15, refresher: 'them' } });
  let byes = 0;
  dialog2.on('bye', () => (byes += 1));
  fake2.emit('destroy');
  await new Promise((r) => setTimeout(r, 200));
  t.equal(byes, 1, 'one bye (from the PBX), none from the timer');
  t.equal(fake2.destroys, 0, 'we send no BYE after theirs');
});

t.test('Refer-To parsing: URI, embedded headers decoded and stripped, non-SIP refused', async (t) => {
  t.same(parseReferTo('<sip:agent-b@10.0.0.7:5080>'), { ok: true, target: 'sip:agent-b@10.0.0.7:5080', headers: {} });
  t.same(parseReferTo('sips:queue@pbx.example.com'), { ok: true, target: 'sips:queue@pbx.example.com', headers: {} });
  t.same(
    parseReferTo('"B" <sip:b@10.0.0.7?Replaces=abc%4010.0.0.7%3Bto-tag%3D1%3Bfrom-tag%3D2&Require=replaces>;method=INVITE'),
    { ok: true, target: 'sip:b@10.0.0.7', headers: { Replaces: 'abc@10.0.0.7;to-tag=1;from-tag=2', Require: 'replaces' } },
  );
  t.same(parseReferTo('<sip:b@h?Call-ID=x&From=evil&X-Ok=1>'), { ok: true, target: 'sip:b@h', headers: { 'X-Ok': '1' } }, 'dialog headers ignored');
  t.equal(parseReferTo(undefined).ok, false);
  t.equal(parseReferTo('<tel:+15551234>').ok, false);
  t.equal(parseReferTo('<https://example.com/>').ok, false);
  t.equal(parseReferTo('<sip:b@h?X-Bad=%E0%A4%A>').ok, false, 'malformed escape');
  t.equal(parseReferTo('<sip:b@h?X-Bad=a%0D%0AVia:x>').ok, false, 'no header injection');
});

t.test('REFER: without a handler 501; bad Refer-To 400; accepted -> 202 then NOTIFY 100 (active), final NOTIFY terminated', async (t) => {
  const fake = new FakeSrfDialog();
  const dialog = new SrfSipDialog({ dialog: fake as unknown as SrfDialog, log });
  t.equal((await referOn(fake, { 'Refer-To': '<sip:b@h>' }).sent).status, 501, 'no handler: 501');

  const seen: TransferRequest[] = [];
  dialog.setTransferHandler((request) => {
    seen.push(request);
    request.accept();
  });
  t.equal((await referOn(fake, {}).sent).status, 400, 'no Refer-To');
  t.equal((await referOn(fake, { 'Refer-To': '<tel:+1555>' }).sent).status, 400, 'not a SIP URI');
  t.equal(seen.length, 0, 'the handler never saw them');

  const answered = await referOn(fake, { 'Refer-To': '<sip:b@10.0.0.7?Replaces=x%40y>', 'Referred-By': '<sip:a@10.0.0.5>' }).sent;
  t.equal(answered.status, 202);
  t.equal(seen[0]!.target, 'sip:b@10.0.0.7');
  t.same(seen[0]!.headers, { Replaces: 'x@y' });
  t.equal(seen[0]!.referredBy, '<sip:a@10.0.0.5>');
  await seen[0]!.notifyFinal(486, 'Busy Here');
  t.same(fake.requests, [
    {
      method: 'NOTIFY',
      headers: { Event: 'refer', 'Subscription-State': 'active;expires=60', 'Content-Type': 'message/sipfrag;version=2.0' },
      body: 'SIP/2.0 100 Trying\r\n',
    },
    {
      method: 'NOTIFY',
      headers: { Event: 'refer', 'Subscription-State': 'terminated;reason=noresource', 'Content-Type': 'message/sipfrag;version=2.0' },
      body: 'SIP/2.0 486 Busy Here\r\n',
    },
  ]);
});

t.test('REFER: NOTIFYs go one at a time in order; a handler refusal carries a Reason; no NOTIFY after the dialog ended', async (t) => {
  const fake = new FakeSrfDialog();
  const dialog = new SrfSipDialog({ dialog: fake as unknown as SrfDialog, log });
  let release!: () => void;
  const firstAnswered = new Promise<void>((r) => (release = r));
  let calls = 0;
  fake.answerRequest = async () => {
    calls += 1;
    if (calls === 1) await firstAnswered;
    return { status: 200 };
  };
  let request!: TransferRequest;
  dialog.setTransferHandler((r) => {
    request = r;
    r.accept();
  });
  await referOn(fake, { 'Refer-To': '<sip:b@h>' }).sent;
  const final = request.notifyFinal(200, 'OK');
  await new Promise((r) => setTimeout(r, 20));
  t.equal(fake.requests.length, 1, 'the final NOTIFY waits for the answer to the first');
  release();
  await final;
  t.equal(fake.requests.length, 2);

  dialog.setTransferHandler((r) => r.reject(491, 'a transfer is already in progress'));
  const refused = await referOn(fake, { 'Refer-To': '<sip:c@h>' }).sent;
  t.equal(refused.status, 491);
  t.match(refused.headers?.Reason, /cause=491/);

  let late!: TransferRequest;
  dialog.setTransferHandler((r) => {
    late = r;
    r.accept();
  });
  await referOn(fake, { 'Refer-To': '<sip:d@h>' }).sent;
  fake.emit('destroy');
  await late.notifyFinal(200, 'OK');
  t.equal(fake.requests.filter((r) => r.body?.includes('200 OK')).length, 1, 'no NOTIFY on an ended dialog');
});

t.test('REFER with Refer-Sub: false (RFC 4488): 202 says Refer-Sub: false and no NOTIFY is sent', async (t) => {
  const fake = new FakeSrfDialog();
  const dialog = new SrfSipDialog({ dialog: fake as unknown as SrfDialog, log });
  let request!: TransferRequest;
  dialog.setTransferHandler((r) => {
    request = r;
    r.accept();
  });
  const answered = await referOn(fake, { 'Refer-To': '<sip:b@h>', 'Refer-Sub': 'false' }).sent;
  t.equal(answered.status, 202);
  t.equal(answered.headers?.['Refer-Sub'], 'false');
  await request.notifyFinal(200, 'OK');
  await new Promise((r) => setTimeout(r, 20));
  t.same(fake.requests, [], 'no NOTIFY');
});
