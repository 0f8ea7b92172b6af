import { BatchWriteItemCommand, DeleteItemCommand, PutItemCommand, ScanCommand } from '@aws-sdk/client-dynamodb';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createDynamoClient } from '@tally/dynamo';
import { ERASED_ATTR } from '@tally/key-layout';
import { createTestTable, createTestTenants, startDynalite, waitFor, type DynaliteHandle } from '@tally/testing';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  createTenant,
  createTenantAdmin,
  createTenantDirectory,
  deleteStore,
  getTenant,
  hashKey,
  issueKey,
  keyIdOf,
  listKeys,
  listTenants,
  listTenantsPage,
  revokeKey,
  setCurrency,
  setTimeZone,
  TenantError,
  TenantsUnavailableError,
  type ErasureDeps,
  type TenantDb,
} from './index';

let dynalite: DynaliteHandle;
let db: TenantDb;
let dataDir: string;

beforeAll(async () => {
  // On disk, so the data survives the outage test's stop and restart.
  dataDir = mkdtempSync(join(tmpdir(), 'tally-tenants-'));
  dynalite = await startDynalite({ path: dataDir });
  const table = await createTestTable(dynalite.endpoint);
  db = { dynamo: createDynamoClient({ endpoint: dynalite.endpoint, region: 'us-east-1', maxAttempts: 1, requestTimeoutMs: 1_000 }), table };
});

afterAll(async () => {
  db?.dynamo.destroy();
  await dynalite?.stop();
  if (dynalite) rmSync(dataDir, { recursive: true, force: true });
});

const codeOf = async (p: Promise<unknown>) => {
  try {
    await p;
  } catch (err) {
    return (err as TenantError).code;
  }
  return 'no error';
};

