/**
 * A simulated Meta Graph API for Messenger calling: the endpoints the bridge calls, with Meta's checks
 * (token, version, call state, the 60 s accept window, SDP sanity, permissions) and Meta's error shapes.
 * It keeps the state of every call, emits what the bridge did, and, given a WebhookSender, sends the webhooks
 * Meta would send. Used by the demo, `simulate-call` and the tests; no listen() here, the owner listens.
 */
import { randomBytes } from 'node:crypto';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply } from 'fastify';
import type { Logger } from 'pino';
import { TypedEmitter } from '../../core/TypedEmitter.js';
import { CALLING_ERRORS, GRAPH_ERRORS, type MetaErrorInfo } from '../../graph/errors.js';
import { appSecretProof } from '../../graph/GraphClient.js';
import type { WebhookSender } from '../webhookSender.js';
import { cannedAnswer, offerProblem } from './sdp.js';

export type SimCallState = 'ringing' | 'accepted' | 'rejected' | 'terminated';
export type SimAction =
  | 'accept'
  | 'reject'
  | 'terminate'
  | 'connect'
  | 'media_update'
  | 'check_permission'
  | 'request_permission'
  | 'inspect_token'
  | 'page_info'
  | 'subscribed_apps'
  | 'subscribe_app'
  | 'call_settings'
  | 'update_call_settings'
  | 'call_metrics';

export interface SimCall {
  readonly callId: string;
  readonly pageId: string;
  readonly psid: string;
  readonly direction: 'user_initiated' | 'business_initiated';
  state: SimCallState;
  /** Unix ms. */
  readonly createdAt: number;
  acceptedAt?: number;
  endedAt?: number;
  /** e.g. 'Not Answered', 'Rejected', 'Completed', 'Declined'. */
  endReason?: string;
  /** The business's SDP offer (accept or connect). */
  offer?: string;
  /** The answer Meta gave. */
  answer?: string;
  /** Highest media_update version sent to the bridge. */
  mediaVersion: number;
}

export interface SimTerminateEvent {
  pageId: string;
  callId: string;
  call: SimCall;
  /** Who ended it. */
  by: 'business' | 'consumer' | 'timeout';
  /** The terminate webhook item Meta sends for it. */
  status: 'Completed' | 'Failed';
  startTime: number;
  endTime: number;
  /** Seconds since the business connected; undefined if it never did. */
  duration?: number;
}

export interface GraphSimulatorEvents {
  /** A call was created (consumer dialing, or a business connect). */
  call: [SimCall];
  accept: [{ pageId: string; callId: string; sdp: string; call: SimCall }];
  reject: [{ pageId: string; callId: string; call: SimCall }];
  /** A call ended, for any reason (Meta sends a terminate webhook for it). */
  terminate: [SimTerminateEvent];
  connect: [{ pageId: string; psid: string; callId: string; sdp: string; call: SimCall }];
  media_update: [{ pageId: string; callId: string; body: Record<string, unknown>; call: SimCall }];
  permission_request: [{ pageId: string; psid: string }];
  /** A call_metrics submission that passed validation (the body as received). */
  call_metrics: [{ pageId: string; body: Record<string, unknown> }];
  /** Every request, after it was answered. */
  request: [{ action: SimAction | 'unknown'; pageId: string; status: number; metaCode?: number }];
}

export type PermissionStatus = 'has_permission' | 'temporary_permission' | 'no_permission';

/**
 * `status` (+ `body`): answer that instead; `delayMs` alone: answer normally, late; `drop`: close the connection
 * without answering (after `delayMs` if given), as a lost response looks to the caller.
 */
export type Fault = { status: number; body?: unknown; delayMs?: number } | { delayMs: number } | { drop: true; delayMs?: number };

export interface GraphSimulatorOptions {
  /** Page id -> the access token the simulator accepts for it. */
  pages: Record<string, string>;
  log?: Logger;
  /** Supplies Meta's SDP answer (the media side of the simulator); default: a canned Meta-shaped answer. */
  answerOffer?: (ctx: { pageId: string; callId: string; sdp: string }) => Promise<string>;
  /** When given, the simulator sends the webhooks Meta would send (connect, call_status, terminate, ...). */
  webhooks?: WebhookSender;
  /** Meta's accept window (ms). Default 60000; tests shorten it. */
  acceptDeadlineMs?: number;
  /** Shape of `session.sdp_response` in accept answers: Meta's examples show both. Default 'string'. */
  acceptAnswerShape?: 'string' | 'object';
  /**
   * Meta may follow its answer at once with a renegotiation offer in the same accept response
   * (`session.sdp_renegotiation`). When given, called after `answerOffer`; a string is sent as that offer.
   */
  renegotiateOnAccept?: (ctx: { pageId: string; callId: string; answer: string }) => Promise<string | undefined>;
  /** Permission of people not set with setPermission. Default 'has_permission'. */
  defaultPermission?: PermissionStatus;
  /** Permission requests allowed per person per 24 h (Meta: 2). */
  permissionRequestsPerDay?: number;
  /** Require `appsecret_proof` on every request, computed with this app secret ("Require App Secret"). */
  requireAppSecretProof?: string;
  /** The app the page tokens were issued for; `<id>|<secret>` is its app token. Default id 100200300, no secret. */
  app?: { id: string; name: string; secret?: string };
  /** Permissions each page token carries; default every permission the bridge needs. */
  pageScopes?: Record<string, string[]>;
  /** Added to the Date header of every answer (ms): a Meta whose clock differs from this host's. */
  clockSkewMs?: number;
}

