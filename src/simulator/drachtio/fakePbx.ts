/**
 * A scriptable PBX on the SIP network side of the drachtio double. It answers the app's INVITEs as a test
 * tells it to, places calls into the app, and speaks in-dialog (BYE, re-INVITE, UPDATE, INFO) both ways; it can
 * transfer (REFER) and records the NOTIFYs that report the transfer.
 * It builds SIP like a real UA (Via/branch, tags, Call-ID, CSeq, Contact) and sees only what crosses the wire.
 */
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import { SipMsg, tagOf, token, uriOf } from './sip.js';
import type { DrachtioServerDouble, NetworkSide, Peer } from './server.js';
import { buildAuthorization } from '../../sip/digest.js';

/** How long helper waits default to (ms). */
const DEFAULT_WAIT_MS = 5000;

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** The first message in `seen` that matches, else the next `event` from `emitter` that does, within `timeoutMs`. */
function nextMatching(
  emitter: EventEmitter,
  event: string,
  seen: readonly SipMsg[],
  match: (msg: SipMsg) => boolean,
  timeoutMs: number,
  what: string,
): Promise<SipMsg> {
  const found = seen.find(match);
  if (found) return Promise.resolve(found);
  return withTimeout(
    new Promise<SipMsg>((resolve) => {
      const on = (msg: SipMsg): void => {
        if (!match(msg)) return;
        emitter.off(event, on);
        resolve(msg);
      };
      emitter.on(event, on);
    }),
    timeoutMs,
    what,
  );
}

export interface InDialogAnswer {
  status: number;
  reason?: string;
  headers?: Record<string, string>;
  body?: string;
}

/** One SIP dialog at the PBX. */
export class PbxDialog extends EventEmitter {
  readonly callId: string;
  /** Our From/To (with our tag) and theirs. */
  readonly local: string;
  readonly remote: string;
  /** Where in-dialog requests go (the server). */
  readonly remoteTarget: string;
  /** Every in-dialog request received from the app side. */
  readonly requests: SipMsg[] = [];
  /** SDP we put in answers to re-INVITEs (defaults to what we answered or offered last). */
  localSdp: string;
  /** The last SDP received from the app side. */
  remoteSdp: string;
  #ended = false;
  #cseq: number;
  readonly #pbx: FakePbx;
  #answerer: ((req: SipMsg) => InDialogAnswer | undefined) | undefined;

  /** The PBX-side address this dialog's messages come from. */
  readonly source: Peer;

  constructor(
    pbx: FakePbx,
    init: { callId: string; local: string; remote: string; remoteTarget: string; cseq: number; localSdp: string; remoteSdp: string; source: Peer },
  ) {
    super();
    this.#pbx = pbx;
    this.source = init.source;
    this.callId = init.callId;
    this.local = init.local;
    this.remote = init.remote;
    this.remoteTarget = init.remoteTarget;
    this.#cseq = init.cseq;
    this.localSdp = init.localSdp;
    this.remoteSdp = init.remoteSdp;
  }

  get ended(): boolean {
    return this.#ended;
  }

  get localTag(): string | undefined {
    return tagOf(this.local);
  }

  get remoteTag(): string | undefined {
    return tagOf(this.remote);
  }

  /** How to answer in-dialog requests from the app (return undefined for the default: 200, re-INVITE with localSdp). */
  onRequest(answerer: (req: SipMsg) => InDialogAnswer | undefined): void {
    this.#answerer = answerer;
  }

  /** Resolve with the next in-dialog request of `method` from the app (or one already received). */
  waitForRequest(method: string, timeoutMs = DEFAULT_WAIT_MS, after = 0): Promise<SipMsg> {
    return nextMatching(this, 'request', this.requests.slice(after), (req) => req.method === method, timeoutMs, `${method} in dialog ${this.callId}`);
  }

  waitForBye(timeoutMs = DEFAULT_WAIT_MS): Promise<SipMsg> {
    return this.waitForRequest('BYE', timeoutMs);
  }