describe('tenant admin', () => {
  it('creates tenants, issues keys that only exist hashed, and lists keys without printing them', async () => {
    const t = await createTenant(db, 'ADMIN1', { timeZone: 'Europe/Paris' });
    expect(t).toMatchObject({ store: 'ADMIN1', timeZone: 'Europe/Paris' });
    const k1 = await issueKey(db, 'ADMIN1', ['ingest'], 'web shop');
    const k2 = await issueKey(db, 'ADMIN1', ['read', 'admin', 'read'], 'dashboard');
    expect(k1).toMatch(/^tly_[A-Za-z0-9_-]{43}$/);
    expect(k1).not.toBe(k2);

    const keys = await listKeys(db, 'ADMIN1');
    expect(keys.map((k) => [k.keyId, k.label, k.scopes, k.revoked])).toEqual(
      expect.arrayContaining([
        [keyIdOf(k1), 'web shop', ['ingest'], false],
        [keyIdOf(k2), 'dashboard', ['read', 'admin'], false],
      ]),
    );
    expect(keys).toHaveLength(2);

    const scan = await db.dynamo.send(new ScanCommand({ TableName: db.table }));
    const dump = JSON.stringify(scan.Items);
    expect(dump).not.toContain(k1);
    expect(dump).not.toContain(k1.slice(4));
    expect(dump).toContain(`_key#${hashKey(k1)}`);
  });

  it('refuses bad input with a named error', async () => {
    await createTenant(db, 'ADMIN2');
    expect(await codeOf(createTenant(db, 'ADMIN2'))).toBe('TALLY_ERR_TENANT_EXISTS');
    expect(await codeOf(createTenant(db, '_tenant'))).toBe('TALLY_ERR_INVALID_STORE');
    expect(await codeOf(createTenant(db, 'S#1'))).toBe('TALLY_ERR_INVALID_STORE');
    expect(await codeOf(createTenant(db, 'ADMIN3', { timeZone: 'Mars/Olympus' }))).toBe('TALLY_ERR_INVALID_TIME_ZONE');
    expect(await codeOf(setTimeZone(db, 'ADMIN2', 'CET+1'))).toBe('TALLY_ERR_INVALID_TIME_ZONE');
    expect(await codeOf(setTimeZone(db, 'NOPE', 'UTC'))).toBe('TALLY_ERR_TENANT_NOT_FOUND');
    expect(await codeOf(setCurrency(db, 'ADMIN2', 'XYZ'))).toBe('TALLY_ERR_INVALID_CURRENCY');
    expect(await codeOf(setCurrency(db, 'ADMIN2', 'eur'))).toBe('TALLY_ERR_INVALID_CURRENCY');
    expect(await codeOf(setCurrency(db, 'NOPE', 'EUR'))).toBe('TALLY_ERR_TENANT_NOT_FOUND');
    expect(await codeOf(issueKey(db, 'NOPE', ['ingest'], ''))).toBe('TALLY_ERR_TENANT_NOT_FOUND');
    expect(await codeOf(issueKey(db, 'ADMIN2', ['write'], ''))).toBe('TALLY_ERR_INVALID_SCOPES');
    expect(await codeOf(issueKey(db, 'ADMIN2', [], ''))).toBe('TALLY_ERR_INVALID_SCOPES');
    expect(await codeOf(issueKey(db, 'ADMIN2', ['ingest'], 'tab\there'))).toBe('TALLY_ERR_INVALID_LABEL');
    expect(await codeOf(revokeKey(db, 'ADMIN2', 'abcdef'))).toBe('TALLY_ERR_KEY_NOT_FOUND');
    expect(await codeOf(revokeKey(db, 'ADMIN2', 'not-hex'))).toBe('TALLY_ERR_KEY_NOT_FOUND');
  });

  it('revokes only a key of the given store', async () => {
    const admin = createTenantAdmin(db);
    await admin.createTenant('ISO1');
    await admin.createTenant('ISO2');
    const key = await admin.issueKey('ISO1', ['ingest'], '');
    expect(await codeOf(admin.revokeKey('ISO2', keyIdOf(key)))).toBe('TALLY_ERR_KEY_NOT_FOUND');
    const revoked = await admin.revokeKey('ISO1', keyIdOf(key));
    expect(revoked).toMatchObject({ keyId: keyIdOf(key), revoked: true });
    expect((await admin.listKeys('ISO1'))[0]).toMatchObject({ revoked: true, revokedAt: revoked.revokedAt });
    // Revoking twice is harmless and keeps the first revocation time.
    expect((await admin.revokeKey('ISO1', keyIdOf(key))).revokedAt).toBe(revoked.revokedAt);
  });
});

