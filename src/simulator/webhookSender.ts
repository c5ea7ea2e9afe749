/**
 * Sends webhooks the way Meta does: `{object: "page", entry: [...]}` envelopes, signed with
 * `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the exact bytes sent>` under the app secret, retried until a 200.
 * Meta's JSON escapes "/" and non-ASCII characters; the sender does the same by default, so a receiver that
 * re-serializes the body instead of hashing the raw bytes fails here as it would in production.
 * It can also replay, duplicate and reorder deliveries, as Meta's retries do.
 */
import { createHmac } from 'node:crypto';
import type { Logger } from 'pino';

export interface CallItemBase {
  id: string;
  timestamp: number;
}

/** One item of `entry[].calls[]`, as Meta writes it (snake_case). */
export type CallItem = CallItemBase & { event: string } & Record<string, unknown>;

export interface PermissionReplyItem {
  sender: { id: string };
  recipient: { id: string };
  timestamp: number;
  call_permission_reply: { response: string; expiration_timestamp?: number | string };
}

export interface WebhookSenderOptions {
  /** The bridge's webhook URL, e.g. http://127.0.0.1:8080/webhook */
  url: string;
  appSecret: string;
  log?: Logger;
  /** Attempts per delivery, first included (Meta keeps trying far longer). Default 5. */
  attempts?: number;
  /** First retry delay (ms), doubled each time up to maxDelayMs. Default 100. */
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** Per attempt (ms). Meta gives up on a delivery after 20 s. Default 20000. */
  timeoutMs?: number;
  /** Escape "/" and non-ASCII like Meta's encoder. Default true. */
  metaEscaping?: boolean;
}

export interface DeliveryResult {
  /** Status of the last attempt (0: no answer). */
  status: number;
  attempts: number;
  /** Whether a 200 was obtained. */
  delivered: boolean;
  /** The exact bytes sent (for replay). */
  payload: Buffer;
}

const nowSec = (): number => Math.floor(Date.now() / 1000);

