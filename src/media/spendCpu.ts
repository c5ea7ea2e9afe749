/**
 * Busy-waits for `us` microseconds of wall time: the cost `media.simulated_packet_cost_us` adds to each audio packet,
 * so that a test can give the bridge a small, real capacity (its event loop fills up with a few calls).
 */
export function spendCpu(us: number): void {
  const end = process.hrtime.bigint() + BigInt(Math.round(us * 1000));
  while (process.hrtime.bigint() < end) {
    // spin
  }
}
