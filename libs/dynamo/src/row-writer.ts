import {
  UpdateItemCommand,
  type AttributeValue,
  type ConsumedCapacity,
  type DynamoDBClient,
  type UpdateItemCommandInput,
  type UpdateItemCommandOutput,
} from '@aws-sdk/client-dynamodb';
import { baseSk, ERASED_ATTR, EXPIRES_ATTR, SPILLED_ATTR, WATERMARK_ATTR, WATERMARK_PART_ATTR } from '@tally/key-layout';
import { entriesByItem, entryOf, MAX_ATTRS_PER_UPDATE, partsOfBucket, type CountEntry } from './cells';
import { PermanentWriteError, RetryableWriteError } from './errors';
import { classifyError, isTransientError, metered, type DynamoMeter } from './meter';
import { getItemOutput, readItem } from './row-reader';
import { beyondPosition, routeToOverflow, SPILL_AT_KB, type ItemPosition } from './overflow';

export interface RowWriterDeps {
  client: DynamoDBClient;
  table: string;
  meter: DynamoMeter;
  /**
   * The TTL of an item (its base sk), applied to EXPIRES_ATTR with every update of it: a number (epoch seconds) is
   * SET (the visitor rows of a store with a history retention: retentionExpiry); `null` (no stamp: every other row,
   * and the visitor rows of a store keeping history for ever) REMOVEs it, so an item drops the TTL of a tombstone
   * (ERASED_ATTR) or of an earlier retention; `undefined` (not known now: the tenant could not be looked up) leaves it
   * as it is. Without this hook every item is written as with `null`.
   */
  expiresAt?: (sk: string) => number | null | undefined;
  /** Test hook: called after each successful UpdateItem (crash-point tests). */
  afterUpdate?: (pk: string, sk: string) => void | Promise<void>;
  /** Items this process saw spilled (a hint that saves the refused UpdateItem of each later flush; see SpilledItems). */
  spilled?: SpilledItems;
}

/**
 * The items a writer process has seen spilled, at most `max` (the oldest forgotten first). A hint only: for an item
 * in it the writer reads the item's position (one consistent GetItem) before writing, instead of first sending an
 * UpdateItem that the spilled item refuses (charged as a write of the whole item, up to SPILL_AT_KB write units) and
 * then reading. What is written still follows the position read, so a stale entry (the item deleted since, or
 * never spilled in this table) costs that one read and nothing else.
 */
export class SpilledItems {
  private readonly keys = new Set<string>();
  constructor(readonly max = 10_000) {}
  has(pk: string, sk: string): boolean {
    return this.keys.has(`${pk}\u0000${sk}`);
  }
  add(pk: string, sk: string): void {
    const key = `${pk}\u0000${sk}`;
    this.keys.delete(key);
    this.keys.add(key);
    if (this.keys.size > this.max) this.keys.delete(this.keys.values().next().value!);
  }
  delete(pk: string, sk: string): void {
    this.keys.delete(`${pk}\u0000${sk}`);
  }
}

export interface RowWriteResult {
  /** UpdateItem calls that succeeded. */
  updates: number;
  /** UpdateItem calls refused by the watermark condition (entries already applied by someone else). */
  conditionFailures: number;
  /** With RowWriteOptions.extras: the items whose extra SET rode one of these UpdateItems. */
  extrasWritten?: string[];
  /** With RowWriteOptions.extras: the items whose extra SET rode an UpdateItem that its conditions refused. */
  extrasRefused?: string[];
}

/**
 * Extra attributes to SET on an item in the same UpdateItem as its counts (the distinct-count sketches), under an
 * extra condition. Names start `#s`/`#hv`, values `:s`/`:hv`. It rides the item's first whole-bucket UpdateItem;
 * when that one is refused, or the item only gets parts, it is left out (not in `extrasWritten`) for the caller.
 */
export interface ItemExtra {
  set: string[];
  condition: string;
  names: Record<string, string>;
  values: Record<string, AttributeValue>;
}

export interface RowWriteOptions {
  /** By sk: an extra SET for that item. */
  extras?: ReadonlyMap<string, ItemExtra>;
}

