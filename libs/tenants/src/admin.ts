import {
  GetItemCommand,
  PutItemCommand,
  QueryCommand,
  UpdateItemCommand,
  type AttributeValue,
  type DynamoDBClient,
} from '@aws-sdk/client-dynamodb';
import {
  canonicalTimeZone,
  ERASED_ATTR,
  formatDate,
  retentionStart,
  sharesInternalHashTag,
  STORE_ID_PATTERN,
  timeZoneProblem,
} from '@tally/key-layout';
import { RetentionChangeLimitedError, TenantError, type TenantErrorCode } from './errors';
import {
  bool,
  conditional,
  getAll,
  indexEntry,
  LISTING_SK_PREFIX,
  listingSk,
  readAll,
  keyItemKey,
  listingKey,
  S,
  scopesAttr,
  scopesOf,
  str,
  TENANT_INDEX_BUILT_SK,
  TENANT_INDEX_PK,
  TENANT_SK,
  tenantKey,
  tenantPk,
  writeAll,
  type Item,
} from './items';
import { generateKey, hashKey, isScope, SCOPES, type Scope } from './keys';

/** Where tenants and keys are kept: the counters table. */
export interface TenantDb {
  dynamo: DynamoDBClient;
  table: string;
}

export interface TenantInfo {
  store: string;
  timeZone: string;
  createdAt: string;
  /** The store's ingest budget in events per second, when it differs from the collector's default. */
  ingestEventsPerSecond?: number;
  /** ISO 4217 code revenue is shown in (set-currency); absent until set. */
  currency?: string;
  /** Months of visitor history kept (the current month and the N - 1 before it); unset = kept for ever. */
  historyMonths?: number;
  /**
   * `YYYY-MM-DD`, the first day of a month: no visitor count before it is kept, whatever historyMonths says. Set when
   * a limit is lifted (changeTenant): the first day that limit still kept then (or a later one set by an earlier
   * lift). The months before it had expired, but a visitor's TOTAL item still holds their counts, so queries count a
   * visitor's history from month items from this day on (libs/query visitorHistoryStart). Unset: no limit was ever
   * lifted.
   */
  historyTrimmedBefore?: string;
  /** Set while the store is being deleted: the store is then unknown to every app. */
  deletingAt?: string;
}

/** A key as listed: never the key itself, only its public id (the first 12 hex digits of its sha256). */
export interface KeyInfo {
  keyId: string;
  store: string;
  label: string;
  scopes: Scope[];
  revoked: boolean;
  createdAt: string;
  revokedAt?: string;
}

const DEFAULT_TIME_ZONE = 'UTC';
const LABEL = /^[\x20-\x7e]{0,200}$/;
const KEY_ID = /^[0-9a-f]{6,64}$/;

/** Throws TenantError `code` with the message `detail` gives unless `ok`. */
function check(ok: boolean, code: TenantErrorCode, detail: () => string): void {
  if (!ok) throw new TenantError(code, detail());
}

export const checkStore = (store: string) =>
  check(STORE_ID_PATTERN.test(store), 'TALLY_ERR_INVALID_STORE', () => {
    return `store id ${JSON.stringify(store)} is invalid: 1-128 characters of A-Z a-z 0-9 _ . : - starting with a letter or digit`;
  });
/**
 * checkStore, and for a store to be created also that its id cannot be the hash tag of Tally's own Redis keys
 * (sharesInternalHashTag: `t:w0` is work-set shard 0's under KEY_PREFIX `t`, and deleting such a store would delete
 * the shard's work set). Only creation refuses such an id: a store that has one already keeps working.
 */
const checkNewStore = (store: string) => {
  checkStore(store);
  check(!sharesInternalHashTag(store), 'TALLY_ERR_INVALID_STORE', () => {
    return (
      `store id ${JSON.stringify(store)} cannot be taken by a new store: ids that end in :w<digits>, :events, :seal, ` +
      ":dynamo-writes or :maintenance (optionally followed by :<digits>) can be the hash tags of Tally's own Redis keys"
    );
  });
};
export const checkTimeZone = (timeZone: string) =>
  check(timeZoneProblem(timeZone) === undefined, 'TALLY_ERR_INVALID_TIME_ZONE', () => {
    return `time zone ${JSON.stringify(timeZone)} ${timeZoneProblem(timeZone)}`;
  });
/** The spelling a store keeps of a time zone checkTimeZone accepted (`europe/paris` → `Europe/Paris`: canonicalTimeZone). */
const zoneToKeep = (timeZone: string) => canonicalTimeZone(timeZone) ?? timeZone;

