import { cellsOfDay, parseDayKey } from '@tally/key-layout';

/** A count not yet in DynamoDB (an outbox or bucket entry): bucket seq, store-local day key, attribute metric. */
export interface CountEntry {
  seq: number;
  dayKey: string;
  metric: string;
  value: bigint;
}

/**
 * Groups entries by the DynamoDB item (sk) they land in: each entry adds to two attributes of its month row
 * (`D123.m`, `M05.m`) and two of the TOTAL row (`m`, `Y2023.m`).
 */
export function entriesByItem<E extends CountEntry>(entries: readonly E[]): Map<string, Array<{ entry: E; attrs: string[] }>> {
  const out = new Map<string, Array<{ entry: E; attrs: string[] }>>();
  const dayCache = new Map<string, ReturnType<typeof parseDayKey>>();
  for (const entry of entries) {
    const day = entryOf(dayCache, entry.dayKey, () => parseDayKey(entry.dayKey));
    const cells = cellsOfDay(day, entry.metric);
    for (let i = 0; i < cells.length; i += 2)
      entryOf(out, cells[i]!.sk, () => []).push({ entry, attrs: [cells[i]!.attr, cells[i + 1]!.attr] });
  }
  return out;
}

/** The value of `key` in `map`, set to `make()` first when missing. */
export function entryOf<K, V>(map: Map<K, V>, key: K, make: () => V): V {
  let value = map.get(key);
  if (value === undefined) map.set(key, (value = make()));
  return value;
}

/** UpdateExpression strings are limited to 4 KB; stay well below with this many attributes per call. */
export const MAX_ATTRS_PER_UPDATE = 180;

/**
 * The part of each attribute when one bucket adds more attributes to one item than one UpdateItem takes: the
 * sorted names cut every MAX_ATTRS_PER_UPDATE. A function of the attribute set alone, so the writer and a reader
 * that finds an item's part watermark agree on which attributes each part holds.
 */
export function partsOfBucket(attrs: Iterable<string>): { count: number; partOf: Map<string, number> } {
  const sorted = [...new Set(attrs)].sort();
  const partOf = new Map<string, number>();
  sorted.forEach((a, i) => partOf.set(a, Math.floor(i / MAX_ATTRS_PER_UPDATE)));
  return { count: Math.max(1, Math.ceil(sorted.length / MAX_ATTRS_PER_UPDATE)), partOf };
}
