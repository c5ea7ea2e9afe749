/**
 * `messenger-sip-bridge setup`: makes each Page of the YAML ready for calls at Meta, and says what it did.
 *
 * For each page: checks the token (`/debug_token`: valid, a Page token of this Page, which app, the permissions the
 * bridge needs), subscribes the app to the webhook fields the bridge needs (`calls`, `call_permission_reply`), and
 * applies the Messenger call settings declared under `pages[].call_settings`. It reads the current state first and
 * changes only what differs, so running it twice changes nothing the second time. `--dry-run` reads and prints the
 * plan without changing anything. Meta's errors are printed in plain words with the fix (graph/errors.ts).
 */
import { parseArgs } from 'node:util';
import pino, { type Logger } from 'pino';
import type { CallSettingsConfig, Config, PageConfig } from '../config/index.js';
import { GraphError } from '../core/errors.js';
import {
  BRIDGE_WEBHOOK_FIELDS,
  REQUIRED_PERMISSIONS,
  explainGraphError,
  graphClientFromConfig,
  type GraphClient,
  type PageCallSettings,
  type TokenInfo,
  type WeeklyHours,
} from '../graph/index.js';

export const SETUP_HELP = `messenger-sip-bridge setup [--config <file>] [--dry-run]

Makes each Page of the configuration ready for Messenger calls at Meta:
  - checks its access token: valid, a Page token of that Page, which app, the permissions the bridge needs
    (${Object.keys(REQUIRED_PERMISSIONS).join(', ')});
  - subscribes the app to the Page's webhook fields ${BRIDGE_WEBHOOK_FIELDS.join(' and ')} (other fields are kept);
  - applies the Page's Messenger call settings declared in pages[].call_settings (call icon, inbound routing,
    business hours); settings not declared are left as they are.
It reads the current state first and changes only what differs. --dry-run prints the plan and changes nothing.
Exit codes: 0 all done, 1 something could not be done (each FAIL line says why and the fix), 78 invalid configuration.`;

/** Line marks: what happened to each item. */
type Mark = 'ok' | 'changed' | 'plan' | 'FAIL';

export interface SetupResult {
  changed: number;
  planned: number;
  failed: number;
}

export interface SetupOptions {
  config: Config;
  graph: GraphClient;
  dryRun: boolean;
  /** Receives each output line. */
  out: (line: string) => void;
  /** Per Graph request (ms); default the config's meta.graph_timeout_ms. */
  timeoutMs?: number;
}

const DAY_ORDER = ['MONDAY', 'TUESDAY', 'WEDNESDAY', 'THURSDAY', 'FRIDAY', 'SATURDAY', 'SUNDAY'];

function sortedHours(hours: readonly WeeklyHours[]): WeeklyHours[] {
  return [...hours]
    .map((h) => ({ day_of_week: h.day_of_week.toUpperCase(), open_time: h.open_time, close_time: h.close_time }))
    .sort((a, b) => DAY_ORDER.indexOf(a.day_of_week) - DAY_ORDER.indexOf(b.day_of_week) || a.open_time.localeCompare(b.open_time));
}

function describeHours(hours: PageCallSettings['call_hours']): string {
  if (hours === undefined) return 'none';
  const days = sortedHours(hours.weekly_operating_hours ?? [])
    .map((h) => `${h.day_of_week.slice(0, 3)} ${h.open_time}-${h.close_time}`)
    .join(', ');
  return `${hours.timezone_id ?? '(no time zone)'}: ${days === '' ? 'no hours' : days}`;
}

/** One setting `setup` may change: its label, the wanted and current values in words, and the body that sets it. */
interface SettingChange {
  label: string;
  same: boolean;
  from: string;
  to: string;
  body: PageCallSettings;
}