export const checkLabel = (label: string) =>
  check(LABEL.test(label), 'TALLY_ERR_INVALID_LABEL', () => 'a key label is 0-200 printable ASCII characters');

export function checkScopes(scopes: readonly string[]): Scope[] {
  const bad = scopes.filter((s) => !isScope(s));
  check(scopes.length > 0 && bad.length === 0, 'TALLY_ERR_INVALID_SCOPES', () => {
    const got = bad.length > 0 ? `; got ${bad.map((s) => JSON.stringify(s)).join(', ')}` : '';
    return `scopes must be one or more of ${SCOPES.join(', ')}${got}`;
  });
  return [...new Set(scopes as Scope[])];
}

/** Reads a tenant (consistent read); undefined when the store has none. */
export async function getTenant(db: TenantDb, store: string): Promise<TenantInfo | undefined> {
  const item = await tenantItem(db, store);
  return item ? tenantOf(store, item) : undefined;
}

/** The tenant item as stored (consistent read); undefined when the store has none. */
async function tenantItem(db: TenantDb, store: string): Promise<Item | undefined> {
  const out = await db.dynamo.send(new GetItemCommand({ TableName: db.table, Key: tenantKey(store), ConsistentRead: true }));
  return out.Item;
}

function tenantOf(store: string, item: Item): TenantInfo {
  const budget = item[INGEST_BUDGET_ATTR]?.N;
  const t: TenantInfo = {
    store,
    timeZone: str(item, 'timeZone') ?? DEFAULT_TIME_ZONE,
    createdAt: str(item, 'createdAt') ?? '',
    ...(budget === undefined ? {} : { ingestEventsPerSecond: Number(budget) }),
  };
  const currency = str(item, 'currency');
  if (currency) t.currency = currency;
  const months = item['historyMonths']?.N;
  if (months) t.historyMonths = Number(months);
  const trimmed = str(item, HISTORY_TRIMMED_ATTR);
  if (trimmed) t.historyTrimmedBefore = trimmed;
  const deletingAt = str(item, 'deletingAt');
  if (deletingAt) t.deletingAt = deletingAt;
  return t;
}

const INGEST_BUDGET_ATTR = 'ingestEventsPerSecond';

/** The largest ingest budget a store can be given, in events per second. */
const MAX_INGEST_BUDGET = 10_000_000;

/**
 * Sets a store's ingest budget (events per second; the collector's token bucket holds INGEST_BUDGET_BURST_SECONDS
 * of it), or with `undefined` returns it to the default INGEST_BUDGET_EVENTS_PER_SECOND. Collectors see the change
 * within KEY_CACHE_TTL_MS.
 */
export async function setIngestBudget(db: TenantDb, store: string, eventsPerSecond: number | undefined): Promise<void> {
  await updateTenant(db, store, { ingestEventsPerSecond: eventsPerSecond ?? null });
}

/** The ISO 4217 codes this runtime knows (Intl: the active currencies of the ICU data, e.g. EUR, USD, JPY). */
const CURRENCIES = new Set(Intl.supportedValuesOf('currency'));

export const checkCurrency = (currency: string) =>
  check(CURRENCIES.has(currency), 'TALLY_ERR_INVALID_CURRENCY', () => {
    return `currency ${JSON.stringify(currency)} is not an ISO 4217 code such as EUR, USD or JPY`;
  });

/**
 * Creates a tenant with its settings (time zone default UTC; a canonical zone name is kept in its own spelling,
 * `europe/paris` → `Europe/Paris`), each checked before anything is written: a bad one leaves no tenant behind.
 * Throws TALLY_ERR_INVALID_STORE for an id STORE_ID_PATTERN refuses or one that could be the hash tag of Tally's own
 * Redis keys (checkNewStore).
 * Throws TALLY_ERR_TENANT_EXISTS when the store exists, and TALLY_ERR_STORE_ID_RESERVED while its id is not free: a
 * store of that id is being deleted, or was deleted and its Redis tombstone, which drops every batch of the id (a new
 * store's too), has not expired yet (deleteStore leaves the time in the id's tenant index entry: StoreIdMarker).
 * DynamoDB only: the index entry's conditional write is the check, so a deletion that starts or ends meanwhile is seen.
 */
