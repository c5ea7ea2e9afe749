/**
 * The configuration schema. YAML keys are snake_case and so is the parsed `Config`: what an operator reads in the
 * file is what the code reads. Every object is `.strict()` (a typo is an error, not a silently ignored key) and
 * everything except the Meta secrets, the pages and the routes has a default.
 */
import { isIP } from 'node:net';
import { z } from 'zod';

/** Meta allows 60 s between `connect` and `accept`; our deadline must leave room for the accept request itself. */
export const META_ACCEPT_WINDOW_MS = 60_000;

/** Numeric ids (page ids, PSIDs) are strings; unquoted YAML numbers are accepted only while they are exact. */
const NumericId = z
  .union([
    z.string().regex(/^\d+$/, 'must be a numeric id'),
    z
      .number()
      .int()
      .nonnegative()
      .refine(Number.isSafeInteger, 'too large to be exact as a YAML number: quote it'),
  ])
  .transform((v) => String(v));

const Port = z.number().int().min(0).max(65535);
const PositiveMs = z.number().int().positive();

const IpAddress = z.string().refine((v) => isIP(v) !== 0, 'must be an IPv4 or IPv6 address');

/** `a.b.c.d/n` or `x::y/n`; a bare address means the single host. */
export function isCidr(value: string): boolean {
  const [addr, prefix, extra] = value.split('/');
  if (extra !== undefined || addr === undefined) return false;
  const family = isIP(addr);
  if (family === 0) return false;
  if (prefix === undefined) return true;
  if (!/^\d{1,3}$/.test(prefix)) return false;
  return Number(prefix) <= (family === 4 ? 32 : 128);
}

const Cidr = z.string().refine(isCidr, 'must be a CIDR such as 10.0.0.0/8 or fd00::/8');

const SipUri = z.string().regex(/^sips?:[^\s]+$/i, 'must be a sip: or sips: URI');

const HeaderName = z.string().regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, 'must be a valid SIP header name');

export const CodecNameSchema = z.enum(['PCMU', 'PCMA', 'opus']);

const SrtpModeSchema = z.enum(['off', 'optional', 'prefer', 'required']);

const Codecs = z
  .array(CodecNameSchema)
  .min(1)
  .refine((list) => new Set(list).size === list.length, 'codecs must not repeat');

const Listen = (host: string, port: number) =>
  z
    .object({
      host: IpAddress.default(host),
      port: Port.default(port),
    })
    .strict()
    .prefault({});

const AutoBool = z.union([z.literal('auto'), z.boolean()]).default('auto');

const Secret = z.string().min(1, 'must not be empty');

const MetaSchema = z
  .object({
    /** App secret: the key of the webhook HMAC-SHA256 signature. */
    app_secret: Secret,
    /** The token Meta echoes in the subscription handshake. */
    verify_token: Secret,
    graph_base_url: z.url({ protocol: /^https?$/ }).default('https://graph.facebook.com'),
    graph_version: z
      .string()
      .regex(/^v\d+\.\d+$/, 'must look like v23.0')
      .default('v23.0'),
    graph_timeout_ms: PositiveMs.default(5000),
    /**
     * Send `appsecret_proof` (HMAC-SHA256 of the page token keyed with the app secret) with every Graph request:
     * required when the app's "Require App Secret" setting is on.
     */
    appsecret_proof: z.boolean().default(false),
    /**
     * The Meta app's id. Optional: with it, `setup` checks Page tokens with the app's own token (`<app_id>|<app_secret>`)
     * and tells a token of another app apart.
     */
    app_id: NumericId.optional(),
  })
  .strict();

export const WEEKDAYS = ['MONDAY', 'TUESDAY', 'WEDNESDAY', 'THURSDAY', 'FRIDAY', 'SATURDAY', 'SUNDAY'] as const;