/** JSON as Meta's encoder writes it. */
export function metaJson(value: unknown, metaEscaping = true): string {
  const json = JSON.stringify(value);
  if (!metaEscaping) return json;
  return json.replace(/\//g, '\\/').replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

export function signPayload(payload: Buffer | string, appSecret: string): string {
  return `sha256=${createHmac('sha256', appSecret).update(payload).digest('hex')}`;
}

/** Builders for the `calls[]` items of Meta's documented payloads. */
export const callItems = {
  connect(o: { callId: string; pageId: string; psid: string; direction?: 'user_initiated' | 'business_initiated'; timestamp?: number }): CallItem {
    const direction = o.direction ?? 'user_initiated';
    const userInitiated = direction === 'user_initiated';
    return {
      id: o.callId,
      to: userInitiated ? o.pageId : o.psid,
      from: userInitiated ? o.psid : o.pageId,
      event: 'connect',
      timestamp: o.timestamp ?? nowSec(),
      call_direction: direction,
    };
  },
  callStatus(o: { callId: string; psid: string; status: 'ringing' | 'accepted' | string; timestamp?: number }): CallItem {
    return { id: o.callId, event: 'call_status', timestamp: o.timestamp ?? nowSec(), recipient_id: o.psid, call_status: o.status };
  },
  mediaUpdate(o: { callId: string; version: number; sdp: string; timestamp?: number }): CallItem {
    return {
      id: o.callId,
      event: 'media_update',
      timestamp: o.timestamp ?? nowSec(),
      session: { version: o.version, sdp_renegotiation: { sdp_type: 'offer', sdp: o.sdp } },
    };
  },
  terminate(o: {
    callId: string;
    status: 'Completed' | 'Failed';
    startTime?: number;
    endTime?: number;
    /** Seconds since the business connected; omitted (sent empty) when it never did. */
    duration?: number;
    timestamp?: number;
  }): CallItem {
    const end = o.endTime ?? o.timestamp ?? nowSec();
    return {
      id: o.callId,
      event: 'terminate',
      timestamp: o.timestamp ?? end,
      status: o.status,
      start_time: o.startTime ?? end,
      end_time: end,
      duration: o.duration ?? '',
    };
  },
};

export function permissionReplyItem(o: {
  pageId: string;
  psid: string;
  response: 'approve' | 'reject' | string;
  expiresAt?: number;
  timestamp?: number;
}): PermissionReplyItem {
  return {
    sender: { id: o.psid },
    recipient: { id: o.pageId },
    timestamp: o.timestamp ?? nowSec(),
    call_permission_reply: {
      response: o.response,
      ...(o.expiresAt !== undefined ? { expiration_timestamp: o.expiresAt } : {}),
    },
  };
}

/** `{object: 'page', entry: [{id, time, calls}]}` for one page. */
export function callsEnvelope(pageId: string, calls: CallItem[], time = nowSec()): Record<string, unknown> {
  return { object: 'page', entry: [{ id: pageId, time, calls }] };
}

/** Permission replies arrive as Messenger messaging events. */
export function permissionEnvelope(pageId: string, replies: PermissionReplyItem[], time = nowSec()): Record<string, unknown> {
  return { object: 'page', entry: [{ id: pageId, time, messaging: replies }] };
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export class WebhookSender {
  /** Where deliveries go; may be changed between deliveries (the bridge's URL is known after it listens). */
  url: string;
  /**
   * Several bridges behind one balancer: when not empty, each attempt (first tries and retries alike) goes to the
   * next of these in turn, as a round-robin proxy would send them, and `url` is not used.
   */
  urls: string[] = [];
  #nextUrl = 0;
  readonly #appSecret: string;
  readonly #log?: Logger;
  readonly #attempts: number;
  readonly #baseDelayMs: number;
  readonly #maxDelayMs: number;
  readonly #timeoutMs: number;
  readonly #metaEscaping: boolean;
  /** The last payloads sent, newest last (bounded), for replay(). */
  readonly #history: Buffer[] = [];

  constructor(options: WebhookSenderOptions) {
    this.url = options.url;
    this.#appSecret = options.appSecret;
    this.#log = options.log?.child({ component: 'webhook-sender' });
    this.#attempts = options.attempts ?? 5;
    this.#baseDelayMs = options.baseDelayMs ?? 100;
    this.#maxDelayMs = options.maxDelayMs ?? 2000;
    this.#timeoutMs = options.timeoutMs ?? 20_000;
    this.#metaEscaping = options.metaEscaping ?? true;
  }

  /** Serialize like Meta, sign, POST; retry on anything but 200. Never throws for HTTP or network failures. */
  async send(envelope: unknown): Promise<DeliveryResult> {
    const payload = Buffer.from(typeof envelope === 'string' ? envelope : metaJson(envelope, this.#metaEscaping), 'utf8');
    return this.sendRaw(payload);
  }

  /** POST these exact bytes (signed), with retries. */
  async sendRaw(payload: Buffer): Promise<DeliveryResult> {
    this.#history.push(payload);
    if (this.#history.length > 50) this.#history.shift();
    const signature = signPayload(payload, this.#appSecret);
    let status = 0;
    for (let attempt = 1; attempt <= this.#attempts; attempt++) {
      try {
        const url = this.urls.length > 0 ? this.urls[this.#nextUrl++ % this.urls.length]! : this.url;
        const response = await fetch(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-hub-signature-256': signature },
          body: payload,
          signal: AbortSignal.timeout(this.#timeoutMs),
        });
        status = response.status;
        await response.arrayBuffer();
      } catch (err) {
        status = 0;
        this.#log?.debug({ err, attempt }, 'webhook delivery failed');
      }
      if (status === 200) return { status, attempts: attempt, delivered: true, payload };
      this.#log?.info({ status, attempt }, 'webhook not acknowledged');
      if (attempt < this.#attempts) await sleep(Math.min(this.#maxDelayMs, this.#baseDelayMs * 2 ** (attempt - 1)));
    }
    return { status, attempts: this.#attempts, delivered: false, payload };
  }

  /** Several call events for one page in one POST, in the order given. */
  sendCalls(pageId: string, items: CallItem[]): Promise<DeliveryResult> {
    return this.send(callsEnvelope(pageId, items));
  }

  connect(o: Parameters<typeof callItems.connect>[0]): Promise<DeliveryResult> {
    return this.sendCalls(o.pageId, [callItems.connect(o)]);
  }

  callStatus(pageId: string, o: Parameters<typeof callItems.callStatus>[0]): Promise<DeliveryResult> {
    return this.sendCalls(pageId, [callItems.callStatus(o)]);
  }

  mediaUpdate(pageId: string, o: Parameters<typeof callItems.mediaUpdate>[0]): Promise<DeliveryResult> {
    return this.sendCalls(pageId, [callItems.mediaUpdate(o)]);
  }

  terminate(pageId: string, o: Parameters<typeof callItems.terminate>[0]): Promise<DeliveryResult> {
    return this.sendCalls(pageId, [callItems.terminate(o)]);
  }

  permissionReply(o: Parameters<typeof permissionReplyItem>[0]): Promise<DeliveryResult> {
    return this.send(permissionEnvelope(o.pageId, [permissionReplyItem(o)]));
  }

  /** Send the same envelope twice (a retry after a lost 200). */
  async duplicate(envelope: unknown): Promise<[DeliveryResult, DeliveryResult]> {
    const first = await this.send(envelope);
    const second = await this.sendRaw(first.payload);
    return [first, second];
  }

  /** Send the items in one POST, newest first (Meta does not promise order). */
  sendCallsReordered(pageId: string, items: CallItem[]): Promise<DeliveryResult> {
    return this.sendCalls(pageId, [...items].sort((a, b) => b.timestamp - a.timestamp));
  }

  /** Re-send the n-th last payload (1 = the last one), byte for byte. */
  async replay(n = 1): Promise<DeliveryResult> {
    const payload = this.#history[this.#history.length - n];
    if (payload === undefined) throw new Error(`nothing to replay at position ${n}`);
    return this.sendRaw(payload);
  }
}
