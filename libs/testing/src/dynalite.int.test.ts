import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DescribeTableCommand, DynamoDBClient, GetItemCommand, ListTablesCommand, PutItemCommand } from '@aws-sdk/client-dynamodb';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createTestTable, startDynalite, type DynaliteHandle } from './index';

const dirs: string[] = [];
const started: DynaliteHandle[] = [];
const clients: DynamoDBClient[] = [];

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'tally-dynalite-'));
  dirs.push(d);
  return d;
}

function client(endpoint: string): DynamoDBClient {
  // The SDK directly, not @tally/dynamo: that lib's tests use this harness (no project cycle).
  const c = new DynamoDBClient({
    endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
    maxAttempts: 1,
    requestHandler: { connectionTimeout: 1_000, requestTimeout: 1_000 },
  });
  clients.push(c);
  return c;
}

async function put(c: DynamoDBClient, table: string, pk: string, n: number): Promise<void> {
  await c.send(new PutItemCommand({ TableName: table, Item: { pk: { S: pk }, sk: { S: 'TOTAL' }, OrderCount: { N: String(n) } } }));
}

async function get(c: DynamoDBClient, table: string, pk: string): Promise<string | undefined> {
  const out = await c.send(new GetItemCommand({ TableName: table, Key: { pk: { S: pk }, sk: { S: 'TOTAL' } }, ConsistentRead: true }));
  return out.Item?.['OrderCount']?.N;
}

afterEach(async () => {
  for (const c of clients.splice(0)) c.destroy();
  await Promise.all(started.splice(0).map((d) => d.stop()));
});
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe.each(['in-process', 'child'] as const)('startDynalite (%s)', (mode) => {
  async function start(path?: string): Promise<DynaliteHandle> {
    const d = await startDynalite({ mode, ...(path ? { path } : {}) });
    started.push(d);
    return d;
  }

  it('serves DynamoDB on 127.0.0.1 with tables ACTIVE at once', async () => {
    const d = await start();
    expect(d.mode).toBe(mode);
    expect(d.endpoint).toBe(`http://127.0.0.1:${d.port}`);
    const table = await createTestTable(d.endpoint);
    const c = client(d.endpoint);
    const out = await c.send(new DescribeTableCommand({ TableName: table }));
    expect(out.Table?.TableStatus).toBe('ACTIVE');
    await put(c, table, 'STORE1', 3);
    expect(await get(c, table, 'STORE1')).toBe('3');
  });

  it('keeps data across kill + restart on the same port when given a path', async () => {
    const d = await start(tempDir());
    const port = d.port;
    const table = await createTestTable(d.endpoint);
    const before = client(d.endpoint);
    for (let i = 1; i <= 5; i++) await put(before, table, `STORE${i}`, i * 10);

    await d.kill();
    expect(d.running).toBe(false);
    await expect(get(before, table, 'STORE1')).rejects.toThrow();

    await d.restart();
    expect(d.running).toBe(true);
    expect(d.port).toBe(port);
    const after = client(d.endpoint);
    for (let i = 1; i <= 5; i++) expect(await get(after, table, `STORE${i}`)).toBe(String(i * 10));
  });

  it('keeps data across stop + restart when given a path', async () => {
    const d = await start(tempDir());
    const table = await createTestTable(d.endpoint);
    await put(client(d.endpoint), table, 'STORE1', 1);
    await d.stop();
    await d.restart();
    expect(await get(client(d.endpoint), table, 'STORE1')).toBe('1');
  });

  it('starts empty after a restart without a path', async () => {
    const d = await start();
    await createTestTable(d.endpoint);
    await d.restart();
    const out = await client(d.endpoint).send(new ListTablesCommand({}));
    expect(out.TableNames).toEqual([]);
  });
});

describe('createTestTable', () => {
  it('creates a fresh, uniquely named table with the pk/sk key schema each time', async () => {
    const d = await startDynalite();
    started.push(d);
    const [a, b] = await Promise.all([createTestTable(d.endpoint), createTestTable(d.endpoint)]);
    expect(a).not.toBe(b);
    expect(a).toMatch(/^tally_test_[a-z0-9]+_[0-9a-f]{8}$/);
    const out = await client(d.endpoint).send(new DescribeTableCommand({ TableName: a }));
    expect(out.Table?.KeySchema).toEqual([
      { AttributeName: 'pk', KeyType: 'HASH' },
      { AttributeName: 'sk', KeyType: 'RANGE' },
    ]);
    expect(out.Table?.BillingModeSummary?.BillingMode).toBe('PAY_PER_REQUEST');
  });
});
