/**
 * The record writer behind the werift DTLS client fix: flights leave in order in as few datagrams as fit, every
 * record gets a fresh per-epoch sequence number (so retransmissions are not replays), epoch-1 records are re-sealed.
 */
import t from 'tap';
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import {
  isWeriftDtlsFixApplied,
  warmUpWeriftEcdhe,
  DtlsRecordWriter,
  parseDtlsRecords,
  serializeDtlsRecord,
  type DtlsRecord,
  type RecordResealer,
} from '../../src/messenger/werift/dtlsFix.js';
import { applyWeriftPatches } from '../../src/messenger/werift/index.js';

const DTLS12 = 0xfefd;

function record(contentType: number, epoch: number, sequenceNumber: number, size: number, fill = 0xab): Buffer {
  return serializeDtlsRecord({ contentType, version: DTLS12, epoch, sequenceNumber, fragment: Buffer.alloc(size, fill) });
}

/** werift's final flight as it writes it: five buffers, handshake records numbered 2..4, CCS 5, Finished epoch 1 #6. */
function finalFlight(): Buffer[] {
  return [record(22, 0, 2, 409), record(22, 0, 3, 78), record(22, 0, 4, 86), record(20, 0, 5, 1, 1), record(22, 1, 6, 48)];
}

function collectingWriter(reseal: RecordResealer = (r) => r.fragment, maxDatagramBytes?: number, keepEncryptedSends?: number) {
  const datagrams: Buffer[] = [];
  const writer = new DtlsRecordWriter({
    send: async (d) => {
      datagrams.push(d);
    },
    reseal,
    ...(maxDatagramBytes !== undefined ? { maxDatagramBytes } : {}),
    ...(keepEncryptedSends !== undefined ? { keepEncryptedSends } : {}),
  });
  return { writer, datagrams };
}

t.test('parseDtlsRecords splits a datagram and rejects truncation', async (t) => {
  const datagram = Buffer.concat(finalFlight());
  const records = parseDtlsRecords(datagram);
  t.same(
    records.map((r) => [r.contentType, r.epoch, r.sequenceNumber, r.fragment.length]),
    [
      [22, 0, 2, 409],
      [22, 0, 3, 78],
      [22, 0, 4, 86],
      [20, 0, 5, 1],
      [22, 1, 6, 48],
    ],
  );
  t.same(Buffer.concat(records.map(serializeDtlsRecord)), datagram, 'serialize is the inverse of parse');
  t.throws(() => parseDtlsRecords(datagram.subarray(0, datagram.length - 1)), RangeError);
  t.throws(() => parseDtlsRecords(datagram.subarray(0, 5)), RangeError);
});

t.test('a flight written in one tick leaves as one datagram, in order, plaintext records renumbered', async (t) => {
  const resealed: number[] = [];
  const { writer, datagrams } = collectingWriter((r, n) => {
    resealed.push(n);
    return r.fragment;
  });
  await Promise.all(finalFlight().map((b) => writer.write(b)));
  t.equal(datagrams.length, 1, 'one datagram');
  const records = parseDtlsRecords(datagrams[0]!);
  t.same(
    records.map((r) => [r.contentType, r.epoch, r.sequenceNumber]),
    [
      [22, 0, 0],
      [22, 0, 1],
      [22, 0, 2],
      [20, 0, 3],
      [22, 1, 6],
    ],
    'epoch 0 numbered from 0; the encrypted Finished keeps its number',
  );
  t.same(resealed, [], 'nothing re-sealed on the first transmission');
});

t.test('retransmissions: plaintext records always get new numbers, the Finished from its third sending', async (t) => {
  const resealed: number[] = [];
  const { writer, datagrams } = collectingWriter((r, n) => {
    resealed.push(n);
    return r.fragment;
  });
  const flight = finalFlight();
  for (let i = 0; i < 4; i++) await Promise.all(flight.map((b) => writer.write(b)));
  t.equal(datagrams.length, 4);
  const sent = datagrams.map((d) => parseDtlsRecords(d).map((r) => `${r.epoch}/${r.sequenceNumber}`));
  t.same(sent[1], ['0/4', '0/5', '0/6', '0/7', '1/6'], 'first retransmission: same Finished number (a replay if late)');
  t.same(sent[2], ['0/8', '0/9', '0/10', '0/11', '1/7'], 'second retransmission: Finished re-sealed as 7');
  t.same(sent[3], ['0/12', '0/13', '0/14', '0/15', '1/8']);
  t.same(resealed, [7, 8]);
  const plaintext = sent.flat().filter((n) => n.startsWith('0/'));
  t.equal(new Set(plaintext).size, plaintext.length, 'no plaintext (epoch, number) pair is sent twice');
  t.equal(writer.nextSequenceNumber(0), 16);
  t.equal(writer.nextSequenceNumber(1), 9);
});