/** Permissions a page token carries when `pageScopes` does not say. */
export const SIM_DEFAULT_SCOPES = ['pages_messaging', 'pages_manage_metadata', 'pages_show_list'];

const VERSION = /^v\d+\.\d+$/;

/**
 * Answers one Graph request: faults first, then the version, the token (`accepts`, default: the page's own token) and
 * appsecret_proof checks, then `work`; a MetaFailure becomes Meta's error body.
 */
type SimHandler = (
  action: SimAction | undefined,
  pageId: string,
  version: string,
  auth: string | undefined,
  proof: unknown,
  reply: FastifyReply,
  work: () => Promise<unknown>,
  accepts?: (token: string) => boolean,
) => Promise<FastifyReply>;

/** Ended calls kept in `calls` for inspection. */
const MAX_ENDED_CALLS = 1000;

function newCallId(): string {
  return `c_${randomBytes(27).toString('base64url')}`;
}

function fbtrace(): string {
  return randomBytes(8).toString('base64url');
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

class MetaFailure extends Error {
  constructor(
    readonly info: MetaErrorInfo,
    readonly metaCode: number,
    message: string,
  ) {
    super(message);
  }
}

function calling(code: keyof typeof CALLING_ERRORS & number, message?: string): MetaFailure {
  const info = CALLING_ERRORS[code]!;
  return new MetaFailure(info, code, message ?? info.description);
}

function graph(code: number, message?: string): MetaFailure {
  const info = GRAPH_ERRORS[code]!;
  return new MetaFailure(info, code, message ?? info.description);
}

const nowSec = (): number => Math.floor(Date.now() / 1000);

export class GraphSimulator {
  readonly app: FastifyInstance;
  readonly calls = new Map<string, SimCall>();
  readonly events = new TypedEmitter<GraphSimulatorEvents>();
  readonly #pages: Record<string, string>;
  readonly #log?: Logger;
  readonly #answerOffer: (ctx: { pageId: string; callId: string; sdp: string }) => Promise<string>;
  readonly #webhooks?: WebhookSender;
  readonly #acceptDeadlineMs: number;
  readonly #acceptAnswerShape: 'string' | 'object';
  readonly #renegotiateOnAccept?: GraphSimulatorOptions['renegotiateOnAccept'];
  readonly #defaultPermission: PermissionStatus;
  readonly #requestsPerDay: number;
  readonly #requireProof?: string;
  readonly #timers = new Map<string, NodeJS.Timeout>();
  readonly #faults = new Map<SimAction, Fault[]>();
  readonly #permissions = new Map<string, { status: PermissionStatus; expiresAt?: number }>();
  readonly #permissionRequests = new Map<string, number[]>();
  readonly #app: { id: string; name: string; secret?: string };
  readonly #scopes: Record<string, string[]>;
  /** page id -> app id -> subscribed webhook fields */
  readonly #subscriptions = new Map<string, Map<string, string[]>>();
  readonly #callSettings = new Map<string, Record<string, unknown>>();
  #closed = false;

  constructor(options: GraphSimulatorOptions) {
    this.#pages = { ...options.pages };
    this.#log = options.log?.child({ component: 'graph-simulator' });
    this.#answerOffer = options.answerOffer ?? (async ({ sdp }) => cannedAnswer(sdp));
    this.#webhooks = options.webhooks;
    this.#acceptDeadlineMs = options.acceptDeadlineMs ?? 60_000;
    this.#acceptAnswerShape = options.acceptAnswerShape ?? 'string';
    this.#renegotiateOnAccept = options.renegotiateOnAccept;
    this.#defaultPermission = options.defaultPermission ?? 'has_permission';
    this.#requestsPerDay = options.permissionRequestsPerDay ?? 2;
    this.#requireProof = options.requireAppSecretProof;
    this.#app = options.app ?? { id: '100200300', name: 'messenger-sip-bridge' };
    this.#scopes = { ...options.pageScopes };
    this.app = Fastify({
      loggerInstance: this.#log as FastifyBaseLogger | undefined,
      logController: new LogController({ disableRequestLogging: true }),
      // A request still held by failNext's delay keeps its connection; without this, close() waits for the
      // keep-alive timeout (72 s) after it is answered.
      forceCloseConnections: true,
    });
    this.app.addHook('onClose', async () => this.#clearTimers());
    const skew = options.clockSkewMs;
    if (skew !== undefined) this.app.addHook('onSend', async (_req, reply) => void reply.header('date', new Date(Date.now() + skew).toUTCString()));
    this.#routes();
    this.#pageSetupRoutes();
  }

  /** A person dials the page: the call rings, awaiting accept within the accept window. Returns Meta's call id. */
  startConsumerCall(o: { pageId: string; psid: string }): string {
    const call: SimCall = {
      callId: newCallId(),
      pageId: o.pageId,
      psid: o.psid,
      direction: 'user_initiated',
      state: 'ringing',
      createdAt: Date.now(),
      mediaVersion: 0,
    };
    this.calls.set(call.callId, call);
    this.#armDeadline(call);
    this.events.safeEmit('call', call);
    this.#sendWebhook(() =>
      this.#webhooks!.connect({ callId: call.callId, pageId: call.pageId, psid: call.psid, direction: 'user_initiated', timestamp: Math.floor(call.createdAt / 1000) }),
    );
    return call.callId;
  }

  /** The person hangs up (or declines a business call while it rings). */
  hangUp(callId: string): void {
    const call = this.#mustGet(callId);
    if (call.state === 'terminated' || call.state === 'rejected') return;
    this.#end(call, 'consumer', 'Completed', call.state === 'ringing' ? 'Declined' : 'Completed');
  }

  /** Business-initiated call: the person's device rings (call_status ringing). */
  consumerRinging(callId: string): void {
    const call = this.#mustGet(callId);
    this.#sendWebhook(() => this.#webhooks!.callStatus(call.pageId, { callId, psid: call.psid, status: 'ringing' }));
  }

  /** Business-initiated call: the person picks up (call_status accepted). */
  consumerAccept(callId: string): void {
    const call = this.#mustGet(callId);
    if (call.state !== 'ringing') throw new Error(`call ${callId} is ${call.state}`);
    call.state = 'accepted';
    call.acceptedAt = Date.now();
    this.#clearTimer(callId);
    this.#sendWebhook(() => this.#webhooks!.callStatus(call.pageId, { callId, psid: call.psid, status: 'accepted' }));
  }

  /** Meta renegotiates (mute, pick-up): bumps the version and sends media_update with this offer. Returns the version. */
  sendMediaUpdate(callId: string, sdpOffer: string): number {
    const call = this.#mustGet(callId);
    call.mediaVersion += 1;
    const version = call.mediaVersion;
    this.#sendWebhook(() => this.#webhooks!.mediaUpdate(call.pageId, { callId, version, sdp: sdpOffer }));
    return version;
  }

  /** Set what the permission check answers for this person. */
  setPermission(pageId: string, psid: string, status: PermissionStatus, expiresAt?: number): void {
    this.#permissions.set(`${pageId}|${psid}`, { status, ...(expiresAt !== undefined ? { expiresAt } : {}) });
  }

  /** The person answers a permission request: updates the permission and sends call_permission_reply. */
  replyPermission(pageId: string, psid: string, response: 'approve' | 'reject', expiresAt?: number): void {
    this.setPermission(pageId, psid, response === 'approve' ? (expiresAt ? 'temporary_permission' : 'has_permission') : 'no_permission', expiresAt);
    this.#sendWebhook(() => this.#webhooks!.permissionReply({ pageId, psid, response, ...(expiresAt !== undefined ? { expiresAt } : {}) }));
  }

  /**
   * The next request for `action` fails: answered with `status` and `body` (default: a Meta error body),
   * optionally after `delayMs`; or, with only `delayMs`, is answered normally after the delay.
   */
  failNext(action: SimAction, fault: Fault): void {
    const queue = this.#faults.get(action) ?? [];
    queue.push(fault);
    this.#faults.set(action, queue);
  }

  /** The webhook fields `appId` (default the simulated app) is subscribed to on the page. */
  subscribedFields(pageId: string, appId = this.#app.id): string[] {
    return [...(this.#subscriptions.get(pageId)?.get(appId) ?? [])];
  }

  /** Subscribe another app (or ours) to fields, as set up outside the bridge. */
  setSubscription(pageId: string, appId: string, fields: string[]): void {
    const apps = this.#subscriptions.get(pageId) ?? new Map<string, string[]>();
    apps.set(appId, [...fields]);
    this.#subscriptions.set(pageId, apps);
  }

  /**
   * The page's Messenger call settings as Meta holds them. A new page: icon shown, audio on, routing to META (Meta's
   * inbox), no business hours.
   */
  callSettingsOf(pageId: string): Record<string, unknown> {
    let settings = this.#callSettings.get(pageId);
    if (settings === undefined) {
      settings = { icon_enabled: true, audio_enabled: true, video_enabled: false, call_routing: { ring_target: 'META' } };
      this.#callSettings.set(pageId, settings);
    }
    return settings;
  }

  /** Timers stopped, app closed. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#clearTimers();
    await this.app.close();
  }

  #mustGet(callId: string): SimCall {
    const call = this.calls.get(callId);
    if (!call) throw new Error(`no such simulated call ${callId}`);
    return call;
  }

  /** Meta's accept window: unanswered after it, the call ends as 'Not Answered'. */
  #armDeadline(call: SimCall): void {
    // A request still in flight while closing must not leave a timer behind.
    if (this.#closed) return;
    const timer = setTimeout(() => this.#end(call, 'timeout', 'Failed', 'Not Answered'), this.#acceptDeadlineMs);
    timer.unref();
    this.#timers.set(call.callId, timer);
  }

  #clearTimer(callId: string): void {
    const timer = this.#timers.get(callId);
    if (timer) clearTimeout(timer);
    this.#timers.delete(callId);
  }

  #clearTimers(): void {
    for (const timer of this.#timers.values()) clearTimeout(timer);
    this.#timers.clear();
  }

  #sendWebhook(send: () => Promise<{ delivered: boolean; status: number }>): void {
    if (!this.#webhooks || this.#closed) return;
    void send()
      .then((r) => {
        if (!r.delivered) this.#log?.warn({ status: r.status }, 'webhook not delivered');
      })
      .catch((err: unknown) => this.#log?.warn({ err }, 'webhook send failed'));
  }

  #end(call: SimCall, by: SimTerminateEvent['by'], status: 'Completed' | 'Failed', reason: string, state: SimCallState = 'terminated'): void {
    this.#clearTimer(call.callId);
    call.state = state;
    call.endedAt = Date.now();
    call.endReason = reason;
    const startTime = Math.floor(call.createdAt / 1000);
    const endTime = Math.floor(call.endedAt / 1000);
    const duration = call.acceptedAt !== undefined ? Math.round((call.endedAt - call.acceptedAt) / 1000) : undefined;
    const event: SimTerminateEvent = { pageId: call.pageId, callId: call.callId, call, by, status, startTime, endTime, ...(duration !== undefined ? { duration } : {}) };
    this.#log?.info({ callId: call.callId, by, reason }, 'simulated call ended');
    this.#forgetOldCalls();
    this.events.safeEmit('terminate', event);
    this.#sendWebhook(() =>
      this.#webhooks!.terminate(call.pageId, { callId: call.callId, status, startTime, endTime, ...(duration !== undefined ? { duration } : {}) }),
    );
  }

  /** Ended calls are kept for inspection, the newest MAX_ENDED_CALLS of them: long demo runs stay bounded. */
  #forgetOldCalls(): void {
    let ended = 0;
    for (const call of this.calls.values()) if (call.endedAt !== undefined) ended++;
    for (const [id, call] of this.calls) {
      if (ended <= MAX_ENDED_CALLS) break;
      if (call.endedAt === undefined) continue;
      this.calls.delete(id);
      ended--;
    }
  }

  #stateError(call: SimCall): MetaFailure {
    switch (call.state) {
      case 'accepted':
        return calling(2018392);
      case 'rejected':
        return calling(2018393);
      default:
        return calling(2018394, `call already ended (${call.endReason ?? call.state})`);
    }
  }

  #routes(): void {
    const handle: SimHandler = async (action, pageId, version, auth, proof, reply, work, accepts = (token) => this.#pages[pageId] === token) => {
      const label = action ?? 'unknown';
      const send = (status: number, body: unknown, metaCode?: number): FastifyReply => {
        this.events.safeEmit('request', { action: label, pageId, status, ...(metaCode !== undefined ? { metaCode } : {}) });
        return reply.code(status).send(body);
      };
      const fault = action ? this.#faults.get(action)?.shift() : undefined;
      if (fault?.delayMs) await new Promise((resolve) => setTimeout(resolve, fault.delayMs));
      if (fault && 'drop' in fault) {
        this.events.safeEmit('request', { action: label, pageId, status: 0 });
        reply.raw.destroy();
        return reply;
      }
      if (fault && 'status' in fault) {
        const body = fault.body ?? { error: { message: 'An unexpected error has occurred. Please retry your request later.', type: 'OAuthException', code: 2, is_transient: true, fbtrace_id: fbtrace() } };
        return send(fault.status, body, isObject(body) && isObject(body.error) && typeof body.error.code === 'number' ? body.error.code : undefined);
      }
      try {
        if (!VERSION.test(version)) {
          throw new MetaFailure({ code: 'UNKNOWN_PATH', description: 'unknown path', httpStatus: 400, retryable: false }, 2500, `Unknown path components: /${version}`);
        }
        const token = auth?.startsWith('Bearer ') ? auth.slice('Bearer '.length) : undefined;
        if (token === undefined) throw new MetaFailure(GRAPH_ERRORS[190]!, 104, 'An access token is required to request this resource.');
        if (!accepts(token)) throw graph(190, 'Invalid OAuth access token - Cannot parse access token');
        if (this.#requireProof !== undefined && proof !== appSecretProof(token, this.#requireProof)) {
          throw graph(100, proof === undefined ? 'API calls from the server require an appsecret_proof argument' : 'Invalid appsecret_proof provided in the API argument');
        }
        if (action === undefined) throw graph(100, 'Invalid parameter: action');
        return send(200, await work());
      } catch (err) {
        if (!(err instanceof MetaFailure)) throw err;
        return send(
          err.info.httpStatus,
          { error: { message: err.message, type: 'OAuthException', code: err.metaCode, fbtrace_id: fbtrace() } },
          err.metaCode,
        );
      }
    };

    this.#handle = handle;

    type Params = { version: string; pageId: string };

    const proofOf = (req: { query: unknown }): unknown => (isObject(req.query) ? req.query.appsecret_proof : undefined);

    this.app.post<{ Params: Params; Body: unknown }>('/:version/:pageId/calls', async (req, reply) => {
      const body = isObject(req.body) ? req.body : {};
      const actions: Record<string, SimAction> = {
        accept: 'accept',
        reject: 'reject',
        terminate: 'terminate',
        connect: 'connect',
        media_update: 'media_update',
      };
      const action = typeof body.action === 'string' ? actions[body.action] : undefined;
      const { pageId, version } = req.params;
      return handle(action, pageId, version, req.headers.authorization, proofOf(req), reply, async () => {
        if (body.platform !== undefined && body.platform !== 'messenger') throw graph(100, 'Invalid parameter: platform must be messenger');
        switch (action) {
          case 'connect':
            return this.#connect(pageId, body);
          case 'accept':
            return this.#accept(pageId, body);
          case 'reject':
            return this.#reject(pageId, body);
          case 'terminate':
            return this.#terminate(pageId, body);
          case 'media_update':
            return this.#mediaUpdate(pageId, body);
          default:
            throw graph(100, 'Invalid parameter: action');
        }
      });
    });

    this.app.get<{ Params: Params; Querystring: Record<string, string> }>('/:version/:pageId/messenger_call_permissions', async (req, reply) => {
      const { pageId, version } = req.params;
      return handle('check_permission', pageId, version, req.headers.authorization, proofOf(req), reply, async () => {
        const psid = req.query.psid;
        if (!psid) throw graph(100, 'Invalid parameter: psid is required');
        const perm = this.#permission(pageId, psid);
        const used = this.#requestsInLastDay(pageId, psid);
        return {
          permission: { status: perm.status, ...(perm.expiresAt !== undefined ? { expiration_time: perm.expiresAt } : {}) },
          actions: [
            {
              action_name: 'send_call_permission_request',
              can_perform: used < this.#requestsPerDay,
              limits: [{ time_period: 'PT24H', max_allowed: this.#requestsPerDay, current_usage: used }],
            },
            { action_name: 'start_call', can_perform: perm.status !== 'no_permission' },
          ],
        };
      });
    });

    this.app.post<{ Params: Params; Body: unknown }>('/:version/:pageId/messages', async (req, reply) => {
      const { pageId, version } = req.params;
      return handle('request_permission', pageId, version, req.headers.authorization, proofOf(req), reply, async () => {
        const body = isObject(req.body) ? req.body : {};
        const psid = isObject(body.recipient) && typeof body.recipient.id === 'string' ? body.recipient.id : undefined;
        if (!psid) throw graph(100, 'Invalid parameter: recipient.id');
        const message = isObject(body.message) ? body.message : undefined;
        const attachment = message && isObject(message.attachment) ? message.attachment : undefined;
        const payload = attachment && isObject(attachment.payload) ? attachment.payload : undefined;
        if (attachment?.type !== 'template' || payload?.template_type !== 'calling_optin') {
          throw graph(100, 'Invalid parameter: only the calling_optin template is simulated');
        }
        if (this.#requestsInLastDay(pageId, psid) >= this.#requestsPerDay) {
          throw calling(2018396, 'call permission request limit reached for this person (2 per 24 h)');
        }
        const list = this.#permissionRequests.get(`${pageId}|${psid}`) ?? [];
        list.push(Date.now());
        this.#permissionRequests.set(`${pageId}|${psid}`, list);
        this.events.safeEmit('permission_request', { pageId, psid });
        return { recipient: { id: psid }, message_id: `m_${randomBytes(16).toString('base64url')}` };
      });
    });
  }

  #handle?: SimHandler;

  /** The permissions a page's token carries. */
  #scopesOf(pageId: string): string[] {
    return this.#scopes[pageId] ?? SIM_DEFAULT_SCOPES;
  }

  #requireScope(pageId: string, scope: string): void {
    if (!this.#scopesOf(pageId).includes(scope)) throw graph(200, `(#200) Requires ${scope} permission to manage the object`);
  }

  /** debug_token, the page node, subscribed_apps, messenger_call_settings and call_metrics. */
  #pageSetupRoutes(): void {
    const handle = this.#handle!;
    type Params = { version: string; pageId: string };
    const proof = (q: unknown): unknown => (isObject(q) ? q.appsecret_proof : undefined);
    const appToken = this.#app.secret !== undefined ? `${this.#app.id}|${this.#app.secret}` : undefined;
    const pageOfToken = (token: string): string | undefined => Object.keys(this.#pages).find((id) => this.#pages[id] === token);

    this.app.get<{ Params: { version: string }; Querystring: Record<string, string> }>('/:version/debug_token', async (req, reply) => {
      const input = req.query.input_token;
      const inputPage = input !== undefined ? pageOfToken(input) : undefined;
      const accepts = (token: string): boolean => token === appToken || pageOfToken(token) !== undefined;
      return handle('inspect_token', inputPage ?? '', req.params.version, req.headers.authorization, proof(req.query), reply, async () => {
        if (!input) throw graph(100, 'The parameter input_token is required');
        if (inputPage === undefined) {
          return { data: { is_valid: false, scopes: [], error: { code: 190, message: 'Invalid OAuth access token - Cannot parse access token' } } };
        }
        return {
          data: {
            app_id: this.#app.id,
            type: 'PAGE',
            application: this.#app.name,
            expires_at: 0,
            is_valid: true,
            scopes: this.#scopesOf(inputPage),
            profile_id: inputPage,
          },
        };
      }, accepts);
    });

    this.app.get<{ Params: Params }>('/:version/:pageId', async (req, reply) => {
      const { pageId, version } = req.params;
      return handle('page_info', pageId, version, req.headers.authorization, proof(req.query), reply, async () => ({ id: pageId, name: `Page ${pageId}` }));
    });

    this.app.get<{ Params: Params }>('/:version/:pageId/subscribed_apps', async (req, reply) => {
      const { pageId, version } = req.params;
      return handle('subscribed_apps', pageId, version, req.headers.authorization, proof(req.query), reply, async () => {
        this.#requireScope(pageId, 'pages_manage_metadata');
        const apps = this.#subscriptions.get(pageId) ?? new Map<string, string[]>();
        return {
          data: [...apps].map(([id, fields]) => ({ id, name: id === this.#app.id ? this.#app.name : `app ${id}`, subscribed_fields: fields })),
        };
      });
    });

    this.app.post<{ Params: Params; Body: unknown }>('/:version/:pageId/subscribed_apps', async (req, reply) => {
      const { pageId, version } = req.params;
      return handle('subscribe_app', pageId, version, req.headers.authorization, proof(req.query), reply, async () => {
        this.#requireScope(pageId, 'pages_manage_metadata');
        const raw = isObject(req.body) ? req.body.subscribed_fields : undefined;
        const fields = typeof raw === 'string' ? raw.split(',').map((f) => f.trim()).filter((f) => f !== '') : Array.isArray(raw) ? raw.map(String) : [];
        if (fields.length === 0) throw graph(100, '(#100) The parameter subscribed_fields is required');
        this.setSubscription(pageId, this.#app.id, fields);
        return { success: true };
      });
    });

    this.app.get<{ Params: Params; Querystring: Record<string, string> }>('/:version/:pageId/messenger_call_settings', async (req, reply) => {
      const { pageId, version } = req.params;
      return handle('call_settings', pageId, version, req.headers.authorization, proof(req.query), reply, async () => {
        this.#requireScope(pageId, 'pages_manage_metadata');
        const settings = this.callSettingsOf(pageId);
        const fields = req.query.fields?.split(',') ?? Object.keys(settings);
        return { data: [Object.fromEntries(fields.filter((f) => f in settings).map((f) => [f, settings[f]]))] };
      });
    });

    this.app.post<{ Params: Params; Body: unknown }>('/:version/:pageId/messenger_call_settings', async (req, reply) => {
      const { pageId, version } = req.params;
      return handle('update_call_settings', pageId, version, req.headers.authorization, proof(req.query), reply, async () => {
        this.#requireScope(pageId, 'pages_manage_metadata');
        const body = isObject(req.body) ? req.body : {};
        const problem = callSettingsProblem(body);
        if (problem !== undefined) throw graph(100, `(#100) ${problem}`);
        Object.assign(this.callSettingsOf(pageId), body);
        return { result: 'success' };
      });
    });

    this.app.post<{ Params: Params; Body: unknown }>('/:version/:pageId/call_metrics', async (req, reply) => {
      const { pageId, version } = req.params;
      return handle('call_metrics', pageId, version, req.headers.authorization, proof(req.query), reply, async () => {
        const body = isObject(req.body) ? req.body : {};
        const problem = callMetricsProblem(body);
        if (problem !== undefined) throw graph(100, `(#100) ${problem}`);
        const call = this.calls.get(body.call_id as string);
        if (!call || call.pageId !== pageId) throw calling(2018389);
        this.events.safeEmit('call_metrics', { pageId, body });
        return { success: true };
      });
    });
  }

  #permission(pageId: string, psid: string): { status: PermissionStatus; expiresAt?: number } {
    const perm = this.#permissions.get(`${pageId}|${psid}`) ?? { status: this.#defaultPermission };
    if (perm.expiresAt !== undefined && perm.expiresAt < nowSec()) return { status: 'no_permission' };
    return perm;
  }

  #requestsInLastDay(pageId: string, psid: string): number {
    const since = Date.now() - 24 * 3600_000;
    return (this.#permissionRequests.get(`${pageId}|${psid}`) ?? []).filter((t) => t > since).length;
  }

  #callFor(pageId: string, body: Record<string, unknown>): SimCall {
    const callId = body.call_id;
    if (typeof callId !== 'string' || callId === '') throw graph(100, 'Invalid parameter: call_id');
    const call = this.calls.get(callId);
    if (!call || call.pageId !== pageId) throw calling(2018389);
    return call;
  }

  #offer(body: Record<string, unknown>): string {
    const session = isObject(body.session) ? body.session : undefined;
    if (session?.sdp_type !== 'offer') throw calling(2018390, 'invalid connection info: session.sdp_type must be offer');
    const problem = offerProblem(session.sdp);
    if (problem) throw calling(2018390, `invalid connection info: ${problem}`);
    return session.sdp as string;
  }

  async #accept(pageId: string, body: Record<string, unknown>): Promise<unknown> {
    const call = this.#callFor(pageId, body);
    if (call.direction !== 'user_initiated') throw graph(100, 'Invalid parameter: only consumer-initiated calls are accepted');
    if (call.state !== 'ringing') throw this.#stateError(call);
    const sdp = this.#offer(body);
    const answer = await this.#answerOffer({ pageId, callId: call.callId, sdp });
    const reoffer = this.#renegotiateOnAccept ? await this.#renegotiateOnAccept({ pageId, callId: call.callId, answer }) : undefined;
    // The answer may take a while: the call may have ended meanwhile.
    if (call.state !== 'ringing') throw this.#stateError(call);
    this.#clearTimer(call.callId);
    call.state = 'accepted';
    call.acceptedAt = Date.now();
    call.offer = sdp;
    call.answer = answer;
    this.events.safeEmit('accept', { pageId, callId: call.callId, sdp, call });
    const shaped = (sdp: string, type: 'answer' | 'offer') => (this.#acceptAnswerShape === 'string' ? sdp : { sdp_type: type, sdp });
    if (reoffer !== undefined) call.mediaVersion += 1;
    return {
      success: true,
      session: { sdp_response: shaped(answer, 'answer'), ...(reoffer !== undefined ? { sdp_renegotiation: shaped(reoffer, 'offer') } : {}) },
    };
  }

  async #reject(pageId: string, body: Record<string, unknown>): Promise<unknown> {
    const call = this.#callFor(pageId, body);
    if (call.direction !== 'user_initiated') throw graph(100, 'Invalid parameter: only consumer-initiated calls are rejected');
    if (call.state !== 'ringing') throw this.#stateError(call);
    this.events.safeEmit('reject', { pageId, callId: call.callId, call });
    this.#end(call, 'business', 'Completed', 'Rejected', 'rejected');
    return { success: true };
  }

  async #terminate(pageId: string, body: Record<string, unknown>): Promise<unknown> {
    const call = this.#callFor(pageId, body);
    if (call.state === 'terminated' || call.state === 'rejected') throw this.#stateError(call);
    // Terminating a consumer call that was never accepted is a reject in Meta's terms; business calls may be
    // cancelled while ringing.
    if (call.state === 'ringing' && call.direction === 'user_initiated') throw graph(100, 'Invalid parameter: use reject before accept');
    this.#end(call, 'business', 'Completed', 'Completed');
    return { success: true };
  }

  async #connect(pageId: string, body: Record<string, unknown>): Promise<unknown> {
    const psid = body.to;
    if (typeof psid !== 'string' || psid === '') throw graph(100, 'Invalid parameter: to');
    const sdp = this.#offer(body);
    if (this.#permission(pageId, psid).status === 'no_permission') throw calling(2018391);
    const call: SimCall = {
      callId: newCallId(),
      pageId,
      psid,
      direction: 'business_initiated',
      state: 'ringing',
      createdAt: Date.now(),
      mediaVersion: 0,
      offer: sdp,
    };
    const answer = await this.#answerOffer({ pageId, callId: call.callId, sdp });
    call.answer = answer;
    this.calls.set(call.callId, call);
    // Unanswered business calls end too.
    this.#armDeadline(call);
    this.events.safeEmit('call', call);
    this.events.safeEmit('connect', { pageId, psid, callId: call.callId, sdp, call });
    // Meta's connect webhook covers business-initiated calls too.
    this.#sendWebhook(() =>
      this.#webhooks!.connect({ callId: call.callId, pageId, psid, direction: 'business_initiated', timestamp: Math.floor(call.createdAt / 1000) }),
    );
    return { success: true, id: call.callId, session: { sdp_response: { sdp_type: 'answer', sdp: answer } } };
  }

  async #mediaUpdate(pageId: string, body: Record<string, unknown>): Promise<unknown> {
    const call = this.#callFor(pageId, body);
    if (call.state === 'terminated' || call.state === 'rejected') throw this.#stateError(call);
    if (!Array.isArray(body.tracks)) throw graph(100, 'Invalid parameter: tracks');
    this.events.safeEmit('media_update', { pageId, callId: call.callId, body, call });
    const session = isObject(body.session) ? body.session : undefined;
    if (session !== undefined) {
      const sdp = this.#offer(body);
      const answer = await this.#answerOffer({ pageId, callId: call.callId, sdp });
      return { success: true, session: { sdp_response: { sdp_type: 'answer', sdp: answer } } };
    }
    return { success: true };
  }
}

