/**
 * A runtime fix for werift 0.25.2's DTLS client, so that it completes handshakes against OpenSSL-based DTLS servers
 * that handle datagrams out of order or drop a record (rtpengine; possibly Meta's media servers).
 *
 * What goes wrong without it (captured on loopback against rtpengine 10.5, see INTEROP.md):
 * 1. werift sends its final flight (Certificate, ClientKeyExchange, CertificateVerify, ChangeCipherSpec, Finished) as
 *    five separate UDP datagrams. A server that reads one socket from several threads may process them out of order.
 *    When OpenSSL sees the ChangeCipherSpec before it has processed the CertificateVerify, it discards the
 *    ChangeCipherSpec, then buffers the epoch-1 Finished and waits for a ChangeCipherSpec that never comes.
 * 2. werift retransmits a flight byte for byte, with the record sequence numbers of the first transmission.
 *    RFC 6347 (4.1, 4.2.4) wants a new record sequence number on every retransmitted record; OpenSSL's replay window
 *    drops the copies, so a record lost or discarded the first time is never delivered: werift retransmits until it
 *    gives up and the server never finishes.
 * 3. werift waits a fixed 100 ms after ICE before sending its ClientHello (RTCDtlsTransport.start).
 * 4. When a server retransmits its flight and finishes in the same datagram (mediasoup does when its retransmission
 *    timer fires while our final flight is on its way, which happens on a busy machine), werift handles the
 *    ServerHelloDone after the Finished and builds a second final flight: plaintext records under epoch-1 headers, a
 *    new key pair, a clobbered master secret. The server then drops the DTLS session while our side believes it is
 *    connected: no audio either way (seen with 10 call set-ups at a time against mediasoup).
 * 5. werift's retransmission loop keeps running, and a timer holds the process, for up to ~27 s after the DTLS
 *    socket was closed.
 *
 * The fix, per DTLS client socket, on the datagrams werift hands to its ICE transport:
 * - the records werift sends in one go (a flight) leave in as few datagrams as fit `maxDatagramBytes`, in order, so a
 *   server always sees a flight's records in the order they were written (what OpenSSL and BoringSSL clients do);
 * - every plaintext (epoch-0) record gets a fresh sequence number, so a retransmitted flight is not a replay; an
 *   encrypted (epoch-1) record, i.e. our Finished, keeps its number for its first retransmission and is then
 *   decrypted with our own write key and sealed again under fresh numbers (AES-GCM authenticates the number); see
 *   DtlsRecordWriter for why;
 * - once the handshake is over, a retransmitted server flight no longer starts a second final flight;
 * - the retransmission loop (same schedule) ends at once when the socket closes, and lets pending I/O in before it
 *   decides to retransmit;
 * - the ClientHello goes out as soon as werift has created the DTLS client, without the 100 ms wait. Meta's side is
 *   ICE-lite and DTLS passive: it has answered before we start and is ready when our nominated check succeeds; a
 *   ClientHello that still arrives too early is retransmitted by werift after 500 ms.
 *
 * werift's retransmission schedule (0.5 s, 1 s, 1.5 s, ... 10 times, ~27 s in all) is kept: with fresh record numbers
 * the first retransmission recovers from a lost or discarded record.
 *
 * Cost of a handshake: werift does its ECDHE on P-256 in pure JavaScript (@noble/curves): about 20-25 ms of CPU per
 * handshake on the event loop, and about 1 s more for the very first one (noble builds its base-point tables then).
 * `warmUpWeriftEcdhe()` pays that first cost at start-up instead of during the first call.
 *
 * Applied through `applyWeriftPatches()` (./index.ts), which first checks werift's version and finds every target with
 * `findWeriftDtlsTargets()` (throws when one is missing). It patches the prototypes of werift's `DtlsClient` (connect),
 * `RTCDtlsTransport` (start), `DtlsSocket` (close) and of its internal `Flight` (transmit) and client `Flight5` (exec).
 * A werift `DtlsServer` keeps its behaviour, except that its retransmission loop too ends when it is closed.
 */
