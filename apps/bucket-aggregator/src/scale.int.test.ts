import { BucketStore } from '@tally/buckets';
import { loadConfig } from '@tally/config';
import { createMetrics, queueDepthMetrics } from '@tally/observability';
import { allQueues, closeQueues, createQueues, type TallyQueues } from '@tally/queues';
import { compileRules, defaultRules, type RowDeltas } from '@tally/schema';
import { startRedis, type RedisHandle } from '@tally/testing';
import { Redis } from 'ioredis';
import pino from 'pino';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createAggregatorMetrics, registerBacklogGauges } from './aggregator-metrics';
import { readBacklog, sealTick, type SealDeps } from './seal.processor';

/**
 * Cost against tenants, asserted on its structure (commands sent to Redis), never on time: a sealer tick sends a
 * bounded number of commands per store it seals and none for stores with nothing due; a scrape sends the same
 * commands whatever the number of stores and rows. Short inside `npm test`; `npm run test:scale` runs the issue's
 * 10,000 stores with 1,000,000 open visitor rows.
 */
const { TALLY_SCALE: mode } = loadConfig(
  z.object({
    /** short (inside npm test, a few seconds) or long (npm run test:scale: 10,000 stores, 1,000,000 open rows). */
    TALLY_SCALE: z.enum(['short', 'long']).default('short'),
  }),
);
const STORES = mode === 'long' ? 10_000 : 200;
const ROWS_PER_STORE = 100; // open visitor rows per store: 1,000,000 long, 20,000 short
const IDLE_STORES = mode === 'long' ? 10_000 : 200;
const BUCKET_MS = 60_000;

let server: RedisHandle;
let scriptRedis: Redis;
let queueRedis: Redis;
let buckets: BucketStore;
let queues: TallyQueues;
const rules = compileRules(defaultRules);
const metrics = createAggregatorMetrics(new Registry());
/**
 * The instants the ticks are judged at run from t0 to about t0 + 35 min (the visitor rows' idle flush). The product
 * rows flush daily, at UTC midnight, so no midnight may fall in that window: when one would, t0 moves to 46 min
 * before it (still in the past). Without this the test failed when run from about 00:02 to 00:08 UTC.
 */
const DAY_MS = 86_400_000;
const WINDOW_MS = 45 * 60_000;
const recent = Date.now() - 10 * BUCKET_MS;
const nextMidnight = (Math.floor(recent / DAY_MS) + 1) * DAY_MS;
const t0 = recent + WINDOW_MS < nextMidnight ? recent : nextMidnight - WINDOW_MS - 60_000;

/**
 * Counts the commands a connection sends (pipelined ones included), and its round trips: a command sent alone is
 * one, a pipeline one however many commands it carries.
 */
function counted(redis: Redis): { reset(): number; resetRoundTrips(): number } {
  let n = 0;
  let trips = 0;
  const pipelines = new WeakSet<object>();
  const send = redis.sendCommand.bind(redis);
  redis.sendCommand = ((...args: Parameters<Redis['sendCommand']>) => {
    n++;
    const stream = args[1] as { isPipeline?: boolean } | undefined;
    if (!stream?.isPipeline) trips++;
    else if (!pipelines.has(stream)) {
      pipelines.add(stream);
      trips++;
    }
    return send(...args);
  }) as Redis['sendCommand'];
  return {
    reset() {
      const v = n;
      n = 0;
      trips = 0;
      return v;
    },
    resetRoundTrips() {
      const v = trips;
      n = 0;
      trips = 0;
      return v;
    },
  };
}
let scriptCommands: ReturnType<typeof counted>;
let queueCommands: ReturnType<typeof counted>;

