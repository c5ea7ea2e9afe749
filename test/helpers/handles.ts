/**
 * Open handles of this process, for tests that check sockets are closed.
 */

/** UDP sockets open in this process (libuv handles). */
export function udpHandles(): number {
  return process.getActiveResourcesInfo().filter((r) => r === 'UDPWrap').length;
}

/** Timers pending in this process. */
export function timerHandles(): number {
  return process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
}

/** UDP handle count once sockets closed earlier have finished closing (the count stable for 200 ms). */
export async function settledUdpHandles(): Promise<number> {
  let last = udpHandles();
  let stableSince = performance.now();
  while (performance.now() - stableSince < 200) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    const now = udpHandles();
    if (now !== last) {
      last = now;
      stableSince = performance.now();
    }
  }
  return last;
}
