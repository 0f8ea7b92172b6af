import { loadavg } from 'node:os';
import { BucketStore } from '@tally/buckets';
import { compileRules, defaultRules, rollup, type NormalizedEvent, type RowDeltas } from '@tally/schema';
import { createTestTable, metricValue, sleep, startApp, startDynalite, startRedis, waitFor, type AppHandle } from '@tally/testing';
import { Redis } from 'ioredis';
import { figure } from '../figure';
import { sampler } from '../load';
import { cpuSeconds } from '../proc';
import { deleteKeys, fallOf, usedMemory } from '../redis-benchmark';
import { fmt, median, sum } from '../stats';
import { flushStore } from '../workload';

const BUCKET_MS = 900_000;
/** The measured aggregator's BUCKET_SECONDS (ms): its ticks' interval, room for loading the fresh buckets. */
const TICK_BUCKET_MS = 60_000;
/** Rows each store's measured bucket touches (the tick folds them into existing outboxes). */
const ROWS_PER_TICK = 5;

/**
 * Commands the server has run (Lua's redis.call included, from INFO commandstats) and its CPU seconds (INFO cpu): the
 * whole process, and its main thread alone (the commands; the rest is the background threads: AOF fsync, lazy free).
 */
async function redisCounters(redis: Redis): Promise<{ commands: number; cpu: number; mainCpu: number }> {
  const info = await redis.info('cpu', 'commandstats');
  const commands = sum([...info.matchAll(/calls=(\d+)/g)].map((m) => Number(m[1])));
  const seconds = (name: string) => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(info)?.[1] ?? NaN);
  return {
    commands,
    cpu: seconds('used_cpu_user') + seconds('used_cpu_sys'),
    mainCpu: seconds('used_cpu_user_main_thread') + seconds('used_cpu_sys_main_thread'),
  };
}

