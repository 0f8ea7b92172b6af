import type { LiveSketch, SketchStore } from '@tally/buckets';
import { fromStoredSketch, storedSketchesOf, type StoredItem } from '@tally/dynamo';
import { dayKey, TOTAL_SK, totalAttr } from '@tally/key-layout';
import type { CompiledRules } from '@tally/schema';
import type { Cell } from './cover';
import { QueryError } from './errors';
import type { QueryRange } from './ranges';

/**
 * Distinct counts (UniqueVisitors) in queries: a count is the size of the union of the sketches that cover the
 * period, from the DynamoDB items the query read and the row's live sketches in Redis (read before DynamoDB, so
 * a sketch the writer moved in between is in one or the other; a sketch in both counts once: unions are
 * idempotent). Unions run in Redis (SketchStore.union), so "unique visitors today" is live.
 */

/** The metrics of a request that are distinct counts of the row's entity; a distinct metric of another entity is a QueryError. */
export function distinctMetricsOf(rules: CompiledRules, pk: string, metrics: ReadonlyArray<{ name: string; attr: string }>): Set<string> {
  const entity = rules.entityOfPk(pk);
  const own = new Set((entity ? rules.distinctOf(entity) : []).map((d) => d.attrMetric));
  const out = new Set<string>();
  for (const m of metrics) {
    const isDistinct = Object.values(rules.rules.entities).some((e) => Object.hasOwn(e.distinct, m.name));
    if (!isDistinct) continue;
    if (!own.has(m.attr))
      throw new QueryError(
        'metrics',
        `${m.name} is not counted for entity ${entity ?? '?'}; the rules give it to ${entitiesWith(rules, m.name)}`,
      );
    out.add(m.attr);
  }
  return out;
}

function entitiesWith(rules: CompiledRules, metric: string): string {
  return Object.entries(rules.rules.entities)
    .filter(([, e]) => Object.hasOwn(e.distinct, metric))
    .map(([n]) => n)
    .join(', ');
}

/** A cell's blobs: in its item and, once that spilled, in the overflow items on the attribute's path (read with it). */
const blobOf = (items: ReadonlyMap<string, StoredItem>, sk: string, attr: string): Buffer[] =>
  storedSketchesOf(items, sk, attr).map((b) => fromStoredSketch(b));

const liveIn = (live: readonly LiveSketch[], metric: string, from: string, to: string): Buffer[] =>
  live.filter((s) => s.metric === metric && s.dayKey >= from && s.dayKey <= to).map((s) => s.blob);

/** Groups of a series point: the period's cells plus the live sketches of its days (day keys `from` to `to`). */
export function pointGroup(
  items: ReadonlyMap<string, StoredItem>,
  live: readonly LiveSketch[],
  metric: string,
  point: { cells: readonly Cell[]; from: string; to: string },
): Buffer[] {
  return [...point.cells.flatMap((c) => blobOf(items, c.sk, c.attr(metric))), ...liveIn(live, metric, point.from, point.to)];
}

/** The group of a whole range: the cover's cells (or the all-time cell) plus the live sketches in the range. */
export function rangeGroup(
  items: ReadonlyMap<string, StoredItem>,
  live: readonly LiveSketch[],
  metric: string,
  range: QueryRange,
  cells: readonly Cell[],
): Buffer[] {
  if (range === 'all')
    return [...blobOf(items, TOTAL_SK, totalAttr(metric)), ...live.filter((s) => s.metric === metric).map((s) => s.blob)];
  return [...cells.flatMap((c) => blobOf(items, c.sk, c.attr(metric))), ...liveIn(live, metric, dayKey(range.from), dayKey(range.to))];
}

/**
 * What one union call (SketchStore.union, one SKETCH_UNION script) carries at most: blobs and their bytes. The script
 * holds Redis while it runs, about 0.3 to 1.3 ms per HLL blob (SET and PFMERGE on a scratch key) and 1 to 3 µs per
 * exact member. A ten-year daily series of UniqueVisitors in one call (3,660 day unions and a total of the same 3,660
 * blobs) held Redis for seconds (slowlog: 5.1 s with sparse HLLs of 1,000 members, 3.0 s with exact sets of 300, 1.0 s
 * with dense HLLs after 90 MB of arguments), and other clients got BUSY replies past Redis' 5 s busy-script
 * threshold. In calls of at most this, one after the other, each holds Redis for at most about 40 to 170 ms, and a
 * daily series of a month (about 60 blobs: each day's and the total's) is still one call.
 */
export const UNION_CALL_LIMITS: UnionCallLimits = { blobs: 128, bytes: 256 * 1024 };

export interface UnionCallLimits {
  /** Blobs per call (at least 2). */
  blobs: number;
  /** Bytes of blobs per call (a single larger blob goes alone). */
  bytes: number;
}

const isExact = (b: Buffer) => b[0] === 0x58; /* X */
const bytesOf = (blobs: readonly Buffer[]) => blobs.reduce((n, b) => n + b.length, 0);
const fits = (blobs: readonly Buffer[], limits: UnionCallLimits) =>
  blobs.length <= 1 || (blobs.length <= limits.blobs && bytesOf(blobs) <= limits.bytes);

