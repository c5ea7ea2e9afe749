/**
 * Where a REFER from the PBX may send the caller: the rules that keep a transfer from becoming toll fraud or
 * caller-ID spoofing from the bridge's address. Pure functions; the call session applies them to each REFER, and a
 * refusal's status and reason come from outcomes.ts.
 *
 * - The Refer-To host must be one of the allowed hosts: `sip.transfer.allowed_hosts`, or by default the hosts of
 *   the call's route targets and the address of the PBX the dialog is with.
 * - No URI parameter that changes where the request goes (`maddr`, `transport`, `lr`, ...): only `user` is taken.
 * - The only headers a Refer-To may embed are `Replaces` (attended transfer) and `Require: replaces`; anything else
 *   (`P-Asserted-Identity`, `Proxy-Authorization`, ...) would go out on the new INVITE from the bridge.
 */

import { TRANSFER_TARGET_REFUSALS, type SipStatus } from './outcomes.js';

/** URI parameters a Refer-To may carry (none of them changes where the INVITE goes). */
const ALLOWED_URI_PARAMS = new Set(['user']);

export type TransferVerdict = { ok: true } | ({ ok: false } & SipStatus);

/** The host of a sip:/sips: URI, lower case, without brackets or port. */
export function hostOfSipUri(uri: string): string | undefined {
  const m = /^sips?:(?:[^@]*@)?(\[[^\]]+\]|[^:;?>]+)/i.exec(uri);
  return m?.[1]?.replace(/^\[|\]$/g, '').toLowerCase();
}

/** A host as configured or as a socket reports it: lower case, no brackets, IPv4-mapped IPv6 as IPv4. */
function normalHost(host: string): string {
  const h = host.toLowerCase().replace(/^\[|\]$/g, '');
  return h.startsWith('::ffff:') && h.includes('.') ? h.slice(7) : h;
}

/** The default allowed hosts: those of the route's targets, and the PBX the dialog is with. */
export function defaultTransferHosts(routeTargets: readonly string[], peerAddress: string | undefined): string[] {
  const hosts = routeTargets.map(hostOfSipUri).filter((h): h is string => h !== undefined);
  if (peerAddress) hosts.push(peerAddress);
  return [...new Set(hosts.map(normalHost))];
}

/** Whether a REFER to `target` embedding `headers` may be carried out. */
export function checkTransferTarget(target: string, headers: Readonly<Record<string, string>>, allowedHosts: readonly string[]): TransferVerdict {
  const host = hostOfSipUri(target);
  if (!host || !allowedHosts.some((h) => normalHost(h) === normalHost(host))) {
    return { ok: false, ...TRANSFER_TARGET_REFUSALS.host };
  }
  const params = target.split(';').slice(1);
  for (const param of params) {
    const name = param.split('=')[0]!.trim().toLowerCase();
    if (!ALLOWED_URI_PARAMS.has(name)) {
      return { ok: false, ...TRANSFER_TARGET_REFUSALS.uriParameter(name) };
    }
  }
  for (const [name, value] of Object.entries(headers)) {
    const lower = name.toLowerCase();
    if (lower === 'replaces') continue;
    if (lower === 'require' && value.trim().toLowerCase() === 'replaces') continue;
    return { ok: false, ...TRANSFER_TARGET_REFUSALS.header(name) };
  }
  return { ok: true };
}
