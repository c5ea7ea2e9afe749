/**
 * A call's audio quality, kept inside the call's media object (which sees every packet): per direction, when the
 * first packet and the first audio arrived and when audio was last heard, and one-way audio (no audio from one side
 * for `oneWayAudioAfterMs` while the other speaks). Per packet it only compares and stores numbers; the summary
 * (`legQuality`, with the E-model MOS) is computed when stats are asked for, and the one-way check runs on a timer
 * of the media object, so only call-level results leave it.
 *
 * "Audio" means speech-level signal: a 20 ms frame whose RMS is above -45 dBFS when its samples are at hand
 * (G.711 from the PBX, Opus from Meta when it is decoded for transcoding); for Opus passed through undecoded, the
 * packet's voice activity or silence flag, and its level when those leave it in doubt (opusActivity.ts).
 */
import type { LegQualityStats } from '../../calls/ports.js';
import type { StreamStats } from '../PbxRtpSocket.js';
import { estimateMos } from './eModel.js';

export type QualitySide = 'messenger' | 'pbx';

/** RMS of a frame at -45 dBFS (full scale 32768). */
const ACTIVE_RMS = 32768 * 10 ** (-45 / 20);
/** The other side counts as speaking when it had audio this recently (ms). */
const SPEAKING_WINDOW_MS = 2000;

/** Audio at speech level in these samples. */
export function pcmHasAudio(pcm: Int16Array): boolean {
  if (pcm.length === 0) return false;
  let sum = 0;
  for (let i = 0; i < pcm.length; i++) sum += pcm[i]! * pcm[i]!;
  return Math.sqrt(sum / pcm.length) > ACTIVE_RMS;
}

class Direction {
  /** Unix ms. */
  firstPacketAt?: number;
  firstAudioAt?: number;
  lastAudioAt?: number;

  heard(now: number, audio: boolean): void {
    this.firstPacketAt ??= now;
    if (!audio) return;
    this.firstAudioAt ??= now;
    this.lastAudioAt = now;
  }
}

/** What the call's quality says of one received leg. */
export type LegQuality = LegQualityStats;

export interface OneWayAudio {
  /** The side nothing is heard from. */
  silentSide: QualitySide;
  /** How long it has been silent (ms). */
  silentForMs: number;
}

export function legQuality(received: StreamStats, o: { codec: string; rttMs?: number; startedAt?: number; firstAudioAt?: number }): LegQuality {
  const total = received.packets + received.lost;
  const lossPct = total > 0 ? Math.round((received.lost / total) * 10_000) / 100 : 0;
  const rttMs = o.rttMs !== undefined ? Math.round(o.rttMs * 10) / 10 : undefined;
  return {
    packets: received.packets,
    lost: received.lost,
    lossPct,
    jitterMs: received.jitterMs,
    ...(rttMs !== undefined ? { rttMs } : {}),
    mos: estimateMos({ lossPct, jitterMs: received.jitterMs, ...(rttMs !== undefined ? { rttMs } : {}), codec: o.codec }),
    ...(o.firstAudioAt !== undefined && o.startedAt !== undefined ? { firstAudioMs: Math.max(0, o.firstAudioAt - o.startedAt) } : {}),
  };
}

export class CallQuality {
  readonly messenger = new Direction();
  readonly pbx = new Direction();
  /** Unix ms when bridging started. */
  startedAt?: number;
  #oneWay?: { silentSide: QualitySide; raisedAt: number; since: number };

  constructor(readonly oneWayAudioAfterMs: number) {}

  /** Audio (or silence) arrived from `side` (per packet: two comparisons). */
  heard(side: QualitySide, audio: boolean, now = Date.now()): void {
    (side === 'messenger' ? this.messenger : this.pbx).heard(now, audio);
  }

  start(now = Date.now()): void {
    this.startedAt ??= now;
  }

  /** The one-way audio in progress, if any. */
  get oneWay(): QualitySide | undefined {
    return this.#oneWay?.silentSide;
  }

  /**
   * Run the one-way audio check (on a timer): returns 'raised' with what is silent when it starts, 'cleared' when the
   * silent side's audio returns, else undefined.
   */
  check(now = Date.now()): { change: 'raised' | 'cleared'; oneWay: OneWayAudio } | undefined {
    const current = this.#oneWay;
    if (current) {
      const silent = current.silentSide === 'messenger' ? this.messenger : this.pbx;
      if (silent.lastAudioAt !== undefined && silent.lastAudioAt >= current.raisedAt) {
        this.#oneWay = undefined;
        return { change: 'cleared', oneWay: { silentSide: current.silentSide, silentForMs: silent.lastAudioAt - current.since } };
      }
      return undefined;
    }
    if (this.startedAt === undefined || this.oneWayAudioAfterMs <= 0) return undefined;
    for (const [side, silent, other] of [
      ['messenger', this.messenger, this.pbx],
      ['pbx', this.pbx, this.messenger],
    ] as const) {
      const silentFor = now - Math.max(silent.lastAudioAt ?? 0, this.startedAt);
      const otherSpeaking = other.lastAudioAt !== undefined && now - other.lastAudioAt <= SPEAKING_WINDOW_MS;
      if (otherSpeaking && silentFor >= this.oneWayAudioAfterMs) {
        this.#oneWay = { silentSide: side, raisedAt: now, since: now - silentFor };
        return { change: 'raised', oneWay: { silentSide: side, silentForMs: silentFor } };
      }
    }
    return undefined;
  }
}
