import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { BucketStore } from '@tally/buckets';
import { createDynamoClient, createDynamoMeter, mergeItems, queryItems, writeRow, type StoredItem } from '@tally/dynamo';
import { compileRules, defaultRules, rollup, type NormalizedEvent, type RowDeltas } from '@tally/schema';
import { createTestTable, type DynaliteHandle } from '@tally/testing';
import { useDynalite, useRedis } from '@tally/testing/vitest';
import fc from 'fast-check';
import type { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';

// Apply -> seal -> fold -> flush (DynamoDB) -> merge, with values at the extremes the rules allow, checked against
// sums computed independently from the events (BigInt, no rollup).
let dyn: DynaliteHandle;
let redis: Redis;
let client: DynamoDBClient;
const rules = compileRules(defaultRules);
const meter = createDynamoMeter();
const DAY = Date.parse('2026-12-01T12:00:00Z');

useRedis((r) => void (redis = r));
useDynalite((d) => {
  dyn = d;
  client = createDynamoClient({ endpoint: d.endpoint, region: 'us-east-1' });
  return () => client.destroy();
});

/** Flushes every dirty row of the store as the writer does (read outbox, write, ack); `crash` stops after some UpdateItems. */
async function flushAll(buckets: BucketStore, table: string, now: number, crashAfter?: number) {
  let n = 0;
  const afterUpdate = () => {
    if (crashAfter !== undefined && ++n === crashAfter) throw new Error('SIGKILL');
  };
  for (const { pk } of await buckets.dueRows('S', Number.MAX_SAFE_INTEGER)) {
    const out = await buckets.readOutbox('S', pk);
    await writeRow({ client, table, meter, afterUpdate }, pk, out.entries);
    await buckets.ackOutbox(
      'S',
      pk,
      out.entries.map((e) => e.field),
      now,
    );
  }
}

/** DynamoDB merged with everything Redis still holds, per row: sk -> attribute -> value (what a query sees). */
async function answer(buckets: BucketStore, table: string, pks: string[]) {
  const out = new Map<string, Map<string, Map<string, bigint>>>();
  const snaps = await buckets.snapshot('S', pks);
  for (const snap of snaps) {
    const { items } = await queryItems({ client, table, meter }, snap.pk, 'M', 'TOTAL');
    out.set(snap.pk, mergeItems(items as StoredItem[], snap.entries));
  }
  return out;
}

/** Store revenue and order count for 2026-12-01 computed from the events alone. */
function independent(events: NormalizedEvent[]) {
  let revenue = 0n;
  let orders = 0n;
  for (const e of events) {
    orders++;
    const [int, frac = ''] = e.value!.split('.');
    revenue += BigInt(int!) * 100n + BigInt(frac.padEnd(2, '0'));
  }
  return { revenue, orders };
}

describe('extreme values end to end (Redis and DynamoDB)', () => {
  it('300 batches of 1000 orders of 1000000000000 are 300000000000000000 exactly, before and after the flush', async () => {
    const table = await createTestTable(dyn.endpoint);
    const buckets = new BucketStore({ redis, rules, prefix: 'issue' });
    const order: NormalizedEvent = { type: 'order', ts: DAY, dims: {}, value: '1000000000000' };
    const events = Array.from({ length: 1000 }, () => order);
    for (let b = 0; b < 300; b++)
      await buckets.apply('S', `b${b}`, rollup(rules, 'S', 'UTC', events), { now: 1000 + b, dedupeTtlSeconds: 600 });
    const before = await answer(buckets, table, ['S']);
    expect(before.get('S')!.get('TOTAL')!.get('r')).toBe(30_000_000_000_000_000_000n); // minor units: 300000000000000000.00
    await buckets.seal('S', { now: 5000, minAgeMs: 0 });
    await buckets.foldSealed('S', { now: 5000 });
    await flushAll(buckets, table, 6000);
    const after = await answer(buckets, table, ['S']);
    expect(after).toEqual(before);
    const total = (await queryItems({ client, table, meter }, 'S', 'TOTAL', 'TOTAL')).items[0]!;
    expect(total.attrs.get('r')).toBe(30_000_000_000_000_000_000n);
    expect(total.attrs.get('o')).toBe(300_000n);
  });

  it('property: any mix of maximum, zero and ordinary values over many buckets, with crashes mid-flush', async () => {
    const value = fc.oneof(
      fc.constant('1000000000000'),
      fc.constant('0'),
      fc.constant('999999999999.99'),
      fc.integer({ min: 0, max: 10_000_000 }).map((c) => (c / 100).toFixed(2)),
    );
    const batch = fc.array(fc.record({ value, visitor: fc.constantFrom('V1', 'V2', 'V3') }), { minLength: 1, maxLength: 300 });
    const step = fc.oneof(
      { weight: 5, arbitrary: fc.record({ kind: fc.constant('apply' as const), batch, copies: fc.integer({ min: 1, max: 40 }) }) },
      { weight: 2, arbitrary: fc.record({ kind: fc.constant('seal' as const) }) },
      {
        weight: 2,
        arbitrary: fc.record({
          kind: fc.constant('flush' as const),
          crashAfter: fc.option(fc.integer({ min: 1, max: 6 }), { nil: undefined }),
        }),
      },
    );
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 25 }), async (steps) => {
        const table = await createTestTable(dyn.endpoint);
        const buckets = new BucketStore({ redis, rules, prefix: `p${run++}` });
        const sent: NormalizedEvent[] = [];
        let now = 10_000;
        for (const s of steps) {
          now += 10;
          if (s.kind === 'seal') {
            await buckets.seal('S', { now, minAgeMs: 0 });
            await buckets.foldSealed('S', { now });
          } else if (s.kind === 'flush') {
            await flushAll(buckets, table, now, s.crashAfter).catch((err: Error) => expect(err.message).toBe('SIGKILL'));
          } else {
            // `copies` identical batches (each its own id): up to 12,000 events of one bucket, sums past 64 bits.
            const events: NormalizedEvent[] = s.batch.map((o) => ({
              type: 'order',
              ts: DAY,
              dims: { visitor: o.visitor },
              value: o.value,
            }));
            const deltas: RowDeltas = rollup(rules, 'S', 'UTC', events);
            for (let c = 0; c < s.copies; c++) {
              await buckets.apply('S', `b${now}-${c}`, deltas, { now, dedupeTtlSeconds: 600 });
              sent.push(...events);
            }
          }
          const got = await answer(buckets, table, ['S', 'S#visitor#V1']);
          const want = independent(sent);
          expect(got.get('S')!.get('TOTAL')?.get('r') ?? 0n).toBe(want.revenue);
          expect(got.get('S')!.get('TOTAL')?.get('o') ?? 0n).toBe(want.orders);
          expect(got.get('S')!.get('M2026-12')?.get('D335.r') ?? 0n).toBe(want.revenue);
          expect(got.get('S#visitor#V1')!.get('TOTAL')?.get('r') ?? 0n).toBe(
            independent(sent.filter((e) => e.dims['visitor'] === 'V1')).revenue,
          );
        }
        // Everything sealed, folded and flushed: DynamoDB alone holds the sums, and Redis holds nothing more.
        await buckets.seal('S', { now: now + 100, minAgeMs: 0 });
        await buckets.foldSealed('S', { now: now + 100 });
        await flushAll(buckets, table, now + 200);
        const [snap] = await buckets.snapshot('S', ['S']);
        expect(snap!.entries).toEqual([]);
        const total = (await queryItems({ client, table, meter }, 'S', 'TOTAL', 'TOTAL')).items[0];
        expect(total?.attrs.get('r') ?? 0n).toBe(independent(sent).revenue);
      }),
      { numRuns: 15, seed: 1501 },
    );
  }, 600_000);
});