/** The settings the YAML declares, compared with Meta's. */
export function diffCallSettings(wanted: CallSettingsConfig, current: PageCallSettings): SettingChange[] {
  const changes: SettingChange[] = [];
  if (wanted.icon_enabled !== undefined) {
    const word = (v: boolean | undefined): string => (v === undefined ? 'unknown' : v ? 'shown' : 'hidden');
    changes.push({
      label: 'call icon',
      same: current.icon_enabled === wanted.icon_enabled,
      from: word(current.icon_enabled),
      to: word(wanted.icon_enabled),
      body: { icon_enabled: wanted.icon_enabled },
    });
  }
  if (wanted.call_routing !== undefined) {
    const have = current.call_routing?.ring_target;
    changes.push({
      label: 'inbound routing',
      same: have === wanted.call_routing.ring_target,
      from: have ?? 'unknown',
      to: wanted.call_routing.ring_target,
      body: { call_routing: { ring_target: wanted.call_routing.ring_target } },
    });
  }
  if (wanted.call_hours !== undefined) {
    const want = { timezone_id: wanted.call_hours.timezone_id, weekly_operating_hours: sortedHours(wanted.call_hours.weekly_operating_hours) };
    const have = current.call_hours;
    const same =
      have?.timezone_id === want.timezone_id &&
      JSON.stringify(sortedHours(have.weekly_operating_hours ?? [])) === JSON.stringify(want.weekly_operating_hours);
    changes.push({ label: 'business hours', same, from: describeHours(have), to: describeHours(want), body: { call_hours: want } });
  }
  return changes;
}

function describeToken(info: TokenInfo): string {
  const app = info.application !== undefined ? `"${info.application}" (${info.appId ?? '?'})` : (info.appId ?? 'unknown');
  const expires =
    info.expiresAt === undefined ? '' : info.expiresAt === 0 ? ', never expires' : `, expires ${new Date(info.expiresAt * 1000).toISOString()}`;
  return `${info.type === 'PAGE' ? 'Page token' : `${info.type ?? 'token'}`} of app ${app}${expires}`;
}

/** The token problems that make the rest pointless, or undefined when the token is usable. */
function tokenProblem(info: TokenInfo, page: PageConfig, appId: string | undefined): string | undefined {
  if (!info.valid) {
    const why = info.error?.message ?? 'Meta says the token is not valid';
    return `token not valid: ${why}${info.error?.code !== undefined ? ` (Meta code ${info.error.code})` : ''} - fix: create a new Page access token for this Page and put it in pages[].access_token`;
  }
  if (info.type !== undefined && info.type !== 'PAGE') {
    return `this is a ${info.type} token, not a Page token - fix: use a Page access token of page ${page.id}`;
  }
  if (info.profileId !== undefined && info.profileId !== page.id) {
    return `the token belongs to page ${info.profileId}, not ${page.id} - fix: use this Page's own access token`;
  }
  if (appId !== undefined && info.appId !== undefined && info.appId !== appId) {
    return `the token was issued for app ${info.appId}, not meta.app_id ${appId} - fix: create the Page token with the bridge's app`;
  }
  return undefined;
}

class SetupRun {
  readonly result: SetupResult = { changed: 0, planned: 0, failed: 0 };

  constructor(readonly options: SetupOptions) {}

  line(mark: Mark, text: string): void {
    if (mark === 'changed') this.result.changed++;
    if (mark === 'plan') this.result.planned++;
    if (mark === 'FAIL') this.result.failed++;
    this.options.out(`  ${mark.padEnd(8)}${text}`);
  }

  signal(): AbortSignal {
    return AbortSignal.timeout(3 * (this.options.timeoutMs ?? this.options.config.meta.graph_timeout_ms));
  }

  /** A change: printed as planned under --dry-run, else made and printed as changed, or FAIL with Meta's words. */
  async change(what: string, apply: () => Promise<void>): Promise<void> {
    if (this.options.dryRun) {
      this.line('plan', `would ${what}`);
      return;
    }
    try {
      await apply();
      this.line('changed', what);
    } catch (err) {
      this.line('FAIL', `could not ${what}: ${explainGraphError(err)}`);
    }
  }

