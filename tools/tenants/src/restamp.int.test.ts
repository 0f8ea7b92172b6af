import { PutItemCommand, ScanCommand } from '@aws-sdk/client-dynamodb';
import { closeQueues, createQueues, QUEUE, type TallyQueues } from '@tally/queues';
import { getTenant, RETENTION_SETTLE_MS, type TenantDb } from '@tally/tenants';
import type { DynaliteHandle } from '@tally/testing';
import { useRedis } from '@tally/testing/vitest';
import type { Job } from 'bullmq';
import { describe, expect, it } from 'vitest';
import type { TenantsBackends } from './cli';
import { USAGE } from './usage';
import { runTenants, tenantsProcess, useTenantDb } from './test-fixtures';

let dynalite: DynaliteHandle;
let db: TenantDb;
useTenantDb((tdb, d) => ([db, dynalite] = [tdb, d]));

/** One command on the test table with restamp-retention's wait and clock as given. */
const cli = (restamp: TenantsBackends['restamp'], ...argv: string[]) => runTenants(argv, () => ({ db, ...(restamp && { restamp }) }));

// An injected clock: the month items are the UTC month of `now` and the one before (the store is in UTC).
const now = Date.now();
const month = (back: number) => {
  const d = new Date(now);
  const m = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() - back, 1));
  return { year: m.getUTCFullYear(), month: m.getUTCMonth() + 1 };
};
const sk = (m: { year: number; month: number }) => `M${m.year}-${String(m.month).padStart(2, '0')}`;
const expiry = (m: { year: number; month: number }, months: number) => Date.UTC(m.year, m.month - 1 + months, 2) / 1000;
const noWait = { settleMs: 0, now: () => now };
/** The TTL attribute (EXPIRES_ATTR of @tally/key-layout). */
const EXPIRES_ATTR = 'expiresAt';

const stampsOf = async (store: string) =>
  Object.fromEntries(
    ((await db.dynamo.send(new ScanCommand({ TableName: db.table, ConsistentRead: true }))).Items ?? [])
      .filter((i) => i['pk']!.S!.startsWith(`${store}#`))
      .map((i) => [`${i['pk']!.S} ${i['sk']!.S}`, i[EXPIRES_ATTR] ? Number(i[EXPIRES_ATTR].N) : null]),
  );

describe('tenants restamp-retention', () => {
  it('after set changes the visitor history, restamps the items already written and says how many', async () => {
    expect((await cli(noWait, 'create', 'RT1', '--history-months', '6')).code).toBe(0);
    const pk = 'RT1#visitor#V1';
    for (const [s, stamp] of [
      [sk(month(0)), expiry(month(0), 6)],
      [sk(month(1)), expiry(month(1), 6)],
      ['TOTAL', expiry(month(0), 6)],
    ] as const)
      await db.dynamo.send(
        new PutItemCommand({
          TableName: db.table,
          Item: { pk: { S: pk }, sk: { S: s }, v: { N: '1' }, [EXPIRES_ATTR]: { N: String(stamp) } },
        }),
      );

    // set says what is left to do when (and only when) the visitor history changed.
    expect(await cli(noWait, 'set', 'RT1', '--history-months', '24')).toEqual({
      code: 0,
      out: 'tally: store RT1: time zone UTC, currency unset, visitor history 24 months',
      err: "tally: visitor history was 6 months: the visitor items already written keep that setting's expiry until restamped; run now: tenants restamp-retention RT1",
    });
    expect((await cli(noWait, 'set', 'RT1', '--history-months', '24')).err).toBe('');
    expect((await cli(noWait, 'set', 'RT1', '--currency', 'EUR')).err).toBe('');

    expect(await cli(noWait, 'restamp-retention', 'RT1')).toEqual({
      code: 0,
      out: 'tally: store RT1 (visitor history 24 months): scanned 3 visitor items, restamped 3',
      err: '',
    });
    expect(await stampsOf('RT1')).toEqual({
      [`${pk} ${sk(month(0))}`]: expiry(month(0), 24),
      [`${pk} ${sk(month(1))}`]: expiry(month(1), 24),
      [`${pk} TOTAL`]: expiry(month(0), 24),
    });
    // Run again (as after an interruption): nothing left to do.
    expect((await cli(noWait, 'restamp-retention', 'RT1')).out).toBe(
      'tally: store RT1 (visitor history 24 months): scanned 3 visitor items, restamped 0',
    );

    expect((await cli(noWait, 'set', 'RT1', '--history-months', 'forever')).err).toMatch(/^tally: visitor history was 24 months: /);
    expect((await cli(noWait, 'restamp-retention', 'RT1')).out).toBe(
      'tally: store RT1 (visitor history kept for ever): scanned 3 visitor items, restamped 3',
    );
    expect(Object.values(await stampsOf('RT1'))).toEqual([null, null, null]);
  });

  it('waits RETENTION_SETTLE_MS first, saying so, as its usage says; an unknown store is refused at once', async () => {
    expect((await cli(noWait, 'create', 'RT2', '--history-months', '3')).code).toBe(0);
    const waits: number[] = [];
    const sleep = async (ms: number) => void waits.push(ms);
    const r = await cli({ sleep, now: () => now }, 'restamp-retention', 'RT2');
    expect(r).toEqual({
      code: 0,
      out: 'tally: store RT2 (visitor history 3 months): scanned 0 visitor items, restamped 0',
      err: `tally: waiting ${RETENTION_SETTLE_MS / 1000} s for the writers' cached settings of store RT2 to expire, then restamping`,
    });
    expect(waits).toEqual([RETENTION_SETTLE_MS]);
    expect(USAGE).toMatch(new RegExp(`restamp-retention <store> .*\\(waits ${RETENTION_SETTLE_MS / 1000} s first`, 's'));

    expect(await cli({ sleep, now: () => now }, 'restamp-retention', 'NOPE')).toEqual({
      code: 1,
      out: '',
      err: 'tally: tenant NOPE does not exist',
    });
    expect(waits).toHaveLength(1);
    for (const argv of [['restamp-retention'], ['restamp-retention', 'RT2', 'RT3'], ['restamp-retention', 'RT2', '--json']]) {
      const bad = await cli(noWait, ...argv);
      expect(bad.code, argv.join(' ')).toBe(2);
    }
  });
});