const DAYS = new Set(['MONDAY', 'TUESDAY', 'WEDNESDAY', 'THURSDAY', 'FRIDAY', 'SATURDAY', 'SUNDAY']);
const HHMM = /^([01]\d|2[0-3])[0-5]\d$|^2400$/;

/** Why a messenger_call_settings POST body is refused, or undefined. */
function callSettingsProblem(body: Record<string, unknown>): string | undefined {
  const known = new Set(['icon_enabled', 'audio_enabled', 'video_enabled', 'call_routing', 'call_hours']);
  const keys = Object.keys(body);
  if (keys.length === 0) return 'no setting given';
  const unknown = keys.find((k) => !known.has(k));
  if (unknown !== undefined) return `Param ${unknown} is not a call setting`;
  for (const k of ['icon_enabled', 'audio_enabled', 'video_enabled']) {
    if (k in body && typeof body[k] !== 'boolean') return `Param ${k} must be a boolean`;
  }
  if ('call_routing' in body) {
    const r = body.call_routing;
    if (!isObject(r) || (r.ring_target !== 'META' && r.ring_target !== 'PARTNERS')) return 'Param call_routing[ring_target] must be one of {META, PARTNERS}';
  }
  if ('call_hours' in body) {
    const h = body.call_hours;
    if (!isObject(h) || typeof h.timezone_id !== 'string' || !Array.isArray(h.weekly_operating_hours)) return 'Param call_hours must have timezone_id and weekly_operating_hours';
    for (const d of h.weekly_operating_hours) {
      if (!isObject(d) || !DAYS.has(String(d.day_of_week)) || !HHMM.test(String(d.open_time)) || !HHMM.test(String(d.close_time))) {
        return 'Param call_hours[weekly_operating_hours] must list day_of_week, open_time (HHMM) and close_time (HHMM)';
      }
    }
  }
  return undefined;
}

