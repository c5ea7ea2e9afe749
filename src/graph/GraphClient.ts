/**
 * The Graph API client for Messenger calling, over the global fetch.
 *
 * Retries (exponential backoff with jitter, bounded by a deadline and the caller's signal):
 * - checkPermission (GET), reject and terminate (idempotent: ending an ended call changes nothing) are retried on
 *   5xx, timeouts and network errors;
 * - accept, connect, mediaUpdate and requestPermission change state at Meta or reach the person, and a lost
 *   response cannot tell whether Meta acted: they are retried only when the connection was refused, i.e. the
 *   request provably never left this host.
 * The access token travels only in the Authorization header; it is never logged. One exception to "never in a URL":
 * `/debug_token` takes the token it inspects as the `input_token` query parameter (Meta documents no other way); that
 * URL is not logged either.
 */
import { isMetaCallId } from '../core/ids.js';
import { createHmac } from 'node:crypto';
import type { Logger } from 'pino';
import type { AcceptResult, CallMetricsReport, ConnectResult, GraphPort, PermissionResult, TrackUpdate } from '../calls/ports.js';
import { GraphError } from '../core/errors.js';
import type { Metrics } from '../observability/Metrics.js';
import { graphErrorFromResponse } from './errors.js';
import {
  CALL_SETTINGS_FIELDS,
  parseCallSettings,
  parseSubscribedApps,
  parseTokenInfo,
  type AppSubscription,
  type PageCallSettings,
  type TokenInfo,
} from './pageSetup.js';

/** What the Graph client counts: each request by action, result, code and duration. */
export type GraphMetrics = Pick<Metrics, 'graphRequest'>;

export type PageTokens = ReadonlyMap<string, string> | ((pageId: string) => string | undefined);

export interface RetryOptions {
  /** Attempts in all, first included. Default 3. */
  attempts?: number;
  /** First backoff (ms), doubled each time, with ±50 % jitter. Default 200. */
  baseDelayMs?: number;
  /** Cap on one backoff (ms). Default 2000. */
  maxDelayMs?: number;
  /** No attempt starts after this long from the first (ms). Default 3 × timeoutMs. */
  deadlineMs?: number;
}

export interface GraphClientOptions {
  /** e.g. 'https://graph.facebook.com' (no version). */
  baseUrl: string;
  /** e.g. 'v23.0'. */
  version: string;
  pages: PageTokens;
  /** Per request (ms). */
  timeoutMs: number;
  log: Logger;
  /** Where the client counts its requests (the daemon passes its Metrics). */
  metrics?: GraphMetrics;
  retry?: RetryOptions;
  /**
   * When set, every request carries `appsecret_proof` = hex HMAC-SHA256 of its access token keyed with this
   * app secret (Meta requires it when the app's "Require App Secret" setting is on).
   */
  appSecretForProof?: string;
}

/** Meta's `appsecret_proof` for a token. */
export function appSecretProof(accessToken: string, appSecret: string): string {
  return createHmac('sha256', appSecret).update(accessToken).digest('hex');
}

type RetryPolicy = 'safe' | 'refused_only';

interface RequestSpec {
  action: string;
  method: 'GET' | 'POST';
  /** The page whose token authorizes the request (and whose node is requested unless `path` is given). */
  pageId: string;
  /** Path after /{version}/{page-id}/ ('' for the page node itself). */
  edge: string;
  /** Path after /{version}/ instead of the page's (e.g. 'debug_token'). */
  path?: string;
  /** Authorize with this token instead of the page's (the app token for /debug_token). */
  authToken?: string;
  /** Sees each HTTP response (e.g. for its Date header). */
  onResponse?: (response: Response) => void;
  query?: Record<string, string>;
  body?: unknown;
  retry: RetryPolicy;
  signal?: AbortSignal;
  /** For logs only. */
  callId?: string;
}