export async function createTenant(
  db: TenantDb,
  store: string,
  opts: { timeZone?: string; currency?: string; historyMonths?: number; now?: () => number } = {},
): Promise<TenantInfo> {
  checkNewStore(store);
  const { currency, historyMonths } = opts;
  checkSettings({ timeZone: opts.timeZone ?? DEFAULT_TIME_ZONE, currency, historyMonths });
  const timeZone = zoneToKeep(opts.timeZone ?? DEFAULT_TIME_ZONE);
  const at = (opts.now ?? Date.now)();
  const tenant: TenantInfo = {
    store,
    timeZone,
    createdAt: new Date(at).toISOString(),
    ...(currency === undefined ? {} : { currency }),
    ...(historyMonths === undefined ? {} : { historyMonths }),
  };
  // The index entry first, so that every tenant is listed (one whose put then fails is passed over by listTenants);
  // only over an entry that is no deletion's: neither marked `deletingAt` (running, or cut short) nor a marker of a
  // finished one whose id is not free yet.
  const listed = new PutItemCommand({
    TableName: db.table,
    Item: indexEntry(store),
    ConditionExpression: 'attribute_not_exists(deletingAt) AND (attribute_not_exists(#reusable) OR #reusable <= :now)',
    ExpressionAttributeNames: { '#reusable': REUSABLE_AT_ATTR },
    ExpressionAttributeValues: { ':now': { N: String(at) } },
  });
  if (!(await conditional(db.dynamo.send(listed)))) throw await idReserved(db, store);
  const created = new PutItemCommand({
    TableName: db.table,
    Item: {
      ...tenantKey(store),
      store: S(store),
      timeZone: S(timeZone),
      createdAt: S(tenant.createdAt),
      ...(currency === undefined ? {} : { currency: S(currency) }),
      ...(historyMonths === undefined ? {} : { historyMonths: { N: String(historyMonths) } }),
    },
    ConditionExpression: 'attribute_not_exists(pk)',
  });
  if (!(await conditional(db.dynamo.send(created)))) throw new TenantError('TALLY_ERR_TENANT_EXISTS', `tenant ${store} already exists`);
  return tenant;
}

/**
 * The attributes of the tenant index entry (`_tenants`/`<store>`) that deleteStore leaves when a deletion finishes,
 * in place of the entry, a tombstone item of it: ERASED_ATTR (`wm.e`, the ISO time of the deletion, as on the
 * tombstone items of the store's counter items), REUSABLE_AT_ATTR (epoch ms: when the store's Redis tombstone
 * expires, from when createTenant takes the id again) and `expiresAt` (epoch s: DynamoDB's TTL drops the marker
 * MARKER_KEPT_DAYS after that, erasure.ts). listTenants passes it over (it has no tenant).
 */
export const REUSABLE_AT_ATTR = 'reusableAt';

/** A finished deletion's marker of a store id, when its index entry is one (deletedAt and reusableAt, ISO). */
export interface StoreIdMarker {
  deletedAt: string;
  reusableAt: string;
}

/** The deletion state of a store id's index entry: running (or cut short) since `deletingAt`, finished (a marker), or none. */
export async function deletionOf(db: TenantDb, store: string): Promise<{ deletingAt: string } | StoreIdMarker | undefined> {
  const out = await db.dynamo.send(new GetItemCommand({ TableName: db.table, Key: indexEntry(store), ConsistentRead: true }));
  const item = out.Item;
  if (!item) return undefined;
  const deletingAt = str(item, 'deletingAt');
  if (deletingAt !== undefined) return { deletingAt };
  const reusable = item[REUSABLE_AT_ATTR]?.N;
  if (reusable === undefined) return undefined;
  return { deletedAt: str(item, ERASED_ATTR) ?? '', reusableAt: new Date(Number(reusable)).toISOString() };
}

/** Why createTenant may not take the store id now (its index entry refused the write). */
async function idReserved(db: TenantDb, store: string): Promise<TenantError> {
  const d = await deletionOf(db, store);
  const message =
    d === undefined
      ? `store id ${store} was being deleted a moment ago; try again`
      : 'deletingAt' in d
        ? `store ${store} is being deleted (since ${d.deletingAt}; if that deletion was cut short, delete the store again to finish it): ` +
          'its id can be used again once the deletion has finished and its tombstone has expired (DEDUPE_WINDOW_SECONDS and its slack after)'
        : `store ${store} was deleted at ${d.deletedAt}: its id can be used again from ${d.reusableAt} (until then the tombstone of the ` +
          'deleted store drops every batch of that id)';
  return new TenantError('TALLY_ERR_STORE_ID_RESERVED', message);
}

/** Changes a tenant's time zone; days already counted stay in the days they were binned in. */
export async function setTimeZone(db: TenantDb, store: string, timeZone: string): Promise<void> {
  await updateTenant(db, store, { timeZone });
}