  /** Send an in-dialog request; resolves with the final response (ACKs a 2xx to INVITE). */
  async request(method: string, options: { headers?: Record<string, string>; body?: string; contentType?: string } = {}): Promise<SipMsg> {
    const req = SipMsg.request(method, this.remoteTarget);
    req.add('Via', this.#pbx.via(this.source));
    req.add('From', this.local);
    req.add('To', this.remote);
    req.add('Call-ID', this.callId);
    req.add('CSeq', `${++this.#cseq} ${method}`);
    req.add('Contact', `<sip:pbx@${this.source.address}:${this.source.port}>`);
    req.add('Max-Forwards', '70');
    for (const [n, v] of Object.entries(options.headers ?? {})) req.add(n, v);
    if (options.body !== undefined && options.body !== '') {
      req.add('Content-Type', options.contentType ?? 'application/sdp');
      req.body = options.body;
    }
    if (method === 'BYE') this.#ended = true;
    const final = await this.#pbx.transaction(req, this.source);
    if (method === 'INVITE' && final.status >= 200 && final.status < 300) {
      this.remoteSdp = final.body;
      const ack = SipMsg.request('ACK', this.remoteTarget);
      ack.add('Via', this.#pbx.via(this.source));
      ack.add('From', this.local);
      ack.add('To', this.remote);
      ack.add('Call-ID', this.callId);
      ack.add('CSeq', `${this.#cseq} ACK`);
      ack.add('Max-Forwards', '70');
      this.#pbx.send(ack, this.source);
    }
    return final;
  }

  bye(): Promise<SipMsg> {
    return this.request('BYE');
  }

  reinvite(sdp: string, headers?: Record<string, string>): Promise<SipMsg> {
    this.localSdp = sdp;
    return this.request('INVITE', { body: sdp, headers });
  }

  update(options: { sdp?: string; headers?: Record<string, string> } = {}): Promise<SipMsg> {
    return this.request('UPDATE', { body: options.sdp, headers: options.headers });
  }

  info(contentType: string, body: string): Promise<SipMsg> {
    return this.request('INFO', { body, contentType });
  }

  /** Transfer (RFC 3515): REFER with `Refer-To: <referTo>`; resolves with the final response (202 when accepted). */
  refer(referTo: string, headers: Record<string, string> = {}): Promise<SipMsg> {
    return this.request('REFER', { headers: { 'Refer-To': `<${referTo}>`, ...headers } });
  }

  /** The NOTIFYs received in this dialog (a transfer's progress, answered 200), in order. */
  get notifies(): SipMsg[] {
    return this.requests.filter((r) => r.method === 'NOTIFY');
  }

  /** @internal an in-dialog request from the app side. */
  handle(req: SipMsg): void {
    if (req.method === 'ACK') {
      this.requests.push(req);
      this.emit('request', req);
      return;
    }
    const custom = this.#answerer?.(req);
    const answer: InDialogAnswer = custom ?? { status: 200 };
    if (!custom && req.method === 'INVITE') answer.body = this.localSdp;
    if (req.method === 'INVITE' && req.body) this.remoteSdp = req.body;
    const res = this.#pbx.responseTo(req, answer.status, answer.reason, this.localTag);
    if (answer.status >= 200 && answer.status < 300 && req.method === 'INVITE') {
      res.add('Contact', `<sip:pbx@${this.source.address}:${this.source.port}>`);
    }
    for (const [n, v] of Object.entries(answer.headers ?? {})) res.add(n, v);
    if (answer.body) {
      res.add('Content-Type', 'application/sdp');
      res.body = answer.body;
    }
    if (req.method === 'BYE' && answer.status < 300) this.#ended = true;
    this.#pbx.send(res, this.source);
    this.requests.push(req);
    this.emit('request', req);
    if (req.method === 'BYE') this.emit('bye', req);
  }
}

/** An INVITE from the app, waiting for the PBX's answer. */
export class PbxInvite extends EventEmitter {
  readonly request: SipMsg;
  readonly toTag = token(10);
  #final: number | undefined;
  #canceled = false;
  readonly #pbx: FakePbx;
  readonly #from: Peer;
  #dialog: PbxDialog | undefined;
  readonly #acked: Promise<PbxDialog>;
  #resolveAcked!: (d: PbxDialog) => void;
  readonly whenCanceled: Promise<void>;
  #resolveCanceled!: () => void;

  constructor(pbx: FakePbx, request: SipMsg, from: Peer) {
    super();
    this.#pbx = pbx;
    this.request = request;
    this.#from = from;
    this.#acked = new Promise((resolve) => (this.#resolveAcked = resolve));
    this.whenCanceled = new Promise((resolve) => (this.#resolveCanceled = resolve));
  }

  get requestUri(): string {
    return this.request.uri;
  }

  get sdp(): string {
    return this.request.body;
  }

  get canceled(): boolean {
    return this.#canceled;
  }

  get finalStatus(): number | undefined {
    return this.#final;
  }

  header(name: string): string | undefined {
    return this.request.get(name);
  }

  #respond(status: number, reason?: string, extra?: (res: SipMsg) => void): void {
    if (this.#final !== undefined) return;
    if (status >= 200) this.#final = status;
    const res = this.#pbx.responseTo(this.request, status, reason, this.toTag);
    res.add('Contact', `<sip:pbx@${this.#pbx.address.address}:${this.#pbx.address.port};transport=UDP>`);
    extra?.(res);
    this.#pbx.send(res, this.#pbx.address);
  }

  /** 180 Ringing (or 183 with early SDP). */
  ringing(options: { status?: number; sdp?: string } = {}): void {
    this.#respond(options.status ?? 180, undefined, (res) => {
      if (options.sdp) {
        res.add('Content-Type', 'application/sdp');
        res.body = options.sdp;
      }
    });
  }

  /** 200 OK with `sdp`; resolves with the dialog once the app's ACK arrived. */
  answer(sdp: string, options: { headers?: Record<string, string>; ackTimeoutMs?: number } = {}): Promise<PbxDialog> {
    this.#respond(200, 'OK', (res) => {
      for (const [n, v] of Object.entries(options.headers ?? {})) res.add(n, v);
      res.add('Content-Type', 'application/sdp');
      res.body = sdp;
      this.#dialog = new PbxDialog(this.#pbx, {
        callId: this.request.callId,
        local: res.get('to')!,
        remote: this.request.get('from')!,
        remoteTarget: uriOf(this.request.get('contact') ?? `<sip:${this.#from.address}:${this.#from.port}>`),
        cseq: 0,
        localSdp: sdp,
        remoteSdp: this.request.body,
        source: this.#pbx.address,
      });
      this.#pbx.addDialog(this.#dialog);
    });
    return withTimeout(this.#acked, options.ackTimeoutMs ?? DEFAULT_WAIT_MS, 'ACK of 200 OK');
  }

  reject(status: number, reason?: string, headers?: Record<string, string>): void {
    this.#respond(status, reason, (res) => {
      for (const [n, v] of Object.entries(headers ?? {})) res.add(n, v);
    });
  }

  /** @internal */
  onAck(): void {
    if (this.#dialog) this.#resolveAcked(this.#dialog);
  }

  /** @internal CANCEL from the app: 200 to the CANCEL, 487 to the INVITE (unless already final). */
  onCancel(cancel: SipMsg): void {
    const ok = this.#pbx.responseTo(cancel, this.#final === undefined ? 200 : 481, undefined, this.toTag);
    this.#pbx.send(ok, this.#pbx.address);
    if (this.#final !== undefined) return;
    this.#canceled = true;
    this.#respond(487, 'Request Terminated');
    this.#resolveCanceled();
    this.emit('cancel');
  }
}

export interface PbxCallOptions {
  /** Request-URI (default `sip:<user>@<server sip address>`). */
  requestUri?: string;
  user?: string;
  headers?: Record<string, string>;
  sdp?: string;
  /** Source address the INVITE comes from (ACL tests). Default the PBX's address. */
  source?: Peer;
  /** Answer a 401 challenge with these credentials. */
  auth?: { username: string; password: string };
  fromUser?: string;
  /** Call-ID of the INVITE (default a new one). */
  callId?: string;
}

export interface PbxCallFinal {
  status: number;
  response: SipMsg;
  sdp: string;
  dialog?: PbxDialog;
}

/** A call the PBX placed into the app. */
export class PbxCall extends EventEmitter {
  readonly provisional: SipMsg[] = [];
  readonly final: Promise<PbxCallFinal>;
  /** Every INVITE sent for this call (a second one after a digest challenge). */
  readonly invites: SipMsg[] = [];
  #cancel: (() => void) | undefined;

  constructor(run: (call: PbxCall, setCancel: (fn: () => void) => void) => Promise<PbxCallFinal>) {
    super();
    this.final = run(this, (fn) => (this.#cancel = fn));
    // The test that placed the call awaits `final` and sees its failure; one that only cancels it must not crash.
    this.final.catch(() => undefined);
  }

  /** Send CANCEL for the pending INVITE. */
  cancel(): void {
    this.#cancel?.();
  }

  waitForProvisional(status: number, timeoutMs = DEFAULT_WAIT_MS): Promise<SipMsg> {
    return nextMatching(this, 'provisional', this.provisional, (res) => res.status === status, timeoutMs, `${status} provisional`);
  }
}

interface ClientTxn {
  request: SipMsg;
  onResponse: (res: SipMsg) => void;
}

export class FakePbx extends EventEmitter implements NetworkSide {
  /** The PBX's own SIP address (targets of the app's INVITEs point here). */
  readonly address: Peer;
  readonly invites: PbxInvite[] = [];
  readonly dialogs: PbxDialog[] = [];
  readonly #server: DrachtioServerDouble;
  readonly #txns = new Map<string, ClientTxn>();
  readonly #pendingInvites = new Map<string, PbxInvite>();
  #inviteHandler: ((inv: PbxInvite) => void | Promise<void>) | undefined;

  constructor(server: DrachtioServerDouble, address: Peer = { address: '127.0.0.1', port: 5080 }) {
    super();
    this.#server = server;
    this.address = address;
  }

  /** A URI that reaches this PBX with `user`. */
  uri(user: string): string {
    return `sip:${user}@${this.address.address}:${this.address.port}`;
  }

  /** How to treat INVITEs from the app. Without a handler the PBX answers 480. */
  onInvite(handler: ((inv: PbxInvite) => void | Promise<void>) | undefined): void {
    this.#inviteHandler = handler;
  }

  /** The next INVITE from the app (or one already received and not yet taken). */
  nextInvite(timeoutMs = DEFAULT_WAIT_MS, after = 0): Promise<PbxInvite> {
    const seen = this.invites[after];
    if (seen) return Promise.resolve(seen);
    return withTimeout(
      new Promise<PbxInvite>((resolve) => this.once('invite', resolve)),
      timeoutMs,
      'an INVITE at the PBX',
    );
  }

  via(from: Peer = this.address): string {
    return `SIP/2.0/UDP ${from.address}:${from.port};branch=z9hG4bK-${token(10)};rport`;
  }

  /** @internal */
  addDialog(d: PbxDialog): void {
    this.dialogs.push(d);
  }

  /** @internal a response to `req` with the usual copied headers. */
  responseTo(req: SipMsg, status: number, reason: string | undefined, toTag: string | undefined): SipMsg {
    const res = SipMsg.response(status, reason ?? REASONS[status] ?? 'Unknown');
    for (const via of req.getAll('via')) res.add('Via', via);
    res.add('From', req.get('from')!);
    const to = req.get('to')!;
    res.add('To', tagOf(to) || !toTag || status === 100 ? to : `${to};tag=${toTag}`);
    res.add('Call-ID', req.callId);
    res.add('CSeq', req.get('cseq')!);
    return res;
  }

  /** @internal put a message on the wire toward the server. */
  send(msg: SipMsg, from: Peer): void {
    const copy = SipMsg.parse(msg.toString());
    setImmediate(() => this.#server.receive(copy, from));
  }

  /** @internal send a request and resolve with its final response. */
  transaction(req: SipMsg, from: Peer, onProvisional?: (res: SipMsg) => void): Promise<SipMsg> {
    return new Promise((resolve) => {
      this.#txns.set(`${req.branch}|${req.cseq.method}`, {
        request: req,
        onResponse: (res) => {
          if (res.status < 200) {
            onProvisional?.(res);
            return;
          }
          this.#txns.delete(`${req.branch}|${req.cseq.method}`);
          resolve(res);
        },
      });
      this.send(req, from);
    });
  }

  fromServer(msg: SipMsg, from: Peer): void {
    if (msg.kind === 'response') {
      this.#txns.get(`${msg.branch}|${msg.cseq.method}`)?.onResponse(msg);
      return;
    }
    const key = `${msg.callId}|${msg.branch}`;
    if (msg.method === 'CANCEL') {
      const inv = this.#pendingInvites.get(key);
      if (inv) inv.onCancel(msg);
      else this.send(this.responseTo(msg, 481, undefined, token(10)), this.address);
      return;
    }
    if (msg.method === 'ACK') {
      const inv = this.#pendingInvites.get(key);
      if (inv) return; // ACK for our non-2xx (same branch)
      const answered = this.invites.find((i) => i.request.callId === msg.callId && i.toTag === msg.toTag && i.finalStatus === 200);
      const dialog = this.#findDialog(msg);
      if (answered && dialog && !dialog.requests.some((r) => r.method === 'ACK')) answered.onAck();
      dialog?.handle(msg);
      return;
    }
    if (msg.toTag) {
      const dialog = this.#findDialog(msg);
      if (dialog) dialog.handle(msg);
      else this.send(this.responseTo(msg, 481, undefined, undefined), this.address);
      return;
    }
    if (msg.method === 'INVITE') {
      const inv = new PbxInvite(this, msg, from);
      this.#pendingInvites.set(key, inv);
      this.invites.push(inv);
      this.emit('invite', inv);
      const handler = this.#inviteHandler;
      if (!handler) {
        inv.reject(480);
        return;
      }
      Promise.resolve()
        .then(() => handler(inv))
        .catch((err: unknown) => {
          process.emitWarning(`fake PBX invite handler threw: ${(err as Error)?.stack ?? String(err)}`);
          inv.reject(500);
        });
      return;
    }
    // Out-of-dialog requests other than INVITE (OPTIONS...): answer 200.
    this.send(this.responseTo(msg, 200, undefined, token(10)), this.address);
  }

  #findDialog(msg: SipMsg): PbxDialog | undefined {
    return this.dialogs.find((d) => d.callId === msg.callId && d.localTag === msg.toTag && d.remoteTag === msg.fromTag);
  }

  /** Place a call into the app through the server. */
  call(options: PbxCallOptions = {}): PbxCall {
    const source = options.source ?? { address: this.address.address, port: 5070 };
    const sip = this.#server.sip;
    const requestUri = options.requestUri ?? `sip:${options.user ?? 'service'}@${sip.address}:${sip.port}`;
    const callId = options.callId ?? `${randomUUID()}@${source.address}`;
    const fromTag = token(10);
    const from = `"PBX" <sip:${options.fromUser ?? 'agent'}@${source.address}:${source.port}>;tag=${fromTag}`;
    const to = `<${requestUri}>`;
    let cseq = 1;

    return new PbxCall(async (call, setCancel) => {
      let authorization: string | undefined;
      for (let attempt = 0; attempt < 2; attempt++) {
        const invite = SipMsg.request('INVITE', requestUri);
        invite.add('Via', this.via(source));
        invite.add('From', from);
        invite.add('To', to);
        invite.add('Call-ID', callId);
        invite.add('CSeq', `${cseq} INVITE`);
        invite.add('Contact', `<sip:${options.fromUser ?? 'agent'}@${source.address}:${source.port}>`);
        invite.add('Max-Forwards', '70');
        if (authorization) invite.add('Authorization', authorization);
        for (const [n, v] of Object.entries(options.headers ?? {})) invite.add(n, v);
        if (options.sdp) {
          invite.add('Content-Type', 'application/sdp');
          invite.body = options.sdp;
        }
        call.invites.push(invite);
        setCancel(() => {
          const cancel = SipMsg.request('CANCEL', requestUri);
          cancel.add('Via', invite.get('via')!);
          cancel.add('From', from);
          cancel.add('To', to);
          cancel.add('Call-ID', callId);
          cancel.add('CSeq', `${cseq} CANCEL`);
          cancel.add('Max-Forwards', '70');
          void this.transaction(cancel, source);
        });
        const final = await this.transaction(invite, source, (res) => {
          call.provisional.push(res);
          call.emit('provisional', res);
        });
        if (final.status >= 300) {
          // ACK for a non-2xx final: same branch, To with the tag of the response.
          const ack = SipMsg.request('ACK', requestUri);
          ack.add('Via', invite.get('via')!);
          ack.add('From', from);
          ack.add('To', final.get('to')!);
          ack.add('Call-ID', callId);
          ack.add('CSeq', `${cseq} ACK`);
          ack.add('Max-Forwards', '70');
          this.send(ack, source);
          const challenge = final.get('www-authenticate');
          if (final.status === 401 && challenge && options.auth && !authorization) {
            authorization = buildAuthorization(challenge, {
              method: 'INVITE',
              uri: requestUri,
              username: options.auth.username,
              password: options.auth.password,
            });
            cseq += 1;
            continue;
          }
          return { status: final.status, response: final, sdp: final.body };
        }
        const contact = final.get('contact');
        const dialog = new PbxDialog(this, {
          callId,
          local: from,
          remote: final.get('to')!,
          remoteTarget: contact ? uriOf(contact) : requestUri,
          cseq,
          localSdp: options.sdp ?? '',
          remoteSdp: final.body,
          source,
        });
        this.dialogs.push(dialog);
        const ack = SipMsg.request('ACK', dialog.remoteTarget);
        ack.add('Via', this.via(source));
        ack.add('From', from);
        ack.add('To', final.get('to')!);
        ack.add('Call-ID', callId);
        ack.add('CSeq', `${cseq} ACK`);
        ack.add('Max-Forwards', '70');
        this.send(ack, source);
        return { status: final.status, response: final, sdp: final.body, dialog };
      }
      throw new Error('unreachable');
    });
  }

  /** Send OPTIONS into the app; resolves with the final response. */
  options(options: { requestUri?: string; source?: Peer } = {}): Promise<SipMsg> {
    const source = options.source ?? { address: this.address.address, port: 5070 };
    const sip = this.#server.sip;
    const uri = options.requestUri ?? `sip:ping@${sip.address}:${sip.port}`;
    const req = SipMsg.request('OPTIONS', uri);
    req.add('Via', this.via(source));
    req.add('From', `<sip:pbx@${source.address}:${source.port}>;tag=${token(10)}`);
    req.add('To', `<${uri}>`);
    req.add('Call-ID', `${randomUUID()}@${source.address}`);
    req.add('CSeq', '1 OPTIONS');
    req.add('Max-Forwards', '70');
    req.add('Accept', 'application/sdp');
    return withTimeout(this.transaction(req, source), DEFAULT_WAIT_MS, 'OPTIONS response');
  }
}

const REASONS: Record<number, string> = {
  100: 'Trying',
  180: 'Ringing',
  183: 'Session Progress',
  200: 'OK',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  408: 'Request Timeout',
  480: 'Temporarily Unavailable',
  481: 'Call/Transaction Does Not Exist',
  486: 'Busy Here',
  487: 'Request Terminated',
  488: 'Not Acceptable Here',
  500: 'Server Internal Error',
  503: 'Service Unavailable',
  600: 'Busy Everywhere',
  603: 'Decline',
};
