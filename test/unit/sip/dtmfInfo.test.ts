import t from 'tap';
import { parseDtmfInfo } from '../../../src/sip/dtmfInfo.js';

t.test('application/dtmf-relay', async (t) => {
  t.same(parseDtmfInfo('application/dtmf-relay', 'Signal=5\r\nDuration=160\r\n'), { digit: '5', durationMs: 160 });
  t.same(parseDtmfInfo('Application/DTMF-Relay; charset=x', 'Signal= *\nDuration= 90'), { digit: '*', durationMs: 90 });
  t.same(parseDtmfInfo('application/dtmf-relay', 'Signal=11\r\nDuration=100'), { digit: '#', durationMs: 100 }, 'numeric 11 is #');
  t.same(parseDtmfInfo('application/dtmf-relay', 'Signal=a'), { digit: 'A', durationMs: 250 }, 'default duration');
  t.throws(() => parseDtmfInfo('application/dtmf-relay', 'Duration=100'), /no DTMF digit/);
  t.throws(() => parseDtmfInfo('application/dtmf-relay', 'Signal=X'), /no DTMF digit/);
});

t.test('application/dtmf and other types', async (t) => {
  t.same(parseDtmfInfo('application/dtmf', '7'), { digit: '7', durationMs: 250 });
  t.same(parseDtmfInfo('application/dtmf', '#\r\nDuration=120'), { digit: '#', durationMs: 120 });
  t.equal(parseDtmfInfo('application/media_control+xml', '<x/>'), undefined);
  t.equal(parseDtmfInfo(undefined, ''), undefined);
});
