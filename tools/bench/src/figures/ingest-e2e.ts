import { generateLoad, type Fleet } from '@tally/loadgen';
import { rollup, validateEvents } from '@tally/schema';
import { createTestTable } from '@tally/testing';
import { lineChart, logBars, type Chart } from '../charts';
import { BASELINE_RULES, idPages } from '../baseline';
import { alternated, figure, type FigureContext } from '../figure';
import { benchFleet, CATALOGUE, MAX_QUEUE_DEPTH, measureLoad, PEAK_COLLECTOR, STORES, type E2eRun } from '../load';
import { measureNaiveThroughput } from '../naive';
import { hincrbyCeiling, hincrbyCommand } from '../redis-benchmark';
import { fmt, mean, pct, ratio } from '../stats';

/** Batch sizes and batches in flight: enough to keep one collector and one aggregator busy. */
const LOADS = [
  { batch: 100, concurrency: 32 },
  { batch: 1000, concurrency: 8 },
] as const;

type IngestE2eFigure = Awaited<ReturnType<typeof measureIngestE2e>>;
type Sides = Record<'before' | 'after', E2eRun[]>;

/** Ingest end to end, redis-benchmark's HINCRBY ceiling and the naive design, in one run (the method is in the markdown below). */
async function measureIngestE2e(ctx: FigureContext) {
  const [warmMs, windowMs] = ctx.quick ? [1_000, 2_000] : [5_000, 20_000];
  ctx.log('starting a fleet: redis-server (AOF everysec), dynalite, one collector, one bucket-aggregator (BUCKET_SECONDS=900)');
  // --profile: the collector and the aggregator run under node --cpu-prof (written when the fleet stops them).
  const cpuProf: Record<string, string> = ctx.profileDir ? { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${ctx.profileDir}` } : {};
  const fleetOptions = {
    // Intake and apply only: nothing is flushed within a 900 s bucket, and nothing is queried.
    replicas: { 'query-api': 0, 'dynamo-writer': 0 },
    appEnv: { collector: { ...PEAK_COLLECTOR, ...cpuProf }, 'bucket-aggregator': cpuProf },
  } as const;
  const fleet = await benchFleet(fleetOptions);
  const fleets: Partial<Record<'before' | 'after', Fleet>> = {};
  try {
    if (ctx.baseline) {
      // Both on the rules and traffic the baseline knows (see BASELINE_RULES): the same work, before and after.
      ctx.log(
        `starting ${ctx.baseline.ref}'s fleet (${ctx.baseline.commit.slice(0, 10)}) from ${ctx.baseline.root}, and this checkout's, alike`,
      );
      fleets.before = await benchFleet({ ...fleetOptions, rules: BASELINE_RULES, root: ctx.baseline.root });
      fleets.after = await benchFleet({ ...fleetOptions, rules: BASELINE_RULES });
    }
    const runs: E2eRun[] = [];
    // HINCRBYs the apply script does per event of this traffic (distinct row fields per batch / events).
    const hincrbyPerEvent: Record<number, number> = {};
    for (const [i, load] of LOADS.entries()) {
      hincrbyPerEvent[load.batch] = hincrbysPerEvent(fleet, 100 + i, load.batch, ctx.quick ? 20 : 100);
      runs.push(await measureLoad(ctx, fleet, { ...load, seed: 100 + i, warmMs, fillWaitMs: ctx.quick ? 500 : 15_000, windowMs }));
    }

    const hincrbyN = ctx.quick ? 100_000 : 2_000_000;
    ctx.log(`redis-benchmark HINCRBY ceiling on the fleet's redis-server (-n ${fmt(hincrbyN)})`);
    const hincrby = await hincrbyCeiling(fleet.redis.port, hincrbyN);

    const naiveMs = ctx.quick ? 1_000 : 5_000;
    ctx.log(`naive design: one UpdateItem per event per row against the fleet's dynalite, ${naiveMs / 1000} s`);
    const naive = await measureNaiveThroughput({
      endpoint: fleet.dynalite.endpoint,
      table: await createTestTable(fleet.dynalite.endpoint, { prefix: 'naive' }),
      rules: fleet.rules,
      events: sampleEvents(fleet, 7, 5_000),
      durationMs: naiveMs,
      concurrency: 16,
    });
    ctx.log(`  ${fmt(naive.eventsPerSecond)} events/s (${fmt(naive.updateItemsPerSecond)} UpdateItems/s)`);
    // With --baseline: 1000-event runs of that commit's fleet and this one's, alternated (before, after, after, before),
    // so a change in the machine's load weighs on both alike; the same traffic for both in a round, a seed neither
    // fleet has sent (its Idempotency-Keys are new).
    const windows = { warmMs, fillWaitMs: ctx.quick ? 500 : 5_000, windowMs: ctx.quick ? 2_000 : 10_000 };
    const sides = await alternated(['before', 'after'] as const, ctx.baseline ? 2 : 0, (side, r) => {
      ctx.log(`before/after round ${r + 1}: ${side === 'before' ? ctx.baseline!.ref : 'this checkout'}`);
      return measureLoad(ctx, fleets[side]!, { batch: 1000, concurrency: 8, ...windows, mapBatch: idPages, seed: 300 + r });
    });
    const beforeAfter = ctx.baseline && { ...ctx.baseline, sides, ...beforeAfterRatios(sides) };
    return { runs, hincrbyPerEvent, hincrby, hincrbyN, naive, beforeAfter };
  } finally {
    await Promise.all([fleet.stop(), fleets.before?.stop(), fleets.after?.stop()]);
  }
}

