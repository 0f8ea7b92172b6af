import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { rollup } from '@tally/schema';
import { describe, expect, it } from 'vitest';
import {
  evaluateSegments,
  explicitRange,
  HistoryMemo,
  namedRange,
  readSeries,
  readTop,
  readTotals,
  resolveMetrics,
  type QueryDeps,
} from './index';
import { flushStore, rankedRules as rules, useQueryFixture } from './test-fixtures';

const fixture = useQueryFixture(rules);

/** Seal, fold and flush every due row of the store once; `crashAfter` interrupts a row after its first UpdateItem. */
const cycle = (deps: QueryDeps, store: string, now: number, crashAfter?: string) =>
  flushStore(deps, store, now, { crashAt: (pk) => (pk === crashAfter ? 1 : undefined) });

const view = (ts: number, product: string, visitor: string) => ({ type: 'view', ts, dims: { product, visitor } });

describe('exact live answers', () => {
  it('every answer lies between what was applied before the query and what was applied by its end, while flushes run', async () => {
    const deps = await fixture.deps('ex');
    const now = Date.parse('2023-05-03T12:00:00Z');
    const range = explicitRange('2023-05-01', '2023-05-31');
    const metrics = resolveMetrics(rules, ['ViewCount']);
    let started = 0;
    let done = 0;
    let stop = false;
    let clock = now;
    const applier = (async () => {
      for (let i = 0; i < 300; i++) {
        started++;
        await deps.buckets.registerStore('S');
        await deps.buckets.apply('S', `b${i}`, rollup(rules, 'S', 'UTC', [view(now - (i % 3) * 86_400_000, `P${i % 3}`, 'V1')]), {
          now: clock,
          dedupeTtlSeconds: 3600,
        });
        done++;
      }
      stop = true;
    })();
    const flusher = (async () => {
      let k = 0;
      while (!stop) {
        clock += 1000;
        await cycle(deps, 'S', clock, k++ % 3 === 0 ? 'S' : undefined);
      }
      await cycle(deps, 'S', clock + 1000);
    })();
    const answers: Array<[number, number, number]> = [];
    const querier = (async () => {
      while (!stop) {
        const lo = done;
        const day = await readSeries(deps, { store: 'S', pk: 'S', metrics, range, granularity: 'day' });
        const month = await readSeries(deps, { store: 'S', pk: 'S', metrics, range, granularity: 'month' });
        const total = await readSeries(deps, { store: 'S', pk: 'S', metrics, range, granularity: 'total' });
        const hi = started;
        for (const v of [day.totals['ViewCount']!, month.totals['ViewCount']!, total.totals['ViewCount']!])
          answers.push([lo, Number(v), hi]);
      }
    })();
    await Promise.all([applier, flusher, querier]);
    expect(answers.length).toBeGreaterThan(20);
    const bad = answers.filter(([lo, v, hi]) => v < lo || v > hi);
    expect(bad).toEqual([]);
    // At rest, DynamoDB alone holds everything, and the answers are exact.
    const final = await readSeries(deps, { store: 'S', pk: 'S', metrics, range, granularity: 'day' });
    expect(final.totals['ViewCount']).toBe(300n);
    expect(final.points.find((p) => p.period === '2023-05-03')!.values['ViewCount']).toBe(100n);
    expect(await fixture.redis.keys('ex:{S}:o:*')).toEqual([]);
    expect(final.dynamoRequests).toBe(1);
  });

  it('visitor segments stay exact through cache fills racing with the writer (with the in-process history memo)', async () => {
    const deps = { ...(await fixture.deps('seg')), historyMemo: new HistoryMemo() };
    const now = Date.parse('2023-05-03T12:00:00Z');
    let applied = 0;
    let stop = false;
    let clock = now;
    const seg = [
      {
        name: 'fan',
        match: 'all' as const,
        rules: [{ metric: 'ProductViews', key: 'P1', range: 'last3m' as const, op: '>=' as const, value: 1 }],
      },
    ];
    const writer = (async () => {
      for (let i = 0; i < 120; i++) {
        await deps.buckets.registerStore('S');
        await deps.buckets.apply('S', `v${i}`, rollup(rules, 'S', 'UTC', [view(now, 'P1', 'V9')]), { now: clock, dedupeTtlSeconds: 3600 });
        applied++;
        if (i % 4 === 0) {
          clock += 1000;
          await cycle(deps, 'S', clock);
        }
      }
      stop = true;
    })();
    const results: Array<[number, number, number]> = [];
    const reader = (async () => {
      while (!stop) {
        const lo = applied;
        const r = await evaluateSegments(deps, {
          store: 'S',
          pk: 'S#visitor#V9',
          timeZone: 'UTC',
          now,
          segments: seg,
          cacheTtlSeconds: 60,
        });
        results.push([lo, Number(r.segments[0]!.rules[0]!.actual), applied]);
      }
    })();
    await Promise.all([writer, reader]);
    expect(results.filter(([lo, v, hi]) => v < lo || v > hi)).toEqual([]);
    const r1 = await evaluateSegments(deps, { store: 'S', pk: 'S#visitor#V9', timeZone: 'UTC', now, segments: seg, cacheTtlSeconds: 60 });
    const r2 = await evaluateSegments(deps, { store: 'S', pk: 'S#visitor#V9', timeZone: 'UTC', now, segments: seg, cacheTtlSeconds: 60 });
    expect(r1.segments[0]!.rules[0]!.actual).toBe('120');
    expect(r2.cache).toBe('hit');
    expect(r2.dynamoRequests).toBe(0);
    expect(r2.segments[0]).toMatchObject({ name: 'fan', matched: true });
  });
});

