import { Redis } from 'ioredis';
import { sleep, startRedis } from '@tally/testing';
import { figure, type FigureContext } from '../figure';
import { benchFleet } from '../load';
import { ascending, fmt, ms, quantile, ratio } from '../stats';
import { probesUnderLoad } from './freshness';
import { MAX_QUEUE_DEPTH, measureLoad, type E2eRun } from './ingest-e2e';

const POLICIES = ['everysec', 'always'] as const;
type Policy = (typeof POLICIES)[number];
const BIG_MB = 150;
const LOADS = [
  { batch: 1000, concurrency: 8 },
  { batch: 100, concurrency: 32 },
] as const;

const persistence = async (c: Redis, field: string) => new RegExp(`^${field}:(\\S*)`, 'm').exec(await c.info('persistence'))?.[1];

/**
 * One round: a fresh redis-server with AOF `policy`, a large write so that the next fsync takes long, (everysec) a
 * wait until that fsync runs in the background, one more write answered OK, SIGKILL, a restart on the same AOF: is
 * the answered write there? Under `always` Redis fsyncs in its own thread before answering, so there is no background
 * fsync to wait for: the same sequence without the wait.
 */
async function killAfterAnswer(policy: Policy, round: number) {
  const redis = await startRedis({ appendfsync: policy, startTimeoutMs: 60_000 });
  try {
    const before = new Redis(redis.url, { maxRetriesPerRequest: 0, retryStrategy: () => null });
    before.on('error', () => {});
    await before.set('big', 'x'.repeat(BIG_MB * 1024 * 1024));
    let underway = false;
    for (let i = 0; policy === 'everysec' && i < 400 && !underway; i++)
      if (!(underway = (await persistence(before, 'aof_pending_bio_fsync')) === '1')) await sleep(5);
    await before.set('marker', String(round));
    await redis.kill('SIGKILL');
    before.disconnect();
    await redis.restart();
    const after = new Redis(redis.url);
    const [marker, big] = [await after.get('marker'), await after.strlen('big')];
    after.disconnect();
    return { underway, kept: marker === String(round), bigKept: big > 0 };
  } finally {
    await redis.stop();
  }
}

/**
 * Ingest end to end (as ingest-e2e: one collector, one aggregator) on two fleets, everysec and always, alternated;
 * then freshness (as the freshness figure: probes from 202 to visible in the query API under steady load) on each.
 */
async function measureCost(ctx: FigureContext) {
  const appEnv = {
    collector: { MAX_QUEUE_DEPTH: String(MAX_QUEUE_DEPTH), INGEST_BUDGET_EVENTS_PER_SECOND: '0', INGEST_BUDGET_REQUESTS: '0' },
  };
  const options = { replicas: { 'dynamo-writer': 0 }, appEnv } as const;
  const fleets = {
    everysec: await benchFleet({ ...options, appendfsync: 'everysec' }),
    always: await benchFleet({ ...options, appendfsync: 'always' }),
  };
  const windows = { warmMs: ctx.quick ? 1_000 : 5_000, fillWaitMs: ctx.quick ? 500 : 5_000, windowMs: ctx.quick ? 2_000 : 10_000 };
  const runs: Array<{ policy: Policy; run: E2eRun }> = [];
  const freshness: Record<Policy, number[]> = { everysec: [], always: [] };
  try {
    let seed = 700;
    for (const load of LOADS) {
      // everysec, always, always, everysec: a drift in the machine's load weighs on both alike.
      const order: Policy[] = ctx.quick ? ['everysec', 'always'] : ['everysec', 'always', 'always', 'everysec'];
      for (const policy of order) {
        ctx.log(`appendfsync ${policy}:`);
        runs.push({ policy, run: await measureLoad(ctx, fleets[policy], { ...load, ...windows, seed: seed++ }) });
      }
    }
    const probes = { rate: ctx.quick ? 2_000 : 10_000, probes: ctx.quick ? 10 : 250, warmMs: ctx.quick ? 1_000 : 3_000 };
    for (const policy of ['everysec', 'always', 'always', 'everysec'] as const) {
      ctx.log(`freshness, appendfsync ${policy}:`);
      const f = await probesUnderLoad(ctx, fleets[policy], { ...probes, seed: seed++, tag: `DUR${policy}` });
      freshness[policy].push(...f.latencies);
    }
  } finally {
    await Promise.all([fleets.everysec.stop(), fleets.always.stop()]);
  }
  for (const p of POLICIES) freshness[p].sort(ascending);
  return { runs, freshness };
}

/**
 * What `appendfsync everysec` can lose and what `appendfsync always` costs: SIGKILLs of redis-server right after a
 * write it answered, under each policy, and ingest end to end on a fleet of each, alternated in the same run.
 */
