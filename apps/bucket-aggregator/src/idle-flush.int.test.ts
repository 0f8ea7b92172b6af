import type { BucketStore } from '@tally/buckets';
import { QUEUE, type TallyQueues } from '@tally/queues';
import { compileRules, defaultRules, type RowDeltas } from '@tally/schema';
import type { Redis } from 'ioredis';
import pino from 'pino';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { createAggregatorMetrics } from './aggregator-metrics';
import { sealTick, type SealDeps } from './seal.processor';
import { useAggregatorRedis, writeRows } from './test-fixtures';

/**
 * Idle rows flush when their policy says, whatever the re-touches: a re-touched idle row's alarm in the `due` zset is
 * not moved by its fold (its later time is kept beside it and re-armed when the alarm fires), so this drives the
 * sealer as the job scheduler would (a tick when a bucket can be sealed and at every visit time the work set asks
 * for), on an injected clock, and checks the tick at which each row's flush job is first enqueued.
 */
let redis: Redis;
let queues: TallyQueues;
let buckets: BucketStore;
const rules = compileRules(defaultRules); // visitor rows: idle 30 min, max age 24 h
const metrics = createAggregatorMetrics(new Registry());
const log = pino({ level: 'silent' });
const BUCKET_MS = 60_000;
const MIN = 60_000;
const HOUR = 60 * MIN;
useAggregatorRedis(rules, (r) => void ({ redis, queues, buckets } = r));

const row = (store: string, v: string) => `${store}#visitor#${v}`;
const deltas = (store: string, visitors: readonly string[]): RowDeltas =>
  new Map(visitors.map((v) => [row(store, v), new Map([['2023-123|v', 1n]])]));

describe('idle flush times with lazily re-armed alarms', () => {
  it(
    'flushes each idle row exactly when it has been idle 30 min, or 24 h after its first unwritten count',
    { timeout: 120_000 },
    async () => {
      const store = 'IDLE1';
      // Any day: the clock is injected, relative to now (never a fixed time of day).
      const t0 = Math.floor((Date.now() - 3 * 24 * HOUR) / MIN) * MIN;
      // V0 is touched once; V1 at 0, 20 and 40 min; V2 every 20 min for 26 h (its max age caps it); V3 every 10 min
      // for 2 h (its alarm re-armed on the way), then once more 1 h later, after its flush. Each batch lands 7 s
      // into a minute, and the sealer ticks on the minute (its job scheduler, every BUCKET_MS): a batch's bucket is
      // sealed and folded by the next tick.
      const applies = new Map<number, string[]>();
      const touch = (m: number, v: string) => applies.set(t0 + m * MIN + 7_000, [...(applies.get(t0 + m * MIN + 7_000) ?? []), v]);
      touch(0, 'V0');
      for (const m of [0, 20, 40]) touch(m, 'V1');
      for (let m = 0; m <= 26 * 60; m += 20) touch(m, 'V2');
      for (let m = 0; m <= 120; m += 10) touch(m, 'V3');
      touch(180, 'V3');
      const fold = (m: number) => t0 + (m + 1) * MIN;
      // Each flush is acked at once (as the writer would), so V2, still touched after its max-age flush, comes due again.
      const expected = {
        V0: [fold(0) + 30 * MIN],
        V1: [fold(40) + 30 * MIN],
        V2: [fold(0) + 24 * HOUR, fold(26 * 60) + 30 * MIN],
        V3: [fold(120) + 30 * MIN, fold(180) + 30 * MIN],
      };

      const deps = (now: number): SealDeps => ({ buckets, queues, bucketMs: BUCKET_MS, metrics, log, now: () => now });
      const flushes = new Map<string, number[]>();
      const pending = [...applies.keys()].sort((a, b) => a - b);
      let visits = 0;
      for (let now = t0; now <= t0 + 27 * HOUR; now += BUCKET_MS) {
        const tick = await sealTick(deps(now));
        visits += tick.stores;
        if (tick.flushes > 0) {
          for (const job of await queues[QUEUE.dynamoWrites].getJobs(['waiting', 'delayed', 'prioritized'])) {
            const pk = (job.data as { pk: string }).pk;
            flushes.set(pk, [...(flushes.get(pk) ?? []), now]);
            // The writer: read, (write,) ack, publish; then the job is done.
            await writeRows(buckets, store, [pk], now);
            await job.remove();
          }
        }
        if (now === fold(20) || now === fold(40)) {
          // A fold re-touching V1 leaves its alarm as it was (first set at fold(0), re-armed to fold(20)'s time when it
          // fired at fold(0) + 30 min); its flush time moved, kept beside the zset.
          const alarm = now === fold(20) ? fold(0) + 30 * MIN : fold(20) + 30 * MIN;
          expect(await redis.zscore('t:{IDLE1}:due', row(store, 'V1'))).toBe(String(alarm));
          expect(await buckets.flushTime(store, row(store, 'V1'))).toBe(now + 30 * MIN);
        }
        while (pending[0] !== undefined && pending[0] < now + BUCKET_MS) {
          const at = pending.shift()!;
          const r = await buckets.apply(store, `b-${at}`, deltas(store, applies.get(at)!), { now: at, dedupeTtlSeconds: 3_600 });
          await buckets.registerStore(store, r.seq);
        }
      }
      expect(Object.fromEntries(flushes)).toEqual({
        [row(store, 'V0')]: expected.V0,
        [row(store, 'V1')]: expected.V1,
        [row(store, 'V2')]: expected.V2,
        [row(store, 'V3')]: expected.V3,
      });
      // Nothing left: every row written.
      expect(await buckets.storeBacklog(store)).toMatchObject({ rows: 0, entries: 0 });
      for (const v of ['V0', 'V1', 'V2', 'V3']) expect(await buckets.flushTime(store, row(store, v))).toBeUndefined();
      // Visits: when a bucket can be sealed, when an alarm fires, after a write; far fewer than the ticks.
      expect(visits).toBeLessThan(applies.size * 3);
    },
  );
});