import { DtlsClient, DtlsSocket, RTCDtlsTransport } from 'werift';
import { expectMethods } from '../../core/dependencyPatch.js';
import { DependencyPatchError } from '../../core/errors.js';

/** DTLS record header: type(1) version(2) epoch(2) sequence_number(6) length(2). */
export const DTLS_RECORD_HEADER_BYTES = 13;

export interface DtlsRecord {
  contentType: number;
  /** (major << 8) | minor, e.g. 0xfefd for DTLS 1.2. */
  version: number;
  epoch: number;
  sequenceNumber: number;
  /** The record's payload (still encrypted in epoch > 0). */
  fragment: Buffer;
}

/** Split a datagram into DTLS records. Throws on a truncated record. */
export function parseDtlsRecords(datagram: Buffer): DtlsRecord[] {
  const records: DtlsRecord[] = [];
  let pos = 0;
  while (pos < datagram.length) {
    if (pos + DTLS_RECORD_HEADER_BYTES > datagram.length) throw new RangeError('truncated DTLS record header');
    const length = datagram.readUInt16BE(pos + 11);
    const end = pos + DTLS_RECORD_HEADER_BYTES + length;
    if (end > datagram.length) throw new RangeError('truncated DTLS record');
    records.push({
      contentType: datagram[pos] as number,
      version: datagram.readUInt16BE(pos + 1),
      epoch: datagram.readUInt16BE(pos + 3),
      sequenceNumber: datagram.readUIntBE(pos + 5, 6),
      fragment: datagram.subarray(pos + DTLS_RECORD_HEADER_BYTES, end),
    });
    pos = end;
  }
  return records;
}

export function serializeDtlsRecord(record: DtlsRecord): Buffer {
  const out = Buffer.allocUnsafe(DTLS_RECORD_HEADER_BYTES + record.fragment.length);
  out[0] = record.contentType;
  out.writeUInt16BE(record.version, 1);
  out.writeUInt16BE(record.epoch, 3);
  out.writeUIntBE(record.sequenceNumber, 5, 6);
  out.writeUInt16BE(record.fragment.length, 11);
  record.fragment.copy(out, DTLS_RECORD_HEADER_BYTES);
  return out;
}

/**
 * Re-seals an epoch > 0 record under a new sequence number (AEAD: the number is in the nonce and the additional data).
 * Returns the new encrypted fragment.
 */
export type RecordResealer = (record: DtlsRecord, newSequenceNumber: number) => Buffer;

/**
 * Packs the records written in one turn of the event loop into datagrams of at most `maxDatagramBytes`, in order,
 * and gives retransmitted records new sequence numbers:
 * - epoch 0 (plaintext): every record is renumbered from a counter starting at 0, so a retransmission is never a
 *   replay (this is what lets a ChangeCipherSpec that the server ignored get in the second time);
 * - epoch 1 and later (encrypted): a record goes out unchanged the first `keepEncryptedSends` times (default 2: the
 *   first transmission and the first retransmission), then re-sealed under fresh numbers. Recovering from a
 *   reordered or lost final flight needs only the plaintext records renumbered (the server keeps an early Finished
 *   until the ChangeCipherSpec comes). Keeping the Finished's number on the first retransmission makes the common
 *   spurious one (our timer fired while the server's answer was on its way) a replay that every server drops
 *   unprocessed, rather than a repeated Finished that each server handles its own way. From the second
 *   retransmission on, a fresh number lets an RFC 6347 (4.2.4) server see that its own last flight was lost and
 *   send it again.
 * Independent of werift (tested on its own).
 */
export class DtlsRecordWriter {
  readonly #send: (datagram: Buffer) => Promise<void>;
  readonly #reseal: RecordResealer;
  readonly #maxDatagramBytes: number;
  readonly #keepEncryptedSends: number;
  readonly #nextSequence = new Map<number, number>();
  readonly #encryptedSends = new Map<string, number>();
  #queue: Buffer[] = [];
  #flushing: Promise<void> | undefined;

