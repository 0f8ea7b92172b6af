import {
  CreateTableCommand,
  UpdateTimeToLiveCommand,
  DescribeTableCommand,
  DescribeTimeToLiveCommand,
  ResourceInUseException,
  ResourceNotFoundException,
  type DynamoDBClient,
  type TableDescription,
} from '@aws-sdk/client-dynamodb';
import { EXPIRES_ATTR } from '@tally/key-layout';
import { Gauge, type Registry } from 'prom-client';
import { describeEndpoint, isConnectionError } from './client';
import { DynamoUnreachableError, TableError } from './errors';
import { classifyError } from './meter';

/** The key schema of the Tally table (docs/DESIGN.md "DynamoDB layout"): `pk` S HASH, `sk` S RANGE. */
export const TABLE_KEYS = [
  { name: 'pk', type: 'S', role: 'HASH' },
  { name: 'sk', type: 'S', role: 'RANGE' },
] as const;

export interface EnsureTableOptions {
  /** How long to wait for the table to become ACTIVE. Default 60 s. */
  timeoutMs?: number;
  /** Called with the warning when TTL cannot be turned on (`ttl.on` false); default: `process.emitWarning`. */
  warn?: (warning: TableWarning) => void;
}

export interface EnsureTableResult {
  /** False when the table already existed (with the right keys). */
  created: boolean;
  table: TableDescription;
  /**
   * The table's TTL on EXPIRES_ATTR afterwards: `on` true when it is on or turning on; false when DynamoDB refused to
   * turn it on and it is not on (on another attribute, or changed within the last hour: `warning` says which);
   * undefined when the endpoint has no TTL (dynalite).
   */
  ttl: { on?: boolean; warning?: TableWarning };
}

/**
 * Creates the table (pk S HASH, sk S RANGE, on-demand) unless it exists, waits until it is ACTIVE, then turns TTL on
 * for EXPIRES_ATTR (enableTimeToLive). Idempotent and safe to race with another caller. Throws TableError
 * `TALLY_ERR_TABLE_KEYS` when the table exists with other keys, DynamoUnreachableError when the endpoint does not
 * answer; TTL that cannot be turned on is reported (`ttl`, `opts.warn`), never thrown.
 */
export async function ensureTable(client: DynamoDBClient, tableName: string, opts: EnsureTableOptions = {}): Promise<EnsureTableResult> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const deadline = Date.now() + timeoutMs;
  let created = false;
  let existing = await describeTable(client, tableName);
  if (!existing) {
    try {
      await send(client, () =>
        client.send(
          new CreateTableCommand({
            TableName: tableName,
            AttributeDefinitions: TABLE_KEYS.map((k) => ({ AttributeName: k.name, AttributeType: k.type })),
            KeySchema: TABLE_KEYS.map((k) => ({ AttributeName: k.name, KeyType: k.role })),
            BillingMode: 'PAY_PER_REQUEST',
          }),
        ),
      );
      created = true;
    } catch (err) {
      // Someone else created it between our describe and create: fine, check its keys below.
      if (!(err instanceof ResourceInUseException)) throw err;
    }
    existing = await describeTable(client, tableName);
    if (!existing) throw new Error(`DynamoDB table "${tableName}" vanished right after CreateTable`);
  }
  await assertKeys(client, tableName, existing);
  const table = await waitUntilActive(client, tableName, existing, deadline, timeoutMs);
  const ttl = await enableTimeToLive(client, tableName);
  if (ttl.warning) (opts.warn ?? emitWarning)(ttl.warning);
  return { created, table, ttl };
}

/**
 * Turns on DynamoDB's TTL on EXPIRES_ATTR (visitor-history retention; docs/DESIGN.md "Privacy"). dynalite does not
 * know the call (DynamoDB Local takes it but never deletes anything): `on` undefined. DynamoDB refuses it with a
 * ValidationException when TTL is already on (fine), on another attribute, or was changed within the last hour (one
 * change an hour): DescribeTimeToLive then tells which, and anything but TTL on EXPIRES_ATTR is `on` false with a
 * warning saying what to do. Queries never count expired months either way.
 */
async function enableTimeToLive(client: DynamoDBClient, tableName: string): Promise<EnsureTableResult['ttl']> {
  try {
    await client.send(
      new UpdateTimeToLiveCommand({ TableName: tableName, TimeToLiveSpecification: { Enabled: true, AttributeName: EXPIRES_ATTR } }),
    );
    return { on: true };
  } catch (err) {
    const name = (err as { name?: string }).name ?? '';
    if (/UnknownOperation|NotImplemented|UnrecognizedClient/.test(name)) return {};
    if (!/ValidationException/.test(name)) throw err;
    const now = await checkTimeToLive(client, tableName);
    if (now.ok) return { on: true };
    const refused =
      `DynamoDB refused to turn TTL on for "${EXPIRES_ATTR}" (${name}: ${(err as Error).message}; it takes one TTL change ` +
      'an hour, and TTL on another attribute must be turned off first)';
    return { on: false, warning: { ...now.warning!, message: `${refused}: ${now.warning!.message}` } };
  }
}

