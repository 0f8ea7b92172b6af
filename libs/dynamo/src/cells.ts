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
    let day = dayCache.get(entry.dayKey);
    if (!day) dayCache.set(entry.dayKey, (day = parseDayKey(entry.dayKey)));
    const cells = cellsOfDay(day, entry.metric);
    for (let i = 0; i < cells.length; i += 2) {
      const sk = cells[i]!.sk;
      let list = out.get(sk);
      if (!list) out.set(sk, (list = []));
      list.push({ entry, attrs: [cells[i]!.attr, cells[i + 1]!.attr] });
    }
  }
  return out;
}
