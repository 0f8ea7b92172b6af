import { lineChart, logBars, targetRule, type Chart } from '../charts';
import { figure } from '../figure';
import { ScanCommand } from '@aws-sdk/client-dynamodb';
import { BucketStore } from '@tally/buckets';
// Namespaces: `--baseline` runs this file against commits without the sketches and the overflow items.
import * as dynamo from '@tally/dynamo';
import { createDynamoClient, createDynamoMeter, writeRow, type RowWriterDeps } from '@tally/dynamo';
import * as schema from '@tally/schema';
import { cheapestRules, compileRules, defaultRules, rollup, type RulesInput } from '@tally/schema';
import { createTestTable, startDynalite, startRedis } from '@tally/testing';
import { Redis } from 'ioredis';
import { measureIn } from '../in-checkout';
import { threeRowWriter, writeEventNaive, type Writer } from '../naive';
import { fmt } from '../stats';
import { eachEntity, flushStore, simulatedDay, type DayEvent } from '../workload';

const MIN = 60_000;
const DAY_START = Date.UTC(2023, 4, 3);

/** Write units, UpdateItems (by entity: store, product, visitor, for pipeline runs) and read units (the sketch runs read each item's sketches before writing them). */
type CostRun = ReturnType<typeof costRun> & { byEntity?: Record<string, number> };
type Env = { redis: Redis; endpoint: string };

function costRun(design: string, events: number, meter: RowWriterDeps['meter']) {
  const t = meter.totals();
  const updates = t.requests['UpdateItem:ok'] ?? 0;
  return { design, events, writeUnits: t.writeUnits, readUnits: t.readUnits, updates, wcuPerMillion: (t.writeUnits / events) * 1e6 };
}

async function freshTable(env: Env): Promise<RowWriterDeps> {
  const table = await createTestTable(env.endpoint);
  return { client: createDynamoClient({ endpoint: env.endpoint, region: 'us-east-1' }), table, meter: createDynamoMeter() };
}

/**
 * Runs a simulated day through the real Redis pipeline (apply, seal, fold, flush policy) and a writer. With
 * `sketches`, the distinct-count sketches (UniqueVisitors) too: added before each apply, written with the counts
 * (writeRowWithSketches) and acked, as the aggregator and the writer do.
 */
async function runPipeline(
  env: Env,
  design: string,
  rulesInput: RulesInput,
  day: DayEvent[],
  writer: Writer = writeRow,
  sketches = false,
): Promise<CostRun & { items: number }> {
  const rules = compileRules(rulesInput);
  await env.redis.flushall();
  const deps = await freshTable(env);
  const { client, table, meter } = deps;
  const buckets = new BucketStore({ redis: env.redis, rules });
  const stores = [...new Set(day.map((d) => d.store))];
  for (const s of stores) await buckets.registerStore(s);
  const bucketMs = 15 * MIN;
  const byEntity: Record<string, number> = {};
  const updates = () => meter.totals().requests['UpdateItem:ok'] ?? 0;
  let i = 0;
  let batch = 0;
  // Two simulated days: the first carries the traffic, the second lets every policy come due.
  for (let t = DAY_START; t < DAY_START + 2 * 86_400_000 + bucketMs; t += bucketMs) {
    const start = i;
    while (i < day.length && day[i]!.event.ts < t + bucketMs) i++;
    for (const [store, inBucket] of Map.groupBy(day.slice(start, i), (d) => d.store)) {
      const events = inBucket.map((d) => d.event);
      if (sketches) await buckets.sketches.add(store, schema.rollupDistinct(rules, store, 'UTC', events));
      await buckets.apply(store, `b${batch++}`, rollup(rules, store, 'UTC', events), { now: t + 1, dedupeTtlSeconds: 3600 });
    }
    const now = t + bucketMs;
    for (const store of stores) {
      // Each row's UpdateItems counted by its entity.
      const write = async (pk: string, entries: Parameters<Writer>[2]) => {
        const [entity, before] = [rules.entityOfPk(pk) ?? '?', updates()];
        if (!sketches) await writer(deps, pk, entries);
        else {
          const [live] = await buckets.sketches.read(store, [pk]);
          const r = await dynamo.writeRowWithSketches(deps, (g, w) => buckets.sketches.union(store, g, w), pk, entries, live!);
          await buckets.sketches.ack(store, pk, r.sketchesWritten);
        }
        byEntity[entity] = (byEntity[entity] ?? 0) + updates() - before;
      };
      await flushStore(buckets, store, () => now, now, write);
    }
  }
  const scan = await client.send(new ScanCommand({ TableName: table, Select: 'COUNT' }));
  client.destroy();
  return { ...costRun(design, day.length, meter), byEntity, items: scan.Count ?? 0 };
}

