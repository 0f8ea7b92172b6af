import {
  CreateTableCommand,
  UpdateTimeToLiveCommand,
  DescribeTableCommand,
  ResourceInUseException,
  ResourceNotFoundException,
  type DynamoDBClient,
  type TableDescription,
} from '@aws-sdk/client-dynamodb';
import { EXPIRES_ATTR } from '@tally/key-layout';
import { describeEndpoint, isConnectionError } from './client';
import { DynamoUnreachableError, TableError } from './errors';
import { classifyError } from './meter';

/** The key schema of the Tally table (docs/DESIGN.md "DynamoDB layout"): `pk` S HASH, `sk` S RANGE. */
export const TABLE_KEYS = [
  { name: 'pk', type: 'S', role: 'HASH' },
  { name: 'sk', type: 'S', role: 'RANGE' },
] as const;

const NEEDED = formatKeys(TABLE_KEYS);

export interface EnsureTableOptions {
  /** How long to wait for the table to become ACTIVE. Default 60 s. */
  timeoutMs?: number;
}

export interface EnsureTableResult {
  /** False when the table already existed (with the right keys). */
  created: boolean;
  table: TableDescription;
}

/**
 * Creates the table (pk S HASH, sk S RANGE, on-demand) unless it exists, then waits until it is ACTIVE.
 * Idempotent and safe to race with another caller. Throws TableError `TALLY_ERR_TABLE_KEYS` when the table
 * exists with other keys, DynamoUnreachableError when the endpoint does not answer.
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
  await enableTimeToLive(client, tableName);
  return { created, table };
}

/**
 * Turns on DynamoDB's TTL on EXPIRES_ATTR (visitor-history retention; docs/DESIGN.md "Privacy"). Best effort:
 * already on is fine, and dynalite does not know the call (DynamoDB Local takes it but never deletes anything);
 * queries never count expired months either way.
 */
async function enableTimeToLive(client: DynamoDBClient, tableName: string): Promise<void> {
  try {
    await client.send(
      new UpdateTimeToLiveCommand({ TableName: tableName, TimeToLiveSpecification: { Enabled: true, AttributeName: EXPIRES_ATTR } }),
    );
  } catch (err) {
    const name = (err as { name?: string }).name ?? '';
    if (!/ValidationException|UnknownOperation|NotImplemented|UnrecognizedClient/.test(name)) throw err;
  }
}

/**
 * DescribeTable and verify the key schema, for start-up checks. Throws TableError `TALLY_ERR_TABLE_MISSING`
 * (with the command that creates it) or `TALLY_ERR_TABLE_KEYS`, DynamoUnreachableError when nothing answers.
 */
export async function checkTable(client: DynamoDBClient, tableName: string): Promise<TableDescription> {
  const table = await describeTable(client, tableName);
  if (!table) {
    throw new TableError(
      'TALLY_ERR_TABLE_MISSING',
      `DynamoDB table "${tableName}" does not exist at ${await describeEndpoint(client)}; create it with: npm run create-table`,
      tableName,
    );
  }
  await assertKeys(client, tableName, table);
  return table;
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
    `DynamoDB table "${tableName}" at ${await describeEndpoint(client)} has keys ${formatKeys(has)} but Tally needs ${NEEDED}; ` +
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