describe('listing tenants', () => {
  // Each test on a table of its own, so that what it lists is only what it made.
  const freshDb = async (): Promise<TenantDb> => ({ ...db, table: await createTestTable(dynalite.endpoint) });
  /** How many Scans of the table were made: each is SCAN_SEGMENTS parallel ScanCommands, segments 0 to 7. */
  const scansOf = (d: TenantDb) => {
    const send = vi.spyOn(d.dynamo, 'send');
    return () => {
      const scans = send.mock.calls.map(([command]) => command).filter((c) => c instanceof ScanCommand);
      expect(scans.every((c) => (c as ScanCommand).input.TotalSegments === 8)).toBe(true);
      return scans.filter((c) => (c as ScanCommand).input.Segment === 0).length;
    };
  };
  /** A tenant item as a version without the tenant index wrote it: no index entry. */
  const putLegacyTenant = (d: TenantDb, store: string) =>
    d.dynamo.send(
      new PutItemCommand({
        TableName: d.table,
        Item: {
          pk: { S: `_tenant#${store}` },
          sk: { S: 'META' },
          store: { S: store },
          timeZone: { S: 'UTC' },
          createdAt: { S: '2026-01-01T00:00:00Z' },
        },
      }),
    );

  it('reads the tenant index (a Query and BatchGetItems), not a Scan of the table, once the index is built', async () => {
    const d = await freshDb();
    await createTenant(d, 'LIST1', { timeZone: 'Europe/Paris' });
    await setCurrency(d, 'LIST1', 'EUR');
    expect(await listTenants(d)).toEqual([{ store: 'LIST1', timeZone: 'Europe/Paris', createdAt: expect.any(String), currency: 'EUR' }]);
    // 250 more tenants: more than one BatchGetItem (100 keys each).
    for (let i = 0; i < 250; i += 50) {
      await Promise.all(Array.from({ length: 50 }, (_, j) => createTenant(d, `MANY${String(i + j).padStart(3, '0')}`)));
    }
    const scans = scansOf(d);
    const listed = await listTenants(d);
    expect(listed.map((t) => t.store)).toEqual(
      ['LIST1', ...Array.from({ length: 250 }, (_, i) => `MANY${String(i).padStart(3, '0')}`)].sort(),
    );
    expect(scans()).toBe(0);
    vi.restoreAllMocks();
    // A page at a time, in store id order: 100, 100, then the last 51 without a next.
    const pages: string[][] = [];
    let page = await listTenantsPage(d, { limit: 100 });
    pages.push(page.tenants.map((t) => t.store));
    while (page.next !== undefined) {
      page = await listTenantsPage(d, { limit: 100, after: page.next });
      pages.push(page.tenants.map((t) => t.store));
    }
    expect(pages.map((p) => p.length)).toEqual([100, 100, 51]);
    expect(pages.flat()).toEqual(listed.map((t) => t.store));
    expect(await listTenantsPage(d, { limit: 1, after: 'ZZZ' })).toEqual({ tenants: [] });
    expect(await codeOf(listTenantsPage(d, { limit: 0 }))).toBe('TALLY_ERR_INVALID_LIMIT');
  });

  it('indexes the tenants made before the index existed on the first listing, and again when asked (reindex)', async () => {
    const d = await freshDb();
    await putLegacyTenant(d, 'OLD1');
    await createTenant(d, 'NEW1');
    const scans = scansOf(d);
    expect((await listTenants(d)).map((t) => t.store)).toEqual(['NEW1', 'OLD1']);
    expect(scans()).toBe(1);
    expect((await listTenants(d)).map((t) => t.store)).toEqual(['NEW1', 'OLD1']);
    expect(scans()).toBe(1);
    // A tenant an older version makes after that is listed once the index is rebuilt.
    await putLegacyTenant(d, 'OLD2');
    expect((await listTenants(d)).map((t) => t.store)).toEqual(['NEW1', 'OLD1']);
    expect((await listTenants(d, { reindex: true })).map((t) => t.store)).toEqual(['NEW1', 'OLD1', 'OLD2']);
    expect(scans()).toBe(2);
    vi.restoreAllMocks();
    // Many, spread over the Scan's parallel segments: every one is found.
    const many = await freshDb();
    const legacy = Array.from({ length: 120 }, (_, i) => `LEGACY${String(i).padStart(3, '0')}`);
    await Promise.all(legacy.map((store) => putLegacyTenant(many, store)));
    expect((await listTenants(many)).map((t) => t.store)).toEqual(legacy);
  });

  it('passes over an index entry whose tenant is gone (a deletion or a creation cut short)', async () => {
    const d = await freshDb();
    await createTenant(d, 'KEEP1');
    await createTenant(d, 'GONE1');
    await d.dynamo.send(new DeleteItemCommand({ TableName: d.table, Key: { pk: { S: '_tenant#GONE1' }, sk: { S: 'META' } } }));
    expect((await listTenants(d)).map((t) => t.store)).toEqual(['KEEP1']);
    // The harness's tenants are indexed as createTenant's are.
    await createTestTenants(dynalite.endpoint, d.table, ['HARNESS9']);
    expect((await listTenants(d)).map((t) => t.store)).toEqual(['HARNESS9', 'KEEP1']);
  });
});