t.test('a flight larger than the datagram limit is split at record boundaries, order kept', async (t) => {
  const { writer, datagrams } = collectingWriter(undefined, 600);
  await Promise.all(finalFlight().map((b) => writer.write(b)));
  t.ok(datagrams.length >= 2, `${datagrams.length} datagrams`);
  for (const d of datagrams) t.ok(d.length <= 600 || parseDtlsRecords(d).length === 1, `datagram of ${d.length} bytes`);
  const all = datagrams.flatMap((d) => parseDtlsRecords(d));
  t.same(
    all.map((r) => r.contentType),
    [22, 22, 22, 20, 22],
  );
  t.same(
    all.map((r) => r.sequenceNumber),
    [0, 1, 2, 3, 6],
  );
});

t.test('writes in different ticks are different datagrams', async (t) => {
  const { writer, datagrams } = collectingWriter();
  await writer.write(record(22, 0, 1, 100));
  await writer.write(record(22, 0, 2, 100));
  t.equal(datagrams.length, 2);
});

t.test('an AES-GCM record re-sealed under a new number opens with the new number and not the old one', async (t) => {
  // The same construction as DTLS 1.2 AES-128-GCM: nonce = 4-byte salt + epoch(2) + seq(6); AAD = epoch, seq, type,
  // version, length.
  const key = randomBytes(16);
  const salt = randomBytes(4);
  const explicit = (epoch: number, seq: number): Buffer => {
    const b = Buffer.alloc(8);
    b.writeUInt16BE(epoch, 0);
    b.writeUIntBE(seq, 2, 6);
    return b;
  };
  const aad = (r: Omit<DtlsRecord, 'fragment'>, length: number): Buffer => {
    const b = Buffer.alloc(13);
    b.writeUInt16BE(r.epoch, 0);
    b.writeUIntBE(r.sequenceNumber, 2, 6);
    b[8] = r.contentType;
    b.writeUInt16BE(r.version, 9);
    b.writeUInt16BE(length, 11);
    return b;
  };
  const seal = (r: Omit<DtlsRecord, 'fragment'>, plaintext: Buffer): Buffer => {
    const nonce = explicit(r.epoch, r.sequenceNumber);
    const c = createCipheriv('aes-128-gcm', key, Buffer.concat([salt, nonce]));
    c.setAAD(aad(r, plaintext.length));
    return Buffer.concat([nonce, c.update(plaintext), c.final(), c.getAuthTag()]);
  };
  const open = (r: DtlsRecord): Buffer => {
    const nonce = r.fragment.subarray(0, 8);
    const body = r.fragment.subarray(8, r.fragment.length - 16);
    const d = createDecipheriv('aes-128-gcm', key, Buffer.concat([salt, nonce]));
    d.setAuthTag(r.fragment.subarray(r.fragment.length - 16));
    d.setAAD(aad(r, body.length));
    return Buffer.concat([d.update(body), d.final()]);
  };
  const finished = Buffer.from('1400000c000300000000000c' + 'aa'.repeat(12), 'hex');
  const header = { contentType: 22, version: DTLS12, epoch: 1, sequenceNumber: 6 };
  const sealed = serializeDtlsRecord({ ...header, fragment: seal(header, finished) });
  const { writer, datagrams } = collectingWriter((r, n) => seal({ ...r, sequenceNumber: n }, open(r)), undefined, 0);
  await writer.write(sealed);
  const [out] = parseDtlsRecords(datagrams[0]!);
  t.equal(out!.sequenceNumber, 7, 'fresh numbers start above the ones already used');
  t.same(open(out!), finished, 'decrypts under its new number');
  t.throws(() => open({ ...out!, sequenceNumber: 6 }), 'does not authenticate under the old number');
  t.equal(datagrams.length, 1);
});

t.test('the patch finds the werift internals it needs (guards a werift upgrade)', async (t) => {
  const report = applyWeriftPatches();
  t.equal(applyWeriftPatches(), report, 'a second call changes nothing');
  t.ok(isWeriftDtlsFixApplied(), 'client patched');
  t.ok(report.applied.includes('Flight.transmit'), "werift's Flight.transmit found and replaced");
  const ms = await warmUpWeriftEcdhe();
  t.type(ms, 'number', "werift's P-256 library found and warmed up");
});