  async page(page: PageConfig): Promise<void> {
    const { graph, config } = this.options;
    this.options.out(`page ${page.id}${page.name !== undefined ? ` (${page.name})` : ''}`);
    const appId = config.meta.app_id;
    let info: TokenInfo;
    try {
      info = await graph.inspectToken(page.id, appId !== undefined ? `${appId}|${config.meta.app_secret}` : undefined, this.signal());
    } catch (err) {
      const appTokenRefused = appId !== undefined && err instanceof GraphError && err.code === 'GRAPH_BAD_TOKEN';
      this.line(
        'FAIL',
        appTokenRefused
          ? `token check: Meta refused the app token made of meta.app_id and meta.app_secret (${err.message}) - fix: check meta.app_id and meta.app_secret against the app's Basic settings`
          : `token check: ${explainGraphError(err)}`,
      );
      return;
    }
    const problem = tokenProblem(info, page, appId);
    if (problem !== undefined) {
      this.line('FAIL', problem);
      return;
    }
    this.line('ok', `token valid: ${describeToken(info)}`);
    const missing = Object.keys(REQUIRED_PERMISSIONS).filter((p) => !info.scopes.includes(p));
    if (missing.length === 0) {
      this.line('ok', `permissions: ${Object.keys(REQUIRED_PERMISSIONS).join(', ')}`);
    } else {
      const needs = missing.map((p) => `${p} (for ${REQUIRED_PERMISSIONS[p]})`).join(', ');
      this.line('FAIL', `permission missing: ${needs} - fix: grant it to the app and create a new Page token that carries it`);
    }
    await this.subscription(page, info.appId);
    await this.callSettings(page);
  }

  async subscription(page: PageConfig, appId: string | undefined): Promise<void> {
    const { graph } = this.options;
    let current: string[];
    try {
      const apps = await graph.subscribedApps(page.id, this.signal());
      current = apps.find((a) => a.appId === appId)?.fields ?? [];
    } catch (err) {
      this.line('FAIL', `webhook subscription: could not read it: ${explainGraphError(err)}`);
      return;
    }
    const missing = BRIDGE_WEBHOOK_FIELDS.filter((f) => !current.includes(f));
    if (missing.length === 0) {
      this.line('ok', `webhook fields subscribed: ${BRIDGE_WEBHOOK_FIELDS.join(', ')}`);
      return;
    }
    const keep = current.length > 0 ? ` (keeping ${current.join(', ')})` : '';
    await this.change(`subscribe the app to webhook fields ${missing.join(', ')}${keep}`, () =>
      graph.subscribeApp(page.id, [...current, ...missing], this.signal()),
    );
  }

  async callSettings(page: PageConfig): Promise<void> {
    const { graph } = this.options;
    let current: PageCallSettings;
    try {
      current = await graph.callSettings(page.id, this.signal());
    } catch (err) {
      this.line('FAIL', `call settings: could not read them: ${explainGraphError(err)}`);
      return;
    }
    const wanted = page.call_settings ?? {};
    if (page.call_settings === undefined) this.line('ok', 'call settings: none declared in pages[].call_settings (left as they are at Meta)');
    for (const c of diffCallSettings(wanted, current)) {
      if (c.same) this.line('ok', `${c.label}: ${c.to}`);
      else await this.change(`set ${c.label}: ${c.from} -> ${c.to}`, () => graph.updateCallSettings(page.id, c.body, this.signal()));
    }
    if (wanted.call_routing === undefined && current.call_routing?.ring_target === 'META') {
      this.line(
        'FAIL',
        "inbound routing is META: people's calls go to Meta's inbox, not to this bridge - fix: set pages[].call_settings.call_routing.ring_target: PARTNERS and run setup again",
      );
    }
  }
}

/** Set up every page of the config; prints through `out`. */
export async function setupPages(options: SetupOptions): Promise<SetupResult> {
  const run = new SetupRun(options);
  for (const page of options.config.pages) await run.page(page);
  const { changed, planned, failed } = run.result;
  const summary = options.dryRun ? `${planned} change(s) planned (dry run: nothing changed)` : `${changed} change(s) made`;
  options.out(`setup: ${summary}, ${failed} problem(s)`);
  return run.result;
}

/** The CLI entry: parses argv, loads the config, runs, returns the exit code. */
export async function runSetup(args: string[], defaultConfig: string, out: (line: string) => void, log?: Logger): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: { config: { type: 'string', short: 'c' }, 'dry-run': { type: 'boolean', default: false } },
    allowPositionals: true,
  });
  const { loadConfig } = await import('../config/index.js');
  const config = loadConfig(positionals[0] ?? values.config ?? defaultConfig);
  const graph = graphClientFromConfig(config, log ?? pino({ level: 'silent' }));
  const result = await setupPages({ config, graph, dryRun: values['dry-run'] === true, out });
  return result.failed > 0 ? 1 : 0;
}
