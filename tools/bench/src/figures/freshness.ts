import { formatDate, localDate } from '@tally/key-layout';
import { clientSender, httpSender, type Fleet, type LoadBatch, type Sender } from '@tally/loadgen';
import { sleep } from '@tally/testing';
import { lineChart, targetRule, type Chart } from '../charts';
import { BASELINE_RULES, idPages } from '../baseline';
import { figure, type FigureContext } from '../figure';
import { appMetric, queueDepth, sampler, startBackgroundLoad, STORES, withFleet } from '../load';
import { ascending, fmt, median, ms, quantile } from '../stats';

/** The freshness the design promises: a count is visible in the query API within a second of its 202. */
const TARGET_P99_MS = 1_000;
/** A probe not visible after this long counts as lost (and fails the figure). */
const PROBE_TIMEOUT_MS = 30_000;
/** The store the probes go to: Kathmandu (+05:45), so "today" is not the UTC day around midnight. */
const PROBE_STORE = 'KTM1';
const PROBE_TIME_ZONE = STORES.find((s) => s.id === PROBE_STORE)!.timeZone;

/**
 * Freshness under load: from a probe's 202 to its count in the query API (the method is in the markdown below). With
 * `baseline`, on the rules and traffic of a before/after comparison (the baseline's rules, page paths as ids).
 */
async function measureFreshness(ctx: FigureContext, baseline?: { root?: string }) {
  ctx.log('starting a fleet: redis-server, dynalite, collector, bucket-aggregator, dynamo-writer, query-api (BUCKET_SECONDS=900)');
  const opts = { seed: 31, rate: ctx.quick ? 2_000 : 10_000, probes: ctx.quick ? 15 : 500, warmMs: ctx.quick ? 1_000 : 3_000 };
  return withFleet(baseline ? { ...baseline, rules: BASELINE_RULES } : {}, (fleet) =>
    probesUnderLoad(ctx, fleet, { ...opts, tag: 'FRESH', ...(baseline ? { mapBatch: idPages } : {}) }),
  );
}

/**
 * `probes` probes one after another (tagged `tag`: new product ids) under steady background load of `rate` events/s
 * through the collector, after `warmMs` of it; with the load's accepted and applied events/s meanwhile.
 */
export async function probesUnderLoad(
  ctx: FigureContext,
  fleet: Fleet,
  opts: { seed: number; rate: number; probes: number; warmMs: number; tag: string; mapBatch?: (b: LoadBatch) => LoadBatch } & {
    /** The load and the probes through the collector (default), or `@tally/client` in this process. */
    via?: 'http' | 'client';
  },
) {
  const { seed, rate, mapBatch, via = 'http' } = opts;
  ctx.log(`background load: ${fmt(rate)} events/s ${via === 'http' ? 'through the collector' : 'through @tally/client'}`);
  const load = startBackgroundLoad(fleet, { seed, rate, mapBatch, via, concurrency: 16, batchSize: [50, 150] });
  const depths = sampler(250, () => queueDepth(fleet));
  const counts = () => Promise.all([appMetric(fleet, 'bucket-aggregator', 'tally_events_applied_total'), load.eventsAccepted()]);
  // The load generator's senders, retrying backpressure (a 429, QueueFullError) and an unreachable Redis.
  let retries = 0;
  const policy = { initialDelayMs: 50, maxDelayMs: 50, deadlineMs: PROBE_TIMEOUT_MS, onRetry: () => void retries++ };
  const send =
    via === 'http'
      ? httpSender({ url: fleet.app('collector').url, keyOf: (s) => fleet.keys[s]!.ingest, ...policy })
      : clientSender({ ...fleet.clientTarget(), ...policy });
  try {
    await sleep(opts.warmMs);
    const [applied0, accepted0] = await counts();
    const t0 = performance.now();
    ctx.log(`${opts.probes} probes, one after another`);
    const runTag = Date.now().toString(36);
    const [latencies, pollTimes, sendTimes] = [[] as number[], [] as number[], [] as number[]];
    for (let i = 0; i < opts.probes; i++) {
      const r = await probe(fleet, send, `${opts.tag}${runTag}x${seed}x${i}`);
      latencies.push(r.ms);
      sendTimes.push(r.sendMs);
      pollTimes.push(...r.pollTimes);
      if ((i + 1) % 50 === 0) ctx.log(`  ${i + 1} probes, p50 so far ${ms(median(latencies))} ms`);
    }
    const seconds = (performance.now() - t0) / 1000;
    const [applied1, accepted1] = await counts();
    await load.stop();
    return {
      latencies: latencies.sort(ascending),
      /** Each probe's POST, from sent to its 202. */
      sendLatencies: sendTimes.sort(ascending),
      pollsPerProbe: pollTimes.length / opts.probes,
      pollP50Ms: median(pollTimes),
      probeRetries: retries,
      acceptedPerSecond: (accepted1 - accepted0) / seconds,
      appliedPerSecond: (applied1 - applied0) / seconds,
      targetRate: rate,
      maxQueueDepth: Math.max(0, ...(await depths.stop())),
      seconds,
    };
  } finally {
    await depths.stop();
    await load.stop().catch(() => undefined);
    await send.close();
  }
}

