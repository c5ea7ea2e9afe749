import t from 'tap';
import fc from 'fast-check';
import { createHmac } from 'node:crypto';
import { parseWebhookBody, verifySignature, EventFilter } from '../../../src/webhook/index.js';
import type { MetaEvent } from '../../../src/calls/ports.js';

const SECRET = 'property-secret';
const sign = (body: Buffer): string => `sha256=${createHmac('sha256', SECRET).update(body).digest('hex')}`;

t.test('any change to any byte of a signed body breaks the signature', async (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 1, maxLength: 512 }), fc.nat(), fc.integer({ min: 1, max: 255 }), (bytes, at, flip) => {
      const body = Buffer.from(bytes);
      const signature = sign(body);
      if (verifySignature(body, signature, SECRET) !== 'ok') return false;
      const tampered = Buffer.from(body);
      const i = at % tampered.length;
      tampered[i] = tampered[i]! ^ flip;
      return verifySignature(tampered, signature, SECRET) === 'bad_signature';
    }),
    { numRuns: 300 },
  );
  t.pass('checked');
});

t.test('the parser never throws and only emits well-formed events, whatever the JSON', async (t) => {
  const callItem = fc.record(
    {
      id: fc.oneof(fc.string(), fc.integer()),
      event: fc.constantFrom('connect', 'call_status', 'media_update', 'terminate', 'other'),
      from: fc.string(),
      to: fc.string(),
      timestamp: fc.oneof(fc.integer({ min: 0, max: 2e12 }), fc.string()),
      call_direction: fc.constantFrom('user_initiated', 'business_initiated', 'x'),
      call_status: fc.string(),
      status: fc.string(),
      duration: fc.oneof(fc.integer(), fc.constant('')),
      session: fc.oneof(
        fc.record({ version: fc.integer(), sdp_renegotiation: fc.oneof(fc.string(), fc.record({ sdp_type: fc.constant('offer'), sdp: fc.string() })) }),
        fc.anything(),
      ),
    },
    { requiredKeys: [] },
  );
  const body = fc.oneof(
    fc.anything(),
    fc.record({
      object: fc.constantFrom('page', 'user'),
      entry: fc.array(fc.record({ id: fc.oneof(fc.string(), fc.integer()), time: fc.integer(), calls: fc.array(fc.oneof(callItem, fc.anything())), messaging: fc.array(fc.anything()) }, { requiredKeys: [] }), { maxLength: 4 }),
    }),
  );
  fc.assert(
    fc.property(body, (b) => {
      const parsed = parseWebhookBody(b, 1_700_000_000);
      for (const e of parsed.events) {
        if (typeof e.pageId !== 'string' || !Number.isFinite(e.timestamp)) return false;
        if (e.kind !== 'call_permission_reply' && (typeof e.callId !== 'string' || e.callId === '')) return false;
      }
      for (let i = 1; i < parsed.events.length; i++) {
        if (parsed.events[i - 1]!.timestamp > parsed.events[i]!.timestamp) return false;
      }
      return true;
    }),
    { numRuns: 500 },
  );
  t.pass('checked');
});

t.test('whatever the order of media updates, the delivered versions only increase', async (t) => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 0, max: 20 }), { maxLength: 40 }), (versions) => {
      const filter = new EventFilter({ pageIds: ['p'], now: () => 0 });
      const delivered: number[] = [];
      versions.forEach((version, i) => {
        const event: MetaEvent = { kind: 'media_update', pageId: 'p', callId: 'c', timestamp: i, version, session: { sdpType: 'offer', sdp: 'v=0' } };
        if (filter.check(event) === 'accepted') delivered.push(version);
      });
      const expected: number[] = [];
      for (const v of versions) if (expected.length === 0 || v > expected.at(-1)!) expected.push(v);
      return JSON.stringify(delivered) === JSON.stringify(expected);
    }),
    { numRuns: 300 },
  );
  t.pass('checked');
});
