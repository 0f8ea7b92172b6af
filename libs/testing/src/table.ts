import { randomBytes } from 'node:crypto';
import { CreateTableCommand, DescribeTableCommand, DynamoDBClient, PutItemCommand } from '@aws-sdk/client-dynamodb';
import { WaitTimeoutError } from './errors';
import { sleep } from './wait';

/**
 * Creates a fresh table with Tally's key schema (pk S HASH, sk S RANGE, on-demand) at `endpoint`, waits until
 * it is ACTIVE, creates the `tenants` given (createTestTenants) and returns its unique name.
 *
 * This deliberately does not call `ensureTable` from `@tally/dynamo`: that lib's own tests use this harness, and
 * a dependency back would be a project cycle (an `@nx/enforce-module-boundaries` error). `@tally/dynamo`'s
 * tests run `checkTable` on a table made here, so the two schemas cannot drift apart unnoticed.
 */
export async function createTestTable(endpoint: string, opts: { prefix?: string; tenants?: TestTenants } = {}): Promise<string> {
  const name = `${opts.prefix ?? 'tally_test'}_${Date.now().toString(36)}_${randomBytes(4).toString('hex')}`;
  const client = new DynamoDBClient({
    endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
  });
  try {
    await client.send(
      new CreateTableCommand({
        TableName: name,
        AttributeDefinitions: [
          { AttributeName: 'pk', AttributeType: 'S' },
          { AttributeName: 'sk', AttributeType: 'S' },
        ],
        KeySchema: [
          { AttributeName: 'pk', KeyType: 'HASH' },
          { AttributeName: 'sk', KeyType: 'RANGE' },
        ],
        BillingMode: 'PAY_PER_REQUEST',
      }),
    );
    const deadline = Date.now() + 30_000;
    for (;;) {
      const out = await client.send(new DescribeTableCommand({ TableName: name }));
      if (out.Table?.TableStatus === 'ACTIVE') {
        if (opts.tenants) await createTestTenants(endpoint, name, opts.tenants);
        return name;
      }
      if (Date.now() > deadline) throw new WaitTimeoutError(`table ${name} at ${endpoint} is still ${out.Table?.TableStatus}, not ACTIVE`);
      await sleep(50);
    }
  } finally {
    client.destroy();
  }
}

/** Stores a test sends events to: ids (time zone UTC), or store id → IANA time zone. */
export type TestTenants = readonly string[] | Readonly<Record<string, string>>;

/**
 * Creates (or overwrites) the tenant record of each store at `endpoint`/`table`, so the aggregator counts their
 * events in their time zones instead of refusing them as unknown stores. Every test, bench figure and tool that
 * enqueues straight to the events queue creates its stores with this first.
 *
 * It writes the items `@tally/tenants` `createTenant` writes (the index entry pk `_tenants`, sk `<store>`; the tenant
 * pk `_tenant#<store>`, sk `META`, store, timeZone, createdAt) without importing that lib, whose own tests use this harness (a project cycle otherwise, as above);
 * `@tally/tenants`' tests read records made here through `getTenant` and the tenant directory, so the two cannot
 * drift apart unnoticed.
 */
export async function createTestTenants(endpoint: string, table: string, tenants: TestTenants): Promise<void> {
  const zones: Array<[string, string]> = Array.isArray(tenants)
    ? (tenants as readonly string[]).map((s) => [s, 'UTC'])
    : Object.entries(tenants as Readonly<Record<string, string>>);
  const client = new DynamoDBClient({ endpoint, region: 'us-east-1', credentials: { accessKeyId: 'local', secretAccessKey: 'local' } });
  const createdAt = new Date().toISOString();
  try {
    // The tenant index entry (libs/tenants items.ts) first, as createTenant writes it.
    await Promise.all(
      zones.map(([store]) => client.send(new PutItemCommand({ TableName: table, Item: { pk: { S: '_tenants' }, sk: { S: store } } }))),
    );
    await Promise.all(
      zones.map(([store, timeZone]) =>
        client.send(
          new PutItemCommand({
            TableName: table,
            Item: {
              pk: { S: `_tenant#${store}` },
              sk: { S: 'META' },
              store: { S: store },
              timeZone: { S: timeZone },
              createdAt: { S: createdAt },
            },
          }),
        ),
      ),
    );
  } finally {
    client.destroy();
  }
}