describe('ranges and totals', () => {
  it('answers "today" and "yesterday" around a -07:00 store midnight', async () => {
    const deps = await fixture.deps('la');
    const tz = 'America/Los_Angeles';
    const beforeMidnight = Date.parse('2023-05-04T06:59:00Z'); // 23:59 on May 3 in LA
    const afterMidnight = Date.parse('2023-05-04T07:01:00Z'); // 00:01 on May 4
    await deps.buckets.apply('LA', 'a', rollup(rules, 'LA', tz, [view(beforeMidnight, 'P1', 'V1'), view(beforeMidnight, 'P1', 'V1')]), {
      now: 1,
      dedupeTtlSeconds: 60,
    });
    await deps.buckets.apply('LA', 'b', rollup(rules, 'LA', tz, [view(afterMidnight, 'P1', 'V1')]), { now: 2, dedupeTtlSeconds: 60 });
    const metrics = resolveMetrics(rules, ['ViewCount']);
    const q = (name: 'today' | 'yesterday', at: number) =>
      readSeries(deps, { store: 'LA', pk: 'LA', metrics, range: namedRange(name, tz, at), granularity: 'day' });
    expect((await q('today', afterMidnight)).points).toEqual([{ period: '2023-05-04', values: { ViewCount: 1n } }]);
    expect((await q('yesterday', afterMidnight)).points).toEqual([{ period: '2023-05-03', values: { ViewCount: 2n } }]);
    expect((await q('today', beforeMidnight)).points).toEqual([{ period: '2023-05-03', values: { ViewCount: 2n } }]);
    await cycle(deps, 'LA', 10);
    expect((await q('yesterday', afterMidnight)).points).toEqual([{ period: '2023-05-03', values: { ViewCount: 2n } }]);
  });

  it('labels month and year points with four-digit years, as its dates are', async () => {
    const deps = await fixture.deps('y0999');
    const metrics = resolveMetrics(rules, ['ViewCount']);
    const range = explicitRange('0999-12-31', '1000-01-01');
    const periods = async (granularity: 'month' | 'year') =>
      (await readSeries(deps, { store: 'S', pk: 'S', metrics, range, granularity })).points.map((p) => p.period);
    expect(await periods('month')).toEqual(['0999-12', '1000-01']);
    expect(await periods('year')).toEqual(['0999', '1000']);
  });

  it('reads totals of many entities with batched reads, live data merged', async () => {
    const deps = await fixture.deps('tot');
    const ts = Date.parse('2023-05-03T12:00:00Z');
    const events = Array.from({ length: 30 }, (_, i) => view(ts, `P${i % 6}`, 'V'));
    await deps.buckets.apply('S', 'a', rollup(rules, 'S', 'UTC', events), { now: 1, dedupeTtlSeconds: 60 });
    await cycle(deps, 'S', 5);
    await deps.buckets.apply('S', 'b', rollup(rules, 'S', 'UTC', [view(ts, 'P0', 'V')]), { now: 6, dedupeTtlSeconds: 60 });
    const pks = Array.from({ length: 6 }, (_, i) => `S#product#P${i}`);
    const metrics = resolveMetrics(rules, ['ViewCount']);
    const r = await readTotals(deps, { store: 'S', pks, metrics, range: explicitRange('2023-04-04', '2023-05-03') });
    expect(r.rows.map((x) => Number(x.values['ViewCount']))).toEqual([6, 5, 5, 5, 5, 5]);
    expect(r.dynamoRequests).toBe(1);
    const all = await readTotals(deps, { store: 'S', pks, metrics, range: 'all' });
    expect(all.rows.map((x) => Number(x.values['ViewCount']))).toEqual([6, 5, 5, 5, 5, 5]);
  });

  it('an all-time series reads as at 40027f0: one GetItem of the TOTAL item (no Query) and one SNAPSHOT, live counts merged', async () => {
    const deps = await fixture.deps('at');
    const ts = Date.parse('2023-05-03T12:00:00Z');
    // History in DynamoDB (two months and TOTAL), then live counts above its watermarks, sealed and open.
    await deps.buckets.apply('A', 'a', rollup(rules, 'A', 'UTC', [view(ts - 40 * 86_400_000, 'P1', 'V1'), view(ts, 'P2', 'V1')]), {
      now: 1,
      dedupeTtlSeconds: 60,
    });
    await cycle(deps, 'A', 5);
    await deps.buckets.apply('A', 'b', rollup(rules, 'A', 'UTC', [view(ts, 'P1', 'V2')]), { now: 6, dedupeTtlSeconds: 60 });
    await deps.buckets.seal('A', { now: 7, minAgeMs: 0 });
    await deps.buckets.apply('A', 'c', rollup(rules, 'A', 'UTC', [view(ts, 'P3', 'V3')]), { now: 8, dedupeTtlSeconds: 60 });
    const metrics = resolveMetrics(rules, ['ViewCount']);
    const read = (granularity: 'total' | 'year') =>
      readSeries(deps, {
        store: 'A',
        pk: 'A',
        metrics,
        range: granularity === 'total' ? 'all' : explicitRange('2023-01-01', '2023-12-31'),
        granularity,
      });
    await read('total'); // the instance learns the store's bucket layout (a stale SNAPSHOT reply is not the query's work)
    const scripts = async () => Number(/cmdstat_evalsha:calls=(\d+)/.exec(await fixture.redis.info('commandstats'))?.[1] ?? 0);
    // Every DynamoDB call and the items it returned, by operation.
    const calls: Record<string, { calls: number; items: number }> = {};
    const send = deps.dynamo.client.send.bind(deps.dynamo.client) as (cmd: object) => Promise<{ Item?: object; Items?: object[] }>;
    const counting = {
      send: async (cmd: object) => {
        const out = await send(cmd);
        const c = (calls[cmd.constructor.name] ??= { calls: 0, items: 0 });
        c.calls++;
        c.items += out.Item ? 1 : (out.Items?.length ?? 0);
        return out;
      },
    } as unknown as DynamoDBClient;
    const counted = { ...deps, dynamo: { ...deps.dynamo, client: counting } };
    for (const granularity of ['total', 'year'] as const) {
      for (const k of Object.keys(calls)) delete calls[k];
      const before = await scripts();
      const r = await readSeries(counted, {
        store: 'A',
        pk: 'A',
        metrics,
        range: granularity === 'total' ? 'all' : explicitRange('2023-01-01', '2023-12-31'),
        granularity,
      });
      expect(r.totals['ViewCount']).toBe(4n);
      expect(r.dynamoRequests).toBe(1);
      expect(calls).toEqual({ GetItemCommand: { calls: 1, items: 1 } });
      expect((await scripts()) - before).toBe(1);
    }
    expect((await read('total')).totals['ViewCount']).toBe(4n);
  });

  it('ranks from every bucket: the top list agrees with the totals right after the first events, before any seal', async () => {
    const deps = await fixture.deps('live');
    const now = Date.now();
    const tz = 'UTC';
    const range = namedRange('last30d', tz, now);
    const metrics = resolveMetrics(rules, ['ViewCount']);
    const agree = async () => {
      const top = await readTop(deps, { store: 'L', entity: 'product', metric: 'ViewCount', range, limit: 10, timeZone: tz, now });
      const pks = top.items.map((i) => `L#product#${i.id}`);
      const totals = pks.length ? await readTotals(deps, { store: 'L', pks, metrics, range }) : { rows: [] };
      const store = await readSeries(deps, { store: 'L', pk: 'L', metrics, range, granularity: 'total' });
      // Every product's view is a store view too: the list accounts for every view the store card shows.
      expect(top.items.reduce((s, i) => s + i.units, 0n)).toBe(store.totals['ViewCount']);
      expect(top.items.map((i) => i.units)).toEqual(totals.rows.map((r) => r.values['ViewCount']));
      return top.items.map((i) => [i.id, Number(i.units)]);
    };
    const ts = now - 60_000;
    // The first events: in the open bucket only.
    await deps.buckets.apply('L', 'a', rollup(rules, 'L', tz, [view(ts, 'P1', 'V1'), view(ts, 'P2', 'V1'), view(ts, 'P2', 'V2')]), {
      now,
      dedupeTtlSeconds: 60,
    });
    expect(await agree()).toEqual([
      ['P2', 2],
      ['P1', 1],
    ]);
    // Sealed but not folded, then more in the open bucket.
    await deps.buckets.seal('L', { now: now + 1, minAgeMs: 0 });
    await deps.buckets.apply('L', 'b', rollup(rules, 'L', tz, [view(ts, 'P3', 'V3'), view(ts, 'P3', 'V3'), view(ts, 'P3', 'V1')]), {
      now: now + 2,
      dedupeTtlSeconds: 60,
    });
    expect(await agree()).toEqual([
      ['P3', 3],
      ['P2', 2],
      ['P1', 1],
    ]);
    // Folded and written: the same list.
    await cycle(deps, 'L', now + 3);
    expect(await agree()).toEqual([
      ['P3', 3],
      ['P2', 2],
      ['P1', 1],
    ]);
  });
});
