import { BatchGetItemCommand, GetItemCommand, QueryCommand, type AttributeValue, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import {
  baseSk,
  ERASED_ATTR,
  EXPIRES_ATTR,
  SKETCH_VERSION_ATTR,
  SPILLED_ATTR,
  WATERMARK_ATTR,
  WATERMARK_PART_ATTR,
} from '@tally/key-layout';
import { entriesByItem, entryOf, type CountEntry } from './cells';
import { beyondPosition, childSks, overflowEnd, parentSk, routeToOverflow } from './overflow';
import { ItemBudgetError, RetryableReadError } from './errors';
import { metered, type DynamoMeter } from './meter';

/** A DynamoDB counter item: its watermark and every counter attribute as an exact integer. */
export interface StoredItem {
  sk: string;
  /** Last bucket seq applied to the item; -1 when it has none (or does not exist). */
  wm: number;
  /** Set while bucket `wm` is applied in parts: the last part applied (row-writer). */
  wp?: number;
  /** The item has spilled: counts beyond its position are in its overflow items (overflow.ts). */
  spilled?: true;
  attrs: Map<string, bigint>;
  /** Binary attributes (distinct-count sketches, stored form; see sketches.ts), when the item has any. */
  blobs?: Map<string, Uint8Array>;
}

export interface RowReaderDeps {
  client: DynamoDBClient;
  table: string;
  meter: DynamoMeter;
  /** The pause between tries of unprocessed keys (getItems); default a timer. Tests pass one that does not wait. */
  sleep?: (ms: number) => Promise<void>;
}

/**
 * The pauses between tries of unprocessed keys one getItems call may take, all its chunks and rounds together: what one
 * chunk's nine tries pause (4.55 s) fits, so a read of many chunks under throttling gives up as soon as a read of one
 * does (RetryableReadError, a 503), not after nine tries of each chunk in turn (about 90 s for 2,000 items).
 */
const READ_RETRY_PAUSES_MS = 5_000;

/**
 * A DynamoDB item as a StoredItem: every number attribute but the marks and the TTL a counter, every binary one a
 * sketch. A tombstone item (ERASED_ATTR, libs/tenants erasure.ts) has neither: it reads as an empty item at its `wm`
 * (the fence), so a merge counts only the Redis entries of later buckets.
 */
export function toStoredItem(item: Record<string, AttributeValue>): StoredItem {
  const attrs = new Map<string, bigint>();
  let wm = -1;
  let wp: number | undefined;
  let blobs: Map<string, Uint8Array> | undefined;
  let spilled = false;
  for (const [name, v] of Object.entries(item)) {
    if (name === 'pk' || name === 'sk' || name === SKETCH_VERSION_ATTR || name === ERASED_ATTR || name === EXPIRES_ATTR) continue;
    if (name === WATERMARK_ATTR) wm = Number(v.N);
    else if (name === WATERMARK_PART_ATTR) wp = Number(v.N);
    else if (name === SPILLED_ATTR) spilled = true;
    else if (v.N !== undefined) attrs.set(name, BigInt(v.N));
    else if (v.B !== undefined) (blobs ??= new Map()).set(name, v.B);
  }
  return {
    sk: item['sk']?.S ?? '',
    wm,
    ...(wp === undefined ? {} : { wp }),
    ...(spilled ? { spilled: true as const } : {}),
    attrs,
    ...(blobs ? { blobs } : {}),
  };
}

/**
 * Items of one pk with `fromSk <= sk <= toSk`, and the overflow items of toSk (all others in the range sort inside
 * it), with consistent reads in one Query (paginated only past 1 MB). With `maxItems`, reads at most one item more
 * than that and throws ItemBudgetError when there are more (overflow items of spilled items).
 */
export async function queryItems(
  deps: RowReaderDeps,
  pk: string,
  fromSk: string,
  toSk: string,
  maxItems?: number,
): Promise<{ items: StoredItem[]; requests: number }> {
  const items: StoredItem[] = [];
  let start: Record<string, AttributeValue> | undefined;
  let requests = 0;
  do {
    const out = await metered(deps.meter, 'Query', () =>
      deps.client.send(
        new QueryCommand({
          TableName: deps.table,
          KeyConditionExpression: 'pk = :pk AND sk BETWEEN :a AND :b',
          ExpressionAttributeValues: { ':pk': { S: pk }, ':a': { S: fromSk }, ':b': { S: overflowEnd(toSk) } },
          ConsistentRead: true,
          ExclusiveStartKey: start,
          ...(maxItems === undefined ? {} : { Limit: maxItems + 1 - items.length }),
          ReturnConsumedCapacity: 'TOTAL',
        }),
      ),
    );
    requests++;
    for (const it of out.Items ?? []) items.push(toStoredItem(it));
    if (maxItems !== undefined && items.length > maxItems)
      throw new ItemBudgetError(items.length, maxItems, items.filter((it) => it.spilled).length);
    start = out.LastEvaluatedKey;
  } while (start);
  return { items, requests };
}

/** One item (consistent read); undefined when absent. */
export async function getItem(deps: RowReaderDeps, pk: string, sk: string): Promise<StoredItem | undefined> {
  const item = await readItem(deps, pk, sk);
  return item ? toStoredItem(item) : undefined;
}

/**
 * One item's attributes, all or `projection`'s (a GetItem, metered); undefined when absent. Consistent unless
 * `consistent` is false: an eventually consistent read costs half the read units and may miss the latest writes.
 */
export async function readItem(
  deps: RowReaderDeps,
  pk: string,
  sk: string,
  projection?: { expression: string; names: Record<string, string> },
  consistent = true,
): Promise<Record<string, AttributeValue> | undefined> {
  return (await getItemOutput(deps, pk, sk, projection, consistent)).Item;
}

/** readItem's GetItem whole: the item and the capacity it consumed (charged for the whole item, whatever the projection). */
export async function getItemOutput(
  deps: RowReaderDeps,
  pk: string,
  sk: string,
  projection?: { expression: string; names: Record<string, string> },
  consistent = true,
) {
  return metered(deps.meter, 'GetItem', () =>
    deps.client.send(
      new GetItemCommand({
        TableName: deps.table,
        Key: { pk: { S: pk }, sk: { S: sk } },
        ConsistentRead: consistent,
        ...(projection ? { ProjectionExpression: projection.expression, ExpressionAttributeNames: projection.names } : {}),
        ReturnConsumedCapacity: 'TOTAL',
      }),
    ),
  );
}

/**
 * Many items by key (BatchGetItem, 100 per call, consistent, unprocessed keys retried with backoff within
 * READ_RETRY_PAUSES_MS for the whole call, then RetryableReadError), and the overflow items of every spilled item
 * among them (one more round per level). Keyed `pk\u0000sk`. With `maxItems`, every item read counts, overflow items
 * too: a round that would pass it is not read, and ItemBudgetError is thrown instead.
 */
export async function getItems(
  deps: RowReaderDeps,
  keys: ReadonlyArray<{ pk: string; sk: string }>,
  maxItems?: number,
): Promise<{ items: Map<string, StoredItem>; requests: number }> {
  const items = new Map<string, StoredItem>();
  let requests = 0;
  let round: ReadonlyArray<{ pk: string; sk: string }> = keys;
  let requested = 0;
  let paused = 0;
  while (round.length > 0) {
    if (maxItems !== undefined && requested + round.length > maxItems) {
      throw new ItemBudgetError(requested + round.length, maxItems, [...items.values()].filter((it) => it.spilled).length);
    }
    requested += round.length;
    const next: Array<{ pk: string; sk: string }> = [];
    for (let i = 0; i < round.length; i += 100) {
      let pending: Array<Record<string, AttributeValue>> = round.slice(i, i + 100).map((k) => ({ pk: { S: k.pk }, sk: { S: k.sk } }));
      for (let attempt = 0; pending.length > 0; attempt++) {
        if (attempt > 0) {
          const pause = Math.min(1000, 25 * 2 ** attempt);
          if (paused + pause > READ_RETRY_PAUSES_MS)
            throw new RetryableReadError(`BatchGetItem left ${pending.length} keys unprocessed after ${paused} ms of retries`);
          paused += pause;
          await (deps.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms))))(pause);
        }
        const out = await metered(deps.meter, 'BatchGetItem', () =>
          deps.client.send(
            new BatchGetItemCommand({
              RequestItems: { [deps.table]: { Keys: pending, ConsistentRead: true } },
              ReturnConsumedCapacity: 'TOTAL',
            }),
          ),
        );
        requests++;
        for (const it of out.Responses?.[deps.table] ?? []) {
          const stored = toStoredItem(it);
          const pk = it['pk']?.S ?? '';
          items.set(`${pk}\u0000${stored.sk}`, stored);
          if (stored.spilled) for (const sk of childSks(stored.sk)) next.push({ pk, sk });
        }
        pending = out.UnprocessedKeys?.[deps.table]?.Keys ?? [];
      }
    }
    round = next;
  }
  return { items, requests };
}