describe('deleting a store (its DynamoDB side)', () => {
  // The Redis side (tombstones, keys, jobs) is libs/buckets' and the query API's tests; here a fake eraser, no queues.
  const setup = async () => {
    const d = { ...db, table: await createTestTable(dynalite.endpoint) };
    const tombstones: string[] = [];
    const eraser = {
      markStoreDeleted: async (store: string) => void tombstones.push(store),
      unwritten: async () => ({ epoch: undefined, outboxDays: new Map() }),
      deleteStoreKeys: async () => 0,
    } as unknown as ErasureDeps['eraser'];
    const deps = (on: TenantDb = d): ErasureDeps => ({ db: on, eraser, queues: [], tombstoneSeconds: 60 });
    /** The keys of the store's items, tombstone items (which hold no data: erasure.ts) apart, or only those. */
    const itemsOf = async (store: string, tombstoneItems = false) =>
      ((await d.dynamo.send(new ScanCommand({ TableName: d.table }))).Items ?? [])
        .filter((i) => (i[ERASED_ATTR] !== undefined) === tombstoneItems)
        .map((i) => `${i['pk']!.S!} ${i['sk']!.S!}`)
        .filter((k) => k.includes(store))
        .sort();
    const counterItem = (pk: string) =>
      d.dynamo.send(new PutItemCommand({ TableName: d.table, Item: { pk: { S: pk }, sk: { S: '2026-01' }, views: { N: '1' } } }));
    return { d, deps, tombstones, itemsOf, counterItem };
  };

  it('deletes every item of the store, its index entry last; a store whose deletion finished, or that never was, is not found', async () => {
    const { d, deps, itemsOf, counterItem } = await setup();
    await createTenant(d, 'DEL1');
    await issueKey(d, 'DEL1', ['ingest'], 'shop');
    await Promise.all([counterItem('DEL1'), counterItem('DEL1#visitor#V1')]);
    const r = await deleteStore(deps(), 'DEL1');
    expect(r.removed).toMatchObject({ dynamoItems: 2, apiKeys: 1 });
    expect(await itemsOf('DEL1')).toEqual([]);
    // The counter items are tombstone items, for TOMBSTONE_ITEM_DAYS (a flush that outlived its job's lock is fenced).
    expect(await itemsOf('DEL1', true)).toEqual(['DEL1 2026-01', 'DEL1#visitor#V1 2026-01']);
    for (const store of ['DEL1', 'NEVER1']) {
      await expect(deleteStore(deps(), store)).rejects.toMatchObject({
        code: 'TALLY_ERR_TENANT_NOT_FOUND',
        message: `tenant ${store} does not exist (it never did, or its deletion finished)`,
      });
    }
    expect(await itemsOf('NEVER1')).toEqual([]);
  });

  it('finishes, when called again, a deletion cut short after the tenant went but before its index entry did', async () => {
    const { d, deps, tombstones, itemsOf, counterItem } = await setup();
    await createTenant(d, 'CUT1', { timeZone: 'Europe/Paris' });
    await issueKey(d, 'CUT1', ['read'], '');
    await counterItem('CUT1');
    // A client that dies on the BatchWriteItem deleting the index entry (pk _tenants), after the tenant's went.
    const dying = createDynamoClient({ endpoint: dynalite.endpoint, region: 'us-east-1' });
    const send = dying.send.bind(dying);
    vi.spyOn(dying, 'send').mockImplementation(((command: unknown) => {
      if (command instanceof BatchWriteItemCommand && JSON.stringify(command.input).includes('"_tenants"'))
        return Promise.reject(new Error('interrupted (test)'));
      return send(command as never);
    }) as never);
    await expect(deleteStore(deps({ dynamo: dying, table: d.table }), 'CUT1')).rejects.toThrow('interrupted (test)');
    dying.destroy();
    expect(await getTenant(d, 'CUT1')).toBeUndefined();
    expect(await itemsOf('CUT1')).toEqual(['_tenants CUT1']);
    expect((await listTenants(d)).map((t) => t.store)).toEqual([]);

    tombstones.length = 0;
    const again = await deleteStore(deps(), 'CUT1');
    expect(again.removed).toEqual({ dynamoItems: 0, apiKeys: 0, redisKeys: 0, queuedJobs: 0, failedJobs: 0 });
    // Nothing re-created (no tenant holding only the mark), the index entry gone, the tombstone renewed; the counter
    // item's tombstone, put by the first call, is no data.
    expect(await itemsOf('CUT1')).toEqual([]);
    expect(await itemsOf('CUT1', true)).toEqual(['CUT1 2026-01']);
    expect(tombstones).toContain('CUT1');
    await expect(deleteStore(deps(), 'CUT1')).rejects.toMatchObject({ code: 'TALLY_ERR_TENANT_NOT_FOUND' });
  });

  it('does not take an index entry left by a creation cut short for a deletion to finish: not found, nothing touched', async () => {
    const { d, deps, tombstones, itemsOf } = await setup();
    await createTenant(d, 'HALF1');
    await d.dynamo.send(new DeleteItemCommand({ TableName: d.table, Key: { pk: { S: '_tenant#HALF1' }, sk: { S: 'META' } } }));
    await expect(deleteStore(deps(), 'HALF1')).rejects.toMatchObject({ code: 'TALLY_ERR_TENANT_NOT_FOUND' });
    expect(await itemsOf('HALF1')).toEqual(['_tenants HALF1']);
    expect(tombstones).toEqual([]);
  });
});