  /**
   * @param send puts one datagram on the wire.
   * @param reseal re-encrypts an epoch > 0 record for a new sequence number.
   * @param maxDatagramBytes datagram size limit in bytes (default 1200, below any path MTU on the Internet).
   * @param keepEncryptedSends how many times an epoch > 0 record is sent with its original number (default 2).
   */
  constructor(options: {
    send: (datagram: Buffer) => Promise<void>;
    reseal: RecordResealer;
    maxDatagramBytes?: number;
    keepEncryptedSends?: number;
  }) {
    this.#send = options.send;
    this.#reseal = options.reseal;
    this.#maxDatagramBytes = options.maxDatagramBytes ?? 1200;
    this.#keepEncryptedSends = options.keepEncryptedSends ?? 2;
  }

  /** Queue one buffer of whole records; all buffers written in the same tick leave together, in order. */
  write(buffer: Buffer): Promise<void> {
    this.#queue.push(buffer);
    if (!this.#flushing) {
      this.#flushing = new Promise<void>((resolve, reject) => {
        queueMicrotask(() => {
          const buffers = this.#queue;
          this.#queue = [];
          this.#flushing = undefined;
          this.#flush(buffers).then(resolve, reject);
        });
      });
    }
    return this.#flushing;
  }

  /** The next sequence number this writer will give a record of `epoch`. */
  nextSequenceNumber(epoch: number): number {
    return this.#nextSequence.get(epoch) ?? 0;
  }

  async #flush(buffers: Buffer[]): Promise<void> {
    const datagrams: Buffer[][] = [];
    let current: Buffer[] = [];
    let currentBytes = 0;
    for (const buffer of buffers) {
      for (const record of parseDtlsRecords(buffer)) {
        const bytes = this.#renumber(record);
        if (currentBytes > 0 && currentBytes + bytes.length > this.#maxDatagramBytes) {
          datagrams.push(current);
          current = [];
          currentBytes = 0;
        }
        current.push(bytes);
        currentBytes += bytes.length;
      }
    }
    if (current.length > 0) datagrams.push(current);
    for (const datagram of datagrams) await this.#send(Buffer.concat(datagram));
  }

  #renumber(record: DtlsRecord): Buffer {
    const { epoch } = record;
    if (epoch === 0) {
      const sequenceNumber = this.nextSequenceNumber(0);
      this.#nextSequence.set(0, sequenceNumber + 1);
      return serializeDtlsRecord(record.sequenceNumber === sequenceNumber ? record : { ...record, sequenceNumber });
    }
    // Fresh numbers in this epoch start above every number the record's writer used.
    if (this.nextSequenceNumber(epoch) <= record.sequenceNumber) this.#nextSequence.set(epoch, record.sequenceNumber + 1);
    const key = `${epoch}/${record.sequenceNumber}/${record.contentType}`;
    const sends = (this.#encryptedSends.get(key) ?? 0) + 1;
    this.#encryptedSends.set(key, sends);
    if (sends <= this.#keepEncryptedSends) return serializeDtlsRecord(record);
    const sequenceNumber = this.nextSequenceNumber(epoch);
    this.#nextSequence.set(epoch, sequenceNumber + 1);
    return serializeDtlsRecord({ ...record, sequenceNumber, fragment: this.#reseal(record, sequenceNumber) });
  }
}

export interface WeriftDtlsFixOptions {
  /** Largest datagram the client sends, in bytes (default 1200). */
  maxDatagramBytes?: number;
  /** Send the ClientHello without werift's fixed 100 ms wait (default true). */
  startWithoutDelay?: boolean;
}

// The parts of werift's DTLS client this file touches (werift does not export the types of its internals).
interface AeadCipherLike {
  encrypt(type: number, data: Buffer, header: { type: number; version: number; epoch: number; sequenceNumber: number }): Buffer;
  decrypt(type: number, data: Buffer, header: { type: number; version: number; epoch: number; sequenceNumber: number }): Buffer;
}
interface DtlsClientInternals {
  transport: { send: (buf: Buffer, addr?: unknown) => Promise<void> };
  cipher: { sessionType: number; cipher?: AeadCipherLike };
  dtls: DtlsContextLike;
}
interface DtlsContextLike {
  flight: number;
  sessionId: string;
}
/** werift's (unexported) client Flight5, as far as exec() needs it. */
interface Flight5Like {
  dtls: DtlsContextLike;
  exec: () => Promise<void>;
}
/** werift's (unexported) Flight base class, as far as transmit() needs it. */
interface FlightLike {
  dtls: DtlsContextLike;
  flight: number;
  nextFlight: number | undefined;
  send: (buffers: Buffer[]) => Promise<unknown>;
  setState: (state: 'PREPARING' | 'SENDING' | 'WAITING' | 'FINISHED') => void;
  transmit: (buffers: Buffer[]) => Promise<void>;
}

const SESSION_CLIENT = 1;
const SESSION_SERVER = 2;
const connectPromise = Symbol('connectPromise');
const writerInstalled = Symbol('writerInstalled');

let appliedOptions: Required<WeriftDtlsFixOptions> | undefined;

/** DTLS contexts of closed sockets, and the retransmission waits to cut short when they close. */
const closedContexts = new WeakSet<object>();
const pendingWaits = new WeakMap<object, Set<() => void>>();

/** Sleep `ms`, or less if the socket owning `context` closes meanwhile. */
function retransmissionWait(context: object, ms: number): Promise<void> {
  return new Promise((resolve) => {
    let waits = pendingWaits.get(context);
    if (!waits) {
      waits = new Set();
      pendingWaits.set(context, waits);
    }
    const wake = (): void => {
      clearTimeout(timer);
      waits.delete(wake);
      resolve();
    };
    const timer = setTimeout(wake, ms);
    waits.add(wake);
  });
}

function wakeRetransmissionWaits(context: object): void {
  closedContexts.add(context);
  for (const wake of [...(pendingWaits.get(context) ?? [])]) wake();
}

/** The prototypes this fix replaces methods of. */
export interface WeriftDtlsTargets {
  client: { connect: () => Promise<void> };
  transport: { start: () => Promise<void> };
  socket: { close: () => void };
  flight: FlightLike;
  flight5: Flight5Like;
}

/**
 * werift's Flight classes are internal to its bundle; reach their prototypes through the Flight5 that a throw-away
 * client creates when handed an (empty, unparsable) ServerHello.
 */
function findFlightPrototypes(): { flight: FlightLike | null; flight5: Flight5Like | null; instance: object | undefined } {
  const probeTransport = {
    type: 'probe',
    address: {},
    closed: true,
    onData: () => undefined,
    send: async () => undefined,
    close: async () => undefined,
  };
  const probe = new DtlsClient({ transport: probeTransport, srtpProfiles: [] } as unknown as ConstructorParameters<
    typeof DtlsClient
  >[0]) as unknown as {
    handleHandshakes?: (assembled: { msg_type: number; fragment: Buffer }[]) => Promise<void>;
    flight5?: object;
  };
  if (typeof probe.handleHandshakes !== 'function') return { flight: null, flight5: null, instance: undefined };
  // The empty ServerHello fails to parse after flight5 is created: that rejection is the probe's expected end.
  probe.handleHandshakes([{ msg_type: 2, fragment: Buffer.alloc(0) }]).catch(() => undefined);
  const flight5 = probe.flight5 ? (Object.getPrototypeOf(probe.flight5) as Flight5Like | null) : null;
  const flight = flight5 ? (Object.getPrototypeOf(flight5) as FlightLike | null) : null;
  return { flight, flight5, instance: probe.flight5 };
}

/** Find every werift method this fix replaces; throws `DependencyPatchError` naming the first one missing. */
export function findWeriftDtlsTargets(): WeriftDtlsTargets {
  const client = DtlsClient.prototype as unknown as WeriftDtlsTargets['client'];
  const transport = RTCDtlsTransport.prototype as unknown as WeriftDtlsTargets['transport'];
  const socket = DtlsSocket.prototype as unknown as WeriftDtlsTargets['socket'];
  expectMethods('werift', 'DtlsClient.prototype', client, ['connect']);
  expectMethods('werift', 'RTCDtlsTransport.prototype', transport, ['start']);
  expectMethods('werift', 'DtlsSocket.prototype', socket, ['close']);
  const { flight, flight5, instance } = findFlightPrototypes();
  if (!flight5) throw new DependencyPatchError('werift', 'DtlsClient no longer creates its flight5 on a ServerHello: the Flight patches cannot bind');
  expectMethods('werift', 'Flight5.prototype', flight5, ['exec']);
  expectMethods('werift', 'Flight.prototype', flight, ['transmit', 'setState']);
  // The replacement transmit() reads these off each flight.
  expectMethods('werift', 'a Flight5', instance, ['send']);
  if (!('dtls' in (instance ?? {})) || !('nextFlight' in (instance ?? {}))) {
    throw new DependencyPatchError('werift', 'a Flight5 has no dtls/nextFlight fields: the Flight.transmit patch cannot bind');
  }
  return { client, transport, socket, flight: flight as FlightLike, flight5 };
}

/**
 * werift's Flight.transmit with the same schedule, ending as soon as the socket is closed; and Flight5.exec made a
 * no-op once the handshake is over.
 */
function patchRetransmission(targets: WeriftDtlsTargets): void {
  const flightProto = targets.flight;
  const flight5Proto = targets.flight5;
  const exec = flight5Proto.exec;
  flight5Proto.exec = function (this: Flight5Like): Promise<void> {
    // A server that retransmits its flight and finishes in the same datagram (mediasoup does, when its 100 ms timer
    // fires while our final flight is on its way) gets its ServerHelloDone handled after its Finished: werift would
    // then build a second final flight with new keys, epoch-1 headers on plaintext records and a clobbered master
    // secret, and the server drops the session. The handshake is over (flight 7): nothing to send.
    if (this.dtls.flight >= 7) return Promise.resolve();
    return exec.call(this);
  };
  flightProto.transmit = async function transmit(this: FlightLike, buffers: Buffer[]): Promise<void> {
    const retransmitCount = (this.constructor as { RetransmitCount?: number }).RetransmitCount ?? 10;
    for (let attempt = 0; attempt <= retransmitCount; attempt++) {
      if (closedContexts.has(this.dtls)) return;
      this.setState('SENDING');
      // A send failure is a lost datagram: the next retransmission covers it.
      this.send(buffers).catch(() => undefined);
      this.setState('WAITING');
      if (this.nextFlight === undefined) {
        this.setState('FINISHED');
        return;
      }
      await retransmissionWait(this.dtls, (1000 * (attempt + 1)) / 2);
      // On a busy event loop the peer's answer may be waiting in the socket: let pending I/O in before deciding
      // to retransmit, rather than send a flight the peer has already answered.
      await new Promise<void>((resolve) => setImmediate(resolve));
      if (closedContexts.has(this.dtls)) return;
      if (this.dtls.flight >= this.nextFlight) {
        this.setState('FINISHED');
        return;
      }
    }
    throw new Error(`over retransmitCount : ${this.flight} ${this.nextFlight}`);
  };
  const socketProto = targets.socket;
  const close = socketProto.close;
  socketProto.close = function (this: { dtls: object }): void {
    wakeRetransmissionWaits(this.dtls);
    close.call(this);
  };
}

/** True once the DTLS fix is in force in this thread. */
export function isWeriftDtlsFixApplied(): boolean {
  return appliedOptions !== undefined;
}

function installRecordWriter(client: DtlsClientInternals, maxDatagramBytes: number): void {
  const transport = client.transport;
  const rawSend = transport.send;
  const writer = new DtlsRecordWriter({
    maxDatagramBytes,
    send: (datagram) => rawSend(datagram),
    reseal: (record, newSequenceNumber) => {
      const aead = client.cipher.cipher;
      if (!aead || client.cipher.sessionType !== SESSION_CLIENT) {
        throw new Error('cannot re-seal a DTLS record without the client cipher');
      }
      // Our own records are sealed with the client write key; werift picks keys by "who is decrypting", so decrypting
      // as the server opens them.
      const open = { type: record.contentType, version: record.version, epoch: record.epoch };
      const plaintext = aead.decrypt(SESSION_SERVER, record.fragment, { ...open, sequenceNumber: record.sequenceNumber });
      return aead.encrypt(SESSION_CLIENT, plaintext, { ...open, sequenceNumber: newSequenceNumber });
    },
  });
  // werift calls transport.send(buf) for handshake flights and application data; everything it sends is records.
  Object.defineProperty(transport, 'send', {
    configurable: true,
    writable: true,
    value: (buf: Buffer) => writer.write(buf),
  });
}

/**
 * Patch werift's DTLS client on `targets` (from `findWeriftDtlsTargets()`). Idempotent: later calls, with any options,
 * leave the first call's patches and options in force. Called by `applyWeriftPatches()`.
 */
export function applyWeriftDtlsFix(targets: WeriftDtlsTargets, options: WeriftDtlsFixOptions = {}): void {
  if (appliedOptions) return;
  const config: Required<WeriftDtlsFixOptions> = {
    maxDatagramBytes: options.maxDatagramBytes ?? 1200,
    startWithoutDelay: options.startWithoutDelay ?? true,
  };
  const clientProto = targets.client;
  const originalConnect = clientProto.connect;
  // connect() runs once per client: a second call (werift's own, 100 ms after ours) gets the first call's promise.
  clientProto.connect = function connect(this: DtlsClientInternals & Record<PropertyKey, unknown>): Promise<void> {
    const existing = this[connectPromise] as Promise<void> | undefined;
    if (existing) return existing;
    if (!this[writerInstalled]) {
      installRecordWriter(this, config.maxDatagramBytes);
      this[writerInstalled] = true;
    }
    const started = originalConnect.call(this);
    this[connectPromise] = started;
    return started;
  };

  if (config.startWithoutDelay) {
    const transportProto = targets.transport;
    const originalStart = transportProto.start;
    transportProto.start = function start(this: { dtls?: unknown }): Promise<void> {
      // start() creates the DTLS client synchronously, then sleeps 100 ms before connect(); connect it now instead.
      const running = originalStart.call(this);
      const dtls = this.dtls;
      if (dtls instanceof DtlsClient) {
        // Failures of this call reach werift through its own connect() call, which returns this same promise.
        dtls.connect().catch(() => undefined);
      }
      return running;
    };
  }

  patchRetransmission(targets);
  appliedOptions = config;
}

/**
 * Build @noble/curves' P-256 base-point tables now (werift's ECDHE uses that library; the first key pair otherwise
 * costs ~1 s of CPU inside the first call's handshake). Call at start-up; resolves with the time it took in ms, or
 * undefined when the library is not where werift would load it from (then nothing is warmed, nothing breaks).
 */
export async function warmUpWeriftEcdhe(): Promise<number | undefined> {
  // A transitive dependency of werift: the specifier is resolved at run time, the same way werift's bundle does.
  const specifier = '@noble/curves/p256';
  let curve: NobleP256 | undefined;
  try {
    curve = ((await import(specifier)) as { p256?: NobleP256 }).p256;
  } catch {
    return undefined;
  }
  if (!curve) return undefined;
  const started = performance.now();
  const a = curve.utils.randomPrivateKey();
  const b = curve.utils.randomPrivateKey();
  curve.getSharedSecret(a, curve.getPublicKey(b, false));
  return performance.now() - started;
}

interface NobleP256 {
  utils: { randomPrivateKey(): Uint8Array };
  getPublicKey(privateKey: Uint8Array, isCompressed?: boolean): Uint8Array;
  getSharedSecret(privateKey: Uint8Array, publicKey: Uint8Array, isCompressed?: boolean): Uint8Array;
}
