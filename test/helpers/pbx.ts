/**
 * The PBX side of end-to-end SIP tests, with two backends behind one small interface:
 *  - 'double': the in-process drachtio-server double and its fake PBX (always available);
 *  - 'sipp': a real drachtio-server (DRACHTIO_HOST/PORT/SECRET/SIP set) with sipp (Debian `sip-tester`) as PBX,
 *    answering the app's INVITEs and placing calls into it from the XML scenarios in test/helpers/sipp/.
 * Tests written against `PbxSide` run on both; without the environment the real variant is skipped with a reason.
 */
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startDrachtioDouble, type DrachtioDouble } from './drachtio/index.js';
import { SipMsg } from './drachtio/sip.js';

export interface DrachtioTarget {
  host: string;
  port: number;
  secret: string;
}

export interface PbxAnswerPlan {
  /** Refuse with this final status instead of answering. */
  reject?: number;
  /** Ring (180) and never answer: the app's CANCEL gets 200 and the INVITE 487. */
  ringForever?: boolean;
  /** Time between 180 and 200 (ms). Default 50. */
  ringMs?: number;
  /** Ring with 183 Session Progress carrying `sdp` (early media) instead of 180. */
  earlyMedia?: boolean;
  /** SDP of the 200 OK (the RTP peer's). */
  sdp?: string;
  /** Hang up this long after answering; without it the PBX waits for the app's BYE. */
  hangupAfterMs?: number;
  /** After answering, expect this many in-dialog INFOs from the app (each answered 200) before the BYE. */
  expectInfo?: number;
  /**
   * After answering, wait `afterMs`, then transfer: REFER to `target`, answer the app's NOTIFYs (two expected:
   * 100 Trying and the outcome) with 200, then wait for the app's BYE.
   */
  transfer?: { target: string; afterMs: number };
}

/** What the transferor saw of a transfer (answer plans with `transfer`). */
export interface PbxTransferSeen {
  /** The app's final response to the REFER. */
  referStatus: number;
  /** The NOTIFYs of the transfer, in order: sipfrag body and Subscription-State. */
  notifies: Array<{ body: string; subscriptionState: string; event: string; contentType: string }>;
}

/** An INVITE as the PBX received it. */
export interface PbxSeenInvite {
  requestUri: string;
  header(name: string): string | undefined;
  sdp: string;
}

export interface PbxCallEnd {
  /** Who sent BYE ('none' for a rejected or canceled call). */
  byeFrom: 'pbx' | 'app' | 'none';
  /** The app CANCELed the INVITE (ringForever plans). */
  canceled?: boolean;
  /** Bodies of the INFOs the app sent in the dialog, in order (answer plans with `expectInfo`). */
  infoBodies?: string[];
  transfer?: PbxTransferSeen;
}

export interface PbxInbound {
  /** Where the app must send its INVITE. */
  targetUri: string;
  /** Settles when the PBX's part is over. */
  done: Promise<PbxCallEnd & { invite: PbxSeenInvite }>;
}

export interface PbxPlacePlan {
  /** Request-URI user part (the target PSID when routing by Request-URI). */
  user: string;
  headers?: Record<string, string>;
  sdp: string;
  hangupAfterMs?: number;
  /** After the ACK: INFO application/dtmf-relay with this digit, then a re-INVITE with `holdSdp`. */
  midCall?: { dtmfDigit: string; holdSdp: string };
}

export interface PbxMidCallResult {
  infoStatus: number;
  reinviteStatus: number;
  reinviteAnswerSdp: string;
}

export interface PbxPlaced {
  done: Promise<PbxCallEnd & { status: number; answerSdp: string; midCall?: PbxMidCallResult }>;
}

export interface PbxSide {
  readonly kind: 'double' | 'sipp';
  /** What the bridge's SIP leg connects to. */
  readonly drachtio: DrachtioTarget;
  /** Address INVITEs from the PBX come from (for the bridge's ACL). */
  readonly sourceAddress: string;
  expectInvite(plan: PbxAnswerPlan): Promise<PbxInbound>;
  placeCall(plan: PbxPlacePlan): Promise<PbxPlaced>;
  close(): Promise<void>;
}

