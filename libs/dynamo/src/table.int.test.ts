import { createRequire } from 'node:module';
import type { Server } from 'node:http';
import { CreateTableCommand, DescribeTableCommand, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { createTestTable, freePort, type DynaliteHandle } from '@tally/testing';
import { useDynalite } from '@tally/testing/vitest';
import { describe, expect, it } from 'vitest';
import { DynamoUnreachableError, TableError, checkTable, createDynamoClient, ensureTable, type TableWarning } from './index';

let dyn: DynaliteHandle;
let client: DynamoDBClient;
let n = 0;
const fresh = () => `tally_table_test_${process.pid}_${++n}`;

useDynalite((d) => {
  dyn = d;
  client = createDynamoClient({ endpoint: d.endpoint, region: 'us-east-1' });
  return () => client.destroy();
});

async function createWithKeys(name: string, keys: Array<[string, 'S' | 'N', 'HASH' | 'RANGE']>): Promise<void> {
  await client.send(
    new CreateTableCommand({
      TableName: name,
      AttributeDefinitions: keys.map(([k, t]) => ({ AttributeName: k, AttributeType: t })),
      KeySchema: keys.map(([k, , r]) => ({ AttributeName: k, KeyType: r })),
      BillingMode: 'PAY_PER_REQUEST',
    }),
  );
}

describe('ensureTable', () => {
  it('creates an on-demand table with pk S HASH, sk S RANGE, ACTIVE when it returns', async () => {
    const name = fresh();
    const res = await ensureTable(client, name);
    expect(res.created).toBe(true);
    expect(res.table.TableStatus).toBe('ACTIVE');
    expect(res.ttl).toEqual({}); // dynalite has no TTL: nothing to turn on, nothing to warn about
    const { Table } = await client.send(new DescribeTableCommand({ TableName: name }));
    expect(Table?.KeySchema).toEqual([
      { AttributeName: 'pk', KeyType: 'HASH' },
      { AttributeName: 'sk', KeyType: 'RANGE' },
    ]);
    expect(Table?.AttributeDefinitions).toEqual([
      { AttributeName: 'pk', AttributeType: 'S' },
      { AttributeName: 'sk', AttributeType: 'S' },
    ]);
    expect(Table?.BillingModeSummary?.BillingMode).toBe('PAY_PER_REQUEST');
  });

  it('is idempotent, also when callers race', async () => {
    const name = fresh();
    const results = await Promise.all([1, 2, 3, 4].map(() => ensureTable(client, name)));
    expect(results.filter((r) => r.created)).toHaveLength(1);
    expect(results.every((r) => r.table.TableStatus === 'ACTIVE')).toBe(true);
    expect((await ensureTable(client, name)).created).toBe(false);
  });

  it('refuses a table with other keys, saying which it has and which it needs', async () => {
    const name = fresh();
    await createWithKeys(name, [['id', 'S', 'HASH']]);
    const err = await ensureTable(client, name).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TableError);
    expect((err as TableError).code).toBe('TALLY_ERR_TABLE_KEYS');
    expect((err as TableError).tableName).toBe(name);
    expect((err as Error).message).toBe(
      `DynamoDB table "${name}" at ${dyn.endpoint} has keys (id S HASH) but Tally needs (pk S HASH, sk S RANGE); ` +
        'set DYNAMODB_TABLE to another table or recreate this one',
    );
  });

  it('refuses the right names with the wrong types', async () => {
    const name = fresh();
    await createWithKeys(name, [
      ['pk', 'S', 'HASH'],
      ['sk', 'N', 'RANGE'],
    ]);
    await expect(ensureTable(client, name)).rejects.toThrow('has keys (pk S HASH, sk N RANGE) but Tally needs (pk S HASH, sk S RANGE)');
  });

  it('waits until a slowly created table is ACTIVE', async () => {
    // dynalite straight from the package, so tables stay CREATING for a while as on AWS.
    const dynalite = createRequire(import.meta.url)('dynalite') as (o: object) => Server;
    const slow = dynalite({ createTableMs: 400 });
    await new Promise<void>((resolve) => slow.listen(0, '127.0.0.1', resolve));
    const slowClient = createDynamoClient({
      endpoint: `http://127.0.0.1:${(slow.address() as { port: number }).port}`,
      region: 'us-east-1',
    });
    try {
      const started = Date.now();
      const res = await ensureTable(slowClient, 'slow_table');
      expect(res.table.TableStatus).toBe('ACTIVE');
      expect(Date.now() - started).toBeGreaterThanOrEqual(350);
      await expect(ensureTable(slowClient, 'other_table', { timeoutMs: 100 })).rejects.toThrow(
        'DynamoDB table "other_table" is still CREATING after 100ms, not ACTIVE',
      );
    } finally {
      slowClient.destroy();
      slow.closeAllConnections();
      await new Promise((resolve) => slow.close(resolve));
    }
  });

  it('says where it looked when DynamoDB does not answer', async () => {
    const port = await freePort();
    const down = createDynamoClient({ endpoint: `http://127.0.0.1:${port}`, region: 'us-east-1', maxAttempts: 1 });
    try {
      const err = await ensureTable(down, 'tally').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(DynamoUnreachableError);
      expect((err as DynamoUnreachableError).code).toBe('TALLY_ERR_DYNAMO_UNREACHABLE');
      expect((err as Error).message).toBe(`cannot reach DynamoDB at http://127.0.0.1:${port} (ECONNREFUSED); is it running?`);
    } finally {
      down.destroy();
    }
  });
});

describe('checkTable', () => {
  it('describes an existing table', async () => {
    const name = fresh();
    await ensureTable(client, name);
    expect((await checkTable(client, name)).TableName).toBe(name);
  });

  it('accepts the tables @tally/testing creates (same schema)', async () => {
    const name = await createTestTable(dyn.endpoint);
    expect((await checkTable(client, name)).TableStatus).toBe('ACTIVE');
  });

  it('says how to create a missing table', async () => {
    const err = await checkTable(client, 'tally').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TableError);
    expect((err as TableError).code).toBe('TALLY_ERR_TABLE_MISSING');
    expect((err as Error).message).toBe(`DynamoDB table "tally" does not exist at ${dyn.endpoint}; create it with: npm run create-table`);
  });

  it("warns, and still passes, on dynalite's table: DescribeTimeToLive answers TTL disabled there", async () => {
    const name = fresh();
    await ensureTable(client, name);
    const warnings: TableWarning[] = [];
    expect((await checkTable(client, name, { warn: (w) => warnings.push(w) })).TableName).toBe(name);
    expect(warnings).toMatchObject([{ code: 'TALLY_WARN_TABLE_TTL', tableName: name, ttlStatus: 'DISABLED' }]);
    expect(warnings[0]!.message).toMatch(new RegExp(`^DynamoDB table "${name}" at ${dyn.endpoint} has TTL disabled: `));
  });

  it('refuses wrong keys', async () => {
    const name = fresh();
    await createWithKeys(name, [
      ['sk', 'S', 'HASH'],
      ['pk', 'S', 'RANGE'],
    ]);
    await expect(checkTable(client, name)).rejects.toMatchObject({ code: 'TALLY_ERR_TABLE_KEYS' });
  });
});