describe('tenant directory', () => {
  it('reads the tenant records the test harness makes (createTestTenants) like those createTenant makes', async () => {
    await createTestTenants(dynalite.endpoint, db.table, { HARNESS1: 'Pacific/Auckland' });
    await createTestTenants(dynalite.endpoint, db.table, ['HARNESS2']);
    expect(await getTenant(db, 'HARNESS1')).toEqual({
      store: 'HARNESS1',
      timeZone: 'Pacific/Auckland',
      createdAt: expect.stringMatching(/^\d{4}-/),
    });
    const dir = createTenantDirectory({ dynamo: db.dynamo, table: db.table, cacheTtlMs: 5_000 });
    expect(await dir.tenant('HARNESS1')).toEqual({ store: 'HARNESS1', timeZone: 'Pacific/Auckland' });
    expect(await dir.tenant('HARNESS2')).toEqual({ store: 'HARNESS2', timeZone: 'UTC' });
    expect(await codeOf(createTenant(db, 'HARNESS2'))).toBe('TALLY_ERR_TENANT_EXISTS');
  });

  it('a fresh lookup sees a tenant created after the cache learnt the store had none', async () => {
    const dir = createTenantDirectory({ dynamo: db.dynamo, table: db.table, cacheTtlMs: 60_000 });
    expect(await dir.tenant('LATE1')).toBeUndefined();
    await createTenant(db, 'LATE1', { timeZone: 'Asia/Kolkata' });
    expect(await dir.tenant('LATE1')).toBeUndefined(); // cached
    expect(await dir.tenant('LATE1', { fresh: true })).toEqual({ store: 'LATE1', timeZone: 'Asia/Kolkata' });
  });

  it('authenticates a key to its store, scopes and time zone; unknown and malformed keys are undefined', async () => {
    await createTenant(db, 'DIR1', { timeZone: 'America/New_York' });
    const key = await issueKey(db, 'DIR1', ['ingest', 'read'], 'k');
    const dir = createTenantDirectory({ dynamo: db.dynamo, table: db.table, cacheTtlMs: 5_000 });
    expect(await dir.authenticate(key)).toEqual({ store: 'DIR1', scopes: ['ingest', 'read'], timeZone: 'America/New_York' });
    expect(await dir.authenticate(`${key.slice(0, -1)}x`)).toBeUndefined();
    expect(await dir.authenticate('short')).toBeUndefined();
    expect(await dir.authenticate('has spaces and ünïcode in it')).toBeUndefined();
    expect(await dir.tenant('DIR1')).toEqual({ store: 'DIR1', timeZone: 'America/New_York' });
    expect(await dir.tenant('NOPE')).toBeUndefined();
    expect(await dir.tenant('_tenant#DIR1')).toBeUndefined();
  });

  it('caches lookups and shares concurrent ones', async () => {
    await createTenant(db, 'DIR2');
    const key = await issueKey(db, 'DIR2', ['ingest'], '');
    const dynamo = createDynamoClient({ endpoint: dynalite.endpoint, region: 'us-east-1' });
    const send = vi.spyOn(dynamo, 'send');
    const dir = createTenantDirectory({ dynamo, table: db.table, cacheTtlMs: 60_000 });
    const results = await Promise.all(Array.from({ length: 20 }, () => dir.authenticate(key)));
    expect(results.every((r) => r?.store === 'DIR2')).toBe(true);
    await dir.authenticate(key);
    expect(send).toHaveBeenCalledTimes(2); // one key item, one tenant item
    dynamo.destroy();
  });

  it('stops accepting a revoked key once the TTL has passed, and picks up a new time zone', async () => {
    await createTenant(db, 'DIR3');
    const key = await issueKey(db, 'DIR3', ['ingest'], '');
    const ttl = 400;
    // The directory's own clock, so however slow the machine, the cache ages only when the test says so.
    let now = Date.now();
    const dir = createTenantDirectory({ dynamo: db.dynamo, table: db.table, cacheTtlMs: ttl, now: () => now });
    expect(await dir.authenticate(key)).toEqual({ store: 'DIR3', scopes: ['ingest'], timeZone: 'UTC' });
    await revokeKey(db, 'DIR3', keyIdOf(key));
    await setTimeZone(db, 'DIR3', 'Asia/Kathmandu');
    await setCurrency(db, 'DIR3', 'NPR');
    now += ttl - 1;
    // Still cached, key and time zone alike, until the TTL has passed.
    expect(await dir.authenticate(key)).toEqual({ store: 'DIR3', scopes: ['ingest'], timeZone: 'UTC' });
    expect(await dir.tenant('DIR3')).toEqual({ store: 'DIR3', timeZone: 'UTC' });
    now += 1;
    expect(await dir.authenticate(key)).toBeUndefined();
    expect(await dir.tenant('DIR3')).toEqual({ store: 'DIR3', timeZone: 'Asia/Kathmandu', currency: 'NPR' });
    expect(await getTenant(db, 'DIR3')).toMatchObject({ timeZone: 'Asia/Kathmandu', currency: 'NPR' });
  });

  it('serves last-known keys while DynamoDB is down and says when it knows nothing', async () => {
    await createTenant(db, 'DIR4', { timeZone: 'Europe/London' });
    const known = await issueKey(db, 'DIR4', ['ingest'], 'known');
    const unseen = await issueKey(db, 'DIR4', ['ingest'], 'unseen');
    const revoked = await issueKey(db, 'DIR4', ['ingest'], 'revoked');
    await revokeKey(db, 'DIR4', keyIdOf(revoked));
    const warnings: object[] = [];
    const log = { warn: (o: object) => warnings.push(o), info: () => {} };
    const dir = createTenantDirectory({ dynamo: db.dynamo, table: db.table, cacheTtlMs: 50, retryAfterFailureMs: 100, log });
    expect(await dir.authenticate(known)).toMatchObject({ store: 'DIR4' });
    expect(await dir.authenticate(revoked)).toBeUndefined();

    await dynalite.stop();
    try {
      await new Promise((r) => setTimeout(r, 120)); // past the TTL: every lookup goes to DynamoDB and fails
      for (let i = 0; i < 3; i++) {
        expect(await dir.authenticate(known)).toEqual({ store: 'DIR4', scopes: ['ingest'], timeZone: 'Europe/London' });
        expect(await dir.authenticate(revoked)).toBeUndefined();
        expect(await dir.tenant('DIR4')).toEqual({ store: 'DIR4', timeZone: 'Europe/London' });
        const err = await dir.authenticate(unseen).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(TenantsUnavailableError);
        expect((err as TenantsUnavailableError).code).toBe('TALLY_ERR_TENANTS_UNAVAILABLE');
        await new Promise((r) => setTimeout(r, 110));
      }
      expect(warnings).toHaveLength(1);
    } finally {
      await dynalite.restart();
    }
    await waitFor(async () => (await dir.authenticate(unseen))?.store === 'DIR4', { timeoutMs: 5_000 });
  });
});