export const durabilityFigure = figure('durability', async (ctx) => {
  const rounds = ctx.quick ? 1 : 8;
  const kills: Record<Policy, Array<Awaited<ReturnType<typeof killAfterAnswer>>>> = { everysec: [], always: [] };
  for (let round = 1; round <= rounds; round++)
    for (const policy of POLICIES) {
      const r = await killAfterAnswer(policy, round);
      ctx.log(
        `SIGKILL round ${round}, ${policy}: the answered write is ${r.kept ? 'kept' : 'lost'} (background fsync under way: ${r.underway})`,
      );
      kills[policy].push(r);
    }
  const lost = (p: Policy) => kills[p].filter((k) => !k.kept).length;
  const { runs, freshness } = await measureCost(ctx);
  const fresh = (p: Policy, q: number) => ms(quantile(freshness[p], q));
  const mean = (batch: number, policy: Policy, pick: (r: E2eRun) => number) => {
    const xs = runs.filter((r) => r.run.batch === batch && r.policy === policy).map((r) => pick(r.run));
    return xs.reduce((a, b) => a + b, 0) / xs.length;
  };
  const cost = LOADS.map(({ batch }) => ({
    batch,
    rate: mean(batch, 'always', (r) => r.appliedPerSecond) / mean(batch, 'everysec', (r) => r.appliedPerSecond),
    cpu: mean(batch, 'always', (r) => r.cpuMs.tally) / mean(batch, 'everysec', (r) => r.cpuMs.tally),
    redis: mean(batch, 'always', (r) => r.cpuMs.redis) / mean(batch, 'everysec', (r) => r.cpuMs.redis),
  }));
  const markdown = [
    "`appendfsync` is the Redis setting behind the first of docs/DESIGN.md's invariants: Redis must keep every write it",
    'acknowledged. `npm start` and compose run `always` (fsync before every answer); `everysec` is the opt-in (README',
    '"Outages and recovery"). Two measurements, each policy next to the other in the same run.',
    '',
    `**What a SIGKILL loses.** Each round, per policy: a fresh redis-server (AOF on), a ${BIG_MB} MB write so that the next fsync`,
    'takes long, under everysec a wait until `INFO persistence` shows that fsync running in the background',
    '(`aof_pending_bio_fsync:1`), one more write (answered `OK`), SIGKILL, a restart on the same AOF.',
    '',
    '| appendfsync | rounds | background fsync seen under way | the answered write lost | the large write lost |',
    '| --- | ---: | ---: | ---: | ---: |',
    ...POLICIES.map(
      (p) =>
        `| ${p} | ${rounds} | ${kills[p].filter((k) => k.underway).length} | **${lost(p)}** | ${kills[p].filter((k) => !k.bigKept).length} |`,
    ),
    '',
    'Under everysec Redis postpones writing new commands to the AOF while its last background fsync runs (up to 2 s) and',
    'answers them meanwhile; a crash then loses them. Under always it writes and fsyncs before it answers.',
    '',
    '**What always costs.** Two fleets as ingest-e2e starts them (one collector, one bucket-aggregator, 900-second buckets,',
    'tools/loadgen traffic; a query-api too, idle here), one per policy, measured in turn (everysec, always, always,',
    'everysec per batch size). CPU is collector + aggregator + redis-server per 1,000 events applied.',
    '',
    '| Batch | appendfsync | events/s end to end | CPU ms per 1,000 events | of which redis-server |',
    '| ---: | --- | ---: | ---: | ---: |',
    ...runs.map(
      ({ policy, run }) =>
        `| ${run.batch} | ${policy} | ${fmt(run.appliedPerSecond)} | ${run.cpuMs.tally.toFixed(1)} | ${run.cpuMs.redis.toFixed(1)} |`,
    ),
    '',
    '| Batches of | always / everysec: events/s | CPU per event | redis-server CPU per event |',
    '| ---: | ---: | ---: | ---: |',
    ...cost.map((c) => `| ${c.batch} events | **×${ratio(c.rate)}** | ×${ratio(c.cpu)} | ×${ratio(c.redis)} |`),
    '',
    `**Freshness on each.** The same two fleets, each twice (everysec, always, always, everysec): probes one after another,`,
    `each a new product's view from its 202 to its count in the query API (as the freshness figure), under steady load`,
    `of ${fmt(ctx.quick ? 2_000 : 10_000)} events/s through the collector.`,
    '',
    '| appendfsync | probes | p50 ms | p99 ms | max ms |',
    '| --- | ---: | ---: | ---: | ---: |',
    ...POLICIES.map((p) => `| ${p} | ${freshness[p].length} | ${fresh(p, 0.5)} | **${fresh(p, 0.99)}** | ${fresh(p, 1)} |`),
    '',
    'Redis under always fsyncs once per pass of its event loop that wrote anything, not once per command, so the cost',
    "falls with larger batches. These fsyncs are on this machine's local disk; a slower disk costs always more.",
  ].join('\n');
  return {
    summary:
      `SIGKILL right after an answered write: everysec lost it in ${lost('everysec')} of ${rounds} rounds, always in ${lost('always')}; ` +
      `always / everysec events/s ×${ratio(cost[0]!.rate)} with 1000-event batches, ×${ratio(cost[1]!.rate)} with 100-event batches ` +
      `(CPU per event ×${ratio(cost[0]!.cpu)}, ×${ratio(cost[1]!.cpu)}); freshness p99 ${fresh('everysec', 0.99)} ms under everysec, ${fresh('always', 0.99)} ms under always`,
    markdown,
  };
});
