import { DeleteItemCommand, GetItemCommand, PutItemCommand, ScanCommand, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { createDynamoClient } from '@tally/dynamo';
import { ERASED_ATTR, EXPIRES_ATTR } from '@tally/key-layout';
import { compileRules, defaultRules } from '@tally/schema';
import { createTestTable } from '@tally/testing';
import { dynamoBackends, useDynamoBackendClient } from '@tally/testing/vitest';
import { describe, expect, it, vi } from 'vitest';
import {
  createTenant,
  restampRetention,
  RETENTION_SETTLE_MS,
  updateTenant,
  visitorExpiry,
  TenantsUnavailableError,
  type TenantDb,
} from './index';

/**
 * Restamping the TTL of a store's visitor items after its historyMonths changed (retention-change.ts). Every time is
 * relative to an injected clock: the test's own start, and the last second of that UTC month and the first of the
 * next (a zone east of UTC is then already in the next month, one west of it still in the month before), in the
 * zones furthest east and west.
 */

const DAY_S = 86_400;
const rules = compileRules(defaultRules);
/**
 * The default rules and a second entity keyed by the visitor alone (its rows are the visitor's: expired like the
 * visitor entity's), and one keyed by the visitor and a product (not erasable: the warning of loadRulesOrExit; but its
 * items expire, a TTL per item needing none of its other key values).
 */
const shopperRules = compileRules({
  ...defaultRules,
  entities: {
    ...defaultRules.entities,
    shopper: { key: ['visitor'], flush: { kind: 'bucket' } },
    basket: { key: ['visitor', 'product'], flush: { kind: 'bucket' } },
  },
  events: {
    ...defaultRules.events,
    view: {
      ...defaultRules.events.view,
      counters: [
        ...defaultRules.events.view.counters,
        { entity: 'shopper', metric: 'ViewCount' },
        { entity: 'basket', metric: 'ViewCount' },
      ],
    },
  },
});
/**
 * Rules whose `visitor` entity is keyed by the visitor and a site: no entity is keyed by the visitor alone (nothing is
 * erasable), but the visitor entity's items expire, as they did when the writer stamped the entity named `visitor`.
 */
const bySiteRules = compileRules({
  metrics: { ViewCount: { code: 'v' } },
  entities: {
    store: { key: [], flush: { kind: 'every', minutes: 60 } },
    visitor: { key: ['visitor', 'site'], flush: { kind: 'idle', idleMinutes: 30, maxAgeMinutes: 1_440 } },
  },
  events: {
    view: {
      dims: { visitor: 'required', site: 'required' },
      counters: [
        { entity: 'store', metric: 'ViewCount' },
        { entity: 'visitor', metric: 'ViewCount' },
      ],
    },
  },
});
const START = Date.now();
const NEXT_UTC_MONTH = Date.UTC(new Date(START).getUTCFullYear(), new Date(START).getUTCMonth() + 1, 1);
const CLOCKS = [
  { name: 'now', at: START },
  { name: 'the last second of the UTC month', at: NEXT_UTC_MONTH - 1_000 },
  { name: 'the first second of the next UTC month', at: NEXT_UTC_MONTH },
];
const ZONES = ['Pacific/Kiritimati', 'Pacific/Pago_Pago'];

interface Month {
  year: number;
  month: number;
}

/** The month `at` is in, in `timeZone` (by Intl, not by the code under test). */
function localMonth(at: number, timeZone: string): Month {
  const parts = new Intl.DateTimeFormat('en-US', { timeZone, year: 'numeric', month: 'numeric' }).formatToParts(at);
  return { year: Number(parts.find((p) => p.type === 'year')!.value), month: Number(parts.find((p) => p.type === 'month')!.value) };
}
const plus = (m: Month, n: number): Month => {
  const i = m.year * 12 + m.month - 1 + n;
  return { year: Math.floor(i / 12), month: (i % 12) + 1 };
};
const sk = (m: Month) => `M${m.year}-${String(m.month).padStart(2, '0')}`;
/** A month item's stamp under `months` of history: the first day of the month `months` later, plus a day (UTC). */
const expiry = (m: Month, months: number) => Date.UTC(m.year, m.month - 1 + months, 2) / 1000;

describe.each(dynamoBackends())('restampRetention on $name', (backend) => {
  const { skip } = backend;
  const emulator = useDynamoBackendClient(backend, (endpoint) => createDynamoClient({ endpoint, region: 'us-east-1' }));
  const freshDb = async (): Promise<TenantDb> => ({ dynamo: emulator.client, table: await createTestTable(emulator.endpoint) });
  const put = (db: TenantDb, pk: string, s: string, stamp?: number) =>
    db.dynamo.send(
      new PutItemCommand({
        TableName: db.table,
        Item: { pk: { S: pk }, sk: { S: s }, views: { N: '1' }, ...(stamp === undefined ? {} : { [EXPIRES_ATTR]: { N: String(stamp) } }) },
      }),
    );
  /** Every item of the table as `pk sk` → its stamp (null: none). */
  const stamps = async (db: TenantDb) => {
    const items = (await db.dynamo.send(new ScanCommand({ TableName: db.table, ConsistentRead: true }))).Items ?? [];
    return Object.fromEntries(
      items
        .filter((i) => !i['pk']!.S!.startsWith('_'))
        .map((i) => [`${i['pk']!.S} ${i['sk']!.S}`, i[EXPIRES_ATTR] ? Number(i[EXPIRES_ATTR].N) : null]),
    );
  };
  const noWait = (at: number) => ({ settleMs: 0, now: () => at, rules });

  for (const clock of CLOCKS) {
    for (const timeZone of ZONES) {
      it.skipIf(skip)(
        `moves the stamps to a raised limit, removes them for ever, moves them earlier for a lowered one (${timeZone}, ${clock.name})`,
        async () => {
          const db = await freshDb();
          const at = clock.at;
          const cur = localMonth(at, timeZone);
          const [m1, m2, m5] = [plus(cur, -1), plus(cur, -2), plus(cur, -5)];
          await createTenant(db, 'RS1', { timeZone, historyMonths: 6 });
          // As the writer stamped them under 6 months (its TOTAL from the month it wrote in: the current one).
          const writer6 = await visitorExpiry(
            { tenant: async () => ({ store: 'RS1', timeZone, historyMonths: 6 }) },
            rules,
            () => at,
          )('RS1', 'RS1#visitor#V1');
          const v1 = 'RS1#visitor#V1';
          for (const s of [sk(cur), sk(m1), sk(m2), 'TOTAL', `${sk(cur)}#a`, 'TOTAL#3'])
            await put(db, v1, s, writer6(s.split('#')[0]!) ?? undefined);
          // V2 was last active two months ago (its TOTAL stamped then); V3 has a TOTAL and no month item left.
          const v2 = 'RS1#visitor#V2';
          await put(db, v2, sk(m2), expiry(m2, 6));
          await put(db, v2, sk(m5), expiry(m5, 6));
          await put(db, v2, 'TOTAL', expiry(m2, 6));
          const v3Stamp = expiry(m1, 6);
          await put(db, 'RS1#visitor#V3', 'TOTAL', v3Stamp);
          // Not visitor rows (a stamp where the writer never sets one, to see it untouched), and another store.
          await put(db, 'RS1', sk(cur), 12345);
          await put(db, 'RS1', 'TOTAL');
          await put(db, 'RS1#product#P1', sk(cur));
          await put(db, 'RS10#visitor#V1', sk(cur), expiry(cur, 6));
          const untouched = {
            'RS1 TOTAL': null,
            [`RS1 ${sk(cur)}`]: 12345,
            [`RS1#product#P1 ${sk(cur)}`]: null,
            [`RS10#visitor#V1 ${sk(cur)}`]: expiry(cur, 6),
          };
          expect(writer6('TOTAL')).toBe(expiry(cur, 6));
          /** V1's and V2's stamps under `months` of history: each month's its own, each TOTAL its row's latest month's. */
          const visitorStamps = (months: number) => ({
            [`${v1} ${sk(cur)}`]: expiry(cur, months),
            [`${v1} ${sk(cur)}#a`]: expiry(cur, months),
            [`${v1} ${sk(m1)}`]: expiry(m1, months),
            [`${v1} ${sk(m2)}`]: expiry(m2, months),
            [`${v1} TOTAL`]: expiry(cur, months),
            [`${v1} TOTAL#3`]: expiry(cur, months),
            [`${v2} ${sk(m2)}`]: expiry(m2, months),
            [`${v2} ${sk(m5)}`]: expiry(m5, months),
            [`${v2} TOTAL`]: expiry(m2, months),
          });

          // Raised to 24 months: every stamp moves to its 24-month date, the TOTALs' from their row's latest month.
          await updateTenant(db, 'RS1', { historyMonths: 24 });
          expect(await restampRetention(db, 'RS1', noWait(at))).toEqual({
            store: 'RS1',
            historyMonths: 24,
            scanned: 10,
            restamped: 9,
            changedMeanwhile: 0,
            totalsWithoutMonths: 1,
          });
          const raised: Record<string, number | null> = { ...untouched, ...visitorStamps(24), 'RS1#visitor#V3 TOTAL': v3Stamp };
          expect(await stamps(db)).toEqual(raised);
          // What the writer stamps under the new setting is what the walk set.
          const writer24 = await visitorExpiry(
            { tenant: async () => ({ store: 'RS1', timeZone, historyMonths: 24 }) },
            rules,
            () => at,
          )('RS1', v1);
          for (const s of [sk(cur), sk(m1), sk(m2), 'TOTAL']) expect(raised[`${v1} ${s}`]).toBe(writer24(s));
          // Again: nothing to do.
          expect(await restampRetention(db, 'RS1', noWait(at))).toMatchObject({ scanned: 10, restamped: 0 });

          // Kept for ever: no visitor item has a stamp any more (V3's TOTAL neither).
          await updateTenant(db, 'RS1', { historyMonths: null });
          expect(await restampRetention(db, 'RS1', noWait(at))).toMatchObject({
            historyMonths: null,
            scanned: 10,
            restamped: 10,
            totalsWithoutMonths: 0,
          });
          const forever = Object.fromEntries(Object.keys(raised).map((k) => [k, null]));
          expect(await stamps(db)).toEqual({ ...forever, ...untouched });

          // Lowered to 3 months: the stamps come back, earlier; V2's month of five months ago is due already.
          await updateTenant(db, 'RS1', { historyMonths: 3 });
          expect(await restampRetention(db, 'RS1', noWait(at))).toMatchObject({ historyMonths: 3, restamped: 9, totalsWithoutMonths: 1 });
          const lowered = await stamps(db);
          expect(lowered).toEqual({ ...untouched, ...visitorStamps(3), 'RS1#visitor#V3 TOTAL': null });
          expect(lowered[`${v1} ${sk(cur)}`]).toBeGreaterThan(at / 1000);
          expect(lowered[`${v2} ${sk(m5)}`]).toBeLessThanOrEqual(at / 1000);
        },
      );
    }
  }

  it.skipIf(skip)('does not re-create an item deleted meanwhile, nor overwrite a stamp a writer set meanwhile', async () => {
    const db = await freshDb();
    const at = START;
    const cur = localMonth(at, 'UTC');
    await createTenant(db, 'RS2', { historyMonths: 6 });
    const pk = 'RS2#visitor#V1';
    const prev = plus(cur, -1);
    await put(db, pk, sk(cur), expiry(cur, 6));
    await put(db, pk, sk(prev), expiry(prev, 6));
    await put(db, pk, 'TOTAL', expiry(cur, 6));
    await updateTenant(db, 'RS2', { historyMonths: 12 });
    // Just before the walk's UpdateItem: the current month item is deleted (erasure, TTL), TOTAL rewritten by a writer.
    const client = createDynamoClient({ endpoint: emulator.endpoint, region: 'us-east-1' });
    const send = client.send.bind(client);
    const writerStamp = expiry(plus(cur, 1), 12);
    vi.spyOn(client, 'send').mockImplementation((async (command: unknown) => {
      if (command instanceof UpdateItemCommand) {
        const s = command.input.Key!['sk']!.S!;
        if (s === sk(cur)) await send(new DeleteItemCommand({ TableName: db.table, Key: { pk: { S: pk }, sk: { S: s } } }));
        if (s === 'TOTAL') await put(db, pk, s, writerStamp);
      }
      return send(command as never);
    }) as never);
    try {
      expect(await restampRetention({ dynamo: client, table: db.table }, 'RS2', noWait(at))).toMatchObject({
        scanned: 3,
        restamped: 1,
        changedMeanwhile: 2,
      });
    } finally {
      client.destroy();
    }
    expect(await stamps(db)).toEqual({ [`${pk} ${sk(prev)}`]: expiry(prev, 12), [`${pk} TOTAL`]: writerStamp });
    const gone = await db.dynamo.send(
      new GetItemCommand({ TableName: db.table, Key: { pk: { S: pk }, sk: { S: sk(cur) } }, ConsistentRead: true }),
    );
    expect(gone.Item).toBeUndefined();
  });

  it.skipIf(skip)('finishes a run cut short when run again, and then has nothing left to do', async () => {
    const db = await freshDb();
    const at = START;
    const cur = localMonth(at, 'UTC');
    await createTenant(db, 'RS3', { historyMonths: 6 });
    const months = Array.from({ length: 6 }, (_, i) => plus(cur, -i));
    for (const v of ['V1', 'V2', 'V3']) for (const m of months) await put(db, `RS3#visitor#${v}`, sk(m), expiry(m, 6));
    await updateTenant(db, 'RS3', { historyMonths: 24 });
    const client = createDynamoClient({ endpoint: emulator.endpoint, region: 'us-east-1' });
    const send = client.send.bind(client);
    let updates = 0;
    vi.spyOn(client, 'send').mockImplementation(((command: unknown) => {
      if (command instanceof UpdateItemCommand && ++updates === 7) return Promise.reject(new Error('interrupted (test)'));
      return send(command as never);
    }) as never);
    try {
      await expect(restampRetention({ dynamo: client, table: db.table }, 'RS3', { ...noWait(at), concurrency: 1 })).rejects.toThrow(
        'interrupted (test)',
      );
    } finally {
      client.destroy();
    }
    expect(Object.values(await stamps(db)).filter((s) => s !== null && s > expiry(cur, 6))).toHaveLength(6);
    expect(await restampRetention(db, 'RS3', noWait(at))).toMatchObject({ scanned: 18, restamped: 12 });
    const all = await stamps(db);
    for (const v of ['V1', 'V2', 'V3']) for (const m of months) expect(all[`RS3#visitor#${v} ${sk(m)}`]).toBe(expiry(m, 24));
    expect(await restampRetention(db, 'RS3', noWait(at))).toMatchObject({ scanned: 18, restamped: 0 });
  });

  it.skipIf(skip)('waits out the writers’ tenant cache before it reads the setting and walks', async () => {
    const db = await freshDb();
    const at = START;
    const cur = localMonth(at, 'UTC');
    await createTenant(db, 'RS4', { historyMonths: 6 });
    await put(db, 'RS4#visitor#V1', sk(cur), expiry(cur, 6));
    await updateTenant(db, 'RS4', { historyMonths: 24 });
    const client = createDynamoClient({ endpoint: emulator.endpoint, region: 'us-east-1' });
    const sent = vi.spyOn(client, 'send');
    let wake!: () => void;
    const waits: number[] = [];
    const sleep = (ms: number) => {
      waits.push(ms);
      return new Promise<void>((resolve) => (wake = resolve));
    };
    try {
      const run = restampRetention({ dynamo: client, table: db.table }, 'RS4', { now: () => at, sleep, rules });
      await vi.waitFor(() => expect(waits).toEqual([RETENTION_SETTLE_MS]));
      expect(sent).not.toHaveBeenCalled();
      // Changed again while it waits: it applies the setting it reads after the wait.
      await updateTenant(db, 'RS4', { historyMonths: 12 });
      wake();
      expect(await run).toMatchObject({ historyMonths: 12, restamped: 1 });
    } finally {
      client.destroy();
    }
    expect(await stamps(db)).toEqual({ [`RS4#visitor#V1 ${sk(cur)}`]: expiry(cur, 12) });
    await expect(restampRetention(db, 'NOPE', noWait(at))).rejects.toMatchObject({ code: 'TALLY_ERR_TENANT_NOT_FOUND' });
  });

  it.skipIf(skip)('stamps months of long ago as due a year ago (DynamoDB ignores stamps over five years old), once', async () => {
    const db = await freshDb();
    const at = START;
    const old = plus(localMonth(at, 'UTC'), -72);
    await createTenant(db, 'RS5');
    await put(db, 'RS5#visitor#V1', sk(old));
    await put(db, 'RS5#visitor#V1', 'TOTAL');
    await updateTenant(db, 'RS5', { historyMonths: 3 });
    expect(await restampRetention(db, 'RS5', noWait(at))).toMatchObject({ restamped: 2 });
    const yearAgo = (Math.floor(at / 1000 / DAY_S) - 365) * DAY_S;
    expect(Object.values(await stamps(db))).toEqual([yearAgo, yearAgo]);
    expect(expiry(old, 3)).toBeLessThan(at / 1000 - 5 * 365 * DAY_S);
    // Days later they are due all the same: nothing to write.
    expect(await restampRetention(db, 'RS5', noWait(at + 3 * DAY_S * 1000))).toMatchObject({ restamped: 0 });
  });

  it.skipIf(skip)(
    "leaves tombstone items (an erased visitor's) alone: their stamp is their own lifetime, and they are no month",
    async () => {
      const db = await freshDb();
      const at = START;
      const cur = localMonth(at, 'UTC');
      await createTenant(db, 'RS6', { historyMonths: 6 });
      const tombstone = (pk: string, s: string) =>
        db.dynamo.send(
          new PutItemCommand({
            TableName: db.table,
            Item: {
              pk: { S: pk },
              sk: { S: s },
              wm: { N: '7' },
              [ERASED_ATTR]: { S: new Date(at).toISOString() },
              [EXPIRES_ATTR]: { N: '123' },
            },
          }),
        );
      // V1 erased (every item a tombstone); V2 active in an older month, with a tombstone of the current one.
      for (const s of [sk(cur), 'TOTAL']) await tombstone('RS6#visitor#V1', s);
      await tombstone('RS6#visitor#V2', sk(cur));
      await put(db, 'RS6#visitor#V2', sk(plus(cur, -1)), expiry(plus(cur, -1), 6));
      await put(db, 'RS6#visitor#V2', 'TOTAL', expiry(plus(cur, -1), 6));
      await updateTenant(db, 'RS6', { historyMonths: 12 });
      expect(await restampRetention(db, 'RS6', noWait(at))).toMatchObject({ scanned: 2, restamped: 2, changedMeanwhile: 0 });
      expect(await stamps(db)).toEqual({
        [`RS6#visitor#V1 ${sk(cur)}`]: 123,
        'RS6#visitor#V1 TOTAL': 123,
        [`RS6#visitor#V2 ${sk(cur)}`]: 123,
        [`RS6#visitor#V2 ${sk(plus(cur, -1))}`]: expiry(plus(cur, -1), 12),
        // TOTAL follows the latest month holding data, not the tombstone's.
        'RS6#visitor#V2 TOTAL': expiry(plus(cur, -1), 12),
      });
    },
  );
  it.skipIf(skip)(
    'restamps the items of every entity whose key includes the visitor: a second one keyed by it alone, and one keyed by it and a product',
    async () => {
      const db = await freshDb();
      const at = START;
      const prev = plus(localMonth(at, 'UTC'), -1);
      await createTenant(db, 'RS7', { historyMonths: 6 });
      const [visitor, shopper] = ['visitor', 'shopper'].map((entity) => shopperRules.pkOf('RS7', entity, ['V1']));
      for (const pk of [visitor!, shopper!]) {
        await put(db, pk, sk(prev), expiry(prev, 6));
        await put(db, pk, 'TOTAL', expiry(prev, 6));
      }
      // The visitor's row of an entity keyed by two dimensions, written before its items were stamped (no TTL): not
      // erasable, but it expires as the visitor's other rows do.
      const basket = shopperRules.pkOf('RS7', 'basket', ['V1', 'P1']);
      await put(db, basket, sk(prev));
      await put(db, 'RS7#product#P1', sk(prev));
      await updateTenant(db, 'RS7', { historyMonths: 12 });
      expect(await restampRetention(db, 'RS7', { ...noWait(at), rules: shopperRules })).toMatchObject({ scanned: 5, restamped: 5 });
      expect(await stamps(db)).toEqual({
        [`${visitor} ${sk(prev)}`]: expiry(prev, 12),
        [`${visitor} TOTAL`]: expiry(prev, 12),
        [`${shopper} ${sk(prev)}`]: expiry(prev, 12),
        [`${shopper} TOTAL`]: expiry(prev, 12),
        [`${basket} ${sk(prev)}`]: expiry(prev, 12),
        [`RS7#product#P1 ${sk(prev)}`]: null,
      });
    },
  );

  it.skipIf(skip)('restamps the visitor entity keyed by the visitor and a site (no entity keyed by the visitor alone)', async () => {
    // Regression (d0e5949): the restamp took only the entities keyed by the visitor alone, and skipped these rows.
    const db = await freshDb();
    const at = START;
    const prev = plus(localMonth(at, 'UTC'), -1);
    await createTenant(db, 'RS8', { historyMonths: 6 });
    const pk = bySiteRules.pkOf('RS8', 'visitor', ['V1', 'shop']);
    await put(db, pk, sk(prev), expiry(prev, 6));
    await put(db, pk, 'TOTAL', expiry(prev, 6));
    await updateTenant(db, 'RS8', { historyMonths: 12 });
    expect(await restampRetention(db, 'RS8', { ...noWait(at), rules: bySiteRules })).toMatchObject({ scanned: 2, restamped: 2 });
    expect(await stamps(db)).toEqual({ [`${pk} ${sk(prev)}`]: expiry(prev, 12), [`${pk} TOTAL`]: expiry(prev, 12) });
  });
});

describe("the writer's expiry (visitorExpiry)", () => {
  it('stamps the visitor rows of a store with a retention, removes the stamp of every other item, and leaves it while the tenant is unknown', async () => {
    const at = START;
    const tenant = (historyMonths?: number) => async () => ({ store: 'RX', timeZone: 'UTC', ...(historyMonths ? { historyMonths } : {}) });
    const cur = localMonth(at, 'UTC');
    expect((await visitorExpiry({ tenant: tenant(6) }, rules, () => at)('RX', 'RX#visitor#V1'))(sk(cur))).toBe(expiry(cur, 6));
    // No stamp (null: the writer REMOVEs one a tombstone or an earlier retention left): other rows, history for ever.
    expect((await visitorExpiry({ tenant: tenant(6) }, rules, () => at)('RX', 'RX#product#P1'))(sk(cur))).toBeNull();
    expect((await visitorExpiry({ tenant: tenant() }, rules, () => at)('RX', 'RX#visitor#V1'))(sk(cur))).toBeNull();
    // Not known (undefined: the item keeps its stamp): the store has no tenant item.
    expect((await visitorExpiry({ tenant: async () => undefined }, rules, () => at)('RX', 'RX#visitor#V1'))(sk(cur))).toBeUndefined();
    // A failed lookup is not "not known": the flush waits (TenantsUnavailableError), or the first write after an
    // erasure would keep the tombstone's 30-day stamp on the visitor's new counts.
    const failing = async () => Promise.reject(new Error('DynamoDB down'));
    await expect(visitorExpiry({ tenant: failing }, rules, () => at)('RX', 'RX#visitor#V1')).rejects.toThrow(
      new TenantsUnavailableError('the tenant of store RX cannot be looked up: DynamoDB down'),
    );
  });

  it('stamps the month of an event years late as due a year ago, not past what DynamoDB honours', async () => {
    // LATENESS_HORIZON_DAYS takes up to 3650 days: an event six years late is accepted, and its month item's stamp
    // would be over five years past, which DynamoDB's TTL ignores (the item kept for ever).
    const at = START;
    const old = plus(localMonth(at, 'UTC'), -72);
    const expiryOf = await visitorExpiry(
      { tenant: async () => ({ store: 'RX', timeZone: 'UTC', historyMonths: 1 }) },
      rules,
      () => at,
    )('RX', 'RX#visitor#V1');
    expect(expiry(old, 1)).toBeLessThan(at / 1000 - 5 * 365 * DAY_S);
    expect(expiryOf(sk(old))).toBe((Math.floor(at / 1000 / DAY_S) - 365) * DAY_S);
  });

  it('stamps the rows of every entity whose key includes the visitor, as the rules say: alone or with another dimension', async () => {
    const at = START;
    const cur = localMonth(at, 'UTC');
    const tenant = async () => ({ store: 'RX', timeZone: 'UTC', historyMonths: 6 });
    const of = async (pk: string) => (await visitorExpiry({ tenant }, shopperRules, () => at)('RX', pk))(sk(cur));
    expect(await of('RX#shopper#V1')).toBe(expiry(cur, 6));
    expect(await of('RX#visitor#V1')).toBe(expiry(cur, 6));
    // Not erasable (its product is not known from the visitor id), but a TTL per item needs no other key value.
    expect(await of(shopperRules.pkOf('RX', 'basket', ['V1', 'P1']))).toBe(expiry(cur, 6));
    expect(await of('RX#product#P1')).toBeNull();
    expect(await of('RX')).toBeNull();
  });

  it('stamps the visitor entity keyed by the visitor and a site, as before d0e5949 (not null, which REMOVEs the TTL)', async () => {
    const at = START;
    const cur = localMonth(at, 'UTC');
    const tenant = async (store: string) => ({ store, timeZone: 'UTC', historyMonths: 6 });
    const pk = bySiteRules.pkOf('S1', 'visitor', ['V1', 'shop']);
    const stampOf = await visitorExpiry({ tenant }, bySiteRules, () => at)('S1', pk);
    // Such rules are warned of at start (not erasable), yet their visitor rows expire.
    expect(bySiteRules.visitorDataOutOfReach.map((x) => x.rule)).toEqual(['entities.visitor']);
    expect({ month: stampOf(sk(cur)), total: stampOf('TOTAL') }).toEqual({ month: expiry(cur, 6), total: expiry(cur, 6) });
    expect((await visitorExpiry({ tenant }, bySiteRules, () => at)('S1', 'S1'))(sk(cur))).toBeNull();
  });
});
