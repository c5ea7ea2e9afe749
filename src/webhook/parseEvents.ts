/**
 * Meta's webhook JSON -> the typed events of calls/ports.ts. Items are validated one by one, so one bad item never
 * hides the good ones next to it. Unknown fields are stripped, unknown events reported as ignored.
 */
import { z } from 'zod';
import type { MetaEvent, SdpSession } from '../calls/ports.js';
import { META_CALL_ID, NUMERIC_ID } from '../core/ids.js';

/**
 * PSIDs and page ids: numeric, as strings; tolerate exact numbers (JSON written by hand, other Meta products).
 * They go into SIP headers toward the PBX, so nothing else passes.
 */
const Id = z
  .union([z.string().regex(NUMERIC_ID, 'must be a numeric id'), z.number().int().nonnegative().refine(Number.isSafeInteger, 'too large to be exact')])
  .transform((v) => String(v));

/** Meta's call id (also written into a SIP header toward the PBX). */
const CallId = z
  .union([z.string().regex(META_CALL_ID, 'must be a call id (letters, digits, ._~:=+/-; at most 256)'), z.number().int().nonnegative()])
  .transform((v) => String(v));

/** Unix time; Messenger's messaging webhooks use milliseconds where the calls field uses seconds. */
const UnixTime = z
  .union([z.number().nonnegative(), z.string().regex(/^\d+(\.\d+)?$/)])
  .transform((v) => toSeconds(Number(v)));

/** Optional numbers that Meta may send empty (`"duration": ""` when the business never connected). */
const OptionalNumber = z
  .union([z.number(), z.string().regex(/^\d+(\.\d+)?$/), z.literal(''), z.null()])
  .optional()
  .transform((v) => (v === '' || v === null || v === undefined ? undefined : Number(v)));

/** Above this, a timestamp is in milliseconds (1e11 s is the year 5138). */
const MS_THRESHOLD = 1e11;

export function toSeconds(t: number): number {
  return t > MS_THRESHOLD ? Math.floor(t / 1000) : t;
}

/** `{sdp_type, sdp}`, or a bare SDP string (Meta's examples show both). */
const SdpField = (defaultType: SdpSession['sdpType']) =>
  z.union([
    z.string().min(1).transform((sdp): SdpSession => ({ sdpType: defaultType, sdp })),
    z
      .object({ sdp_type: z.enum(['offer', 'answer']).optional(), sdp: z.string().min(1) })
      .transform((s): SdpSession => ({ sdpType: s.sdp_type ?? defaultType, sdp: s.sdp })),
  ]);

const ConnectItem = z.object({
  id: CallId,
  event: z.literal('connect'),
  from: Id,
  to: Id,
  timestamp: UnixTime,
  call_direction: z.enum(['user_initiated', 'business_initiated']),
  /** WhatsApp-style connect carrying Meta's own offer; absent in Messenger's documented payload. */
  session: SdpField('offer').optional(),
});

const CallStatusItem = z.object({
  id: CallId,
  event: z.literal('call_status'),
  timestamp: UnixTime,
  recipient_id: Id.optional(),
  call_status: z.string().min(1),
});

const MediaUpdateItem = z.object({
  id: CallId,
  event: z.literal('media_update'),
  timestamp: UnixTime,
  session: z.object({
    version: z.union([z.number().int(), z.string().regex(/^\d+$/)]).transform(Number),
    sdp_renegotiation: SdpField('offer'),
  }),
});

const TerminateItem = z.object({
  id: CallId,
  event: z.literal('terminate'),
  timestamp: UnixTime,
  status: z.string().optional(),
  start_time: OptionalNumber,
  end_time: OptionalNumber,
  duration: OptionalNumber,
});

const PermissionReplyItem = z.object({
  sender: z.object({ id: Id }).optional(),
  recipient: z.object({ id: Id }).optional(),
  psid: Id.optional(),
  from: Id.optional(),
  timestamp: UnixTime.optional(),
  call_permission_reply: z.object({
    response: z.string().optional(),
    expiration_timestamp: OptionalNumber,
  }),
});

export const KNOWN_CALL_EVENTS = ['connect', 'call_status', 'media_update', 'terminate'] as const;

export interface ParseProblem {
  /** The item's `event` (or 'call_permission_reply', or 'envelope'). */
  event: string;
  /** Where in the body: `entry[0].calls[2]`. */
  where: string;
  reason: string;
}

export interface ParsedWebhook {
  events: MetaEvent[];
  /** Items that failed validation: logged and counted, never delivered. */
  invalid: ParseProblem[];
  /** Items of events or fields this bridge does not know: tolerated. */
  ignored: ParseProblem[];
}