describe('tenants set --history-months', () => {
  let redisUrl: string;
  let queues: TallyQueues;
  useRedis(
    (redis, server) => {
      redisUrl = server.url;
      queues = createQueues(redis, { keyPrefix: 't', shards: 1 });
      return () => closeQueues(queues);
    },
    { connection: { maxRetriesPerRequest: 1 } },
  );

  /** One command with the maintenance queue on the test's Redis; what it asked to open. */
  async function cliWithQueue(...argv: string[]) {
    const needs: Array<{ redis: boolean }> = [];
    const r = await runTenants(argv, (need) => (needs.push(need), { db, maintenance: async () => queues }));
    return { ...r, needs };
  }
  const pending = async (store: string): Promise<Job[]> =>
    (await queues[QUEUE.maintenance].getJobs(['delayed', 'waiting', 'active'])).filter((j) => j?.data?.store === store);

  it('schedules the restamp of the visitor items on the maintenance queue when the setting changes (only then), and says when', async () => {
    expect((await cliWithQueue('create', 'RT3', '--history-months', '6')).code).toBe(0);
    const before = Date.now();
    const r = await cliWithQueue('set', 'RT3', '--history-months', '24');
    const after = Date.now();
    expect(r).toMatchObject({
      code: 0,
      out: 'tally: store RT3: time zone UTC, currency unset, visitor history 24 months',
      needs: [{ redis: true }],
    });
    const [job, ...more] = await pending('RT3');
    expect(more).toEqual([]);
    expect(job!.data).toEqual({ kind: 'restamp-retention', store: 'RT3', changedAt: expect.any(Number) });
    expect(job!.data.changedAt).toBeGreaterThanOrEqual(before);
    expect(job!.data.changedAt).toBeLessThanOrEqual(after);
    expect([await job!.getState(), job!.delay]).toEqual(['delayed', RETENTION_SETTLE_MS]);
    expect(r.err).toBe(
      `tally: visitor history was 6 months: the dynamo-writer restamps the visitor items already written with the new expiry from ${new Date(job!.data.changedAt + RETENTION_SETTLE_MS).toISOString()} (restamp scheduled; by hand: tenants restamp-retention RT3)`,
    );

    // Unchanged, or another setting (which needs no Redis): nothing more scheduled.
    expect(await cliWithQueue('set', 'RT3', '--history-months', '24')).toMatchObject({ code: 0, err: '', needs: [{ redis: true }] });
    expect(await cliWithQueue('set', 'RT3', '--currency', 'EUR')).toMatchObject({ code: 0, err: '', needs: [{ redis: false }] });
    expect((await pending('RT3')).map((j) => j.id)).toEqual([job!.id]);
    // Changed again before it ran: still one restamp pending, the last change's.
    const forever = await cliWithQueue('set', 'RT3', '--history-months', 'forever');
    expect(forever.err).toMatch(/^tally: visitor history was 24 months: the dynamo-writer restamps /);
    const [last, ...others] = await pending('RT3');
    expect(others).toEqual([]);
    expect(last!.data.changedAt).toBeGreaterThanOrEqual(job!.data.changedAt);
    expect(last!.id).not.toBe(job!.id);
    // An unknown store: refused, nothing scheduled.
    expect((await cliWithQueue('set', 'RT_NOPE', '--history-months', '3')).code).toBe(1);
    expect(await pending('RT_NOPE')).toEqual([]);
  });

  it('as a command line: on the Redis of REDIS_URL, under KEY_PREFIX', async () => {
    expect((await cli(noWait, 'create', 'RT4', '--history-months', '6')).code).toBe(0);
    const env = { DYNAMODB_ENDPOINT: dynalite.endpoint, DYNAMODB_TABLE: db.table, REDIS_URL: redisUrl, KEY_PREFIX: 't' };
    const p = await tenantsProcess(['set', 'RT4', '--history-months', '12'], env);
    expect(await p.exited).toEqual({ code: 0, signal: null });
    expect(p.output()).toMatch(
      /\ntally: store RT4: time zone UTC, currency unset, visitor history 12 months\n\[stderr\] tally: visitor history was 6 months: the dynamo-writer restamps /,
    );
    expect((await pending('RT4')).map((j) => j.data.store)).toEqual(['RT4']);
    expect((await getTenant(db, 'RT4'))?.historyMonths).toBe(12);
  });
});