/** The audio_stats keys Meta's Metrics page lists as required. */
export const CALL_METRICS_AUDIO_STATS = [
  'call_ended_time',
  'jitter',
  'packets_lost',
  'packets_received',
  'round_trip_time_ms',
  'jitter_buffer_delay_ms',
  'concealed_samples',
  'silent_concealed_samples',
  'total_samples_duration_ms',
] as const;

/** Why a call_metrics body is refused, or undefined: the fields the Metrics page lists, with their types. */
function callMetricsProblem(body: Record<string, unknown>): string | undefined {
  if (body.platform !== 'messenger') return 'Param platform must be messenger';
  if (typeof body.call_id !== 'string' || body.call_id === '') return 'Param call_id is required';
  if (typeof body.end_call_reason !== 'string' || body.end_call_reason === '') return 'Param end_call_reason is required';
  if (typeof body.call_ended_time !== 'number') return 'Param call_ended_time must be a unix timestamp';
  if ('first_audio_packet_received_time' in body && typeof body.first_audio_packet_received_time !== 'number') {
    return 'Param first_audio_packet_received_time must be a unix timestamp';
  }
  const stats = body.audio_stats;
  if (!isObject(stats)) return 'Param audio_stats is required';
  const missing = CALL_METRICS_AUDIO_STATS.filter((k) => typeof stats[k] !== 'number');
  if (missing.length > 0) return `Param audio_stats lacks ${missing.join(', ')}`;
  return undefined;
}

export function createGraphSimulator(options: GraphSimulatorOptions): GraphSimulator {
  return new GraphSimulator(options);
}
