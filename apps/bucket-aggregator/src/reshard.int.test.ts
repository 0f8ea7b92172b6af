import { BucketStore } from '@tally/buckets';
import { aggregatorEnv } from '@tally/config';
import { storeShard, WORK_SUFFIX } from '@tally/key-layout';
import { closeQueues, createQueues, type TallyQueues } from '@tally/queues';
import { compileRules, defaultRules } from '@tally/schema';
import { startRedis, type RedisHandle } from '@tally/testing';
import { Redis } from 'ioredis';
import pino from 'pino';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createAggregatorMetrics } from './aggregator-metrics';
import { LEFTOVER_CHECK_MS, sealProcessor, type SealTickResult } from './seal.processor';
import { sealJob } from './test-fixtures';

/**
 * QUEUE_SHARDS changed under a work set: every store registered under the old count is sealed, folded and published
 * by the sealer of the new one, from the shards it removed too, and each store ends in its own shard only.
 */
let server: RedisHandle;
let redis: Redis;
/** The sealer's connection, whose commands are counted (work-set shards they touch). */
let sealerRedis: Redis;
let queues: TallyQueues;
const rules = compileRules({ ...defaultRules, entities: { ...defaultRules.entities, store: { key: [], flush: { kind: 'bucket' } } } });
const BUCKET_MS = 1000;
const t0 = 1_000_000;
const log = pino({ level: 'silent' });
/** Per command the sealer's connection sent, its name and the work-set shards its keys name. */
let touched: Array<{ name: string; shards: number[] }> = [];

beforeAll(async () => {
  server = await startRedis();
  redis = new Redis(server.url, { maxRetriesPerRequest: null });
  sealerRedis = new Redis(server.url, { maxRetriesPerRequest: null });
  const send = sealerRedis.sendCommand.bind(sealerRedis);
  sealerRedis.sendCommand = ((...args: Parameters<Redis['sendCommand']>) => {
    const command = args[0] as { name: string; args?: unknown[] };
    const shards = (command.args ?? []).flatMap((a) => {
      const m = typeof a === 'string' ? /^t:\{t:w(\d+)\}:/.exec(a) : null;
      return m ? [Number(m[1])] : [];
    });
    touched.push({ name: command.name, shards });
    return send(...args);
  }) as Redis['sendCommand'];
  queues = createQueues(redis);
});
afterAll(async () => {
  await closeQueues(queues);
  await redis.quit();
  await sealerRedis.quit();
  await server.stop();
});
beforeEach(async () => {
  await redis.flushall();
  touched = [];
});

/** An installation's BucketStore for QUEUE_SHARDS=shards (the sealer's on the counted connection). */
const store = (shards: number, sealer = false) => new BucketStore({ redis: sealer ? sealerRedis : redis, rules, prefix: 't', shards });

/** A sealer process of QUEUE_SHARDS=buckets.shards, on a clock of the test's. */
function sealer(buckets: BucketStore, clock: { now: number }) {
  const seal = sealProcessor({
    buckets,
    queues,
    bucketMs: BUCKET_MS,
    metrics: createAggregatorMetrics(new Registry()),
    log,
    now: () => clock.now,
  });
  /** One seal job per shard, as the job schedulers make them. */
  return async (): Promise<SealTickResult[]> => {
    const out: SealTickResult[] = [];
    for (let shard = 0; shard < buckets.shards; shard++) out.push(await seal(sealJob(shard, clock.now)));
    return out;
  };
}

/** One view per store at `at`, applied and registered (as the events processor does) by `buckets`. */
async function applyViews(buckets: BucketStore, stores: readonly string[], at: number, batch: string): Promise<void> {
  for (const s of stores) {
    const r = await buckets.apply(s, `${batch}-${s}`, new Map([[s, new Map([['2023-123|v', 1n]])]]), { now: at, dedupeTtlSeconds: 3600 });
    await buckets.registerStore(s, r.seq);
  }
}

/** A store's counts in its outbox (folded), by bucket. */
async function outbox(buckets: BucketStore, s: string): Promise<string[]> {
  return (await buckets.readOutbox(s, s)).entries.map((e) => `${e.seq}=${e.value}`).sort();
}

/** The work-set shards (0 to 7) whose active set holds the store. */
async function shardsHolding(s: string): Promise<number[]> {
  const held: number[] = [];
  for (let shard = 0; shard < 8; shard++) if ((await redis.zscore(`t:{t:w${shard}}:${WORK_SUFFIX.active}`, s)) !== null) held.push(shard);
  return held;
}

