/**
 * The media of one call: the Messenger leg toward Meta and the call media (PBX RTP, transcoding, DTMF), with what
 * watches them for the call (failures end it, counters, quality, digits to the PBX). Closed by the call's teardown.
 */
import type { Logger } from 'pino';
import { bridgeDtmf } from './callDtmf.js';
import type { CallFlow } from './callFlow.js';
import type { CallSessionDeps } from './callOptions.js';
import { CallQualityWatch } from './callQualityWatch.js';
import { CallEnded, type Ending } from './callState.js';
import { MediaStatsReporter } from './callSummary.js';
import { REFUSALS, reasonOf } from './outcomes.js';
import type { CallDirection, CallMedia, CallRoute, MessengerLeg, SipDialog } from './ports.js';

/** How long a call's release waits for its media's final counters (a media thread's answer), ms. */
const FINAL_STATS_TIMEOUT_MS = 1000;

/** What a call's media needs from its call. */
export interface CallLegsHost {
  readonly id: string;
  readonly log: Logger;
  readonly direction: CallDirection;
  readonly deps: CallSessionDeps;
  readonly flow: CallFlow;
  ended(): boolean;
  end(ending: Ending): void;
  /** The call's PBX dialog now (digits by SIP INFO go there). */
  dialog(): SipDialog | undefined;
}

export class CallLegs {
  readonly #host: CallLegsHost;
  #leg: MessengerLeg | undefined;
  #media: CallMedia | undefined;
  #stats: MediaStatsReporter | undefined;
  #quality: CallQualityWatch | undefined;

  constructor(host: CallLegsHost) {
    this.#host = host;
  }

  get leg(): MessengerLeg | undefined {
    return this.#leg;
  }

  get media(): CallMedia | undefined {
    return this.#media;
  }

  /** The call's media counters (undefined before its media exists). */
  get stats(): MediaStatsReporter | undefined {
    return this.#stats;
  }

  get quality(): CallQualityWatch | undefined {
    return this.#quality;
  }

  /**
   * Create the Messenger leg and the call media for `route`, a step of the call's flow (it ends the call and leaves the
   * flow when the media cannot be made). `onLeg` runs as soon as the leg exists, while the media is still being made.
   */
  async setUp(route: CallRoute, onLeg?: (leg: MessengerLeg) => void): Promise<{ leg: MessengerLeg; media: CallMedia }> {
    const host: CallLegsHost = this.#host;
    const { legs, media: engine, metrics, options } = host.deps;
    const leg = legs.create({ callId: host.id, log: host.log });
    this.#leg = leg;
    leg.on('failed', (err) => {
      const reason = `Messenger leg failed (${err.reason}): ${err.message}`;
      host.end({ outcome: 'media_failed', reason, meta: 'auto', sip: 'auto', refusal: REFUSALS.messengerLegFailed });
    });
    let media: CallMedia;
    const creating = engine.createCallMedia({
      callId: host.id,
      log: host.log,
      messenger: leg,
      codecs: route.codecs,
      ...(route.srtp ? { srtp: route.srtp } : {}),
    });
    onLeg?.(leg);
    try {
      media = await host.flow.step(creating);
    } catch (err) {
      if (err instanceof CallEnded) {
        // Ended while the media was being created: it is nobody's yet, so close it once it exists (a creation that
        // fails has nothing to close).
        creating.then(
          (late) => late.close(),
          (lateErr: unknown) => host.log.debug({ err: lateErr }, 'media creation failed after the call ended'),
        );
        throw err;
      }
      const meta = host.direction === 'user_initiated' ? 'reject' : 'none';
      host.flow.stop({ outcome: 'media_failed', reason: `media setup failed: ${reasonOf(err)}`, meta, sip: 'refuse', refusal: REFUSALS.mediaDown });
    }
    if (host.ended()) {
      media.close();
      throw new CallEnded();
    }
    this.#media = media;
    this.#stats = new MediaStatsReporter(host.id, media, metrics);
    media.on('failed', (err) => {
      const reason = `media failed: ${err.code}: ${err.message}`;
      host.end({ outcome: 'media_failed', reason, meta: 'auto', sip: 'auto', refusal: REFUSALS.mediaFailed });
    });
    bridgeDtmf(media, { log: host.log, metrics, sipInfo: options.dtmfSipInfo ?? 'auto', dialog: () => host.dialog() });
    this.#quality = new CallQualityWatch({ log: host.log, metrics });
    this.#quality.attach(media);
    return { leg, media };
  }

  /**
   * Release the media and the leg (the call ended). The final counters are asked for before the media closes; the
   * quality watch has them when the returned promise settles (within FINAL_STATS_TIMEOUT_MS; it never rejects), and
   * the call's summary line waits for it.
   */
  close(): Promise<void> {
    const finalStats = this.#stats?.final(FINAL_STATS_TIMEOUT_MS, this.#host.log) ?? Promise.resolve(undefined);
    this.#media?.close();
    this.#leg?.close();
    return finalStats.then((stats) => this.#quality?.ended(stats?.quality));
  }
}
