import { randomBytes } from 'node:crypto';
import { CreateTableCommand, DescribeTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { WaitTimeoutError } from './errors';
import { sleep } from './wait';

/**
 * Creates a fresh table with Tally's key schema (pk S HASH, sk S RANGE, on-demand) at `endpoint`, waits until
 * it is ACTIVE and returns its unique name.
 *
 * This deliberately does not call `ensureTable` from `@tally/dynamo`: that lib's own tests use this harness, and
 * a dependency back would be a project cycle (an `@nx/enforce-module-boundaries` error). `@tally/dynamo`'s
 * tests run `checkTable` on a table made here, so the two schemas cannot drift apart unnoticed.
 */
export async function createTestTable(endpoint: string, opts: { prefix?: string } = {}): Promise<string> {
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
      if (out.Table?.TableStatus === 'ACTIVE') return name;
      if (Date.now() > deadline) throw new WaitTimeoutError(`table ${name} at ${endpoint} is still ${out.Table?.TableStatus}, not ACTIVE`);
      await sleep(50);
    }
  } finally {
    client.destroy();
  }
}