export const REAL_DRACHTIO_SKIP_REASON =
  'real drachtio-server variant skipped: set DRACHTIO_HOST, DRACHTIO_PORT, DRACHTIO_SECRET and ' +
  'DRACHTIO_SIP=<ip:port of its SIP listener> (sipp from the Debian package sip-tester plays the PBX)';

/** The real drachtio-server from the environment, or undefined. */
export function realDrachtioEnv(env: NodeJS.ProcessEnv = process.env): { drachtio: DrachtioTarget; sip: { address: string; port: number } } | undefined {
  const { DRACHTIO_HOST, DRACHTIO_PORT, DRACHTIO_SECRET, DRACHTIO_SIP } = env;
  if (!DRACHTIO_HOST || !DRACHTIO_PORT || !DRACHTIO_SECRET || !DRACHTIO_SIP) return undefined;
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(DRACHTIO_SIP);
  if (!m) return undefined;
  return {
    drachtio: { host: DRACHTIO_HOST, port: Number(DRACHTIO_PORT), secret: DRACHTIO_SECRET },
    sip: { address: m[1]!, port: Number(m[2]) },
  };
}

/** The backends to run a suite on: the double always, the real server when configured (else a skip reason). */
export function pbxBackends(): Array<{ name: string; create?: () => Promise<PbxSide>; skip?: string }> {
  const real = realDrachtioEnv();
  return [
    { name: 'drachtio double + fake PBX', create: () => createDoublePbxSide() },
    real
      ? { name: 'real drachtio-server + sipp', create: () => createSippPbxSide(real) }
      : { name: 'real drachtio-server + sipp', skip: REAL_DRACHTIO_SKIP_REASON },
  ];
}

// ---------------------------------------------------------------------------------------------------------------
// Backend 1: the double
// ---------------------------------------------------------------------------------------------------------------