/**
 * Applies a row's outbox entries to DynamoDB exactly once: per item (month row, TOTAL) UpdateItems that ADD the
 * summed deltas and move the item's watermark, each under a condition on it. The watermark is a position
 * (bucket seq `wm`, part `wm.p`): `wm.p` is present only while bucket `wm` is applied in parts.
 * - Whole buckets, as many as fit one UpdateItem (MAX_ATTRS_PER_UPDATE attributes): condition
 *   `attribute_not_exists(wm) OR (wm < lowest seq AND attribute_not_exists(wm.p))`, sets `wm` to the highest seq.
 * - A bucket with more attributes for the item than one UpdateItem takes goes in parts (partsOfBucket: sorted
 *   names cut every MAX_ATTRS_PER_UPDATE, the same cut a reader makes): part 0 under the whole-bucket condition,
 *   part p > 0 only when the item is exactly at (seq, p - 1); each sets (seq, p), and the last one removes `wm.p`.
 * When a condition fails, the entries at or below the item's position are already in it (applied by a crashed
 * run or another writer): the writer reads the position and writes the rest. So the set applied to an item is
 * always exactly the entries below its position. No transactions.
 * Every condition also requires the item not to have spilled. An UpdateItem whose consumed write units show the
 * item at SPILL_AT_KB or more is followed by one that marks it spilled at the position just written; from then on
 * the rest of the row's cells for that item go to its overflow items, each written by these same rules
 * (overflow.ts). A missed check (an applied UpdateItem whose answer was lost, a crash before the mark) is made up by
 * the next read of the item's position (readWatermark), and an UpdateItem refused as too large (an item that grew
 * unmarked, or before overflow items existed) marks the item spilled at its position instead of failing. With
 * `deps.spilled`, a later flush of an item this process saw spilled reads its position first and writes only the
 * overflow items (no refused UpdateItem).
 *
 * Every UpdateItem of counts also REMOVEs ERASED_ATTR and sets or removes the TTL (RowWriterDeps.expiresAt): a
 * tombstone item (an erased visitor's or a deleted store's, libs/tenants erasure.ts) has no counts and `wm` = the
 * fence E, so a write of buckets at or below E (a flush that read the outbox before the erasure and kept writing
 * after its job's lock lapsed) is refused by the watermark condition and its buckets dropped as already written, as
 * any other refused write's; a write of later buckets passes it and makes the tombstone a counter item again.
 *
 * Throws RetryableWriteError (throttling, 5xx, unreachable, and refusals of the credentials, permissions or table:
 * isTransientError) or PermanentWriteError (a validation error); items already written stay written, and a
 * retry skips them through the watermark.
 */
export async function writeRow(
  deps: RowWriterDeps,
  pk: string,
  entries: readonly CountEntry[],
  opts: RowWriteOptions = {},
): Promise<RowWriteResult> {
  const result: RowWriteResult = { updates: 0, conditionFailures: 0, ...(opts.extras ? { extrasWritten: [], extrasRefused: [] } : {}) };
  for (const [sk, list] of entriesByItem(entries)) {
    await writeItem(deps, pk, sk, list, result, opts.extras?.get(sk));
  }
  return result;
}

type ItemEntry = { entry: CountEntry; attrs: string[] };
type Bucket = { seq: number; list: ItemEntry[]; attrs: Set<string> };

const WHOLE = '(attribute_not_exists(#wm) OR (#wm < :lo AND attribute_not_exists(#wp))) AND attribute_not_exists(#ov)';
/** The names of an item's position attributes in every expression: watermark, part, spilled mark. */
/**
 * The size past which an item not marked spilled has certainly missed its check: SPILL_AT_KB, plus the most one
 * sketch write (SKETCH_BYTES_PER_UPDATE, 64 KB) and one UpdateItem of counts (under 30 KB) add before the write that
 * measures them marks it (some emulators charge an UpdateItem the item's size before it, so the mark comes a write
 * later).
 */
const MISSED_SPILL_KB = SPILL_AT_KB + 64 + 30;

const POSITION_NAMES = { '#wm': WATERMARK_ATTR, '#wp': WATERMARK_PART_ATTR, '#ov': SPILLED_ATTR };