/**
 * The write cost of a crawler: one visitor viewing `products` distinct products within one bucket, through the
 * real pipeline (apply, seal, fold, writer). Its month and TOTAL items get two attributes per product each, so the
 * bucket goes in parts, each charged per KB of its item, and the items spill into overflow items at SPILL_AT_KB.
 */
async function runCrawler(env: Env, products: number) {
  const rules = compileRules(defaultRules);
  await env.redis.flushall();
  const deps = await freshTable(env);
  const buckets = new BucketStore({ redis: env.redis, rules });
  const view = (p: number) => ({ type: 'view', ts: DAY_START + MIN, dims: { product: `P${p}`, visitor: 'BOT1' } });
  const events = Array.from({ length: products }, (_, p) => view(p));
  await buckets.apply('S', 'crawl', rollup(rules, 'S', 'UTC', events), { now: DAY_START + MIN, dedupeTtlSeconds: 3600 });
  await buckets.seal('S', { now: DAY_START + 2 * MIN, minAgeMs: 0 });
  await buckets.foldSealed('S', { now: DAY_START + 2 * MIN });
  const pk = 'S#visitor#BOT1';
  await writeRow(deps, pk, (await buckets.readOutbox('S', pk)).entries);
  deps.client.destroy();
  return { products, ...costRun('crawler', products, deps.meter) };
}

/** Naive: one UpdateItem per event per row (day, month and total rows), measured on a sample of the day. */
async function runNaive(env: Env, day: DayEvent[], sampleEvery: number): Promise<CostRun> {
  const rules = compileRules(defaultRules);
  const deps = await freshTable(env);
  const sample = day.filter((_, k) => k % sampleEvery === 0);
  for (const d of sample) await writeEventNaive(deps, rules, d.store, 'UTC', d.event);
  deps.client.destroy();
  return costRun(`naive (one UpdateItem per event per row; sample of ${sample.length} events)`, sample.length, deps.meter);
}

type CostFigure = Awaited<ReturnType<typeof measure>>;

/**
 * Every design's write units over the simulated day, the flush intervals, the crawler and the sketches.
 * @public (in-checkout.ts runs it for --baseline)
 */
export async function measure(opts: { quick: boolean }) {
  const redisServer = await startRedis({ appendonly: false });
  const dyn = await startDynalite();
  const redis = new Redis(redisServer.url);
  const env = { redis, endpoint: dyn.endpoint };
  try {
    const sessions = opts.quick ? 800 : 2500;
    const day = simulatedDay({ seed: 7, sessions, stores: 5, products: 2000, visitors: 6000, dayStart: DAY_START });
    const naive = await runNaive(env, day, opts.quick ? 20 : 10);
    const perBucket = eachEntity({ flush: { kind: 'bucket' } });
    const three = await runPipeline(env, "article's 3-row layout, flushed every 15 min", perBucket, day, threeRowWriter);
    const packed = await runPipeline(env, "article's packed 2-row layout, flushed every 15 min", perBucket, day);
    const defaultRun = 'Tally default policy (store hourly, product daily, visitor at session end)';
    const tallyDefault = await runPipeline(env, defaultRun, defaultRules, day);
    const cheapest = await runPipeline(env, 'Tally cheapest policy (every row once a day)', cheapestRules, day);
    const sketchRun = 'Tally default policy with UniqueVisitors sketches (store and product rows)';
    const withSketches = 'rollupDistinct' in schema && (await runPipeline(env, sketchRun, defaultRules, day, writeRow, true));
    const intervals = [];
    for (const minutes of opts.quick ? [15, 60, 1440] : [15, 30, 60, 120, 240, 480, 720, 1440]) {
      // Every row on the same interval; 15 minutes and once a day are the packed and cheapest runs above.
      const policy = eachEntity({ flush: { kind: 'every', minutes } });
      const r = { 15: packed, 1440: cheapest }[minutes] ?? (await runPipeline(env, `every ${minutes} min`, policy, day));
      intervals.push({ minutes, wcuPerMillion: r.wcuPerMillion });
    }
    // Floor: every item touched that day must be written at least once.
    const floorPerMillion = (cheapest.items / day.length) * 1e6;
    const crawler = await runCrawler(env, 5_000);
    const storeDays = new Set(day.map((d) => d.store)).size; // one simulated day
    return {
      runs: [naive, three, packed, tallyDefault, cheapest],
      crawler,
      floorPerMillion,
      intervals,
      events: day.length,
      ...(withSketches ? { uniqueVisitors: { withSketches, storeDays } } : {}),
    };
  } finally {
    await redis.quit();
    await dyn.stop();
    await redisServer.stop();
  }
}

