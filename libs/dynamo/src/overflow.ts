import { createHash } from 'node:crypto';
import { entryOf, partsOfBucket, type CountEntry } from './cells';

/**
 * The overflow layout: how an item stays far below DynamoDB's 400 KB however many distinct attributes one row
 * gathers (a crawler visitor's ProductViews by product).
 *
 * An item (month row or TOTAL) whose size, as reported by the consumed write units of an UpdateItem, reaches
 * SPILL_AT_KB is marked spilled (SPILLED_ATTR) at its position (`wm`, `wm.p`), which then never moves again. Every
 * count beyond that position goes to one of 16 overflow items `<sk>#<h>`, `h` the first hex digit of the SHA-1 of
 * the attribute name; an overflow item spills the same way into `<sk>#<h><h2>` (the next digit), and so on. Each
 * overflow item has its own watermark, so the exactly-once rule is the one of every item. An attribute's value is
 * the sum over its item and the overflow items on its path. Items that never reach the bound (every normal row)
 * are written exactly as before: same UpdateItems, same write units.
 */
export const SPILL_AT_KB = 64;

/** Overflow items sort right after their item: `M2023-05#0` … `M2023-05#ffff` are below `M2023-05#~`. */
export const overflowEnd = (sk: string) => `${sk}#~`;

function hashHex(attr: string): string {
  return createHash('sha1').update(attr).digest('hex');
}

/** The overflow item of `sk` that holds the counts of `attr` beyond sk's spill position. */
export function childSk(sk: string, attr: string): string {
  const hash = sk.indexOf('#');
  if (hash < 0) return `${sk}#${hashHex(attr)[0]}`;
  const depth = sk.length - hash - 1;
  if (depth >= 40) throw new Error(`overflow item ${sk} is at the deepest level`);
  return `${sk}${hashHex(attr)[depth]}`;
}

/** The item whose overflow item `sk` is (`M2023-05#3a` → `M2023-05#3` → `M2023-05`); undefined for a base item. */
export function parentSk(sk: string): string | undefined {
  const hash = sk.indexOf('#');
  if (hash < 0) return undefined;
  return sk.length - hash - 1 <= 1 ? sk.slice(0, hash) : sk.slice(0, -1);
}

/** The 16 overflow items of `sk`. */
export function childSks(sk: string): string[] {
  return [...'0123456789abcdef'].map((h) => `${sk}${sk.includes('#') ? '' : '#'}${h}`);
}

/** An item's position: bucket `wm` applied, completely or (`wp`) up to that part. */
export interface ItemPosition {
  wm: number;
  wp?: number | undefined;
}

/**
 * The cells of `list` (the entries routed to one item, each with that item's attributes) that the item does not
 * hold at `pos`: every cell of a later bucket, and the cells of bucket `wm` in parts after `wp` (the writer's cut,
 * partsOfBucket over that bucket's attributes of the item). Entries without a remaining attribute are left out.
 */
export function beyondPosition<E extends CountEntry>(
  list: ReadonlyArray<{ entry: E; attrs: string[] }>,
  pos: ItemPosition,
): Array<{ entry: E; attrs: string[] }> {
  let partOf: Map<string, number> | undefined;
  if (pos.wp !== undefined) partOf = partsOfBucket(list.filter((x) => x.entry.seq === pos.wm).flatMap((x) => x.attrs)).partOf;
  const out: Array<{ entry: E; attrs: string[] }> = [];
  for (const x of list) {
    if (x.entry.seq > pos.wm) out.push(x);
    else if (x.entry.seq === pos.wm && partOf) {
      const attrs = x.attrs.filter((a) => (partOf.get(a) ?? 0) > pos.wp!);
      if (attrs.length > 0) out.push({ entry: x.entry, attrs });
    }
  }
  return out;
}

/** Cells routed from a spilled item `sk` to its overflow items, grouped by overflow item. */
export function routeToOverflow<E extends CountEntry>(
  sk: string,
  list: ReadonlyArray<{ entry: E; attrs: string[] }>,
): Map<string, Array<{ entry: E; attrs: string[] }>> {
  const out = new Map<string, Array<{ entry: E; attrs: string[] }>>();
  const memo = new Map<string, string>();
  for (const { entry, attrs } of list) {
    const byChild = Map.groupBy(attrs, (a) => entryOf(memo, a, () => childSk(sk, a)));
    for (const [c, as] of byChild) entryOf(out, c, () => []).push({ entry, attrs: as });
  }
  return out;
}