/** `HHMM`, 24 h clock, as Meta's call settings write times. */
const HhMm = z
  .union([z.string(), z.number().int().nonnegative()])
  .transform((v) => (typeof v === 'number' ? String(v).padStart(4, '0') : v))
  .pipe(z.string().regex(/^([01]\d|2[0-3])[0-5]\d$|^2400$/, 'must be HHMM, e.g. "0900" (quote it)'));

/** An IANA time zone name the runtime knows, e.g. Europe/Paris. */
const TimeZone = z.string().refine((tz) => {
  try {
    new Intl.DateTimeFormat('en', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}, 'must be an IANA time zone such as Europe/Paris');

/**
 * The Page's Messenger call settings (`/{page-id}/messenger_call_settings`), applied by `setup`. Names follow Meta's
 * Call Settings page and its Graph reference (docs/META-CALLING.md); every key is optional and an absent key is left
 * as it is at Meta.
 */
const CallSettingsSchema = z
  .object({
    /** The call button in the Page's Messenger threads. */
    icon_enabled: z.boolean().optional(),
    /** Inbound call routing: PARTNERS sends calls to apps (this bridge), META to Meta's own inbox. */
    call_routing: z
      .object({ ring_target: z.enum(['PARTNERS', 'META']) })
      .strict()
      .optional(),
    /** Business hours: when people can call the Page. */
    call_hours: z
      .object({
        timezone_id: TimeZone,
        weekly_operating_hours: z
          .array(
            z
              .object({
                day_of_week: z
                  .string()
                  .transform((d) => d.toUpperCase())
                  .pipe(z.enum(WEEKDAYS, 'must be a day such as MONDAY')),
                open_time: HhMm,
                close_time: HhMm,
              })
              .strict()
              .refine((h) => h.open_time < h.close_time, { message: 'close_time must be after open_time', path: ['close_time'] }),
          )
          .min(1),
      })
      .strict()
      .optional(),
  })
  .strict();

const PageSchema = z
  .object({
    id: NumericId,
    access_token: Secret,
    name: z.string().optional(),
    call_settings: CallSettingsSchema.optional(),
  })
  .strict();

const WebhookSchema = z
  .object({
    listen: Listen('0.0.0.0', 8080),
    path: z.string().startsWith('/', 'must start with /').default('/webhook'),
    /**
     * The callback URL Meta calls (`https://<host><path>`, through the TLS proxy in front of `listen`). Optional;
     * `doctor` checks it answers the subscription handshake over TLS.
     */
    public_url: z.url({ protocol: /^https?$/ }).optional(),
    body_limit_bytes: z.number().int().min(1024).default(262_144),
    /** A request (headers and body) must arrive within this. */
    request_timeout_ms: PositiveMs.default(10_000),
    /** Its headers must arrive within this. */
    headers_timeout_ms: PositiveMs.default(5_000),
    /** An idle kept-alive connection is closed after this. */
    keep_alive_timeout_ms: PositiveMs.default(5_000),
    /** Connections open at once; more are closed on arrival. */
    max_connections: z.number().int().positive().default(256),
    /** Events one POST may carry; the rest are dropped and counted (`result="over_limit"`). */
    max_events_per_post: z.number().int().positive().default(100),
  })
  .strict()
  .prefault({});

const AdminSchema = z
  .object({
    listen: Listen('127.0.0.1', 9090),
  })
  .strict()
  .prefault({});

/** A host a transfer may go to: a name, an IPv4 address, or an IPv6 address (bracketed or not); no port. */
const TransferHost = z
  .string()
  .regex(/^[^\s:;@<>[\]]+$|^\[[0-9a-fA-F:.]+\]$|^[0-9a-fA-F.]*:[0-9a-fA-F.]*:[0-9a-fA-F:.]*$/, 'a host name or address, without port');

const SipSchema = z
  .object({
    drachtio: z
      .object({
        host: z.string().min(1).default('127.0.0.1'),
        port: Port.default(9022),
        secret: Secret.default('cymru'),
      })
      .strict()
      .prefault({}),
    /** Sources allowed to send INVITEs. */
    acl: z.array(Cidr).default(['127.0.0.1/32']),
    digest: z
      .object({
        realm: z.string().min(1),
        username: z.string().min(1),
        password: Secret,
      })
      .strict()
      .optional(),
    /** Headers carrying the caller's context on INVITEs toward the PBX. */
    headers: z
      .object({
        psid: HeaderName.default('X-Messenger-PSID'),
        page_id: HeaderName.default('X-Messenger-Page-ID'),
        call_id: HeaderName.default('X-Messenger-Call-ID'),
      })
      .strict()
      .prefault({}),
    /** Where business-initiated INVITEs name the person and the page. */
    target: z
      .object({
        psid_from: z.enum(['request_uri', 'header']).default('request_uri'),
        psid_header: HeaderName.default('X-Messenger-PSID'),
        page_header: HeaderName.default('X-Messenger-Page-ID'),
      })
      .strict()
      .prefault({}),
    /** Page for business-initiated calls that name none. */
    default_page: NumericId.optional(),
    /** Limits on INVITEs from one source address (a misbehaving or compromised host cannot take every slot). */
    per_source: z
      .object({
        /** Calls in progress from one address. */
        max_calls: z.number().int().positive().default(100),
        /** INVITEs per second from one address, sustained. */
        invites_per_second: z.number().positive().default(10),
        /** INVITEs one address may send at once before invites_per_second applies. */
        invite_burst: z.number().int().positive().default(30),
      })
      .strict()
      .prefault({}),
    /** User part of our From on INVITEs to the PBX. */
    from_user: z.string().min(1).default('messenger'),
    /** Transfers by REFER from the PBX (blind, and attended with Replaces in the Refer-To). */
    transfer: z
      .object({
        enabled: z.boolean().default(true),
        /** Hosts a Refer-To may point at (names or addresses, any port); absent: the route's target hosts and the PBX. */
        allowed_hosts: z.array(TransferHost).min(1).optional(),
        /** Ring time of the transfer target when the call's route names none (business-initiated calls). */
        target_timeout_ms: PositiveMs.default(30_000),
      })
      .strict()
      .prefault({}),
  })
  .strict()
  .prefault({});

const RouteSchema = z
  .object({
    name: z.string().min(1),
    /** Both optional; an empty match is a default route. */
    match: z
      .object({
        page_id: NumericId.optional(),
        psids: z.array(NumericId).optional(),
      })
      .strict()
      .prefault({}),
    /** Tried in turn on failure or timeout. */
    targets: z.array(SipUri).min(1),
    target_timeout_ms: PositiveMs.default(15_000),
    /** Preference toward the PBX; defaults to `media.codecs`. */
    codecs: Codecs.optional(),
    /** `on_pbx_answer`: accept the Meta call when the PBX answers; `immediate`: accept at once, PBX rings. */
    answer_mode: z.enum(['on_pbx_answer', 'immediate']).default('on_pbx_answer'),
    /** SRTP toward this route's targets; defaults to `media.srtp`. */
    srtp: SrtpModeSchema.optional(),
  })
  .strict();

const MediaSchema = z
  .object({
    worker_bin: z.string().min(1).default('/usr/lib/x86_64-linux-gnu/mediasoup/mediasoup-worker'),
    /**
     * Media threads (worker_threads) carrying the calls' media: 'auto' = one per core; 0 = the media runs in the
     * main thread with the signalling (no threads).
     */
    threads: z.union([z.literal('auto'), z.number().int().min(0).max(64)]).default('auto'),
    /** mediasoup workers in all; 0 = one per core, or one per media thread when there are threads. */
    workers: z.number().int().min(0).default(0),
    rtp: z
      .object({
        listen_ip: IpAddress.default('127.0.0.1'),
        announced_ip: z.string().min(1).nullable().default(null),
        min_port: Port.default(40_000),
        max_port: Port.default(49_999),
        /** Learn the PBX's RTP address from its first packet (NAT). */
        comedia: z.boolean().default(false),
      })
      .strict()
      .prefault({}),
    /**
     * Loopback ports the mediasoup workers use between the PBX-facing RTP sockets and their routers
     * (never seen by the PBX; keep the range clear of the rtp and messenger ranges).
     */
    internal_ports: z
      .object({
        min_port: Port.default(30_000),
        max_port: Port.default(39_999),
      })
      .strict()
      .prefault({}),
    codecs: Codecs.default(['PCMU', 'PCMA', 'opus']),
    /**
     * Busy CPU time added to every audio packet the bridge handles, both ways (µs). For tests and capacity drills:
     * it gives the bridge a small, real capacity so that admission by load can be seen at work. 0 in production.
     */
    simulated_packet_cost_us: z.number().int().min(0).max(20_000).default(0),
    /**
     * SRTP with SDES keys toward the PBX, for calls from the PBX and routes without their own `srtp`: off (plain RTP;
     * an RTP/SAVP offer gets 488), optional (answer what the PBX offers; offer plain), prefer (offer SRTP, accept a
     * plain answer), required (offer SRTP; plain RTP refused with 488, or the call fails).
     */
    srtp: SrtpModeSchema.default('off'),
    dtmf: z
      .object({
        inband_detect: AutoBool,
        inband_generate: AutoBool,
        sip_info: AutoBool,
      })
      .strict()
      .prefault({}),
  })
  .strict()
  .prefault({});

const MessengerSchema = z
  .object({
    ice: z
      .object({
        listen_ip: z.union([IpAddress, z.array(IpAddress).min(1)]).default('0.0.0.0'),
        announced_ip: z.string().min(1).nullable().default(null),
        min_port: Port.default(50_000),
        max_port: Port.default(59_999),
      })
      .strict()
      .prefault({}),
    dtls_timeout_ms: PositiveMs.default(10_000),
    ice_timeout_ms: PositiveMs.default(10_000),
  })
  .strict()
  .prefault({});

/** A limit that may be switched off with null. */
const Limit = (max?: number) => (max === undefined ? z.number().positive() : z.number().positive().max(max)).nullable();

/**
 * Admission by load: new calls are refused (Meta reject, SIP 503 with Retry-After) while a load signal is over its
 * limit, before the live calls suffer. Defaults are in calls/Admission.ts (DEFAULT_ADMISSION_LIMITS).
 */
const AdmissionSchema = z
  .object({
    enabled: z.boolean().default(true),
    /** How often the signals are read (ms). */
    sample_interval_ms: z.number().int().min(50).max(10_000).default(500),
    /** Per thread: 90th percentile of how late its timers ran (ms). */
    max_event_loop_delay_ms: Limit().default(40),
    /** Per thread: share of time busy running code (0-1). */
    max_event_loop_utilization: Limit(1).default(0.85),
    /** Per mediasoup worker: CPU as a share of one core (0-1). */
    max_media_worker_cpu: Limit(1).default(0.85),
    /** All calls: audio packets dropped for arriving too late, per second. */
    max_late_packets_per_second: Limit().default(1),
    /** Per thread: share of time it was ready to run but waited for a CPU (0-1): the machine is full. */
    max_cpu_wait: Limit(1).default(0.3),
    /** New calls taken per second at most (a burst beyond it is refused before the load shows). */
    max_setups_per_second: Limit().default(10),
    /** Time constant of the moving average of each signal (ms). */
    smoothing_ms: z.number().int().min(0).max(60_000).default(1500),
    /** Samples in a row above a limit before refusing. */
    trip_samples: z.number().int().min(1).max(20).default(2),
    /** Refusing stops once the signal is below this share of its limit ... */
    clear_ratio: z.number().positive().max(1).default(0.8),
    /** ... for this long (ms). */
    clear_after_ms: z.number().int().min(0).max(600_000).default(3000),
    /** Calls admitted this recently are not in the signals yet; their load is projected (ms). */
    settle_ms: z.number().int().min(0).max(60_000).default(3000),
    /** Retry-After of the 503 sent to the PBX (seconds). */
    retry_after_s: z.number().int().min(0).max(3600).default(5),
  })
  .strict()
  .prefault({});

const CallsSchema = z
  .object({
    max_concurrent: z.number().int().positive().default(200),
    accept_deadline_ms: PositiveMs.max(
      META_ACCEPT_WINDOW_MS - 1,
      `must be below ${META_ACCEPT_WINDOW_MS} (Meta ends unanswered calls after 60 s)`,
    ).default(50_000),
    connect_timeout_ms: PositiveMs.default(60_000),
    drain_timeout_ms: z.number().int().nonnegative().default(300_000),
    permission_check: z.boolean().default(true),
    request_permission_on_denied: z.boolean().default(false),
    /**
     * Media made ahead for this many calls (a mediasoup router with its transports and PBX RTP socket; an ICE agent
     * toward Meta with its candidates gathered), replenished in the background, so that a call's set-up does not wait
     * for them. 0 = made per call. Read at start-up (a reload does not change it).
     */
    prepared_media: z.number().int().min(0).max(64).default(0),
    /** Call quality: one-way audio detection and the report to Meta after each call. */
    quality: z
      .object({
        /** No audio from one side for this long while the other side speaks is one-way audio (ms); 0 = off. */
        one_way_audio_after_ms: z.number().int().min(0).default(10_000),
        /** After each call Meta accepted, submit its quality to Meta's call_metrics endpoint. */
        report_to_meta: z.boolean().default(true),
      })
      .strict()
      .prefault({}),
    admission: AdmissionSchema,
  })
  .strict()
  .prefault({});

const LoggingSchema = z
  .object({
    level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    /** Log a hash of PSIDs instead of the PSIDs themselves. */
    hash_psid: z.boolean().default(false),
  })
  .strict()
  .prefault({});

/**
 * Several instances behind one webhook URL, sharing a Redis: call ownership, webhooks handed to the owner, dedupe
 * across instances, placement of new calls, and the calls of a lost instance ended toward Meta. Off by default.
 */
const ClusterSchema = z
  .object({
    enabled: z.boolean().default(false),
    /** This instance's name in the cluster; unique per running process. Default: `<hostname>-<pid>`. */
    instance_id: z
      .string()
      .regex(/^[A-Za-z0-9._-]{1,64}$/, 'letters, digits, ".", "_" and "-" only (1-64)')
      .optional(),
    redis: z
      .object({
        host: z.string().min(1).default('127.0.0.1'),
        port: Port.default(6379),
        password: z.string().optional(),
        db: z.number().int().min(0).max(15).default(0),
        /** Prefix of every key and channel (several deployments may share one Redis). */
        key_prefix: z.string().max(64).default('msb:'),
        /** Deadline of each Redis command (ms). */
        command_timeout_ms: PositiveMs.default(1000),
      })
      .strict()
      .prefault({}),
    /** How often an instance says it is alive and refreshes the calls it owns (ms). */
    heartbeat_ms: PositiveMs.min(100).default(1000),
    /** An instance silent this long is lost: a survivor ends its calls toward Meta (ms). */
    peer_timeout_ms: PositiveMs.min(500).default(4000),
    /** Expiry of a call's ownership record, refreshed every heartbeat while the call lives (ms). */
    ownership_ttl_ms: PositiveMs.default(30_000),
    /** How long a webhook's dedupe key is kept in Redis (ms). */
    dedupe_ttl_ms: PositiveMs.default(15 * 60_000),
  })
  .strict()
  .prefault({});

function checkPortRange(
  ctx: z.RefinementCtx,
  range: { min_port: number; max_port: number },
  path: (string | number)[],
): void {
  if (range.min_port > range.max_port) {
    ctx.addIssue({ code: 'custom', path: [...path, 'min_port'], message: 'must not exceed max_port' });
  }
}

export const ConfigSchema = z
  .object({
    meta: MetaSchema,
    pages: z.array(PageSchema).min(1, 'at least one page is required'),
    webhook: WebhookSchema,
    admin: AdminSchema,
    sip: SipSchema,
    routes: z.array(RouteSchema).default([]),
    media: MediaSchema,
    messenger: MessengerSchema,
    calls: CallsSchema,
    logging: LoggingSchema,
    cluster: ClusterSchema,
  })
  .strict()
  .superRefine((cfg, ctx) => {
    const pageIds = new Set<string>();
    cfg.pages.forEach((page, i) => {
      if (pageIds.has(page.id)) ctx.addIssue({ code: 'custom', path: ['pages', i, 'id'], message: 'duplicate page id' });
      pageIds.add(page.id);
    });
    if (cfg.sip.default_page !== undefined && !pageIds.has(cfg.sip.default_page)) {
      ctx.addIssue({ code: 'custom', path: ['sip', 'default_page'], message: 'not one of the configured pages' });
    }
    const routeNames = new Set<string>();
    cfg.routes.forEach((route, i) => {
      if (routeNames.has(route.name)) {
        ctx.addIssue({ code: 'custom', path: ['routes', i, 'name'], message: 'duplicate route name' });
      }
      routeNames.add(route.name);
      if (route.match.page_id !== undefined && !pageIds.has(route.match.page_id)) {
        ctx.addIssue({
          code: 'custom',
          path: ['routes', i, 'match', 'page_id'],
          message: 'not one of the configured pages',
        });
      }
    });
    if (cfg.cluster.peer_timeout_ms < 2 * cfg.cluster.heartbeat_ms) {
      ctx.addIssue({ code: 'custom', path: ['cluster', 'peer_timeout_ms'], message: 'must be at least twice cluster.heartbeat_ms' });
    }
    checkPortRange(ctx, cfg.media.rtp, ['media', 'rtp']);
    checkPortRange(ctx, cfg.messenger.ice, ['messenger', 'ice']);
    checkPortRange(ctx, cfg.media.internal_ports, ['media', 'internal_ports']);
    // Each range is bound by a different component; sharing ports makes them fail at random under load.
    const ranges: [string, { min_port: number; max_port: number }][] = [
      ['media.rtp', cfg.media.rtp],
      ['media.internal_ports', cfg.media.internal_ports],
      ['messenger.ice', cfg.messenger.ice],
    ];
    ranges.forEach(([nameA, a], i) => {
      for (const [nameB, b] of ranges.slice(i + 1)) {
        const shared = a.min_port !== 0 && b.min_port !== 0 && a.min_port <= b.max_port && b.min_port <= a.max_port;
        if (shared) {
          ctx.addIssue({ code: 'custom', path: nameA.split('.'), message: `port range overlaps ${nameB}` });
        }
      }
    });
  });

export type Config = z.infer<typeof ConfigSchema>;
/** The shape accepted before defaults are applied (what a YAML file may contain). */
export type ConfigInput = z.input<typeof ConfigSchema>;
export type PageConfig = Config['pages'][number];
export type CallSettingsConfig = NonNullable<PageConfig['call_settings']>;
export type RouteConfig = Config['routes'][number];
export type CodecName = z.infer<typeof CodecNameSchema>;

/**
 * Where secrets live, as paths with `[]` for "every array element". Each may also be given as a sibling
 * `<key>_file` holding a file path; redaction uses the same list.
 */
export const SECRET_PATHS: readonly string[] = [
  'meta.app_secret',
  'meta.verify_token',
  'pages[].access_token',
  'sip.drachtio.secret',
  'sip.digest.password',
  'cluster.redis.password',
];
