import { UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { createDynamoClient } from '@tally/dynamo';
import { createTenantDirectory, SCOPES, type TenantDb } from '@tally/tenants';
import { createTestTable, freePort, REPO_ROOT, startDynalite, startProcess, type DynaliteHandle } from '@tally/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runTenantsCli, USAGE } from './cli';

let dynalite: DynaliteHandle;
let db: TenantDb;

beforeAll(async () => {
  dynalite = await startDynalite();
  db = {
    dynamo: createDynamoClient({ endpoint: dynalite.endpoint, region: 'us-east-1' }),
    table: await createTestTable(dynalite.endpoint),
  };
});

afterAll(async () => {
  db?.dynamo.destroy();
  await dynalite?.stop();
});

async function cli(...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runTenantsCli(argv, db, { out: (l) => out.push(l), err: (l) => err.push(l) });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

describe('tenants CLI', () => {
  it('creates a tenant, issues a key printed once, lists keys without them, sets the time zone, revokes', async () => {
    expect(await cli('create', 'SHOP1', '--time-zone', 'Europe/Paris')).toEqual({
      code: 0,
      out: 'tally: created tenant SHOP1 (time zone Europe/Paris)',
      err: '',
    });
    const issued = await cli('issue-key', 'SHOP1', '--scopes', 'ingest,read', '--label', 'web shop');
    expect(issued.code).toBe(0);
    const key = issued.out;
    expect(key).toMatch(/^tly_[A-Za-z0-9_-]{43}$/);
    const keyId = /issued key ([0-9a-f]{12}) \(ingest, read\) for store SHOP1; it is shown only this once/.exec(issued.err)?.[1];
    expect(keyId).toBeDefined();

    const dir = createTenantDirectory({ dynamo: db.dynamo, table: db.table, cacheTtlMs: 0 });
    expect(await dir.authenticate(key)).toEqual({ store: 'SHOP1', scopes: ['ingest', 'read'], timeZone: 'Europe/Paris' });

    const list = await cli('list-keys', 'SHOP1');
    expect(list.code).toBe(0);
    expect(list.out.split('\n')[0]).toMatch(/^KEY ID\s+SCOPES\s+STATUS\s+CREATED\s+LABEL$/);
    expect(list.out.split('\n')[1]).toMatch(new RegExp(`^${keyId}\\s+ingest,read\\s+active\\s+\\S+Z\\s+web shop$`));
    expect(list.out).not.toContain(key.slice(4));

    expect((await cli('set-time-zone', 'SHOP1', 'Asia/Tokyo')).code).toBe(0);
    expect((await cli('show', 'SHOP1')).out).toMatch(
      /^store SHOP1\ntime zone Asia\/Tokyo\ncreated \S+\ningest budget the collectors' default \(INGEST_BUDGET_EVENTS_PER_SECOND\)\ncurrency unset \(revenue shown as a plain number\)\nvisitor history kept for ever$/,
    );
    expect((await cli('set-ingest-budget', 'SHOP1', '2500')).code).toBe(0);
    expect((await cli('show', 'SHOP1')).out).toMatch(/\ningest budget 2500 events\/s\n/);
    expect(await dir.authenticate(key)).toMatchObject({ store: 'SHOP1', ingestEventsPerSecond: 2500 });
    expect((await cli('set-ingest-budget', 'SHOP1', 'default')).code).toBe(0);
    expect((await cli('show', 'SHOP1')).out).toMatch(/\ningest budget the collectors' default /);
    expect((await cli('set-ingest-budget', 'SHOP1', 'lots')).code).toBe(2);
    expect(await cli('set-ingest-budget', 'SHOP1', '0')).toMatchObject({
      code: 2,
      err: expect.stringMatching(/^tally: ingest budget 0 is not a whole number[^\n]*$/),
    });
    expect(await cli('issue-key', 'SHOP1', '--scopes', 'write')).toMatchObject({ code: 2, out: '' });
    expect(await cli('set-currency', 'SHOP1', 'eur')).toEqual({
      code: 0,
      out: 'tally: store SHOP1 now shows revenue in EUR (counts are unchanged)',
      err: '',
    });
    expect((await cli('show', 'SHOP1')).out).toMatch(/\ncurrency EUR\nvisitor history kept for ever$/);
    expect(await dir.authenticate(key)).toEqual({ store: 'SHOP1', scopes: ['ingest', 'read'], timeZone: 'Asia/Tokyo', currency: 'EUR' });

    expect((await cli('revoke-key', 'SHOP1', keyId!)).out).toMatch(
      new RegExp(`^tally: revoked key ${keyId} of store SHOP1 \\(web shop\\)`),
    );
    expect(await dir.authenticate(key)).toBeUndefined();
    const json = JSON.parse((await cli('list-keys', 'SHOP1', '--json')).out);
    expect(json).toEqual([expect.objectContaining({ keyId, revoked: true, scopes: ['ingest', 'read'], label: 'web shop' })]);
  });

  it('refuses with one line and exit 1 or 2', async () => {
    expect(await cli('create', 'SHOP2', '--time-zone', 'Mars/Base')).toEqual({
      code: 2,
      out: '',
      err: 'tally: time zone "Mars/Base" is not an IANA time zone name such as Europe/Paris or UTC',
    });
    expect((await cli('issue-key', 'NOPE', '--scopes', 'ingest')).err).toBe('tally: tenant NOPE does not exist (create it first)');
    for (const bad of ['XYZ', 'EURO', '€', '']) {
      expect(await cli('set-currency', 'SHOP1', bad)).toEqual({
        code: 2,
        out: '',
        err: `tally: currency ${JSON.stringify(bad)} is not an ISO 4217 code such as EUR, USD or JPY`,
      });
    }
    expect((await cli('set-currency', 'NOPE', 'USD')).err).toBe('tally: tenant NOPE does not exist (create it first)');
    expect((await cli('set-currency', 'SHOP1')).code).toBe(2);
    expect((await cli('list-keys', 'NOPE')).code).toBe(1);
    const usage = await cli('issue-key', 'SHOP1');
    expect(usage.code).toBe(2);
    expect(usage.err).toMatch(/^tally: issue-key needs --scopes/);
    expect((await cli('frobnicate')).code).toBe(2);
    expect((await cli('--nope')).code).toBe(2);
    expect((await cli()).out).toMatch(/^usage: tenants <command>/);
  });

  it('lists stores and changes settings with the same library functions as the admin API', async () => {
    expect((await cli('set', 'SHOP1', '--currency', 'EUR', '--history-months', '13')).out).toBe(
      'tally: store SHOP1: time zone Asia/Tokyo, currency EUR, visitor history 13 months',
    );
    expect((await cli('show', 'SHOP1')).out).toMatch(/\ncurrency EUR\nvisitor history 13 months$/);
    expect((await cli('set', 'SHOP1', '--history-months', 'forever')).out).toMatch(/visitor history kept for ever$/);
    // A bad value is one line in the CLI's own words (not the API's `historyMonths`/`null`), exit 2, nothing changed.
    for (const bad of ['ten', '0', '13.5', '1201'])
      expect(await cli('set', 'SHOP1', '--history-months', bad)).toEqual({
        code: 2,
        out: '',
        err: `tally: --history-months takes a whole number of months from 1 to 1200, or "forever"; got "${bad}"`,
      });
    expect((await cli('show', 'SHOP1')).out).toMatch(/\nvisitor history kept for ever$/);
    expect((await cli('set', 'NOPE', '--currency', 'EUR')).code).toBe(1);

    // A deletion cut short leaves `deletingAt` on the tenant (libs/tenants erasure.ts): show says what to do.
    expect((await cli('create', 'HALF')).code).toBe(0);
    await db.dynamo.send(
      new UpdateItemCommand({
        TableName: db.table,
        Key: { pk: { S: '_tenant#HALF' }, sk: { S: 'META' } },
        UpdateExpression: 'SET deletingAt = :at',
        ExpressionAttributeValues: { ':at': { S: '2026-01-02T03:04:05.000Z' } },
      }),
    );
    expect((await cli('show', 'HALF')).out).toMatch(/\ndeletion unfinished since 2026-01-02T03:04:05.000Z: run delete-store again$/);
    expect((await cli('list')).out).toMatch(/^HALF\tUTC\t\(deletion unfinished: run delete-store again\)\n/);
    expect((await cli('list')).out.split('\n')[1]).toEqual('SHOP1\tAsia/Tokyo\tEUR');
    expect((await cli('list', '--reindex')).out.split('\n')[1]).toEqual('SHOP1\tAsia/Tokyo\tEUR');
    expect((await cli('delete-store', 'SHOP1')).err).toMatch(/^tally: delete-store needs Redis/);
  });

  it('names every scope in its usage text (usage.ts imports nothing, to keep --help light)', () => {
    expect(USAGE).toContain(`scopes: ${SCOPES.join(', ')}.`);
    // Like dlq's, it says that with nothing set it uses the running npm start stack (README, "Manage stores and keys").
    expect(USAGE).toMatch(/DYNAMODB_ENDPOINT \(unset: the running npm start stack's DynamoDB, else AWS\sDynamoDB in AWS_REGION when set\)/);
  });

  it('runs as a command line', async () => {
    const p = await startProcess(process.execPath, ['--no-warnings', '--import', 'tsx', 'tools/tenants/src/main.ts', 'create', 'SHOP3'], {
      cwd: REPO_ROOT,
      env: { DYNAMODB_ENDPOINT: dynalite.endpoint, DYNAMODB_TABLE: db.table },
    });
    expect(await p.exited).toEqual({ code: 0, signal: null });
    expect(p.output()).toBe(
      `[stderr] tally: using DynamoDB ${dynalite.endpoint} (DYNAMODB_ENDPOINT)\ntally: created tenant SHOP3 (time zone UTC)`,
    );
    const help = await startProcess(process.execPath, ['--no-warnings', '--import', 'tsx', 'tools/tenants/src/main.ts', '--help'], {
      cwd: REPO_ROOT,
      env: {},
    });
    expect(await help.exited).toEqual({ code: 0, signal: null });
    expect(help.output()).toBe(USAGE);
  });

  it('says in one line, exit 1, that it cannot reach Redis for a command that needs it (no stack trace per reconnect)', async () => {
    const url = `redis://127.0.0.1:${await freePort()}`;
    const p = await startProcess(
      process.execPath,
      ['--no-warnings', '--import', 'tsx', 'tools/tenants/src/main.ts', 'delete-store', 'SHOP3'],
      { cwd: REPO_ROOT, env: { DYNAMODB_ENDPOINT: dynalite.endpoint, DYNAMODB_TABLE: db.table, REDIS_URL: url } },
    );
    expect(await p.exited).toEqual({ code: 1, signal: null });
    expect(p.output().split('\n')).toEqual([
      `[stderr] tally: using Redis ${url} (REDIS_URL)`,
      `[stderr] tally: using DynamoDB ${dynalite.endpoint} (DYNAMODB_ENDPOINT)`,
      `[stderr] tally: cannot reach Redis at ${url}: connect ECONNREFUSED ${url.slice('redis://'.length)}`,
    ]);
  });
});