/**
 * What updateTenant changes; `historyMonths: null` keeps visitor history for ever again, `ingestEventsPerSecond: null`
 * returns the store to the collectors' default budget.
 */
export interface TenantSettings {
  timeZone?: string;
  currency?: string;
  historyMonths?: number | null;
  ingestEventsPerSecond?: number | null;
}

/** The longest retention that can be set: 100 years. */
export const MAX_HISTORY_MONTHS = 1200;

/** Throws the TenantError of the first setting given that is not valid. */
export function checkSettings({ timeZone, currency, historyMonths: m, ingestEventsPerSecond: b }: TenantSettings): void {
  if (timeZone !== undefined) checkTimeZone(timeZone);
  if (currency !== undefined) checkCurrency(currency);
  check(m === undefined || m === null || (Number.isInteger(m) && m >= 1 && m <= MAX_HISTORY_MONTHS), 'TALLY_ERR_INVALID_RETENTION', () => {
    return `historyMonths must be a whole number of months from 1 to ${MAX_HISTORY_MONTHS} (or null: keep for ever)`;
  });
  check(b === undefined || b === null || (Number.isInteger(b) && b >= 1 && b <= MAX_INGEST_BUDGET), 'TALLY_ERR_INVALID_BUDGET', () => {
    return `ingest budget ${b} is not a whole number of events per second from 1 to ${MAX_INGEST_BUDGET} (or none: the collectors' default)`;
  });
}

/** Changes a tenant's settings (one UpdateItem); returns the tenant as it now is. See changeTenant. */
export async function updateTenant(db: TenantDb, store: string, settings: TenantSettings): Promise<TenantInfo> {
  return (await changeTenant(db, store, settings)).tenant;
}

/**
 * The tenant item's epoch ms of the last write of historyMonths (changeTenant; changed or not): a restamp job waits
 * RETENTION_SETTLE_MS after it (apps/dynamo-writer restamp.processor.ts), whatever change it was queued for.
 */
const HISTORY_SET_AT_ATTR = 'historyMonthsSetAt';

/**
 * The tenant item's epoch ms of the last change of historyMonths (changeTenant, whoever made it; a write of the value
 * the store has is none): what `historyChangeEveryMs` counts from.
 */
const HISTORY_CHANGED_AT_ATTR = 'historyMonthsChangedAt';

/** The tenant item's TenantInfo.historyTrimmedBefore, written by changeTenant when it lifts a limit. */
const HISTORY_TRIMMED_ATTR = 'historyTrimmedBefore';

/** Writes of historyMonths tried before changeTenant gives up on a tenant item that other calls keep changing. */
const HISTORY_WRITE_ATTEMPTS = 3;

/** What changeTenant did. */
interface TenantChange {
  /** The tenant as it now is. */
  tenant: TenantInfo;
  /** Present when historyMonths changed: its value before (null: kept for ever) and when it changed (epoch ms). */
  history?: { before: number | null; changedAt: number };
}

interface TenantChangeOptions {
  /** The clock (epoch ms) of the change. Default `Date.now`. */
  now?: () => number;
  /**
   * Schedules the restamp of the store's visitor items (libs/queues scheduleRetentionRestamp), called when
   * historyMonths changes, twice: before the write (the tenant read then has another value; a failure stops the
   * change, nothing is written), so that a crash right after the write leaves a restamp queued; and after it, with
   * the time of the change (the queue keeps the last of a store's, see scheduleRetentionRestamp), so that a restamp
   * that was running or due meanwhile is followed by one that sees the change. A failure after the write is thrown too:
   * the change is made, and the restamp scheduled before it stands.
   */
  restamp?: (changedAt: number) => Promise<unknown>;
  /**
   * At most one change of historyMonths per this many ms (a store admin's PATCH: RETENTION_CHANGE_INTERVAL_MS): a
   * change sooner after the last one the tenant item records (HISTORY_CHANGED_AT_ATTR, whoever made it) throws
   * RetentionChangeLimitedError, with nothing written and no restamp scheduled. Writing the value the store already
   * has is no change and passes. Unset: no limit (the operator's routes, the tenants CLI).
   */
  historyChangeEveryMs?: number;
}

