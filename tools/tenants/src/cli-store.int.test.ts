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
});
