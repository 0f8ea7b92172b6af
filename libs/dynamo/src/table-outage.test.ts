import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { checkTable, createDynamoClient, DynamoUnreachableError } from './index';

let server: Server | undefined;
afterEach(() => new Promise<void>((r) => (server ? server.close(() => r()) : r())));

/** A fake DynamoDB endpoint answering every request with one status and error type. */
async function fakeDynamo(status: number, type: string): Promise<string> {
  server = createServer((_req, res) => {
    res.writeHead(status, { 'content-type': 'application/x-amz-json-1.0' });
    res.end(JSON.stringify({ __type: `com.amazonaws.dynamodb.v20120810#${type}`, message: 'nope' }));
  });
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', () => r()));
  return `http://127.0.0.1:${(server!.address() as AddressInfo).port}`;
}

describe('checkTable while DynamoDB is throttling or failing', () => {
  it.each([
    [400, 'ThrottlingException'],
    [400, 'ProvisionedThroughputExceededException'],
    [500, 'InternalServerError'],
  ])('reports %i %s as unavailable (an outage to ride out), not as a mistake', async (status, type) => {
    const client = createDynamoClient({ endpoint: await fakeDynamo(status, type), region: 'us-east-1', maxAttempts: 1 });
    const err = await checkTable(client, 'tally').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DynamoUnreachableError);
    expect((err as Error).message).toMatch(/is not serving requests now/);
    client.destroy();
  });

  it('still reports a validation error as itself', async () => {
    const client = createDynamoClient({ endpoint: await fakeDynamo(400, 'ValidationException'), region: 'us-east-1', maxAttempts: 1 });
    const err = await checkTable(client, 'tally').catch((e: unknown) => e);
    expect(err).not.toBeInstanceOf(DynamoUnreachableError);
    client.destroy();
  });
});
