import { GetItemCommand, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { compileRules, defaultRules, rollup, validateEvents } from '@tally/schema';
import { createTestTable, type DynaliteHandle } from '@tally/testing';
import { useDynalite } from '@tally/testing/vitest';
import { describe, expect, it } from 'vitest';
import {
  createDynamoClient,
  createDynamoMeter,
  getItem,
  MAX_ATTRS_PER_UPDATE,
  mergeItems,
  queryItems,
  SPILL_AT_KB,
  SpilledItems,
  writeRow,
  type CountEntry,
} from './index';

let dyn: DynaliteHandle;
let client: DynamoDBClient;
const meter = createDynamoMeter();
const deps = (table: string) => ({ client, table, meter });
/** deps whose writer is killed (throws SIGKILL) right after its `crashAt`-th successful UpdateItem. */
const crashingAt = (table: string, crashAt: number) => {
  let n = 0;
  return {
    ...deps(table),
    afterUpdate: () => {
      if (++n === crashAt) throw new Error('SIGKILL');
    },
  };
};

useDynalite((d) => {
  dyn = d;
  client = createDynamoClient({ endpoint: d.endpoint, region: 'us-east-1' });
  return () => client.destroy();
});

async function item(table: string, pk: string, sk: string) {
  const out = await client.send(new GetItemCommand({ TableName: table, Key: { pk: { S: pk }, sk: { S: sk } }, ConsistentRead: true }));
  if (!out.Item) return undefined;
  return Object.fromEntries(Object.entries(out.Item).map(([k, v]) => [k, v.S ?? v.N]));
}

/** An item's size as DynamoDB counts it: names plus values (a number: about one byte per two digits, plus one). */
function itemBytes(it: Record<string, string | undefined>): number {
  let n = 0;
  for (const [k, v] of Object.entries(it))
    n += k.length + (k === 'pk' || k === 'sk' ? (v ?? '').length : Math.ceil((v ?? '').length / 2) + 1);
  return n;
}

const e = (seq: number, dayKey: string, metric: string, value: number): CountEntry => ({ seq, dayKey, metric, value: BigInt(value) });

describe('writeRow', () => {
  it('writes the article layout exactly (leap-year day 366, a +05:45 store)', async () => {
    const table = await createTestTable(dyn.endpoint);
    const rules = compileRules(defaultRules);
    const now = Date.parse('2025-01-01T06:00:00Z');
    const { events, errors } = validateEvents(
      rules,
      [
        // 2024-12-31 18:00Z is 2024-12-31 23:45 in Kathmandu: day 366 of leap year 2024.
        { type: 'view', ts: '2024-12-31T18:00:00Z', dims: { product: 'P1', visitor: 'V9' } },
        // 18:15Z is already 2025-01-01 00:00 in Kathmandu.
        { type: 'view', ts: '2024-12-31T18:15:00Z', dims: { product: 'P1' } },
        { type: 'order', ts: '2024-12-31T17:00:00Z', value: 19.99, dims: { visitor: 'V9' } },
        { type: 'order', ts: '2025-01-01T05:00:00Z', value: '5', dims: {} },
      ],
      { now, clockSkewMs: 0, latenessMs: 86_400_000 },
    );
    expect(errors).toEqual([]);
    const deltas = rollup(rules, 'KTM', 'Asia/Kathmandu', events);
    for (const [pk, fields] of deltas) {
      const entries = [...fields].map(([f, v]) => {
        const [dayKey, metric] = f.split('|') as [string, string];
        return { seq: 7, dayKey, metric, value: BigInt(v) };
      });
      await writeRow(deps(table), pk, entries);
    }
    expect(await item(table, 'KTM', 'M2024-12')).toEqual({
      pk: 'KTM',
      sk: 'M2024-12',
      wm: '7',
      'D366.v': '1',
      'M12.v': '1',
      'D366.o': '1',
      'M12.o': '1',
      'D366.r': '1999',
      'M12.r': '1999',
    });
    expect(await item(table, 'KTM', 'M2025-01')).toEqual({
      pk: 'KTM',
      sk: 'M2025-01',
      wm: '7',
      'D001.v': '1',
      'M01.v': '1',
      'D001.o': '1',
      'M01.o': '1',
      'D001.r': '500',
      'M01.r': '500',
    });
    expect(await item(table, 'KTM', 'TOTAL')).toEqual({
      pk: 'KTM',
      sk: 'TOTAL',
      wm: '7',
      v: '2',
      'Y2024.v': '1',
      'Y2025.v': '1',
      o: '2',
      'Y2024.o': '1',
      'Y2025.o': '1',
      r: '2499',
      'Y2024.r': '1999',
      'Y2025.r': '500',
    });
    expect(await item(table, 'KTM#product#P1', 'M2024-12')).toEqual({
      pk: 'KTM#product#P1',
      sk: 'M2024-12',
      wm: '7',
      'D366.v': '1',
      'M12.v': '1',
    });
    expect(await item(table, 'KTM#product#P1', 'M2025-01')).toEqual({
      pk: 'KTM#product#P1',
      sk: 'M2025-01',
      wm: '7',
      'D001.v': '1',
      'M01.v': '1',
    });
    expect(await item(table, 'KTM#product#P1', 'TOTAL')).toEqual({
      pk: 'KTM#product#P1',
      sk: 'TOTAL',
      wm: '7',
      v: '2',
      'Y2024.v': '1',
      'Y2025.v': '1',
    });
    expect(await item(table, 'KTM#visitor#V9', 'M2024-12')).toEqual({
      pk: 'KTM#visitor#V9',
      sk: 'M2024-12',
      wm: '7',
      'D366.v': '1',
      'M12.v': '1',
      'D366.pv#P1': '1',
      'M12.pv#P1': '1',
      'D366.o': '1',
      'M12.o': '1',
      'D366.r': '1999',
      'M12.r': '1999',
    });
    expect(await item(table, 'KTM#visitor#V9', 'TOTAL')).toEqual({
      pk: 'KTM#visitor#V9',
      sk: 'TOTAL',
      wm: '7',
      v: '1',
      'Y2024.v': '1',
      'pv#P1': '1',
      'Y2024.pv#P1': '1',
      o: '1',
      'Y2024.o': '1',
      r: '1999',
      'Y2024.r': '1999',
    });
    expect(await item(table, 'KTM#visitor#V9', 'M2025-01')).toBeUndefined();
  });

  it('never applies an entry twice: replays, crashes between items, and two writers at once', async () => {
    const table = await createTestTable(dyn.endpoint);
    const batch1 = [e(1, '2023-123', 'v', 2), e(2, '2023-124', 'v', 3)];
    expect(await writeRow(deps(table), 'S', batch1)).toEqual({ updates: 2, conditionFailures: 0 });
    // The same entries again (an ack lost in a crash): refused by the watermark, nothing added.
    expect(await writeRow(deps(table), 'S', batch1)).toEqual({ updates: 0, conditionFailures: 2 });
    // A crash after the month row, before TOTAL: the retry writes only TOTAL.
    const batch2 = [...batch1, e(3, '2023-124', 'v', 10)];
    await expect(writeRow(crashingAt(table, 1), 'S', batch2.slice(2))).rejects.toThrow('SIGKILL');
    expect(await writeRow(deps(table), 'S', batch2)).toEqual({ updates: 1, conditionFailures: 2 });
    // Two writers with overlapping reads of the outbox at once.
    const batch3 = [...batch2, e(4, '2023-125', 'v', 100), e(5, '2023-125', 'v', 1000)];
    await Promise.all([
      writeRow(deps(table), 'S', batch3.slice(0, 4)),
      writeRow(deps(table), 'S', batch3),
      writeRow(deps(table), 'S', batch3.slice(3)),
    ]);
    const month = await getItem(deps(table), 'S', 'M2023-05');
    const total = await getItem(deps(table), 'S', 'TOTAL');
    expect(Object.fromEntries(month!.attrs)).toEqual({ 'D123.v': 2n, 'D124.v': 13n, 'D125.v': 1100n, 'M05.v': 1115n });
    expect(month!.wm).toBe(5);
    expect(Object.fromEntries(total!.attrs)).toEqual({ v: 1115n, 'Y2023.v': 1115n });
  });

  it('splits a large write only between buckets, each part under the watermark', async () => {
    const table = await createTestTable(dyn.endpoint);
    const entries: CountEntry[] = [];
    // 60 products per bucket, each a new one: 120 month-row attributes per bucket, 600 in all (> MAX_ATTRS_PER_UPDATE).
    for (let seq = 1; seq <= 5; seq++)
      for (let p = 0; p < 60; p++) entries.push(e(seq, '2023-123', `pv#P${p % 3 === 0 ? p : `${seq}-${p}`}`, 1));
    const r = await writeRow(deps(table), 'S#visitor#V', entries);
    expect(r.updates).toBeGreaterThan(2);
    const month = await getItem(deps(table), 'S#visitor#V', 'M2023-05');
    expect(month!.attrs.get('D123.pv#P3')).toBe(5n);
    expect(month!.attrs.get('D123.pv#P2-7')).toBe(1n);
    expect(month!.attrs.get('M05.pv#P5-8')).toBe(1n);
    expect(month!.wm).toBe(5);
  });

  it('writes one bucket of 1,000 products in parts (5,000 and 20,000 run on DynamoDB Local), exactly once through crashes after any part and a second writer', async () => {
    const table = await createTestTable(dyn.endpoint);
    const pk = 'S#visitor#BOT1';
    // Bucket 1 is small; bucket 2 holds 1,000 distinct products (2,001 attributes per item); bucket 3 is small.
    const entries: CountEntry[] = [e(1, '2023-123', 'v', 1)];
    for (let p = 0; p < 1000; p++) entries.push(e(2, '2023-123', `pv#P${p}`, p % 7 === 0 ? 2 : 1));
    entries.push(e(2, '2023-123', 'v', 1000), e(3, '2023-124', 'pv#P1', 4), e(3, '2023-124', 'v', 1));
    const expected = mergeItems([], entries);
    const parts = Math.ceil(2_001 / MAX_ATTRS_PER_UPDATE);

    // Crash after the 1st, 4th and 9th successful UpdateItem of successive runs; then one run to the end, while
    // a second writer with the same outbox races it.
    for (const crashAt of [1, 4, 9]) {
      await expect(writeRow(crashingAt(table, crashAt), pk, entries)).rejects.toThrow('SIGKILL');
      // Mid-bucket, a query merging DynamoDB with the outbox still sees every count exactly once.
      const { items } = await queryItems(deps(table), pk, 'M2023-05', 'M2023-05');
      const total = await getItem(deps(table), pk, 'TOTAL');
      const merged = mergeItems(total ? [...items, total] : items, entries);
      expect(merged).toEqual(expected);
    }
    const [a, b] = await Promise.all([writeRow(deps(table), pk, entries), writeRow(deps(table), pk, entries)]);
    // Every part went in once: 1 + parts + 1 writes per item over all runs, whoever made them.
    expect(a.updates + b.updates + 1 + 4 + 9).toBe(2 * (1 + parts + 1));
    const month = await getItem(deps(table), pk, 'M2023-05');
    const total = await getItem(deps(table), pk, 'TOTAL');
    expect(month!.wm).toBe(3);
    expect(month!.wp).toBeUndefined();
    expect(month!.attrs).toEqual(expected.get('M2023-05'));
    expect(total!.attrs).toEqual(expected.get('TOTAL'));
    expect(month!.attrs.get('M05.pv#P0')).toBe(2n);
    expect(month!.attrs.get('M05.pv#P1')).toBe(5n);
    expect(total!.attrs.get('v')).toBe(1002n);
    // A replay of the whole outbox adds nothing.
    expect((await writeRow(deps(table), pk, entries)).updates).toBe(0);
    expect((await getItem(deps(table), pk, 'TOTAL'))!.attrs).toEqual(expected.get('TOTAL'));
  });

  it('keeps every item far below 400 KB: an item at SPILL_AT_KB spills into overflow items, exactly once through crashes and a second writer', async () => {
    const table = await createTestTable(dyn.endpoint);
    const pk = 'S#visitor#Huge';
    // 20 buckets of 90 new products with 110-character ids: about 1 MB in the month item and 1 MB in TOTAL.
    const entries: CountEntry[] = [];
    for (let seq = 1; seq <= 20; seq++) {
      for (let p = 0; p < 90; p++) entries.push(e(seq, '2023-123', `pv#${'x'.repeat(110)}${seq}-${p}`, 1 + (p % 3)));
      entries.push(e(seq, '2023-123', 'pv#shared', seq));
    }
    const expected = mergeItems([], entries);
    const all = async () => (await queryItems(deps(table), pk, 'M', 'TOTAL')).items;
    // Crash after the 2nd, 9th, 17th and 25th successful UpdateItem (spill marks included) of successive runs, of
    // the 69 a run without crashes makes.
    for (const crashAt of [2, 9, 17, 25]) {
      await expect(writeRow(crashingAt(table, crashAt), pk, entries)).rejects.toThrow('SIGKILL');
      expect(mergeItems(await all(), entries)).toEqual(expected);
    }
    await Promise.all([writeRow(deps(table), pk, entries), writeRow(deps(table), pk, entries)]);
    const items = await all();
    expect(mergeItems(items, [])).toEqual(expected);
    expect(mergeItems(items, entries)).toEqual(expected);
    expect((await writeRow(deps(table), pk, entries)).updates).toBe(0);
    // Both base items spilled; no item passes the bound by more than one UpdateItem's attributes.
    expect(items.filter((it) => it.spilled).map((it) => it.sk)).toEqual(expect.arrayContaining(['M2023-05', 'TOTAL']));
    expect(items.length).toBeGreaterThan(2 * 16);
    const largest = Math.max(...(await Promise.all(items.map(async (it) => itemBytes((await item(table, pk, it.sk))!)))));
    expect(largest).toBeLessThan((SPILL_AT_KB + 40) * 1024);
  });

  it('a read torn by a spill (an item read before it spilled, its overflow items after) still counts each cell once', async () => {
    const table = await createTestTable(dyn.endpoint);
    const pk = 'S#visitor#Torn';
    const entries: CountEntry[] = [];
    for (let seq = 1; seq <= 12; seq++) {
      for (let p = 0; p < 90; p++) entries.push(e(seq, '2023-123', `pv#${'x'.repeat(110)}${seq}-${p}`, 1));
    }
    const expected = mergeItems([], entries);
    const all = async () => (await queryItems(deps(table), pk, 'M', 'TOTAL')).items;
    // The first two buckets written: no item has spilled yet.
    await writeRow(
      deps(table),
      pk,
      entries.filter((x) => x.seq <= 2),
    );
    const before = await all();
    expect(before.filter((it) => it.spilled)).toEqual([]);
    // The rest written (the outbox, read before, still holds it all): the items spill into overflow items.
    await writeRow(deps(table), pk, entries);
    const overflow = (await all()).filter((it) => it.sk.includes('#'));
    expect(overflow.length).toBeGreaterThan(0);
    // A Query whose first page held the items as they were before the spill, and its later pages their overflow items.
    expect(mergeItems([...before, ...overflow], entries)).toEqual(expected);
  });

  it('remembers spilled items: a later flush of one makes no refused UpdateItem, and a stale entry costs one read, never a count', async () => {
    const pk = 'S#visitor#Crawler';
    const bucketOf = (seq: number) => [
      ...Array.from({ length: 90 }, (_, p) => e(seq, '2023-123', `pv#${'x'.repeat(110)}${seq}-${p}`, 1 + (p % 3))),
      e(seq, '2023-123', 'pv#shared', seq),
    ];
    const early = Array.from({ length: 12 }, (_, k) => bucketOf(k + 1)).flat();
    const later = [...bucketOf(13), ...bucketOf(14)];
    const spilled = new SpilledItems();
    const run = async (table: string, entries: CountEntry[], hint?: SpilledItems) => {
      const m = createDynamoMeter();
      const r = await writeRow({ client, table, meter: m, ...(hint ? { spilled: hint } : {}) }, pk, entries);
      return { ...r, reads: m.totals().requests['GetItem:ok'] ?? 0 };
    };
    const table = await createTestTable(dyn.endpoint);
    await run(table, early, spilled);
    const items = (await queryItems(deps(table), pk, 'M', 'TOTAL')).items;
    expect(
      items
        .filter((it) => it.spilled)
        .map((it) => it.sk)
        .sort(),
    ).toEqual(['M2023-05', 'TOTAL']);
    expect(spilled.has(pk, 'M2023-05') && spilled.has(pk, 'TOTAL')).toBe(true);
    // Without the hint, each spilled item first refuses an UpdateItem (charged as a write of the whole item).
    const without = await createTestTable(dyn.endpoint);
    await run(without, early);
    expect(await run(without, later)).toMatchObject({ conditionFailures: 2, reads: 2 });
    // With it: one read of each spilled item's position, no refusal, and the same counts.
    expect(await run(table, later, spilled)).toMatchObject({ conditionFailures: 0, reads: 2 });
    const both = mergeItems([], [...early, ...later]);
    expect(mergeItems((await queryItems(deps(table), pk, 'M', 'TOTAL')).items, [])).toEqual(both);
    expect(mergeItems((await queryItems(deps(without), pk, 'M', 'TOTAL')).items, [])).toEqual(both);
    // A stale hint (the row deleted: a fresh table) is dropped after one read; the counts are the plain writer's.
    const fresh = await createTestTable(dyn.endpoint);
    const r = await run(fresh, later, spilled);
    expect(r).toMatchObject({ conditionFailures: 0, reads: 2 });
    expect(spilled.has(pk, 'M2023-05') || spilled.has(pk, 'TOTAL')).toBe(false);
    expect(mergeItems((await queryItems(deps(fresh), pk, 'M', 'TOTAL')).items, [])).toEqual(mergeItems([], later));
  });

  it('keeps at most max spilled items, the oldest forgotten first', () => {
    const hint = new SpilledItems(2);
    hint.add('a', 'M');
    hint.add('b', 'M');
    hint.add('a', 'M');
    hint.add('c', 'M');
    expect([hint.has('a', 'M'), hint.has('b', 'M'), hint.has('c', 'M')]).toEqual([true, false, true]);
  });
});

describe('reading and merging', () => {
  it('adds only entries above each item watermark', async () => {
    const table = await createTestTable(dyn.endpoint);
    await writeRow(deps(table), 'S', [e(1, '2023-123', 'v', 2), e(2, '2023-124', 'v', 3)]);
    const { items, requests } = await queryItems(deps(table), 'S', 'M2023-05', 'M2023-05');
    expect(requests).toBe(1);
    const total = await getItem(deps(table), 'S', 'TOTAL');
    const merged = mergeItems([...items, total!], [e(2, '2023-124', 'v', 3), e(3, '2023-125', 'v', 7), e(3, '2023-120', 'v', 1)]);
    expect(Object.fromEntries(merged.get('M2023-05')!)).toEqual({ 'D123.v': 2n, 'D124.v': 3n, 'D125.v': 7n, 'M05.v': 12n });
    expect(Object.fromEntries(merged.get('M2023-04')!)).toEqual({ 'D120.v': 1n, 'M04.v': 1n });
    expect(Object.fromEntries(merged.get('TOTAL')!)).toEqual({ v: 13n, 'Y2023.v': 13n });
  });
});
