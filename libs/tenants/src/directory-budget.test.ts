import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { describe, expect, it } from 'vitest';
import { createTenantDirectory, hashKey, TenantsUnavailableError, UnknownKeyLookupsThrottledError } from './index';

// The budget of DynamoDB lookups of keys not cached as existing (unknownKeyLookupsPerSecond): made-up keys cannot
// drive one consistent GetItem each, while keys in use are never refused and a real new key gets through soon.

const keyOf = (c: string) => `tly_${c.repeat(43)}`;
const REAL = keyOf('r');
const NEW = keyOf('n');

/** DynamoDB holding the items of `keys` (each of store S1) and S1's tenant, counting GetItem calls. */
function fakeDynamo(keys: string[]) {
  const items = new Map<string, Record<string, unknown>>();
  const add = (key: string) =>
    items.set(`_key#${hashKey(key)}`, { store: { S: 'S1' }, scopes: { L: [{ S: 'read' }] }, revoked: { BOOL: false } });
  keys.forEach(add);
  items.set('_tenant#S1', { timeZone: { S: 'UTC' } });
  const state = { keyLookups: 0 };
  const client = {
    send: async (cmd: { input: { Key: { pk: { S: string } } } }) => {
      if (cmd.input.Key.pk.S.startsWith('_key#')) state.keyLookups++;
      return { Item: items.get(cmd.input.Key.pk.S) };
    },
  } as unknown as DynamoDBClient;
  return { client, state, add };
}

function setup(perSecond: number | undefined) {
  const fake = fakeDynamo([REAL]);
  const clock = { now: 1_000_000 };
  let refused = 0;
  const dir = createTenantDirectory({
    dynamo: fake.client,
    table: 't',
    cacheTtlMs: 60_000,
    now: () => clock.now,
    unknownKeyLookupsPerSecond: perSecond,
    onUnknownKeyLookupRefused: () => refused++,
  });
  return { fake, clock, dir, refused: () => refused };
}

/** The i-th made-up key of the issued format. */
const madeUp = (i: number) => `tly_${String(i).padStart(43, 'x')}`;

describe('unknownKeyLookupsPerSecond', () => {
  it('looks up at most a bucket of 10 s of unknown keys, then refuses them without a lookup until the bucket refills', async () => {
    const { fake, clock, dir, refused } = setup(2);
    for (let i = 0; i < 20; i++) expect(await dir.authenticate(madeUp(i))).toBeUndefined();
    expect(fake.state.keyLookups).toBe(20);

    const err = await dir.authenticate(madeUp(20)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnknownKeyLookupsThrottledError);
    expect(err).toBeInstanceOf(TenantsUnavailableError); // callers answer 503 with Retry-After, not 401
    await expect(dir.authenticate(madeUp(21))).rejects.toBeInstanceOf(UnknownKeyLookupsThrottledError);
    expect([fake.state.keyLookups, refused()]).toEqual([20, 2]);

    // A key found not to exist is cached as such (no lookup, no budget) within the cache TTL.
    expect(await dir.authenticate(madeUp(3))).toBeUndefined();
    expect(fake.state.keyLookups).toBe(20);

    // Half a second refills one lookup: a real key issued meanwhile gets it.
    fake.add(NEW);
    clock.now += 500;
    expect(await dir.authenticate(NEW)).toMatchObject({ store: 'S1', scopes: ['read'] });
    await expect(dir.authenticate(madeUp(22))).rejects.toBeInstanceOf(UnknownKeyLookupsThrottledError);
    expect(fake.state.keyLookups).toBe(21);
  });

  it('never refuses a key cached as existing, even when its cached lookup is due again', async () => {
    const { fake, clock, dir } = setup(1);
    expect(await dir.authenticate(REAL)).toMatchObject({ store: 'S1' });
    for (let i = 0; i < 9; i++) await dir.authenticate(madeUp(i));
    await expect(dir.authenticate(madeUp(9))).rejects.toBeInstanceOf(UnknownKeyLookupsThrottledError);
    clock.now += 60_000; // past the cache TTL: the real key is looked up again (60 s refilled the bucket too: spend it)
    for (let i = 100; i < 110; i++) await dir.authenticate(madeUp(i));
    await expect(dir.authenticate(madeUp(110))).rejects.toBeInstanceOf(UnknownKeyLookupsThrottledError);
    const before = fake.state.keyLookups;
    expect(await dir.authenticate(REAL)).toMatchObject({ store: 'S1' });
    expect(fake.state.keyLookups).toBe(before + 1);
  });

  it('shares a lookup already under way without taking from the budget', async () => {
    const { fake, dir } = setup(0.1); // a bucket of one lookup
    const unknown = madeUp(1);
    expect(await Promise.all([dir.authenticate(unknown), dir.authenticate(unknown), dir.authenticate(unknown)])).toEqual([
      undefined,
      undefined,
      undefined,
    ]);
    expect(fake.state.keyLookups).toBe(1);
    await expect(dir.authenticate(madeUp(2))).rejects.toBeInstanceOf(UnknownKeyLookupsThrottledError);
  });

  it('is unbounded when unset', async () => {
    const { fake, dir } = setup(undefined);
    for (let i = 0; i < 200; i++) expect(await dir.authenticate(madeUp(i))).toBeUndefined();
    expect(fake.state.keyLookups).toBe(200);
  });
});