/** Stable codes of what checkTable finds that does not stop Tally but an operator should fix. */
export type TableWarningCode = 'TALLY_WARN_TABLE_TTL' | 'TALLY_WARN_TABLE_TTL_UNCHECKED';

/**
 * A problem of the table that leaves counting exact but should be fixed: `TALLY_WARN_TABLE_TTL`, DynamoDB's TTL is
 * off (or turning off) or on another attribute than EXPIRES_ATTR, so nothing Tally stamps ever expires;
 * `TALLY_WARN_TABLE_TTL_UNCHECKED`, DescribeTimeToLive failed (not allowed, not supported), so nobody knows.
 * `message` is one line an operator can act on.
 */
export interface TableWarning {
  code: TableWarningCode;
  message: string;
  tableName: string;
  /** What DescribeTimeToLive answered (`ENABLED`, `DISABLED`, …), when it answered. */
  ttlStatus?: string;
  /** The attribute the table's TTL is on, when DynamoDB names one. */
  ttlAttribute?: string;
}

export interface CheckTableOptions {
  /** Called with each warning (TableWarning); default: `process.emitWarning`, so none is ever silent. */
  warn?: (warning: TableWarning) => void;
  /**
   * Exports `tally_dynamodb_ttl_enabled` there: 1 when the table's TTL is on (or turning on) for EXPIRES_ATTR, 0 when
   * it is off or on another attribute; not set when DescribeTimeToLive failed or the table check did not get that far.
   */
  registry?: Registry;
}

/**
 * DescribeTable and verify the key schema, for start-up checks. Throws TableError `TALLY_ERR_TABLE_MISSING`
 * (with the command that creates it) or `TALLY_ERR_TABLE_KEYS`, DynamoUnreachableError when nothing answers.
 * Then checks the table's TTL (checkTimeToLive): a TTL that is off or on another attribute is reported through
 * `opts.warn`, never thrown, since counting is exact without it (queries never count expired months).
 */
export async function checkTable(client: DynamoDBClient, tableName: string, opts: CheckTableOptions = {}): Promise<TableDescription> {
  const table = await describeTable(client, tableName);
  if (!table) {
    throw new TableError(
      'TALLY_ERR_TABLE_MISSING',
      `DynamoDB table "${tableName}" does not exist at ${await describeEndpoint(client)}; create it with: npm run create-table`,
      tableName,
    );
  }
  await assertKeys(client, tableName, table);
  const ttl = await checkTimeToLive(client, tableName);
  if (ttl.ok !== undefined && opts.registry) ttlGauge(opts.registry).set(ttl.ok ? 1 : 0);
  if (ttl.warning) (opts.warn ?? emitWarning)(ttl.warning);
  return table;
}

/**
 * Reads the table's TTL (DescribeTimeToLive). `ok` is true when it is ENABLED or ENABLING on EXPIRES_ATTR, false when
 * it is off, turning off or on another attribute (with a `TALLY_WARN_TABLE_TTL` warning), undefined when the call
 * failed (with a `TALLY_WARN_TABLE_TTL_UNCHECKED` warning): never throws. Without TTL on EXPIRES_ATTR nothing Tally
 * stamps is ever deleted: the tombstone items of erased visitors and deleted stores, deleted stores' id markers in the
 * tenant index, visitor items past their store's history retention (docs/DESIGN.md "Privacy").
 */
export async function checkTimeToLive(client: DynamoDBClient, tableName: string): Promise<{ ok?: boolean; warning?: TableWarning }> {
  let status: string | undefined;
  let attribute: string | undefined;
  try {
    const out = await client.send(new DescribeTimeToLiveCommand({ TableName: tableName }));
    status = out.TimeToLiveDescription?.TimeToLiveStatus;
    attribute = out.TimeToLiveDescription?.AttributeName;
  } catch (err) {
    const reason = (err as { name?: string }).name ?? 'Error';
    const why = /UnknownOperation|NotImplemented/.test(reason)
      ? 'this endpoint does not support DescribeTimeToLive'
      : `DescribeTimeToLive failed (${reason}: ${(err as Error).message})`;
    return {
      warning: {
        code: 'TALLY_WARN_TABLE_TTL_UNCHECKED',
        message:
          `cannot check the TTL of DynamoDB table "${tableName}" at ${await describeEndpoint(client)}: ${why}; ` +
          `make sure TTL is on for attribute "${EXPIRES_ATTR}", or tombstone items, deleted stores' id markers and visitor history past its retention are never deleted`,
        tableName,
      },
    };
  }
  const on = status === 'ENABLED' || status === 'ENABLING';
  if (on && attribute === EXPIRES_ATTR) return { ok: true };
  const found = on
    ? `has TTL on attribute "${attribute ?? '?'}", but Tally stamps "${EXPIRES_ATTR}"`
    : `has TTL ${(status ?? 'DISABLED').toLowerCase()}`;
  return {
    ok: false,
    warning: {
      code: 'TALLY_WARN_TABLE_TTL',
      message:
        `DynamoDB table "${tableName}" at ${await describeEndpoint(client)} ${found}: tombstone items, deleted stores' id markers ` +
        `and visitor history past its retention are never deleted; turn TTL on for attribute "${EXPIRES_ATTR}" ` +
        `(npm run create-table does when TTL is off; dynalite has no TTL)`,
      tableName,
      ...(status ? { ttlStatus: status } : {}),
      ...(attribute ? { ttlAttribute: attribute } : {}),
    },
  };
}