/** Over the rounds: after's CPU ms per 1000 events (collector + aggregator + Redis) over before's, and events/s alike. */
function beforeAfterRatios(sides: Sides) {
  const of = (side: keyof Sides, pick: (r: E2eRun) => number) => mean(sides[side].map(pick));
  const [beforeCpuMs, afterCpuMs] = [of('before', (r) => r.cpuMs.tally), of('after', (r) => r.cpuMs.tally)];
  const afterPerSecond = of('after', (r) => r.appliedPerSecond);
  const rate = afterPerSecond / of('before', (r) => r.appliedPerSecond);
  return { cpu: afterCpuMs / beforeCpuMs, rate, beforeCpuMs, afterCpuMs, afterPerSecond };
}

/** The traffic's batches of `batch` events, up to `maxEvents`, each with its events as the collector accepts them. */
function* validBatches(fleet: Fleet, seed: number, batch: number, maxEvents: number) {
  const now = Date.now();
  for (const b of generateLoad({ seed, stores: STORES, ...CATALOGUE, batchSize: batch, maxEvents, now })) {
    const { events } = validateEvents(fleet.rules, b.events, { now, clockSkewMs: 300_000, latenessMs: 35 * 86_400_000 });
    yield { store: b.store, timeZone: fleet.zones[b.store]!, events };
  }
}

/** Normalized events of the same traffic, each with its store and zone (for the naive writer). */
const sampleEvents = (fleet: Fleet, seed: number, n: number) =>
  [...validBatches(fleet, seed, 100, n)].flatMap((b) => b.events.map((event) => ({ store: b.store, timeZone: b.timeZone, event })));

/** HINCRBYs per event the apply script does for this traffic: distinct (row, day, metric) per batch, over events. */
function hincrbysPerEvent(fleet: Fleet, seed: number, batch: number, batches: number): number {
  let [events, fields] = [0, 0];
  for (const b of validBatches(fleet, seed, batch, batch * batches)) {
    events += b.events.length;
    for (const row of rollup(fleet.rules, b.store, b.timeZone, b.events).values()) fields += row.size;
  }
  return fields / events;
}

