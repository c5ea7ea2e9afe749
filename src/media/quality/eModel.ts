/**
 * An estimated MOS from the ITU-T G.107 E-model, simplified as telephony monitors commonly do (no echo, no noise,
 * default values for everything but delay, loss and codec):
 *
 *   R = 93.2 - Id - Ie,eff
 *   Id = 0.024 d + 0.11 (d - 177.3) H(d - 177.3)        d = one-way mouth-to-ear delay (ms)
 *   Ie,eff = Ie + (95 - Ie) Ppl / (Ppl + Bpl)            Ppl = packet loss (%), random loss
 *   MOS = 1 + 0.035 R + 7e-6 R (R - 60) (100 - R)        for 0 < R < 100 (1 below, 4.5 above)
 *
 * d = RTT / 2 (0 when unknown) + a jitter buffer of twice the measured jitter (at least 20 ms) + the codec's frame
 * and look-ahead. Ie and Bpl come from ITU-T G.113 Appendix I for G.711 with packet loss concealment (Ie 0,
 * Bpl 25.1); G.113 gives none for Opus: we use Ie 0 and Bpl 20 (Opus' own concealment, wideband not credited).
 * The result ranks calls against each other and flags bad ones; it is not a listening test.
 */

export interface EModelInput {
  /** Packets lost / (received + lost), percent. */
  lossPct: number;
  /** Interarrival jitter (ms). */
  jitterMs: number;
  /** Round-trip time (ms), when known. */
  rttMs?: number;
  codec: 'opus' | 'PCMU' | 'PCMA' | string;
}

const CODEC: Record<string, { ie: number; bpl: number; delayMs: number }> = {
  PCMU: { ie: 0, bpl: 25.1, delayMs: 20 },
  PCMA: { ie: 0, bpl: 25.1, delayMs: 20 },
  opus: { ie: 0, bpl: 20, delayMs: 26.5 },
};

/** The R factor (0-100). */
export function rFactor(input: EModelInput): number {
  const codec = CODEC[input.codec] ?? CODEC.opus!;
  const jitterBuffer = Math.max(20, 2 * input.jitterMs);
  const d = (input.rttMs ?? 0) / 2 + jitterBuffer + codec.delayMs;
  const id = 0.024 * d + (d > 177.3 ? 0.11 * (d - 177.3) : 0);
  const ppl = Math.min(100, Math.max(0, input.lossPct));
  const ieEff = codec.ie + ((95 - codec.ie) * ppl) / (ppl + codec.bpl);
  return Math.min(100, Math.max(0, 93.2 - id - ieEff));
}

/** MOS (1-4.5) from the R factor. */
export function mosFromR(r: number): number {
  if (r <= 0) return 1;
  if (r >= 100) return 4.5;
  return 1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r);
}

/** Estimated MOS, two decimals. */
export function estimateMos(input: EModelInput): number {
  return Math.round(mosFromR(rFactor(input)) * 100) / 100;
}
