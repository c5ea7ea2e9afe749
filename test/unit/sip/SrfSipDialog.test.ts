import t from 'tap';
import { EventEmitter } from 'node:events';
import { pino } from 'pino';
import { SrfSipDialog } from '../../../src/sip/SrfSipDialog.js';
import type { SrfDialog } from '../../../src/sip/srfTypes.js';

// Session-timer behaviour with short intervals on a stand-in for srf's Dialog (the real intervals are >= 90 s;
// the SIP side of refreshes is covered against the drachtio double in DrachtioSipLeg.test.ts).
const log = pino({ level: 'silent' });

class FakeSrfDialog extends EventEmitter {
  readonly id = 'call-1;from-tag=abc';
  readonly type = 'uac' as const;
  connected = true;
  readonly sip = { callId: 'call-1', localTag: 'abc', remoteTag: 'def' };
  local = { uri: 'sip:a@h', sdp: 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n', contact: '<sip:127.0.0.1:5060>' };
  remote = { uri: 'sip:b@h', sdp: 'v=0\r\no=- 2 1 IN IP4 127.0.0.1\r\n' };
  readonly res = { body: '', type: 'response' as const, get: () => undefined, has: () => false };
  modifies: Array<{ sdp: string; headers?: Record<string, string> }> = [];
  destroys = 0;
  failModify = false;

  async destroy(): Promise<unknown> {
    this.destroys += 1;
    return undefined;
  }
  async modify(sdp: string, opts?: { headers?: Record<string, string> }): Promise<string> {
    this.modifies.push({ sdp, headers: opts?.headers });
    if (this.failModify) throw Object.assign(new Error('481'), { status: 481 });
    return this.remote.sdp;
  }
  async request(): Promise<never> {
    throw new Error('not used');
  }
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