function describe(error: z.ZodError): string {
  return error.issues
    .map((i) => `${i.path.length > 0 ? i.path.join('.') : '(item)'}: ${i.message}`)
    .join('; ');
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function parseCallItem(item: unknown, pageId: string, where: string, out: ParsedWebhook): void {
  const event = isObject(item) && typeof item.event === 'string' ? item.event : '(none)';
  switch (event) {
    case 'connect': {
      const r = ConnectItem.safeParse(item);
      if (!r.success) break;
      const d = r.data;
      out.events.push({
        kind: 'connect',
        pageId,
        callId: d.id,
        timestamp: d.timestamp,
        from: d.from,
        to: d.to,
        direction: d.call_direction,
        ...(d.session ? { session: d.session } : {}),
      });
      return;
    }
    case 'call_status': {
      const r = CallStatusItem.safeParse(item);
      if (!r.success) break;
      const d = r.data;
      out.events.push({
        kind: 'call_status',
        pageId,
        callId: d.id,
        timestamp: d.timestamp,
        status: d.call_status,
        ...(d.recipient_id !== undefined ? { recipientId: d.recipient_id } : {}),
      });
      return;
    }
    case 'media_update': {
      const r = MediaUpdateItem.safeParse(item);
      if (!r.success) break;
      const d = r.data;
      out.events.push({
        kind: 'media_update',
        pageId,
        callId: d.id,
        timestamp: d.timestamp,
        version: d.session.version,
        session: d.session.sdp_renegotiation,
      });
      return;
    }
    case 'terminate': {
      const r = TerminateItem.safeParse(item);
      if (!r.success) break;
      const d = r.data;
      out.events.push({
        kind: 'terminate',
        pageId,
        callId: d.id,
        timestamp: d.timestamp,
        ...(d.status !== undefined ? { status: d.status } : {}),
        ...(d.start_time !== undefined ? { startTime: d.start_time } : {}),
        ...(d.end_time !== undefined ? { endTime: d.end_time } : {}),
        ...(d.duration !== undefined ? { duration: d.duration } : {}),
      });
      return;
    }
    default:
      if (event === '(none)') {
        out.invalid.push({ event, where, reason: 'item has no event name' });
      } else {
        out.ignored.push({ event, where, reason: `unknown call event '${event}'` });
      }
      return;
  }
  const schema = { connect: ConnectItem, call_status: CallStatusItem, media_update: MediaUpdateItem, terminate: TerminateItem }[
    event as (typeof KNOWN_CALL_EVENTS)[number]
  ];
  out.invalid.push({ event, where, reason: describe(schema.safeParse(item).error!) });
}

function parsePermissionReply(item: unknown, entryPageId: string | undefined, where: string, out: ParsedWebhook, nowSec: number): void {
  const r = PermissionReplyItem.safeParse(item);
  if (!r.success) {
    out.invalid.push({ event: 'call_permission_reply', where, reason: describe(r.error) });
    return;
  }
  const d = r.data;
  const pageId = d.recipient?.id ?? entryPageId;
  const psid = d.sender?.id ?? d.psid ?? d.from;
  if (pageId === undefined || psid === undefined) {
    out.invalid.push({
      event: 'call_permission_reply',
      where,
      reason: pageId === undefined ? 'no page id (recipient.id or entry.id)' : 'no PSID (sender.id)',
    });
    return;
  }
  const expires = d.call_permission_reply.expiration_timestamp;
  out.events.push({
    kind: 'call_permission_reply',
    pageId,
    psid,
    timestamp: d.timestamp ?? nowSec,
    ...(d.call_permission_reply.response !== undefined ? { response: d.call_permission_reply.response } : {}),
    ...(expires !== undefined ? { expiresAt: toSeconds(expires) } : {}),
    raw: item,
  });
}

const Envelope = z.object({ object: z.string(), entry: z.array(z.unknown()) });

/**
 * Parse one verified webhook body (already JSON-decoded). Never throws.
 * `nowSec` stamps permission replies that carry no timestamp.
 */
export function parseWebhookBody(body: unknown, nowSec = Math.floor(Date.now() / 1000)): ParsedWebhook {
  const out: ParsedWebhook = { events: [], invalid: [], ignored: [] };
  const env = Envelope.safeParse(body);
  if (!env.success) {
    out.invalid.push({ event: 'envelope', where: '(body)', reason: describe(env.error) });
    return out;
  }
  if (env.data.object !== 'page') {
    out.ignored.push({ event: 'envelope', where: 'object', reason: `object '${env.data.object}' is not 'page'` });
    return out;
  }
  env.data.entry.forEach((entry, e) => {
    const where = `entry[${e}]`;
    if (!isObject(entry)) {
      out.invalid.push({ event: 'envelope', where, reason: 'entry is not an object' });
      return;
    }
    const idResult = Id.safeParse(entry.id);
    const pageId = idResult.success ? idResult.data : undefined;
    for (const key of Object.keys(entry)) {
      const value = entry[key];
      if (key === 'calls') {
        if (!Array.isArray(value)) {
          out.invalid.push({ event: 'envelope', where: `${where}.calls`, reason: 'calls is not an array' });
          continue;
        }
        if (pageId === undefined) {
          out.invalid.push({ event: 'envelope', where: `${where}.id`, reason: 'entry has calls but no page id' });
          continue;
        }
        value.forEach((item, i) => parseCallItem(item, pageId, `${where}.calls[${i}]`, out));
      } else if (key === 'messaging' || key === 'changes') {
        if (!Array.isArray(value)) continue;
        value.forEach((item, i) => {
          const itemWhere = `${where}.${key}[${i}]`;
          if (key === 'changes') {
            if (isObject(item) && item.field === 'call_permission_reply') {
              const inner = isObject(item.value) && 'call_permission_reply' in item.value ? item.value : { call_permission_reply: item.value };
              parsePermissionReply(inner, pageId, itemWhere, out, nowSec);
            } else {
              const field = isObject(item) && typeof item.field === 'string' ? item.field : '(none)';
              out.ignored.push({ event: field, where: itemWhere, reason: `unhandled change field '${field}'` });
            }
          } else if (isObject(item) && 'call_permission_reply' in item) {
            parsePermissionReply(item, pageId, itemWhere, out, nowSec);
          } else {
            out.ignored.push({ event: 'messaging', where: itemWhere, reason: 'not a call_permission_reply' });
          }
        });
      } else if (key === 'call_permission_reply') {
        // The calling documentation's own example puts the reply directly in the entry.
        parsePermissionReply(entry, pageId, where, out, nowSec);
      }
    }
  });
  // Meta does not promise order within or across POSTs; within one POST, deliver oldest first.
  out.events = out.events
    .map((event, index) => ({ event, index }))
    .sort((a, b) => a.event.timestamp - b.event.timestamp || a.index - b.index)
    .map((x) => x.event);
  return out;
}