/** `{sdp_type, sdp}` or a bare string: Meta's examples show both. */
function sdpOf(value: unknown): string | undefined {
  if (typeof value === 'string' && value !== '') return value;
  if (typeof value === 'object' && value !== null && typeof (value as { sdp?: unknown }).sdp === 'string') {
    const sdp = (value as { sdp: string }).sdp;
    return sdp === '' ? undefined : sdp;
  }
  return undefined;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Statuses meaning the person may be called. */
const GRANTED = new Set(['has_permission', 'temporary_permission', 'permanent', 'temporary', 'granted', 'approved', 'approve', 'accept']);

/**
 * Read a permission answer. Accepted shapes:
 * - documented: `{ permission: { status, expiration_time }, actions: [{ action_name: 'start_call', can_perform }] }`;
 *   `actions[start_call].can_perform` decides when present, else the status;
 * - list: `{ data: [{ permission_status | status, expiration_time }] }` (first element).
 * Granting statuses: has_permission, temporary_permission, permanent, temporary, granted, approved.
 * An `expiration_time` (unix s) in the past means no permission.
 */
export function parsePermission(body: unknown, nowSec = Date.now() / 1000): PermissionResult {
  let status: string | undefined;
  let expires: number | undefined;
  let canPerform: boolean | undefined;
  if (isObject(body)) {
    const perm = isObject(body.permission) ? body.permission : Array.isArray(body.data) && isObject(body.data[0]) ? body.data[0] : undefined;
    if (perm) {
      const s = perm.status ?? perm.permission_status;
      if (typeof s === 'string') status = s.toLowerCase();
      const e = Number(perm.expiration_time ?? perm.expiration_timestamp);
      if (Number.isFinite(e) && e > 0) expires = e;
    }
    if (Array.isArray(body.actions)) {
      const start = body.actions.find((a) => isObject(a) && a.action_name === 'start_call');
      if (isObject(start) && typeof start.can_perform === 'boolean') canPerform = start.can_perform;
    }
  }
  let canCall = canPerform ?? (status !== undefined && GRANTED.has(status));
  if (expires !== undefined && expires < nowSec) canCall = false;
  return { canCall, ...(expires !== undefined ? { expiresAt: expires } : {}), raw: body };
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

function noToken(action: string, pageId: string): GraphError {
  return new GraphError('GRAPH_UNKNOWN_PAGE', `${action}: no access token for page ${pageId}`, { httpStatus: 0, retryable: false });
}

/** The connection was refused: the request never left, so repeating it cannot act twice. */
function wasRefused(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if ((e as NodeJS.ErrnoException).code === 'ECONNREFUSED') return true;
    if (e instanceof AggregateError && e.errors.some((inner) => (inner as NodeJS.ErrnoException).code === 'ECONNREFUSED')) return true;
  }
  return false;
}

export class GraphClient implements GraphPort {
  readonly #baseUrl: string;
  readonly #version: string;
  readonly #pages: PageTokens;
  readonly #timeoutMs: number;
  readonly #log: Logger;
  readonly #metrics?: GraphMetrics;
  readonly #retry: Required<RetryOptions>;
  #appSecretForProof?: string;

  constructor(options: GraphClientOptions) {
    this.#baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.#version = options.version;
    this.#pages = options.pages;
    this.#timeoutMs = options.timeoutMs;
    this.#log = options.log.child({ component: 'graph' });
    this.#metrics = options.metrics;
    this.#appSecretForProof = options.appSecretForProof;
    this.#retry = {
      attempts: options.retry?.attempts ?? 3,
      baseDelayMs: options.retry?.baseDelayMs ?? 200,
      maxDelayMs: options.retry?.maxDelayMs ?? 2000,
      deadlineMs: options.retry?.deadlineMs ?? 3 * options.timeoutMs,
    };
  }

  async accept(pageId: string, callId: string, sdpOffer: string, signal?: AbortSignal): Promise<AcceptResult> {
    const body = await this.#request({
      action: 'accept',
      method: 'POST',
      pageId,
      edge: 'calls',
      callId,
      body: { platform: 'messenger', call_id: callId, action: 'accept', session: { sdp_type: 'offer', sdp: sdpOffer } },
      retry: 'refused_only',
      signal,
    });
    const session = isObject(body) && isObject(body.session) ? body.session : undefined;
    const sdpAnswer = sdpOf(session?.sdp_response);
    if (sdpAnswer === undefined) {
      throw new GraphError('GRAPH_BAD_RESPONSE', 'accept: the response carries no session.sdp_response', {
        httpStatus: 200,
        retryable: false,
      });
    }
    const sdpRenegotiation = sdpOf(session?.sdp_renegotiation);
    return sdpRenegotiation !== undefined ? { sdpAnswer, sdpRenegotiation } : { sdpAnswer };
  }

  async reject(pageId: string, callId: string, signal?: AbortSignal): Promise<void> {
    await this.#request({
      action: 'reject',
      method: 'POST',
      pageId,
      edge: 'calls',
      callId,
      body: { platform: 'messenger', call_id: callId, action: 'reject' },
      retry: 'safe',
      signal,
    });
  }

  async terminate(pageId: string, callId: string, signal?: AbortSignal): Promise<void> {
    await this.#request({
      action: 'terminate',
      method: 'POST',
      pageId,
      edge: 'calls',
      callId,
      body: { platform: 'messenger', call_id: callId, action: 'terminate' },
      retry: 'safe',
      signal,
    });
  }

  /** Send `appsecret_proof` keyed with this app secret from now on, or none (configuration reload). */
  setAppSecretForProof(appSecret: string | undefined): void {
    this.#appSecretForProof = appSecret;
  }

  async connect(pageId: string, psid: string, sdpOffer: string, signal?: AbortSignal): Promise<ConnectResult> {
    const body = await this.#request({
      action: 'connect',
      method: 'POST',
      pageId,
      edge: 'calls',
      body: { platform: 'messenger', to: psid, action: 'connect', session: { sdp_type: 'offer', sdp: sdpOffer } },
      retry: 'refused_only',
      signal,
    });
    const id = isObject(body) ? body.id : undefined;
    if (typeof id !== 'string' || id === '') {
      throw new GraphError('GRAPH_BAD_RESPONSE', 'connect: the response carries no call id', { httpStatus: 200, retryable: false });
    }
    // It goes into a SIP header toward the PBX.
    if (!isMetaCallId(id)) {
      throw new GraphError('GRAPH_BAD_RESPONSE', 'connect: the response carries a malformed call id', { httpStatus: 200, retryable: false });
    }
    const sdpAnswer = sdpOf(isObject(body) && isObject(body.session) ? body.session.sdp_response : undefined);
    return sdpAnswer !== undefined ? { callId: id, sdpAnswer } : { callId: id };
  }

  async mediaUpdate(
    pageId: string,
    callId: string,
    update: { fromVersion: number; toVersion: number; tracks: TrackUpdate[]; sdpOffer?: string },
    signal?: AbortSignal,
  ): Promise<{ sdpAnswer?: string }> {
    const body = await this.#request({
      action: 'media_update',
      method: 'POST',
      pageId,
      edge: 'calls',
      callId,
      body: {
        platform: 'messenger',
        call_id: callId,
        action: 'media_update',
        from_version: update.fromVersion,
        to_version: update.toVersion,
        tracks: update.tracks.map((t) => ({ ...(t.msid !== undefined ? { msid: t.msid } : {}), label: t.label, status: t.status })),
        ...(update.sdpOffer !== undefined ? { session: { sdp_type: 'offer', sdp: update.sdpOffer } } : {}),
      },
      retry: 'refused_only',
      signal,
    });
    const sdpAnswer = sdpOf(isObject(body) && isObject(body.session) ? body.session.sdp_response : undefined);
    return sdpAnswer !== undefined ? { sdpAnswer } : {};
  }

  async checkPermission(pageId: string, psid: string, signal?: AbortSignal): Promise<PermissionResult> {
    const body = await this.#request({
      action: 'check_permission',
      method: 'GET',
      pageId,
      edge: 'messenger_call_permissions',
      query: { psid },
      retry: 'safe',
      signal,
    });
    return parsePermission(body);
  }

  /**
   * The `calling_optin` template, as Meta's business-initiated call flow shows it:
   * `POST /{page-id}/messages {recipient: {id: psid}, message: {attachment: {type: 'template',
   * payload: {template_type: 'calling_optin'}}}}`. Meta limits it to 2 a day per person.
   */
  async requestPermission(pageId: string, psid: string, signal?: AbortSignal): Promise<void> {
    await this.#request({
      action: 'request_permission',
      method: 'POST',
      pageId,
      edge: 'messages',
      body: {
        recipient: { id: psid },
        message: { attachment: { type: 'template', payload: { template_type: 'calling_optin' } } },
      },
      retry: 'refused_only',
      signal,
    });
  }

  /**
   * What Meta says of the page's token (`GET /debug_token?input_token=`): valid, app, type, page, permissions.
   * Authorized with `appToken` (`<app-id>|<app-secret>`) when given, else with the page token itself.
   */
  async inspectToken(pageId: string, appToken?: string, signal?: AbortSignal): Promise<TokenInfo> {
    const token = this.#token(pageId);
    if (token === undefined) throw noToken('inspect_token', pageId);
    const body = await this.#request({
      action: 'inspect_token',
      method: 'GET',
      pageId,
      edge: '',
      path: 'debug_token',
      query: { input_token: token },
      ...(appToken !== undefined ? { authToken: appToken } : {}),
      retry: 'safe',
      signal,
    });
    return parseTokenInfo(body);
  }

  /** The page node (`GET /{page-id}?fields=id,name`) and the Date header of Meta's answer. */
  async pageInfo(pageId: string, signal?: AbortSignal): Promise<{ id: string; name?: string; serverDate?: Date }> {
    let serverDate: Date | undefined;
    const body = await this.#request({
      action: 'page_info',
      method: 'GET',
      pageId,
      edge: '',
      query: { fields: 'id,name' },
      retry: 'safe',
      signal,
      onResponse: (response) => {
        const date = response.headers.get('date');
        const parsed = date !== null ? new Date(date) : undefined;
        if (parsed !== undefined && !Number.isNaN(parsed.getTime())) serverDate = parsed;
      },
    });
    const id = isObject(body) && (typeof body.id === 'string' || typeof body.id === 'number') ? String(body.id) : pageId;
    const name = isObject(body) && typeof body.name === 'string' ? body.name : undefined;
    return { id, ...(name !== undefined ? { name } : {}), ...(serverDate !== undefined ? { serverDate } : {}) };
  }

  /** The apps subscribed to the page's webhooks, with their fields (`GET /{page-id}/subscribed_apps`). */
  async subscribedApps(pageId: string, signal?: AbortSignal): Promise<AppSubscription[]> {
    const body = await this.#request({ action: 'subscribed_apps', method: 'GET', pageId, edge: 'subscribed_apps', retry: 'safe', signal });
    return parseSubscribedApps(body);
  }

  /**
   * Subscribe the token's app to the page's webhook `fields` (`POST /{page-id}/subscribed_apps`). Meta replaces the
   * app's field list with this one: pass every field the app should keep. Setting the same list twice changes
   * nothing, so it is retried like a read.
   */
  async subscribeApp(pageId: string, fields: readonly string[], signal?: AbortSignal): Promise<void> {
    await this.#request({
      action: 'subscribe_app',
      method: 'POST',
      pageId,
      edge: 'subscribed_apps',
      body: { subscribed_fields: fields.join(',') },
      retry: 'safe',
      signal,
    });
  }

  /** The page's Messenger call settings (`GET /{page-id}/messenger_call_settings`). */
  async callSettings(pageId: string, signal?: AbortSignal): Promise<PageCallSettings> {
    const body = await this.#request({
      action: 'call_settings',
      method: 'GET',
      pageId,
      edge: 'messenger_call_settings',
      query: { fields: CALL_SETTINGS_FIELDS.join(',') },
      retry: 'safe',
      signal,
    });
    return parseCallSettings(body);
  }

  /**
   * Change some of the page's Messenger call settings (`POST /{page-id}/messenger_call_settings`). Meta answers
   * `{ result: 'success' | 'failure' }`; a failure throws GRAPH_SETTINGS_REFUSED.
   */
  async updateCallSettings(pageId: string, settings: PageCallSettings, signal?: AbortSignal): Promise<void> {
    const body = await this.#request({
      action: 'update_call_settings',
      method: 'POST',
      pageId,
      edge: 'messenger_call_settings',
      body: settings,
      retry: 'safe',
      signal,
    });
    if (isObject(body) && typeof body.result === 'string' && body.result !== 'success') {
      throw new GraphError('GRAPH_SETTINGS_REFUSED', `update_call_settings: Meta answered result: ${body.result}`, {
        httpStatus: 200,
        retryable: false,
      });
    }
  }

  /**
   * A call's quality, after it ended (`POST /{page-id}/call_metrics`). Optional for Meta: retried only when the
   * connection was refused, within the client's attempts, never beyond.
   */
  async submitCallMetrics(pageId: string, report: CallMetricsReport, signal?: AbortSignal): Promise<void> {
    await this.#request({
      action: 'call_metrics',
      method: 'POST',
      pageId,
      edge: 'call_metrics',
      callId: report.call_id,
      body: report,
      retry: 'refused_only',
      signal,
    });
  }

  #token(pageId: string): string | undefined {
    return typeof this.#pages === 'function' ? this.#pages(pageId) : this.#pages.get(pageId);
  }

  async #request(spec: RequestSpec): Promise<unknown> {
    const token = spec.authToken ?? this.#token(spec.pageId);
    if (token === undefined) throw noToken(spec.action, spec.pageId);
    const where = spec.path ?? (spec.edge === '' ? encodeURIComponent(spec.pageId) : `${encodeURIComponent(spec.pageId)}/${spec.edge}`);
    const url = new URL(`${this.#baseUrl}/${this.#version}/${where}`);
    for (const [k, v] of Object.entries(spec.query ?? {})) url.searchParams.set(k, v);
    // The proof is derived from the token (not the token itself): Meta documents it as a request parameter.
    if (this.#appSecretForProof !== undefined) url.searchParams.set('appsecret_proof', appSecretProof(token, this.#appSecretForProof));
    const log = this.#log.child({ action: spec.action, pageId: spec.pageId, ...(spec.callId ? { callId: spec.callId } : {}) });
    const started = Date.now();
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#attempt(spec, url, token, log);
      } catch (err) {
        if (!(err instanceof GraphError)) throw err;
        const may =
          spec.retry === 'safe' ? err.httpStatus === 0 || err.httpStatus >= 500 : err.code === 'GRAPH_NETWORK' && wasRefused(err);
        const delay = Math.min(this.#retry.maxDelayMs, this.#retry.baseDelayMs * 2 ** (attempt - 1)) * (0.5 + Math.random());
        const withinDeadline = Date.now() - started + delay < this.#retry.deadlineMs;
        if (!may || attempt >= this.#retry.attempts || !withinDeadline || spec.signal?.aborted) {
          log.warn(
            { code: err.code, httpStatus: err.httpStatus, metaCode: err.metaCode, fbtraceId: err.fbtraceId, attempt },
            `graph request failed: ${err.message}`,
          );
          throw err;
        }
        log.info({ code: err.code, attempt, delayMs: Math.round(delay) }, 'graph request failed, retrying');
        try {
          await sleep(delay, spec.signal);
        } catch {
          throw err;
        }
      }
    }
  }

  async #attempt(spec: RequestSpec, url: URL, token: string, log: Logger): Promise<unknown> {
    const timeout = AbortSignal.timeout(this.#timeoutMs);
    const signal = spec.signal ? AbortSignal.any([timeout, spec.signal]) : timeout;
    const started = performance.now();
    const seconds = (): number => (performance.now() - started) / 1000;
    let response: Response;
    let text: string;
    try {
      response = await fetch(url, {
        method: spec.method,
        headers: {
          authorization: `Bearer ${token}`,
          accept: 'application/json',
          ...(spec.body !== undefined ? { 'content-type': 'application/json' } : {}),
        },
        body: spec.body !== undefined ? JSON.stringify(spec.body) : undefined,
        signal,
      });
      text = await response.text();
      spec.onResponse?.(response);
    } catch (err) {
      if (spec.signal?.aborted) {
        this.#metrics?.graphRequest(spec.action, 'error', 'aborted', seconds());
        throw new GraphError('GRAPH_ABORTED', `${spec.action}: aborted by the caller`, { httpStatus: 0, retryable: false }, { cause: err });
      }
      if (timeout.aborted) {
        this.#metrics?.graphRequest(spec.action, 'timeout', '', seconds());
        throw new GraphError('GRAPH_TIMEOUT', `${spec.action}: no answer within ${this.#timeoutMs} ms`, { httpStatus: 0, retryable: true }, { cause: err });
      }
      this.#metrics?.graphRequest(spec.action, 'network', '', seconds());
      const detail = err instanceof Error ? (err.cause instanceof Error ? err.cause.message : err.message) : String(err);
      throw new GraphError('GRAPH_NETWORK', `${spec.action}: network error: ${detail}`, { httpStatus: 0, retryable: true }, { cause: err });
    }
    let body: unknown;
    try {
      body = text === '' ? {} : JSON.parse(text);
    } catch (err) {
      body = undefined;
      if (response.ok) {
        this.#metrics?.graphRequest(spec.action, 'error', response.status, seconds());
        throw new GraphError('GRAPH_BAD_RESPONSE', `${spec.action}: the response is not JSON`, { httpStatus: response.status, retryable: false }, { cause: err });
      }
    }
    if (!response.ok || (isObject(body) && body.error !== undefined)) {
      const error = graphErrorFromResponse(spec.action, response.status, body);
      this.#metrics?.graphRequest(spec.action, 'error', error.metaCode ?? response.status, seconds());
      throw error;
    }
    if (isObject(body) && body.success === false) {
      this.#metrics?.graphRequest(spec.action, 'error', 'unsuccessful', seconds());
      throw new GraphError('GRAPH_UNSUCCESSFUL', `${spec.action}: Meta answered success: false`, { httpStatus: response.status, retryable: false });
    }
    this.#metrics?.graphRequest(spec.action, 'ok', '', seconds());
    log.debug({ httpStatus: response.status, ms: Math.round(seconds() * 1000) }, 'graph request done');
    return body;
  }
}

/** The client as the configuration describes it. */
export function graphClientFromConfig(
  config: {
    meta: { graph_base_url: string; graph_version: string; graph_timeout_ms: number; app_secret: string; appsecret_proof: boolean };
    pages: readonly { id: string; access_token: string }[];
  },
  log: Logger,
  metrics?: GraphMetrics,
): GraphClient {
  return new GraphClient({
    baseUrl: config.meta.graph_base_url,
    version: config.meta.graph_version,
    pages: new Map(config.pages.map((p) => [p.id, p.access_token])),
    timeoutMs: config.meta.graph_timeout_ms,
    log,
    metrics,
    ...(config.meta.appsecret_proof ? { appSecretForProof: config.meta.app_secret } : {}),
  });
}
