import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { createTestTable, dynamoDbLocalUnavailable, startDynamoDbLocal, type DynamoDbLocalHandle } from '@tally/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDynamoClient, createDynamoMeter, getItem, MAX_ATTRS_PER_UPDATE, mergeItems, queryItems, writeRow, type CountEntry } from './index';

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

const e = (seq: number, dayKey: string, metric: string, value: bigint | number): CountEntry => ({ seq, dayKey, metric, value: BigInt(value) });

describe.skipIf(unavailable)('row writer on DynamoDB Local', () => {
  it('writes a visitor with 5,000 distinct products in one bucket exactly, in parts under the 4 KB expression limit', async () => {
    const table = await createTestTable(local.endpoint);
    const meter = createDynamoMeter();
    const pk = 'DEMO#visitor#BOT1';
    const entries: CountEntry[] = [e(1, '2026-336', 'v', 1)];
    for (let p = 0; p < 5000; p++) entries.push(e(2, '2026-336', `pv#P${p}`, 1 + (p % 3)));
    entries.push(e(2, '2026-336', 'v', 5000));
    const r = await writeRow({ client, table, meter }, pk, entries);
    const parts = Math.ceil(10_001 / MAX_ATTRS_PER_UPDATE);
    expect(r).toEqual({ updates: 2 * (1 + parts), conditionFailures: 0 });
    const expected = mergeItems([], entries);
    const month = await getItem({ client, table, meter }, pk, 'M2026-12');
    const total = await getItem({ client, table, meter }, pk, 'TOTAL');
    expect(month!.attrs).toEqual(expected.get('M2026-12'));
    expect(total!.attrs).toEqual(expected.get('TOTAL'));
    expect([month!.wm, month!.wp, total!.wm, total!.wp]).toEqual([2, undefined, 2, undefined]);
    // The write cost of such a visitor (each part is charged per KB of the growing item), for the design notes.
    console.info(`5,000-product visitor, one bucket: ${r.updates} UpdateItems, ${meter.totals().writeUnits} write units`);
    expect(meter.totals().writeUnits).toBeGreaterThan(0);
    // A replay adds nothing; the merge of the written items with the same entries adds nothing either.
    expect((await writeRow({ client, table, meter }, pk, entries)).updates).toBe(0);
    const { items } = await queryItems({ client, table, meter }, pk, 'M2026-12', 'M2026-12');
    expect(mergeItems([...items, total!], entries)).toEqual(expected);
  }, 600_000);

  it('takes a count of 38 significant digits (DynamoDB\'s precision) exactly, and refuses the write that would pass it', async () => {
    const table = await createTestTable(local.endpoint);
    const meter = createDynamoMeter();
    const max = 10n ** 38n - 1n;
    await writeRow({ client, table, meter }, 'S', [e(1, '2026-336', 'r', max - 300_000_000_000_000_000_00n), e(2, '2026-336', 'r', 300_000_000_000_000_000_00n)]);
    expect((await getItem({ client, table, meter }, 'S', 'TOTAL'))!.attrs.get('r')).toBe(max);
    // 10^38 + 1 needs 39 significant digits (10^38 itself has one, and DynamoDB takes it).
    await expect(writeRow({ client, table, meter }, 'S', [e(3, '2026-336', 'r', 2)])).rejects.toMatchObject({ code: 'TALLY_ERR_DYNAMO_PERMANENT' });
    expect((await getItem({ client, table, meter }, 'S', 'TOTAL'))!.attrs.get('r')).toBe(max);
  });
});