/**
 * The distinct count of each group's union and whether it is exact (every blob of the group exact): the answer one
 * SketchStore.union call of all the groups gives, in calls of at most `limits` each (UNION_CALL_LIMITS), one at a
 * time. Groups go together into a call while it has room. A group too large for one call is first made smaller,
 * keeping its answer:
 * - with an HLL among its blobs, its answer is the HLL of the union (the HLLs merged, every exact member added), and
 *   that union is the union of its chunks' unions: the chunks are unioned into one blob each (an HLL, or the exact set
 *   of a chunk of at most EXACT_THRESHOLD members), register for register the same HLL in the end, until it fits;
 * - of exact blobs only, its answer is its number of distinct members (exact however many): its members are split by
 *   their first byte into disjoint parts, each counted exactly, and the counts add up.
 */
export async function countUnions(
  sketches: Pick<SketchStore, 'union'>,
  store: string,
  groups: ReadonlyArray<readonly Buffer[]>,
  limits: UnionCallLimits = UNION_CALL_LIMITS,
): Promise<Array<{ count: number; exact: boolean }>> {
  /** What is counted: parts whose counts add up to their group's (`of`). */
  const parts: Array<{ of: number; blobs: readonly Buffer[] }> = [];
  for (const [of, g] of groups.entries()) {
    if (fits(g, limits)) parts.push({ of, blobs: g });
    else if (g.every(isExact)) for (const blobs of partitionMembers(g, limits)) parts.push({ of, blobs });
    else parts.push({ of, blobs: await reduceUnion(sketches, store, g, limits) });
  }
  const counts = groups.map(() => 0);
  for (const call of inCalls(parts, (p) => p.blobs, limits)) {
    const r = await sketches.union(
      store,
      call.map((p) => p.blobs),
      false,
    );
    r.forEach((c, i) => (counts[call[i]!.of]! += c.count));
  }
  return groups.map((g, i) => ({ count: counts[i]!, exact: g.every(isExact) }));
}

/** A group with an HLL, in chunks unioned into one blob each (SketchStore.union's blob) until it fits one call. */
async function reduceUnion(
  sketches: Pick<SketchStore, 'union'>,
  store: string,
  group: readonly Buffer[],
  limits: UnionCallLimits,
): Promise<Buffer[]> {
  let blobs = [...group];
  while (!fits(blobs, limits)) {
    // Chunks of at least two blobs, so that every round at least halves the blobs.
    const chunks = inCalls(blobs, (b) => [b], limits, 2);
    const next: Buffer[] = [];
    for (const call of inCalls(chunks, (c) => c, limits)) next.push(...(await sketches.union(store, call, true)).map((u) => u.blob));
    blobs = next;
  }
  return blobs;
}

/**
 * An exact group's members (8 bytes each, after the `X`) split by first byte into exact blobs of about `limits.bytes`
 * each: disjoint sets (a member is in one part only), so their distinct counts add up to the group's. A malformed
 * blob leaves the group whole, for SKETCH_UNION to refuse as before.
 */
function partitionMembers(group: readonly Buffer[], limits: UnionCallLimits): Buffer[][] {
  if (group.some((b) => (b.length - 1) % 8 !== 0)) return [[...group]];
  const n = Math.min(256, Math.max(1, Math.ceil((bytesOf(group) - group.length) / limits.bytes)));
  const partOf = (firstByte: number) => Math.floor((firstByte * n) / 256);
  // Two passes over the members, copying bytes (a million members take milliseconds, not a Buffer each).
  const sizes = new Array<number>(n).fill(1);
  for (const b of group) for (let p = 1; p < b.length; p += 8) sizes[partOf(b[p]!)]! += 8;
  const parts = sizes.map((size) => Buffer.allocUnsafe(size).fill(0x58 /* X */, 0, 1));
  const at = new Array<number>(n).fill(1);
  for (const b of group) {
    for (let p = 1; p < b.length; p += 8) {
      const i = partOf(b[p]!);
      const part = parts[i]!;
      const o = at[i]!;
      for (let k = 0; k < 8; k++) part[o + k] = b[p + k]!;
      at[i] = o + 8;
    }
  }
  return parts.map((part) => [part]);
}

/**
 * Items in consecutive calls of at most `limits` of blobs, and of at least `least` items (then past `limits` when they
 * must be; an item larger than `limits` gets a call of its own with `least` 1).
 */
function inCalls<T>(items: readonly T[], blobsOf: (item: T) => readonly Buffer[], limits: UnionCallLimits, least = 1): T[][] {
  const calls: T[][] = [];
  let call: T[] = [];
  let blobs = 0;
  let bytes = 0;
  for (const item of items) {
    const b = blobsOf(item);
    const size = bytesOf(b);
    if (call.length >= least && (blobs + b.length > limits.blobs || bytes + size > limits.bytes)) {
      calls.push(call);
      call = [];
      blobs = bytes = 0;
    }
    call.push(item);
    blobs += b.length;
    bytes += size;
  }
  if (call.length > 0) calls.push(call);
  return calls;
}
