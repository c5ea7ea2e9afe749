/**
 * `messenger-sip-bridge demo`: one whole call on loopback with nothing outside. A simulated Meta (signed webhooks,
 * Graph API, an ICE-lite DTLS-passive media server) places a Messenger call; the bridge routes it through drachtio
 * (the built-in drachtio-server double) to a SIP peer that answers and plays a tone; each side listens for the
 * other's tone; then the person hangs up. It prints what happened. With a real drachtio-server in the environment
 * (DRACHTIO_HOST, DRACHTIO_PORT, DRACHTIO_SECRET) and baresip installed, the call goes through that server to
 * baresip on loopback instead.
 */
import { parseArgs } from 'node:util';
import pino, { type Logger } from 'pino';
import sdpTransform from 'sdp-transform';
import { analyzeTone } from '../media/dsp/tone.js';
import type { PbxDialog, PbxInvite } from '../simulator/drachtio/index.js';
import {
  DEMO_PAGE_ID,
  DEMO_PSID,
  startLoopbackBridge,
  startLoopbackBridgeOn,
  type DrachtioAddress,
  type LoopbackBridgeOn,
} from '../simulator/loopbackBridge.js';
import { baresipAvailable, freeUdpPort, startBaresipUa, type BaresipUa } from '../simulator/pbx/baresipUa.js';
import { createRtpPeer, type RtpPeerCodec } from '../simulator/pbx/rtpPeer.js';

const META_TONE_HZ = 1000;
const PBX_TONE_HZ = 440;

