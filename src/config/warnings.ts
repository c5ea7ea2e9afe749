/**
 * Valid but probably unintended settings: logged at start and shown by `check-config`, never fatal.
 */
import type { Config } from './schema.js';

/** The secret drachtio-server's sample configuration and drachtio-srf's examples use. */
export const WELL_KNOWN_DRACHTIO_SECRET = 'cymru';

/** One line per concern, each starting with the key it is about. */
export function configWarnings(config: Config): string[] {
  const warnings: string[] = [];
  if (config.routes.length === 0) {
    warnings.push('routes: none configured: every consumer-initiated call will be rejected');
  } else if (!config.routes.some((r) => r.match.page_id === undefined && (r.match.psids === undefined || r.match.psids.length === 0))) {
    warnings.push('routes: no default route (empty match): calls matching no route will be rejected');
  }
  config.routes.forEach((route, i) => {
    const firstTargets = Math.floor(config.calls.accept_deadline_ms / route.target_timeout_ms);
    if (route.answer_mode === 'on_pbx_answer' && route.targets.length > Math.max(1, firstTargets)) {
      warnings.push(
        `routes[${i}].targets: with target_timeout_ms ${route.target_timeout_ms} only the first ${Math.max(1, firstTargets)} of ${route.targets.length} targets can ring before calls.accept_deadline_ms (${config.calls.accept_deadline_ms})`,
      );
    }
  });
  config.routes.forEach((route, i) => {
    const srtp = route.srtp ?? config.media.srtp;
    const clear = route.targets.filter((target) => !/^sips:/i.test(target) && !/;transport=tls\b/i.test(target));
    if ((srtp === 'prefer' || srtp === 'required') && clear.length > 0) {
      warnings.push(
        `routes[${i}].targets: SRTP keys (SDES) travel in the SDP, readable on the wire to ${clear.join(', ')}: use sips: or ;transport=tls`,
      );
    }
  });
  if (config.sip.drachtio.secret === WELL_KNOWN_DRACHTIO_SECRET) {
    warnings.push(
      `sip.drachtio.secret: SECURITY: the well-known default '${WELL_KNOWN_DRACHTIO_SECRET}' (drachtio's samples use it): whoever reaches drachtio-server's admin port can take its SIP traffic; set a secret of your own on both sides`,
    );
  }
  if (config.sip.acl.some((cidr) => cidr === '0.0.0.0/0' || cidr === '::/0')) {
    warnings.push('sip.acl: allows any source: anyone reaching drachtio-server can place calls through the bridge');
  }
  if (config.admin.listen.host === '0.0.0.0' || config.admin.listen.host === '::') {
    warnings.push('admin.listen.host: metrics and health endpoints listen on every interface');
  }
  return warnings;
}