/**
 * Changes a tenant's settings in one UpdateItem and says whether historyMonths changed (its old value comes from that
 * same write, so two changes at once are each seen by one caller). A write of historyMonths, changed or not, also
 * records when (HISTORY_SET_AT_ATTR), and a change of it when it changed (HISTORY_CHANGED_AT_ATTR). With `restamp`, a
 * change of historyMonths schedules the restamp of the visitor items already written; with `historyChangeEveryMs`,
 * changes of historyMonths are limited (see TenantChangeOptions). Lifting a limit (historyMonths: null) also records
 * the first day it kept then (retentionStart at the write, in the store's zone as read), or keeps a later one recorded
 * before, as historyTrimmedBefore: the visitor counts before it had expired and are never counted again.
 *
 * A write of historyMonths first reads the tenant (consistently) to know whether it changes the value, and is
 * conditioned on what it read: on the value still being different (a change, which also records its time and, when
 * limited, checks that the last change is old enough) or still the same (no change). So concurrent calls cannot pass
 * a change unrecorded or beyond the limit; a write whose condition failed reads again and is tried again (at most
 * HISTORY_WRITE_ATTEMPTS times in all).
 */
export async function changeTenant(
  db: TenantDb,
  store: string,
  settings: TenantSettings,
  opts: TenantChangeOptions = {},
): Promise<TenantChange> {
  checkStore(store);
  checkSettings(settings);
  const now = opts.now ?? Date.now;
  const { currency, historyMonths: m, ingestEventsPerSecond } = settings;
  const timeZone = settings.timeZone === undefined ? undefined : zoneToKeep(settings.timeZone);
  const every = opts.historyChangeEveryMs;
  for (let attempt = 1; ; attempt++) {
    let changes = false;
    /** The tenant as read before a write of historyMonths. */
    let was: TenantInfo | undefined;
    if (m !== undefined) {
      const current = await tenantItem(db, store);
      if (!current || str(current, 'deletingAt')) throw notFound(store);
      was = tenantOf(store, current);
      changes = (was.historyMonths ?? null) !== m;
      const last = Number(current[HISTORY_CHANGED_AT_ATTR]?.N ?? -Infinity);
      const readAt = now();
      if (changes && every !== undefined && readAt < last + every) {
        throw new RetentionChangeLimitedError(store, last, every, last + every - readAt);
      }
      if (changes) await opts.restamp?.(readAt);
    }
    const at = now();
    // A limit lifted: the months it had expired stay out of every answer (TenantInfo.historyTrimmedBefore).
    const lifted = changes && m === null ? was : undefined;
    const trimmed = lifted && laterDay(lifted.historyTrimmedBefore, formatDate(retentionStart(lifted.historyMonths!, lifted.timeZone, at)));
    // Every setting given is SET to its value, or REMOVEd (historyMonths or ingestEventsPerSecond: null).
    const given = Object.entries({
      timeZone,
      currency,
      historyMonths: m,
      [INGEST_BUDGET_ATTR]: ingestEventsPerSecond,
      [HISTORY_SET_AT_ATTR]: m === undefined ? undefined : at,
      [HISTORY_CHANGED_AT_ATTR]: changes ? at : undefined,
      [HISTORY_TRIMMED_ATTR]: trimmed,
    }).filter(([, v]) => v !== undefined);
    const set = given.filter(([, v]) => v !== null).map(([name]) => `#${name} = :${name}`);
    const remove = given.filter(([, v]) => v === null).map(([name]) => `#${name}`);
    const names: Record<string, string> = Object.fromEntries(given.map(([name]) => [`#${name}`, name]));
    const values: Record<string, AttributeValue> = Object.fromEntries(
      given.flatMap(([name, v]) => (v === null || v === undefined ? [] : [[`:${name}`, typeof v === 'number' ? { N: String(v) } : S(v)]])),
    );
    const update = [set.length ? `SET ${set.join(', ')}` : '', remove.length ? `REMOVE ${remove.join(', ')}` : '']
      .filter(Boolean)
      .join(' ');
    if (!update) {
      const t = await getTenant(db, store);
      if (!t || t.deletingAt) throw notFound(store);
      return { tenant: t };
    }
    const conditions = ['attribute_exists(pk)', 'attribute_not_exists(deletingAt)'];
    if (m !== undefined) {
      // historyMonths as read: still different (a change; a limit lifted still the one `trimmed` comes from) or still
      // the same (none).
      if (m === null) conditions.push(changes ? '#historyMonths = :lifted' : 'attribute_not_exists(#historyMonths)');
      else
        conditions.push(
          changes ? '(attribute_not_exists(#historyMonths) OR #historyMonths <> :historyMonths)' : '#historyMonths = :historyMonths',
        );
      if (changes && every !== undefined) {
        const chg = `#${HISTORY_CHANGED_AT_ATTR}`;
        conditions.push(`(attribute_not_exists(${chg}) OR ${chg} <= :lastChangeBefore)`);
        values[':lastChangeBefore'] = { N: String(at - every) };
      }
    }
    if (lifted) values[':lifted'] = { N: String(lifted.historyMonths) };
    const write = new UpdateItemCommand({
      TableName: db.table,
      Key: tenantKey(store),
      UpdateExpression: update,
      ConditionExpression: conditions.join(' AND '),
      ExpressionAttributeNames: names,
      ...(Object.keys(values).length ? { ExpressionAttributeValues: values } : {}),
      ReturnValues: 'ALL_OLD',
    });
    const out = await conditional(db.dynamo.send(write));
    if (!out) {
      // Without historyMonths only a missing (or deleting) store fails the condition; with it, read again.
      if (m === undefined) throw notFound(store);
      if (attempt < HISTORY_WRITE_ATTEMPTS) continue;
      throw new Error(
        `the tenant item of store ${store} kept changing while its historyMonths was written (${attempt} attempts); try again`,
      );
    }
    const old = out.Attributes ?? {};
    // The tenant as the write left it: the item before it, with the settings given set or removed.
    const item: Item = { ...old };
    for (const [name, v] of given) {
      if (v === null) delete item[name];
      else item[name] = values[`:${name}`]!;
    }
    const tenant = tenantOf(store, item);
    const before = tenantOf(store, old).historyMonths ?? null;
    if (m === undefined || before === (tenant.historyMonths ?? null)) return { tenant };
    await opts.restamp?.(at);
    return { tenant, history: { before, changedAt: at } };
  }
}