export async function runDemo(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      duration: { type: 'string', default: '3' },
      codec: { type: 'string', default: 'PCMU' },
      verbose: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(
      'messenger-sip-bridge demo [--duration <s>] [--codec PCMU|PCMA|opus] [--verbose]\n' +
        '  A whole Messenger call through the bridge on loopback: simulated Meta, the bridge, a SIP peer.\n',
    );
    return 0;
  }
  const codec = values.codec as RtpPeerCodec;
  if (!['PCMU', 'PCMA', 'opus'].includes(codec)) {
    process.stderr.write(`demo: --codec must be PCMU, PCMA or opus\n`);
    return 2;
  }
  const durationMs = Math.max(1, Number(values.duration)) * 1000;
  const print = (line = ''): void => void process.stdout.write(`${line}\n`);
  const log = values.verbose
    ? pino({ level: 'info' }, pino.destination(2))
    : pino({ level: 'silent' });

  print('messenger-sip-bridge demo: one Messenger call, all on loopback');
  const real = realDrachtio(process.env);
  if (real && baresipAvailable()) {
    return runWithBaresip({ real, codec, durationMs, log, print });
  }
  if (real) print('  note: DRACHTIO_HOST is set but baresip is not installed (Debian package baresip-core): using the double.');
  print('  SIP side: the built-in drachtio-server double (drachtio-server is not installed with the bridge;');
  print('            it speaks drachtio\'s real admin protocol to drachtio-srf, and plays the PBX in-process).');
  print('            With DRACHTIO_HOST, DRACHTIO_PORT and DRACHTIO_SECRET set, the demo dials baresip through it.');

  const { ms, check, ok, seconds } = timeline(print);
  const bridge = await startLoopbackBridge({ log, codecs: [codec] });
  const peer = await createRtpPeer({ codec });
  try {
    print(`${ms()}  bridge up: webhooks on ${bridge.daemon.webhookUrl}, metrics on ${bridge.daemon.adminUrl}/metrics`);
    const answered = new Promise<{ invite: PbxInvite; dialog: PbxDialog }>((resolve, reject) => {
      bridge.drachtio.pbx.onInvite(async (invite) => {
        try {
          const audio = sdpTransform.parse(invite.sdp).media.find((m) => m.type === 'audio');
          const address = audio?.connection?.ip ?? sdpTransform.parse(invite.sdp).connection?.ip;
          if (!audio || !address) throw new Error('INVITE without an audio SDP');
          peer.setRemote(address, audio.port);
          print(`${ms()}  SIP peer got INVITE ${invite.requestUri} (X-Messenger-PSID: ${invite.header('X-Messenger-PSID')}), rings, answers`);
          invite.ringing();
          const dialog = await invite.answer(peer.sdp());
          peer.startTone(PBX_TONE_HZ);
          resolve({ invite, dialog });
        } catch (err) {
          reject(err);
        }
      });
    });

    const callId = bridge.sim.placeCall({ pageId: DEMO_PAGE_ID, psid: DEMO_PSID });
    print(`${ms()}  simulated Meta: a person (PSID ${DEMO_PSID}) calls page ${DEMO_PAGE_ID}; connect webhook sent`);
    const { dialog } = await withTimeout(answered, 15_000, 'the SIP peer never got an INVITE');
    const session = await bridge.sim.waitForSession(callId, 10_000);
    check(true, `bridge accepted the call to Meta (call ${callId.slice(0, 16)}...)`);
    await withTimeout(session.whenConnected(), 10_000, 'WebRTC media to Meta did not connect');
    check(true, 'Messenger leg up: full ICE (controlling) + DTLS client against an ICE-lite, DTLS-passive server');
    session.startTone(META_TONE_HZ);
    print(`${ms()}  person sends ${META_TONE_HZ} Hz, SIP peer sends ${PBX_TONE_HZ} Hz, for ${durationMs / 1000} s`);
    await sleep(durationMs);

    const stats = bridge.daemon.controller.registry.all()[0]?.mediaStats();
    // Judge the steady part of the call: the last half of it, at most 1 s (the first moments carry the tones' onset
    // and the silence Meta got before the SIP peer started to talk).
    const windowS = Math.min(1, durationMs / 2000);
    const pbxHeard = analyzeTone(peer.receivedPcm().slice(-Math.round(peer.sampleRate * windowS)), peer.sampleRate, META_TONE_HZ);
    const metaHeard = analyzeTone(session.receivedPcm().slice(-Math.round(48_000 * windowS)), 48_000, PBX_TONE_HZ);
    check(
      pbxHeard.detected,
      `Messenger -> PBX: ${META_TONE_HZ} Hz heard at the SIP peer (strongest ${pbxHeard.peakHz.toFixed(0)} Hz, ${pbxHeard.levelDbfs.toFixed(1)} dBFS, ${(pbxHeard.powerRatio * 100).toFixed(1)} % of the power)`,
    );
    check(
      metaHeard.detected,
      `PBX -> Messenger: ${PBX_TONE_HZ} Hz heard at Meta (strongest ${metaHeard.peakHz.toFixed(0)} Hz, ${metaHeard.levelDbfs.toFixed(1)} dBFS, ${(metaHeard.powerRatio * 100).toFixed(1)} % of the power)`,
    );
    if (stats) {
      print(
        `${ms()}  codec toward the PBX: ${stats.codec ?? codec}${stats.transcoding ? ' (transcoded to/from Opus 48 kHz)' : ' (Opus passed through)'}; ` +
          `packets to PBX ${stats.toPbx.packets}, to Messenger ${stats.toMessenger.packets}`,
      );
    }

    const hangUpAt = Date.now();
    bridge.sim.hangUp(callId);
    print(`${ms()}  the person hangs up (terminate webhook)`);
    await withTimeout(dialog.waitForBye(3000), 3_000, 'no BYE reached the SIP peer');
    check(true, `BYE reached the SIP peer ${Date.now() - hangUpAt} ms after the hang-up`);
    await waitUntil(() => bridge.daemon.controller.registry.size === 0, 3000);
    check(bridge.daemon.controller.registry.size === 0, 'call released: no call, transport or port left');
  } catch (err) {
    check(false, (err as Error).message);
  } finally {
    peer.close();
    await bridge.close();
  }
  print(ok() ? `demo: call bridged, tone heard both ways (${seconds()} s)` : 'demo: FAILED (run with --verbose for the bridge log)');
  return ok() ? 0 : 1;
}

/** The demo's time-stamped lines: `ms()` since the start, `check()` prints ok/FAIL and remembers a failure. */
function timeline(print: (line?: string) => void): { ms: () => string; check: (good: boolean, line: string) => void; ok: () => boolean; seconds: () => string } {
  const t0 = Date.now();
  let ok = true;
  const ms = (): string => `${String(Date.now() - t0).padStart(5)} ms`;
  return {
    ms,
    check: (good, line) => {
      ok &&= good;
      print(`${ms()}  ${good ? 'ok  ' : 'FAIL'} ${line}`);
    },
    ok: () => ok,
    seconds: () => ((Date.now() - t0) / 1000).toFixed(1),
  };
}

/** A real drachtio-server from the environment (DRACHTIO_HOST, DRACHTIO_PORT default 9022, DRACHTIO_SECRET). */
function realDrachtio(env: NodeJS.ProcessEnv): DrachtioAddress | undefined {
  if (!env.DRACHTIO_HOST || !env.DRACHTIO_SECRET) return undefined;
  return { host: env.DRACHTIO_HOST, port: Number(env.DRACHTIO_PORT || 9022), secret: env.DRACHTIO_SECRET };
}

