import { GetItemCommand, UpdateItemCommand, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { WATERMARK_ATTR } from '@tally/key-layout';
import { entriesByItem, type CountEntry } from './cells';
import { PermanentWriteError, RetryableWriteError } from './errors';
import { classifyError, type DynamoMeter } from './meter';

export interface RowWriterDeps {
  client: DynamoDBClient;
  table: string;
  meter: DynamoMeter;
  /** Test hook: called after each successful UpdateItem (crash-point tests). */
  afterUpdate?: (pk: string, sk: string) => void | Promise<void>;
}

export interface RowWriteResult {
  /** UpdateItem calls that succeeded. */
  updates: number;
  /** UpdateItem calls refused by the watermark condition (entries already applied by someone else). */
  conditionFailures: number;
}

/** UpdateExpression strings are limited to 4 KB; stay well below with this many attributes per call. */
export const MAX_ATTRS_PER_UPDATE = 180;

/**
 * Applies a row's outbox entries to DynamoDB exactly once: per item (month row, TOTAL) one UpdateItem that
 * ADDs the summed deltas and sets the watermark `wm` to the highest bucket seq, under the condition
 * `attribute_not_exists(wm) OR wm < lowest seq`. When the condition fails the entries at or below the
 * item's current watermark are already in it (applied by a crashed run or another writer): they are dropped
 * and the rest is written. Entries of one bucket are never split across calls, so the set applied to an item
 * is always exactly the entries with seq <= wm. No transactions.
 *
 * Throws RetryableWriteError (throttling, 5xx, unreachable) or PermanentWriteError (validation, item too
 * large); items already written stay written, and a retry skips them through the watermark.
 */
export async function writeRow(deps: RowWriterDeps, pk: string, entries: readonly CountEntry[]): Promise<RowWriteResult> {
  const result: RowWriteResult = { updates: 0, conditionFailures: 0 };
  for (const [sk, list] of entriesByItem(entries)) {
    await writeItem(deps, pk, sk, list, result);
  }
  return result;
}

type ItemEntry = { entry: CountEntry; attrs: string[] };

async function writeItem(deps: RowWriterDeps, pk: string, sk: string, all: ItemEntry[], result: RowWriteResult): Promise<void> {
  let pending = [...all].sort((a, b) => a.entry.seq - b.entry.seq);
  while (pending.length > 0) {
    const chunk = takeWholeBuckets(pending);
    const lo = chunk[0]!.entry.seq;
    const hi = chunk[chunk.length - 1]!.entry.seq;
    const sums = new Map<string, bigint>();
    for (const { entry, attrs } of chunk) for (const a of attrs) sums.set(a, (sums.get(a) ?? 0n) + entry.value);

    const names: Record<string, string> = { '#wm': WATERMARK_ATTR };
    const values: Record<string, { N: string }> = { ':lo': { N: String(lo) }, ':hi': { N: String(hi) } };
    const adds: string[] = [];
    let i = 0;
    for (const [attr, v] of sums) {
      names[`#a${i}`] = attr;
      values[`:v${i}`] = { N: v.toString() };
      adds.push(`#a${i} :v${i}`);
      i++;
    }
    const started = performance.now();
    let written = false;
    try {
      const out = await deps.client.send(
        new UpdateItemCommand({
          TableName: deps.table,
          Key: { pk: { S: pk }, sk: { S: sk } },
          UpdateExpression: `SET #wm = :hi ADD ${adds.join(', ')}`,
          ConditionExpression: 'attribute_not_exists(#wm) OR #wm < :lo',
          ExpressionAttributeNames: names,
          ExpressionAttributeValues: values,
          ReturnConsumedCapacity: 'TOTAL',
        }),
      );
      deps.meter.observe('UpdateItem', 'ok', (performance.now() - started) / 1000, out.ConsumedCapacity);
      result.updates++;
      written = true;
      pending = pending.slice(chunk.length);
    } catch (err) {
      const outcome = classifyError(err);
      deps.meter.observe('UpdateItem', outcome, (performance.now() - started) / 1000);
      if (outcome !== 'condition_failed') throw wrap(err, outcome, pk, sk);
      result.conditionFailures++;
      const wm = await readWatermark(deps, pk, sk);
      pending = pending.filter((p) => p.entry.seq > wm);
    }
    if (written) await deps.afterUpdate?.(pk, sk);
  }
}

/** The longest prefix (by bucket) that fits one UpdateItem; a single bucket is never split. */
function takeWholeBuckets(sorted: ItemEntry[]): ItemEntry[] {
  const attrs = new Set<string>();
  let end = 0;
  while (end < sorted.length) {
    const seq = sorted[end]!.entry.seq;
    let j = end;
    const add = new Set<string>();
    while (j < sorted.length && sorted[j]!.entry.seq === seq) {
      for (const a of sorted[j]!.attrs) if (!attrs.has(a)) add.add(a);
      j++;
    }
    if (end > 0 && attrs.size + add.size > MAX_ATTRS_PER_UPDATE) break;
    for (const a of add) attrs.add(a);
    end = j;
  }
  return sorted.slice(0, end);
}

async function readWatermark(deps: RowWriterDeps, pk: string, sk: string): Promise<number> {
  const started = performance.now();
  try {
    const out = await deps.client.send(
      new GetItemCommand({
        TableName: deps.table,
        Key: { pk: { S: pk }, sk: { S: sk } },
        ConsistentRead: true,
        ProjectionExpression: '#wm',
        ExpressionAttributeNames: { '#wm': WATERMARK_ATTR },
        ReturnConsumedCapacity: 'TOTAL',
      }),
    );
    deps.meter.observe('GetItem', 'ok', (performance.now() - started) / 1000, out.ConsumedCapacity);
    const wm = out.Item?.[WATERMARK_ATTR]?.N;
    return wm === undefined ? -1 : Number(wm);
  } catch (err) {
    const outcome = classifyError(err);
    deps.meter.observe('GetItem', outcome, (performance.now() - started) / 1000);
    throw wrap(err, outcome, pk, sk);
  }
}

function wrap(err: unknown, outcome: string, pk: string, sk: string): Error {
  const msg = `${(err as Error)?.name ?? 'Error'}: ${(err as Error)?.message ?? String(err)} (item ${pk} / ${sk})`;
  if (outcome === 'throttled' || outcome === 'unavailable' || outcome === 'error') return new RetryableWriteError(msg, { cause: err });
  return new PermanentWriteError(msg, { cause: err });
}
