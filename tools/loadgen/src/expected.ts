import { paginateScan, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import {
  baseSk,
  cellsOfDay,
  ERASED_ATTR,
  EXPIRES_ATTR,
  parseDayKey,
  SKETCH_VERSION_ATTR,
  SPILLED_ATTR,
  WATERMARK_ATTR,
  WATERMARK_PART_ATTR,
} from '@tally/key-layout';
import { rollup, rollupDistinct, validateEvents, type CompiledRules, type EventInput, type NormalizedEvent } from '@tally/schema';

/** pk -> sk -> attribute -> exact integer value: what the counter rows of the table hold (or must hold). */
export type CounterTable = Map<string, Map<string, Map<string, bigint>>>;

export interface StoreEvents {
  store: string;
  events: readonly EventInput[];
}

/** The item (pk, sk) of a table, created empty when missing. */
function itemOf<V>(table: Map<string, Map<string, Map<string, V>>>, pk: string, sk: string): Map<string, V> {
  const row = table.get(pk) ?? table.set(pk, new Map()).get(pk)!;
  return row.get(sk) ?? row.set(sk, new Map()).get(sk)!;
}

function addCount(table: CounterTable, pk: string, sk: string, attr: string, delta: bigint): void {
  const item = itemOf(table, pk, sk);
  item.set(attr, (item.get(attr) ?? 0n) + delta);
}

/**
 * Each batch rolled up by `roll` in its store's time zone (default UTC), each `<day>|<attr>` field of the result
 * spread over its four cells (key-layout cellsOfDay: D<doy> and M<mm> of the month row, total and Y<yyyy> of TOTAL).
 */
function eachCell<V>(
  batches: Iterable<StoreEvents>,
  rules: CompiledRules,
  zones: Readonly<Record<string, string>>,
  roll: (store: string, zone: string, events: NormalizedEvent[], into: Map<string, Map<string, V>>) => void,
  add: (pk: string, sk: string, attr: string, value: V) => void,
): void {
  const fields = new Map<string, Map<string, V>>();
  for (const b of batches) {
    fields.clear();
    // Normalized as the edge does (ts in epoch ms, value as its decimal text, page paths as keys); no limit on time.
    const { events } = validateEvents(rules, [...b.events], { now: 0, clockSkewMs: Infinity, latenessMs: Infinity });
    roll(b.store, zones[b.store] ?? 'UTC', events, fields);
    for (const [pk, row] of fields) {
      for (const [field, value] of row) {
        const bar = field.indexOf('|');
        for (const cell of cellsOfDay(parseDayKey(field.slice(0, bar)), field.slice(bar + 1))) add(pk, cell.sk, cell.attr, value);
      }
    }
  }
}

/**
 * The exact DynamoDB attributes that `events` (accepted ones only) must end up as once everything is written:
 * each event rolled up by the rules in its store's time zone (libs/schema rollup), each day count spread over its
 * four cells. `zones` maps store -> IANA zone (default UTC).
 */
export function expectedCounts(
  batches: Iterable<StoreEvents>,
  rules: CompiledRules,
  zones: Readonly<Record<string, string>>,
): CounterTable {
  const into: CounterTable = new Map();
  eachCell<number | bigint>(
    batches,
    rules,
    zones,
    (store, zone, events, deltas) => rollup(rules, store, zone, events, deltas),
    (pk, sk, attr, delta) => addCount(into, pk, sk, attr, BigInt(delta)),
  );
  return into;
}

/** pk -> sk -> attribute -> the members (8-byte sketch members) the cell must hold: what a run without faults writes. */
export type DistinctTable = Map<string, Map<string, Map<string, Set<string>>>>;

/** The members of every sketch cell (day, month, year, all time) of the accepted events, by the rules' `distinct`. */
export function expectedDistinct(
  batches: Iterable<StoreEvents>,
  rules: CompiledRules,
  zones: Readonly<Record<string, string>>,
): DistinctTable {
  const out: DistinctTable = new Map();
  eachCell<Set<string>>(
    batches,
    rules,
    zones,
    (store, zone, events, adds) => rollupDistinct(rules, store, zone, events, adds),
    (pk, sk, attr, members) => {
      const item = itemOf(out, pk, sk);
      const cell = item.get(attr) ?? item.set(attr, new Set()).get(attr)!;
      for (const m of members) cell.add(m);
    },
  );
  return out;
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

const NOT_COUNTERS = new Set([
  'pk',
  'sk',
  WATERMARK_ATTR,
  WATERMARK_PART_ATTR,
  SPILLED_ATTR,
  EXPIRES_ATTR,
  SKETCH_VERSION_ATTR,
  ERASED_ATTR,
]);

/**
 * Every counter item of the table (a full Scan; tenant and key items, whose pk starts with `_`, are skipped),
 * with the attributes besides pk, sk and the watermark ones; an overflow item's attributes count on its base item.
 */
export async function scanCounters(client: DynamoDBClient, table: string): Promise<ScannedTable> {
  const out: ScannedTable = { counters: new Map(), withoutWatermark: [], foreign: [], sketches: 0, items: 0 };
  for await (const page of paginateScan({ client }, { TableName: table, ConsistentRead: true })) {
    for (const item of page.Items ?? []) {
      const pk = item['pk']?.S ?? '';
      const sk = item['sk']?.S ?? '';
      if (pk.startsWith('_')) continue;
      out.items++;
      if (item[WATERMARK_ATTR]?.N === undefined) out.withoutWatermark.push(`${pk} / ${sk}`);
      for (const [name, v] of Object.entries(item)) {
        if (NOT_COUNTERS.has(name)) continue;
        if (v.B !== undefined) out.sketches++;
        else if (v.N === undefined) out.foreign.push(`${pk} / ${sk} / ${name}`);
        else addCount(out.counters, pk, baseSk(sk), name, BigInt(v.N));
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
