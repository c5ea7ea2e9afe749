import t from 'tap';
import { decideAsUac, decideAsUas, expiryDeadlineMs, parseSessionExpires } from '../../../src/sip/sessionTimer.js';

t.test('parseSessionExpires', async (t) => {
  t.same(parseSessionExpires('1800;refresher=uac'), { deltaSec: 1800, refresher: 'uac' });
  t.same(parseSessionExpires(' 600 ; refresher=UAS'), { deltaSec: 600, refresher: 'uas' });
  t.same(parseSessionExpires('900'), { deltaSec: 900 });
  t.equal(parseSessionExpires('abc'), undefined);
  t.equal(parseSessionExpires(undefined), undefined);
});

t.test('as UAS: the PBX choice is honoured; without timer support we refresh', async (t) => {
  t.same(decideAsUas({}), { kind: 'none' });
  t.same(decideAsUas({ sessionExpires: '60' }), { kind: 'too_small', minSe: 90 });
  t.same(decideAsUas({ sessionExpires: '1800;refresher=uac', supported: 'replaces, timer' }), {
    kind: 'timer',
    timer: { expiresSec: 1800, refresher: 'them' },
    responseHeaders: { 'Session-Expires': '1800;refresher=uac', Require: 'timer' },
  });
  t.same(decideAsUas({ sessionExpires: '1800', supported: 'timer' }), {
    kind: 'timer',
    timer: { expiresSec: 1800, refresher: 'them' },
    responseHeaders: { 'Session-Expires': '1800;refresher=uac', Require: 'timer' },
  });
  t.same(decideAsUas({ sessionExpires: '1800' }), {
    kind: 'timer',
    timer: { expiresSec: 1800, refresher: 'us' },
    responseHeaders: { 'Session-Expires': '1800;refresher=uas' },
  });
});

t.test('as UAC: refresher=uac in the 2xx means us', async (t) => {
  t.same(decideAsUac('1800;refresher=uac'), { expiresSec: 1800, refresher: 'us' });
  t.same(decideAsUac('1800;refresher=uas'), { expiresSec: 1800, refresher: 'them' });
  t.equal(decideAsUac(undefined), undefined);
  t.equal(expiryDeadlineMs(1800), (1800 - 32) * 1000);
  t.equal(expiryDeadlineMs(90), 60_000);
});