export const ingestE2eFigure = figure('ingest-e2e', async (ctx) => {
  const f = await measureIngestE2e(ctx);
  const [small, big] = f.runs as [E2eRun, E2eRun];
  const ba = f.beforeAfter;
  const summary =
    `${fmt(big.appliedPerSecond)} events/s end to end with 1000-event batches, ${fmt(small.appliedPerSecond)} with 100-event batches ` +
    `(HTTP -> collector -> queue -> aggregator -> Redis buckets; collector + aggregator + Redis CPU ${big.cpuMs.tally.toFixed(1)} / ` +
    `${small.cpuMs.tally.toFixed(1)} ms per 1000 events); ${ratio(big.appliedPerSecond / f.naive.eventsPerSecond)}x the naive ` +
    `design's ${fmt(f.naive.eventsPerSecond)} events/s (one UpdateItem per event per row, dynalite); ${pct(big.appliedPerSecond / f.hincrby)} ` +
    `of redis-benchmark's HINCRBY ceiling ${fmt(f.hincrby)}/s (${pct((big.appliedPerSecond * f.hincrbyPerEvent[1000]!) / f.hincrby)} counting ` +
    `its ${f.hincrbyPerEvent[1000]!.toFixed(2)} HINCRBYs per event)` +
    (ba
      ? `; against ${ba.ref} (${ba.commit.slice(0, 10)}) in the same run: CPU per 1000 events x${ba.cpu.toFixed(2)}, events/s x${ba.rate.toFixed(2)}` +
        ` (on its rules, ${pct(ba.afterPerSecond / f.hincrby)} of the HINCRBY ceiling)`
      : '');
  const rows = f.runs.map(
    (r) =>
      `| ${r.batch} | ${r.concurrency} | ${r.seconds.toFixed(1)} | **${fmt(r.appliedPerSecond)}** | ${fmt(r.acceptedPerSecond)} | ` +
      `${r.depthStart} → ${r.depthEnd}${r.queueFilled ? ' (full: aggregator-bound)' : ''} | ${fmt(r.refused)} / ${fmt(r.requests)} | ${f.hincrbyPerEvent[r.batch]!.toFixed(2)} | ` +
      `${pct((r.appliedPerSecond * f.hincrbyPerEvent[r.batch]!) / f.hincrby)} | ${ratio(r.appliedPerSecond / f.naive.eventsPerSecond)}x | ` +
      `${[r.cpu.collector, r.cpu.aggregator, r.cpu.redis, r.cpu.bench].map((c) => c.toFixed(2)).join(' / ')} | ${cpuParts(r)} |`,
  );
  const markdown = [
    'A tools/loadgen fleet (`startFleet`): redis-server (AOF everysec), dynalite in a child process, ONE collector and ONE bucket-aggregator',
    `process (8 concurrent jobs), \`BUCKET_SECONDS=900\`, \`MAX_QUEUE_DEPTH=${MAX_QUEUE_DEPTH}\`. The bench process sends tools/loadgen traffic`,
    `(seeded Zipf products and visitors over ${fmt(CATALOGUE.products)} / ${fmt(CATALOGUE.visitors)}, sessions of views, page views and orders, three stores in three`,
    'time zones, 10% late events up to 33 days back) with `httpSender` over 127.0.0.1, as fast as the collector answers (a 429 is retried',
    "after at most 250 ms). Events/s is the aggregator's `tally_events_applied_total` over the window after a warm-up; the queue stays",
    'bounded by the backpressure (start → end depth in jobs). When the aggregator is the slower stage the queue fills to the limit during',
    'the warm-up (given up to 15 s more) and the window starts there; when it does not fill, the collector side is the slower one.',
    '',
    '| batch | in flight | s | **events/s end to end** (applied) | accepted/s (collector) | queue depth (jobs) | 429 / requests | HINCRBYs per event | of the HINCRBY ceiling (in HINCRBYs) | × naive | CPU collector / aggregator / redis / bench (cores) | CPU ms per 1000 events: collector / aggregator / redis |',
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows,
    '',
    `The processes measured used ${f.runs.map((r) => (r.cpu.collector + r.cpu.aggregator + r.cpu.redis + r.cpu.bench).toFixed(2)).join(' and ')} of the 2 cores in the two windows (the`,
    'rest went to other work on the shared machine): events/s moves with that share, the CPU ms per 1000 events (collector +',
    `aggregator + Redis: ${f.runs.map((r) => `${r.cpuMs.tally.toFixed(1)} ms with ${r.batch}-event batches`).join(', ')}) much less. Compared with, in the same run:`,
    '',
    `- **redis-benchmark HINCRBY ceiling**: \`${hincrbyCommand(f.hincrbyN)}\` against the fleet's redis-server: **${fmt(f.hincrby)}** ops/s.`,
    `  The apply script does ${f.hincrbyPerEvent[1000]!.toFixed(2)} HINCRBYs per event with 1000-event batches (one per distinct row, day and metric of a batch),`,
    "  plus the batch's dedupe record and row set; the rest is the collector, the queue and the processes sharing two cores.",
    `- **naive design**: one UpdateItem per event per row (day, month and total rows, one per counter, as in write-cost), ${f.naive.concurrency} in flight`,
    `  against the same dynalite for ${f.naive.seconds.toFixed(1)} s: **${fmt(f.naive.eventsPerSecond)}** events/s, ${fmt(f.naive.updateItemsPerSecond)} UpdateItems/s, ${(f.naive.updateItems / Math.max(1, f.naive.events)).toFixed(1)} UpdateItems and`,
    `  ${(f.naive.writeUnits / Math.max(1, f.naive.events)).toFixed(1)} write units per event. dynalite is an emulator: real DynamoDB takes more writes per second but charges every`,
    `  one — ${fmt((f.naive.writeUnits / Math.max(1, f.naive.events)) * big.appliedPerSecond)} write units/s at Tally's 1000-batch rate (see write-cost).`,
    ...(f.beforeAfter ? beforeAfterMarkdown(f.beforeAfter, f.hincrby) : []),
  ].join('\n');
  return { summary, markdown, charts: charts(f) };
});