export async function createDoublePbxSide(existing?: DrachtioDouble): Promise<PbxSide & { double: DrachtioDouble }> {
  const double = existing ?? (await startDrachtioDouble({ secret: 'cymru' }));
  const plans = new Map<string, (inv: import('./drachtio/fakePbx.js').PbxInvite) => void>();
  double.pbx.onInvite((inv) => {
    const user = /^sips?:([^@]+)@/.exec(inv.requestUri)?.[1] ?? '';
    const plan = plans.get(user);
    if (!plan) inv.reject(404);
    else plan(inv);
  });
  let seq = 0;
  return {
    kind: 'double',
    double,
    drachtio: { host: double.host, port: double.port, secret: double.secret },
    sourceAddress: '127.0.0.1',
    async expectInvite(plan) {
      const user = `pbx${++seq}`;
      let resolveDone!: (v: PbxCallEnd & { invite: PbxSeenInvite }) => void;
      let rejectDone!: (err: unknown) => void;
      const done = new Promise<PbxCallEnd & { invite: PbxSeenInvite }>((res, rej) => {
        resolveDone = res;
        rejectDone = rej;
      });
      plans.set(user, (inv) => {
        plans.delete(user);
        const invite: PbxSeenInvite = { requestUri: inv.requestUri, header: (n) => inv.header(n), sdp: inv.sdp };
        if (plan.reject) {
          inv.reject(plan.reject);
          resolveDone({ invite, byeFrom: 'none' });
          return;
        }
        inv.ringing(plan.earlyMedia ? { status: 183, sdp: plan.sdp ?? '' } : {});
        if (plan.ringForever) {
          inv.whenCanceled.then(() => resolveDone({ invite, byeFrom: 'none', canceled: true }), rejectDone);
          return;
        }
        setTimeout(() => {
          inv
            .answer(plan.sdp ?? '')
            .then(async (dialog) => {
              if (plan.transfer) {
                await new Promise((r) => setTimeout(r, plan.transfer!.afterMs));
                const refer = await dialog.request('REFER', {
                  headers: { 'Refer-To': `<${plan.transfer.target}>`, 'Referred-By': '<sip:agent-a@127.0.0.1>' },
                });
                await dialog.waitForBye(30_000);
                resolveDone({ invite, byeFrom: 'app', transfer: { referStatus: refer.status, notifies: notifiesOf(dialog.requests) } });
                return;
              }
              if (plan.hangupAfterMs !== undefined) {
                await new Promise((r) => setTimeout(r, plan.hangupAfterMs));
                if (!dialog.ended) {
                  await dialog.bye();
                  return resolveDone({ invite, byeFrom: 'pbx' });
                }
              }
              await dialog.waitForBye(30_000);
              const infoBodies = dialog.requests.filter((r) => r.method === 'INFO').map((r) => r.body);
              resolveDone({ invite, byeFrom: 'app', ...(plan.expectInfo ? { infoBodies } : {}) });
            })
            .catch(rejectDone);
        }, plan.ringMs ?? 50);
      });
      return { targetUri: double.pbx.uri(user), done };
    },
    async placeCall(plan) {
      const call = double.pbx.call({ user: plan.user, headers: plan.headers, sdp: plan.sdp });
      const done = call.final.then(async (final) => {
        if (!final.dialog) return { status: final.status, answerSdp: final.sdp, byeFrom: 'none' as const };
        let midCall: PbxMidCallResult | undefined;
        if (plan.midCall) {
          await new Promise((r) => setTimeout(r, 100));
          const info = await final.dialog.info('application/dtmf-relay', `Signal=${plan.midCall.dtmfDigit}\r\nDuration=160\r\n`);
          const reinvite = await final.dialog.reinvite(plan.midCall.holdSdp);
          midCall = { infoStatus: info.status, reinviteStatus: reinvite.status, reinviteAnswerSdp: reinvite.body };
        }
        if (plan.hangupAfterMs !== undefined) {
          await new Promise((r) => setTimeout(r, plan.hangupAfterMs));
          if (!final.dialog.ended) {
            await final.dialog.bye();
            return { status: final.status, answerSdp: final.sdp, byeFrom: 'pbx' as const, midCall };
          }
        }
        await final.dialog.waitForBye(30_000);
        return { status: final.status, answerSdp: final.sdp, byeFrom: 'app' as const, midCall };
      });
      return { done };
    },
    close: () => (existing ? Promise.resolve() : double.close()),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Backend 2: a real drachtio-server with sipp as the PBX
// ---------------------------------------------------------------------------------------------------------------

const SIPP_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'sipp');
/** Longest a sipp run may take before it stops by itself (s). */
const SIPP_TIMEOUT_S = 30;

async function freeUdpPort(): Promise<number> {
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  const { port } = socket.address();
  await new Promise<void>((resolve) => socket.close(() => resolve()));
  return port;
}

/** Indent a block as sipp's CDATA sections are (sipp strips the common leading whitespace). */
function indent(text: string, spaces = 6): string {
  return text
    .replace(/\r\n/g, '\n')
    .replace(/\n+$/, '')
    .split('\n')
    .map((l) => ' '.repeat(spaces) + l)
    .join('\n');
}

function notifiesOf(requests: readonly SipMsg[]): PbxTransferSeen['notifies'] {
  return requests
    .filter((r) => r.kind === 'request' && r.method === 'NOTIFY')
    .map((r) => ({
      body: r.body,
      subscriptionState: r.get('subscription-state') ?? '',
      event: r.get('event') ?? r.get('o') ?? '',
      contentType: r.get('content-type') ?? r.get('c') ?? '',
    }));
}

async function scenario(name: string, values: Record<string, string>): Promise<string> {
  let text = await readFile(path.join(SIPP_DIR, name), 'utf8');
  for (const [k, v] of Object.entries(values)) text = text.split(`{{${k}}}`).join(v);
  return text;
}

/** Messages in a sipp `-trace_msg` log, with their direction. */
export function parseSippMessages(log: string): Array<{ direction: 'sent' | 'received'; msg: SipMsg }> {
  const out: Array<{ direction: 'sent' | 'received'; msg: SipMsg }> = [];
  const blocks = log.split(/^-{10,}.*$/m);
  for (const block of blocks) {
    const m = /^\s*\w+ message (sent|received)[^\n]*\n\n?([\s\S]*)$/m.exec(block.replace(/\r\n/g, '\n'));
    if (!m) continue;
    const text = m[2]!.replace(/^\n+/, '').replace(/\n/g, '\r\n');
    try {
      out.push({ direction: m[1] === 'sent' ? 'sent' : 'received', msg: SipMsg.parse(text) });
    } catch {
      // not a SIP message (sipp's own notes)
    }
  }
  return out;
}

interface SippRun {
  exitCode: number | null;
  stderr: string;
  messages: Array<{ direction: 'sent' | 'received'; msg: SipMsg }>;
}

function runSipp(args: string[], dir: string): Promise<SippRun> {
  const logFile = path.join(dir, 'messages.log');
  const child = spawn(
    'sipp',
    [...args, '-m', '1', '-trace_msg', '-message_file', logFile, '-nostdin', '-timeout', `${SIPP_TIMEOUT_S}s`, '-timeout_error'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (exitCode) => {
      readFile(logFile, 'utf8')
        .catch(() => '')
        .then((log) => resolve({ exitCode, stderr, messages: parseSippMessages(log) }), reject);
    });
  });
}

