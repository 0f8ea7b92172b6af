import { setTimeout as sleep } from 'node:timers/promises';
import { DeleteItemCommand, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import type { BucketEraser, RowErasure } from '@tally/buckets';
import { ERASED_ATTR, EXPIRES_ATTR, keptForWindow, monthSk, parseDayKey, SPILLED_ATTR, TOTAL_SK, WATERMARK_ATTR } from '@tally/key-layout';
import type { CompiledRules } from '@tally/schema';
import type { Job, JobType, Queue } from 'bullmq';
import { checkStore, deletionOf, getTenant, notFound, REUSABLE_AT_ATTR, type TenantDb } from './admin';
import { TenantError } from './errors';
import { conditional, indexEntry, keyItemKey, LISTING_SK_PREFIX, readAll, S, str, tenantKey, tenantPk, writeAll, type Item } from './items';

/**
 * Deleting a store and erasing a visitor (docs/DESIGN.md "Privacy"). Both are idempotent and can be run again
 * after an interruption; both leave a tombstone in Redis for the dedupe window (tombstoneWindow), which the
 * apply, fold and write scripts honour, so a batch or a flush in flight re-creates nothing; and both replace the
 * DynamoDB counter items by tombstone items (replaceByTombstones), so that a flush that read its outbox before and
 * writes after (its job's lock lapsed: the writer paused, or cut off from Redis while DynamoDB answers) re-creates
 * nothing there either.
 */
export interface ErasureDeps {
  db: TenantDb;
  eraser: BucketEraser;
  /** Every shard of the queues that carry a store's work: `events` and `dynamo-writes`. */
  queues: readonly Queue[];
  /**
   * Their shards past QUEUE_SHARDS that hold jobs (a lowered QUEUE_SHARDS left them: leftoverShardQueues), looked for
   * at each call and handled as `queues`; the call closes them.
   */
  leftoverQueues?: () => Promise<readonly Queue[]>;
  /**
   * How long the tombstones are kept at least: this program's DEDUPE_WINDOW_SECONDS. A batch is never applied later
   * than the aggregators' window after its acceptance, so the window they publish is used instead when it is longer
   * (tombstoneWindow).
   */
  tombstoneSeconds: number;
  /** Told (a line) when the window the aggregators publish is not `tombstoneSeconds`, and which one is used. */
  onWindowDiffers?: (line: string) => void;
  /** Longest wait for the store's (or visitor's) running jobs to finish before its DynamoDB items go. Default 60 s. */
  activeJobsTimeoutMs?: number;
  now?: () => number;
}

/**
 * How long a tombstone item is kept (its EXPIRES_ATTR, from the erasure): a flush that read its outbox before the
 * erasure and writes more than this later is not fenced any more (it would re-create the items it writes).
 */
export const TOMBSTONE_ITEM_DAYS = 30;
const DAY_S = 86_400;

/**
 * How long the marker a finished deletion leaves in the store id's tenant index entry is kept after the id is free
 * again (DynamoDB's TTL, EXPIRES_ATTR): until then deleting the store again says when it was deleted.
 */
const MARKER_KEPT_DAYS = TOMBSTONE_ITEM_DAYS;

/** What deleting a store removed. */
export interface StoreDeletion {
  store: string;
  removed: {
    /**
     * Counter items (every entity: store, products, visitors, …; month and TOTAL items) whose data went: each is a
     * tombstone item now (replaceByTombstones); tombstones already there are not counted.
     */
    dynamoItems: number;
    /** API keys (their key items; the listing goes with the tenant). */
    apiKeys: number;
    /** Redis keys: buckets, outboxes, dedupe records, caches, rankings, counts. */
    redisKeys: number;
    /** Queued jobs (waiting, delayed, completed) and failed jobs (the dead-letter queue) of the store. */
    queuedJobs: number;
    failedJobs: number;
  };
  /** Until when late batches of the store are dropped (its Redis tombstone). */
  tombstoneUntil: string;
  /**
   * From when the store id can be used again (createTenant refuses it before): when the tombstone renewed at the end
   * of the deletion expires (DEDUPE_WINDOW_SECONDS and its slack, keptForWindow, after it).
   */
  reusableAt: string;
}

/** What erasing a visitor removed. */
export interface VisitorErasure {
  store: string;
  visitor: string;
  removed: {
    /**
     * The DynamoDB items holding data (month items and TOTAL) of the visitor's rows (visitorRows), each a tombstone item
     * now (replaceByTombstones).
     */
    dynamoItems: number;
    /** Counts not yet in DynamoDB: outbox fields and open or sealed bucket fields. */
    outboxEntries: number;
    bucketEntries: number;
    /** Whether a cached history was dropped. */
    cachedHistory: boolean;
    /** The rows' own distinct-count sketches not yet in DynamoDB (rules with a distinct metric on such an entity). */
    sketches: number;
    /** The daily rankings (top lists) the visitor was taken out of (rules that rank such an entity). */
    rankings: number;
  };
  /** Until when the visitor's in-flight events are dropped (its tombstone). */
  tombstoneUntil: string;
}

const QUEUED_STATES: JobType[] = ['waiting', 'delayed', 'prioritized', 'waiting-children', 'completed'];
const PAGE = 500;

/**
 * Deletes a store and everything of it: the tenant, its API keys, every DynamoDB item of every entity, every
 * Redis key, and its queued and failed jobs. In order, so that nothing is re-created:
 * 1. the Redis tombstone is set (every script of the store becomes a no-op: late batches and in-flight flushes
 *    write nothing, and the aggregator drops a batch of the store rather than failing it) and the tenant and its
 *    tenant index entry are marked `deletingAt` (every app then treats the store as unknown, within its cache TTL);
 * 2. its API keys are deleted, its queued and failed jobs removed, and its running jobs waited for;
 * 3. its DynamoDB items are replaced by tombstone items (replaceByTombstones), fenced at the store's epoch (read
 *    now: no script of the store seals or folds under the tombstone) − 1, and the items its rows' outbox entries
 *    would go to get one too; then its Redis keys are deleted (after the items: a deletion resumed after that
 *    finds the fence in the tombstones, and nothing left in Redis to fence), then the tenant's items (its listings
 *    read again until none is left, with the key items they name: a key issueKey wrote meanwhile goes too);
 * 4. the tombstone is renewed, and the index entry becomes the id's marker, a tombstone item of it (StoreIdMarker:
 *    ERASED_ATTR the time, reusableAt the renewed tombstone's expiry, expiresAt MARKER_KEPT_DAYS after it):
 *    createTenant refuses the id until then, as it refuses it while the entry is marked `deletingAt`, since the
 *    tombstone would drop every batch of a new store of that id.
 * An interrupted deletion is resumed by calling it again: the tenant stays marked until it goes, and its entry in
 * the tenant index (a marker last) carries the same mark, so a deletion cut short after the tenant went is finished
 * too. Throws TALLY_ERR_INVALID_STORE for a malformed id, and TALLY_ERR_TENANT_NOT_FOUND for a store that does not
 * exist: one that never did, or one whose deletion finished (the message then says when, and from when the id is
 * free; nothing is renewed).
 */
export async function deleteStore(deps: ErasureDeps, store: string): Promise<StoreDeletion> {
  const { db } = deps;
  const now = deps.now ?? Date.now;
  checkStore(store);
  // A tenant, or (its deletion cut short after the tenant went) a marked index entry: anything else is no store.
  if (!(await getTenant(db, store))) {
    const deletion = await deletionOf(db, store);
    if (deletion && 'reusableAt' in deletion)
      throw new TenantError(
        'TALLY_ERR_TENANT_NOT_FOUND',
        `store ${store} was deleted at ${deletion.deletedAt} (that deletion finished; nothing is left to delete): its id can be used again from ${deletion.reusableAt}`,
      );
    if (!deletion)
      throw new TenantError('TALLY_ERR_TENANT_NOT_FOUND', `tenant ${store} does not exist (it never did, or its deletion finished)`);
  }
  // The tombstone first: from the moment the tenant looks deleted, a batch of the store is dropped, not failed.
  const windowSeconds = await tombstoneWindow(deps);
  await deps.eraser.markStoreDeleted(store, windowSeconds);
  const mark = {
    UpdateExpression: 'SET deletingAt = if_not_exists(deletingAt, :at)',
    ExpressionAttributeValues: { ':at': S(new Date(now()).toISOString()) },
  };
  // Only a tenant that is there: an update would otherwise create one that holds nothing but the mark. Refused when it
  // is gone already (a deletion cut short after it, or one running beside this one): the steps below are idempotent.
  await conditional(
    db.dynamo.send(
      new UpdateItemCommand({ TableName: db.table, Key: tenantKey(store), ConditionExpression: 'attribute_exists(pk)', ...mark }),
    ),
  );
  // The index entry too (made if a tenant from before the index has none): it outlives the tenant, so a call after
  // a deletion cut short between the two can tell that store from one that never existed.
  await db.dynamo.send(new UpdateItemCommand({ TableName: db.table, Key: indexEntry(store), ...mark }));

  // API keys: the key items go now (a key stops working within the apps' key cache TTL); their listings below.
  const keysGone = new Set<string>();
  const deleteKeyItems = async (items: readonly Item[]) => {
    for (const item of items) {
      const sk = str(item, 'sk') ?? '';
      if (!sk.startsWith(LISTING_SK_PREFIX) || keysGone.has(sk)) continue;
      await db.dynamo.send(new DeleteItemCommand({ TableName: db.table, Key: keyItemKey(sk.slice(LISTING_SK_PREFIX.length)) }));
      keysGone.add(sk);
    }
  };
  await deleteKeyItems(await queryAll(db, tenantPk(store)));

  const ofStore: JobMatch = (data) => data['store'] === store;
  const jobs = await withQueues(deps, async (queues) => {
    const removed = await removeJobs(queues, ofStore);
    await waitForRunningJobs(deps, queues, ofStore, `store ${store}`);
    return removed;
  });

  // What a flush that read an outbox before the tombstone may still write (the outboxes stay as they are under it).
  const unwritten = await deps.eraser.unwritten(store);
  const items = await scanStoreItems(db, store, ITEM_STATE);
  const dynamoItems = await replaceByTombstones(db, now(), items, unwritten.epoch, unwritten.outboxDays);
  const redisKeys = await deps.eraser.deleteStoreKeys(store);

  // The tenant last, its index entry after it, so that a tenant that exists is always listed (an entry without its
  // tenant is passed over by listTenants); a call cut short between the two is resumed by the entry's mark. Read
  // again until nothing is left: a listing issueKey wrote after the read above goes with its key item.
  for (let items = await queryAll(db, tenantPk(store)); items.length > 0; items = await queryAll(db, tenantPk(store))) {
    await deleteKeyItems(items);
    await writeAll(
      db,
      items.map((k) => ({ DeleteRequest: { Key: { pk: k['pk']!, sk: k['sk']! } } })),
    );
  }
  // Renewed at the end: late batches are dropped for a whole dedupe window after the data is gone.
  await deps.eraser.markStoreDeleted(store, windowSeconds);
  const done = now();
  const reusableAt = done + keptForWindow(windowSeconds) * 1000;
  await leaveMarker(db, store, done, reusableAt);
  return {
    store,
    removed: { dynamoItems, apiKeys: keysGone.size, redisKeys, queuedJobs: jobs.queued, failedJobs: jobs.failed },
    tombstoneUntil: new Date(done + windowSeconds * 1000).toISOString(),
    reusableAt: new Date(reusableAt).toISOString(),
  };
}

/**
 * Makes the store id's index entry the marker of its finished deletion (StoreIdMarker in admin.ts): over the entry
 * this deletion marked `deletingAt`, or the marker of a run beside this one that ended earlier (never over the entry
 * of a store created meanwhile, which createTenant cannot do before the marker says so, nor moving `reusableAt`
 * earlier).
 */
async function leaveMarker(db: TenantDb, store: string, at: number, reusableAt: number): Promise<void> {
  const update = new UpdateItemCommand({
    TableName: db.table,
    Key: indexEntry(store),
    UpdateExpression: 'SET #deletedAt = :at, #reusable = :reusable, #expires = :expires REMOVE deletingAt',
    ConditionExpression: 'attribute_exists(deletingAt) OR #reusable < :reusable',
    ExpressionAttributeNames: { '#deletedAt': ERASED_ATTR, '#reusable': REUSABLE_AT_ATTR, '#expires': EXPIRES_ATTR },
    ExpressionAttributeValues: {
      ':at': S(new Date(at).toISOString()),
      ':reusable': { N: String(reusableAt) },
      ':expires': { N: String(Math.ceil(reusableAt / 1000) + MARKER_KEPT_DAYS * DAY_S) },
    },
  });
  await conditional(db.dynamo.send(update));
}

/**
 * Erases one visitor of a store: the rows keyed by their id (visitorRows: the `visitor` entity's, and those of every
 * other entity keyed by the same dimension alone), each row's DynamoDB items (replaced by tombstone items, fenced at
 * the epoch its Redis erasure read − 1: replaceByTombstones), its counts still in Redis (outbox, open and sealed
 * buckets), its own sketches, its rankings and its cached history; store and product aggregates stay. Their events
 * still in flight are dropped for the dedupe window (tombstoneWindow). Throws TALLY_ERR_TENANT_NOT_FOUND for an
 * unknown store, TALLY_ERR_NOT_ERASABLE when the rules key no entity by the visitor alone (nothing is erasable:
 * nothing is written, no tombstone set), and TALLY_ERR_VISITOR_NOT_FOUND when nothing of the visitor was found and no
 * earlier call was left unfinished (the tombstones are set all the same; tombstone items of an earlier erasure are no
 * data). Every step is idempotent: a call cut short (anywhere, and between a row's ERASE_ROW and UNRANK too) is
 * finished by calling it again, which counts what it still finds, a ranking left behind included, and puts tombstone
 * items on the days of the outboxes the calls before it erased (ERASE_ROW keeps them with the erased-rows entry:
 * RowErasure.outboxDays). Every ERASE_ROW also marks the row's erasure unfinished (its field in `erasedDays`, days or
 * none), and only a finished call clears the mark with the days (BucketEraser.forgetErasedDays), so a mark still there
 * means an earlier call was cut short after its ERASE_ROW (RowErasure.unfinished): the call that finds it has found
 * the visitor, whatever the first call removed (it answers what it removed itself, zero counts when the first call had
 * removed everything), and a call after a finished one finds nothing. When a flush of a row is still running after
 * `activeJobsTimeoutMs`, the items are replaced all the same (the days of the erased outbox are known only now), the
 * mark and the days are kept, and TALLY_ERR_DELETION_INCOMPLETE is thrown after that, its message saying what this
 * call removed (`removed`, as the answer would have).
 */
export async function eraseVisitor(deps: ErasureDeps & { rules: CompiledRules }, store: string, visitor: string): Promise<VisitorErasure> {
  const now = deps.now ?? Date.now;
  const tenant = await getTenant(deps.db, store);
  if (!tenant || tenant.deletingAt) throw notFound(store);
  const pks = visitorRows(deps.rules, store, visitor);
  if (pks.length === 0)
    throw new TenantError(
      'TALLY_ERR_NOT_ERASABLE',
      `the rollup rules key no entity by the visitor id alone, so no visitor can be erased: nothing of visitor ${visitor} was erased, and their events still in flight are not dropped (see README "Privacy")`,
    );
  const windowSeconds = await tombstoneWindow(deps);
  const until = now() + windowSeconds * 1000;
  const tombstone = { until, ttlSeconds: windowSeconds };
  const eraseRows = async () => {
    const rows: RowErasure[] = [];
    for (const pk of pks) rows.push(await deps.eraser.eraseRow(store, pk, { ...tombstone, now: now() }));
    return rows;
  };
  const redis = await eraseRows();
  // A flush of these rows that read its outbox before the erasure may still be writing: wait for it (what it writes
  // after the items are replaced is refused by their fence, but one that spills an item meanwhile would write to
  // overflow items the replacement did not see spilled).
  let incomplete: TenantError | undefined;
  try {
    const ofRows: JobMatch = (data) => data['store'] === store && pks.includes(data['pk'] as string);
    await withQueues(deps, (queues) => waitForRunningJobs(deps, queues, ofRows, `visitor ${visitor}`));
  } catch (err) {
    if (!(err instanceof TenantError && err.code === 'TALLY_ERR_DELETION_INCOMPLETE')) throw err;
    incomplete = err;
  }
  const erasedAt = now();
  let dynamoItems = 0;
  for (const [i, pk] of pks.entries()) {
    const items = await queryAll(deps.db, pk, ITEM_STATE);
    dynamoItems += await replaceByTombstones(deps.db, erasedAt, items, redis[i]!.epoch, new Map([[pk, redis[i]!.outboxDays]]));
  }
  // Again: a query that read the items before they went may have cached them meanwhile.
  const again = await eraseRows();
  const rows = [...redis, ...again];
  const sum = (of: (r: RowErasure) => number) => rows.reduce((n, r) => n + of(r), 0);
  const removed = {
    dynamoItems,
    outboxEntries: sum((r) => r.outboxEntries),
    bucketEntries: sum((r) => r.bucketEntries),
    cachedHistory: rows.some((r) => r.cachedHistory),
    sketches: sum((r) => r.sketches),
    rankings: sum((r) => r.rankings),
  };
  // The mark and the days stay in `xd` (the call run again finds them), and the answer the caller does not get is told
  // here.
  if (incomplete)
    throw new TenantError(
      'TALLY_ERR_DELETION_INCOMPLETE',
      `${incomplete.message} (this call removed ${Object.entries(removed)
        .map(([k, v]) => `${k}=${String(v)}`)
        .join(', ')})`,
    );
  // Finished: the days of the erased outboxes are fenced now, so they and the mark are no longer kept (but a row whose
  // second pass still found outbox counts, whose days were not fenced: a call run again fences them).
  await deps.eraser.forgetErasedDays(
    store,
    pks.filter((_, i) => again[i]!.outboxEntries === 0),
  );
  // A cached history alone is no data of the visitor: a query caches an empty history too (and it is dropped anyway).
  // An earlier call's mark (`xd`, while the row's erased-rows entry lives) is: that call was cut short (its 503, an
  // error, a crash) after its ERASE_ROW, whatever it removed, and this one finished it (forgetErasedDays). The first
  // pass's: the second finds this call's own.
  const unfinished = redis.some((r) => r.unfinished);
  if (removed.dynamoItems + removed.outboxEntries + removed.bucketEntries + removed.sketches + removed.rankings === 0 && !unfinished) {
    throw new TenantError(
      'TALLY_ERR_VISITOR_NOT_FOUND',
      `store ${store} has no data of visitor ${visitor} (events of it still in flight are dropped until ${new Date(until).toISOString()})`,
    );
  }
  return { store, visitor, removed, tombstoneUntil: new Date(until).toISOString() };
}

/**
 * The rows keyed by a visitor id: one per entity the rules key by the visitor's dimension alone
 * (CompiledRules.visitorEntities, the entities retention expires too), in the rules' order. A row keyed by the
 * visitor and another dimension (an entity with a key of two or more) is not among them: its other key values are not
 * known (see DESIGN.md "Erasing a visitor"; loadRulesOrExit warns of such rules).
 */
function visitorRows(rules: CompiledRules, store: string, visitor: string): string[] {
  return [...rules.visitorEntities].map((entity) => rules.pkOf(store, entity, [visitor]));
}

/**
 * The dedupe window the tombstones are kept for (then its slack, keptForWindow): the longer of `tombstoneSeconds` and
 * the aggregators' DEDUPE_WINDOW_SECONDS as they publish it (read now), since they apply a batch up to their window
 * after its acceptance; a difference is told (`onWindowDiffers`).
 */
async function tombstoneWindow(deps: ErasureDeps): Promise<number> {
  const own = deps.tombstoneSeconds;
  const published = await deps.eraser.publishedDedupeWindow();
  const seconds = Math.max(own, published ?? own);
  if (published !== undefined && published !== own)
    deps.onWindowDiffers?.(
      `the aggregators' DEDUPE_WINDOW_SECONDS is ${published} (published in Redis), this program's ${own}: tombstones are kept for ${seconds} s`,
    );
  return seconds;
}

/** Every item of a partition, with (when given) only pk, sk and the attributes `extra` names (when an item has them). */
const queryAll = (db: TenantDb, pk: string, extra?: readonly string[]) =>
  readAll(db, {
    KeyConditionExpression: 'pk = :pk',
    ExpressionAttributeValues: { ':pk': S(pk) },
    ...(extra && projectionOf(extra)),
  });

/** A projection of pk, sk and the attributes `extra` names (ExpressionAttributeNames: theirs may hold dots). */
const projectionOf = (extra: readonly string[]) => ({
  ProjectionExpression: ['pk', 'sk', ...extra.map((_, i) => `#x${i}`)].join(', '),
  ...(extra.length > 0 && { ExpressionAttributeNames: Object.fromEntries(extra.map((name, i) => [`#x${i}`, name])) }),
});

/** What replaceByTombstones reads of a counter item: its position, whether it is a tombstone, whether it spilled. */
const ITEM_STATE = [WATERMARK_ATTR, ERASED_ATTR, SPILLED_ATTR];

/**
 * The keys of every counter item of a store: pk `<store>` or `<store>#…`, with the attributes `extra` names (when
 * an item has them). Rows of all entities are separate partitions, so this is a Scan of the table (a cost
 * proportional to the table: see DESIGN.md "Known limits"). Used by deleteStore and restampRetention.
 */
export const scanStoreItems = (db: TenantDb, store: string, extra: readonly string[] = []) =>
  readAll(
    db,
    {
      FilterExpression: 'pk = :s OR begins_with(pk, :p)',
      ExpressionAttributeValues: { ':s': S(store), ':p': S(`${store}#`) },
      ...projectionOf(extra),
    },
    true,
  );

/**
 * Replaces counter items by tombstone items, so that a flush that read its outbox before an erasure (or a store's
 * deletion) and writes after it, its job's lock lapsed meanwhile, re-creates nothing: each is PUT (a write unit, as
 * a delete; 25 per BatchWriteItem) as `{pk, sk, wm: fence, ERASED_ATTR: now (ISO), EXPIRES_ATTR: now +
 * TOMBSTONE_ITEM_DAYS}`. The fence is the store's epoch the erasure read − 1 (`epoch`: every bucket such a flush
 * can hold has a lower seq, every bucket with later counts of the row this one or a higher), and at least the `wm`
 * of every item read (so with no epoch, as in a deletion resumed after the Redis keys went, the fence a first run
 * put): the flush's UpdateItem of buckets at or below it is refused by the watermark condition, and the writer
 * takes them for written; a flush of later counts passes it, and its write removes the mark and the stamp
 * (libs/dynamo row-writer). Readers take a tombstone for an empty item at `wm` (libs/dynamo toStoredItem).
 * The items put are:
 * - every item of `items` that holds data (not a tombstone already): the data goes;
 * - the month items and TOTAL of the days of each row's outbox entries (`outboxDays`), whatever they hold, but a
 *   tombstone of `items` already fenced at the fence or above (a run before this one put it): the flush writes them
 *   there, to items that need not exist yet (a visitor's first flush, a new month);
 * - the 16 overflow items of every spilled item of `items` (overflow.ts in libs/dynamo): a flush that read it
 *   spilled writes beyond its position there, to overflow items that need not exist yet.
 * Tombstones of an earlier erasure not among these stay as they are. `items` must hold pk, sk and ITEM_STATE.
 * Returns the number of items that held data.
 */
async function replaceByTombstones(
  db: TenantDb,
  now: number,
  items: readonly Item[],
  epoch: number | undefined,
  outboxDays: ReadonlyMap<string, readonly string[]>,
): Promise<number> {
  let fence = epoch === undefined ? -1 : epoch - 1;
  for (const it of items) fence = Math.max(fence, Number(it[WATERMARK_ATTR]?.N ?? -1));
  const keys = new Map<string, { pk: string; sk: string }>();
  const add = (pk: string, sk: string) => keys.set(`${pk}\u0000${sk}`, { pk, sk });
  // Tombstones that fence as high as these would: an outbox day's item already one is left as it is.
  const fenced = new Set<string>();
  let data = 0;
  for (const it of items) {
    if (it[ERASED_ATTR] !== undefined) {
      if (Number(it[WATERMARK_ATTR]?.N ?? -1) >= fence) fenced.add(`${str(it, 'pk') ?? ''}\u0000${str(it, 'sk') ?? ''}`);
      continue;
    }
    const pk = str(it, 'pk') ?? '';
    const sk = str(it, 'sk') ?? '';
    data++;
    add(pk, sk);
    if (it[SPILLED_ATTR] !== undefined) for (const child of overflowItems(sk)) add(pk, child);
  }
  const addUnfenced = (pk: string, sk: string) => {
    if (!fenced.has(`${pk}\u0000${sk}`)) add(pk, sk);
  };
  for (const [pk, days] of outboxDays) {
    if (days.length > 0) addUnfenced(pk, TOTAL_SK);
    for (const day of days) {
      const d = parseDayKey(day);
      addUnfenced(pk, monthSk(d.year, d.month));
    }
  }
  const mark = {
    [WATERMARK_ATTR]: { N: String(fence) },
    [ERASED_ATTR]: S(new Date(now).toISOString()),
    [EXPIRES_ATTR]: { N: String(Math.floor(now / 1000) + TOMBSTONE_ITEM_DAYS * DAY_S) },
  };
  await writeAll(
    db,
    [...keys.values()].map(({ pk, sk }) => ({ PutRequest: { Item: { pk: S(pk), sk: S(sk), ...mark } } })),
  );
  return data;
}

/** The 16 overflow items of an item: libs/dynamo overflow.ts `childSks` (`M2024-05#0`…; `M2024-05#3a`… of `M2024-05#3`). */
const overflowItems = (sk: string) => [...'0123456789abcdef'].map((h) => `${sk}${sk.includes('#') ? '' : '#'}${h}`);

type JobMatch = (data: Record<string, unknown>) => boolean;

/** Runs `use` on `deps.queues` and the leftover shards found now, closed after it. */
async function withQueues<T>(deps: ErasureDeps, use: (queues: readonly Queue[]) => Promise<T>): Promise<T> {
  const leftover = (await deps.leftoverQueues?.()) ?? [];
  try {
    return await use([...deps.queues, ...leftover]);
  } finally {
    await Promise.all(leftover.map((q) => q.close()));
  }
}

/** The matching jobs of a queue in `states`, read a page at a time. */
async function findJobs(queue: Queue, states: JobType[], match: JobMatch): Promise<Job[]> {
  const found: Job[] = [];
  for (let from = 0; ; from += PAGE) {
    const page = await queue.getJobs(states, from, from + PAGE - 1, true);
    found.push(...page.filter((j) => j && match((j.data ?? {}) as Record<string, unknown>)));
    if (page.length < PAGE) return found;
  }
}

/** Removes the matching jobs that are not running from every queue. Returns how many, failed ones apart. */
async function removeJobs(queues: readonly Queue[], match: JobMatch): Promise<{ queued: number; failed: number }> {
  const counts = { queued: 0, failed: 0 };
  for (const queue of queues) {
    for (const [kind, states] of [
      ['queued', QUEUED_STATES],
      ['failed', ['failed']],
    ] as const) {
      for (const job of await findJobs(queue, [...states], match)) {
        try {
          await job.remove();
          counts[kind]++;
        } catch {
          // Taken by a worker meanwhile (locked): waitForRunningJobs waits for it, and the tombstone voids it.
        }
      }
    }
  }
  return counts;
}

/** Waits until no matching job is running; throws TALLY_ERR_DELETION_INCOMPLETE past the timeout (call again). */
async function waitForRunningJobs(deps: ErasureDeps, queues: readonly Queue[], match: JobMatch, what: string): Promise<void> {
  const deadline = Date.now() + (deps.activeJobsTimeoutMs ?? 60_000);
  for (;;) {
    let running = 0;
    for (const queue of queues) running += (await findJobs(queue, ['active'], match)).length;
    if (running === 0) return;
    if (Date.now() > deadline) {
      throw new TenantError(
        'TALLY_ERR_DELETION_INCOMPLETE',
        `${running} job(s) of ${what} are still running; nothing they write survives the tombstone, but run the call again to finish`,
      );
    }
    await sleep(100);
  }
}
