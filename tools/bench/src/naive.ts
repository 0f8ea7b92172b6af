import { UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { createDynamoClient, createDynamoMeter, type CountEntry, type RowWriterDeps } from '@tally/dynamo';
import { monthSk, parseDayKey, TOTAL_SK } from '@tally/key-layout';
import { rollup, type CompiledRules, type NormalizedEvent } from '@tally/schema';

/** The naive designs Tally is compared with (write-cost, ingest-e2e): DynamoDB written directly, without Redis in front. */
export type Writer = (deps: RowWriterDeps, pk: string, entries: readonly CountEntry[]) => Promise<unknown>;

/** The article's first layout: three rows per entity — day row `D2023-123`, month row `M2023-05`, TOTAL. */
export const threeRowWriter: Writer = async (deps, pk, entries) => {
  const rows = new Map<string, Map<string, bigint>>();
  for (const e of entries) {
    const d = parseDayKey(e.dayKey);
    for (const sk of [`D${e.dayKey}`, monthSk(d.year, d.month), TOTAL_SK]) {
      const r = rows.get(sk) ?? rows.set(sk, new Map()).get(sk)!;
      r.set(e.metric, (r.get(e.metric) ?? 0n) + e.value);
    }
  }
  for (const [sk, attrs] of rows) await addItem(deps, pk, sk, attrs);
};

/**
 * One UpdateItem adding `attrs` to the item pk / sk, counted by the meter as libs/dynamo counts its own writes. It
 * sends the SDK command itself rather than through a libs/dynamo helper: `--baseline` runs this file against an
 * older commit's libraries (write-cost), so it uses only what every such commit exports (the meter and its client).
 */
async function addItem(deps: RowWriterDeps, pk: string, sk: string, attrs: Map<string, bigint>) {
  const names = [...attrs.keys()].map((a, i) => [`#a${i}`, a]);
  const t0 = performance.now();
  const out = await deps.client.send(
    new UpdateItemCommand({
      TableName: deps.table,
      Key: { pk: { S: pk }, sk: { S: sk } },
      UpdateExpression: `ADD ${names.map(([n], i) => `${n} :v${i}`).join(', ')}`,
      ExpressionAttributeNames: Object.fromEntries(names),
      ExpressionAttributeValues: Object.fromEntries([...attrs.values()].map((v, i) => [`:v${i}`, { N: v.toString() }])),
      ReturnConsumedCapacity: 'TOTAL',
    }),
  );
  deps.meter.observe('UpdateItem', 'ok', (performance.now() - t0) / 1000, out.ConsumedCapacity);
}

/** The naive design's write of one event: one UpdateItem per counter per row (day, month, total), as it arrives. */
export async function writeEventNaive(
  deps: RowWriterDeps,
  rules: CompiledRules,
  store: string,
  timeZone: string,
  event: NormalizedEvent,
): Promise<void> {
  for (const [pk, fields] of rollup(rules, store, timeZone, [event])) {
    for (const [f, v] of fields) {
      const [dayKey, metric] = [f.slice(0, f.indexOf('|')), f.slice(f.indexOf('|') + 1)];
      await threeRowWriter(deps, pk, [{ seq: 0, dayKey, metric, value: BigInt(v) }]);
    }
  }
}

/**
 * Events/s the naive design sustains: `concurrency` writers take events one by one and write each the naive
 * way against `endpoint` for `durationMs` (events in flight at the end are finished and counted).
 */
export async function measureNaiveThroughput(opts: {
  endpoint: string;
  table: string;
  rules: CompiledRules;
  events: ReadonlyArray<{ store: string; timeZone: string; event: NormalizedEvent }>;
  durationMs: number;
  concurrency: number;
}) {
  const client = createDynamoClient({ endpoint: opts.endpoint, region: 'us-east-1' });
  const deps = { client, table: opts.table, meter: createDynamoMeter() };
  let [next, events] = [0, 0];
  const started = performance.now();
  const writer = async () => {
    for (; performance.now() < started + opts.durationMs; events++) {
      const e = opts.events[next++ % opts.events.length]!;
      await writeEventNaive(deps, opts.rules, e.store, e.timeZone, e.event);
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency }, writer)).finally(() => client.destroy());
  const seconds = (performance.now() - started) / 1000;
  const { requests, writeUnits } = deps.meter.totals();
  const updateItems = requests['UpdateItem:ok'] ?? 0;
  const [eventsPerSecond, updateItemsPerSecond] = [events / seconds, updateItems / seconds];
  return { events, seconds, eventsPerSecond, updateItems, updateItemsPerSecond, writeUnits, concurrency: opts.concurrency };
}
