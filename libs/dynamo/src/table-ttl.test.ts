import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { checkTable, createDynamoClient, ensureTable, TABLE_KEYS, type TableWarning } from './index';

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
 * A fake DynamoDB endpoint: DescribeTable answers Tally's table, DescribeTimeToLive answers `ttl`, UpdateTimeToLive
 * `update`, and every call's operation is recorded in `calls`.
 */
async function fakeDynamo(ttl: TtlAnswer, calls: string[] = [], update: TtlAnswer = { status: 400, body: {} }): Promise<string> {
  server = createServer((req, res) => {
    const op = String(req.headers['x-amz-target'] ?? '').split('.')[1] ?? '';
    calls.push(op);
    req.resume();
    req.on('end', () => {
      const answers: Record<string, TtlAnswer> = { DescribeTable: { status: 200, body: { Table: TABLE } }, DescribeTimeToLive: ttl };
      const { status, body } = answers[op] ?? (op === 'UpdateTimeToLive' ? update : { status: 400, body: {} });
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
const ttlFails = (type: string, message = 'nope'): TtlAnswer => ({
  status: 400,
  body: { __type: `com.amazonaws.dynamodb.v20120810#${type}`, message },
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

/**
 * ensureTable of an existing table against a fake endpoint whose UpdateTimeToLive answers `update` and
 * DescribeTimeToLive `ttl` (closed after): the result's ttl, the warnings, the calls.
 */
async function ensure(update: TtlAnswer, ttl: TtlAnswer) {
  const calls: string[] = [];
  const endpoint = await fakeDynamo(ttl, calls, update);
  const client = createDynamoClient({ endpoint, region: 'us-east-1', maxAttempts: 1 });
  const warnings: TableWarning[] = [];
  try {
    const res = await ensureTable(client, 'tally', { warn: (w) => warnings.push(w) });
    return { ttl: res.ttl, created: res.created, warnings, calls, endpoint };
  } finally {
    client.destroy();
    await new Promise<void>((r) => server!.close(() => r()));
    server = undefined;
  }
}

const updated: TtlAnswer = { status: 200, body: { TimeToLiveSpecification: { Enabled: true, AttributeName: 'expiresAt' } } };

describe('ensureTable turning TTL on', () => {
  it('turns it on, asking nothing more when DynamoDB takes the change', async () => {
    const r = await ensure(updated, ttlIs('DISABLED'));
    expect(r).toMatchObject({ created: false, ttl: { on: true }, warnings: [] });
    expect(r.calls).toEqual(['DescribeTable', 'UpdateTimeToLive']);
  });

  it('is content when DynamoDB refuses because TTL is already on for expiresAt', async () => {
    const r = await ensure(ttlFails('ValidationException', 'TimeToLive is already enabled'), ttlIs('ENABLED', 'expiresAt'));
    expect(r.ttl).toEqual({ on: true });
    expect(r.warnings).toEqual([]);
    expect(r.calls).toEqual(['DescribeTable', 'UpdateTimeToLive', 'DescribeTimeToLive']);
  });

  it('leaves an endpoint without TTL (dynalite) alone: on unknown, no warning', async () => {
    const r = await ensure(ttlFails('UnknownOperationException'), ttlIs('DISABLED'));
    expect(r.ttl).toEqual({});
    expect(r.warnings).toEqual([]);
  });

  it('reports TTL on another attribute, naming it, when DynamoDB refuses to move it', async () => {
    const r = await ensure(ttlFails('ValidationException', 'TimeToLive is active on a different AttributeName'), ttlIs('ENABLED', 'ttl'));
    const warning = {
      code: 'TALLY_WARN_TABLE_TTL',
      tableName: 'tally',
      ttlStatus: 'ENABLED',
      ttlAttribute: 'ttl',
      message:
        'DynamoDB refused to turn TTL on for "expiresAt" (ValidationException: TimeToLive is active on a different ' +
        'AttributeName; it takes one TTL change an hour, and TTL on another attribute must be turned off first): ' +
        `DynamoDB table "tally" at ${r.endpoint} has TTL on attribute "ttl", but Tally stamps "expiresAt": tombstone ` +
        "items, deleted stores' id markers and visitor history past its retention are never deleted; turn TTL on for " +
        'attribute "expiresAt" (npm run create-table does when TTL is off; dynalite has no TTL)',
    };
    expect(r.ttl).toEqual({ on: false, warning });
    expect(r.warnings).toEqual([warning]);
  });

  it('reports a TTL change made within the last hour, which DynamoDB will not follow with another yet', async () => {
    for (const status of ['DISABLED', 'DISABLING']) {
      const r = await ensure(
        ttlFails('ValidationException', 'Time to live has been modified multiple times within a fixed interval'),
        ttlIs(status, status === 'DISABLING' ? 'expiresAt' : undefined),
      );
      expect(r.ttl).toMatchObject({ on: false, warning: { code: 'TALLY_WARN_TABLE_TTL', ttlStatus: status } });
      expect(r.warnings).toHaveLength(1);
      expect(r.warnings[0]!.message).toMatch(
        new RegExp(
          '^DynamoDB refused to turn TTL on for "expiresAt" \\(ValidationException: Time to live has been modified ' +
            'multiple times within a fixed interval; it takes one TTL change an hour, .*\\): DynamoDB table "tally" at ' +
            `\\S+ has TTL ${status.toLowerCase()}: `,
        ),
      );
    }
  });

  it('reports a refusal it cannot explain when DescribeTimeToLive fails too', async () => {
    const r = await ensure(ttlFails('ValidationException', 'no'), ttlFails('AccessDeniedException'));
    expect(r.ttl).toMatchObject({ on: false, warning: { code: 'TALLY_WARN_TABLE_TTL_UNCHECKED' } });
    expect(r.warnings[0]!.message).toMatch(
      /^DynamoDB refused to turn TTL on for "expiresAt" \(ValidationException: no; .*\): cannot check the TTL of DynamoDB table "tally" at .*AccessDeniedException: nope/,
    );
  });

  it('emits a process warning when the caller gives no warn callback', async () => {
    const endpoint = await fakeDynamo(ttlIs('ENABLED', 'ttl'), [], ttlFails('ValidationException', 'different'));
    const client = createDynamoClient({ endpoint, region: 'us-east-1', maxAttempts: 1 });
    const emit = vi.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    try {
      expect((await ensureTable(client, 'tally')).ttl.on).toBe(false);
      expect(emit).toHaveBeenCalledTimes(1);
      expect(emit.mock.calls[0]![0]).toMatch(
        /^DynamoDB refused to turn TTL on .*: DynamoDB table "tally" at .* has TTL on attribute "ttl"/,
      );
      expect(emit.mock.calls[0]![1]).toEqual({ code: 'TALLY_WARN_TABLE_TTL' });
    } finally {
      emit.mockRestore();
      client.destroy();
    }
  });
});
