/**
 * `setup` against the simulated Graph API: a good page (changes made once, then nothing), the dry run, a bad token,
 * a missing permission, a settings call Meta refuses, and the fields of other apps or features that must be kept.
 */
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import t from 'tap';
import { setupPages } from '../../../src/cli/setup.js';
import { parseConfig, type ConfigInput } from '../../../src/config/index.js';
import { graphClientFromConfig } from '../../../src/graph/index.js';
import { createGraphSimulator, type GraphSimulator, type GraphSimulatorOptions } from '../../../src/simulator/graph/index.js';

const PAGE = '106378625516323';
const TOKEN = 'page-token-1';
const APP = { id: '555000111', name: 'Acme bridge', secret: 'app-secret' };

const CALL_SETTINGS = {
  icon_enabled: false,
  call_routing: { ring_target: 'PARTNERS' },
  call_hours: {
    timezone_id: 'Europe/Paris',
    weekly_operating_hours: [
      { day_of_week: 'tuesday', open_time: '0900', close_time: '1700' },
      { day_of_week: 'MONDAY', open_time: '0800', close_time: '1800' },
    ],
  },
} as const;

interface Env {
  sim: GraphSimulator;
  posts: string[];
  run(options?: { dryRun?: boolean; token?: string; callSettings?: object | null; appId?: string }): Promise<{ lines: string[]; failed: number; changed: number }>;
}

async function env(t: { teardown: (fn: () => unknown) => void }, options: Partial<GraphSimulatorOptions> = {}): Promise<Env> {
  const sim = createGraphSimulator({ pages: { [PAGE]: TOKEN }, app: APP, ...options });
  const posts: string[] = [];
  sim.events.on('request', (r) => {
    if (r.action === 'subscribe_app' || r.action === 'update_call_settings') posts.push(r.action);
  });
  await sim.app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(() => sim.close());
  const base = `http://127.0.0.1:${(sim.app.server.address() as AddressInfo).port}`;
  return {
    sim,
    posts,
    async run(o = {}) {
      const input: ConfigInput = {
        meta: { app_secret: APP.secret, verify_token: 'v', graph_base_url: base, graph_timeout_ms: 2000, ...(o.appId !== undefined ? { app_id: o.appId } : {}) },
        pages: [{ id: PAGE, name: 'Support', access_token: o.token ?? TOKEN, ...(o.callSettings === null ? {} : { call_settings: o.callSettings ?? CALL_SETTINGS }) }],
      };
      const config = parseConfig(input, {});
      const graph = graphClientFromConfig(config, pino({ level: 'silent' }));
      const lines: string[] = [];
      const result = await setupPages({ config, graph, dryRun: o.dryRun ?? false, out: (l) => lines.push(l) });
      return { lines, failed: result.failed, changed: result.changed };
    },
  };
}

t.test('a good page: token and permissions checked, webhook fields subscribed, settings applied; a second run changes nothing', async (t) => {
  const e = await env(t);
  const first = await e.run();
  const text = first.lines.join('\n');
  t.equal(first.failed, 0, text);
  t.match(text, /ok\s+token valid: Page token of app "Acme bridge" \(555000111\), never expires/);
  t.match(text, /ok\s+permissions: pages_messaging, pages_manage_metadata/);
  t.match(text, /changed\s+subscribe the app to webhook fields calls, call_permission_reply/);
  t.match(text, /changed\s+set call icon: shown -> hidden/);
  t.match(text, /changed\s+set inbound routing: META -> PARTNERS/);
  t.match(text, /changed\s+set business hours: none -> Europe\/Paris: MON 0800-1800, TUE 0900-1700/);
  t.match(text, /setup: 4 change\(s\) made, 0 problem\(s\)/);
  t.same(e.sim.subscribedFields(PAGE).sort(), ['call_permission_reply', 'calls']);
  t.match(e.sim.callSettingsOf(PAGE), {
    icon_enabled: false,
    call_routing: { ring_target: 'PARTNERS' },
    call_hours: { timezone_id: 'Europe/Paris', weekly_operating_hours: [{ day_of_week: 'MONDAY', open_time: '0800' }, { day_of_week: 'TUESDAY' }] },
  });
  t.equal(e.posts.length, 4, 'one POST per change');

  const second = await e.run();
  t.equal(second.failed, 0);
  t.equal(second.changed, 0, second.lines.join('\n'));
  t.equal(e.posts.length, 4, 'nothing written the second time');
  t.match(second.lines.join('\n'), /ok\s+webhook fields subscribed: calls, call_permission_reply/);
  t.match(second.lines.join('\n'), /ok\s+business hours: Europe\/Paris: MON 0800-1800, TUE 0900-1700/);
});