/**
 * The same crawler measured elsewhere, so the figure above has its comparison: before the overflow items (one
 * month item and one TOTAL item growing with every product; that code is gone, so these are fixed, not re-run) and
 * on DynamoDB Local, which this bench does not start.
 */
const CRAWLER_REFERENCE = [
  '| 5,000-product visitor, one bucket | backend | UpdateItems | write units | from |',
  '|---|---|---|---|---|',
  '| before the overflow items (items growing without bound) | dynalite | 112 | 8,147 | `npm run bench -- write-cost --quick` before commit 898684c |',
  '| before the overflow items | DynamoDB Local | 114 | about 8,150 | `npx vitest run libs/dynamo/src/dynamodb-local.int.test.ts` before commit 898684c |',
  '| with the overflow items (64 KB) | DynamoDB Local | 127 | 2,068 | `npx vitest run libs/dynamo/src/dynamodb-local.int.test.ts` (prints the figure) |',
].join('\n');

export const writeCostFigure = figure('write-cost', async (ctx) => {
  const f = await measure(ctx);
  // With --baseline: the same day through that commit's libraries (deterministic: write units are exact, not timed).
  const before = ctx.baseline ? await measureIn<CostFigure>(ctx, 'write-cost', 'baseline') : undefined;
  const [naive, three, packed, def, cheap] = f.runs as [CostRun, CostRun, CostRun, CostRun, CostRun];
  const compared = (before?.runs ?? []).map((b, i) => ({ design: b.design, before: b.wcuPerMillion, after: f.runs[i]!.wcuPerMillion }));
  const summary =
    `WCU per million events — naive ${fmt(naive.wcuPerMillion)}, 3-row/15min ${fmt(three.wcuPerMillion)}, packed/15min ${fmt(packed.wcuPerMillion)}, ` +
    `Tally default ${fmt(def.wcuPerMillion)} (${((def.wcuPerMillion / packed.wcuPerMillion) * 100).toFixed(0)}% of packed; target <= 50%), ` +
    `cheapest ${fmt(cheap.wcuPerMillion)} (${(cheap.wcuPerMillion / f.floorPerMillion).toFixed(2)}x the floor ${fmt(f.floorPerMillion)}; target <= 1.2x); ` +
    `a ${fmt(f.crawler.products)}-product visitor in one bucket: ${fmt(f.crawler.updates)} UpdateItems, ${fmt(f.crawler.writeUnits)} write units; ` +
    uniqueVisitorsLine(def, f) +
    (before
      ? `; against ${ctx.baseline!.ref} (${ctx.baseline!.commit.slice(0, 10)}) in the same run: Tally default x${(def.wcuPerMillion / before.runs[3]!.wcuPerMillion).toFixed(2)}, cheapest x${(cheap.wcuPerMillion / before.runs[4]!.wcuPerMillion).toFixed(2)}`
      : '');
  const markdown = [
    '',
    `Reference workload: one simulated day, ${fmt(f.events)} events (Zipf stores, products, visitors; visitor sessions), 15-minute buckets, real Redis pipeline and dynalite ConsumedCapacity.`,
    '',
    '| design | UpdateItems (store / product / visitor rows) | write units | WCU per million events |',
    '|---|---|---|---|',
    ...f.runs.map((r) => `| ${r.design} | ${updatesOf(r)} | ${fmt(r.writeUnits)} | ${fmt(r.wcuPerMillion)} |`),
    `| floor: one write per item touched per day | | | ${fmt(f.floorPerMillion)} |`,
    '',
    `Tally default / packed 15-min: ${((def.wcuPerMillion / packed.wcuPerMillion) * 100).toFixed(1)}% (target <= 50%). Cheapest / floor: ${(cheap.wcuPerMillion / f.floorPerMillion).toFixed(2)}x (target <= 1.2x).`,
    '',
    '| flush interval (min) | WCU per million events |',
    '|---|---|',
    ...f.intervals.map((x) => `| ${x.minutes} | ${fmt(x.wcuPerMillion)} |`),
    '',
    `A crawler: one visitor viewing ${fmt(f.crawler.products)} distinct products within one bucket (default rules keep ProductViews by product ` +
      `for every visitor) is written in ${fmt(f.crawler.updates)} UpdateItems (the bucket in parts of at most 180 attributes per item) for ` +
      `${fmt(f.crawler.writeUnits)} write units: each part is charged per KB of its item, and an item spills into overflow items at ${dynamo.SPILL_AT_KB} KB.`,
    '',
    CRAWLER_REFERENCE,
    ...(before
      ? [
          '',
          `**Before/after, same run** (\`--baseline ${ctx.baseline!.ref}\`: ${ctx.baseline!.commit.slice(0, 10)}, "${ctx.baseline!.subject}"): the same simulated day through`,
          `that commit's libraries (a git worktree); its ${fmt(before.crawler.products)}-product crawler took ${fmt(before.crawler.updates)} UpdateItems and ${fmt(before.crawler.writeUnits)} write units.`,
          '',
          '| design | WCU per million events, before | after | after / before |',
          '| --- | ---: | ---: | ---: |',
          ...compared.map((c) => `| ${c.design} | ${fmt(c.before)} | ${fmt(c.after)} | ${(c.after / c.before).toFixed(3)} |`),
        ]
      : []),
    '',
    '### UniqueVisitors sketches',
    '',
    `The default policy run again with the distinct-count sketches of store and product rows (exact sets up to 300 visitors, ` +
      `Redis HyperLogLogs above), written in the counts' UpdateItems: ${uniqueVisitorsLine(def, f)}.`,
    '',
    '| run | UpdateItems (store / product / visitor rows) | write units | read units |',
    '|---|---|---|---|',
    ...[def, f.uniqueVisitors!.withSketches].map(
      (r) => `| ${r.design} | ${updatesOf(r)} | ${fmt(r.writeUnits)} | ${fmt(r.readUnits ?? 0)} |`,
    ),
  ].join('\n');
  return { summary, markdown, charts: costCharts(f) };
});

