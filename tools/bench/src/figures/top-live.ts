import { BucketStore } from '@tally/buckets';
import { dayKey, localDate } from '@tally/key-layout';
import { compileRules, defaultRules, rollup, type RowDeltas } from '@tally/schema';
import { startRedis } from '@tally/testing';
import { Redis } from 'ioredis';
import { figure } from '../figure';
import { eachEntity, makeBatch, prng, zipf } from '../workload';
import { fmt, median, timeLoop } from '../stats';

/**
 * What live top lists cost. APPLY adds ranked rows' deltas to the daily rankings in the apply step, so (1) applying
 * the bench's mixed batches (90% product views) is timed with the default rules against the same rules with no
 * entity ranked, alternating rounds in one run; and (2) the TOP script's latency is timed with nothing waiting in
 * the open bucket and with 100,000 visitor rows waiting there (it reads the rankings only, so it should not move).
 * Ratios are the figure; milliseconds depend on the machine.
 */
export const topLiveFigure = figure('top-live', async (ctx) => {
  const rounds = ctx.quick ? 2 : 4;
  const openRows = ctx.quick ? 10_000 : 100_000;
  const batchesPerRound = ctx.quick ? 30 : 100;
  const eventsPerBatch = 500;
  const server = await startRedis();
  const redis = new Redis(server.url);
  const now = Date.now();
  const days = Array.from({ length: 30 }, (_, i) => dayKey(localDate(now - i * 86_400_000, 'UTC')));
  const time = { ranked: 0, unranked: 0 };
  let top: { none: number; full: number };
  try {
    const stores = { ranked: compileRules(defaultRules), unranked: compileRules(eachEntity({ rank: false })) };
    for (let r = 0; r < rounds; r++) {
      for (const kind of r % 2 === 0 ? (['ranked', 'unranked'] as const) : (['unranked', 'ranked'] as const)) {
        const rules = stores[kind];
        const buckets = new BucketStore({ redis, rules, prefix: kind });
        // The same batches for both: one seed per round.
        const rnd = prng(1000 + r);
        const products = zipf(10_000, 1.05, rnd);
        const visitors = zipf(100_000, 0.8, rnd);
        const batches = Array.from({ length: batchesPerRound }, () =>
          rollup(rules, 'S', 'UTC', makeBatch(rnd, products, visitors, eventsPerBatch, now)),
        );
        const t0 = performance.now();
        for (let b = 0; b < batches.length; b++) await buckets.apply('S', `r${r}-${b}`, batches[b]!, { now, dedupeTtlSeconds: 3_600 });
        time[kind] += performance.now() - t0;
      }
      ctx.log(`round ${r + 1}/${rounds}: ranked ${time.ranked.toFixed(0)} ms, unranked ${time.unranked.toFixed(0)} ms so far`);
    }
    // TOP with 1,000 products ranked, then with 100,000 visitor rows more in the open bucket (before, TOP had to
    // walk the unfolded buckets; now it reads the rankings only, whose size is the ranked members').
    const buckets = new BucketStore({ redis, rules: stores.ranked, prefix: 'top' });
    // Applies rows `T#<entity>#<id><i>` for i < n, 1,000 per batch.
    const apply = async (prefix: string, n: number) => {
      for (let i = 0; i < n; i += 1_000) {
        const pks = Array.from({ length: Math.min(1_000, n - i) }, (_, j) => `T#${prefix}${i + j}`);
        const deltas: RowDeltas = new Map(pks.map((pk, j) => [pk, new Map([[`${days[j % 30]}|v`, 1 + (j % 7)]])]));
        await buckets.apply('T', `t${prefix}${i}`, deltas, { now, dedupeTtlSeconds: 60 });
      }
    };
    const topP50 = async () => median(await timeLoop(ctx.quick ? 300 : 3_000, () => buckets.top('T', 'product', 'v', days, 20)));
    await apply('product#F', 1_000);
    const none = await topP50();
    await apply('visitor#V', openRows);
    top = { none, full: await topP50() };
  } finally {
    await redis.quit();
    await server.stop();
  }
  const events = rounds * batchesPerRound * eventsPerBatch;
  const rate = (ms: number) => Math.round(events / 2 / (ms / 1000));
  const ratio = time.ranked / time.unranked;
  return {
    summary: `ranking in the apply step: apply takes ×${ratio.toFixed(2)} the time without rankings (${fmt(rate(time.ranked))} vs ${fmt(rate(time.unranked))} events/s); TOP p50 ×${(top.full / top.none).toFixed(2)} with ${fmt(openRows)} rows in the open bucket`,
    markdown: [
      "Top lists rank from every bucket, the open one included: APPLY adds ranked rows' deltas (products, pages) to the",
      'daily rankings in the step that counts them, and TOP unions the rankings of the days asked. Both costs, in one run:',
      '',
      '| Measure | With rankings | Without | Ratio |',
      '| --- | --- | --- | --- |',
      `| Apply, bench batches of ${eventsPerBatch} events (90% product views), events/s | ${fmt(rate(time.ranked))} | ${fmt(rate(time.unranked))} | ${ratio.toFixed(2)} (time) |`,
      '',
      '| Rows waiting in the open bucket | TOP p50 (ms), 30 days, top 20 of 1,000 ranked |',
      '| --- | --- |',
      `| 0 | ${top.none.toFixed(2)} |`,
      `| ${fmt(openRows)} visitor rows | ${top.full.toFixed(2)} |`,
    ].join('\n'),
  };
});