async function pool<T>(items: readonly T[], n: number, fn: (t: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

/**
 * Loads `stores` stores holding `openRows` visitor rows with unwritten counts (folded into outboxes, waiting for
 * their idle flush), then measures one sealer tick of a real aggregator with every store active, and its /metrics.
 */
async function measurePoint(stores: number, openRows: number, log: (l: string) => void) {
  const redisServer = await startRedis({ appendonly: true, appendfsync: 'everysec' });
  const dyn = await startDynalite();
  const table = await createTestTable(dyn.endpoint);
  const redis = new Redis(redisServer.url, { maxRetriesPerRequest: null });
  const rules = compileRules(defaultRules);
  const buckets = new BucketStore({ redis, rules, prefix: 't' });
  let app: AppHandle | undefined;
  try {
    const ids = Array.from({ length: stores }, (_, i) => `STORE${i}`);
    const rowsOf = (i: number) => Math.floor(openRows / stores) + (i < openRows % stores ? 1 : 0);
    const base = await usedMemory(redis);
    const t0 = Date.now() - 3 * BUCKET_MS;
    /** Applies visitor rows V<from>..V<from + n - 1> of store `i` in batch `batchId`, and registers the store. */
    const apply = async (i: number, batchId: string, from: number, n: number, now: number) => {
      const deltas: RowDeltas = new Map(
        Array.from({ length: n }, (_, k) => [`${ids[i]}#visitor#V${from + k}`, new Map([['2023-123|v', 1n]])]),
      );
      await buckets.apply(ids[i]!, batchId, deltas, { now, dedupeTtlSeconds: 3_600 });
      await buckets.registerStore(ids[i]!);
    };
    // Load: every store's rows applied in one open bucket, then sealed and folded (as a tick would, the backlog
    // published): open rows in outboxes, waiting for their idle flush (due in 30 min).
    await pool([...ids.keys()], 32, async (i) => {
      for (let from = 0; from < rowsOf(i); from += 500) await apply(i, `load-${from}`, from, Math.min(500, rowsOf(i) - from), t0);
    });
    await pool(ids, 32, async (store) => {
      const now = Date.now();
      await buckets.seal(store, { now, minAgeMs: BUCKET_MS / 2 });
      await buckets.foldSealed(store, { now });
      await buckets.publishBacklog(store, await buckets.storeBacklog(store));
    });
    const memory = (await usedMemory(redis)) - base;
    log(`${stores} stores, ${openRows} open rows loaded: ${(memory / 1e6).toFixed(1)} MB`);

    // A real aggregator: its first tick (at start-up) visits every store. A fresh bucket of ROWS_PER_TICK rows is
    // then applied in every store, and the next tick, TICK_BUCKET_MS later, seals and folds them all: the one
    // measured, alone in its window (the scrapes that wait for it are 2 s apart).
    app = await startApp('bucket-aggregator', {
      env: {
        REDIS_URL: redisServer.url,
        DYNAMODB_ENDPOINT: dyn.endpoint,
        DYNAMODB_TABLE: table,
        BUCKET_SECONDS: String(TICK_BUCKET_MS / 1000),
        KEY_PREFIX: 't',
      },
      from: 'sources', // as every bench fleet (load.ts)
    });
    const a = app;
    const ticks = async (text?: string) => metricValue(text ?? (await a.metrics()), 'tally_seal_tick_duration_seconds_count');
    await waitFor(async () => (await ticks()) >= 1, { timeoutMs: 300_000, intervalMs: 200, message: 'the first seal tick' });
    await pool([...ids.keys()], 32, (i) => apply(i, 'tick-1', 0, Math.min(ROWS_PER_TICK, Math.max(1, rowsOf(i))), Date.now()));
    const before = await a.metrics();
    if ((await ticks(before)) !== 1) throw new Error('a second tick began while the fresh buckets were applied: raise TICK_BUCKET_MS');
    // CPU of both processes sampled every 200 ms while the tick is awaited; the tick's window is cut from the samples
    // (from the last one before it began to the first one after it ended), so the idle time around it stays out.
    const sample = async () => {
      const [at, aggregator] = [performance.now(), cpuSeconds(a.process.pid!)];
      const { cpu, mainCpu, commands } = await redisCounters(redis);
      return { at, aggregator, redis: cpu, redisMain: mainCpu, commands };
    };
    const sampling = sampler(200, sample);
    let after = before;
    let polledAt = performance.now();
    let lastPoll = polledAt;
    await waitFor(
      async () => {
        lastPoll = polledAt;
        polledAt = performance.now();
        after = await a.metrics();
        return (await ticks(after)) >= 2;
      },
      { timeoutMs: 300_000, intervalMs: 1_000, message: 'the measured seal tick' },
    );
    const samples = await sampling.stop();
    samples.push(await sample());
    const delta = (name: string) => metricValue(after, name) - metricValue(before, name);
    const sealed = delta('tally_buckets_sealed_total');
    if (sealed !== stores) throw new Error(`the measured tick sealed ${sealed} buckets, not ${stores}`);
    const tickMs = delta('tally_seal_tick_duration_seconds_sum') * 1000;
    // The tick ended after the poll before the one that saw it, so it began after that poll minus its duration.
    const began = lastPoll - tickMs;
    const from = samples.filter((x) => x.at <= began).pop() ?? samples[0]!;
    const to = samples[samples.length - 1]!;
    const tickCpu = { aggregator: to.aggregator - from.aggregator, redis: to.redis - from.redis, redisMain: to.redisMain - from.redisMain };
    const cpuWindowMs = to.at - from.at;
    // Minus the sampler's own INFO commands (one per sample after the first).
    const tickCommands = to.commands - from.commands - (samples.indexOf(to) - samples.indexOf(from));
    const loadAverage = loadavg()[0]!;
    log(
      `seal tick over ${stores} active stores: ${tickMs.toFixed(0)} ms; CPU ${tickCpu.aggregator.toFixed(2)} s aggregator, ${tickCpu.redis.toFixed(2)} s redis ` +
        `(${tickCpu.redisMain.toFixed(2)} s its main thread) ` +
        `over a ${cpuWindowMs.toFixed(0)} ms window (wall/CPU ${(tickMs / 1000 / (tickCpu.aggregator + tickCpu.redis)).toFixed(1)}); ` +
        `${(tickCommands / stores).toFixed(1)} Redis commands per store; load average ${loadAverage.toFixed(1)}`,
    );
    const times: number[] = [];
    const scrapeCommands0 = (await redisCounters(redis)).commands;
    const SCRAPES = 25;
    for (let i = 0; i < SCRAPES; i++) {
      const s = performance.now();
      const text = await (await fetch(`${app.url}/metrics`)).text();
      times.push(performance.now() - s);
      if (i === 0 && !text.includes(`tally_outbox_rows{app="bucket-aggregator"} ${openRows}`)) {
        throw new Error(`the aggregator reports ${/tally_outbox_rows\{[^}]*\} (\d+)/.exec(text)?.[1]} outbox rows, not ${openRows}`);
      }
      // The gauges' shared read is reused for 250 ms: space the scrapes so each one reads Redis.
      await sleep(300);
    }
    // Minus the one INFO of this count itself.
    const scrapeCommands = ((await redisCounters(redis)).commands - scrapeCommands0 - 1) / SCRAPES;
    const [scrapeMedianMs, scrapeMaxMs] = [median(times), Math.max(...times)];
    log(
      `GET /metrics: median ${scrapeMedianMs.toFixed(1)} ms, max ${scrapeMaxMs.toFixed(1)} ms, ${scrapeCommands.toFixed(1)} Redis commands each`,
    );
    // Redis used_memory after loading (bytes); the tick's CPU seconds (aggregator process, its idle workers included, and redis-server).
    return { stores, openRows, memory, scrapeMedianMs, scrapeMaxMs, scrapeCommands, tickMs, tickCpu, tickCommands, loadAverage };
  } finally {
    await app?.stop().catch(() => app?.kill());
    redis.disconnect();
    await dyn.stop();
    await redisServer.stop();
  }
}

/** docs/SCALING.md's products viewed per store and day (tools/cost DEFAULT_WORKLOAD): the members of a daily ranking. */
const PRODUCTS_PER_DAY = 100;
/** Members of the larger rankings measured: past Redis's zset-max-listpack-entries (128), a zset is a skiplist. */
const LARGE_RANKING = 1_000;

/**
 * Bytes of `keys`: the fall of used_memory when they are deleted (their values, names and entries in the keyspace and
 * expires tables, and the tables' own share when the keys were most of the keyspace: the server's cron then shrinks them).
 */
const bytesOf = (redis: Redis, keys: readonly string[]) => fallOf(redis, (conn) => deleteKeys(conn, keys));

/**
 * Redis bytes of the daily rankings (top lists) and of the rows' cache versions (the method is in the figure's markdown):
 * `stores` stores with a day of `members` products and pages. With `acks`, every row is then sealed, folded and
 * acknowledged as the dynamo-writer does, which leaves a cache version per visitor row (the only rows queries cache).
 */
export async function measureRankingMemory(stores: number, members: number, acks: boolean) {
  const redisServer = await startRedis();
  const redis = new Redis(redisServer.url, { maxRetriesPerRequest: null });
  const rules = compileRules(defaultRules);
  const buckets = new BucketStore({ redis, rules, prefix: 't' });
  try {
    const [now, ids] = [Date.now(), [...Array(stores).keys()]];
    await pool(ids, 16, async (i) => {
      const events = Array.from({ length: members }, (_, p): NormalizedEvent[] => [
        { type: 'view', ts: now, dims: { product: `P${p}`, visitor: `V${p}` } },
        { type: 'order_item', ts: now, value: `${(p % 50) + 1}.99`, dims: { product: `P${p}` } },
        { type: 'page_view', ts: now, dims: { page: `/p/${p}` } },
      ]).flat();
      for (let from = 0; from < events.length; from += 1000) {
        const deltas = rollup(rules, `STORE${i}`, 'UTC', events.slice(from, from + 1000));
        await buckets.apply(`STORE${i}`, `r-${from}`, deltas, { now, dedupeTtlSeconds: 3_600 });
      }
    });
    const rankings = await redis.keys('t:{*}:k:*');
    const ranked = sum(await Promise.all(rankings.map((k) => redis.zcard(k))));
    if (rankings.length !== 4 * stores || ranked !== 4 * stores * members)
      throw new Error(`${rankings.length} rankings of ${ranked} members, not ${4 * stores} of ${members} each`);
    const rankingBytes = await bytesOf(redis, rankings);
    let cacheVersions: { keys: number; bytesPerKey: number } | undefined;
    if (acks) {
      await pool(ids, 16, (i) => flushStore(buckets, `STORE${i}`, () => now, now + 2 * 86_400_000));
      const keys = await redis.keys('t:{*}:v:*');
      if (keys.length !== stores * members) throw new Error(`${keys.length} cache versions, not one per visitor row`);
      cacheVersions = { keys: keys.length, bytesPerKey: (await bytesOf(redis, keys)) / keys.length };
    }
    return { stores, members, bytesPerMember: rankingBytes / ranked, bytesPerStoreDay: rankingBytes / stores, cacheVersions };
  } finally {
    redis.disconnect();
    await redisServer.stop();
  }
}

/** The points measured: `TALLY_SCALE_POINTS=10000x10000,1000x100000` (stores x open rows) picks some, for a quicker run. */
function grid(quick: boolean): Array<[number, number]> {
  const points =
    process.env['TALLY_SCALE_POINTS'] ?? (quick ? '10x1000,300x1000,300x20000' : '10x10000,1000x100000,10000x10000,10000x1000000');
  return points.split(',').map((p) => {
    const m = /^(\d+)x(\d+)$/.exec(p.trim());
    if (!m) throw new Error(`TALLY_SCALE_POINTS: ${p} is not <stores>x<open rows>`);
    return [Number(m[1]), Number(m[2])];
  });
}

type ScalePoint = Awaited<ReturnType<typeof measurePoint>>;

/**
 * Redis bytes per store and per open row, from the grid's points (differences between points, so the constant part
 * drops out): two points with the same open rows and more stores, and then one with those stores and more open rows.
 * A grid without both pairs (`TALLY_SCALE_POINTS` of one size) has no such figure.
 */
export function memoryPer(
  points: ReadonlyArray<Pick<ScalePoint, 'stores' | 'openRows' | 'memory'>>,
): { perStore: number; perRow: number } | undefined {
  const fewStores = points[0];
  const manyStores = points.find((p) => p.openRows === fewStores?.openRows && p.stores > fewStores.stores);
  const manyRows = points
    .filter((p) => p.stores === manyStores?.stores && p.openRows > manyStores.openRows)
    .sort((a, b) => b.openRows - a.openRows)[0];
  if (!fewStores || !manyStores || !manyRows) return undefined;
  return {
    perStore: (manyStores.memory - fewStores.memory) / (manyStores.stores - fewStores.stores),
    perRow: (manyRows.memory - manyStores.memory) / (manyRows.openRows - manyStores.openRows),
  };
}

export const scaleFigure = figure('scale', async (ctx) => {
  const points: ScalePoint[] = [];
  for (const [s, r] of grid(ctx.quick)) points.push(await measurePoint(s, r, ctx.log));
  const mem = memoryPer(points);
  const small = await measureRankingMemory(ctx.quick ? 100 : 500, PRODUCTS_PER_DAY, true);
  const large = await measureRankingMemory(ctx.quick ? 5 : 30, LARGE_RANKING, false);
  const cv = small.cacheVersions!;
  ctx.log(
    `rankings: ${small.bytesPerMember.toFixed(1)} B/member (${large.bytesPerMember.toFixed(1)} past 128); ${cv.bytesPerKey.toFixed(0)} B/cache version`,
  );
  const biggest = points[points.length - 1]!;
  const rows = points.map(
    (p) =>
      `| ${p.stores.toLocaleString('en-US')} | ${p.openRows.toLocaleString('en-US')} | ${p.tickMs.toFixed(0)} | ${p.tickCpu.aggregator.toFixed(2)} | ${p.tickCpu.redis.toFixed(2)} (${p.tickCpu.redisMain.toFixed(2)}) | ` +
      `${(p.tickMs / 1000 / (p.tickCpu.aggregator + p.tickCpu.redis)).toFixed(1)} | ${(p.tickCommands / p.stores).toFixed(1)} | ${p.loadAverage.toFixed(1)} | ${p.scrapeMedianMs.toFixed(1)} | ${p.scrapeMaxMs.toFixed(1)} | ${p.scrapeCommands.toFixed(1)} | ${(p.memory / 1e6).toFixed(1)} |`,
  );
  const markdown = [
    `Cost against tenants and open rows. Each point: a fresh redis-server (AOF everysec) loaded with`,
    'that many stores holding that many visitor rows with counts folded but not written (waiting for their idle flush);',
    `then a real aggregator process: after its first tick, every store gets a fresh bucket of up to ${ROWS_PER_TICK} rows and the`,
    `next tick (${TICK_BUCKET_MS / 1000} s later) seals and folds every one of them: its duration (\`tally_seal_tick_duration_seconds\`), the`,
    'CPU the aggregator process and redis-server used over its window (both sampled every 200 ms: from the last sample before',
    'the tick to the first after it), wall time over that CPU, and the Redis commands it ran per store (scripts and the',
    'commands inside them, from `INFO commandstats`); then 25 `GET /metrics` of that aggregator, 300 ms apart, with the',
    'Redis commands each ran. The machine is shared: the load average says how busy it was, and the CPU seconds are what',
    'the tick costs whatever the contention. Targets: every scrape under 100 ms at 10,000 stores and 1,000,000 open rows;',
    'a full seal tick for 10,000 active stores under 5 s. Rerun: `npm run bench -- scale`.',
    '',
    '| stores | open rows | seal tick ms | tick CPU s, aggregator | tick CPU s, redis (main thread) | wall / CPU | Redis commands per store | load avg | /metrics median ms | /metrics max ms | Redis commands per scrape | Redis MB |',
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows,
    ...(mem
      ? [
          '',
          `Redis memory: ${Math.round(mem.perStore)} bytes per store (work-set entry, epoch, counters, its bucket bookkeeping) and`,
          `${Math.round(mem.perRow)} bytes per open row (outbox hash with one entry, dirty and due zset members).`,
        ]
      : []),
    '',
    `Daily rankings (top lists) and cache versions, applied through BucketStore on a fresh redis-server, each measured as the fall`,
    `of used_memory when its keys are deleted: ${small.stores} stores with a day of ${PRODUCTS_PER_DAY} products viewed and ordered and ${PRODUCTS_PER_DAY} pages viewed`,
    `(ids \`P<n>\`, each viewed by a visitor \`V<n>\`, pages \`/p/<n>\`), the default rules' 4 rankings of a store-day of ${PRODUCTS_PER_DAY} members each:`,
    `**${small.bytesPerMember.toFixed(1)} bytes per ranking member**, ${fmt(small.bytesPerStoreDay)} bytes per store-day; ${large.stores} stores with ${fmt(LARGE_RANKING)}`,
    `of each (a zset past 128 members is a skiplist, not a listpack): **${large.bytesPerMember.toFixed(1)} bytes per member**. Every row of the first`,
    `then sealed, folded and acknowledged as the dynamo-writer does: **${cv.bytesPerKey.toFixed(1)} bytes per cache version** (${fmt(cv.keys)} keys, one`,
    'per visitor row written, each expiring 2 days after its last write; nearly all the keyspace then, so with their share of its',
    'hash tables, which a keyspace of mostly cache versions has).',
  ].join('\n');
  return {
    summary: `${biggest.stores} stores / ${biggest.openRows} open rows: /metrics ${biggest.scrapeMedianMs.toFixed(1)} ms median, ${biggest.scrapeMaxMs.toFixed(1)} ms max; seal tick ${(biggest.tickMs / 1000).toFixed(2)} s (CPU ${biggest.tickCpu.aggregator.toFixed(2)} s + ${biggest.tickCpu.redis.toFixed(2)} s redis)${mem ? `; ${Math.round(mem.perRow)} B/open row, ${Math.round(mem.perStore)} B/store` : ''}; rankings ${small.bytesPerMember.toFixed(1)} B/member (${large.bytesPerMember.toFixed(1)} past 128), ${fmt(small.bytesPerStoreDay)} B/store-day; ${cv.bytesPerKey.toFixed(1)} B/cache version`,
    markdown,
  };
});
