import type { AttributeValue } from '@aws-sdk/client-dynamodb';
import { cellsOfDay, ERASED_ATTR, parseDayKey, SKETCH_VERSION_ATTR, SPILLED_ATTR, WATERMARK_ATTR } from '@tally/key-layout';
import { brotliCompressSync, brotliDecompressSync } from 'node:zlib';
import { entriesByItem, entryOf, type CountEntry } from './cells';
import { PermanentWriteError } from './errors';
import { childSk, SPILL_AT_KB } from './overflow';
import type { StoredItem } from './row-reader';
import {
  isItemTooLarge,
  markSpilledAtPosition,
  readForWrite,
  stampExpiry,
  updateItem,
  writeRow,
  writeUnits,
  type ItemExtra,
  type RowWriteResult,
  type RowWriterDeps,
} from './row-writer';

/**
 * Distinct-count sketches in DynamoDB (docs/DESIGN.md "Unique visitors"). A row's sketch of a day, month, year
 * and all time sits in the same items and attribute names as its counters (`D123.uv`, `M05.uv` in the month item;
 * `Y2023.uv`, `uv` in TOTAL), as a binary attribute:
 *   `X` + 8-byte members   exact, at most EXACT_THRESHOLD members
 *   `H` + Redis HLL        a Redis HyperLogLog string (sparse, small)
 *   `Z` + brotli(Redis HLL) the same, compressed (dense ones: 12,304 bytes down to about 2.4-7.5 KB)
 * Unions are computed by Redis (PFMERGE) on the `X`/`H` forms; this module converts between the stored form and
 * those.
 *
 * Sketches follow the overflow layout (overflow.ts) as counts do: an item's sketches are written to it while it has
 * not spilled; once it has, each cell's later unions go to the overflow item of its attribute (`childSk`), and so on
 * down, while the item keeps the union it had. A cell is the union of its blobs along that path (storedSketchesOf),
 * never a sum, so a member in two of them counts once. A sketch write that finds its item at SPILL_AT_KB marks it
 * spilled, and one UpdateItem sets at most SKETCH_BYTES_PER_UPDATE of sketches, so however many distinct metrics a
 * row has (each dense day sketch is up to about 7.5 KB stored, 32 of them per metric in a month item) no item gets
 * much past SPILL_AT_KB + SKETCH_BYTES_PER_UPDATE + one UpdateItem of counts, far below DynamoDB's 400 KB.
 */

/**
 * Stored sketch bytes (names and values) one UpdateItem sets at most; a larger union is written in several, each
 * under the version the one before set. (One sketch alone may pass it: at most 12,305 bytes, an uncompressed `H`.)
 */
export const SKETCH_BYTES_PER_UPDATE = 64 * 1024;

/** Sketch attributes one UpdateItem sets at most: beside MAX_ATTRS_PER_UPDATE counts its expression stays below 4 KB. */
const SKETCHES_PER_UPDATE = 32;

/** A live sketch of a row not yet in DynamoDB: its day, metric code and blob (`X` or `H` form). */
export interface SketchPart {
  dayKey: string;
  metric: string;
  blob: Buffer;
}

/** Unions groups of `X`/`H` blobs: per group the count and the union's blob (the SketchStore's union, bound to a store). */
export type SketchUnion = (groups: ReadonlyArray<readonly Buffer[]>, wantBlob: boolean) => Promise<Array<{ count: number; blob: Buffer }>>;

/** The stored form of a union blob: `H` forms over 1 KB go compressed (`Z`) when that is smaller. */
export function toStoredSketch(blob: Buffer): Buffer {
  if (blob[0] !== 0x48 /* H */ || blob.length < 1024) return blob;
  const z = brotliCompressSync(blob.subarray(1));
  return z.length + 1 < blob.length ? Buffer.concat([Buffer.from('Z'), z]) : blob;
}

/** The `X`/`H` form of a stored sketch. */
export function fromStoredSketch(stored: Uint8Array): Buffer {
  const b = Buffer.from(stored.buffer, stored.byteOffset, stored.byteLength);
  return b[0] === 0x5a /* Z */ ? Buffer.concat([Buffer.from('H'), brotliDecompressSync(b.subarray(1))]) : b;
}

