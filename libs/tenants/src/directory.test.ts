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