function beforeAfterMarkdown(b: NonNullable<IngestE2eFigure['beforeAfter']>, hincrby: number): string[] {
  const line = (name: string, x: E2eRun) => `| ${name} | ${fmt(x.appliedPerSecond)} | ${x.cpuMs.tally.toFixed(1)} | ${cpuParts(x)} |`;
  return [
    '',
    `**Before/after, same run** (\`--baseline ${b.ref}\`: ${b.commit.slice(0, 10)}, "${b.subject}"): that commit's apps from a git worktree,`,
    "in a second fleet started alike, and this checkout's in a third, measured in turn with 1000-event batches (before, after, after, before).",
    'Both take the same work: the rules that commit knows (no unique-visitor sketches, no page rows; `page` an id, so the',
    "traffic's page paths are sent as ids). The table above is this checkout on the default rules.",
    '',
    '| run | events/s | CPU ms per 1000 events (collector + aggregator + redis) | collector / aggregator / redis |',
    '| --- | ---: | ---: | ---: |',
    ...b.sides.before.flatMap((x, i) => [line(`${b.ref}, round ${i + 1}`, x), line(`this checkout, round ${i + 1}`, b.sides.after[i]!)]),
    '',
    `CPU per 1000 events: **${b.afterCpuMs.toFixed(1)} ms against ${b.beforeCpuMs.toFixed(1)} ms, x${b.cpu.toFixed(2)}**; events/s x${b.rate.toFixed(2)}.`,
    `On these rules this checkout takes ${fmt(b.afterPerSecond)} events/s: ${pct(b.afterPerSecond / hincrby)} of the HINCRBY ceiling above.`,
  ];
}

/** CPU ms per 1000 events of the collector / aggregator / redis-server. */
const cpuParts = (r: E2eRun) => [r.cpuMs.collector, r.cpuMs.aggregator, r.cpuMs.redis].map((c) => c.toFixed(1)).join(' / ');

function charts(f: IngestE2eFigure): Chart[] {
  return [
    {
      name: 'throughput',
      title: 'Events per second end to end, next to the naive design and the Redis HINCRBY ceiling (log scale)',
      spec: logBars({
        title: 'Events/s end to end vs the naive design and the Redis ceiling',
        axisTitle: 'per second (log scale)',
        bars: [
          { label: 'naive: UpdateItem per event per row (dynalite)', value: f.naive.eventsPerSecond, group: 'events/s' },
          ...f.runs.map((r) => ({ label: `Tally end to end, ${r.batch}-event batches`, value: r.appliedPerSecond, group: 'events/s' })),
          { label: 'redis-benchmark HINCRBY ceiling (-P 16)', value: f.hincrby, group: 'HINCRBY ops/s' },
        ],
        groups: { names: ['events/s', 'HINCRBY ops/s'], colors: ['#4c78a8', '#bbbbbb'] },
      }),
    },
    {
      name: 'timeline',
      title: 'Events applied per second during the measured window',
      spec: lineChart({
        title: 'Events applied per second during the window',
        height: 200,
        values: f.runs.flatMap((r) => r.timeline.map((t) => ({ ...t, batch: `${r.batch}-event batches` }))),
        x: { field: 'second', title: 'second of the window' },
        y: { field: 'eventsPerSecond', title: 'events applied per second' },
        color: 'batch',
      }),
    },
  ];
}
