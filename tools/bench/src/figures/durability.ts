import { Redis } from 'ioredis';
import { sleep, startRedis, startRedisWithReplica } from '@tally/testing';
import { figure, type FigureContext } from '../figure';
import { benchFleet, measureLoad, PEAK_COLLECTOR, type E2eRun } from '../load';
import { ascending, fmt, mean, ms, quantile, ratio } from '../stats';
import { probesUnderLoad } from './freshness';

const POLICIES = ['everysec', 'always'] as const;
type Policy = (typeof POLICIES)[number];
/** The fleets whose cost is measured. */
const VARIANT_NAME = {
  everysec: 'everysec',
  always: 'always',
  replicated: 'always, a replica',
  waited: 'always, a replica, REDIS_WAIT_REPLICAS=1',
} as const;
const VARIANTS = Object.keys(VARIANT_NAME) as Array<keyof typeof VARIANT_NAME>;
type Variant = (typeof VARIANTS)[number];
type Probes = { latencies: number[]; sends: number[] };
const BIG_MB = 150;
const LOADS = [
  { batch: 1000, concurrency: 8 },
  { batch: 100, concurrency: 32 },
] as const;

const persistence = async (c: Redis, field: string) => new RegExp(`^${field}:(\\S*)`, 'm').exec(await c.info('persistence'))?.[1];

/**
 * One round of the SIGKILL measurement (the method is in the markdown below). Under `always` Redis fsyncs before
 * answering, so there is no background fsync to wait for: the same sequence without the wait.
 */
async function killAfterAnswer(ctx: FigureContext, policy: Policy, round: number) {
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
    const kept = marker === String(round);
    ctx.log(`SIGKILL round ${round}, ${policy}: the answered write is ${kept ? 'kept' : 'lost'} (background fsync under way: ${underway})`);
    return { underway, kept, bigKept: big > 0 };
  } finally {
    await redis.stop();
  }
}

/** Ingest end to end (as ingest-e2e) on a fleet of each variant, alternated; then freshness (as the freshness figure) on each. */
async function measureCost(ctx: FigureContext) {
  const options = { replicas: { 'dynamo-writer': 0 }, appEnv: { collector: PEAK_COLLECTOR } } as const;
  // Started side by side (start-up is not measured); every fleet is up before the first window.
  const pair = () => startRedisWithReplica({ appendfsync: 'always' });
  const [replicated, waited] = await Promise.all([pair(), pair()]);
  const pairs = { replicated, waited };
  const [everysec, always, replicatedFleet, waitedFleet] = await Promise.all([
    benchFleet({ ...options, appendfsync: 'everysec' }),
    benchFleet({ ...options, appendfsync: 'always' }),
    benchFleet({ ...options, redis: replicated.master }),
    benchFleet({ ...options, redis: waited.master, appEnv: { collector: { ...PEAK_COLLECTOR, REDIS_WAIT_REPLICAS: '1' } } }),
  ]);
  const fleets = { everysec, always, replicated: replicatedFleet, waited: waitedFleet };
  const windows = { warmMs: ctx.quick ? 1_000 : 5_000, fillWaitMs: ctx.quick ? 500 : 5_000, windowMs: ctx.quick ? 2_000 : 10_000 };
  // Each variant, then back (everysec, always, replica, replica, always, everysec): a drift in the machine's load
  // weighs on all alike.
  const order: Variant[] = ctx.quick ? [...VARIANTS] : [...VARIANTS, ...[...VARIANTS].reverse()];
  const runs: Array<{ variant: Variant; run: E2eRun }> = [];
  // Per variant, each probe's time from its 202 to visible, and from its POST to its 202.
  const freshness = Object.fromEntries(VARIANTS.map((v) => [v, { latencies: [], sends: [] } as Probes])) as Record<Variant, Probes>;
  try {
    let seed = 700;
    for (const load of LOADS) {
      for (const variant of order) {
        ctx.log(`${VARIANT_NAME[variant]}:`);
        const replicas = variant === 'replicated' || variant === 'waited' ? { replicaPids: [pairs[variant].replica.pid] } : {};
        runs.push({ variant, run: await measureLoad(ctx, fleets[variant], { ...load, ...windows, ...replicas, seed: seed++ }) });
      }
    }
    const probes = { rate: ctx.quick ? 2_000 : 10_000, probes: ctx.quick ? 10 : 250, warmMs: ctx.quick ? 1_000 : 3_000 };
    for (const variant of order) {
      ctx.log(`freshness, ${VARIANT_NAME[variant]}:`);
      const f = await probesUnderLoad(ctx, fleets[variant], { ...probes, seed: seed++, tag: `DUR${variant}` });
      freshness[variant].latencies.push(...f.latencies);
      freshness[variant].sends.push(...f.sendLatencies);
    }
  } finally {
    await Promise.all(Object.values(fleets).map((f) => f.stop()));
    await Promise.all(Object.values(pairs).map((p) => p.stop()));
  }
  return { runs, freshness };
}

