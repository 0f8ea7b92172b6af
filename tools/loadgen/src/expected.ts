import { paginateScan, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { baseSk, cellsOfDay, ERASED_ATTR, parseDayKey, RESERVED_ATTRS, WATERMARK_ATTR } from '@tally/key-layout';
import { rollup, rollupDistinct, validateEvents, type CompiledRules, type EventInput, type NormalizedEvent } from '@tally/schema';

type Table<V> = Map<string, Map<string, Map<string, V>>>;
/** pk -> sk -> attribute -> exact integer value: what the counter rows of the table hold (or must hold). */
export type CounterTable = Table<bigint>;
/** pk -> sk -> attribute -> the members (8-byte sketch members) the cell must hold: what a run without faults writes. */
export type DistinctTable = Table<Set<string>>;
/** Store -> IANA time zone (default UTC). */
type Zones = Readonly<Record<string, string>>;

export interface StoreEvents {
  store: string;
  events: readonly EventInput[];
}

/** The item (pk, sk) of a table, created empty when missing. */
function itemOf<V>(table: Table<V>, pk: string, sk: string): Map<string, V> {
  const row = table.get(pk) ?? table.set(pk, new Map()).get(pk)!;
  return row.get(sk) ?? row.set(sk, new Map()).get(sk)!;
}

const addCount = (item: Map<string, bigint>, attr: string, delta: bigint) => void item.set(attr, (item.get(attr) ?? 0n) + delta);

/** Each batch rolled up by `roll` in its store's zone (default UTC), each `<day>|<attr>` field added to its four cells (cellsOfDay). */
function eachCell<V, C>(
  batches: Iterable<StoreEvents>,
  rules: CompiledRules,
  zones: Zones,
  roll: (rules: CompiledRules, store: string, zone: string, events: NormalizedEvent[]) => Map<string, Map<string, V>>,
  add: (item: Map<string, C>, attr: string, value: V) => void,
): Table<C> {
  const table: Table<C> = new Map();
  for (const b of batches) {
    // Normalized as the edge does (ts in epoch ms, value as its decimal text, page paths as keys); no limit on time.
    const { events } = validateEvents(rules, [...b.events], { now: 0, clockSkewMs: Infinity, latenessMs: Infinity });
    for (const [pk, row] of roll(rules, b.store, zones[b.store] ?? 'UTC', events)) {
      for (const [field, value] of row) {
        const bar = field.indexOf('|');
        for (const cell of cellsOfDay(parseDayKey(field.slice(0, bar)), field.slice(bar + 1)))
          add(itemOf(table, pk, cell.sk), cell.attr, value);
      }
    }
  }
  return table;
}

/** The exact DynamoDB attributes the accepted events must end up as once everything is written (libs/schema rollup). */
export function expectedCounts(batches: Iterable<StoreEvents>, rules: CompiledRules, zones: Zones): CounterTable {
  return eachCell(batches, rules, zones, rollup, (item, attr, delta) => addCount(item, attr, BigInt(delta)));
}

/** The members of every sketch cell (day, month, year, all time) of the accepted events, by the rules' `distinct`. */
export function expectedDistinct(batches: Iterable<StoreEvents>, rules: CompiledRules, zones: Zones): DistinctTable {
  return eachCell(batches, rules, zones, rollupDistinct, (item, attr, members: Set<string>) => {
    const cell = item.get(attr) ?? item.set(attr, new Set()).get(attr)!;
    for (const m of members) cell.add(m);
  });
}

export interface ScannedTable {
  counters: CounterTable;
  /** Counter items (pk, sk) without a watermark: the writer always sets one. */
  withoutWatermark: string[];
  /** Attributes that are neither numbers, sketches nor the watermarks (pk `pk/sk/attr`). */
  foreign: string[];
  /** Distinct-count sketches (binary attributes of store and product rows; compared through the query API). */
  sketches: number;
  items: number;
}

/** Every counter item of the table (a full Scan, without the `_` tenant and key items); an overflow item counts on its base item. */
export async function scanCounters(client: DynamoDBClient, table: string): Promise<ScannedTable> {
  const out: ScannedTable = { counters: new Map(), withoutWatermark: [], foreign: [], sketches: 0, items: 0 };
  for await (const page of paginateScan({ client }, { TableName: table, ConsistentRead: true })) {
    for (const item of page.Items ?? []) {
      const [pk, sk] = [item['pk']?.S ?? '', item['sk']?.S ?? ''];
      if (pk.startsWith('_')) continue;
      out.items++;
      if (item[WATERMARK_ATTR]?.N === undefined) out.withoutWatermark.push(`${pk} / ${sk}`);
      for (const [name, v] of Object.entries(item)) {
        if (RESERVED_ATTRS.has(name) || name === ERASED_ATTR) continue;
        if (v.B !== undefined) out.sketches++;
        else if (v.N === undefined) out.foreign.push(`${pk} / ${sk} / ${name}`);
        else addCount(itemOf(out.counters, pk, baseSk(sk)), name, BigInt(v.N));
      }
    }
  }
  return out;
}

export interface CountsDiff {
  /** (pk, sk, attribute) cells that differ: missing, extra or another value. */
  mismatches: number;
  /** Cells compared (the union of both sides). */
  cells: number;
  /** The first few differences, one line each. */
  samples: string[];
}

/** Compares two counter tables cell by cell, both ways; `problems` found elsewhere count as mismatches too. */
export function diffCounts(expected: CounterTable, actual: CounterTable, maxSamples = 20, problems: readonly string[] = []): CountsDiff {
  const diff: CountsDiff = { mismatches: 0, cells: 0, samples: [] };
  const note = (line: string) => {
    diff.mismatches++;
    if (diff.samples.length < maxSamples) diff.samples.push(line);
  };
  const keys = (a?: Map<string, unknown>, b?: Map<string, unknown>) => [...new Set([...(a?.keys() ?? []), ...(b?.keys() ?? [])])].sort();
  for (const pk of keys(expected, actual)) {
    const [e, a] = [expected.get(pk), actual.get(pk)];
    for (const sk of keys(e, a)) {
      const [ei, ai] = [e?.get(sk), a?.get(sk)];
      for (const attr of keys(ei, ai)) {
        diff.cells++;
        const [ev, av] = [ei?.get(attr), ai?.get(attr)];
        if (ev === av) continue;
        if (av === undefined) note(`missing ${pk} / ${sk} / ${attr}: expected ${ev}`);
        else if (ev === undefined) note(`extra ${pk} / ${sk} / ${attr} = ${av}`);
        else note(`wrong ${pk} / ${sk} / ${attr}: expected ${ev}, got ${av} (${av > ev ? '+' : ''}${av - ev})`);
      }
    }
  }
  for (const line of problems) note(line);
  return diff;
}
