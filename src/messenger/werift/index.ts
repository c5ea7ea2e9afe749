/**
 * The one door to every runtime patch of werift (and of the Node sockets werift creates). The daemon calls
 * `applyWeriftPatches()` at start, and a thread that runs Messenger legs calls it before its first leg: module state is
 * per thread, so each thread patches its own copy of werift; a second call in the same thread returns the first
 * call's report and patches nothing twice.
 *
 * - werift 0.25.2 exactly (its package.json): any other version stops start-up, because the patches replace private
 *   methods whose bodies they copy.
 * - DTLS client fix (dtlsFix.ts): DtlsClient.connect, RTCDtlsTransport.start, DtlsSocket.close, Flight.transmit,
 *   Flight5.exec. Needed: without it handshakes stall against OpenSSL servers (INTEROP.md).
 * - ICE bind fix (udpBind.ts): UdpTransport.init. Needed: without it two calls gathering at once crash the daemon.
 * - Numeric-address lookup skip (dgramLookup.ts): an optimisation; when Node's internals differ it is reported as
 *   degraded and the bridge runs without it.
 */
import { expectVersion, installedVersion, reasonOf, type PatchReport } from '../../core/dependencyPatch.js';
import { applyWeriftDtlsFix, findWeriftDtlsTargets, type WeriftDtlsFixOptions, type WeriftDtlsTargets } from './dtlsFix.js';
import { enableDgramLookupSkip, findDgramLookup } from './dgramLookup.js';
import { applyWeriftUdpBindFix, findWeriftUdpBindTarget, type WeriftUdpBindTarget } from './udpBind.js';

/** The werift version every patch here was written for and checked against. */
export const WERIFT_PATCHED_VERSION = '0.25.2';

export interface WeriftPatchOptions {
  /** Apply the DTLS client fix (default true; `false` only to measure werift as shipped, bench/interop.ts). */
  dtlsFix?: boolean;
  /** Options of the DTLS client fix. */
  dtls?: WeriftDtlsFixOptions;
  /** The version to check instead of the installed one (tests of the mismatch path). */
  installedVersion?: string;
}

/** What `checkWeriftPatches` found: the targets of each patch, or why an optimisation cannot bind. */
export interface WeriftPatchTargets {
  version: string;
  dtls: WeriftDtlsTargets | undefined;
  udpBind: WeriftUdpBindTarget;
  /** Undefined when the lookup skip can bind; else why not. */
  dgramLookupProblem: string | undefined;
}

let report: PatchReport | undefined;

/**
 * Check werift's version and the shape of everything the patches replace, without patching. Throws
 * `DependencyPatchError` when a needed patch cannot bind.
 */
export function checkWeriftPatches(options: WeriftPatchOptions = {}): WeriftPatchTargets {
  const version = options.installedVersion ?? installedVersion('werift');
  expectVersion('werift', version, WERIFT_PATCHED_VERSION);
  const dtls = options.dtlsFix === false ? undefined : findWeriftDtlsTargets();
  const udpBind = findWeriftUdpBindTarget();
  let dgramLookupProblem: string | undefined;
  try {
    findDgramLookup();
  } catch (err) {
    dgramLookupProblem = reasonOf(err);
  }
  return { version, dtls, udpBind, dgramLookupProblem };
}

/**
 * Check (`checkWeriftPatches`), then patch. Throws `DependencyPatchError`, and patches nothing, when a needed patch
 * cannot bind. Idempotent per thread: later calls return the first report.
 */
export function applyWeriftPatches(options: WeriftPatchOptions = {}): PatchReport {
  if (report) return report;
  const targets = checkWeriftPatches(options);
  const next: PatchReport = { dependency: 'werift', version: targets.version, applied: [], degraded: [] };
  if (targets.dgramLookupProblem === undefined) {
    enableDgramLookupSkip();
    next.applied.push(DGRAM_LOOKUP_PATCH);
  } else {
    next.degraded.push({ patch: DGRAM_LOOKUP_PATCH, reason: targets.dgramLookupProblem });
  }
  applyWeriftUdpBindFix(targets.udpBind);
  next.applied.push('UdpTransport.init');
  if (targets.dtls) {
    applyWeriftDtlsFix(targets.dtls, options.dtls);
    next.applied.push('DtlsClient.connect', 'RTCDtlsTransport.start', 'DtlsSocket.close', 'Flight.transmit', 'Flight5.exec');
  }
  report = next;
  return report;
}

const DGRAM_LOOKUP_PATCH = 'dgram numeric-address lookup skip';

export { isWeriftDtlsFixApplied, warmUpWeriftEcdhe } from './dtlsFix.js';
export { skipLookupForNumericAddresses } from './dgramLookup.js';