/**
 * The demo through a real drachtio-server: the bridge's INVITE goes out through it to baresip on loopback, which
 * answers at once, sends a tone and records what it hears.
 */
async function runWithBaresip(o: {
  real: DrachtioAddress;
  codec: RtpPeerCodec;
  durationMs: number;
  log: Logger;
  print: (line?: string) => void;
}): Promise<number> {
  const { print } = o;
  print(`  SIP side: the drachtio-server at ${o.real.host}:${o.real.port} (DRACHTIO_HOST), and baresip as the SIP peer`);
  const { ms, check, ok, seconds } = timeline(print);
  let ua: BaresipUa | undefined;
  let bridge: LoopbackBridgeOn | undefined;
  try {
    ua = await startBaresipUa({ port: await freeUdpPort(), toneHz: PBX_TONE_HZ, codec: o.codec });
    print(`${ms()}  baresip listening on ${ua.uri}, answers at once and sends ${PBX_TONE_HZ} Hz`);
    bridge = await startLoopbackBridgeOn({ log: o.log, codecs: [o.codec] }, o.real, ua.uri);
    print(`${ms()}  bridge up and connected to drachtio-server: webhooks on ${bridge.daemon.webhookUrl}`);
    const callId = bridge.sim.placeCall({ pageId: DEMO_PAGE_ID, psid: DEMO_PSID });
    print(`${ms()}  simulated Meta: a person (PSID ${DEMO_PSID}) calls page ${DEMO_PAGE_ID}; connect webhook sent`);
    const session = await bridge.sim.waitForSession(callId, 15_000);
    check(true, `baresip answered; the bridge accepted the call to Meta (call ${callId.slice(0, 16)}...)`);
    await withTimeout(session.whenConnected(), 10_000, 'WebRTC media to Meta did not connect');
    check(true, 'Messenger leg up: full ICE (controlling) + DTLS client against an ICE-lite, DTLS-passive server');
    session.startTone(META_TONE_HZ);
    print(`${ms()}  person sends ${META_TONE_HZ} Hz, baresip sends ${PBX_TONE_HZ} Hz, for ${o.durationMs / 1000} s`);
    await sleep(o.durationMs);
    const windowS = Math.min(1, o.durationMs / 2000);
    const metaHeard = analyzeTone(session.receivedPcm().slice(-Math.round(48_000 * windowS)), 48_000, PBX_TONE_HZ);
    const hangUpAt = Date.now();
    bridge.sim.hangUp(callId);
    print(`${ms()}  the person hangs up (terminate webhook)`);
    const daemon = bridge.daemon;
    await waitUntil(() => daemon.controller.registry.size === 0, 3000);
    check(daemon.controller.registry.size === 0, `call released ${Date.now() - hangUpAt} ms after the hang-up (BYE sent to baresip)`);
    const heard = ua.heard();
    const pbxHeard = heard && heard.pcm.length > 0
      ? analyzeTone(heard.pcm.slice(-Math.round(heard.sampleRate * windowS) - Math.round(heard.sampleRate * 0.2), -Math.round(heard.sampleRate * 0.2)), heard.sampleRate, META_TONE_HZ)
      : undefined;
    check(
      pbxHeard?.detected ?? false,
      pbxHeard
        ? `Messenger -> PBX: ${META_TONE_HZ} Hz heard by baresip (strongest ${pbxHeard.peakHz.toFixed(0)} Hz, ${pbxHeard.levelDbfs.toFixed(1)} dBFS)`
        : 'Messenger -> PBX: baresip recorded nothing',
    );
    check(
      metaHeard.detected,
      `PBX -> Messenger: ${PBX_TONE_HZ} Hz from baresip heard at Meta (strongest ${metaHeard.peakHz.toFixed(0)} Hz, ${metaHeard.levelDbfs.toFixed(1)} dBFS)`,
    );
  } catch (err) {
    check(false, (err as Error).message);
  } finally {
    await bridge?.close();
    ua?.close();
  }
  if (!ok() && ua) print(ua.output().trim().split('\n').slice(-8).map((l) => `  baresip: ${l}`).join('\n'));
  print(ok() ? `demo: call bridged through drachtio-server to baresip, tone heard both ways (${seconds()} s)` : 'demo: FAILED (run with --verbose for the bridge log)');
  return ok() ? 0 : 1;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(message)), ms);
    promise.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}

async function waitUntil(fn: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!fn() && Date.now() < end) await sleep(20);
}