/** One probe: send one view of `product` (one batch of its own), then poll its series until it shows 1. */
async function probe(fleet: Fleet, sender: Sender, product: string): Promise<{ ms: number; sendMs: number; pollTimes: number[] }> {
  const query = fleet.app('query-api').url;
  const keys = fleet.keys[PROBE_STORE]!;
  const ts = Date.now();
  const events = [{ type: 'view', ts, dims: { product } }];
  const batch = { seq: 0, store: PROBE_STORE, idempotencyKey: `probe-${product}`, events, badIndexes: [], badKinds: [] };
  const sent = performance.now();
  const out = await sender.send(batch);
  if (out.kind !== 'accepted') throw new Error(`probe ${product} not taken: ${JSON.stringify(out)}`);
  const accepted = performance.now();
  // The probe's own store-local day, not `range=today`: a probe sent just before the store's midnight is read
  // after it.
  const day = formatDate(localDate(ts, PROBE_TIME_ZONE));
  const url = `${query}/v1/series?entity=product:${product}&metrics=ViewCount&from=${day}&to=${day}&granularity=day`;
  const pollTimes: number[] = [];
  for (;;) {
    const t = performance.now();
    const res = await fetch(url, { headers: { authorization: `Bearer ${keys.read}` } });
    const body = (await res.json()) as { totals?: Record<string, unknown> };
    const answered = performance.now();
    pollTimes.push(answered - t);
    if (res.status !== 200) throw new Error(`probe GET answered ${res.status}: ${JSON.stringify(body)}`);
    const views = Number(body.totals?.['ViewCount'] ?? 0);
    if (views === 1) return { ms: answered - accepted, sendMs: accepted - sent, pollTimes };
    if (views !== 0) throw new Error(`product ${product} shows ${views} views, expected 1`);
    if (answered - accepted > PROBE_TIMEOUT_MS)
      throw new Error(`product ${product} still not visible ${PROBE_TIMEOUT_MS} ms after it was taken`);
  }
}

