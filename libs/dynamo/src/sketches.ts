import type { AttributeValue } from '@aws-sdk/client-dynamodb';
import { cellsOfDay, parseDayKey, SKETCH_VERSION_ATTR } from '@tally/key-layout';
import { brotliCompressSync, brotliDecompressSync } from 'node:zlib';
import { entriesByItem, entryOf, type CountEntry } from './cells';
import { PermanentWriteError } from './errors';
import { readForWrite, updateItem, writeRow, type ItemExtra, type RowWriteResult, type RowWriterDeps } from './row-writer';

/**
 * Distinct-count sketches in DynamoDB (docs/DESIGN.md "Unique visitors"). A row's sketch of a day, month, year
 * and all time sits in the same items and attribute names as its counters (`D123.uv`, `M05.uv` in the month item;
 * `Y2023.uv`, `uv` in TOTAL), as a binary attribute:
 *   `X` + 8-byte members   exact, at most EXACT_THRESHOLD members
 *   `H` + Redis HLL        a Redis HyperLogLog string (sparse, small)
 *   `Z` + brotli(Redis HLL) the same, compressed (dense ones: 12,304 bytes down to about 2.4-7.5 KB)
 * Unions are computed by Redis (PFMERGE) on the `X`/`H` forms; this module converts between the stored form and
 * those.
 */

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
  const names: Record<string, string> = { '#hv': SKETCH_VERSION_ATTR };
  const list = [...attrs.keys()];
  list.forEach((a, i) => (names[`#s${i}`] = a));
  const item = await readForWrite(deps, pk, sk, ['#hv', ...list.map((_, i) => `#s${i}`)].join(', '), names, consistent);
  const groups = list.map((a) => {
    const stored = item?.[a]?.B;
    return stored ? [fromStoredSketch(stored), ...attrs.get(a)!] : [...attrs.get(a)!];
  });
  const unions = await union(groups, true);
  const set: Record<string, AttributeValue> = {};
  list.forEach((a, i) => (set[a] = { B: toStoredSketch(unions[i]!.blob) }));
  const v = item?.[SKETCH_VERSION_ATTR]?.N;
  return { set, version: v === undefined ? undefined : Number(v) };
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
 * under the version condition, again while another writer moved the version in between. `prepared`, a union not
 * yet refused, is tried first instead of a read; every read here is consistent. Returns UpdateItems made.
 */
export async function writeSketchItem(
  deps: RowWriterDeps,
  union: SketchUnion,
  pk: string,
  sk: string,
  attrs: ReadonlyMap<string, readonly Buffer[]>,
  prepared?: SketchItemWrite,
): Promise<number> {
  for (let attempt = 1; ; attempt++) {
    const write = attempt === 1 && prepared ? prepared : await prepareSketchItem(deps, union, pk, sk, attrs, true);
    const parts = sketchUpdateParts(write);
    const out = await updateItem(deps, pk, sk, {
      UpdateExpression: `SET ${parts.set.join(', ')}`,
      ConditionExpression: parts.condition,
      ExpressionAttributeNames: parts.names,
      ExpressionAttributeValues: parts.values,
    });
    if (out) {
      await deps.afterUpdate?.(pk, sk);
      return attempt;
    }
    if (attempt >= 20) throw new PermanentWriteError(`item ${pk} / ${sk}: the sketch write's version condition failed ${attempt} times`);
  }
}

/**
 * Writes a row's counts (writeRow) and the live sketches of the days whose month item this write touches anyway:
 * each item's sketches (read, unioned, version-conditioned) ride the item's counter UpdateItem, so a flush costs
 * no extra write request for them; an item whose ride was refused or impossible (parts, a spilled item) gets its
 * own sketch write. The items' reads are eventually consistent (half the read units of a consistent one) and run
 * together; a ride refused by its conditions (perhaps a stale read) is read again consistently, and an item whose
 * ride never went uses the union already read.
 * Live sketches of other days wait for a flush that writes their month item (their counts are still in Redis).
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
  const extras = new Map<string, ItemExtra>(cells.map(([sk], i) => [sk, sketchUpdateParts(prepared[i]!)]));
  const r = await writeRow(deps, pk, entries, { extras });
  let sketchUpdates = 0;
  for (const [i, [sk, attrs]] of cells.entries()) {
    if (r.extrasWritten?.includes(sk)) continue;
    sketchUpdates += await writeSketchItem(deps, union, pk, sk, attrs, r.extrasRefused?.includes(sk) ? undefined : prepared[i]);
  }
  return { ...r, sketchUpdates, sketchesWritten: riding };
}