/** What `appendfsync everysec` can lose, and what `always` and a replica cost (the method is in the markdown below). */
export const durabilityFigure = figure('durability', async (ctx) => {
  const rounds = ctx.quick ? 1 : 8;
  const kills: Record<Policy, Array<Awaited<ReturnType<typeof killAfterAnswer>>>> = { everysec: [], always: [] };
  for (let round = 1; round <= rounds; round++)
    for (const policy of POLICIES) kills[policy].push(await killAfterAnswer(ctx, policy, round));
  const lost = (p: Policy) => kills[p].filter((k) => !k.kept).length;
  const { runs, freshness } = await measureCost(ctx);
  const quantileOf = (kind: keyof Probes, v: Variant, q: number) => ms(quantile(freshness[v][kind].toSorted(ascending), q));
  /** `a` over `b` per batch size: events/s, CPU per event, redis-server CPU per event. */
  const versus = (a: Variant, b: Variant) =>
    LOADS.map(({ batch }) => {
      const of = (v: Variant, pick: (r: E2eRun) => number) =>
        mean(runs.filter((r) => r.run.batch === batch && r.variant === v).map((r) => pick(r.run)));
      const over = (pick: (r: E2eRun) => number) => of(a, pick) / of(b, pick);
      return { batch, rate: over((r) => r.appliedPerSecond), cpu: over((r) => r.cpuMs.tally), redis: over((r) => r.cpuMs.redis) };
    });
  const cost = versus('always', 'everysec');
  const replication = versus('replicated', 'always');
  const wait = versus('waited', 'replicated');
  const markdown = [
    "`appendfsync` is the Redis setting behind the first of docs/DESIGN.md's invariants: Redis must keep every write it",
    'acknowledged. `npm start` and compose run `always` (fsync before every answer); `everysec` is the opt-in (README',
    '"Outages and recovery"). Two measurements, each policy next to the other in the same run, and the cost of waiting',
    'for a replica as well (`REDIS_WAIT_REPLICAS`, docs/SCALING.md).',
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
    '**What always costs, and a replica.** Four fleets as ingest-e2e starts them (one collector, one bucket-aggregator,',
    '900-second buckets, tools/loadgen traffic; a query-api too, idle here): everysec; always; always with a replica (a',
    'second redis-server replicating the first, on the same machine); and the same with the collector waiting for the',
    'replica before each 202 (`REDIS_WAIT_REPLICAS=1`: a fence and `WAIT` after the batch is enqueued, shared by the',
    'requests that wait at the same moment). Measured in turn, each variant and back, per batch size. CPU is collector +',
    'aggregator + redis-server (master and replica) per 1,000 events applied.',
    '',
    '| Batch | Redis | events/s end to end | CPU ms per 1,000 events | of which redis-server |',
    '| ---: | --- | ---: | ---: | ---: |',
    ...runs.map(
      ({ variant, run }) =>
        `| ${run.batch} | ${VARIANT_NAME[variant]} | ${fmt(run.appliedPerSecond)} | ${run.cpuMs.tally.toFixed(1)} | ${run.cpuMs.redis.toFixed(1)} |`,
    ),
    '',
    '| Compared | events/s | CPU per event | redis-server CPU per event |',
    '| --- | ---: | ---: | ---: |',
    ...Object.entries({ 'always / everysec': cost, 'a replica / always': replication, 'the replica waited for / not': wait }).flatMap(
      ([name, rows]) =>
        rows.map((c) => `| ${name}, batches of ${c.batch} | **×${ratio(c.rate)}** | ×${ratio(c.cpu)} | ×${ratio(c.redis)} |`),
    ),
    '',
    `**Freshness and the 202 on each.** The same four fleets, each twice (each variant and back): probes one after`,
    `another, each a new product's view, timed from its POST to the 202, and from the 202 to its count in the query API (as`,
    `the freshness figure), under steady load of ${fmt(ctx.quick ? 2_000 : 10_000)} events/s through the collector.`,
    '',
    '| Redis | probes | 202 p50 ms | 202 p99 ms | visible p50 ms | visible p99 ms | visible max ms |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...VARIANTS.map(
      (v) =>
        `| ${VARIANT_NAME[v]} | ${freshness[v].latencies.length} | ${quantileOf('sends', v, 0.5)} | ${quantileOf('sends', v, 0.99)} | ` +
        `${quantileOf('latencies', v, 0.5)} | **${quantileOf('latencies', v, 0.99)}** | ${quantileOf('latencies', v, 1)} |`,
    ),
    '',
    'Redis under always fsyncs once per pass of its event loop that wrote anything, not once per command, so the cost',
    "falls with larger batches. These fsyncs are on this machine's local disk; a slower disk costs always more. The",
    'replica is on the same machine too: it takes its CPU (it replays every write of the master) from the same two cores',
    'that the master and the apps share, which a replica on its own host would not; and the round trip `WAIT` waits for',
    'is a loopback one, where across hosts the 202 waits a network round trip more.',
  ].join('\n');
  return {
    summary:
      `SIGKILL right after an answered write: everysec lost it in ${lost('everysec')} of ${rounds} rounds, always in ${lost('always')}; ` +
      `always / everysec events/s ×${ratio(cost[0]!.rate)} with 1000-event batches, ×${ratio(cost[1]!.rate)} with 100-event batches ` +
      `(CPU per event ×${ratio(cost[0]!.cpu)}, ×${ratio(cost[1]!.cpu)}); a replica on the same cores / always ×${ratio(replication[0]!.rate)}, ` +
      `×${ratio(replication[1]!.rate)}; the replica waited for (REDIS_WAIT_REPLICAS=1) / not ×${ratio(wait[0]!.rate)}, ×${ratio(wait[1]!.rate)}; ` +
      `freshness p99 ${VARIANTS.map((v) => quantileOf('latencies', v, 0.99)).join(' / ')} ms, ` +
      `202 p99 ${VARIANTS.map((v) => quantileOf('sends', v, 0.99)).join(' / ')} ms (everysec / always / a replica / waited for)`,
    markdown,
  };
});
