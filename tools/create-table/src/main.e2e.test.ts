import { CreateTableCommand, DescribeTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { freePort, startDynalite, startProcess, type DynaliteHandle } from '@tally/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const main = new URL('./main.ts', import.meta.url).pathname;
let dyn: DynaliteHandle;
let client: DynamoDBClient;

beforeAll(async () => {
  dyn = await startDynalite();
  client = new DynamoDBClient({ endpoint: dyn.endpoint, region: 'us-east-1', credentials: { accessKeyId: 'x', secretAccessKey: 'x' } });
});
afterAll(async () => {
  client?.destroy();
  await dyn?.stop();
});

async function run(env: Record<string, string>, args: string[] = []) {
  const p = await startProcess(process.execPath, ['--no-warnings', '--import', 'tsx', main, ...args], {
    name: 'create-table',
    env: { DYNAMODB_ENDPOINT: undefined, DYNAMODB_TABLE: undefined, AWS_REGION: undefined, ...env },
  });
  const exit = await p.exited;
  return { code: exit.code, output: p.output() };
}

describe('create-table', () => {
  it('creates the table once, then says it exists', async () => {
    const env = { DYNAMODB_ENDPOINT: dyn.endpoint, DYNAMODB_TABLE: 'tally_ct_1' };
    expect(await run(env)).toEqual({
      code: 0,
      output: `tally: created table "tally_ct_1" at ${dyn.endpoint} (pk S HASH, sk S RANGE, on-demand)`,
    });
    const { Table } = await client.send(new DescribeTableCommand({ TableName: 'tally_ct_1' }));
    expect(Table?.TableStatus).toBe('ACTIVE');
    expect(Table?.KeySchema?.map((k) => `${k.AttributeName} ${k.KeyType}`)).toEqual(['pk HASH', 'sk RANGE']);

    expect(await run(env)).toEqual({
      code: 0,
      output: `tally: table "tally_ct_1" already exists at ${dyn.endpoint} with the right keys`,
    });
  });

  it('prints its usage for --help and refuses other arguments, creating nothing', async () => {
    const env = { DYNAMODB_ENDPOINT: dyn.endpoint, DYNAMODB_TABLE: 'tally_ct_help' };
    for (const help of ['--help', '-h', 'help']) {
      const res = await run(env, [help]);
      expect(res.code).toBe(0);
      expect(res.output).toMatch(/^usage: npm run create-table/);
    }
    const bad = await run(env, ['--table', 'x']);
    expect(bad.code).toBe(2);
    expect(bad.output).toMatch(/^\[stderr\] tally: create-table takes no arguments \(got --table x\)/);
    await expect(client.send(new DescribeTableCommand({ TableName: 'tally_ct_help' }))).rejects.toThrow(/not found|ResourceNotFound/i);
  });

  it('exits 1 naming the keys when the table has the wrong ones', async () => {
    await client.send(
      new CreateTableCommand({
        TableName: 'tally_ct_wrong',
        AttributeDefinitions: [{ AttributeName: 'id', AttributeType: 'S' }],
        KeySchema: [{ AttributeName: 'id', KeyType: 'HASH' }],
        BillingMode: 'PAY_PER_REQUEST',
      }),
    );
    expect(await run({ DYNAMODB_ENDPOINT: dyn.endpoint, DYNAMODB_TABLE: 'tally_ct_wrong' })).toEqual({
      code: 1,
      output:
        `[stderr] tally: DynamoDB table "tally_ct_wrong" at ${dyn.endpoint} has keys (id S HASH) but Tally needs ` +
        '(pk S HASH, sk S RANGE); set DYNAMODB_TABLE to another table or recreate this one',
    });
  });

  it('exits 1 with one line when DynamoDB is down', async () => {
    const port = await freePort();
    const res = await run({ DYNAMODB_ENDPOINT: `http://127.0.0.1:${port}` });
    expect(res).toEqual({
      code: 1,
      output: `[stderr] tally: cannot reach DynamoDB at http://127.0.0.1:${port} (ECONNREFUSED); is it running?`,
    });
  });

  it('exits 1 naming a bad variable', async () => {
    expect(await run({ DYNAMODB_ENDPOINT: 'localhost:8000' })).toEqual({
      code: 1,
      output:
        '[stderr] tally: configuration error: DYNAMODB_ENDPOINT: expected an http(s):// URL, e.g. http://127.0.0.1:8000; got "localhost:8000"',
    });
  });
});