export async function createSippPbxSide(real: { drachtio: DrachtioTarget; sip: { address: string; port: number } }): Promise<PbxSide> {
  const dirs: string[] = [];
  const newDir = async (): Promise<string> => {
    const dir = await mkdtemp(path.join(tmpdir(), 'pbx-sipp-'));
    dirs.push(dir);
    return dir;
  };
  const after = async (hangupAfterMs: number | undefined, who: 'uas' | 'uac', byeCseq = 2): Promise<string> =>
    hangupAfterMs !== undefined
      ? scenario(`after-send-bye-${who}.xml.part`, { HOLD_MS: String(hangupAfterMs), BYE_CSEQ: String(byeCseq) })
      : scenario('after-wait-bye.xml.part', { WAIT_BYE_MS: String((SIPP_TIMEOUT_S - 2) * 1000) });

  return {
    kind: 'sipp',
    drachtio: real.drachtio,
    sourceAddress: '127.0.0.1',
    async expectInvite(plan) {
      const dir = await newDir();
      const port = await freeUdpPort();
      const file = path.join(dir, 'uas.xml');
      const afterAnswer = plan.transfer
        ? await scenario('after-refer-uas.xml.part', {
          HOLD_MS: String(plan.transfer.afterMs),
          REFER_TO: plan.transfer.target,
          AFTER_REFER: await after(undefined, 'uas'),
        })
        : (await scenario('recv-info.xml.part', {})).repeat(plan.expectInfo ?? 0) + (await after(plan.hangupAfterMs, 'uas'));
      const xml = plan.reject
        ? await scenario('uas-reject.xml', { STATUS: String(plan.reject), REASON: 'Rejected' })
        : plan.ringForever
          ? await scenario('uas-ring-cancel.xml', {})
          : await scenario('uas-answer.xml', {
            PROVISIONAL: plan.earlyMedia ? '183 Session Progress' : '180 Ringing',
            PROVISIONAL_BODY: plan.earlyMedia
              ? `      Content-Type: application/sdp\n      Content-Length: [len]\n\n${indent(plan.sdp ?? '')}`
              : '      Content-Length: 0\n',
            RING_MS: String(plan.ringMs ?? 50),
            INVITE_ACTIONS:
              plan.hangupAfterMs !== undefined || plan.transfer ? await scenario('invite-actions-keep-tags.xml.part', {}) : '',
            SDP: indent(plan.sdp ?? ''),
            AFTER: afterAnswer,
          });
      await writeFile(file, xml);
      const run = runSipp(['-sf', file, '-i', '127.0.0.1', '-p', String(port)], dir);
      // Give sipp a moment to bind before the app sends its INVITE.
      await new Promise((r) => setTimeout(r, 300));
      const done = run.then((r) => {
        const inviteMsg = r.messages.find((m) => m.direction === 'received' && m.msg.kind === 'request' && m.msg.method === 'INVITE')?.msg;
        if (r.exitCode !== 0 || !inviteMsg) {
          throw new Error(`sipp UAS failed (exit ${r.exitCode}): ${r.stderr.slice(-500)}`);
        }
        const byeFrom = plan.reject || plan.ringForever ? 'none' : plan.hangupAfterMs !== undefined ? 'pbx' : 'app';
        const infoBodies = r.messages
          .filter((m) => m.direction === 'received' && m.msg.kind === 'request' && m.msg.method === 'INFO')
          .map((m) => m.msg.body);
        const referAnswer = r.messages.find(
          (m) => m.direction === 'received' && m.msg.kind === 'response' && m.msg.cseq.method === 'REFER' && m.msg.status >= 200,
        )?.msg;
        const received = r.messages.filter((m) => m.direction === 'received').map((m) => m.msg);
        return {
          invite: { requestUri: inviteMsg.uri, header: (n: string) => inviteMsg.get(n), sdp: inviteMsg.body },
          byeFrom,
          ...(plan.expectInfo ? { infoBodies } : {}),
          ...(plan.transfer ? { transfer: { referStatus: referAnswer?.status ?? 0, notifies: notifiesOf(received) } } : {}),
          ...(plan.ringForever ? { canceled: true } : {}),
        } as PbxCallEnd & { invite: PbxSeenInvite };
      });
      return { targetUri: `sip:pbx@127.0.0.1:${port}`, done };
    },
    async placeCall(plan) {
      const dir = await newDir();
      const port = await freeUdpPort();
      const file = path.join(dir, 'uac.xml');
      // One line per header, each ending the line: with no headers the placeholder's line goes away entirely
      // (an empty line there would end the header section and turn the rest into the body).
      const headers = Object.entries(plan.headers ?? {})
        .map(([n, v]) => `      ${n}: ${v}\n`)
        .join('');
      const midCall = plan.midCall
        ? await scenario('midcall-info-reinvite-uac.xml.part', { DIGIT: plan.midCall.dtmfDigit, HOLD_SDP: indent(plan.midCall.holdSdp) })
        : '';
      const afterPart = await after(plan.hangupAfterMs, 'uac', plan.midCall ? 5 : 2);
      await writeFile(file, await scenario('uac-call.xml', { HEADERS: headers, SDP: indent(plan.sdp), AFTER: midCall + '\n' + afterPart }));
      const target = `${real.sip.address.includes(':') ? `[${real.sip.address}]` : real.sip.address}:${real.sip.port}`;
      const run = runSipp([target, '-sf', file, '-s', plan.user, '-i', '127.0.0.1', '-p', String(port)], dir);
      const done = run.then((r) => {
        const finals = r.messages.filter((m) => m.direction === 'received' && m.msg.kind === 'response' && m.msg.cseq.method === 'INVITE' && m.msg.status >= 200);
        const final = finals[0]?.msg;
        if (!final) throw new Error(`sipp UAC got no final response (exit ${r.exitCode}): ${r.stderr.slice(-500)}`);
        if (final.status >= 300) return { status: final.status, answerSdp: '', byeFrom: 'none' as const };
        if (r.exitCode !== 0) throw new Error(`sipp UAC failed after ${final.status} (exit ${r.exitCode}): ${r.stderr.slice(-500)}`);
        let midCall: PbxMidCallResult | undefined;
        if (plan.midCall) {
          const finalFor = (method: string): SipMsg | undefined =>
            r.messages.find((m) => m.direction === 'received' && m.msg.kind === 'response' && m.msg.cseq.method === method && m.msg.status >= 200 && m.msg.cseq.seq > 1)?.msg;
          const info = finalFor('INFO');
          const reinvite = finalFor('INVITE');
          midCall = { infoStatus: info?.status ?? 0, reinviteStatus: reinvite?.status ?? 0, reinviteAnswerSdp: reinvite?.body ?? '' };
        }
        return { status: final.status, answerSdp: final.body, byeFrom: plan.hangupAfterMs !== undefined ? ('pbx' as const) : ('app' as const), midCall };
      });
      return { done };
    },
    async close() {
      await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
    },
  };
}
