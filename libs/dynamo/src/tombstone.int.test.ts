import { GetItemCommand, PutItemCommand, type AttributeValue } from '@aws-sdk/client-dynamodb';
import { ERASED_ATTR, EXPIRES_ATTR, WATERMARK_ATTR, WATERMARK_PART_ATTR } from '@tally/key-layout';
import { createTestTable } from '@tally/testing';
import { dynamoBackends, useDynamoBackendClient } from '@tally/testing/vitest';
import { describe, expect, it } from 'vitest';
import {
  createDynamoClient,
  createDynamoMeter,
  getItem,
  MAX_ATTRS_PER_UPDATE,
  mergeItems,
  toStoredItem,
  writeRow,
  writeRowWithSketches,
  writeSketchItem,
  type CountEntry,
  type RowWriterDeps,
  type SketchUnion,
} from './index';

/*
 * Tombstone items (libs/tenants erasure.ts: what erasing a visitor or deleting a store leaves in place of a counter
 * item): `wm` the fence E, ERASED_ATTR, a TTL of their own, no counts. A write of buckets at or below E (a flush that
 * read its outbox before the erasure and writes after it) is refused and its buckets taken for written; a write of
 * later buckets passes and makes the item a counter item again, at the cost of a write to a fresh item.
 */

const e = (seq: number, dayKey: string, metric: string, value: number): CountEntry => ({ seq, dayKey, metric, value: BigInt(value) });
/** Exact sketches: `X` and 8-byte members; the union is the members of a group, each once. */
const union: SketchUnion = async (groups) =>
  groups.map((g) => {
    const members = new Set(
      g.flatMap((b) => Array.from({ length: (b.length - 1) / 8 }, (_, i) => b.subarray(1 + i * 8, 9 + i * 8).toString('hex'))),
    );
    return { count: members.size, blob: Buffer.concat([Buffer.from('X'), ...[...members].sort().map((m) => Buffer.from(m, 'hex'))]) };
  });
const member = (n: number) => Buffer.concat([Buffer.from('X'), Buffer.alloc(8, n)]);
const FENCE = 10;
const TOMBSTONE_TTL = 2_000_000_000;

