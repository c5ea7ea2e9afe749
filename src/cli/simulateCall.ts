/**
 * `messenger-sip-bridge simulate-call`: play Meta against a running bridge (a staging install) without Meta.
 *
 * It serves the Graph API where the bridge's `meta.graph_base_url` points, sends signed webhooks to the bridge, and
 * answers the bridge's WebRTC offer with an ICE-lite, DTLS-passive media endpoint like Meta's. A call is placed as if a
 * person called the Page; every step is reported with its timing, then a verdict.
 */
import { parseArgs } from 'node:util';
import pino from 'pino';
import { ConfigError } from '../core/errors.js';
import { analyzeTone, levelDbfs, peakFrequency } from '../media/dsp/tone.js';
import { MetaSimulator } from '../simulator/MetaSimulator.js';

export const SIMULATE_CALL_HELP = `messenger-sip-bridge simulate-call: place a simulated Messenger call into a running bridge

Usage:
  messenger-sip-bridge simulate-call --config <bridge config.yaml> [--bridge <webhook url>] [options]
  messenger-sip-bridge simulate-call --bridge <webhook url> --app-secret <s> --page <id> --token <t> --graph <url> [options]

The bridge's meta.graph_base_url must point at this tool (e.g. http://127.0.0.1:9191), so that its Graph API calls
come here instead of to Meta. With --config the app secret, page, token and Graph URL are read from the bridge's
own config file; --bridge defaults to http://127.0.0.1:<webhook port><webhook path> from that file.

Options:
  --psid <id>          the caller's PSID (default 5275811702471834)
  --page <id>          the Page called (default: the first page of the config)
  --duration <s>       seconds of call after media connects (default 5)
  --tone <hz>          tone sent toward the PBX, 0 for silence (default 1000)
  --dtmf <digits>      digits sent as in-band DTMF after the tone, e.g. 123#
  --expect-tone <hz>   require this tone from the PBX side for a PASS (default: any audio)
  --timeout <s>        longest wait for the bridge to accept (default 55)
  --verbose            log the simulator's own steps

Exit status 0 when the call was accepted, media connected, audio came back from the bridge and the call ended
cleanly; 1 otherwise.`;

interface Step {
  name: string;
  ok: boolean;
  ms: number;
  detail?: string;
}

