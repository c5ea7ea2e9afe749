import t from 'tap';
import { selectRoute, shouldTryNextTarget, type Route } from '../../../src/sip/routing.js';

const route = (name: string, match: Route['match']): Route => ({
  name,
  match,
  targets: [`sip:${name}@pbx`],
  targetTimeoutMs: 1000,
  codecs: ['PCMU'],
  answerMode: 'on_pbx_answer',
});

t.test('routes are matched in order; an empty match is a default', async (t) => {
  const routes = [
    route('vip', { page_id: '1', psids: ['100', '101'] }),
    route('page1', { page_id: '1' }),
    route('psid-any-page', { psids: ['200'] }),
    route('default', {}),
  ];
  t.equal(selectRoute(routes, { pageId: '1', psid: '101' })?.name, 'vip');
  t.equal(selectRoute(routes, { pageId: '1', psid: '999' })?.name, 'page1');
  t.equal(selectRoute(routes, { pageId: '2', psid: '200' })?.name, 'psid-any-page');
  t.equal(selectRoute(routes, { pageId: '2', psid: '100' })?.name, 'default');
  t.equal(selectRoute(routes.slice(0, 3), { pageId: '3', psid: '1' }), undefined, 'no default: no route');
  t.equal(selectRoute([route('first', {}), route('second', {})], { pageId: '1', psid: '1' })?.name, 'first');
});

t.test('which failures move on to the next target', async (t) => {
  for (const status of [486, 487, 600, 603, 604, 606]) t.equal(shouldTryNextTarget(status), false, `${status} stops`);
  for (const status of [404, 408, 480, 488, 500, 502, 503, 504]) t.equal(shouldTryNextTarget(status), true, `${status} tries next`);
});
