import { setTimeout as sleep } from 'node:timers/promises';
import {
  BatchGetItemCommand,
  BatchWriteItemCommand,
  ConditionalCheckFailedException,
  paginateQuery,
  paginateScan,
  type AttributeValue,
  type DynamoDBClient,
  type QueryCommandInput,
  type ScanCommandInput,
  type WriteRequest,
} from '@aws-sdk/client-dynamodb';
import { isScope, type Scope } from './keys';

/**
 * Tenant items live in the counters table under pks that start with `_` (store ids never do):
 *   pk `_tenant#<store>` sk `META`        the tenant: timeZone, createdAt, currency (ISO 4217, once set)
 *   pk `_tenant#<store>` sk `KEY#<hash>`  the tenant's listing of one key (for listKeys; never the key itself)
 *   pk `_key#<hash>`     sk `KEY`         the key, looked up by its sha256: store, scopes, revoked, label, createdAt
 *   pk `_tenants`        sk `<store>`     the index of the tenants, so that listing them is a Query of one partition
 *                                          rather than a Scan of the table (whose cost grows with the counter rows)
 *   pk `_tenants`        sk `#indexed`    set once the index also holds the tenants made before it existed
 */
export const tenantPk = (store: string) => `_tenant#${store}`;
export const TENANT_SK = 'META';
const keyPk = (hash: string) => `_key#${hash}`;
const KEY_SK = 'KEY';
export const LISTING_SK_PREFIX = 'KEY#';
export const listingSk = (hash: string) => `${LISTING_SK_PREFIX}${hash}`;
export const TENANT_INDEX_PK = '_tenants';
/** Sorts before every store id (they start with a letter or digit), so it is the partition's first item. */
export const TENANT_INDEX_BUILT_SK = '#indexed';

export type Item = Record<string, AttributeValue>;

type ReadInput = Omit<QueryCommandInput & ScanCommandInput, 'TableName' | 'ConsistentRead'>;

/**
 * Segments of a Scan read in parallel: a Scan (store deletion, building the tenant index) costs the same read units
 * however it is split, and its time grows with the table, so it is read as this many parallel scans.
 */
const SCAN_SEGMENTS = 8;

/** Every item of a consistent Query (or, with `scan`, a parallel Scan) of the table, read page by page. */
export async function readAll(db: { dynamo: DynamoDBClient; table: string }, input: ReadInput, scan = false): Promise<Item[]> {
  const full = { ...input, TableName: db.table, ConsistentRead: true };
  const read = async (pages: AsyncIterable<{ Items?: Item[] }>) => {
    const items: Item[] = [];
    for await (const page of pages) items.push(...(page.Items ?? []));
    return items;
  };
  if (!scan) return read(paginateQuery({ client: db.dynamo }, full));
  const segments = Array.from({ length: SCAN_SEGMENTS }, (_, segment) =>
    read(paginateScan({ client: db.dynamo }, { ...full, Segment: segment, TotalSegments: SCAN_SEGMENTS })),
  );
  return (await Promise.all(segments)).flat();
}

export const S = (s: string): AttributeValue => ({ S: s });

export const tenantKey = (store: string): Item => ({ pk: S(tenantPk(store)), sk: S(TENANT_SK) });
export const keyItemKey = (hash: string): Item => ({ pk: S(keyPk(hash)), sk: S(KEY_SK) });
export const listingKey = (store: string, hash: string): Item => ({ pk: S(tenantPk(store)), sk: S(listingSk(hash)) });
/** A store id's entry in the tenant index (TENANT_INDEX_BUILT_SK: the index's own mark). */
export const indexEntry = (store: string): Item => ({ pk: S(TENANT_INDEX_PK), sk: S(store) });

/** The output of a conditional write, or undefined when its condition refused it. */
export const conditional = <T>(write: Promise<T>): Promise<T | undefined> =>
  write.catch((err: unknown) => {
    if (err instanceof ConditionalCheckFailedException) return undefined;
    throw err;
  });

export const str = (item: Item, name: string): string | undefined => item[name]?.S;

export const bool = (item: Item, name: string): boolean => item[name]?.BOOL === true;

/** Scopes are stored as a list of strings; unknown ones (from a newer version) are ignored. */
export function scopesOf(item: Item): Scope[] {
  return (item['scopes']?.L ?? []).map((x) => x.S).filter((s): s is Scope => s !== undefined && isScope(s));
}

export const scopesAttr = (scopes: readonly Scope[]): AttributeValue => ({ L: scopes.map((s) => ({ S: s })) });

const backoff = (attempt: number) => sleep(Math.min(2_000, 50 * 2 ** attempt));

/** Writes (puts and deletes), 25 per BatchWriteItem, retrying what DynamoDB leaves unprocessed. */
export async function writeAll(db: { dynamo: DynamoDBClient; table: string }, writes: readonly WriteRequest[]): Promise<void> {
  for (let i = 0; i < writes.length; i += 25) {
    let requests = writes.slice(i, i + 25);
    for (let attempt = 0; requests.length > 0; attempt++) {
      if (attempt > 0) await backoff(attempt);
      const out = await db.dynamo.send(new BatchWriteItemCommand({ RequestItems: { [db.table]: requests } }));
      requests = out.UnprocessedItems?.[db.table] ?? [];
    }
  }
}

/** The items at these keys that exist (consistent reads), 100 per BatchGetItem, retrying what DynamoDB leaves unprocessed. */
export async function getAll(db: { dynamo: DynamoDBClient; table: string }, keys: readonly Item[]): Promise<Item[]> {
  const items: Item[] = [];
  for (let i = 0; i < keys.length; i += 100) {
    let batch: Item[] = keys.slice(i, i + 100);
    for (let attempt = 0; batch.length > 0; attempt++) {
      if (attempt > 0) await backoff(attempt);
      const out = await db.dynamo.send(new BatchGetItemCommand({ RequestItems: { [db.table]: { Keys: batch, ConsistentRead: true } } }));
      items.push(...(out.Responses?.[db.table] ?? []));
      batch = out.UnprocessedKeys?.[db.table]?.Keys ?? [];
    }
  }
  return items;
}
