import { GetItemCommand, UpdateItemCommand, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { createDynamoClient } from '@tally/dynamo';
import { createTestTable } from '@tally/testing';
import { dynamoBackends, useDynamoBackendClient } from '@tally/testing/vitest';
import { describe, expect, it } from 'vitest';
import {
  changeTenant,
  createTenant,
  getTenant,
  RETENTION_CHANGE_INTERVAL_MS,
  RetentionChangeLimitedError,
  updateTenant,
  type TenantDb,
} from './index';
import { tenantPk, TENANT_SK } from './items';

/**
 * The limit on changes of a store's historyMonths (changeTenant `historyChangeEveryMs`, which the query API passes for
 * a store's admin key): each change makes the dynamo-writer scan the whole table, so a store admin may change it once
 * per RETENTION_CHANGE_INTERVAL_MS. Every time comes from an injected clock.
 */

const T = 1_780_000_000_000;
const HOUR = 3_600_000;
const DAY = RETENTION_CHANGE_INTERVAL_MS;

describe.each(dynamoBackends())('the limit on changes of historyMonths on $name', (backend) => {
  const { skip } = backend;
  const emulator = useDynamoBackendClient(backend, (endpoint) => createDynamoClient({ endpoint, region: 'us-east-1' }));
  const freshDb = async (): Promise<TenantDb> => ({ dynamo: emulator.client, table: await createTestTable(emulator.endpoint) });
  /** A store admin's change at `at`: limited, and what it scheduled as restamps. */
  const byAdmin = (db: TenantDb, store: string, historyMonths: number | null, at: number, restamps: number[] = []) =>
    changeTenant(db, store, { historyMonths }, { now: () => at, historyChangeEveryMs: DAY, restamp: async (t) => void restamps.push(t) });
  /** The refusal a call throws (or a failure of the test when it throws none). */
  const refusal = async (call: Promise<unknown>) => {
    const err = await call.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(RetentionChangeLimitedError);
    return err as RetentionChangeLimitedError;
  };
  /** `db`, whose first UpdateItem runs `before` first: another call's write between a call's read and its write. */
  const interleaved = (db: TenantDb, before: () => Promise<unknown>): TenantDb => {
    let done = false;
    const send = async (command: unknown) => {
      if (!done && command instanceof UpdateItemCommand) {
        done = true;
        await before();
      }
      return db.dynamo.send(command as UpdateItemCommand);
    };
    return { table: db.table, dynamo: { send } as unknown as DynamoDBClient };
  };
  const recorded = async (db: TenantDb, store: string) => {
    const out = await db.dynamo.send(
      new GetItemCommand({ TableName: db.table, Key: { pk: { S: tenantPk(store) }, sk: { S: TENANT_SK } }, ConsistentRead: true }),
    );
    return out.Item?.['historyMonthsChangedAt']?.N;
  };

  it.skipIf(skip)(
    'refuses a second change within 24 h, writing and scheduling nothing; the same value passes; a day after the last change it passes',
    async () => {
      const db = await freshDb();
      await createTenant(db, 'L1', { historyMonths: 6 });
      const restamps: number[] = [];
      expect((await byAdmin(db, 'L1', 12, T, restamps)).history).toEqual({ before: 6, changedAt: T });
      expect(restamps).toEqual([T, T]);

      // An hour later: refused, saying since when and until when; the setting stays, nothing is scheduled.
      const err = await refusal(byAdmin(db, 'L1', 3, T + HOUR, restamps));
      expect(err).toMatchObject({ code: 'TALLY_ERR_RETENTION_CHANGE_LIMITED', store: 'L1', lastChangedAt: T, waitMs: DAY - HOUR });
      expect(err.message).toContain(new Date(T).toISOString());
      expect(err.message).toContain(new Date(T + DAY).toISOString());
      expect(err.message).toMatch(/at most once every 24 h/);
      await expect(refusal(byAdmin(db, 'L1', null, T + HOUR, restamps))).resolves.toBeDefined();
      expect((await getTenant(db, 'L1'))?.historyMonths).toBe(12);
      expect(restamps).toEqual([T, T]);

      // The value it has (a form that sends every field) is no change: it passes, and starts no new 24 h.
      const same = await byAdmin(db, 'L1', 12, T + 2 * HOUR, restamps);
      expect(same.history).toBeUndefined();
      expect(same.tenant.historyMonths).toBe(12);
      expect(await recorded(db, 'L1')).toBe(String(T));

      // Other settings are not limited.
      await changeTenant(db, 'L1', { currency: 'EUR' }, { now: () => T + 3 * HOUR, historyChangeEveryMs: DAY });

      // A millisecond short of a day: refused; a day after the change: passes (to kept for ever), recorded.
      expect((await refusal(byAdmin(db, 'L1', 3, T + DAY - 1))).waitMs).toBe(1);
      expect((await byAdmin(db, 'L1', null, T + DAY)).history).toEqual({ before: 12, changedAt: T + DAY });
      expect(await recorded(db, 'L1')).toBe(String(T + DAY));
      expect((await byAdmin(db, 'L1', null, T + DAY + 1)).history).toBeUndefined();
      await refusal(byAdmin(db, 'L1', 3, T + DAY + 1));
    },
  );

  it.skipIf(skip)("leaves the operator unlimited, and counts the operator's change as the store's last", async () => {
    const db = await freshDb();
    await createTenant(db, 'L2', { historyMonths: 6 });
    await byAdmin(db, 'L2', 12, T);
    // The operator (no limit: the operator's routes, the tenants CLI) changes it twice within the hour.
    const op = (historyMonths: number, at: number) => changeTenant(db, 'L2', { historyMonths }, { now: () => at });
    expect((await op(24, T + HOUR)).history).toEqual({ before: 12, changedAt: T + HOUR });
    expect((await op(36, T + 2 * HOUR)).history).toEqual({ before: 24, changedAt: T + 2 * HOUR });
    await updateTenant(db, 'L2', { historyMonths: 48 });
    expect((await getTenant(db, 'L2'))?.historyMonths).toBe(48);
    // The store admin waits a day from the operator's last change.
    const now = Number(await recorded(db, 'L2'));
    expect(now).toBeGreaterThan(T);
    expect((await refusal(byAdmin(db, 'L2', 3, now + DAY - 1000))).waitMs).toBe(1000);
    expect((await byAdmin(db, 'L2', 3, now + DAY)).history).toEqual({ before: 48, changedAt: now + DAY });
  });

  it.skipIf(skip)('lets one of two changes at once through, and sees a change made between its read and its write', async () => {
    const db = await freshDb();
    await createTenant(db, 'L3', { historyMonths: 6 });
    const results = await Promise.allSettled([byAdmin(db, 'L3', 12, T), byAdmin(db, 'L3', 24, T)]);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    const refused = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    expect(refused.reason).toBeInstanceOf(RetentionChangeLimitedError);

    // A change whose read found the 24 h over, while the operator changes it before its write (the restamp it
    // schedules between the two is where this one slips in): the write refuses it, and so does the read after.
    await createTenant(db, 'L4', { historyMonths: 6 });
    await byAdmin(db, 'L4', 12, T);
    const late = changeTenant(
      db,
      'L4',
      { historyMonths: 24 },
      {
        now: () => T + DAY,
        historyChangeEveryMs: DAY,
        restamp: async () => {
          if ((await getTenant(db, 'L4'))?.historyMonths === 12) await changeTenant(db, 'L4', { historyMonths: 3 }, { now: () => T + DAY });
        },
      },
    );
    expect((await refusal(late)).lastChangedAt).toBe(T + DAY);
    expect((await getTenant(db, 'L4'))?.historyMonths).toBe(3);

    // The value the store has, while the operator changes it between the read and the write: the write, made for
    // no change, is refused by its condition; read again, it is a change, within the day of the operator's.
    await createTenant(db, 'L5', { historyMonths: 6 });
    await byAdmin(db, 'L5', 12, T);
    await byAdmin(db, 'L5', 6, T + DAY);
    const racing = interleaved(db, () => changeTenant(db, 'L5', { historyMonths: 24 }, { now: () => T + DAY + HOUR }));
    const same = changeTenant(racing, 'L5', { historyMonths: 6 }, { now: () => T + DAY + HOUR, historyChangeEveryMs: DAY });
    expect((await refusal(same)).lastChangedAt).toBe(T + DAY + HOUR);
    expect((await getTenant(db, 'L5'))?.historyMonths).toBe(24);
  });
});