/**
 * DynamoDB items plus exactly the Redis counts they do not hold yet: an entry is added to an item's cell
 * only when its bucket seq is above that item's watermark, or equal to it while the item holds only parts
 * 0..wp of that bucket and the cell is in a later part (partsOfBucket, the writer's cut). Items absent from
 * DynamoDB count as wm = -1. A cell beyond the position of a spilled item belongs to its overflow item (see
 * overflow.ts), judged by that item's position in turn; the overflow items' attributes add to their base item's,
 * but only those of an overflow item whose parent was read spilled: a read of several requests (a Query's pages) can
 * find an item not yet spilled and then, written meanwhile, its overflow items, whose counts `entries` (read first)
 * hold already. (A spill never goes back, so an overflow item of an item read unspilled holds only later writes.)
 * Returns base sk -> attribute -> value.
 */
export function mergeItems(items: Iterable<StoredItem>, entries: readonly CountEntry[]): Map<string, Map<string, bigint>> {
  const out = new Map<string, Map<string, bigint>>();
  const bySk = new Map<string, StoredItem>();
  for (const it of items) bySk.set(it.sk, it);
  const held = (sk: string): boolean => {
    const parent = parentSk(sk);
    return parent === undefined || (bySk.get(parent)?.spilled === true && held(parent));
  };
  for (const it of bySk.values()) {
    if (!held(it.sk)) continue;
    const base = baseSk(it.sk);
    const attrs = out.get(base);
    if (!attrs) out.set(base, new Map(it.attrs));
    else for (const [a, v] of it.attrs) attrs.set(a, (attrs.get(a) ?? 0n) + v);
  }
  const addBeyond = (base: string, sk: string, list: Array<{ entry: CountEntry; attrs: string[] }>) => {
    const it = bySk.get(sk);
    const rest = beyondPosition(list, it ?? { wm: -1 });
    if (rest.length === 0) return;
    if (it?.spilled) {
      for (const [child, l] of routeToOverflow(sk, rest)) addBeyond(base, child, l);
      return;
    }
    const attrs = entryOf(out, base, () => new Map());
    for (const { entry, attrs: names } of rest) for (const a of names) attrs.set(a, (attrs.get(a) ?? 0n) + entry.value);
  };
  for (const [sk, list] of entriesByItem(entries)) addBeyond(sk, sk, list);
  return out;
}