/** The later of two `YYYY-MM-DD` days, `b` when `a` is undefined. */
const laterDay = (a: string | undefined, b: string) => (a !== undefined && a > b ? a : b);

/**
 * When the store's historyMonths was last written by changeTenant (epoch ms, a consistent read): undefined when it
 * never was, or for an unknown store.
 */
export async function historyMonthsSetAt(db: TenantDb, store: string): Promise<number | undefined> {
  const out = await db.dynamo.send(
    new GetItemCommand({
      TableName: db.table,
      Key: tenantKey(store),
      ConsistentRead: true,
      ProjectionExpression: '#at',
      ExpressionAttributeNames: { '#at': HISTORY_SET_AT_ATTR },
    }),
  );
  const at = out.Item?.[HISTORY_SET_AT_ATTR]?.N;
  return at === undefined ? undefined : Number(at);
}

/** Tenants per page of listTenantsPage unless told. */
const TENANTS_PAGE = 1_000;

/**
 * A page of the tenants, in store id order (bytes): a Query of the tenant index and BatchGetItems of its tenants
 * (about one read unit per tenant), whatever the size of the table. `after` is the `next` of the page before
 * (absent on the first); `next` is absent on the last page. A table whose index was never built (tenants made by a
 * version without it) is indexed first, once, by a Scan of the table; `reindex` does that again (tenants made by an
 * older version still running meanwhile).
 */
export async function listTenantsPage(
  db: TenantDb,
  opts: { after?: string; limit?: number; reindex?: boolean } = {},
): Promise<{ tenants: TenantInfo[]; next?: string }> {
  const limit = opts.limit ?? TENANTS_PAGE;
  check(Number.isSafeInteger(limit) && limit >= 1, 'TALLY_ERR_INVALID_LIMIT', () => {
    return `limit must be a whole number of at least 1, got ${limit}`;
  });
  if (opts.reindex || !(await indexBuilt(db))) await buildTenantIndex(db);
  // The marker sorts before every store id, so the first page starts after it.
  const { ids, more } = await indexPage(db, opts.after ?? TENANT_INDEX_BUILT_SK, limit);
  const items = await getAll(db, ids.map(tenantKey));
  // An index entry without its tenant (a deletion or a creation cut short) is passed over.
  const byStore = new Map(items.map((item) => [(str(item, 'pk') ?? '').slice(tenantPk('').length), item]));
  const tenants = ids.flatMap((store) => {
    const item = byStore.get(store);
    return item ? [tenantOf(store, item)] : [];
  });
  return more ? { tenants, next: ids[ids.length - 1]! } : { tenants };
}

/** Every tenant, in store id order: listTenantsPage page after page. */
export async function listTenants(db: TenantDb, opts: { reindex?: boolean } = {}): Promise<TenantInfo[]> {
  let page = await listTenantsPage(db, opts);
  const all = [...page.tenants];
  while (page.next !== undefined) {
    page = await listTenantsPage(db, { after: page.next });
    all.push(...page.tenants);
  }
  return all;
}