/** Whether any key of work-set shard `shard` exists. */
// The shard's keys but its mark counter, which is never deleted (a counter restarted could repeat a mark).
const shardExists = async (shard: number) =>
  (await redis.exists(
    ...Object.values(WORK_SUFFIX)
      .filter((suffix) => suffix !== WORK_SUFFIX.marks)
      .map((suffix) => `t:{t:w${shard}}:${suffix}`),
  )) > 0;

const sum = (results: readonly SealTickResult[], k: Exclude<keyof SealTickResult, 'skipped'>) => results.reduce((n, r) => n + r[k], 0);
const STORES = Array.from({ length: 40 }, (_, i) => `S${i}`);

describe('lowering QUEUE_SHARDS', () => {
  it('4 → 2: the sealer drains the removed shards 2 and 3: every store is sealed, folded and published in its own shard, and the removed shards’ gauges go', async () => {
    const old = store(4);
    expect(new Set(STORES.map((s) => storeShard(s, 4)))).toEqual(new Set([0, 1, 2, 3]));
    // Under QUEUE_SHARDS=4: a bucket applied, sealed, folded and published (each shard's stats and totals hold its
    // stores), then another applied (open, registered in the old shards).
    await applyViews(old, STORES, t0, 'a');
    const before = await sealer(old, { now: t0 + BUCKET_MS })();
    expect(sum(before, 'folded')).toBe(STORES.length);
    expect(await redis.hget(`t:{t:w3}:${WORK_SUFFIX.totals}`, 'rows')).toBe(String(STORES.filter((s) => storeShard(s, 4) === 3).length));
    await applyViews(old, STORES, t0 + BUCKET_MS + 1, 'b');

    // Restarted with QUEUE_SHARDS=2: one round of seal jobs (shards 0 and 1) seals and folds every store's bucket.
    const neu = store(2, true);
    const round = await sealer(neu, { now: t0 + 3 * BUCKET_MS })();
    const moved = STORES.filter((s) => storeShard(s, 4) >= 2);
    expect(sum(round, 'moved')).toBe(moved.length);
    expect(sum(round, 'sealed')).toBe(STORES.length);
    for (const s of STORES) expect(await outbox(neu, s)).toEqual([`${t0}=1`, `${t0 + BUCKET_MS}=1`]);
    for (const s of STORES) expect(await shardsHolding(s)).toEqual([neu.shardOf(s)]);
    // The removed shards are gone, their stats and totals too; the gauges count every store once.
    expect([await shardExists(2), await shardExists(3)]).toEqual([false, false]);
    expect(await neu.backlog()).toEqual({
      rows: STORES.length,
      entries: 2 * STORES.length,
      oldestDirty: t0 + BUCKET_MS,
      oldestUnfolded: undefined,
    });
  });

  it('4 → 3: stores of the kept shards that are now another’s move too; the removed shard is looked for again every 5 minutes, and not in between', async () => {
    const old = store(4);
    const strangers = STORES.filter((s) => storeShard(s, 4) < 3 && storeShard(s, 4) !== storeShard(s, 3));
    const removed = STORES.filter((s) => storeShard(s, 4) === 3);
    expect([strangers.length > 0, removed.length > 0]).toEqual([true, true]);
    await applyViews(old, STORES, t0, 'a');

    const clock = { now: t0 + BUCKET_MS };
    const neu = store(3, true);
    const round = sealer(neu, clock);
    // First round: the removed shard is looked for (one EXISTS per shard 3 to 255) and drained, and the strangers are
    // moved; a stranger moved into a shard ticked earlier in the round is visited at the next round.
    touched = [];
    const first = await round();
    expect(touched.filter((c) => c.name === 'exists' && c.shards.some((w) => w >= 3)).length).toBe(256 - 3);
    expect(sum(first, 'moved')).toBe(strangers.length + removed.length);
    clock.now += BUCKET_MS;
    await round();
    for (const s of STORES) expect(await outbox(neu, s)).toEqual([`${t0}=1`]);
    for (const s of STORES) expect(await shardsHolding(s)).toEqual([neu.shardOf(s)]);
    expect(await shardExists(3)).toBe(false);
    expect((await neu.backlog()).rows).toBe(STORES.length);

    // A process still on QUEUE_SHARDS=4 registers a store in shard 3 (a rolling restart). Ticks within 5 minutes of
    // the last look send nothing to the shards past 3; the first tick after that finds it, moves and visits it.
    const late = Array.from({ length: 20 }, (_, i) => `LATE${i}`).find((s) => storeShard(s, 4) === 3)!;
    await applyViews(old, [late], clock.now, 'late');
    const lookedAt = t0 + BUCKET_MS;
    touched = [];
    for (clock.now += BUCKET_MS; clock.now < lookedAt + LEFTOVER_CHECK_MS; clock.now += 60 * BUCKET_MS) await round();
    expect(touched.filter((c) => c.shards.some((w) => w >= 3))).toEqual([]);
    expect(await outbox(neu, late)).toEqual([]);
    clock.now = lookedAt + LEFTOVER_CHECK_MS;
    expect(sum(await round(), 'moved')).toBe(1);
    clock.now += BUCKET_MS;
    await round();
    expect(await outbox(neu, late)).toEqual([`${t0 + 2 * BUCKET_MS}=1`]);
    expect(await shardsHolding(late)).toEqual([neu.shardOf(late)]);
    expect(await shardExists(3)).toBe(false);
  });

  it('a look for leftover shards that fails is not sent again at every tick, and a shard that appears while another drains is found', async () => {
    const neu = store(2, true);
    const clock = { now: t0 };
    let looks = 0;
    let fail = true;
    const real = neu.leftoverShards.bind(neu);
    neu.leftoverShards = async () => {
      looks++;
      if (fail) throw new Error('CLUSTERDOWN');
      return real();
    };
    const round = sealer(neu, clock);
    await round();
    for (clock.now += BUCKET_MS; clock.now < t0 + LEFTOVER_CHECK_MS; clock.now += 60 * BUCKET_MS) await round();
    expect(looks).toBe(1);
    fail = false;
    // A store registered in shard 3 (past QUEUE_SHARDS=2) is found at the next look, 5 minutes after the failed one.
    const old = store(4);
    const late = STORES.find((s) => storeShard(s, 4) === 3)!;
    await applyViews(old, [late], clock.now, 'late');
    clock.now = t0 + LEFTOVER_CHECK_MS;
    expect(sum(await round(), 'moved')).toBe(1);
    expect(looks).toBe(2);
  });

  it('a store left in two shards (a crash between the move’s REGISTER and its LEAVE) is counted once, and ends in its own shard only', async () => {
    const old = store(4);
    const fromRemoved = STORES.find((s) => storeShard(s, 4) === 3)!;
    const fromKept = STORES.find((s) => storeShard(s, 4) < 3 && storeShard(s, 4) !== storeShard(s, 3))!;
    await applyViews(old, [fromRemoved, fromKept], t0, 'a');
    const neu = store(3, true);
    // The move's first step, REGISTER into the store's own shard, done; its LEAVE not.
    for (const s of [fromRemoved, fromKept]) await neu.registerStore(s, t0);
    expect(await shardsHolding(fromRemoved)).toEqual([3, neu.shardOf(fromRemoved)].sort());
    expect(await shardsHolding(fromKept)).toEqual([storeShard(fromKept, 4), neu.shardOf(fromKept)].sort());

    const clock = { now: t0 + BUCKET_MS };
    const round = sealer(neu, clock);
    const first = await round();
    clock.now += BUCKET_MS;
    const second = await round();
    expect(sum([...first, ...second], 'sealed')).toBe(2);
    for (const s of [fromRemoved, fromKept]) {
      expect(await outbox(neu, s)).toEqual([`${t0}=1`]);
      expect(await shardsHolding(s)).toEqual([neu.shardOf(s)]);
    }
    expect((await neu.backlog()).rows).toBe(2);
  });
});

describe('raising QUEUE_SHARDS', () => {
  it('2 → 3: stores registered under 2 are sealed and folded, and move into their own shard (counted once by the gauges)', async () => {
    const old = store(2);
    await applyViews(old, STORES, t0, 'a');
    const neu = store(3, true);
    const clock = { now: t0 + BUCKET_MS };
    const round = sealer(neu, clock);
    await round();
    clock.now += BUCKET_MS;
    await round();
    for (const s of STORES) expect(await outbox(neu, s)).toEqual([`${t0}=1`]);
    for (const s of STORES) expect(await shardsHolding(s)).toEqual([neu.shardOf(s)]);
    expect(await neu.backlog()).toMatchObject({ rows: STORES.length, entries: STORES.length });
  });
});

describe('the shards looked for', () => {
  it('go up to QUEUE_SHARDS’ maximum', () => {
    expect(aggregatorEnv.shape.QUEUE_SHARDS.safeParse(BucketStore.MAX_WORK_SHARDS).success).toBe(true);
    expect(aggregatorEnv.shape.QUEUE_SHARDS.safeParse(BucketStore.MAX_WORK_SHARDS + 1).success).toBe(false);
  });
});
