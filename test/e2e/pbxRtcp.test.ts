/**
 * RTCP with a real PBX peer: baresip (Debian's baresip-core) answers a consumer-initiated call through the
 * drachtio-server double, with rtcp-mux or without (RTCP then on RTP port + 1 on both sides). The bridge sends it sender reports; baresip's reception reports come back with LSR/DLSR, and
 * the round trip to the PBX, its loss and jitter reach the call summary line and the RTT histogram, in plain RTP and
 * in SRTP (SRTCP both ways).
 */
import { pino } from 'pino';
import t from 'tap';
import { startDrachtioDouble } from '../../src/simulator/drachtio/index.js';
import { DEMO_PAGE_ID, DEMO_PSID, startLoopbackBridgeOn } from '../../src/simulator/loopbackBridge.js';
import { baresipAvailable, freeUdpPort, startBaresipUa } from '../../src/simulator/pbx/baresipUa.js';
import { sleep, until } from '../helpers/bridgeHarness.js';

const available = baresipAvailable();
const skipReason = available ? false : 'baresip is not installed (Debian package baresip-core): RTCP with baresip skipped';

interface PbxSideQuality {
  fromPbx: { packets: number; rttMs?: number };
  atPbx?: { lossPct: number; lost: number; jitterMs: number; rttMs?: number };
}

for (const variant of [
  { name: 'plain RTP, rtcp-mux', mediaenc: undefined, srtp: 'off', threads: 0, rtcpMux: true },
  { name: 'SRTP, rtcp-mux, media on a media thread', mediaenc: 'srtp-mand', srtp: 'required', threads: 1, rtcpMux: true },
  { name: 'plain RTP, RTCP on its own ports (baresip declines rtcp-mux), media on a media thread', mediaenc: undefined, srtp: 'off', threads: 1, rtcpMux: false },
] as const) {
  t.test(`${variant.name}: the round trip to baresip, its loss and jitter from its receiver reports reach the call summary`, { skip: skipReason }, async (t) => {
    const lines: string[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) });
    const drachtio = await startDrachtioDouble({ sipNetwork: 'udp' });
    t.teardown(() => drachtio.close());
    const ua = await startBaresipUa({ port: await freeUdpPort(), toneHz: 440, codec: 'PCMU', rtcpMux: variant.rtcpMux, ...(variant.mediaenc ? { mediaenc: variant.mediaenc } : {}) });
    t.teardown(() => ua.close());
    const bridge = await startLoopbackBridgeOn(
      {
        log,
        codecs: ['PCMU'],
        config: { media: { threads: variant.threads, workers: 1, rtp: { listen_ip: '127.0.0.1', min_port: 0, max_port: 0 }, srtp: variant.srtp } },
      },
      drachtio,
      ua.uri,
    );
    t.teardown(() => bridge.close());

    const callId = bridge.sim.placeCall({ pageId: DEMO_PAGE_ID, psid: DEMO_PSID });
    const session = await bridge.sim.waitForSession(callId, 15_000);
    await session.whenConnected();
    session.startTone(1000);
    await sleep(Number(process.env.PBX_RTCP_CALL_MS ?? 8000));
    bridge.sim.hangUp(callId);
    await until(() => bridge.daemon.controller.registry.size === 0, 3000, 'call released');

    const summary = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'call summary')?.summary as
      | { quality?: PbxSideQuality }
      | undefined;
    const q = summary?.quality;
    t.comment(JSON.stringify(q));
    t.ok(q && q.fromPbx.packets > 200, `baresip's audio arrived (${q?.fromPbx.packets} packets)`);
    const rtt = q?.fromPbx.rttMs;
    // Measured, and small (0 is a possible reading: baresip counts DLSR in whole milliseconds, more than the round trip).
    t.ok(rtt !== undefined && rtt >= 0 && rtt < 50, `RTT to the PBX on loopback: measured, a few ms at most (${rtt} ms)`);
    t.match(q?.atPbx, { lossPct: 0, lost: 0, rttMs: rtt }, "baresip's report: nothing lost");
    const jitter = q?.atPbx?.jitterMs;
    t.ok(jitter !== undefined && jitter >= 0 && jitter < 20, `jitter baresip measured (${jitter} ms)`);
    t.match(await bridge.metrics.text(), /msb_call_rtt_seconds_count\{leg="from_pbx"\} 1/, 'the RTT histogram of the PBX leg has the call');
    if (rtt === undefined) t.comment(ua.output().split('\n').slice(-15).join('\n'));
  });
}