async function indexBuilt(db: TenantDb): Promise<boolean> {
  const out = await db.dynamo.send(
    new GetItemCommand({ TableName: db.table, Key: indexEntry(TENANT_INDEX_BUILT_SK), ConsistentRead: true }),
  );
  return out.Item !== undefined;
}

/** Up to `limit` store ids of the index after `after`, and whether more follow. */
async function indexPage(db: TenantDb, after: string, limit: number): Promise<{ ids: string[]; more: boolean }> {
  const ids: string[] = [];
  let start: Item | undefined;
  do {
    const out = await db.dynamo.send(
      new QueryCommand({
        TableName: db.table,
        KeyConditionExpression: 'pk = :pk AND sk > :after',
        ExpressionAttributeValues: { ':pk': S(TENANT_INDEX_PK), ':after': S(after) },
        ProjectionExpression: 'sk',
        ConsistentRead: true,
        Limit: limit + 1 - ids.length,
        ...(start && { ExclusiveStartKey: start }),
      }),
    );
    for (const item of out.Items ?? []) ids.push(str(item, 'sk') ?? '');
    start = out.LastEvaluatedKey;
  } while (start && ids.length <= limit);
  return { ids: ids.slice(0, limit), more: ids.length > limit };
}

/** Adds every tenant item of the table to the index (a Scan: its cost grows with the table), then marks it built. */
async function buildTenantIndex(db: TenantDb): Promise<void> {
  const tenantItems = await readAll(
    db,
    {
      FilterExpression: 'begins_with(pk, :p) AND sk = :meta',
      ExpressionAttributeValues: { ':p': S(tenantPk('')), ':meta': S(TENANT_SK) },
      ProjectionExpression: 'pk, deletingAt',
    },
    true,
  );
  // A tenant being deleted keeps its mark in its entry too (deleteStore resumes by it, createTenant refuses by it).
  await writeAll(
    db,
    tenantItems.map((item) => {
      const deletingAt = str(item, 'deletingAt');
      const entry = indexEntry((str(item, 'pk') ?? '').slice(tenantPk('').length));
      return { PutRequest: { Item: deletingAt === undefined ? entry : { ...entry, deletingAt: S(deletingAt) } } };
    }),
  );
  await db.dynamo.send(new PutItemCommand({ TableName: db.table, Item: indexEntry(TENANT_INDEX_BUILT_SK) }));
}

/** Sets the currency a store's revenue is shown in (an ISO 4217 code: EUR, USD, JPY…); counts are unchanged. */
export async function setCurrency(db: TenantDb, store: string, currency: string): Promise<void> {
  await updateTenant(db, store, { currency });
}

/**
 * Issues a new key for a store and returns it in plain text: the only time it is ever seen. Only its sha256 is
 * stored. The tenant's listing item is written before the key item, so every key that works is listed. The tenant is
 * read again after both writes: a deletion of the store that started meanwhile (and may have read the store's
 * listings before this one was written) is answered by deleting both again and TALLY_ERR_TENANT_NOT_FOUND, so no key
 * outlives its store (deleteStore also reads the listings again before it deletes them: either sees the other).
 */
export async function issueKey(db: TenantDb, store: string, scopes: readonly string[], label: string): Promise<string> {
  checkStore(store);
  const checked = checkScopes(scopes);
  checkLabel(label);
  const tenant = await getTenant(db, store);
  if (!tenant || tenant.deletingAt) throw notFound(store);
  const key = generateKey();
  const hash = hashKey(key);
  const createdAt = new Date().toISOString();
  const common = { store: S(store), scopes: scopesAttr(checked), label: S(label), revoked: { BOOL: false }, createdAt: S(createdAt) };
  await db.dynamo.send(new PutItemCommand({ TableName: db.table, Item: { ...listingKey(store, hash), keyHash: S(hash), ...common } }));
  await db.dynamo.send(
    new PutItemCommand({ TableName: db.table, Item: { ...keyItemKey(hash), ...common }, ConditionExpression: 'attribute_not_exists(pk)' }),
  );
  const after = await getTenant(db, store);
  if (!after || after.deletingAt) {
    await writeAll(db, [{ DeleteRequest: { Key: keyItemKey(hash) } }, { DeleteRequest: { Key: listingKey(store, hash) } }]);
    throw notFound(store);
  }
  return key;
}

/** The store's keys, oldest first, without the keys themselves. */
export async function listKeys(db: TenantDb, store: string): Promise<KeyInfo[]> {
  checkStore(store);
  const keys = (await listings(db, store, LISTING_SK_PREFIX)).map((item) => keyInfoOf(store, item));
  return keys.sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.keyId.localeCompare(b.keyId));
}