function emitWarning(w: TableWarning): void {
  process.emitWarning(w.message, { code: w.code });
}

const TTL_GAUGE = 'tally_dynamodb_ttl_enabled';

function ttlGauge(registry: Registry): Gauge {
  return (
    (registry.getSingleMetric(TTL_GAUGE) as Gauge | undefined) ??
    new Gauge({
      name: TTL_GAUGE,
      help: `1 when the DynamoDB table's TTL is on (or turning on) for ${EXPIRES_ATTR}, 0 when it is off or on another attribute (checked at start-up)`,
      registers: [registry],
    })
  );
}

async function describeTable(client: DynamoDBClient, tableName: string): Promise<TableDescription | undefined> {
  try {
    const out = await send(client, () => client.send(new DescribeTableCommand({ TableName: tableName })));
    return out.Table;
  } catch (err) {
    if (err instanceof ResourceNotFoundException) return undefined;
    throw err;
  }
}

/**
 * Runs one request, turning "no usable answer" — no answer at all, throttling, a 5xx — into
 * DynamoUnreachableError that says where we looked: callers treat it as an outage to ride out, not a mistake.
 */
async function send<T>(client: DynamoDBClient, request: () => Promise<T>): Promise<T> {
  try {
    return await request();
  } catch (err) {
    const outcome = classifyError(err);
    if (!isConnectionError(err) && outcome !== 'throttled' && outcome !== 'unavailable') throw err;
    const location = await describeEndpoint(client);
    const reason = (err as { code?: string }).code ?? (err as Error).name;
    const what = isConnectionError(err)
      ? `cannot reach DynamoDB at ${location} (${reason}); is it running?`
      : `DynamoDB at ${location} is not serving requests now (${reason})`;
    throw new DynamoUnreachableError(what, { cause: err });
  }
}

async function assertKeys(client: DynamoDBClient, tableName: string, table: TableDescription): Promise<void> {
  const types = new Map((table.AttributeDefinitions ?? []).map((a) => [a.AttributeName, a.AttributeType]));
  const has = (table.KeySchema ?? []).map((k) => ({
    name: k.AttributeName ?? '?',
    type: types.get(k.AttributeName) ?? '?',
    role: k.KeyType ?? '?',
  }));
  const ok =
    has.length === TABLE_KEYS.length &&
    TABLE_KEYS.every((want, i) => has[i]?.name === want.name && has[i]?.type === want.type && has[i]?.role === want.role);
  if (ok) return;
  throw new TableError(
    'TALLY_ERR_TABLE_KEYS',
    `DynamoDB table "${tableName}" at ${await describeEndpoint(client)} has keys ${formatKeys(has)} but Tally needs ${formatKeys(TABLE_KEYS)}; ` +
      'set DYNAMODB_TABLE to another table or recreate this one',
    tableName,
  );
}

function formatKeys(keys: ReadonlyArray<{ name: string; type: string; role: string }>): string {
  return keys.length === 0 ? '(none)' : `(${keys.map((k) => `${k.name} ${k.type} ${k.role}`).join(', ')})`;
}

async function waitUntilActive(
  client: DynamoDBClient,
  tableName: string,
  initial: TableDescription,
  deadline: number,
  timeoutMs: number,
): Promise<TableDescription> {
  let table: TableDescription | undefined = initial;
  let delayMs = 50;
  while (table?.TableStatus !== 'ACTIVE') {
    if (table === undefined) throw new Error(`DynamoDB table "${tableName}" was deleted while waiting for it to become ACTIVE`);
    if (Date.now() + delayMs > deadline) {
      throw new Error(
        `DynamoDB table "${tableName}" is still ${table.TableStatus ?? 'in an unknown state'} after ${timeoutMs}ms, not ACTIVE`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, delayMs));
    delayMs = Math.min(delayMs * 2, 2_000);
    table = await describeTable(client, tableName);
  }
  return table;
}
