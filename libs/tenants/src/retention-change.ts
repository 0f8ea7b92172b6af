import { setTimeout as sleep } from 'node:timers/promises';
import { UpdateItemCommand, type AttributeValue } from '@aws-sdk/client-dynamodb';
import { baseSk, ERASED_ATTR, EXPIRES_ATTR, parseMonthSk, retentionExpiry, TOTAL_SK } from '@tally/key-layout';
import type { CompiledRules } from '@tally/schema';
import { getTenant, notFound, type TenantDb } from './admin';
import { scanStoreItems } from './erasure';
import { conditional, S, str } from './items';
import { isVisitorRow } from './retention';

/**
 * Restamping a store's visitor items after its `historyMonths` changed (docs/DESIGN.md "Privacy"). The writer
 * stamps EXPIRES_ATTR only on the items it updates, so without this every item written before the change keeps the
 * stamp of the old setting: a raised (or removed) limit loses history at the old date, a lowered one keeps it past
 * the new date.
 *
 * The race with the writers: a dynamo-writer caches its tenants (TenantDirectory, cacheTtlMs 60 s in
 * apps/dynamo-writer/src/main.ts) and stamps with the setting it holds, so for up to that long after the change a
 * flush may still stamp the old TTL, after a walk that ran at once. So restampRetention first waits `settleMs`
 * (RETENTION_SETTLE_MS: that cache TTL plus a flush that looked the tenant up just before the change and is still
 * writing), then reads the tenant (a consistent read: the setting it applies is the current one) and walks. Every
 * stamp a writer sets after that is the current setting's; the walk's own writes are conditioned on the stamp it
 * read, so it never overwrites one a writer set meanwhile (nor re-creates an item deleted meanwhile). What this does
 * not cover: a writer that cannot read the tenant item (DynamoDB failing its lookups) keeps serving its last-known
 * setting for as long as that lasts (directory.ts); run the restamp again after such an outage.
 */

/** restampRetention's default wait: the dynamo-writer's tenant cache TTL (60 s) plus 30 s for a flush in flight. */
export const RETENTION_SETTLE_MS = 90_000;

/**
 * How often a store's admin key may change the store's historyMonths (the query API's PATCH /v1/admin/store passes it
 * to changeTenant as `historyChangeEveryMs`): once per 24 h. Each change schedules a restamp, a Scan of the whole
 * table, so without a limit one store could keep the table scanned about every RETENTION_SETTLE_MS. The operator
 * (PATCH /v1/operator/stores/{store}, `npm run tenants -- set`) is not limited; its changes are recorded too, and so
 * start the store's 24 h.
 */
export const RETENTION_CHANGE_INTERVAL_MS = 24 * 3_600_000;

export interface RestampOptions {
  /**
   * The rules the store's rows are written with: their visitor rows, those of every entity whose key includes the
   * visitor's dimension (`visitorKeyedEntities`), are the items restamped, as the writer stamps them (visitorExpiry).
   */
  rules: Pick<CompiledRules, 'visitorKeyedEntities'>;
  /** The clock (ms since the epoch): what is already due, and the floor of a stamp (below). Default `Date.now`. */
  now?: () => number;
  /** How long to wait before the tenant is read and the walk starts. Default RETENTION_SETTLE_MS. */
  settleMs?: number;
  /** How it waits (tests). Default a timer. */
  sleep?: (ms: number) => Promise<void>;
  /** UpdateItems in flight at once. Default 16. */
  concurrency?: number;
}

/** What a restamp did. */
export interface RetentionRestamp {
  store: string;
  /** The setting applied: months, or null (visitor history kept for ever: no stamp). */
  historyMonths: number | null;
  /** Visitor items read (every item of every visitor row: month items, TOTAL, their overflow items). */
  scanned: number;
  /** Items whose stamp was changed (set, moved or removed); the rest already had the right one. */
  restamped: number;
  /** Items whose update was refused because they changed after the Scan: deleted, or written by a writer (which
   *  stamped them with the current setting itself). */
  changedMeanwhile: number;
  /** Visitor rows with a TOTAL but no month item, whose TOTAL kept its stamp (see restampRetention). */
  totalsWithoutMonths: number;
}

const DAY_S = 86_400;
/**
 * DynamoDB's TTL ignores an item whose stamp is more than five years in the past (it is then kept for ever):
 * retentionExpiry gives no stamp older than a year (OLDEST_STAMP_DAYS), and a stamp already in the past and less than
 * four years old is honoured as it is when the new one is in the past too.
 */
const HONOURED_PAST_S = 4 * 365 * DAY_S;

