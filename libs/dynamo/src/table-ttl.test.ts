import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { checkTable, createDynamoClient, TABLE_KEYS, type TableWarning } from './index';

let server: Server | undefined;
afterEach(() => new Promise<void>((r) => (server ? server.close(() => r()) : r())));

const TABLE = {
  TableName: 'tally',
  TableStatus: 'ACTIVE',
  AttributeDefinitions: TABLE_KEYS.map((k) => ({ AttributeName: k.name, AttributeType: k.type })),
  KeySchema: TABLE_KEYS.map((k) => ({ AttributeName: k.name, KeyType: k.role })),
};

type TtlAnswer = { status: number; body: object };

/**
 * A fake DynamoDB endpoint: DescribeTable answers Tally's table, DescribeTimeToLive answers `ttl`, and every call's
 * operation is recorded in `calls`.
 */
async function fakeDynamo(ttl: TtlAnswer, calls: string[] = []): Promise<string> {
  server = createServer((req, res) => {
    const op = String(req.headers['x-amz-target'] ?? '').split('.')[1] ?? '';
    calls.push(op);
    req.resume();
    req.on('end', () => {
      const [status, body] =
        op === 'DescribeTable' ? [200, { Table: TABLE }] : op === 'DescribeTimeToLive' ? [ttl.status, ttl.body] : [400, {}];
      res.writeHead(status, { 'content-type': 'application/x-amz-json-1.0' });
      res.end(JSON.stringify(body));
    });
  });
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', () => r()));
  return `http://127.0.0.1:${(server!.address() as AddressInfo).port}`;
}

const ttlIs = (TimeToLiveStatus: string, AttributeName?: string): TtlAnswer => ({
  status: 200,
  body: { TimeToLiveDescription: { TimeToLiveStatus, ...(AttributeName ? { AttributeName } : {}) } },
});
const ttlFails = (type: string): TtlAnswer => ({
  status: 400,
  body: { __type: `com.amazonaws.dynamodb.v20120810#${type}`, message: 'nope' },
});

/**
 * checkTable against a fake endpoint whose DescribeTimeToLive answers `ttl` (closed after): the warnings, the gauge,
 * the calls.
 */
async function check(ttl: TtlAnswer) {
  const calls: string[] = [];
  const endpoint = await fakeDynamo(ttl, calls);
  const client = createDynamoClient({ endpoint, region: 'us-east-1', maxAttempts: 1 });
  const registry = new Registry();
  const warnings: TableWarning[] = [];
  try {
    const table = await checkTable(client, 'tally', { warn: (w) => warnings.push(w), registry });
    const gauge = (await registry.getSingleMetric('tally_dynamodb_ttl_enabled')?.get())?.values[0]?.value;
    return { table, warnings, gauge, calls, endpoint };
  } finally {
    client.destroy();
    await new Promise<void>((r) => server!.close(() => r()));
    server = undefined;
  }
}

describe('checkTable and the table TTL', () => {
  it('is content with TTL on expiresAt, enabled or being enabled', async () => {
    for (const status of ['ENABLED', 'ENABLING']) {
      const r = await check(ttlIs(status, 'expiresAt'));
      expect(r.calls).toEqual(['DescribeTable', 'DescribeTimeToLive']);
      expect(r.table.TableName).toBe('tally');
      expect(r.warnings).toEqual([]);
      expect(r.gauge).toBe(1);
    }
  });

  it('warns, without throwing, when TTL is disabled: nothing Tally stamps would ever expire', async () => {
    const r = await check(ttlIs('DISABLED'));
    expect(r.table.TableName).toBe('tally');
    expect(r.warnings).toEqual([
      {
        code: 'TALLY_WARN_TABLE_TTL',
        tableName: 'tally',
        ttlStatus: 'DISABLED',
        message:
          `DynamoDB table "tally" at ${r.endpoint} has TTL disabled: tombstone items, deleted stores' id markers and visitor ` +
          'history past its retention are never deleted; turn TTL on for attribute "expiresAt" ' +
          '(npm run create-table does when TTL is off; dynalite has no TTL)',
      },
    ]);
    expect(r.gauge).toBe(0);
  });

  it('warns when TTL is being disabled', async () => {
    const r = await check(ttlIs('DISABLING', 'expiresAt'));
    expect(r.warnings).toMatchObject([{ code: 'TALLY_WARN_TABLE_TTL', ttlStatus: 'DISABLING', ttlAttribute: 'expiresAt' }]);
    expect(r.warnings[0]!.message).toContain('has TTL disabling');
    expect(r.gauge).toBe(0);
  });

  it('warns when TTL is on another attribute than the one Tally writes', async () => {
    for (const status of ['ENABLED', 'ENABLING']) {
      const r = await check(ttlIs(status, 'ttl'));
      expect(r.warnings).toMatchObject([{ code: 'TALLY_WARN_TABLE_TTL', ttlStatus: status, ttlAttribute: 'ttl' }]);
      expect(r.warnings[0]!.message).toContain('has TTL on attribute "ttl", but Tally stamps "expiresAt"');
      expect(r.gauge).toBe(0);
    }
  });

  it('says it could not check when the endpoint does not know DescribeTimeToLive (no gauge then)', async () => {
    const r = await check(ttlFails('UnknownOperationException'));
    expect(r.table.TableName).toBe('tally');
    expect(r.warnings).toEqual([
      {
        code: 'TALLY_WARN_TABLE_TTL_UNCHECKED',
        tableName: 'tally',
        message:
          `cannot check the TTL of DynamoDB table "tally" at ${r.endpoint}: this endpoint does not support DescribeTimeToLive; ` +
          `make sure TTL is on for attribute "expiresAt", or tombstone items, deleted stores' id markers and visitor history ` +
          'past its retention are never deleted',
      },
    ]);
    expect(r.gauge).toBeUndefined();
  });

  it('says why it could not check when DescribeTimeToLive is refused (an IAM policy without it)', async () => {
    const r = await check(ttlFails('AccessDeniedException'));
    expect(r.warnings).toMatchObject([{ code: 'TALLY_WARN_TABLE_TTL_UNCHECKED' }]);
    expect(r.warnings[0]!.message).toContain('DescribeTimeToLive failed (AccessDeniedException: nope)');
    expect(r.gauge).toBeUndefined();
  });

  it('emits a process warning when the caller gives no warn callback, so no finding is silent', async () => {
    const endpoint = await fakeDynamo(ttlIs('DISABLED'));
    const client = createDynamoClient({ endpoint, region: 'us-east-1', maxAttempts: 1 });
    const emit = vi.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    try {
      await checkTable(client, 'tally');
      expect(emit).toHaveBeenCalledTimes(1);
      expect(emit.mock.calls[0]![0]).toMatch(/^DynamoDB table "tally" at .* has TTL disabled/);
      expect(emit.mock.calls[0]![1]).toEqual({ code: 'TALLY_WARN_TABLE_TTL' });
    } finally {
      emit.mockRestore();
      client.destroy();
    }
  });
});
