/**
 * The Graph shapes `setup` and `doctor` read: a token's debug info, the Page's app subscriptions and its Messenger
 * call settings. Where each comes from is in docs/META-CALLING.md. Parsers accept what Meta documents and ignore the
 * rest; a field that is absent stays undefined (never a guessed default).
 */

/** What `/debug_token` says of a token. */
export interface TokenInfo {
  valid: boolean;
  /** The app the token was issued for. */
  appId?: string;
  /** The app's name. */
  application?: string;
  /** 'PAGE', 'USER', 'APP', ... */
  type?: string;
  /** For a Page token: the Page's id. */
  profileId?: string;
  /** Permissions the token carries. */
  scopes: string[];
  /** Unix s; 0 = never. */
  expiresAt?: number;
  /** Why Meta considers it invalid. */
  error?: { code?: number; message?: string };
}

/** One app subscribed to a Page's webhooks (`GET /{page-id}/subscribed_apps`). */
export interface AppSubscription {
  appId: string;
  name?: string;
  fields: string[];
}

export interface WeeklyHours {
  day_of_week: string;
  /** HHMM */
  open_time: string;
  /** HHMM */
  close_time: string;
}

/** The Page's Messenger call settings, as `GET /{page-id}/messenger_call_settings` returns them. */
export interface PageCallSettings {
  icon_enabled?: boolean;
  audio_enabled?: boolean;
  video_enabled?: boolean;
  call_routing?: { ring_target: string };
  call_hours?: { timezone_id?: string; weekly_operating_hours?: WeeklyHours[] };
}

/** The fields setup reads back. */
export const CALL_SETTINGS_FIELDS = ['icon_enabled', 'audio_enabled', 'call_routing', 'call_hours'] as const;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : typeof v === 'number' ? String(v) : undefined);

/** `{ data: { app_id, type, application, is_valid, scopes, profile_id, expires_at, error } }` */
export function parseTokenInfo(body: unknown): TokenInfo {
  const data = isObject(body) && isObject(body.data) ? body.data : {};
  const error = isObject(data.error) ? data.error : undefined;
  const expires = Number(data.expires_at);
  const info: TokenInfo = {
    valid: data.is_valid === true,
    scopes: Array.isArray(data.scopes) ? data.scopes.filter((s): s is string => typeof s === 'string') : [],
  };
  const appId = str(data.app_id);
  if (appId !== undefined) info.appId = appId;
  if (typeof data.application === 'string') info.application = data.application;
  if (typeof data.type === 'string') info.type = data.type;
  const profileId = str(data.profile_id);
  if (profileId !== undefined) info.profileId = profileId;
  if (Number.isFinite(expires)) info.expiresAt = expires;
  if (error) {
    info.error = {
      ...(typeof error.code === 'number' ? { code: error.code } : {}),
      ...(typeof error.message === 'string' ? { message: error.message } : {}),
    };
  }
  return info;
}

/** `{ data: [{ id, name, subscribed_fields: [...] }] }` */
export function parseSubscribedApps(body: unknown): AppSubscription[] {
  const data = isObject(body) && Array.isArray(body.data) ? body.data : [];
  const apps: AppSubscription[] = [];
  for (const item of data) {
    if (!isObject(item)) continue;
    const appId = str(item.id);
    if (appId === undefined) continue;
    const fields = Array.isArray(item.subscribed_fields) ? item.subscribed_fields.filter((f): f is string => typeof f === 'string') : [];
    apps.push({ appId, ...(typeof item.name === 'string' ? { name: item.name } : {}), fields });
  }
  return apps;
}

/** `{ data: [{ icon_enabled, audio_enabled, call_routing: { ring_target }, call_hours: {...} }] }` (Graph edge format). */
export function parseCallSettings(body: unknown): PageCallSettings {
  const item = isObject(body) && Array.isArray(body.data) && isObject(body.data[0]) ? body.data[0] : isObject(body) ? body : {};
  const out: PageCallSettings = {};
  for (const key of ['icon_enabled', 'audio_enabled', 'video_enabled'] as const) {
    if (typeof item[key] === 'boolean') out[key] = item[key];
  }
  if (isObject(item.call_routing) && typeof item.call_routing.ring_target === 'string') {
    out.call_routing = { ring_target: item.call_routing.ring_target.toUpperCase() };
  }
  if (isObject(item.call_hours)) {
    const hours = item.call_hours;
    out.call_hours = {
      ...(typeof hours.timezone_id === 'string' ? { timezone_id: hours.timezone_id } : {}),
      ...(Array.isArray(hours.weekly_operating_hours)
        ? {
            weekly_operating_hours: hours.weekly_operating_hours.filter(isObject).map((h) => ({
              day_of_week: String(h.day_of_week ?? '').toUpperCase(),
              open_time: String(h.open_time ?? ''),
              close_time: String(h.close_time ?? ''),
            })),
          }
        : {}),
    };
  }
  return out;
}

/** The webhook fields the bridge needs on every Page: calls, and permission replies for business-initiated calls. */
export const BRIDGE_WEBHOOK_FIELDS = ['calls', 'call_permission_reply'] as const;

/** Permissions a Page token needs for the bridge, and what each is for. */
export const REQUIRED_PERMISSIONS: Readonly<Record<string, string>> = {
  pages_messaging: 'calls and the calling_optin message',
  pages_manage_metadata: 'the webhook subscription and the call settings',
};
