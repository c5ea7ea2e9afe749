/**
 * A call's quality in the two forms it leaves the bridge: the `quality` of the call summary log line, and the body of
 * Meta's call_metrics endpoint (docs/META-CALLING.md says which fields Meta documents and which values are ours).
 */
import type { CallMetricsReport, CallOutcome, CallQualityStats, RemoteReport } from './ports.js';

/** Opus frames from Meta are 20 ms at 48 kHz. */
const SAMPLES_PER_PACKET = 960;
const PACKET_MS = 20;

/** A far end's RTCP report on our audio, for the summary line. */
function remoteSummary(r: RemoteReport): Record<string, number> {
  return {
    lossPct: Math.round(r.fractionLost * 10_000) / 100,
    lost: r.cumulativeLost,
    jitterMs: Math.round(r.jitterMs * 100) / 100,
    ...(r.rttMs !== undefined ? { rttMs: Math.round(r.rttMs * 10) / 10 } : {}),
  };
}

/**
 * The summary line's `quality`: per leg packets, loss, jitter, RTT, MOS, first audio; what Meta's RTCP reports say of
 * the audio we send it (loss, jitter, and the round trip to Meta), and the PBX's likewise; one-way audio.
 */
export function summaryQuality(q: CallQualityStats): Record<string, unknown> {
  return {
    fromMessenger: q.fromMessenger,
    fromPbx: q.fromPbx,
    ...(q.atMessenger !== undefined ? { atMessenger: remoteSummary(q.atMessenger) } : {}),
    ...(q.atPbx !== undefined ? { atPbx: remoteSummary(q.atPbx) } : {}),
    ...(q.oneWayAudio !== undefined ? { oneWayAudioAtEnd: q.oneWayAudio } : {}),
  };
}

/**
 * Meta's call_metrics body for an ended call. `end_call_reason` is `Hangup_Call` (the only value Meta's page shows)
 * and our outcome and reason go in the free-text `end_call_subreason`. `audio_stats` describes the person's audio as
 * the bridge received it, with both spellings Meta's page uses (its list: `jitter`, `round_trip_time_ms`, ...; its
 * example: `jitter_sec`, `round_trip_time_sec`, ...). The bridge has no jitter buffer (it forwards at once): that
 * delay is 0; concealed samples are estimated as lost packets × 960 (20 ms at 48 kHz), silent ones as 0.
 */
export function callMetricsReport(o: { callId: string; outcome: CallOutcome; reason: string; endedAt: number; quality: CallQualityStats }): CallMetricsReport {
  const from = o.quality.fromMessenger;
  const endedSec = Math.floor(o.endedAt / 1000);
  const rttMs = from.rttMs ?? 0;
  const durationMs = from.packets * PACKET_MS;
  return {
    platform: 'messenger',
    call_id: o.callId,
    end_call_reason: 'Hangup_Call',
    end_call_subreason: `${o.outcome}: ${o.reason}`,
    call_ended_time: endedSec,
    ...(o.quality.firstPacketFromMessengerAt !== undefined
      ? { first_audio_packet_received_time: Math.floor(o.quality.firstPacketFromMessengerAt / 1000) }
      : {}),
    audio_stats: {
      call_ended_time: endedSec,
      jitter: from.jitterMs / 1000,
      jitter_sec: from.jitterMs / 1000,
      packets_lost: from.lost,
      packets_received: from.packets,
      round_trip_time_ms: rttMs,
      round_trip_time_sec: rttMs / 1000,
      jitter_buffer_delay_ms: 0,
      jitter_buffer_delay_sec: 0,
      concealed_samples: from.lost * SAMPLES_PER_PACKET,
      silent_concealed_samples: 0,
      total_samples_duration_ms: durationMs,
      total_samples_duration_sec: durationMs / 1000,
    },
  };
}
