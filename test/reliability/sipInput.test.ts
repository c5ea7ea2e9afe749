/**
 * Bad SIP input from the PBX side: INVITEs from outside the ACL, wrong digest credentials, malformed, codec-less,
 * video-only and missing SDP, huge headers and a huge Request-URI user. Each is refused with the right code and a
 * log line, and nothing allocated for it is left afterwards.
 */
import t from 'tap';
import { PSID, startHarness } from '../helpers/bridgeHarness.js';
import {
  assertNothingLeft,
  baseline,
  checkedFigure,
  figureAgainst,
  leakCount,
  leftOver,
  recordFigures,
  type FigureRow,
} from '../helpers/reliability.js';

const sdp = (mLine: string, rtpmaps: string[]): string =>
  ['v=0', 'o=pbx 1 1 IN IP4 127.0.0.1', 's=-', 'c=IN IP4 127.0.0.1', 't=0 0', mLine, ...rtpmaps, 'a=sendrecv', ''].join('\r\n');
const GOOD_SDP = sdp('m=audio 40000 RTP/AVP 0', ['a=rtpmap:0 PCMU/8000']);

interface SipCase {
  name: string;
  call: Parameters<import('../helpers/drachtio/index.js').FakePbx['call']>[0];
  status: number;
  /** A bridge warning that says why (or the call summary line carries status and reason). */
  log: RegExp;
}

const cases: SipCase[] = [
  { name: 'source outside the ACL', call: { user: PSID, sdp: GOOD_SDP, source: { address: '10.1.2.3', port: 5060 }, auth: { username: 'pbx', password: 'pbx-password' } }, status: 403, log: /outside the ACL/ },
  { name: 'IPv6 source outside the ACL', call: { user: PSID, sdp: GOOD_SDP, source: { address: '2001:db8::1', port: 5060 }, auth: { username: 'pbx', password: 'pbx-password' } }, status: 403, log: /outside the ACL/ },
  { name: 'wrong digest password', call: { user: PSID, sdp: GOOD_SDP, auth: { username: 'pbx', password: 'wrong' } }, status: 401, log: /digest auth/ },
  { name: 'unknown digest user', call: { user: PSID, sdp: GOOD_SDP, auth: { username: 'mallory', password: 'pbx-password' } }, status: 401, log: /digest auth/ },
  { name: 'no SDP (late offer)', call: { user: PSID, sdp: '', auth: { username: 'pbx', password: 'pbx-password' } }, status: 488, log: /without SDP/ },
  { name: 'malformed SDP', call: { user: PSID, sdp: 'this is not SDP\r\n\u0000\u00ff', auth: { username: 'pbx', password: 'pbx-password' } }, status: 488, log: /refus|SDP/i },
  { name: 'SDP without any codec we speak', call: { user: PSID, sdp: sdp('m=audio 40000 RTP/AVP 18 9', ['a=rtpmap:18 G729/8000', 'a=rtpmap:9 G722/8000']), auth: { username: 'pbx', password: 'pbx-password' } }, status: 488, log: /refus|codec/i },
  { name: 'SDP with an audio line and no payload types', call: { user: PSID, sdp: sdp('m=audio 40000 RTP/AVP', []), auth: { username: 'pbx', password: 'pbx-password' } }, status: 488, log: /refus|codec|SDP/i },
  { name: 'SDP with only video', call: { user: PSID, sdp: sdp('m=video 40000 RTP/AVP 96', ['a=rtpmap:96 VP8/90000']), auth: { username: 'pbx', password: 'pbx-password' } }, status: 488, log: /refus|audio|SDP/i },
  { name: 'huge header (64 KiB) on an INVITE for a page we do not serve', call: { user: PSID, sdp: GOOD_SDP, headers: { 'X-Messenger-Page-ID': '9'.repeat(65_536) }, auth: { username: 'pbx', password: 'pbx-password' } }, status: 404, log: /refus/ },
  { name: 'huge Request-URI user (8 KiB of digits)', call: { user: '7'.repeat(8192), sdp: GOOD_SDP, auth: { username: 'pbx', password: 'pbx-password' } }, status: 400, log: /malformed PSID/ },
  { name: 'huge unrelated header (64 KiB) on a call without permission', call: { user: '1111', sdp: GOOD_SDP, headers: { 'X-Junk': 'x'.repeat(65_536) }, auth: { username: 'pbx', password: 'pbx-password' } }, status: 403, log: /refus|permission/ },
];

t.test('bad INVITEs are refused with the right code and a log line, and leave nothing', async (t) => {
  const h = await startHarness({
    codecs: ['PCMU'],
    captureLogs: true,
    config: { sip: { acl: ['127.0.0.1/32', '::1/128'], digest: { realm: 'bridge', username: 'pbx', password: 'pbx-password' }, default_page: '106378625516323' } },
  });
  t.teardown(() => h.close());
  h.sim.graph.setPermission('106378625516323', '1111', 'no_permission');
  const base = await baseline(h);
  const figures: FigureRow[] = [['bad INVITEs sent', cases.length + 1]];
  for (const c of cases) {
    const before = h.logs().length;
    const final = await h.drachtio.pbx.call(c.call).final;
    figures.push(checkedFigure(t, `  ${c.name} (final status)`, final.status, '==', c.status));
    if (final.status !== 401) t.match(final.response.get('reason') ?? '', /SIP;cause=\d+/, `${c.name}: Reason header`);
    await new Promise((resolve) => setTimeout(resolve, 100));
    // A warning that says why, or the call's summary line with the status sent and the reason.
    const lines = h.logs().slice(before).filter((l) => {
      const summary = l.summary as { sipStatus?: number; reason?: string } | undefined;
      if (l.msg === 'call summary') return summary?.sipStatus === c.status && !!summary.reason;
      return (l.level as number) >= 40 && c.log.test(String(l.msg));
    });
    const said = lines.map((l) => (l.summary as { reason?: string } | undefined)?.reason ?? l.msg).join(' | ');
    t.ok(lines.length > 0, `${c.name}: logged (${said || 'nothing'})`);
  }
  // The bridge still takes a good INVITE afterwards (it gets as far as Meta, which refuses for lack of permission).
  const goodCall = h.drachtio.pbx.call({ user: '1111', sdp: GOOD_SDP, auth: { username: 'pbx', password: 'pbx-password' } });
  const good = await goodCall.final;
  t.equal(good.status, 403, 'a well-formed INVITE is still handled');
  // Its credentials, captured and sent again in a new INVITE, are refused: the nonce count was used.
  const captured = goodCall.invites.at(-1)?.get('Authorization');
  t.ok(captured, 'the good INVITE carried credentials');
  const before = h.logs().length;
  const replay = await h.drachtio.pbx.call({ user: '1111', sdp: GOOD_SDP, headers: { Authorization: captured! } }).final;
  figures.push(checkedFigure(t, '  replayed credentials of an earlier INVITE (final status)', replay.status, '==', 401));
  t.match(replay.response.get('www-authenticate') ?? '', /stale=true/, 'with a fresh nonce (stale=true)');
  t.ok(
    h.logs().slice(before).some((l) => l.msg === 'INVITE failed digest auth' && l.reason === 'replayed'),
    'logged as a replay',
  );

  const left = await leftOver(h, base);
  assertNothingLeft(t, left, 'after the bad INVITEs');
  recordFigures('sipInput', {
    title: 'SIP input',
    figures: [...figures, figureAgainst('leaks found', leakCount(left), '==', 0)],
  });
});