const ids = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}${i}`);
const visitorRows = (store: string, n: number, from = 0): RowDeltas => {
  const d: RowDeltas = new Map();
  for (let v = from; v < from + n; v++) d.set(`${store}#visitor#V${v}`, new Map([['2023-123|v', 1n]]));
  return d;
};
async function pool<T>(items: readonly T[], fn: (t: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(64, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}
const deps = (now: number): SealDeps => ({ buckets, queues, bucketMs: BUCKET_MS, metrics, log: pino({ level: 'silent' }), now: () => now });

/** The aggregator's /metrics as main.ts registers them, on these connections. */
function scrapeRegistry(): Registry {
  const { registry } = createMetrics({ app: 'bucket-aggregator' });
  queueDepthMetrics(registry, allQueues(queues));
  registerBacklogGauges(registry, () => readBacklog(buckets, Date.now()));
  return registry;
}
/** Commands one scrape sends (after the 250 ms its backlog read is shared). */
async function scrapeCommands(registry: Registry): Promise<number> {
  await new Promise((r) => setTimeout(r, 300));
  scriptCommands.reset();
  queueCommands.reset();
  await registry.metrics();
  return scriptCommands.reset() + queueCommands.reset();
}

beforeAll(async () => {
  server = await startRedis();
  scriptRedis = new Redis(server.url, { maxRetriesPerRequest: null });
  queueRedis = new Redis(server.url, { maxRetriesPerRequest: null });
  scriptCommands = counted(scriptRedis);
  queueCommands = counted(queueRedis);
  buckets = new BucketStore({ redis: scriptRedis, rules, prefix: 't' });
  queues = createQueues(queueRedis);
}, 60_000);
afterAll(async () => {
  await closeQueues(queues);
  scriptRedis?.disconnect();
  queueRedis?.disconnect();
  await server?.stop();
});

describe(`scale (${mode}: ${STORES} stores with ${STORES * (ROWS_PER_STORE + 1)} open rows, ${IDLE_STORES} idle ones)`, () => {
  it(
    'costs O(1) Redis commands per scrape, a bounded number per sealed store, and none for stores with nothing due',
    { timeout: mode === 'long' ? 3_600_000 : 120_000 },
    async () => {
      const registry = scrapeRegistry();
      await registry.metrics(); // the scripts and queues are loaded once
      const scrapeEmpty = await scrapeCommands(registry);

      // Idle stores: one row each, sealed, folded, written (acked) and retired: out of the work set.
      const idle = ids('IDLE', IDLE_STORES);
      await pool(idle, async (s) => {
        await buckets.apply(s, 'a', visitorRows(s, 1), { now: t0, dedupeTtlSeconds: 3_600 });
        await buckets.registerStore(s);
      });
      expect(await sealTick(deps(t0 + BUCKET_MS))).toMatchObject({ stores: IDLE_STORES, sealed: IDLE_STORES, folded: IDLE_STORES });
      await pool(idle, async (s) => {
        const out = await buckets.readOutbox(s, `${s}#visitor#V0`);
        await buckets.ackOutbox(
          s,
          `${s}#visitor#V0`,
          out.entries.map((e) => e.field),
          t0 + BUCKET_MS,
        );
        await buckets.publishBacklog(s, await buckets.storeBacklog(s), undefined, t0 + BUCKET_MS); // as the writer does
      });
      expect(await sealTick(deps(t0 + 2 * BUCKET_MS))).toMatchObject({ stores: IDLE_STORES, retired: IDLE_STORES });

      // Active stores: ROWS_PER_STORE open visitor rows each (and one ranked product row), folded by a tick and left
      // waiting for their idle flush.
      const active = ids('SHOP', STORES);
      const OPEN = ROWS_PER_STORE + 1;
      await pool(active, async (s) => {
        for (let from = 0; from < ROWS_PER_STORE; from += 500) {
          const d = visitorRows(s, Math.min(500, ROWS_PER_STORE - from), from);
          if (from === 0) d.set(`${s}#product#P1`, new Map([['2023-123|ViewCount', 1n]]));
          await buckets.apply(s, `load-${from}`, d, { now: t0 + 2 * BUCKET_MS, dedupeTtlSeconds: 3_600 });
        }
        await buckets.registerStore(s);
      });
      expect(await sealTick(deps(t0 + 3 * BUCKET_MS))).toMatchObject({
        stores: STORES,
        sealed: STORES,
        folded: STORES,
        rows: STORES * OPEN,
      });
      expect(await readBacklog(buckets, t0 + 3 * BUCKET_MS)).toMatchObject({ dirtyRows: STORES * OPEN, outboxEntries: STORES * OPEN });

      // A tick where every active store seals a fresh bucket (5 visitor rows and a ranked product row): at most
      // 2 scripts per store (VISIT, FOLD; the product was ranked by its apply), plus 1 read of the work set and
      // 1 publish per 500 stores; and in round trips, 1 for the work set, then per batch of 500 stores 1 for their
      // visits and 1 for their folds, and 1 per 500 stores for the publish.
      await pool(active, async (s) => {
        const d = visitorRows(s, 5);
        d.set(`${s}#product#P1`, new Map([['2023-123|ViewCount', 1n]]));
        await buckets.apply(s, 'fresh', d, { now: t0 + 3 * BUCKET_MS, dedupeTtlSeconds: 3_600 });
        await buckets.registerStore(s);
      });
      const batches = Math.ceil(STORES / 500);
      scriptCommands.reset();
      let sealing = await sealTick(deps(t0 + 4 * BUCKET_MS));
      expect(sealing).toMatchObject({ stores: STORES, sealed: STORES, folded: STORES, rows: STORES * 6, retired: 0 });
      expect(scriptCommands.reset()).toBeLessThanOrEqual(2 * STORES + 1 + batches);
      // The same again, counting round trips.
      await pool(active, async (s) => {
        await buckets.apply(s, 'fresh-2', visitorRows(s, 5), { now: t0 + 4 * BUCKET_MS, dedupeTtlSeconds: 3_600 });
        await buckets.registerStore(s);
      });
      scriptCommands.reset();
      sealing = await sealTick(deps(t0 + 5 * BUCKET_MS));
      expect(sealing).toMatchObject({ stores: STORES, sealed: STORES, folded: STORES, rows: STORES * 5, retired: 0 });
      expect(scriptCommands.resetRoundTrips()).toBeLessThanOrEqual(1 + 2 * batches + batches);

      // A tick with nothing due: the active stores' rows wait for their idle flush and their open buckets are empty,
      // so the tick reads the work set's due stores (one script) and touches no store at all.
      scriptCommands.reset();
      queueCommands.reset();
      expect(await sealTick(deps(t0 + 5 * BUCKET_MS + 1_000))).toMatchObject({ stores: 0, sealed: 0, folded: 0, flushes: 0 });
      expect(scriptCommands.reset() + queueCommands.reset()).toBe(1);

      // A few stores get a batch: the next tick once their bucket can be sealed visits those stores only.
      const busy = active.slice(0, 10);
      const applied = t0 + 5 * BUCKET_MS + 2_000;
      await pool(busy, async (s) => {
        const r = await buckets.apply(s, 'busy', visitorRows(s, 1), { now: applied, dedupeTtlSeconds: 3_600 });
        await buckets.registerStore(s, r.seq);
      });
      scriptCommands.reset();
      expect(await sealTick(deps(applied + BUCKET_MS))).toMatchObject({ stores: busy.length, sealed: busy.length, folded: busy.length });
      expect(scriptCommands.reset()).toBeLessThanOrEqual(3 * busy.length + 2);

      // When the rows' flush comes due, the tick visits the stores whose rows are due, and only those.
      const times = await buckets.visitTimes(0);
      const firstDue = Math.min(...active.map((s) => times.get(s)!));
      expect(firstDue).toBeGreaterThan(applied + BUCKET_MS);
      const dueThen = active.filter((s) => times.get(s)! <= firstDue).length;
      const flushing = await sealTick(deps(firstDue));
      expect(flushing).toMatchObject({ stores: dueThen, sealed: 0 });
      expect(flushing.flushes).toBeGreaterThanOrEqual(dueThen);

      // A scrape: the same commands with no store as with all of them and every open row.
      expect(await scrapeCommands(registry)).toBe(scrapeEmpty);
      expect(scrapeEmpty).toBeLessThanOrEqual(40);
    },
  );
});

describe('a seal tick against the stores’ other open rows', () => {
  it('runs the same Redis commands per store whether a store has 5, 100 or 1,000 unwritten rows', { timeout: 120_000 }, async () => {
    // A work set of its own (prefix u): groups of stores with that many rows folded and waiting for their idle flush,
    // then a fresh bucket touching 5 of them in one group at a time, sealed and folded by a tick.
    const own = new BucketStore({ redis: scriptRedis, rules, prefix: 'u' });
    const d = (now: number): SealDeps => ({ ...deps(now), buckets: own });
    const commands = async () => {
      const stats = await scriptRedis.info('commandstats');
      return [...stats.matchAll(/cmdstat_([^:]+):calls=(\d+)/g)].reduce((n, m) => (/^(info|config)/.test(m[1]!) ? n : n + Number(m[2])), 0);
    };
    const PER_GROUP = 20;
    const sizes = [5, 100, 1_000];
    const groups = sizes.map((n) => ids(`OPEN${n}-`, PER_GROUP));
    let now = t0;
    await pool(groups.flat(), async (s) => {
      const n = sizes[groups.findIndex((g) => g.includes(s))]!;
      for (let from = 0; from < n; from += 500) {
        await own.apply(s, `load-${from}`, visitorRows(s, Math.min(500, n - from), from), { now, dedupeTtlSeconds: 3_600 });
      }
      await own.registerStore(s);
    });
    now += BUCKET_MS;
    expect(await sealTick(d(now))).toMatchObject({ sealed: 3 * PER_GROUP, rows: PER_GROUP * (5 + 100 + 1_000) });
    const perStore: number[] = [];
    for (const group of groups) {
      await pool(group, async (s) => {
        await own.apply(s, `fresh-${now}`, visitorRows(s, 5), { now, dedupeTtlSeconds: 3_600 });
        await own.registerStore(s);
      });
      now += BUCKET_MS;
      const before = await commands();
      expect(await sealTick(d(now))).toMatchObject({ stores: PER_GROUP, sealed: PER_GROUP, rows: 5 * PER_GROUP, flushes: 0 });
      perStore.push(((await commands()) - before) / PER_GROUP);
    }
    expect(perStore).toEqual([perStore[0], perStore[0], perStore[0]]);
  });
});

describe('a seal tick re-touching idle rows', () => {
  it('leaves their stores’ due zsets alone, however many idle rows each fold re-touched', { timeout: 120_000 }, async () => {
    // A work set of its own (prefix w): stores of 100 idle rows folded and waiting for their idle flush, then a fresh
    // bucket re-touching 5 of them in one group and all 100 in the other, sealed and folded by one tick each. The
    // rows' flush times move (idle: 30 min after the fold), but not their alarms in the due zset (a listpack zset's
    // ZADD rewrites it whole): the keyspace events show no write to any due zset, and one HSET per fold to the
    // stores' dueLater hashes.
    const own = new BucketStore({ redis: scriptRedis, rules, prefix: 'w' });
    const d = (now: number): SealDeps => ({ ...deps(now), buckets: own });
    const PER_GROUP = 20;
    const ROWS = 100;
    const touched = [5, ROWS];
    const groups = touched.map((n) => ids(`RETOUCH${n}-`, PER_GROUP));
    let now = t0;
    await pool(groups.flat(), async (s) => {
      await own.apply(s, 'load', visitorRows(s, ROWS), { now, dedupeTtlSeconds: 3_600 });
      await own.registerStore(s);
    });
    now += BUCKET_MS;
    expect(await sealTick(d(now))).toMatchObject({ sealed: 2 * PER_GROUP, rows: 2 * PER_GROUP * ROWS });
    const firstFold = now;

    const events = new Redis(server.url);
    await events.ping(); // ready (its ready check is no subscriber command)
    await scriptRedis.config('SET', 'notify-keyspace-events', 'Kzh');
    try {
      const seen: string[] = [];
      events.on('pmessage', (_p: string, channel: string, event: string) =>
        seen.push(`${channel.slice(channel.indexOf(':') + 1)} ${event}`),
      );
      await events.psubscribe('__keyspace@0__:w:{RETOUCH*}:due', '__keyspace@0__:w:{RETOUCH*}:dl');
      for (const [g, group] of groups.entries()) {
        await pool(group, async (s) => {
          await own.apply(s, `fresh-${now}`, visitorRows(s, touched[g]!), { now, dedupeTtlSeconds: 3_600 });
          await own.registerStore(s);
        });
        now += BUCKET_MS;
        const dues = await Promise.all(group.map((s) => scriptRedis.zrange(own.keys.due(s), 0, -1, 'WITHSCORES')));
        seen.length = 0;
        expect(await sealTick(d(now))).toMatchObject({ stores: PER_GROUP, sealed: PER_GROUP, rows: touched[g]! * PER_GROUP, flushes: 0 });
        await scriptRedis.ping();
        await new Promise((r) => setTimeout(r, 100)); // the events of the tick's last commands
        expect(seen.filter((e) => e.includes(':due '))).toEqual([]);
        expect(seen.filter((e) => e.endsWith(':dl hset')).length).toBe(PER_GROUP);
        expect(await Promise.all(group.map((s) => scriptRedis.zrange(own.keys.due(s), 0, -1, 'WITHSCORES')))).toEqual(dues);
        // The flush times as the policy computes them: the re-touched rows 30 min after this fold, the others 30 min
        // after the first.
        for (const s of group) {
          expect(await own.flushTime(s, `${s}#visitor#V0`)).toBe(now + 30 * 60_000);
          expect(await own.flushTime(s, `${s}#visitor#V${ROWS - 1}`)).toBe(
            touched[g] === ROWS ? now + 30 * 60_000 : firstFold + 30 * 60_000,
          );
        }
      }
    } finally {
      await scriptRedis.config('SET', 'notify-keyspace-events', '');
      events.disconnect();
    }
  });
});