describe.each(dynamoBackends())('tombstone items, on $name', (backend) => {
  const { skip } = backend;
  const emulator = useDynamoBackendClient(backend, (endpoint) => createDynamoClient({ endpoint, region: 'us-east-1' }));
  const deps = (table: string, expiresAt?: RowWriterDeps['expiresAt']): RowWriterDeps => ({
    client: emulator.client,
    table,
    meter: createDynamoMeter(),
    ...(expiresAt ? { expiresAt } : {}),
  });
  /** A tombstone item as the erasure puts it. */
  const putTombstone = (table: string, pk: string, sk: string) =>
    emulator.client.send(
      new PutItemCommand({
        TableName: table,
        Item: {
          pk: { S: pk },
          sk: { S: sk },
          [WATERMARK_ATTR]: { N: String(FENCE) },
          [ERASED_ATTR]: { S: '2026-01-01T00:00:00.000Z' },
          [EXPIRES_ATTR]: { N: String(TOMBSTONE_TTL) },
        },
      }),
    );
  const raw = async (table: string, pk: string, sk: string): Promise<Record<string, AttributeValue> | undefined> =>
    (await emulator.client.send(new GetItemCommand({ TableName: table, Key: { pk: { S: pk }, sk: { S: sk } }, ConsistentRead: true })))
      .Item;

  it.skipIf(skip)('reads as an empty item at its fence: only later buckets of Redis count', async () => {
    const table = await createTestTable(emulator.endpoint);
    await putTombstone(table, 'S#visitor#V1', 'M2023-05');
    const item = toStoredItem((await raw(table, 'S#visitor#V1', 'M2023-05'))!);
    expect(item).toEqual({ sk: 'M2023-05', wm: FENCE, attrs: new Map() });
    const merged = mergeItems([item], [e(FENCE, '2023-123', 'v', 2), e(FENCE + 1, '2023-123', 'v', 3)]);
    expect(Object.fromEntries(merged.get('M2023-05')!)).toEqual({ 'D123.v': 3n, 'M05.v': 3n });
  });

  it.skipIf(skip)(
    'refuses the buckets at or below its fence (taken for written); later ones are written and clear the mark and the stamp as the hook says',
    async () => {
      const table = await createTestTable(emulator.endpoint);
      // The hook, and the stamp a written item ends with.
      const variants: Array<[string, RowWriterDeps['expiresAt'], (sk: string) => string | undefined]> = [
        ['S#visitor#NOHOOK', undefined, () => undefined], // no hook: as null
        ['S#visitor#NULL', () => null, () => undefined], // no stamp: removed
        ['S#visitor#SET', (sk) => (sk === 'TOTAL' ? 1_900_000_001 : 1_900_000_000), (sk) => (sk === 'TOTAL' ? '1900000001' : '1900000000')],
        ['S#visitor#KEEP', () => undefined, () => String(TOMBSTONE_TTL)], // not known (the tenant lookup failed): left as it is
      ];
      for (const [pk, expiresAt, stamp] of variants) {
        for (const sk of ['M2023-05', 'TOTAL']) await putTombstone(table, pk, sk);
        // A stale flush: every bucket at or below the fence, one of them in parts. Refused, nothing written, no error.
        const stale = [e(FENCE, '2023-124', 'v', 2)];
        for (let p = 0; p <= MAX_ATTRS_PER_UPDATE; p++) stale.push(e(FENCE - 1, '2023-123', `pv#P${p}`, 1));
        const refused = await writeRow(deps(table, expiresAt), pk, stale);
        expect(refused).toMatchObject({ updates: 0 });
        for (const sk of ['M2023-05', 'TOTAL']) {
          expect(await raw(table, pk, sk)).toEqual({
            pk: { S: pk },
            sk: { S: sk },
            [WATERMARK_ATTR]: { N: String(FENCE) },
            [ERASED_ATTR]: { S: '2026-01-01T00:00:00.000Z' },
            [EXPIRES_ATTR]: { N: String(TOMBSTONE_TTL) },
          });
        }
        // A later flush holding a bucket of the stale one too (its counts are dropped) and a later bucket: one
        // refused UpdateItem per item, then the later bucket.
        const r = await writeRow(deps(table, expiresAt), pk, [e(FENCE, '2023-124', 'v', 2), e(FENCE + 1, '2023-124', 'v', 5)]);
        expect(r).toEqual({ updates: 2, conditionFailures: 2 });
        for (const sk of ['M2023-05', 'TOTAL']) {
          const item = (await raw(table, pk, sk))!;
          expect(item[ERASED_ATTR], `${pk} ${sk}`).toBeUndefined();
          expect(item[EXPIRES_ATTR]?.N, `${pk} ${sk}`).toBe(stamp(sk));
        }
        expect((await getItem(deps(table), pk, 'M2023-05'))!.attrs).toEqual(
          new Map([
            ['D124.v', 5n],
            ['M05.v', 5n],
          ]),
        );
        expect((await getItem(deps(table), pk, 'TOTAL'))!).toMatchObject({
          wm: FENCE + 1,
          attrs: new Map([
            ['v', 5n],
            ['Y2023.v', 5n],
          ]),
        });
      }
    },
  );

  it.skipIf(skip)(
    'a first write after the erasure costs what one to a fresh item does: a bucket in parts, and sketches riding the counts',
    async () => {
      const table = await createTestTable(emulator.endpoint);
      const pk = 'S#product#P1';
      for (const sk of ['M2023-05', 'TOTAL']) await putTombstone(table, pk, sk);
      const entries = [e(FENCE + 1, '2023-123', 'v', 1)];
      for (let p = 0; p <= MAX_ATTRS_PER_UPDATE; p++) entries.push(e(FENCE + 2, '2023-123', `pv#P${p}`, 1));
      const live = [{ dayKey: '2023-123', metric: 'uv', blob: member(1) }];
      const r = await writeRowWithSketches(deps(table), union, pk, entries, live);
      const fresh = await writeRowWithSketches(deps(await createTestTable(emulator.endpoint)), union, pk, entries, live);
      expect({ ...r, extrasWritten: r.extrasWritten?.sort() }).toEqual({ ...fresh, extrasWritten: fresh.extrasWritten?.sort() });
      expect(r).toMatchObject({ conditionFailures: 0, sketchUpdates: 0 });
      const month = (await raw(table, pk, 'M2023-05'))!;
      expect([month[ERASED_ATTR], month[EXPIRES_ATTR], month[WATERMARK_PART_ATTR]]).toEqual([undefined, undefined, undefined]);
      expect(month['D123.uv']?.B).toEqual(new Uint8Array(member(1)));
      expect((await getItem(deps(table), pk, 'TOTAL'))!.attrs).toEqual(mergeItems([], entries).get('TOTAL'));
    },
  );

  it.skipIf(skip)(
    "a stale flush's sketches are not written to a tombstone; a later flush's sketch write of its own (an overflow item) is, and clears the mark",
    async () => {
      const table = await createTestTable(emulator.endpoint);
      const pk = 'S';
      for (const sk of ['M2023-05', 'TOTAL', 'M2023-05#3']) await putTombstone(table, pk, sk);
      // A stale flush of counts and sketches: nothing written, not even the sketches.
      const stale = await writeRowWithSketches(
        deps(table),
        union,
        pk,
        [e(FENCE, '2023-123', 'v', 1)],
        [{ dayKey: '2023-123', metric: 'uv', blob: member(1) }],
      );
      expect(stale).toMatchObject({ updates: 0, sketchUpdates: 0 });
      for (const sk of ['M2023-05', 'TOTAL'])
        expect(toStoredItem((await raw(table, pk, sk))!)).toEqual({ sk, wm: FENCE, attrs: new Map() });
      // A sketch write of its own (as to an overflow item of a spilled item, which no count write of the flush
      // touched): with counts at or below the fence, or no fence, left alone; with later counts, written.
      const attrs = new Map([['D123.uv', [member(2)]]]);
      expect(await writeSketchItem(deps(table), union, pk, 'M2023-05#3', attrs, FENCE)).toBe(0);
      expect(await writeSketchItem(deps(table), union, pk, 'M2023-05#3', attrs, undefined)).toBe(0);
      expect(toStoredItem((await raw(table, pk, 'M2023-05#3'))!)).toEqual({ sk: 'M2023-05#3', wm: FENCE, attrs: new Map() });
      expect(await writeSketchItem(deps(table), union, pk, 'M2023-05#3', attrs, FENCE + 1)).toBe(1);
      const child = (await raw(table, pk, 'M2023-05#3'))!;
      expect([child[ERASED_ATTR], child[EXPIRES_ATTR], child[WATERMARK_ATTR]?.N]).toEqual([undefined, undefined, String(FENCE)]);
      expect(child['D123.uv']?.B).toEqual(new Uint8Array(member(2)));
    },
  );
});
