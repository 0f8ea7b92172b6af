import type { BucketEraser } from '@tally/buckets';
import { compileRules, defaultRules } from '@tally/schema';
import type { TenantDb } from '@tally/tenants';
import { describe, expect, it } from 'vitest';
import { runTenants, useTenantDb } from './test-fixtures';

let db: TenantDb;
useTenantDb((tdb) => (db = tdb));
const cli = (...argv: string[]) => runTenants(argv, () => ({ db }));

describe('tenants CLI', () => {
  it('set-time-zone says the zone as the store keeps it, as create and set do', async () => {
    expect((await cli('create', 'TZ1')).code).toBe(0);
    expect(await cli('set-time-zone', 'TZ1', 'europe/paris')).toEqual({
      code: 0,
      out: 'tally: store TZ1 now bins days in Europe/Paris (counts already made keep their days)',
      err: '',
    });
    expect((await cli('show', 'TZ1')).out).toMatch(/\ntime zone Europe\/Paris\n/);
  });

  it('refuses a malformed store id, exit 2, in every command that reads the tenant first (as every other command does)', async () => {
    const invalid = {
      code: 2,
      out: '',
      err: 'tally: store id "" is invalid: 1-128 characters of A-Z a-z 0-9 _ . : - starting with a letter or digit',
    };
    for (const argv of [
      ['show', ''],
      ['list-keys', ''],
      ['restamp-retention', ''],
      ['set-currency', '', 'EUR'],
    ])
      expect(await cli(...argv), argv.join(' ')).toEqual(invalid);
  });

  it('refuses a malformed store, visitor or key id, exit 2 in one line, before it looks for any backend', async () => {
    // The admin API answers 400 for both; erase-visitor used to connect, set a tombstone for the malformed visitor id
    // and say it had no data (exit 1), or call a malformed store unknown (exit 1).
    const opened: Array<{ redis: boolean }> = [];
    const run = (...argv: string[]) => runTenants(argv, (need) => (opened.push(need), { db }));
    const store = 'tally: store id "bad id!" is invalid: 1-128 characters of A-Z a-z 0-9 _ . : - starting with a letter or digit';
    for (const argv of [
      ['create', 'bad id!'],
      ['issue-key', 'bad id!', '--scopes', 'read'],
      ['revoke-key', 'bad id!', 'abcdef'],
      ['set-time-zone', 'bad id!', 'UTC'],
      ['set-currency', 'bad id!', 'EUR'],
      ['set-ingest-budget', 'bad id!', '10'],
      ['list-keys', 'bad id!'],
      ['show', 'bad id!'],
      ['set', 'bad id!', '--currency', 'EUR'],
      ['restamp-retention', 'bad id!'],
      ['delete-store', 'bad id!'],
      ['erase-visitor', 'bad id!', 'V1'],
    ])
      expect(await run(...argv), argv.join(' ')).toEqual({ code: 2, out: '', err: store });
    for (const visitor of ['bad visitor!', '', 'x'.repeat(129)])
      expect(await run('erase-visitor', 'S1', visitor), visitor).toEqual({
        code: 2,
        out: '',
        err: `tally: visitor id ${JSON.stringify(visitor)} is invalid: 1-128 characters of A-Z a-z 0-9 _ . : -`,
      });
    for (const keyId of ['zz', 'ABCDEF', 'abcde'])
      expect(await run('revoke-key', 'S1', keyId), keyId).toEqual({
        code: 2,
        out: '',
        err: `tally: key id ${JSON.stringify(keyId)} is not 6-64 lower-case hex digits (see: list-keys)`,
      });
    expect(opened).toEqual([]);
  });

  it('erase-visitor under rules that key no entity by the visitor id alone: refused, exit 1, saying nothing is erasable', async () => {
    const { visitor: _, ...entities } = defaultRules.entities;
    const events = Object.fromEntries(
      Object.entries(defaultRules.events).map(([type, spec]) => [
        type,
        { ...spec, counters: spec.counters.filter((c) => c.entity !== 'visitor') },
      ]),
    );
    const rules = compileRules({ ...defaultRules, entities, events });
    // Nothing of Redis is reached: the eraser is never called.
    const erasure = async () => ({ eraser: {} as BucketEraser, queues: [], tombstoneSeconds: 60, rules });
    expect((await cli('create', 'NOERASE')).code).toBe(0);
    expect(await runTenants(['erase-visitor', 'NOERASE', 'V1'], () => ({ db, erasure }))).toEqual({
      code: 1,
      out: '',
      err: 'tally: the rollup rules key no entity by the visitor id alone, so no visitor can be erased: nothing of visitor V1 was erased, and their events still in flight are not dropped (see README "Privacy")',
    });
  });

  it('refuses a bad --label or ingest budget, exit 2 in one line, before it looks for any backend', async () => {
    // issue-key's label and set-ingest-budget's range used to be checked by libs/tenants only, once the backends were
    // resolved: with no stack running the command said "no DynamoDB to use" (exit 1) instead.
    const opened: Array<{ redis: boolean }> = [];
    const run = (...argv: string[]) => runTenants(argv, (need) => (opened.push(need), { db }));
    const label = 'tally: a key label is 0-200 printable ASCII characters';
    for (const bad of ['tab\there', 'x'.repeat(201), 'caf\u00e9'])
      expect(await run('issue-key', 'S1', '--scopes', 'read', '--label', bad), bad).toEqual({ code: 2, out: '', err: label });
    for (const budget of ['0', '10000001'])
      expect(await run('set-ingest-budget', 'S1', budget), budget).toEqual({
        code: 2,
        out: '',
        err: `tally: ingest budget ${budget} is not a whole number of events per second from 1 to 10000000 (or none: the collectors' default)`,
      });
    expect(opened).toEqual([]);
    // The bounds themselves are taken, as libs/tenants takes them.
    expect((await run('create', 'LB1')).code).toBe(0);
    expect((await run('issue-key', 'LB1', '--scopes', 'read', '--label', '~'.repeat(200))).code).toBe(0);
    expect((await run('issue-key', 'LB1', '--scopes', 'read', '--label', '')).code).toBe(0);
    expect((await run('set-ingest-budget', 'LB1', '10000000')).code).toBe(0);
    expect((await run('set-ingest-budget', 'LB1', '1')).code).toBe(0);
  });
});
