/**
 * With `logging.hash_psid`, no log line of a call carries the person's PSID: a consumer-initiated call, and a
 * business-initiated one that goes through the permission check (whose state transition used to write it raw).
 */
import t from 'tap';
import { PAGE_ID, PSID, startHarness, until } from '../../helpers/bridgeHarness.js';

const offer = ['v=0', 'o=pbx 1 1 IN IP4 127.0.0.1', 's=-', 'c=IN IP4 127.0.0.1', 't=0 0', 'm=audio 40000 RTP/AVP 0', 'a=rtpmap:0 PCMU/8000', ''].join('\r\n');

t.test('hash_psid: the PSID appears in no log line, only its hash', async (t) => {
  const h = await startHarness({ captureLogs: true, config: { logging: { hash_psid: true } } });
  t.teardown(() => h.close());
  h.drachtio.pbx.onInvite((invite) => invite.reject(486, 'Busy Here'));
  const consumer = h.sim.placeCall({ pageId: PAGE_ID, psid: PSID });
  await until(() => h.logs().some((l) => l.msg === 'call summary' && JSON.stringify(l).includes(consumer)), 10_000, 'consumer call over');

  h.sim.graph.setPermission(PAGE_ID, PSID, 'no_permission');
  const business = await h.drachtio.pbx.call({ user: PSID, sdp: offer }).final;
  t.equal(business.status, 403);
  await until(() => h.logs().filter((l) => l.msg === 'call summary').length >= 2, 5000, 'business call over');

  const lines = h.logs();
  const leaking = lines.filter((l) => JSON.stringify(l).includes(PSID)).map((l) => l.msg);
  t.same(leaking, [], 'no line carries the PSID');
  t.ok(lines.some((l) => JSON.stringify(l).includes('psid sha256:')), 'the permission step is logged with the hash');
});
