import {
  BatchWriteItemCommand,
  DeleteItemCommand,
  GetItemCommand,
  PutItemCommand,
  ScanCommand,
  UpdateItemCommand,
  type DynamoDBClient,
} from '@aws-sdk/client-dynamodb';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createDynamoClient } from '@tally/dynamo';
import { ERASED_ATTR, keptForWindow } from '@tally/key-layout';
import { createTestTable, createTestTenants, startDynalite, waitFor, type DynaliteHandle } from '@tally/testing';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  changeTenant,
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
  // maxAttempts 1: the outage test sees DynamoDB down at once (refused connections); a timeout long enough for dynalite
  // on disk under a loaded machine (50 creates at once).
  dynalite = await startDynalite({ path: dataDir });
  const table = await createTestTable(dynalite.endpoint);
  db = {
    dynamo: createDynamoClient({ endpoint: dynalite.endpoint, region: 'us-east-1', maxAttempts: 1, requestTimeoutMs: 10_000 }),
    table,
  };
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
    // An offset that is not whole quarter hours: the runtime takes it, a store may not (time-zone.ts timeZoneProblem).
    await expect(setTimeZone(db, 'ADMIN2', '+05:37')).rejects.toThrow(
      /^time zone "\+05:37" is a UTC offset that is not a whole number of quarter hours/,
    );
    expect(await codeOf(createTenant(db, 'ADMIN3', { timeZone: '-00:01' }))).toBe('TALLY_ERR_INVALID_TIME_ZONE');
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

  it("refuses a new store whose id can be the hash tag of Tally's own Redis keys; a store that has one keeps working", async () => {
    // Under KEY_PREFIX t, store t:w0's keys t:{t:w0}:… would be work-set shard 0's, and t:events:0 the events queue's slot.
    for (const store of ['t:w0', 'lg:w17', 'X.y:w3', 't:events:0', 't:events', 'q:dynamo-writes:12', 't:seal', 't:maintenance', 't:w0:1']) {
      const err = await createTenant(db, store).catch((e: unknown) => e);
      expect(err, store).toBeInstanceOf(TenantError);
      expect(err).toMatchObject({ code: 'TALLY_ERR_INVALID_STORE' });
      expect((err as Error).message).toBe(
        `store id ${JSON.stringify(store)} cannot be taken by a new store: ids that end in :w<digits>, :events, :seal, ` +
          ":dynamo-writes or :maintenance (optionally followed by :<digits>) can be the hash tags of Tally's own Redis keys",
      );
      expect(await getTenant(db, store)).toBeUndefined();
    }
    expect((await listTenants(db)).map((t) => t.store)).not.toContain('t:w0');
    // Ids with a `:` that no internal hash tag ends like are taken.
    for (const store of ['acme:eu', 'acme:w', 'acme:wx1', 'acme:w1x', 'acme:events1', 'acme:seals', 'w0', 'events']) {
      expect(await createTenant(db, store), store).toMatchObject({ store });
    }
    // A store made with such an id before (here by the harness, which writes what createTenant wrote) keeps working.
    await createTestTenants(dynalite.endpoint, db.table, { 't:w1': 'Europe/Paris' });
    expect(await getTenant(db, 't:w1')).toMatchObject({ store: 't:w1', timeZone: 'Europe/Paris' });
    const key = await issueKey(db, 't:w1', ['ingest'], 'web');
    await setCurrency(db, 't:w1', 'EUR');
    expect(await getTenant(db, 't:w1')).toMatchObject({ currency: 'EUR' });
    const dir = createTenantDirectory({ dynamo: db.dynamo, table: db.table, cacheTtlMs: 0 });
    expect(await dir.authenticate(key)).toMatchObject({ store: 't:w1', scopes: ['ingest'], timeZone: 'Europe/Paris' });
    expect(await codeOf(createTenant(db, 't:w1'))).toBe('TALLY_ERR_INVALID_STORE');
  });

  it("keeps a time zone in the runtime's spelling of its name, whatever the case given; an alias as given", async () => {
    expect(await createTenant(db, 'TZCASE1', { timeZone: 'eUrOpE/pArIs' })).toMatchObject({ timeZone: 'Europe/Paris' });
    expect(await getTenant(db, 'TZCASE1')).toMatchObject({ timeZone: 'Europe/Paris' });
    await setTimeZone(db, 'TZCASE1', 'asia/tokyo');
    expect(await getTenant(db, 'TZCASE1')).toMatchObject({ timeZone: 'Asia/Tokyo' });
    await setTimeZone(db, 'TZCASE1', 'Asia/Kolkata');
    expect(await getTenant(db, 'TZCASE1')).toMatchObject({ timeZone: 'Asia/Kolkata' });
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

  it('records, when a history limit is lifted, the first day it kept then (historyTrimmedBefore), never moving it earlier', async () => {
    // 2025-03-31 12:00 UTC is already 2025-04-01 in Kiritimati (UTC+14): the store's months are its zone's.
    const T = Date.parse('2025-03-31T12:00:00Z');
    const DAY = 86_400_000;
    const set = (store: string, historyMonths: number | null, at: number, on = db) =>
      changeTenant(on, store, { historyMonths }, { now: () => at });
    const trimmed = async (store: string) => (await getTenant(db, store))?.historyTrimmedBefore;
    await createTenant(db, 'TRIM1', { timeZone: 'Pacific/Kiritimati', historyMonths: 3 });
    await set('TRIM1', 12, T); // a raise trims nothing it kept
    expect(await trimmed('TRIM1')).toBeUndefined();
    expect((await set('TRIM1', null, T)).tenant).toMatchObject({ historyTrimmedBefore: '2024-05-01' }); // April 2025 and the 11 before
    expect(await trimmed('TRIM1')).toBe('2024-05-01');
    await set('TRIM1', null, T + DAY); // no change: kept as it is
    expect(await trimmed('TRIM1')).toBe('2024-05-01');
    // A shorter limit set later and lifted: its start, later; a longer one lifted after it: the later day stays.
    await set('TRIM1', 1, T + DAY);
    await set('TRIM1', null, T + 40 * DAY);
    expect(await trimmed('TRIM1')).toBe('2025-05-01');
    await set('TRIM1', 24, T + 41 * DAY);
    expect(await getTenant(db, 'TRIM1')).toMatchObject({ historyMonths: 24, historyTrimmedBefore: '2025-05-01' });
    await set('TRIM1', null, T + 42 * DAY);
    expect(await trimmed('TRIM1')).toBe('2025-05-01');

    // The limit changes between a lift's read (1 month) and its write (36 months then): the lift is written for the
    // limit it replaces, read again, not for the one it read first (which would trim from 2025-04-01).
    await createTenant(db, 'TRIM2', { timeZone: 'Pacific/Kiritimati', historyMonths: 1 });
    let raised = false;
    const racing: TenantDb = {
      table: db.table,
      dynamo: {
        send: async (command: unknown) => {
          if (!raised && command instanceof UpdateItemCommand) {
            raised = true;
            await set('TRIM2', 36, T);
          }
          return db.dynamo.send(command as UpdateItemCommand);
        },
      } as unknown as DynamoDBClient,
    };
    expect((await set('TRIM2', null, T, racing)).history).toEqual({ before: 36, changedAt: T });
    expect(await trimmed('TRIM2')).toBe('2022-05-01');
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

/** A client of the test's dynalite whose `send` rejects the commands `dies` picks ('interrupted (test)'). */
function dyingOn(dies: (command: unknown) => boolean): DynamoDBClient {
  const dying = createDynamoClient({ endpoint: dynalite.endpoint, region: 'us-east-1' });
  const send = dying.send.bind(dying);
  vi.spyOn(dying, 'send').mockImplementation(((command: unknown) =>
    dies(command) ? Promise.reject(new Error('interrupted (test)')) : send(command as never)) as never);
  return dying;
}
/** deleteStore's last DynamoDB write: the store id's index entry made the marker of the finished deletion. */
const isMarkerWrite = (command: unknown) =>
  command instanceof UpdateItemCommand &&
  command.input.Key?.['pk']?.S === '_tenants' &&
  /reusable/.test(command.input.UpdateExpression ?? '');

describe('deleting a store (its DynamoDB side)', () => {
  // The Redis side (tombstones, keys, jobs) is libs/buckets' and the query API's tests; here a fake eraser, no queues.
  const setup = async () => {
    const d = { ...db, table: await createTestTable(dynalite.endpoint) };
    const tombstones: string[] = [];
    const eraser = {
      markStoreDeleted: async (store: string) => void tombstones.push(store),
      unwritten: async () => ({ epoch: undefined, outboxDays: new Map() }),
      deleteStoreKeys: async () => 0,
      publishedDedupeWindow: async () => undefined,
    } as unknown as ErasureDeps['eraser'];
    const deps = (on: TenantDb = d, now?: number): ErasureDeps => ({
      db: on,
      eraser,
      queues: [],
      tombstoneSeconds: 60,
      ...(now === undefined ? {} : { now: () => now }),
    });
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

  it('deletes every item of the store, its index entry last (a marker); a store whose deletion finished, or that never was, is not found', async () => {
    const { d, deps, itemsOf, counterItem } = await setup();
    await createTenant(d, 'DEL1');
    await issueKey(d, 'DEL1', ['ingest'], 'shop');
    await Promise.all([counterItem('DEL1'), counterItem('DEL1#visitor#V1')]);
    const deletedAt = '2026-03-01T10:00:00.000Z';
    const r = await deleteStore(deps(d, Date.parse(deletedAt)), 'DEL1');
    expect(r.removed).toMatchObject({ dynamoItems: 2, apiKeys: 1 });
    expect(await itemsOf('DEL1')).toEqual([]);
    expect((await listTenants(d)).map((t) => t.store)).toEqual([]);
    // The counter items are tombstone items, for TOMBSTONE_ITEM_DAYS (a flush that outlived its job's lock is fenced),
    // and so is the index entry: the id's marker (from when it is free again), which listTenants passes over.
    expect(await itemsOf('DEL1', true)).toEqual(['DEL1 2026-01', 'DEL1#visitor#V1 2026-01', '_tenants DEL1']);
    await expect(deleteStore(deps(), 'DEL1')).rejects.toMatchObject({
      code: 'TALLY_ERR_TENANT_NOT_FOUND',
      message: `store DEL1 was deleted at ${deletedAt} (that deletion finished; nothing is left to delete): its id can be used again from ${r.reusableAt}`,
    });
    await expect(deleteStore(deps(), 'NEVER1')).rejects.toMatchObject({
      code: 'TALLY_ERR_TENANT_NOT_FOUND',
      message: 'tenant NEVER1 does not exist (it never did, or its deletion finished)',
    });
    expect(await itemsOf('NEVER1')).toEqual([]);
  });

  it('finishes, when called again, a deletion cut short after the tenant went but before its index entry did', async () => {
    const { d, deps, tombstones, itemsOf, counterItem } = await setup();
    await createTenant(d, 'CUT1', { timeZone: 'Europe/Paris' });
    await issueKey(d, 'CUT1', ['read'], '');
    await counterItem('CUT1');
    // A client that dies on the write making the index entry (pk _tenants) the id's marker, after the tenant went.
    const dying = dyingOn(isMarkerWrite);
    await expect(deleteStore(deps({ dynamo: dying, table: d.table }), 'CUT1')).rejects.toThrow('interrupted (test)');
    dying.destroy();
    expect(await getTenant(d, 'CUT1')).toBeUndefined();
    expect(await itemsOf('CUT1')).toEqual(['_tenants CUT1']);
    expect((await listTenants(d)).map((t) => t.store)).toEqual([]);
    // The id is not free while the deletion is unfinished: a create now would be deleted by the deletion's next run.
    await expect(createTenant(d, 'CUT1')).rejects.toMatchObject({ code: 'TALLY_ERR_STORE_ID_RESERVED' });
    expect(await itemsOf('CUT1')).toEqual(['_tenants CUT1']);

    tombstones.length = 0;
    const again = await deleteStore(deps(), 'CUT1');
    expect(again.removed).toEqual({ dynamoItems: 0, apiKeys: 0, redisKeys: 0, queuedJobs: 0, failedJobs: 0 });
    // Nothing re-created (no tenant holding only the mark), the index entry the id's marker, the tombstone renewed;
    // the counter item's tombstone, put by the first call, is no data.
    expect(await itemsOf('CUT1')).toEqual([]);
    expect(await itemsOf('CUT1', true)).toEqual(['CUT1 2026-01', '_tenants CUT1']);
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

  it("refuses to create a deleted store's id until its tombstone has expired, saying from when; then creates it, listed", async () => {
    const { d, deps, tombstones } = await setup();
    await createTenant(d, 'AGAIN1', { timeZone: 'Europe/Paris' });
    const deletedAt = Date.parse('2026-03-01T10:00:00Z');
    const r = await deleteStore(deps(d, deletedAt), 'AGAIN1');
    // The tombstone's expiry: renewed at the end of the deletion, kept for the dedupe window and its slack.
    const reusable = deletedAt + keptForWindow(60) * 1000;
    expect(r.reusableAt).toBe(new Date(reusable).toISOString());
    for (const at of [deletedAt + 1, reusable - 1]) {
      await expect(createTenant(d, 'AGAIN1', { now: () => at })).rejects.toMatchObject({
        code: 'TALLY_ERR_STORE_ID_RESERVED',
        message: `store AGAIN1 was deleted at 2026-03-01T10:00:00.000Z: its id can be used again from ${r.reusableAt} (until then the tombstone of the deleted store drops every batch of that id)`,
      });
    }
    expect((await listTenants(d)).map((t) => t.store)).toEqual([]);
    // The tombstone was set and renewed by the deletion, never cleared by the refusals.
    expect(tombstones).toEqual(['AGAIN1', 'AGAIN1']);
    const made = await createTenant(d, 'AGAIN1', { now: () => reusable });
    expect(made).toMatchObject({ store: 'AGAIN1', timeZone: 'UTC', createdAt: new Date(reusable).toISOString() });
    expect((await listTenants(d)).map((t) => t.store)).toEqual(['AGAIN1']);
    expect(await codeOf(createTenant(d, 'AGAIN1', { now: () => reusable }))).toBe('TALLY_ERR_TENANT_EXISTS');
  });

  it('refuses a create while the deletion runs, and leaves the mark of the deletion as it was', async () => {
    const { d, deps, itemsOf } = await setup();
    await createTenant(d, 'RUN1');
    // The deletion marked the tenant and its index entry, and is cut short before the tenant goes.
    const dying = dyingOn((c) => c instanceof BatchWriteItemCommand && JSON.stringify(c.input).includes('"_tenant#RUN1"'));
    await expect(deleteStore(deps({ dynamo: dying, table: d.table }), 'RUN1')).rejects.toThrow('interrupted (test)');
    dying.destroy();
    const deletingAt = (await getTenant(d, 'RUN1'))?.deletingAt;
    expect(deletingAt).toBeDefined();
    const err = await createTenant(d, 'RUN1').catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'TALLY_ERR_STORE_ID_RESERVED' });
    expect((err as Error).message).toContain(`store RUN1 is being deleted (since ${deletingAt}`);
    const entry = await d.dynamo.send(new GetItemCommand({ TableName: d.table, Key: { pk: { S: '_tenants' }, sk: { S: 'RUN1' } } }));
    expect(entry.Item?.['deletingAt']?.S).toBe(deletingAt);
    expect(await itemsOf('RUN1')).toEqual(['_tenant#RUN1 META', '_tenants RUN1']);
    await deleteStore(deps(), 'RUN1');
    expect(await itemsOf('RUN1')).toEqual([]);
  });

  it('refuses a malformed store id before any DynamoDB call (an empty one would be a key DynamoDB refuses)', async () => {
    const { d, deps, tombstones } = await setup();
    const send = vi.spyOn(d.dynamo, 'send');
    for (const store of ['', '_tenants', 'a b']) {
      await expect(deleteStore(deps(), store)).rejects.toMatchObject({ code: 'TALLY_ERR_INVALID_STORE' });
    }
    expect(send).not.toHaveBeenCalled();
    expect(tombstones).toEqual([]);
    send.mockRestore();
  });

  describe('a key issued while the store is deleted never outlives it', () => {
    /**
     * issueKey on a client that runs `meanwhile` (the deletion) just before issueKey's first write of type `before`
     * (the listing, or the key item), so that the deletion falls between issueKey's check of the tenant and its writes.
     */
    const issueDuring = (d: TenantDb, store: string, before: 'listing' | 'key', meanwhile: () => Promise<unknown>) => {
      const client = createDynamoClient({ endpoint: dynalite.endpoint, region: 'us-east-1' });
      const send = client.send.bind(client);
      let ran = false;
      vi.spyOn(client, 'send').mockImplementation((async (command: unknown) => {
        const pk = command instanceof PutItemCommand ? (command.input.Item?.['pk']?.S ?? '') : '';
        if (!ran && (before === 'listing' ? pk.startsWith('_tenant#') : pk.startsWith('_key#'))) {
          ran = true;
          await meanwhile();
        }
        return send(command as never);
      }) as never);
      return issueKey({ dynamo: client, table: d.table }, store, ['ingest'], 'late').finally(() => client.destroy());
    };
    /** Every item of the store's tenant partition and every key item of the store. */
    const keyItemsOf = async (d: TenantDb, store: string) =>
      ((await d.dynamo.send(new ScanCommand({ TableName: d.table }))).Items ?? [])
        .filter((i) => i['pk']!.S!.startsWith(`_tenant#${store}`) || (i['pk']!.S!.startsWith('_key#') && i['store']?.S === store))
        .map((i) => `${i['pk']!.S!} ${i['sk']!.S!}`);

    for (const before of ['listing', 'key'] as const) {
      it(`the whole deletion runs after issueKey read the tenant, before its ${before} write: refused, nothing left`, async () => {
        const { d, deps } = await setup();
        await createTenant(d, `RACE_${before}`);
        await issueKey(d, `RACE_${before}`, ['read'], 'before');
        const issued = issueDuring(d, `RACE_${before}`, before, () => deleteStore(deps(), `RACE_${before}`));
        await expect(issued).rejects.toMatchObject({ code: 'TALLY_ERR_TENANT_NOT_FOUND' });
        expect(await keyItemsOf(d, `RACE_${before}`)).toEqual([]);
      });
    }

    it('a listing written after the deletion read the listings (issueKey cut short before its check) is swept with its key item', async () => {
      const { d, deps } = await setup();
      await createTenant(d, 'RACE2');
      // The deletion pauses after its first read of the listings (its Query of the tenant partition)...
      let resume!: () => void;
      let paused!: () => void;
      const pausedAt = new Promise<void>((r) => (paused = r));
      const client = createDynamoClient({ endpoint: dynalite.endpoint, region: 'us-east-1' });
      const send = client.send.bind(client);
      let queries = 0;
      vi.spyOn(client, 'send').mockImplementation((async (command: unknown) => {
        const out = await send(command as never);
        if ((command as { constructor: { name: string } }).constructor.name === 'QueryCommand' && queries++ === 0) {
          paused();
          await new Promise<void>((r) => (resume = r));
        }
        return out;
      }) as never);
      const deleting = deleteStore(deps({ dynamo: client, table: d.table }), 'RACE2');
      await pausedAt;
      // ...and a key is written meanwhile as issueKey writes one (listing, then key item) whose check never comes.
      const hash = 'f'.repeat(64);
      const common = {
        store: { S: 'RACE2' },
        scopes: { L: [{ S: 'ingest' }] },
        revoked: { BOOL: false },
        createdAt: { S: '2026-01-01T00:00:00Z' },
      };
      await d.dynamo.send(
        new PutItemCommand({ TableName: d.table, Item: { pk: { S: '_tenant#RACE2' }, sk: { S: `KEY#${hash}` }, ...common } }),
      );
      await d.dynamo.send(new PutItemCommand({ TableName: d.table, Item: { pk: { S: `_key#${hash}` }, sk: { S: 'KEY' }, ...common } }));
      resume();
      expect((await deleting).removed.apiKeys).toBe(1);
      client.destroy();
      expect(await keyItemsOf(d, 'RACE2')).toEqual([]);
    });
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