t.test('--dry-run prints the plan and changes nothing', async (t) => {
  const e = await env(t);
  const { lines, failed, changed } = await e.run({ dryRun: true });
  const text = lines.join('\n');
  t.equal(failed, 0, text);
  t.equal(changed, 0);
  t.match(text, /plan\s+would subscribe the app to webhook fields calls, call_permission_reply/);
  t.match(text, /plan\s+would set inbound routing: META -> PARTNERS/);
  t.match(text, /setup: 4 change\(s\) planned \(dry run: nothing changed\)/);
  t.same(e.posts, []);
  t.same(e.sim.subscribedFields(PAGE), []);
  t.equal((e.sim.callSettingsOf(PAGE).call_routing as { ring_target: string }).ring_target, 'META');
});

t.test('fields another app or feature subscribed are kept', async (t) => {
  const e = await env(t);
  e.sim.setSubscription(PAGE, APP.id, ['messages', 'calls']);
  const { lines } = await e.run();
  t.match(lines.join('\n'), /subscribe the app to webhook fields call_permission_reply \(keeping messages, calls\)/);
  t.same(e.sim.subscribedFields(PAGE).sort(), ['call_permission_reply', 'calls', 'messages']);
});

t.test('a bad token: one FAIL line with Meta\'s words and the fix, nothing else tried', async (t) => {
  const e = await env(t);
  const requests: string[] = [];
  e.sim.events.on('request', (r) => requests.push(r.action));
  const { lines, failed } = await e.run({ token: 'expired-token' });
  const text = lines.join('\n');
  t.equal(failed, 1, text);
  t.match(text, /FAIL\s+token check: inspect_token: access token invalid or expired.*Meta code 190.*fix: create a new Page access token/);
  t.same(requests, ['inspect_token'], 'no subscription or settings request with a bad token');
});

t.test('with meta.app_id the token is checked with the app token, which tells a token it does not know', async (t) => {
  const e = await env(t);
  const { lines, failed } = await e.run({ token: 'someone-elses', appId: APP.id });
  t.equal(failed, 1);
  t.match(lines.join('\n'), /FAIL\s+token not valid: Invalid OAuth access token.*\(Meta code 190\) - fix: create a new Page access token/);
  const good = await e.run({ appId: APP.id });
  t.equal(good.failed, 0, good.lines.join('\n'));
  const other = await e.run({ appId: '999' });
  t.match(other.lines.join('\n'), /FAIL\s+token check: Meta refused the app token made of meta.app_id and meta.app_secret.*fix: check meta.app_id and meta.app_secret/);
});

t.test('a missing permission: named with what it is for, and Meta\'s refusal of the subscription in plain words', async (t) => {
  const e = await env(t, { pageScopes: { [PAGE]: ['pages_messaging'] } });
  const { lines, failed } = await e.run();
  const text = lines.join('\n');
  t.match(text, /FAIL\s+permission missing: pages_manage_metadata \(for the webhook subscription and the call settings\) - fix: grant it/);
  t.match(text, /FAIL\s+webhook subscription: could not read it: subscribed_apps: permission error \(Meta code 200: \(#200\) Requires pages_manage_metadata permission.*fix: grant the named permission/);
  t.match(text, /FAIL\s+call settings: could not read them/);
  t.equal(failed, 3);
  t.same(e.posts, []);
});

t.test('a settings call Meta refuses: that setting FAILs with the reason, the others are applied', async (t) => {
  const e = await env(t);
  e.sim.failNext('update_call_settings', { status: 200, body: { result: 'failure' } });
  e.sim.failNext('update_call_settings', {
    status: 400,
    body: { error: { message: '(#200) The user does not have permission to change this setting', type: 'OAuthException', code: 200, fbtrace_id: 'AbC' } },
  });
  const { lines, failed, changed } = await e.run();
  const text = lines.join('\n');
  t.match(text, /FAIL\s+could not set call icon: shown -> hidden: update_call_settings: Meta answered result: failure - fix: Meta did not apply it/);
  t.match(text, /FAIL\s+could not set inbound routing: META -> PARTNERS: update_call_settings: permission error \(Meta code 200: \(#200\) The user does not have permission.*\[fbtrace_id AbC\]/);
  t.match(text, /changed\s+set business hours/);
  t.equal(failed, 2);
  t.equal(changed, 2, 'subscription and hours');
  t.equal(e.sim.callSettingsOf(PAGE).icon_enabled, true, 'the refused setting is unchanged');
});

t.test('no call_settings in the YAML: left alone, but routing to Meta\'s inbox is a FAIL with the fix', async (t) => {
  const e = await env(t);
  const { lines, failed } = await e.run({ callSettings: null });
  const text = lines.join('\n');
  t.match(text, /ok\s+call settings: none declared/);
  t.match(text, /FAIL\s+inbound routing is META: people's calls go to Meta's inbox.*ring_target: PARTNERS/);
  t.equal(failed, 1);
  t.same(e.posts, ['subscribe_app']);
});
