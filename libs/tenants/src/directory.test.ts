import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { describe, expect, it } from 'vitest';
import { createTenantDirectory, hashKey, TenantsUnavailableError } from './index';

/** A stand-in for DynamoDB whose answers can be switched: serve the items, fail at once, or hang until a 200 ms deadline. */
function fakeDynamo() {
  const items = new Map<string, Record<string, unknown>>();
  const state = { mode: 'ok' as 'ok' | 'fail' | 'hang', calls: 0 };
  const client = {
    send: async (cmd: { input: { Key: { pk: { S: string } } } }) => {
      state.calls++;
      if (state.mode === 'fail') throw Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
      if (state.mode === 'hang') {
        await sleep(200);
        throw Object.assign(new Error('request timed out'), { name: 'TimeoutError' });
      }
      return { Item: items.get(cmd.input.Key.pk.S) };
    },
  } as unknown as DynamoDBClient;
  return { client, items, state };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const KEY = `tly_${'k'.repeat(43)}`;

function setup() {
  const fake = fakeDynamo();
  fake.items.set(`_key#${hashKey(KEY)}`, {
    store: { S: 'S1' },
    scopes: { L: [{ S: 'ingest' }] },
    revoked: { BOOL: false },
  });
  fake.items.set('_tenant#S1', { timeZone: { S: 'Europe/Oslo' } });
  const dir = createTenantDirectory({ dynamo: fake.client, table: 't', cacheTtlMs: 30, retryAfterFailureMs: 100 });
  return { fake, dir };
}

describe('createTenantDirectory during a DynamoDB outage', () => {
  it('answers known keys at once even while DynamoDB hangs, and catches up when it is back', async () => {
    const { fake, dir } = setup();
    expect(await dir.authenticate(KEY)).toEqual({ store: 'S1', scopes: ['ingest'], timeZone: 'Europe/Oslo' });
    expect(fake.state.calls).toBe(2);

    fake.state.mode = 'fail';
    await sleep(40);
    expect(await dir.authenticate(KEY)).toMatchObject({ store: 'S1' }); // the failed lookup falls back
    expect(fake.state.calls).toBe(3);

    fake.state.mode = 'hang';
    await sleep(120); // past the retry period: the next call starts a background lookup, which hangs
    for (let i = 0; i < 5; i++) {
      const started = Date.now();
      expect(await dir.authenticate(KEY)).toMatchObject({ store: 'S1' });
      expect(Date.now() - started).toBeLessThan(50);
    }
    // Once the background lookup has timed out, an unknown key is refused at once (within the retry period).
    await sleep(200);
    const unknown = `tly_${'u'.repeat(43)}`;
    const started = Date.now();
    await expect(dir.authenticate(unknown)).rejects.toBeInstanceOf(TenantsUnavailableError);
    expect(Date.now() - started).toBeLessThan(50);

    // Back, and the key was revoked meanwhile: a background refresh learns it, then the key fails.
    fake.state.mode = 'ok';
    (fake.items.get(`_key#${hashKey(KEY)}`) as { revoked: { BOOL: boolean } }).revoked.BOOL = true;
    await sleep(120);
    expect(await dir.authenticate(KEY)).toMatchObject({ store: 'S1' }); // served while the refresh runs
    await sleep(5);
    expect(await dir.authenticate(KEY)).toBeUndefined();
    expect(await dir.authenticate(unknown)).toBeUndefined();
  });

  it('shares one lookup between concurrent callers and caches "unknown" too', async () => {
    const { fake, dir } = setup();
    const unknown = `tly_${'x'.repeat(43)}`;
    await Promise.all([dir.authenticate(unknown), dir.authenticate(unknown), dir.authenticate(unknown)]);
    expect(fake.state.calls).toBe(1);
    expect(await dir.authenticate(unknown)).toBeUndefined();
    expect(fake.state.calls).toBe(1);
  });

  it('a fresh tenant lookup asks DynamoDB whatever is cached, and never answers from the cache when it fails', async () => {
    const { fake, dir } = setup();
    expect(await dir.tenant('S2')).toBeUndefined();
    fake.items.set('_tenant#S2', { timeZone: { S: 'Asia/Tokyo' } }); // created a moment later
    expect(await dir.tenant('S2')).toBeUndefined(); // the cached "unknown", within the TTL
    expect(await dir.tenant('S2', { fresh: true })).toEqual({ store: 'S2', timeZone: 'Asia/Tokyo' });
    expect(await dir.tenant('S2')).toEqual({ store: 'S2', timeZone: 'Asia/Tokyo' }); // and the cache learnt it

    expect(await dir.tenant('S3')).toBeUndefined();
    fake.state.mode = 'fail';
    await expect(dir.tenant('S3', { fresh: true })).rejects.toBeInstanceOf(TenantsUnavailableError);
    expect(await dir.tenant('S3')).toBeUndefined(); // the plain lookup still answers from the cache
    await expect(dir.tenant('S3', { fresh: true })).rejects.toBeInstanceOf(TenantsUnavailableError); // within the retry period: at once
  });
});

describe('createTenantDirectory bounds', () => {
  /** A directory on the fake DynamoDB with its own clock, and keys of store S1 (the first one a known one, KEY). */
  function clocked(opts: { maxEntries?: number; maxUnknownEntries?: number; staleKeyMaxMs?: number } = {}) {
    const fake = fakeDynamo();
    const keys = [KEY, ...['a', 'b', 'c'].map((c) => `tly_${c.repeat(43)}`)];
    for (const key of keys)
      fake.items.set(`_key#${hashKey(key)}`, { store: { S: 'S1' }, scopes: { L: [{ S: 'ingest' }] }, revoked: { BOOL: false } });
    fake.items.set('_tenant#S1', { timeZone: { S: 'Europe/Oslo' } });
    const clock = { now: 1_000_000 };
    const dir = createTenantDirectory({
      dynamo: fake.client,
      table: 't',
      cacheTtlMs: 1_000,
      retryAfterFailureMs: 100,
      now: () => clock.now,
      ...opts,
    });
    return { fake, dir, clock, keys };
  }

  it('serves a key during an outage only if DynamoDB confirmed it less than staleKeyMaxMs ago', async () => {
    const { fake, dir, clock } = clocked({ staleKeyMaxMs: 60_000 });
    expect(await dir.authenticate(KEY)).toMatchObject({ store: 'S1' });
    // Revoked meanwhile, and DynamoDB fails before the directory learns it.
    (fake.items.get(`_key#${hashKey(KEY)}`) as { revoked: { BOOL: boolean } }).revoked.BOOL = true;
    fake.state.mode = 'fail';
    clock.now += 59_999;
    expect(await dir.authenticate(KEY)).toMatchObject({ store: 'S1' }); // within the bound: last-known
    clock.now += 1;
    await expect(dir.authenticate(KEY)).rejects.toBeInstanceOf(TenantsUnavailableError);
    clock.now += 1_000; // past the retry period: the background refresh path too
    await expect(dir.authenticate(KEY)).rejects.toBeInstanceOf(TenantsUnavailableError);
    // Back: the revocation is seen.
    fake.state.mode = 'ok';
    clock.now += 1_000;
    expect(await dir.authenticate(KEY)).toBeUndefined();
  });

  it('the bound defaults to an hour', async () => {
    const { fake, dir, clock } = clocked();
    expect(await dir.authenticate(KEY)).toMatchObject({ store: 'S1' });
    fake.state.mode = 'fail';
    clock.now += 3_600_000 - 1;
    expect(await dir.authenticate(KEY)).toMatchObject({ store: 'S1' });
    clock.now += 1;
    await expect(dir.authenticate(KEY)).rejects.toBeInstanceOf(TenantsUnavailableError);
  });

  it('refuses a key not in the issued format without looking it up', async () => {
    const { fake, dir } = clocked();
    for (const key of ['A'.repeat(47), `tly_${'k'.repeat(42)}`, `tly_${'k'.repeat(44)}`, `xyz_${'k'.repeat(43)}`, 'k'.repeat(256)]) {
      expect(await dir.authenticate(key)).toBeUndefined();
    }
    expect(fake.state.calls).toBe(0);
  });

  it('keeps unknown keys apart: made-up keys never push a known key out of the cache', async () => {
    const { fake, dir } = clocked({ maxEntries: 2, maxUnknownEntries: 2 });
    expect(await dir.authenticate(KEY)).toMatchObject({ store: 'S1' });
    for (let i = 0; i < 10; i++) expect(await dir.authenticate(`tly_${String(i).padStart(43, 'u')}`)).toBeUndefined();
    const calls = fake.state.calls;
    expect(await dir.authenticate(KEY)).toMatchObject({ store: 'S1' }); // within the TTL: from the cache
    expect(fake.state.calls).toBe(calls);
  });

  it('drops the least recently used entry, not the first one cached', async () => {
    const { fake, dir, keys } = clocked({ maxEntries: 2 });
    const [a, b, c] = keys.slice(1);
    await dir.authenticate(a!);
    await dir.authenticate(b!);
    await dir.authenticate(a!); // a is used again: b is now the least recently used
    await dir.authenticate(c!); // over the cap: b goes
    const calls = fake.state.calls;
    await dir.authenticate(a!);
    expect(fake.state.calls).toBe(calls);
    await dir.authenticate(b!);
    expect(fake.state.calls).toBe(calls + 1);
  });
});