/** The cells each live sketch goes into, by item: sk -> attribute -> the live blobs it unions. */
export function sketchCells(parts: readonly SketchPart[]): Map<string, Map<string, Buffer[]>> {
  const out = new Map<string, Map<string, Buffer[]>>();
  for (const p of parts) {
    for (const { sk, attr } of cellsOfDay(parseDayKey(p.dayKey), p.metric)) {
      const item = entryOf(out, sk, () => new Map<string, Buffer[]>());
      entryOf(item, attr, () => []).push(p.blob);
    }
  }
  return out;
}

/** What one item's sketch attributes become: the values to SET and the version they were read at. */
export interface SketchItemWrite {
  set: Record<string, AttributeValue>;
  /** The item's sketch version when read; undefined when it had none. */
  version: number | undefined;
  /** The item was read spilled: its sketches go to its overflow items instead. */
  spilled: boolean;
  /** The item was read a tombstone (ERASED_ATTR): its `wm`, the fence of the erasure that put it. */
  erasedAt?: number;
}

/**
 * The stored blobs of one sketch cell: attribute `attr` of item `sk` and of the overflow items on its path, as far
 * as `items` (keyed by sk) holds them. The cell is their union.
 */
export function storedSketchesOf(items: ReadonlyMap<string, StoredItem>, sk: string, attr: string): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let at = sk, item = items.get(at); item; at = childSk(at, attr), item = items.get(at)) {
    const blob = item.blobs?.get(attr);
    if (blob) out.push(blob);
  }
  return out;
}

/**
 * Reads an item's sketch attributes and unions each with the live blobs: what a write of the item must SET,
 * conditioned on the version read. With `consistent` false the read is eventually consistent, at half the read
 * units: a read that missed a later sketch write holds an older version (every sketch write sets a new one), so
 * the write's condition refuses it, nothing is lost, and the caller reads again, consistently.
 */
export async function prepareSketchItem(
  deps: RowWriterDeps,
  union: SketchUnion,
  pk: string,
  sk: string,
  attrs: ReadonlyMap<string, readonly Buffer[]>,
  consistent: boolean,
): Promise<SketchItemWrite> {
  const names: Record<string, string> = { '#hv': SKETCH_VERSION_ATTR, '#ov': SPILLED_ATTR, '#er': ERASED_ATTR, '#wm': WATERMARK_ATTR };
  const list = [...attrs.keys()];
  list.forEach((a, i) => (names[`#s${i}`] = a));
  const projection = ['#hv', '#ov', '#er', '#wm', ...list.map((_, i) => `#s${i}`)].join(', ');
  const item = await readForWrite(deps, pk, sk, projection, names, consistent);
  const groups = list.map((a) => {
    const stored = item?.[a]?.B;
    return stored ? [fromStoredSketch(stored), ...attrs.get(a)!] : [...attrs.get(a)!];
  });
  const unions = await union(groups, true);
  const set: Record<string, AttributeValue> = {};
  list.forEach((a, i) => (set[a] = { B: toStoredSketch(unions[i]!.blob) }));
  const v = item?.[SKETCH_VERSION_ATTR]?.N;
  const out: SketchItemWrite = { set, version: v === undefined ? undefined : Number(v), spilled: item?.[SPILLED_ATTR] !== undefined };
  if (item?.[ERASED_ATTR] !== undefined) out.erasedAt = Number(item[WATERMARK_ATTR]?.N ?? -1);
  return out;
}

/**
 * A sketch write cut for one UpdateItem: the first attributes while their stored bytes stay within
 * SKETCH_BYTES_PER_UPDATE and their number within SKETCHES_PER_UPDATE (at least one), and the rest (undefined when
 * none), at the version the first sets.
 */
function splitSketchWrite(w: SketchItemWrite): [SketchItemWrite, SketchItemWrite | undefined] {
  const list = Object.entries(w.set);
  let n = 0;
  for (let bytes = 0; n < list.length && n < SKETCHES_PER_UPDATE; n++) {
    const [name, value] = list[n]!;
    bytes += name.length + (value.B?.length ?? 0);
    if (n > 0 && bytes > SKETCH_BYTES_PER_UPDATE) break;
  }
  const first = { ...w, set: Object.fromEntries(list.slice(0, n)) };
  if (n === list.length) return [first, undefined];
  return [first, { set: Object.fromEntries(list.slice(n)), version: (w.version ?? 0) + 1, spilled: false }];
}

