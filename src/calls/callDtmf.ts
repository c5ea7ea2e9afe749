/**
 * Digits detected on a call's media: logged, counted, and sent to the PBX as SIP INFO when RTP cannot carry them
 * (or always/never, per `media.dtmf.sip_info`).
 */
import type { Logger } from 'pino';
import type { CallMedia, CallMetricsSink, DtmfEvent, SipDialog } from './ports.js';

export interface DtmfBridgeOptions {
  log: Logger;
  metrics: CallMetricsSink | undefined;
  /** 'auto': SIP INFO when the PBX leg negotiated no telephone-event; true for every digit; false never. */
  sipInfo: boolean | 'auto';
  /** The call's PBX dialog now (undefined before it exists). */
  dialog: () => SipDialog | undefined;
}

/** Listen to `media`'s digits for the life of the call. */
export function bridgeDtmf(media: CallMedia, options: DtmfBridgeOptions): void {
  const { log, metrics } = options;
  const wantsSipInfo = (via: 'rfc4733' | 'inband' | 'none' | undefined): boolean =>
    options.sipInfo === 'auto' ? via === 'inband' || via === 'none' : options.sipInfo;
  media.on('dtmf', (event) => {
    const viaInfo = event.direction === 'to_pbx' && wantsSipInfo(event.via);
    log.info(
      { digit: event.digit, direction: event.direction, durationMs: event.durationMs, via: viaInfo ? `${event.via}+info` : event.via },
      'DTMF',
    );
    metrics?.dtmf(event.direction);
    if (viaInfo) sendDtmfInfo(options, { digit: event.digit, durationMs: event.durationMs });
    else if (event.via === 'none') {
      log.warn({ digit: event.digit }, 'digit lost: the PBX negotiated no telephone-event and SIP INFO is off (media.dtmf.sip_info)');
    }
  });
}

function sendDtmfInfo({ log, dialog: current }: DtmfBridgeOptions, event: DtmfEvent): void {
  const dialog = current();
  if (!dialog || dialog.ended) {
    log.warn({ digit: event.digit }, 'digit for SIP INFO arrived before the PBX dialog exists: not sent');
    return;
  }
  dialog.sendDtmf(event).then(
    () => log.debug({ digit: event.digit }, 'DTMF INFO answered'),
    (err: unknown) => log.warn({ err, digit: event.digit }, 'DTMF INFO to the PBX failed'),
  );
}