async function writeItem(
  deps: RowWriterDeps,
  pk: string,
  sk: string,
  all: ItemEntry[],
  result: RowWriteResult,
  extra?: ItemExtra,
): Promise<void> {
  const bySeq = new Map<number, Bucket>();
  for (const ie of all) {
    const b = entryOf(bySeq, ie.entry.seq, (): Bucket => ({ seq: ie.entry.seq, list: [], attrs: new Set() }));
    b.list.push(ie);
    for (const a of ie.attrs) b.attrs.add(a);
  }
  let pending = [...bySeq.values()].sort((a, b) => a.seq - b.seq);
  if (deps.spilled?.has(pk, sk)) {
    const at = await readWatermark(deps, pk, sk, result);
    if (at.spilled) {
      for (const [child, list] of routeToOverflow(sk, beyondPosition(all, at))) await writeItem(deps, pk, child, list, result);
      return;
    }
    deps.spilled.delete(pk, sk);
  }
  // First part of pending[0] still to write, when it goes in parts and a refused condition showed earlier ones in.
  let fromPart = 0;
  while (pending.length > 0) {
    const head = pending[0]!;
    const sums = new Map<string, bigint>();
    const values: Record<string, AttributeValue> = { ':lo': { N: String(head.seq) } };
    const set: string[] = [];
    const remove = ['#er'];
    let condition: string;
    let taken: number;
    let parts: ReturnType<typeof partsOfBucket> | undefined;
    if (head.attrs.size > MAX_ATTRS_PER_UPDATE) {
      parts = partsOfBucket(head.attrs);
      for (const { entry, attrs } of head.list) {
        for (const a of attrs) if (parts.partOf.get(a) === fromPart) sums.set(a, (sums.get(a) ?? 0n) + entry.value);
      }
      const last = fromPart === parts.count - 1;
      set.push('#wm = :lo');
      if (last) remove.push('#wp');
      else {
        values[':p'] = { N: String(fromPart) };
        set.push('#wp = :p');
      }
      if (fromPart === 0) condition = WHOLE;
      else {
        values[':prev'] = { N: String(fromPart - 1) };
        condition = '#wm = :lo AND #wp = :prev AND attribute_not_exists(#ov)';
      }
      taken = 0;
    } else {
      taken = takeWholeBuckets(pending);
      for (const b of pending.slice(0, taken))
        for (const { entry, attrs } of b.list) for (const a of attrs) sums.set(a, (sums.get(a) ?? 0n) + entry.value);
      values[':hi'] = { N: String(pending[taken - 1]!.seq) };
      set.push('#wm = :hi');
      condition = WHOLE;
    }

    const names: Record<string, string> = { ...POSITION_NAMES, '#er': ERASED_ATTR };
    stampExpiry(deps, sk, set, remove, names, values);
    // The extra SET rides only a whole-bucket UpdateItem, and only once.
    const rides = extra !== undefined && !parts;
    if (rides && extra) {
      set.push(...extra.set);
      condition = `(${condition}) AND ${extra.condition}`;
      Object.assign(names, extra.names);
      Object.assign(values, extra.values);
    }
    const adds = [...sums].map(([attr, v], i) => {
      names[`#a${i}`] = attr;
      values[`:v${i}`] = { N: v.toString() };
      return `#a${i} :v${i}`;
    });
    let spilledAt: ItemPosition | undefined;
    let tooLarge = false;
    const out = await updateItem(deps, pk, sk, {
      UpdateExpression: `SET ${set.join(', ')} REMOVE ${remove.join(', ')} ADD ${adds.join(', ')}`,
      ConditionExpression: condition,
      ExpressionAttributeNames: names,
      ExpressionAttributeValues: values,
    }).catch((err: unknown) => {
      if (!isItemTooLarge(err)) throw err;
      tooLarge = true;
      return undefined;
    });
    if (out) {
      result.updates++;
      if (rides) {
        result.extrasWritten?.push(sk);
        extra = undefined;
      }
      let at: ItemPosition;
      if (parts) {
        at = fromPart === parts.count - 1 ? { wm: head.seq } : { wm: head.seq, wp: fromPart };
        fromPart++;
        if (fromPart === parts.count) {
          pending = pending.slice(1);
          fromPart = 0;
        }
      } else {
        at = { wm: pending[taken - 1]!.seq };
        pending = pending.slice(taken);
      }
      await deps.afterUpdate?.(pk, sk);
      if (writeUnits(out.ConsumedCapacity) >= SPILL_AT_KB && (await markSpilled(deps, pk, sk, at, result))) spilledAt = at;
    } else {
      if (!tooLarge) result.conditionFailures++;
      // The refusal may be the extra's condition: leave the extra to the caller, and retry the counts without it.
      if (rides) result.extrasRefused?.push(sk);
      extra = undefined;
      // An item refused as too large grew past SPILL_AT_KB unmarked: it spills at its position.
      const at = await readWatermark(deps, pk, sk, result, tooLarge);
      if (at.spilled) spilledAt = at;
      else {
        const before = `${pending.length}/${fromPart}`;
        pending = pending.filter((b) => b.seq > at.wm || (b.seq === at.wm && at.wp !== undefined));
        fromPart = pending[0]?.seq === at.wm && at.wp !== undefined ? at.wp + 1 : 0;
        if (`${pending.length}/${fromPart}` === before && !rides && !tooLarge) {
          // The item is inside a bucket whose remaining parts this write does not hold: never with an outbox acked
          // only after every part; stop rather than loop.
          throw new PermanentWriteError(
            `item ${pk} / ${sk} is at bucket ${at.wm} part ${at.wp ?? 'complete'}, which this write cannot continue`,
          );
        }
      }
    }
    if (spilledAt) {
      deps.spilled?.add(pk, sk);
      // The item holds exactly the cells up to its spill position; the rest of this write goes to overflow items.
      for (const [child, list] of routeToOverflow(sk, beyondPosition(all, spilledAt))) await writeItem(deps, pk, child, list, result);
      return;
    }
  }
}