/** The SET clause, condition and names/values of a sketch write (numbered from `#s0`/`:s0`). */
export function sketchUpdateParts(w: SketchItemWrite): ItemExtra {
  const names: Record<string, string> = { '#hv': SKETCH_VERSION_ATTR };
  const values: Record<string, AttributeValue> = { ':hvn': { N: String((w.version ?? 0) + 1) } };
  const set = ['#hv = :hvn'];
  Object.entries(w.set).forEach(([a, v], i) => {
    names[`#s${i}`] = a;
    values[`:s${i}`] = v;
    set.push(`#s${i} = :s${i}`);
  });
  let condition = 'attribute_not_exists(#hv)';
  if (w.version !== undefined) {
    values[':hv'] = { N: String(w.version) };
    condition = '#hv = :hv';
  }
  return { set, condition, names, values };
}

/**
 * Writes one item's sketches on their own (when they could not ride the counters' UpdateItem): read, union, SET
 * under the version condition (and the item not spilled), again while another writer moved the version in between;
 * at most SKETCH_BYTES_PER_UPDATE per UpdateItem. An item read spilled gets none: each attribute's union goes to its
 * overflow item, by these same rules; an item a write finds at SPILL_AT_KB is marked spilled at its position.
 * `prepared`, a union not yet refused, is tried first instead of a read; the reads are consistent unless
 * `consistent` is false (then only the first: a refused write reads again consistently). A write here sets `wm` to
 * -1 on an item that has none (an overflow item holding sketches only): the position "no count yet" that an absent
 * `wm` already means. Returns UpdateItems made (refused ones too).
 *
 * `fence` is the lowest bucket seq of the counts these sketches are flushed with (undefined: not known). A tombstone
 * item (ERASED_ATTR: an erased visitor's or a deleted store's) whose `wm` is at or above it was put after these
 * sketches were read (a flush that went on after its job's lock lapsed): the write's condition refuses it and the
 * item is left as it is, nothing written. One whose `wm` is below it (an overflow item the erasure put in place, met
 * by a flush of later counts) is written, and the write removes the mark as a count write does. Without a fence
 * every tombstone is left alone.
 */
export async function writeSketchItem(
  deps: RowWriterDeps,
  union: SketchUnion,
  pk: string,
  sk: string,
  attrs: ReadonlyMap<string, readonly Buffer[]>,
  fence: number | undefined,
  prepared?: SketchItemWrite,
  consistent = true,
): Promise<number> {
  let updates = 0;
  let left = attrs;
  let write = prepared;
  for (let refused = 0; ;) {
    write ??= await prepareSketchItem(deps, union, pk, sk, left, consistent || refused > 0);
    // Erased after these sketches were read: they went with the item (whatever the read's consistency, a tombstone
    // at or above the fence was put after them).
    if (write.erasedAt !== undefined && (fence === undefined || write.erasedAt >= fence)) return updates;
    if (write.spilled) return updates + (await writeToOverflow(deps, union, pk, sk, left, fence));
    const [now, rest] = splitSketchWrite(write);
    const parts = sketchUpdateParts(now);
    const set = [...parts.set, '#wm = if_not_exists(#wm, :nowm)'];
    const remove = ['#er'];
    const names: Record<string, string> = { ...parts.names, '#wm': WATERMARK_ATTR, '#ov': SPILLED_ATTR, '#er': ERASED_ATTR };
    const values: Record<string, AttributeValue> = { ...parts.values, ':nowm': { N: '-1' } };
    stampExpiry(deps, sk, set, remove, names, values);
    let notErased = 'attribute_not_exists(#er)';
    if (fence !== undefined) {
      values[':lo'] = { N: String(fence) };
      notErased = `(${notErased} OR #wm < :lo)`;
    }
    let tooLarge = false;
    const out = await updateItem(deps, pk, sk, {
      UpdateExpression: `SET ${set.join(', ')} REMOVE ${remove.join(', ')}`,
      ConditionExpression: `(${parts.condition}) AND attribute_not_exists(#ov) AND ${notErased}`,
      ExpressionAttributeNames: names,
      ExpressionAttributeValues: values,
    }).catch((err: unknown) => {
      if (!isItemTooLarge(err)) throw err;
      tooLarge = true;
      return undefined;
    });
    updates++;
    // An item refused as too large grew past SPILL_AT_KB unmarked: spilled at its position, it takes no more sketches.
    if (tooLarge && (await markSpilledAtPosition(deps, pk, sk))) {
      write = { ...write, spilled: true };
      continue;
    }
    if (!out) {
      if (++refused >= 20)
        throw new PermanentWriteError(`item ${pk} / ${sk}: the sketch write's version condition failed ${refused} times`);
      write = undefined;
      continue;
    }
    await deps.afterUpdate?.(pk, sk);
    const spilled = writeUnits(out.ConsumedCapacity) >= SPILL_AT_KB && (await markSpilledAtPosition(deps, pk, sk));
    if (!rest) return updates;
    left = new Map([...left].filter(([a]) => Object.hasOwn(rest.set, a)));
    write = { ...rest, spilled };
  }
}

