import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { createTestTable, dynamoDbLocalUnavailable, startDynamoDbLocal, type DynamoDbLocalHandle } from '@tally/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createDynamoClient,
  createDynamoMeter,
  getItem,
  MAX_ATTRS_PER_UPDATE,
  mergeItems,
  queryItems,
  writeRow,
  type CountEntry,
} from './index';

// AWS's DynamoDB Local enforces the limits dynalite does not (expression size, item size): the writer is proven
// against it. It needs java; without it these tests are skipped with the reason.
const unavailable = dynamoDbLocalUnavailable();
if (unavailable) console.warn(unavailable);

let local: DynamoDbLocalHandle;
let client: DynamoDBClient;

beforeAll(async () => {
  if (unavailable) return;
  local = await startDynamoDbLocal();
  client = createDynamoClient({ endpoint: local.endpoint, region: 'us-east-1' });
}, 600_000);
afterAll(async () => {
  client?.destroy();
  await local?.stop();
});

const e = (seq: number, dayKey: string, metric: string, value: bigint | number): CountEntry => ({
  seq,
  dayKey,
  metric,
  value: BigInt(value),
});

describe.skipIf(unavailable)('row writer on DynamoDB Local', () => {
  it('writes a visitor with 5,000 distinct products in one bucket exactly, in parts under the 4 KB expression limit, spilling into overflow items', async () => {
    const table = await createTestTable(local.endpoint);
    const meter = createDynamoMeter();
    const pk = 'DEMO#visitor#BOT1';
    const entries: CountEntry[] = [e(1, '2026-336', 'v', 1)];
    for (let p = 0; p < 5000; p++) entries.push(e(2, '2026-336', `pv#P${p}`, 1 + (p % 3)));
    entries.push(e(2, '2026-336', 'v', 5000));
    const r = await writeRow({ client, table, meter }, pk, entries);
    // Each item (month, TOTAL) goes in parts of MAX_ATTRS_PER_UPDATE until it reaches SPILL_AT_KB; it is then
    // marked spilled and the rest of the bucket goes to its overflow items, in parts of their own.
    const parts = Math.ceil(10_001 / MAX_ATTRS_PER_UPDATE);
    expect(r.conditionFailures).toBe(0);
    expect(r.updates).toBeGreaterThan(2 * (1 + parts));
    const expected = mergeItems([], entries);
    const { items } = await queryItems({ client, table, meter }, pk, 'M', 'TOTAL');
    expect(mergeItems(items, [])).toEqual(expected);
    const month = items.find((it) => it.sk === 'M2026-12')!;
    const total = items.find((it) => it.sk === 'TOTAL')!;
    expect([month.spilled, total.spilled]).toEqual([true, true]);
    expect(items.filter((it) => it.sk.startsWith('M2026-12#')).every((it) => it.wm === 2 && it.wp === undefined)).toBe(true);
    // The write cost of such a visitor (each part is charged per KB of its item), for the design notes.
    console.info(
      `5,000-product visitor, one bucket: ${r.updates} UpdateItems, ${meter.totals().writeUnits} write units, ${items.length} items`,
    );
    expect(meter.totals().writeUnits).toBeGreaterThan(0);
    // A replay adds nothing; the merge of the written items with the same entries adds nothing either.
    expect((await writeRow({ client, table, meter }, pk, entries)).updates).toBe(0);
    expect(mergeItems(items, entries)).toEqual(expected);
  }, 600_000);

  it("takes a count of 38 significant digits (DynamoDB's precision) exactly, and refuses the write that would pass it", async () => {
    const table = await createTestTable(local.endpoint);
    const meter = createDynamoMeter();
    const max = 10n ** 38n - 1n;
    await writeRow({ client, table, meter }, 'S', [
      e(1, '2026-336', 'r', max - 300_000_000_000_000_000_00n),
      e(2, '2026-336', 'r', 300_000_000_000_000_000_00n),
    ]);
    expect((await getItem({ client, table, meter }, 'S', 'TOTAL'))!.attrs.get('r')).toBe(max);
    // 10^38 + 1 needs 39 significant digits (10^38 itself has one, and DynamoDB takes it).
    await expect(writeRow({ client, table, meter }, 'S', [e(3, '2026-336', 'r', 2)])).rejects.toMatchObject({
      code: 'TALLY_ERR_DYNAMO_PERMANENT',
    });
    expect((await getItem({ client, table, meter }, 'S', 'TOTAL'))!.attrs.get('r')).toBe(max);
  });
});