export async function runSimulateCall(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: 'string' },
      bridge: { type: 'string' },
      'app-secret': { type: 'string' },
      page: { type: 'string' },
      token: { type: 'string' },
      graph: { type: 'string' },
      psid: { type: 'string', default: '5275811702471834' },
      duration: { type: 'string', default: '5' },
      tone: { type: 'string', default: '1000' },
      dtmf: { type: 'string' },
      'expect-tone': { type: 'string' },
      timeout: { type: 'string', default: '55' },
      verbose: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(`${SIMULATE_CALL_HELP}\n`);
    return 0;
  }

  let appSecret = values['app-secret'] ?? process.env.META_APP_SECRET;
  let pageId = values.page;
  let token = values.token;
  let graphUrl = values.graph;
  let bridgeUrl = values.bridge;
  if (values.config) {
    const { loadConfig } = await import('../config/index.js');
    const config = loadConfig(values.config);
    appSecret ??= config.meta.app_secret;
    const page = pageId ? config.pages.find((p) => p.id === pageId) : config.pages[0];
    if (!page) throw new ConfigError([`--page ${pageId}: not a page of ${values.config}`]);
    pageId = page.id;
    token ??= page.access_token;
    graphUrl ??= config.meta.graph_base_url;
    const host = ['0.0.0.0', '::'].includes(config.webhook.listen.host) ? '127.0.0.1' : config.webhook.listen.host;
    bridgeUrl ??= `http://${host.includes(':') ? `[${host}]` : host}:${config.webhook.listen.port}${config.webhook.path}`;
  }
  const missing = [
    ['--bridge', bridgeUrl],
    ['--app-secret', appSecret],
    ['--page', pageId],
    ['--token', token],
    ['--graph', graphUrl],
  ].filter(([, v]) => !v);
  if (missing.length > 0) {
    process.stderr.write(`simulate-call: missing ${missing.map(([k]) => k).join(', ')} (or --config)\n\n${SIMULATE_CALL_HELP}\n`);
    return 2;
  }
  const graph = new URL(graphUrl!);
  if (!['127.0.0.1', 'localhost', '::1', '[::1]'].includes(graph.hostname) && graph.hostname.endsWith('facebook.com')) {
    process.stderr.write(
      `simulate-call: the bridge's meta.graph_base_url is ${graphUrl}: point it at this tool for the test, ` +
        `e.g. graph_base_url: http://127.0.0.1:9191, and pass --graph http://127.0.0.1:9191\n`,
    );
    return 2;
  }

  const durationMs = Number(values.duration) * 1000;
  const toneHz = Number(values.tone);
  const expectTone = values['expect-tone'] ? Number(values['expect-tone']) : undefined;
  const acceptTimeoutMs = Number(values.timeout) * 1000;
  const log = pino({ level: values.verbose ? 'debug' : 'silent' });
  const print = (line: string): void => void process.stdout.write(`${line}\n`);
  const steps: Step[] = [];
  const t0 = Date.now();
  const step = (name: string, ok: boolean, detail?: string): void => {
    const s: Step = { name, ok, ms: Date.now() - t0, ...(detail ? { detail } : {}) };
    steps.push(s);
    print(`${ok ? ' ok ' : 'FAIL'} ${String(s.ms).padStart(6)} ms  ${name}${detail ? `: ${detail}` : ''}`);
  };

  const sim = await MetaSimulator.start({
    pages: { [pageId!]: token! },
    appSecret: appSecret!,
    webhookUrl: bridgeUrl!,
    log,
    host: graph.hostname.replace(/^\[|\]$/g, ''),
    port: Number(graph.port || (graph.protocol === 'https:' ? 443 : 80)),
  });
  print(`simulated Meta: Graph API on ${sim.graphUrl}, webhooks to ${bridgeUrl}`);
  try {
    const callId = sim.placeCall({ pageId: pageId!, psid: values.psid! });
    step('connect webhook sent', true, `call ${callId}, from PSID ${values.psid} to page ${pageId}`);
    const accepted = sim.graph.events.waitFor('accept', AbortSignal.timeout(acceptTimeoutMs));
    const rejected = sim.graph.events.waitFor('reject', AbortSignal.timeout(acceptTimeoutMs));
    const outcome = await Promise.race([
      accepted.then(() => 'accepted' as const),
      rejected.then(() => 'rejected' as const),
    ]).catch(() => 'timeout' as const);
    if (outcome !== 'accepted') {
      step('bridge accepted the call', false, outcome === 'rejected' ? 'the bridge rejected it (see its log: no route, PBX busy, ...)' : `no accept within ${acceptTimeoutMs / 1000} s`);
      return verdict(steps, print);
    }
    step('bridge accepted the call', true);
    const session = await sim.waitForSession(callId, 5_000);
    try {
      await Promise.race([session.whenConnected(), new Promise((_, reject) => setTimeout(() => reject(new Error('timeout')), 10_000))]);
      step('media connected (ICE + DTLS to the simulated Meta media server)', true);
    } catch {
      step('media connected (ICE + DTLS to the simulated Meta media server)', false, 'no DTLS within 10 s');
      return verdict(steps, print);
    }
    if (toneHz > 0) session.startTone(toneHz);
    const digits = values.dtmf ?? '';
    const toneMs = digits ? Math.max(1000, durationMs - digits.length * 250) : durationMs;
    await sleep(toneMs);
    session.stopTone();
    for (const digit of digits) {
      session.sendDtmf(digit, 160);
      await sleep(250);
    }
    if (digits) step('DTMF sent (in-band)', true, digits);
    const pcm = session.receivedPcm();
    const tail = pcm.slice(-Math.min(pcm.length, 48_000));
    const level = levelDbfs(tail);
    const peak = tail.length > 0 ? peakFrequency(tail, 48_000) : 0;
    const heard = session.packetsReceived > 0 && level > -60;
    step('audio from the bridge', heard, `${session.packetsReceived} packets, level ${level.toFixed(1)} dBFS, strongest ${peak.toFixed(0)} Hz`);
    if (expectTone !== undefined) {
      const a = analyzeTone(tail, 48_000, expectTone);
      step(`${expectTone} Hz tone from the PBX side`, a.detected, `power ratio ${a.powerRatio.toFixed(2)}`);
    }
    const ended = sim.waitForEnd(callId, 5_000);
    sim.hangUp(callId);
    try {
      await ended;
      step('hang-up (terminate webhook) sent', true);
    } catch {
      step('hang-up (terminate webhook) sent', false);
    }
    await sleep(300);
    return verdict(steps, print);
  } finally {
    await sim.close();
  }
}

function verdict(steps: Step[], print: (line: string) => void): number {
  const failed = steps.filter((s) => !s.ok);
  print(failed.length === 0 ? 'VERDICT: PASS' : `VERDICT: FAIL (${failed.map((s) => s.name).join('; ')})`);
  return failed.length === 0 ? 0 : 1;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
