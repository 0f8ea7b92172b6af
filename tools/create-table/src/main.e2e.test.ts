import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
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

  it('exits 3 naming the attribute when DynamoDB refuses to turn TTL on, the table being ready', async () => {
    // dynalite has no TTL: a fake endpoint answers like AWS for a table whose TTL is on another attribute.
    const server = createServer((req, res) => {
      const op = String(req.headers['x-amz-target'] ?? '').split('.')[1];
      req.resume();
      req.on('end', () => {
        const keys = [
          ['pk', 'HASH'],
          ['sk', 'RANGE'],
        ];
        const table = {
          TableName: 'tally_ct_ttl',
          TableStatus: 'ACTIVE',
          AttributeDefinitions: keys.map(([AttributeName]) => ({ AttributeName, AttributeType: 'S' })),
          KeySchema: keys.map(([AttributeName, KeyType]) => ({ AttributeName, KeyType })),
        };
        const [status, body] =
          op === 'DescribeTable'
            ? [200, { Table: table }]
            : op === 'DescribeTimeToLive'
              ? [200, { TimeToLiveDescription: { TimeToLiveStatus: 'ENABLED', AttributeName: 'ttl' } }]
              : [
                  400,
                  {
                    __type: 'com.amazonaws.dynamodb.v20120810#ValidationException',
                    message: 'TimeToLive is active on a different AttributeName',
                  },
                ];
        res.writeHead(status, { 'content-type': 'application/x-amz-json-1.0' });
        res.end(JSON.stringify(body));
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      const res = await run({ DYNAMODB_ENDPOINT: endpoint, DYNAMODB_TABLE: 'tally_ct_ttl' });
      expect(res.code).toBe(3);
      const [first, second, ...rest] = res.output.split('\n');
      expect(first).toBe(`tally: table "tally_ct_ttl" already exists at ${endpoint} with the right keys`);
      expect(second).toMatch(
        /^\[stderr\] tally: DynamoDB refused to turn TTL on for "expiresAt" \(ValidationException: .*TTL on another attribute must be turned off first\): DynamoDB table "tally_ct_ttl" at .* has TTL on attribute "ttl"/,
      );
      expect(rest).toEqual([]);
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
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