/**
 * Adds the TTL of item `sk` to an update's SET or REMOVE list (RowWriterDeps.expiresAt, by its base item): `#ex` set
 * to the stamp, removed for `null` (and without the hook), left out for `undefined`.
 */
export function stampExpiry(
  deps: RowWriterDeps,
  sk: string,
  set: string[],
  remove: string[],
  names: Record<string, string>,
  values: Record<string, AttributeValue>,
): void {
  const expiresAt = deps.expiresAt ? deps.expiresAt(baseSk(sk)) : null;
  if (expiresAt === undefined) return;
  names['#ex'] = EXPIRES_ATTR;
  if (expiresAt === null) remove.push('#ex');
  else {
    values[':ex'] = { N: String(expiresAt) };
    set.push('#ex = :ex');
  }
}

/** The write units an UpdateItem consumed: DynamoDB charges one per started KB of the larger of the item before and after. */
export function writeUnits(consumed: ConsumedCapacity | undefined): number {
  return consumed?.CapacityUnits ?? consumed?.WriteCapacityUnits ?? 0;
}

/**
 * Marks an item spilled at the position this writer has just written, if it is still there (another writer may
 * have moved it meanwhile; the next UpdateItem then finds out as usual). True when marked.
 */
async function markSpilled(deps: RowWriterDeps, pk: string, sk: string, at: ItemPosition, result: RowWriteResult): Promise<boolean> {
  // Position -1 is an item no count was written to (an overflow item holding sketches only, whose `wm` is -1).
  const wm = at.wm < 0 ? '(attribute_not_exists(#wm) OR #wm = :wm)' : '#wm = :wm';
  const out = await updateItem(deps, pk, sk, {
    UpdateExpression: 'SET #ov = :one',
    ConditionExpression: `${wm} AND ${at.wp === undefined ? 'attribute_not_exists(#wp)' : '#wp = :wp'} AND attribute_not_exists(#ov)`,
    ExpressionAttributeNames: POSITION_NAMES,
    ExpressionAttributeValues: {
      ':one': { N: '1' },
      ':wm': { N: String(at.wm) },
      ...(at.wp === undefined ? {} : { ':wp': { N: String(at.wp) } }),
    },
  });
  if (!out) {
    result.conditionFailures++;
    return false;
  }
  result.updates++;
  await deps.afterUpdate?.(pk, sk);
  return true;
}

/**
 * Marks an item spilled at its position, read consistently, after a write that does not move the position (a sketch
 * write, sketches.ts) found the item at SPILL_AT_KB or more: every count up to that position is in the item, and the
 * counts beyond it, and later sketches, go to its overflow items. True when the item is spilled now; false when a
 * count write moved the position in between (that write measures the item and marks it in turn, or the next does).
 */
export async function markSpilledAtPosition(deps: RowWriterDeps, pk: string, sk: string): Promise<boolean> {
  const { spilled } = await readWatermark(deps, pk, sk, { updates: 0, conditionFailures: 0 }, true);
  if (spilled) deps.spilled?.add(pk, sk);
  return spilled;
}

/**
 * DynamoDB's refusal of an UpdateItem that would take its item past 400 KB (as updateItem throws it): an item that
 * grew past SPILL_AT_KB unmarked (a write whose units were not seen, a crash before markSpilled, or older than the
 * overflow items).
 */
