import {
  paginateQuery,
  paginateScan,
  type AttributeValue,
  type DynamoDBClient,
  type QueryCommandInput,
  type ScanCommandInput,
} from '@aws-sdk/client-dynamodb';
import { isScope, type Scope } from './keys';

/**
 * Tenant items live in the counters table under pks that start with `_` (store ids never do):
 *   pk `_tenant#<store>` sk `META`        the tenant: timeZone, createdAt, currency (ISO 4217, once set)
 *   pk `_tenant#<store>` sk `KEY#<hash>`  the tenant's listing of one key (for listKeys; never the key itself)
 *   pk `_key#<hash>`     sk `KEY`         the key, looked up by its sha256: store, scopes, revoked, label, createdAt
 */
export const tenantPk = (store: string) => `_tenant#${store}`;
export const TENANT_SK = 'META';
export const keyPk = (hash: string) => `_key#${hash}`;
export const KEY_SK = 'KEY';
export const LISTING_SK_PREFIX = 'KEY#';
export const listingSk = (hash: string) => `${LISTING_SK_PREFIX}${hash}`;

export type Item = Record<string, AttributeValue>;

type ReadInput = Omit<QueryCommandInput & ScanCommandInput, 'TableName' | 'ConsistentRead'>;

/** Every item of a consistent Query (or, with `scan`, a Scan) of the table, read page by page. */
export async function readAll(db: { dynamo: DynamoDBClient; table: string }, input: ReadInput, scan = false): Promise<Item[]> {
  const full = { ...input, TableName: db.table, ConsistentRead: true };
  const pages = scan ? paginateScan({ client: db.dynamo }, full) : paginateQuery({ client: db.dynamo }, full);
  const items: Item[] = [];
  for await (const page of pages) items.push(...(page.Items ?? []));
  return items;
}

export const S = (s: string): AttributeValue => ({ S: s });

export function str(item: Item, name: string): string | undefined {
  const v = item[name];
  return v && 'S' in v ? v.S : undefined;
}

export function bool(item: Item, name: string): boolean {
  const v = item[name];
  return v !== undefined && 'BOOL' in v && v.BOOL === true;
}

/** Scopes are stored as a list of strings; unknown ones (from a newer version) are ignored. */
export function scopesOf(item: Item): Scope[] {
  const v = item['scopes'];
  const list = v && 'L' in v ? (v.L ?? []) : [];
  return list.map((x) => ('S' in x ? x.S : undefined)).filter((s): s is Scope => s !== undefined && isScope(s));
}

export const scopesAttr = (scopes: readonly Scope[]): AttributeValue => ({ L: scopes.map((s) => ({ S: s })) });