/**
 * Sets EXPIRES_ATTR of every visitor item of `store` (every item of its rows of the entities whose key in `opts.rules`
 * includes the visitor's dimension, visitorKeyedEntities) to what its current `historyMonths` gives, as the writer would
 * (retentionExpiry of the item's base item, `baseSk`: overflow items, which also hold the sketches, follow it):
 * - a month item `M2024-05`: the first day of the month `historyMonths` later, plus a day;
 * - TOTAL: the writer stamps it from the current month when it writes, the visitor's last active month; here it
 *   is recomputed from the latest month item of the row (its stamp equals that item's). A row without a month item
 *   keeps its TOTAL's stamp: its months are gone already (TTL), so it holds no history a new limit could keep (and
 *   queries under a limit never read TOTAL), and its old stamp tells its month only under the setting it was
 *   written with, which need not be the one before this change (counted in `totalsWithoutMonths`);
 * - with historyMonths unset (kept for ever): the stamp is removed from every month item and TOTAL.
 * An item whose new stamp and old one are both in the past keeps the old one: it is due either way (but see
 * OLDEST_STAMP_DAYS in libs/key-layout).
 * Tombstone items (ERASED_ATTR: an erased visitor's, erasure.ts) are passed over: they hold no history, their stamp
 * is their own lifetime (TOMBSTONE_ITEM_DAYS), and they count neither as the row's items nor as its latest month.
 *
 * Only items whose stamp changes are written: one UpdateItem each, on condition that the item still exists and still
 * has the stamp read (an item deleted meanwhile is not re-created; one a writer updated meanwhile has the current
 * setting's stamp). Idempotent: an interrupted run is finished by running it again (what it did is then unchanged).
 * It waits `settleMs` first (see above). Its cost: a Scan of the table (as deleting a store), the store's items held
 * in memory as keys and stamps, and a write unit per item whose stamp changes. Throws TALLY_ERR_TENANT_NOT_FOUND for
 * an unknown store or one being deleted.
 */
export async function restampRetention(db: TenantDb, store: string, opts: RestampOptions): Promise<RetentionRestamp> {
  const settleMs = opts.settleMs ?? RETENTION_SETTLE_MS;
  if (settleMs > 0) await (opts.sleep ?? sleep)(settleMs);
  const tenant = await getTenant(db, store);
  if (!tenant || tenant.deletingAt) throw notFound(store);
  const months = tenant.historyMonths ?? null;
  const nowS = Math.floor((opts.now ?? Date.now)() / 1000);
  /** In the past, and recent enough for DynamoDB's TTL to delete the item. */
  const due = (s: number | undefined) => s !== undefined && s <= nowS && s > nowS - HONOURED_PAST_S;

  const visitorItems = (await scanStoreItems(db, store, [EXPIRES_ATTR, ERASED_ATTR])).filter(
    (item) => isVisitorRow(opts.rules, str(item, 'pk') ?? '') && item[ERASED_ATTR] === undefined,
  );
  const rows = Map.groupBy(visitorItems, (item) => str(item, 'pk') ?? '');

  const result: RetentionRestamp = { store, historyMonths: months, scanned: 0, restamped: 0, changedMeanwhile: 0, totalsWithoutMonths: 0 };
  const writes: Array<{ pk: string; sk: string; old: AttributeValue | undefined; stamp: number | undefined }> = [];
  for (const [pk, items] of rows) {
    result.scanned += items.length;
    // The latest month of the row: `M2024-05` sks sort as their months do.
    const latest = items
      .map((i) => baseSk(str(i, 'sk') ?? ''))
      .reduce<string | undefined>((a, b) => (parseMonthSk(b) && (!a || b > a) ? b : a), undefined);
    let totalLeft = false;
    for (const item of items) {
      const sk = str(item, 'sk') ?? '';
      const base = baseSk(sk);
      if (base !== TOTAL_SK && !parseMonthSk(base)) continue; // not an item the writer stamps
      let stamp: number | undefined;
      if (months !== null) {
        if (base === TOTAL_SK && !latest) {
          totalLeft = true;
          continue;
        }
        stamp = retentionExpiry(base === TOTAL_SK ? latest! : base, months, nowS * 1000, tenant.timeZone)!;
      }
      const old = item[EXPIRES_ATTR];
      const had = old?.N === undefined ? undefined : Number(old.N);
      if (had === stamp || (due(stamp) && due(had))) continue;
      writes.push({ pk, sk, old, stamp });
    }
    if (totalLeft) result.totalsWithoutMonths++;
  }

  await forEachAtMost(writes, opts.concurrency ?? 16, async ({ pk, sk, old, stamp }) => {
    const values: Record<string, AttributeValue> = {};
    if (stamp !== undefined) values[':ex'] = { N: String(stamp) };
    if (old) values[':old'] = old;
    const update = new UpdateItemCommand({
      TableName: db.table,
      Key: { pk: S(pk), sk: S(sk) },
      UpdateExpression: stamp === undefined ? 'REMOVE #ex' : 'SET #ex = :ex',
      // Nor an item erased meanwhile (a tombstone keeps its own stamp).
      ConditionExpression: `attribute_exists(pk) AND attribute_not_exists(#er) AND ${old ? '#ex = :old' : 'attribute_not_exists(#ex)'}`,
      ExpressionAttributeNames: { '#ex': EXPIRES_ATTR, '#er': ERASED_ATTR },
      ...(Object.keys(values).length > 0 && { ExpressionAttributeValues: values }),
    });
    if (await conditional(db.dynamo.send(update))) result.restamped++;
    else result.changedMeanwhile++;
  });
  return result;
}

/** Runs `fn` on every item, at most `limit` at once; the first failure stops the rest from starting and is thrown. */
async function forEachAtMost<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (!failed && next < items.length) {
      try {
        await fn(items[next++]!);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
