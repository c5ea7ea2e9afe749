/**
 * Opus encoders and decoders that are safe in any thread. Every use of Opus in src/ goes through here.
 *
 * Why not `@evan/opus` as it is: its native addon (written for version 1.0.3) writes the output of every encoder
 * into one 8 KiB buffer and of every decoder into one 32 KiB buffer, allocated once per process, not per object and
 * not per thread, and returns a view of them. Within one thread that is harmless (the caller copies before the next
 * encode). With media threads, two threads coding at the same moment write into the same buffer, and a call's packet
 * or decoded frame carries part of another call's audio: a caller heard loud, distorted fragments of a stranger's
 * call (test/unit/media/opusThreads.test.ts shows it). So the addon is used on the main thread only, and every worker
 * thread (the media threads) uses the package's WebAssembly build, whose memory belongs to the thread that loaded
 * it. (Handing the addon to one media thread, to spare it that cost, has a second trap: an addon first loaded by a
 * worker thread takes the whole process down with a segmentation fault when that thread exits, unless the main
 * thread loaded it before.) The WebAssembly build costs more per frame (measured on this project's 2-core machine: encoding 20 ms at 8 kHz
 * ~40 us against ~25 us, decoding ~26 us against ~17 us); BENCHMARKS.md holds the figures that count.
 */
import { createRequire } from 'node:module';
import { isMainThread } from 'node:worker_threads';
import { InvalidStateError } from '../../core/errors.js';

/** Sample rates libopus accepts, Hz. */
export type OpusSampleRate = 8000 | 12000 | 16000 | 24000 | 48000;
export type OpusApplication = 'voip' | 'audio' | 'restricted_lowdelay';

/** libopus request numbers (opus_defines.h). */
const OPUS_SET_BITRATE = 4002;
const OPUS_SET_COMPLEXITY = 4010;
const OPUS_SET_DTX = 4016;
const APPLICATIONS: Record<OpusApplication, number> = { voip: 2048, audio: 2049, restricted_lowdelay: 2051 };

/** One encoder or decoder of either build, as the package's `node/index.js` and `wasm/index.js` export them. */
interface RawCodec {
  ctl(request: number, value?: number): number;
  /** The WebAssembly build's: frees the codec's memory in the module (the addon's are freed by the garbage collector). */
  drop?(): void;
}
interface RawEncoder extends RawCodec {
  encode(pcm: ArrayBufferView): Uint8Array;
}
interface RawDecoder extends RawCodec {
  decode(payload: ArrayBufferView): Uint8Array;
}
interface OpusBuild {
  Encoder: new (options: { channels: number; sample_rate: number; application: OpusApplication }) => RawEncoder;
  Decoder: new (options: { channels: number; sample_rate: number }) => RawDecoder;
}

/** Which build this thread codes with. */
export type OpusBuildKind = 'native' | 'wasm';

function loadBuild(): { build: OpusBuild; kind: OpusBuildKind } {
  const require = createRequire(import.meta.url);
  if (isMainThread) {
    try {
      return { build: require('@evan/opus/node/index.js') as OpusBuild, kind: 'native' };
    } catch {
      // No prebuilt addon for this platform: the WebAssembly build, as the package itself falls back.
    }
  }
  return { build: require('@evan/opus/wasm/index.js') as OpusBuild, kind: 'wasm' };
}

const { build, kind } = loadBuild();

/** The build this thread's encoders and decoders use: 'native' on the main thread, 'wasm' in worker threads. */
export const opusBuild: OpusBuildKind = kind;

/**
 * Frees a codec's memory now. The WebAssembly build's codecs live in the module's memory, which never shrinks, and
 * would otherwise be freed only when the garbage collector reaches their objects (after a full collection, for a
 * call's codecs that lived long enough to be promoted): 3,000 short calls' encoder and decoder grew a thread by
 * ~210 MiB that way, against ~30 MiB closed as they ended.
 */
function closeRaw(raw: RawCodec): void {
  raw.drop?.();
}

export class OpusEncoder {
  readonly #raw: RawEncoder;
  #closed = false;

  constructor(options: { sample_rate: OpusSampleRate; channels?: 1 | 2; application?: OpusApplication }) {
    this.#raw = new build.Encoder({
      channels: options.channels ?? 1,
      sample_rate: options.sample_rate,
      application: options.application ?? 'voip',
    });
  }

  /** Encoder complexity, 0 (cheapest) to 10. libopus's default is 10 at 8 kHz and up. */
  set complexity(value: number) {
    this.#raw.ctl(OPUS_SET_COMPLEXITY, Math.min(10, Math.max(0, Math.round(value))));
  }

  /** Target bitrate, bit/s (500 to 512,000). */
  set bitrate(bitsPerSecond: number) {
    this.#raw.ctl(OPUS_SET_BITRATE, Math.min(512_000, Math.max(500, Math.round(bitsPerSecond))));
  }

  /** Discontinuous transmission: near-empty frames during silence. */
  set dtx(on: boolean) {
    this.#raw.ctl(OPUS_SET_DTX, on ? 1 : 0);
  }

  /**
   * One frame of 16-bit PCM (2.5 to 60 ms at the encoder's rate) to an Opus packet. The result may be a view that the
   * next encode in this thread overwrites: copy it (or build the RTP packet from it) before encoding again.
   */
  encode(pcm: Int16Array): Uint8Array {
    if (this.#closed) throw new InvalidStateError('Opus encoder closed');
    return this.#raw.encode(pcm);
  }

  /** Frees the encoder now (see closeRaw); encode() throws afterwards. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeRaw(this.#raw);
  }
}

export class OpusDecoder {
  readonly #raw: RawDecoder;
  #closed = false;

  constructor(options: { sample_rate: OpusSampleRate; channels?: 1 | 2 }) {
    this.#raw = new build.Decoder({ channels: options.channels ?? 1, sample_rate: options.sample_rate });
  }

  /**
   * One Opus packet to 16-bit PCM bytes (little-endian) at the decoder's rate; a packet of only its TOC byte conceals
   * one frame. The result may be a view that the next decode in this thread overwrites: copy it before decoding
   * again. Throws on a packet libopus refuses.
   */
  decode(payload: Uint8Array): Uint8Array {
    if (this.#closed) throw new InvalidStateError('Opus decoder closed');
    return this.#raw.decode(payload);
  }

  /** Frees the decoder now (see closeRaw); decode() throws afterwards. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeRaw(this.#raw);
  }
}