/** Writes the unions of a spilled item's sketch attributes to their overflow items (childSk). Returns UpdateItems made. */
async function writeToOverflow(
  deps: RowWriterDeps,
  union: SketchUnion,
  pk: string,
  sk: string,
  attrs: ReadonlyMap<string, readonly Buffer[]>,
  fence: number | undefined,
): Promise<number> {
  let updates = 0;
  for (const [child, names] of Map.groupBy(attrs.keys(), (a) => childSk(sk, a))) {
    const own = new Map(names.map((a) => [a, attrs.get(a)!]));
    updates += await writeSketchItem(deps, union, pk, child, own, fence, undefined, false);
  }
  return updates;
}

/**
 * Writes a row's counts (writeRow) and the live sketches of the days whose month item this write touches anyway:
 * each item's sketches (read, unioned, version-conditioned) ride the item's counter UpdateItem, so a flush costs
 * no extra write request for them; an item whose ride was refused or impossible (parts, a spilled item, more than
 * one UpdateItem's SKETCH_BYTES_PER_UPDATE of sketches) gets its own sketch writes (writeSketchItem). The items'
 * reads are eventually consistent (half the read units of a consistent one) and run together; a ride refused by its
 * conditions (perhaps a stale read) is read again consistently, and an item whose ride never went uses the union
 * already read.
 * Live sketches of other days wait for a flush that writes their month item (their counts are still in Redis).
 * A ride needs no condition on a tombstone (ERASED_ATTR): the counts' watermark condition refuses a stale flush's
 * ride, and a flush of later counts clears the mark in the UpdateItem the ride is in; the sketch writes of their own
 * are fenced by the counts' lowest bucket seq (writeSketchItem). So a flush that read its outbox before an erasure
 * writes no sketch to the tombstones, and one of later counts writes all of its own.
 * Returns writeRow's result, the sketch-only UpdateItems and the live sketches now in DynamoDB (to ack).
 */
export async function writeRowWithSketches<P extends SketchPart>(
  deps: RowWriterDeps,
  union: SketchUnion,
  pk: string,
  entries: readonly CountEntry[],
  live: readonly P[],
): Promise<RowWriteResult & { sketchUpdates: number; sketchesWritten: P[] }> {
  const touched = new Set(entriesByItem(entries).keys());
  const riding = live.filter((p) => cellsOfDay(parseDayKey(p.dayKey), p.metric).every((c) => touched.has(c.sk)));
  const cells = [...sketchCells(riding)];
  const prepared = await Promise.all(cells.map(([sk, attrs]) => prepareSketchItem(deps, union, pk, sk, attrs, false)));
  const extras = new Map<string, ItemExtra>();
  cells.forEach(([sk], i) => {
    const w = prepared[i]!;
    if (!w.spilled && splitSketchWrite(w)[1] === undefined) extras.set(sk, sketchUpdateParts(w));
  });
  const r = await writeRow(deps, pk, entries, { extras });
  const fence = entries.reduce<number | undefined>((lo, e) => (lo === undefined || e.seq < lo ? e.seq : lo), undefined);
  let sketchUpdates = 0;
  for (const [i, [sk, attrs]] of cells.entries()) {
    if (r.extrasWritten?.includes(sk)) continue;
    sketchUpdates += await writeSketchItem(deps, union, pk, sk, attrs, fence, r.extrasRefused?.includes(sk) ? undefined : prepared[i]);
  }
  return { ...r, sketchUpdates, sketchesWritten: riding };
}