export const freshnessFigure = figure('freshness', async (ctx) => {
  const f = await measureFreshness(ctx);
  // With --baseline: the same measurement of that commit's fleet right after, so a before/after p99 is of one run.
  // Both on the rules and traffic the baseline knows (BASELINE_RULES): the same work, before and after.
  if (ctx.baseline)
    ctx.log(`the same with ${ctx.baseline.ref}'s apps (${ctx.baseline.commit.slice(0, 10)}), then this checkout's, on the rules it knows`);
  const before = ctx.baseline && (await measureFreshness(ctx, { root: ctx.baseline.root }));
  const after = ctx.baseline && (await measureFreshness(ctx, {}));
  const p = (q: number) => quantile(f.latencies, q);
  const vs =
    before && after
      ? `; on ${ctx.baseline!.ref}'s rules in the same run, p99 ${ms(quantile(after.latencies, 0.99))} ms against ${ctx.baseline!.ref} (${ctx.baseline!.commit.slice(0, 10)}) ${ms(quantile(before.latencies, 0.99))} ms`
      : '';
  const met = p(0.99) <= TARGET_P99_MS;
  const summary =
    `202 -> visible in the query API: p50 ${ms(p(0.5))} ms, p99 ${ms(p(0.99))} ms, max ${ms(p(1))} ms over ${f.latencies.length} probes ` +
    `under ${fmt(f.acceptedPerSecond)} events/s of background load (BUCKET_SECONDS=900: from the live merge); ` +
    `target p99 <= 1 s ${met ? 'met' : 'NOT met'}${vs}`;
  const markdown = [
    'A fleet from tools/loadgen (`startFleet`): redis-server (AOF, everysec), dynalite in a child process, one process of each',
    'app, `BUCKET_SECONDS=900` (no bucket is sealed, so nothing is written to DynamoDB during the run: a count is visible only',
    `through the query API's live merge of Redis). Background load: tools/loadgen traffic through the collector at ${fmt(f.targetRate)}`,
    `events/s target (${fmt(f.acceptedPerSecond)} accepted/s and ${fmt(f.appliedPerSecond)} applied/s measured during the probes; events queue`,
    `at most ${f.maxQueueDepth} jobs deep). Each probe POSTs one \`view\` of a product id never used before to store ${PROBE_STORE} (Asia/Kathmandu),`,
    "then polls `GET /v1/series?entity=product:<id>&metrics=ViewCount&from=<day>&to=<day>&granularity=day` (the probe's store-local day)",
    'with a read key, back to back, until it shows 1; its freshness is the time from the 202 to the answer of the first poll that shows it. Probes run',
    `one after another for ${f.seconds.toFixed(0)} s.`,
    '',
    '| probes | p50 ms | p90 ms | p99 ms | max ms | polls per probe | poll round trip p50 ms | probe POSTs retried (429/503) | target p99 ≤ 1 s |',
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
    `| ${f.latencies.length} | **${ms(p(0.5))}** | ${ms(p(0.9))} | **${ms(p(0.99))}** | ${ms(p(1))} | ${f.pollsPerProbe.toFixed(1)} | ${ms(f.pollP50Ms)} | ${f.probeRetries} | ${met ? 'met' : '**not met**'} |`,
    '',
    'What a probe waits for: the collector enqueues the batch before its 202, the aggregator takes the job from the events',
    'queue (behind the background batches) and applies it to the open bucket; the next poll after that reads it from Redis.',
    `Probes needed ${f.pollsPerProbe.toFixed(1)} polls on average, so the figure's resolution is about one poll round trip (${ms(f.pollP50Ms)} ms at p50).`,
    ...(before && after
      ? [
          '',
          `**Before/after, same run** (\`--baseline ${ctx.baseline!.ref}\`: ${ctx.baseline!.commit.slice(0, 10)}): that commit's apps from a git worktree, then this`,
          "checkout's, measured alike right after the run above, both on the rules that commit knows (no unique-visitor sketches, no page",
          'rows; page paths sent as ids):',
          '',
          '| run | probes | p50 ms | p90 ms | **p99 ms** | max ms | accepted events/s |',
          '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
          baselineRow(ctx.baseline!.ref, before),
          baselineRow('this checkout', after),
        ]
      : []),
  ].join('\n');
  return { summary, markdown, charts: charts(f) };
});

type FreshnessFigure = Awaited<ReturnType<typeof measureFreshness>>;

const baselineRow = (name: string, r: FreshnessFigure) =>
  `| ${name} | ${r.latencies.length} | ${[0.5, 0.9, 0.99, 1].map((q) => ms(quantile(r.latencies, q))).join(' | ')} | ${fmt(r.acceptedPerSecond)} |`;

function charts(f: FreshnessFigure): Chart[] {
  const cdf = f.latencies.map((v, i) => ({ ms: v, share: (i + 1) / f.latencies.length }));
  return [
    {
      name: 'cdf',
      title: 'Freshness: share of probes visible in the query API within t ms of their 202',
      spec: lineChart({
        title: 'Freshness under load: share of probes visible within t of the 202',
        values: cdf,
        mark: { interpolate: 'step-after', point: false },
        x: { field: 'ms', title: 'ms from 202 to visible', scale: { type: 'log' } },
        y: { field: 'share', title: 'share of probes', axis: { format: '%' } },
        after: [targetRule('x', TARGET_P99_MS)],
      }),
    },
  ];
}