export function isItemTooLarge(err: unknown): boolean {
  const cause = err instanceof PermanentWriteError ? (err.cause as Error | undefined) : undefined;
  return cause?.name === 'ValidationException' && /Item size (to update )?has exceeded/.test(cause.message);
}

/** How many whole buckets from the head fit one UpdateItem (at least one; never one that needs parts). */
function takeWholeBuckets(sorted: Bucket[]): number {
  const attrs = new Set<string>();
  let n = 0;
  while (n < sorted.length) {
    const b = sorted[n]!;
    let add = 0;
    for (const a of b.attrs) if (!attrs.has(a)) add++;
    if (n > 0 && (b.attrs.size > MAX_ATTRS_PER_UPDATE || attrs.size + add > MAX_ATTRS_PER_UPDATE)) break;
    for (const a of b.attrs) attrs.add(a);
    n++;
  }
  return n;
}

/**
 * An item's position, read consistently. The read is charged for the whole item (4 KB per read unit): an item past
 * MISSED_SPILL_KB not marked spilled (a missed check), or any item with `spill`, is marked spilled at the position read.
 */
async function readWatermark(
  deps: RowWriterDeps,
  pk: string,
  sk: string,
  result: RowWriteResult,
  spill = false,
): Promise<ItemPosition & { spilled: boolean }> {
  const out = await getItemOutput(deps, pk, sk, { expression: '#wm, #wp, #ov', names: POSITION_NAMES }).catch((err: unknown) => {
    throw wrapWriteError(err, pk, sk);
  });
  const wm = out.Item?.[WATERMARK_ATTR]?.N;
  const part = out.Item?.[WATERMARK_PART_ATTR]?.N;
  const at = { wm: wm === undefined ? -1 : Number(wm), wp: part === undefined ? undefined : Number(part) };
  const units = out.ConsumedCapacity?.CapacityUnits ?? out.ConsumedCapacity?.ReadCapacityUnits ?? 0;
  const spilled =
    out.Item?.[SPILLED_ATTR] !== undefined || ((spill || units * 4 > MISSED_SPILL_KB) && (await markSpilled(deps, pk, sk, at, result)));
  return { ...at, spilled };
}

/**
 * A writer's GetItem of some attributes (consistent unless `consistent` is false), metered; errors as
 * RetryableWriteError or PermanentWriteError.
 */
export async function readForWrite(
  deps: RowWriterDeps,
  pk: string,
  sk: string,
  projection: string,
  names: Record<string, string>,
  consistent = true,
): Promise<Record<string, AttributeValue> | undefined> {
  try {
    return await readItem(deps, pk, sk, { expression: projection, names }, consistent);
  } catch (err) {
    throw wrapWriteError(err, pk, sk);
  }
}

/**
 * One UpdateItem of the item pk / sk, metered: its output, or undefined when its condition refused it; any other
 * error as RetryableWriteError or PermanentWriteError.
 */
export async function updateItem(
  deps: RowWriterDeps,
  pk: string,
  sk: string,
  update: Pick<
    UpdateItemCommandInput,
    'UpdateExpression' | 'ConditionExpression' | 'ExpressionAttributeNames' | 'ExpressionAttributeValues'
  >,
): Promise<UpdateItemCommandOutput | undefined> {
  try {
    return await metered(deps.meter, 'UpdateItem', () =>
      deps.client.send(
        new UpdateItemCommand({ TableName: deps.table, Key: { pk: { S: pk }, sk: { S: sk } }, ...update, ReturnConsumedCapacity: 'TOTAL' }),
      ),
    );
  } catch (err) {
    if (classifyError(err) === 'condition_failed') return undefined;
    throw wrapWriteError(err, pk, sk);
  }
}

/** A DynamoDB error of a write as RetryableWriteError or PermanentWriteError, naming the item. */
function wrapWriteError(err: unknown, pk: string, sk: string): Error {
  const msg = `${(err as Error)?.name ?? 'Error'}: ${(err as Error)?.message ?? String(err)} (item ${pk} / ${sk})`;
  // Credentials, permissions and the table are the deployment's to fix, not the row's: such a refusal waits like an
  // outage (a failed job would strand the row, its flush job id fixed while it stays dirty), and only a refusal of the
  // request itself goes to the failed set.
  if (isTransientError(err)) return new RetryableWriteError(msg, { cause: err });
  return new PermanentWriteError(msg, { cause: err });
}
