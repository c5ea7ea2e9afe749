/**
 * An in-process Messenger leg for media tests: plain RTP in memory, Opus at 48 kHz, optional telephone-event at
 * the clock Meta "negotiated". It records what the bridge sends toward Meta.
 */
import type { MessengerLeg, MessengerLegEvents, MessengerNegotiated } from '../../../src/calls/ports.js';
import { TypedEmitter } from '../../../src/core/TypedEmitter.js';
import { OPUS_SILENCE_FRAME } from '../../../src/media/MessengerStream.js';
import { RtpMediaCore } from '../../helpers/rtpPeer.js';

export class FakeMessengerLeg extends TypedEmitter<MessengerLegEvents> implements MessengerLeg {
  readonly core: RtpMediaCore;
  readonly #listeners = new Set<(packet: Buffer) => void>();
  readonly #negotiated: MessengerNegotiated;
  /** Raw packets the bridge sent toward Meta. */
  readonly sent: Buffer[] = [];
  /** performance.now() of each entry of `sent`. */
  readonly sentAt: number[] = [];
  #closed = false;
  /** With `lean`: packets sent toward Meta, and those that were not silence frames. */
  sentCount = 0;
  sentAudioCount = 0;

  readonly #keepSent: boolean;
  /** Packets from `core` toward the bridge for which this returns true are lost on the way. */
  dropToBridge: ((packet: Buffer) => boolean) | undefined;

  constructor(
    options: { opusPt?: number; telephoneEvent?: { pt: number; clockRate: number }; lean?: boolean } = {},
  ) {
    super();
    this.#keepSent = !options.lean;
    this.#negotiated = { opusPt: options.opusPt ?? 111, telephoneEvent: options.telephoneEvent };
    this.core = new RtpMediaCore({
      codec: 'opus',
      pt: this.#negotiated.opusPt,
      tePt: options.telephoneEvent?.pt,
      teClockRate: options.telephoneEvent?.clockRate,
      lean: options.lean,
      // The bridge's send-first silence frames are not part of the audio under test.
      ignorePayload: (payload) => Buffer.from(payload).equals(OPUS_SILENCE_FRAME),
      transmit: (packet) => {
        if (this.dropToBridge?.(packet)) return;
        this.inject(packet);
      },
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  sendRtp(packet: Buffer): void {
    if (this.#closed) return;
    if (this.#keepSent) {
      this.sent.push(Buffer.from(packet));
      this.sentAt.push(performance.now());
    } else {
      this.sentCount++;
      if (!packet.subarray(12).equals(OPUS_SILENCE_FRAME)) this.sentAudioCount++;
    }
    this.core.receive(packet);
  }

  onRtp(listener: (packet: Buffer) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Deliver a packet to the bridge as if Meta had sent it. */
  inject(packet: Buffer): void {
    if (this.#closed) return;
    for (const listener of this.#listeners) listener(packet);
  }

  get listenerTotal(): number {
    return this.#listeners.size;
  }

  async createOffer(): Promise<string> {
    throw new Error('not used in media tests');
  }

  async applyAnswer(): Promise<void> {}

  async applyOffer(): Promise<string> {
    throw new Error('not used in media tests');
  }

  negotiated(): MessengerNegotiated {
    return this.#negotiated;
  }

  async whenConnected(): Promise<void> {}

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.core.close();
    this.#listeners.clear();
    this.safeEmit('closed');
  }
}