/** UpdateItems, and (for pipeline runs) those of store / product / visitor rows. */
const updatesOf = (r: CostRun) =>
  `${fmt(r.updates)}${r.byEntity ? ` (${['store', 'product', 'visitor'].map((e) => fmt(r.byEntity![e] ?? 0)).join(' / ')})` : ''}`;

/** What the sketches add to the default policy, per store-day, beside the counters' write cost. */
function uniqueVisitorsLine(counters: CostRun, f: CostFigure): string {
  const u = f.uniqueVisitors!.withSketches;
  const perStoreDay = (n: number) => (n / f.uniqueVisitors!.storeDays).toFixed(1);
  return (
    `UniqueVisitors sketches add ${perStoreDay(u.writeUnits - counters.writeUnits)} write units and ${perStoreDay((u.readUnits ?? 0) - (counters.readUnits ?? 0))} read units ` +
    `per store-day (counters alone: ${perStoreDay(counters.writeUnits)} write units per store-day); default policy with sketches ${fmt(u.writeUnits)} write units = ` +
    `${((u.writeUnits / counters.writeUnits) * 100).toFixed(1)}% of the counters' ${fmt(counters.writeUnits)} (target <= 125%), ${fmt(u.updates - counters.updates)} more UpdateItems; ` +
    `per million events ${fmt(u.wcuPerMillion)} write units and ${fmt(((u.readUnits ?? 0) / u.events) * 1e6)} read units`
  );
}

function costCharts(f: CostFigure): Chart[] {
  const [naive, three, packed, def, cheap] = f.runs as [CostRun, CostRun, CostRun, CostRun, CostRun];
  return [
    {
      name: 'designs',
      title: "Write units per million events: naive, the article's 3-row and packed layouts, Tally default and cheapest (log scale)",
      spec: logBars({
        title: 'DynamoDB write units per million events (log scale)',
        axisTitle: 'write units per million events (log scale)',
        bars: [
          { label: 'naive: UpdateItem per event per row', value: naive.wcuPerMillion },
          { label: "article's 3-row layout, every 15 min", value: three.wcuPerMillion },
          { label: "article's packed layout, every 15 min", value: packed.wcuPerMillion },
          { label: 'Tally default policy', value: def.wcuPerMillion },
          { label: 'Tally cheapest (once a day)', value: cheap.wcuPerMillion },
          { label: 'floor: each item once a day', value: f.floorPerMillion },
        ],
      }),
    },
    {
      name: 'flush-interval',
      title: 'Write units per million events against the flush interval (packed layout, every row on the same interval)',
      spec: lineChart({
        title: 'Write units per million events against the flush interval',
        width: 480,
        values: f.intervals,
        x: {
          field: 'minutes',
          scale: { type: 'log' },
          title: 'flush interval (minutes, log scale)',
          axis: { values: f.intervals.map((x) => x.minutes) },
        },
        y: { field: 'wcuPerMillion', title: 'write units per million events', scale: { zero: true } },
        after: [targetRule('y', f.floorPerMillion, 'floor: each item written once a day')],
      }),
    },
  ];
}
