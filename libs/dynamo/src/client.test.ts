import { createServer, type Server, type Socket } from 'node:net';
import { ListTablesCommand } from '@aws-sdk/client-dynamodb';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { freePort } from '@tally/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDynamoClient, describeEndpoint, isConnectionError } from './index';

describe('createDynamoClient', () => {
  it('uses dummy static credentials when an endpoint is set', async () => {
    const client = createDynamoClient({ endpoint: 'http://127.0.0.1:4567', region: 'eu-west-1', maxAttempts: 5 });
    try {
      const creds = await client.config.credentials();
      expect(creds.accessKeyId).toBe('local');
      expect(creds.secretAccessKey).toBe('local');
      expect(await client.config.region()).toBe('eu-west-1');
      expect(await client.config.maxAttempts()).toBe(5);
      expect(client.config.requestHandler).toBeInstanceOf(NodeHttpHandler);
      expect(await describeEndpoint(client)).toBe('http://127.0.0.1:4567');
    } finally {
      client.destroy();
    }
  });

  it('talks to AWS with the default credential chain when no endpoint is set', async () => {
    const client = createDynamoClient({ region: 'eu-west-1' });
    try {
      expect(client.config.endpoint).toBeUndefined();
      expect(await describeEndpoint(client)).toBe('AWS (eu-west-1)');
    } finally {
      client.destroy();
    }
  });
});

describe('request deadlines', () => {
  // Accepts connections and never answers: a hung endpoint.
  let blackHole: Server;
  let port: number;
  const sockets: Socket[] = [];
  beforeAll(async () => {
    blackHole = createServer((s) => sockets.push(s));
    await new Promise<void>((resolve) => blackHole.listen(0, '127.0.0.1', resolve));
    port = (blackHole.address() as { port: number }).port;
  });
  afterAll(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((resolve) => blackHole.close(resolve));
  });

  it('fails a hung request after requestTimeoutMs instead of waiting forever', async () => {
    const client = createDynamoClient({ endpoint: `http://127.0.0.1:${port}`, region: 'us-east-1', maxAttempts: 1, requestTimeoutMs: 300 });
    try {
      const started = Date.now();
      const err = await client.send(new ListTablesCommand({})).catch((e: unknown) => e);
      const took = Date.now() - started;
      expect(isConnectionError(err)).toBe(true);
      expect((err as Error).name).toBe('TimeoutError');
      expect(took).toBeGreaterThanOrEqual(250);
      expect(took).toBeLessThan(2_000);
    } finally {
      client.destroy();
    }
  });

  it('fails fast when nothing listens', async () => {
    const closed = await freePort();
    const client = createDynamoClient({ endpoint: `http://127.0.0.1:${closed}`, region: 'us-east-1', maxAttempts: 1 });
    try {
      const err = await client.send(new ListTablesCommand({})).catch((e: unknown) => e);
      expect(isConnectionError(err)).toBe(true);
      expect((err as { code?: string }).code).toBe('ECONNREFUSED');
    } finally {
      client.destroy();
    }
  });
});

describe('isConnectionError', () => {
  it('is false for answers from the service and for non-errors', () => {
    const throttled = Object.assign(new Error('Rate exceeded'), { name: 'ThrottlingException', $metadata: { httpStatusCode: 400 } });
    expect(isConnectionError(throttled)).toBe(false);
    expect(isConnectionError('ECONNREFUSED')).toBe(false);
    expect(isConnectionError(Object.assign(new Error('x'), { code: 'ECONNRESET' }))).toBe(true);
  });
});