/** The store's key listings whose sk starts with `prefix`. */
const listings = (db: TenantDb, store: string, prefix: string) =>
  readAll(db, {
    KeyConditionExpression: 'pk = :pk AND begins_with(sk, :prefix)',
    ExpressionAttributeValues: { ':pk': S(tenantPk(store)), ':prefix': S(prefix) },
  });

function keyInfoOf(store: string, item: Item): KeyInfo {
  const hash = (str(item, 'sk') ?? '').slice(LISTING_SK_PREFIX.length);
  const info: KeyInfo = {
    keyId: hash.slice(0, 12),
    store,
    label: str(item, 'label') ?? '',
    scopes: scopesOf(item),
    revoked: bool(item, 'revoked'),
    createdAt: str(item, 'createdAt') ?? '',
  };
  const revokedAt = str(item, 'revokedAt');
  if (revokedAt) info.revokedAt = revokedAt;
  return info;
}

/**
 * Revokes a key of `store` by its key id (as listKeys shows it, or any longer prefix of its sha256). The key item
 * is revoked first, so a key stops working (within the directories' cache TTL) even if updating the listing
 * fails; revoking again is harmless and completes the listing.
 */
export async function revokeKey(db: TenantDb, store: string, keyId: string): Promise<KeyInfo> {
  checkStore(store);
  if (!KEY_ID.test(keyId))
    throw new TenantError('TALLY_ERR_KEY_NOT_FOUND', `key id ${JSON.stringify(keyId)} is not 6-64 lower-case hex digits (see: list-keys)`);
  const items = await listings(db, store, listingSk(keyId));
  if (items.length === 0) throw new TenantError('TALLY_ERR_KEY_NOT_FOUND', `store ${store} has no key with id ${keyId}`);
  if (items.length > 1)
    throw new TenantError('TALLY_ERR_KEY_NOT_FOUND', `key id ${keyId} matches ${items.length} keys of store ${store}; give more digits`);
  const listing = items[0]!;
  const hash = (str(listing, 'sk') ?? '').slice(LISTING_SK_PREFIX.length);
  const revokedAt = str(listing, 'revokedAt') ?? new Date().toISOString();
  const update = {
    UpdateExpression: 'SET #revoked = :t, #revokedAt = if_not_exists(#revokedAt, :at)',
    ConditionExpression: 'attribute_exists(pk) AND #store = :store',
    ExpressionAttributeNames: { '#revoked': 'revoked', '#revokedAt': 'revokedAt', '#store': 'store' },
    ExpressionAttributeValues: { ':t': { BOOL: true }, ':at': S(revokedAt), ':store': S(store) },
  };
  // Refused for a listing whose key item was never written (issueKey died in between): nothing can authenticate with it.
  await conditional(db.dynamo.send(new UpdateItemCommand({ TableName: db.table, Key: keyItemKey(hash), ...update })));
  await db.dynamo.send(new UpdateItemCommand({ TableName: db.table, Key: listingKey(store, hash), ...update }));
  return { ...keyInfoOf(store, listing), revoked: true, revokedAt };
}

export function notFound(store: string): TenantError {
  return new TenantError('TALLY_ERR_TENANT_NOT_FOUND', `tenant ${store} does not exist (create it first)`);
}

/** The admin functions bound to one table, for callers that prefer `admin.issueKey(store, scopes, label)`. */
export function createTenantAdmin(db: TenantDb) {
  return {
    createTenant: (store: string, opts?: Parameters<typeof createTenant>[2]) => createTenant(db, store, opts),
    getTenant: (store: string) => getTenant(db, store),
    issueKey: (store: string, scopes: readonly string[], label: string) => issueKey(db, store, scopes, label),
    revokeKey: (store: string, keyId: string) => revokeKey(db, store, keyId),
    setTimeZone: (store: string, timeZone: string) => setTimeZone(db, store, timeZone),
    setCurrency: (store: string, currency: string) => setCurrency(db, store, currency),
    setIngestBudget: (store: string, eventsPerSecond: number | undefined) => setIngestBudget(db, store, eventsPerSecond),
    updateTenant: (store: string, settings: TenantSettings) => updateTenant(db, store, settings),
    listTenants: (opts?: { reindex?: boolean }) => listTenants(db, opts),
    listKeys: (store: string) => listKeys(db, store),
  };
}

export type TenantAdmin = ReturnType<typeof createTenantAdmin>;
