import { BucketStore, type OutboxRead } from '@tally/buckets';
import { getItem, writeRow } from '@tally/dynamo';
import { rollup } from '@tally/schema';
import { describe, expect, it } from 'vitest';
import { explicitRange, readSeries, resolveMetrics, type QueryDeps } from './index';
import { rankedRules as rules, useQueryFixture } from './test-fixtures';

// OUTBOX_MERGE end to end (libs/buckets FOLD with merge, READ_OUTBOX's fence; libs/dynamo writeRow, mergeItems): a
// row's counts of one day and metric added into its outbox entry no writer has read are written to DynamoDB exactly
// once, and every query on the way answers exactly what was folded.
const fixture = useQueryFixture(rules);
const ROWS = ['S', 'S#product#P1', 'S#visitor#V1'];
const DAY = Date.parse('2023-05-03T12:00:00Z');
const metrics = resolveMetrics(rules, ['ViewCount']);

/** Query deps whose folds merge (the aggregators' OUTBOX_MERGE on). */
async function mergingDeps(prefix: string): Promise<QueryDeps & { table: string }> {
  const deps = await fixture.deps(prefix);
  return { ...deps, buckets: new BucketStore({ redis: fixture.redis, rules, prefix, mergeOutbox: true }) };
}

/** `n` views of P1 by V1 on one day applied at `at`, sealed (at `at + 1000`, which opens the next bucket) and folded. */
async function bucket(deps: QueryDeps, at: number, n: number) {
  const events = Array.from({ length: n }, () => ({ type: 'view', ts: DAY, dims: { product: 'P1', visitor: 'V1' } }));
  await deps.buckets.apply('S', `b${at}`, rollup(rules, 'S', 'UTC', events), { now: at, dedupeTtlSeconds: 3600 });
  expect(await deps.buckets.seal('S', { now: at + 1000, minAgeMs: 0 })).toBe(at);
  await deps.buckets.foldSealed('S', { now: at + 1001 });
}

/** Every row's ViewCount as queries answer it: the day series (month items) and all time (the TOTAL item). */
async function views(deps: QueryDeps): Promise<Record<string, [bigint, bigint]>> {
  const out: Record<string, [bigint, bigint]> = {};
  for (const pk of ROWS) {
    const day = await readSeries(deps, { store: 'S', pk, metrics, range: explicitRange('2023-05-01', '2023-05-31'), granularity: 'day' });
    const total = await readSeries(deps, { store: 'S', pk, metrics, range: 'all', granularity: 'total' });
    out[pk] = [day.totals['ViewCount']!, total.totals['ViewCount']!];
  }
  return out;
}
const every = (n: number) => Object.fromEntries(ROWS.map((pk) => [pk, [BigInt(n), BigInt(n)]]));

/** The writer's steps, row by row: read (the fence), write to DynamoDB (crashing after UpdateItem `crashAt`), ack. */
const read = (deps: QueryDeps) => Promise.all(ROWS.map((pk) => deps.buckets.readOutbox('S', pk)));
async function write(deps: QueryDeps, reads: OutboxRead[], crashAt?: number) {
  for (const [i, pk] of ROWS.entries()) {
    let n = 0;
    const afterUpdate = () => {
      if (++n === crashAt) throw new Error('crash');
    };
    await writeRow({ ...deps.dynamo, afterUpdate }, pk, reads[i]!.entries).catch((err: Error) => {
      if (err.message !== 'crash') throw err;
    });
  }
}
const ack = (deps: QueryDeps, reads: OutboxRead[], now: number) =>
  Promise.all(
    ROWS.map((pk, i) =>
      deps.buckets.ackOutbox(
        'S',
        pk,
        reads[i]!.entries.map((e) => e.field),
        now,
      ),
    ),
  );
const entriesOf = (deps: QueryDeps) => Promise.all(ROWS.map((pk) => fixture.redis.hlen(deps.buckets.keys.outbox('S', pk))));

/** DynamoDB alone (Redis holds nothing of the store's rows any more): each row's views of 2023-05-03 and of all time. */
async function written(deps: QueryDeps & { table: string }) {
  expect(await fixture.redis.keys(`${deps.buckets.keys.tag('S')}o*`)).toEqual([]);
  const out: Record<string, [bigint, bigint]> = {};
  for (const pk of ROWS) {
    const month = await getItem(deps.dynamo, pk, 'M2023-05');
    const total = await getItem(deps.dynamo, pk, 'TOTAL');
    out[pk] = [month!.attrs.get('D123.v')!, total!.attrs.get('v')!];
  }
  return out;
}

describe('OUTBOX_MERGE, written to DynamoDB and queried', () => {
  it('read, fold, write, ack: a count folded while the write runs is neither lost nor doubled, and every answer is exact', async () => {
    const deps = await mergingDeps('rf');
    await bucket(deps, 1000, 1);
    expect(await views(deps)).toEqual(every(1));
    await bucket(deps, 2000, 2);
    expect(await entriesOf(deps)).toEqual([1, 1, 2]); // the visitor row counts ViewCount and ProductViews#P1
    expect(await views(deps)).toEqual(every(3));
    const reads = await read(deps);
    expect(reads.map((r) => r.entries.find((e) => e.metric === 'v')!.value)).toEqual([3n, 3n, 3n]);
    // A fold during the write: a new entry, not a count added into the one the writer holds.
    await bucket(deps, 3000, 4);
    expect(await entriesOf(deps)).toEqual([2, 2, 4]);
    expect(await views(deps)).toEqual(every(7));
    await write(deps, reads);
    expect(await views(deps)).toEqual(every(7));
    await bucket(deps, 4000, 8);
    expect(await entriesOf(deps)).toEqual([2, 2, 4]); // added into bucket 3000's entry
    expect(await views(deps)).toEqual(every(15));
    await ack(deps, reads, 5000);
    expect(await views(deps)).toEqual(every(15));
    const rest = await read(deps);
    expect(await views(deps)).toEqual(every(15));
    await write(deps, rest);
    expect(await views(deps)).toEqual(every(15));
    await ack(deps, rest, 6000);
    expect(await views(deps)).toEqual(every(15));
    expect(await written(deps)).toEqual(every(15));
  });

  it('a crash between the write and the ack, and one between two items: every count written once', async () => {
    const deps = await mergingDeps('cr');
    await bucket(deps, 1000, 1);
    await bucket(deps, 2000, 2);
    // Written, then SIGKILL before the ack: the entries stay, and the next flush finds them in DynamoDB already.
    await write(deps, await read(deps));
    expect(await views(deps)).toEqual(every(3));
    await bucket(deps, 3000, 4);
    expect(await views(deps)).toEqual(every(7));
    // The next flush crashes after its first UpdateItem: one item of each row has bucket 3000, the other not.
    await write(deps, await read(deps), 1);
    expect(await views(deps)).toEqual(every(7));
    await bucket(deps, 4000, 8);
    expect(await views(deps)).toEqual(every(15));
    const last = await read(deps);
    await write(deps, last);
    expect(await views(deps)).toEqual(every(15));
    await ack(deps, last, 5000);
    expect(await views(deps)).toEqual(every(15));
    expect(await written(deps)).toEqual(every(15));
  });

  it('every answer lies between what was applied before the query and by its end, while folds and crashing flushes interleave', async () => {
    const deps = await mergingDeps('ex');
    let seed = 7;
    const random = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;
    let [started, done, clock, stop] = [0, 0, 1_000_000, false];
    const applier = (async () => {
      for (let i = 0; i < 240; i++) {
        started++;
        await deps.buckets.apply(
          'S',
          `b${i}`,
          rollup(rules, 'S', 'UTC', [{ type: 'view', ts: DAY - (i % 2) * 86_400_000, dims: { product: 'P1', visitor: 'V1' } }]),
          {
            now: clock,
            dedupeTtlSeconds: 3600,
          },
        );
        done++;
      }
    })();
    const folder = (async () => {
      while (!stop) {
        clock += 1000;
        await deps.buckets.seal('S', { now: clock, minAgeMs: 0 });
        await deps.buckets.foldSealed('S', { now: clock });
      }
    })();
    // Flushes that fold in between their steps, crash after an UpdateItem or before the ack, at random.
    const flush = async (pk: string) => {
      const out = await deps.buckets.readOutbox('S', pk);
      await new Promise((r) => setTimeout(r, random() * 5));
      const crashAt = random() < 0.3 ? 1 : undefined;
      let n = 0;
      const afterUpdate = () => {
        if (++n === crashAt) throw new Error('crash');
      };
      const ok = await writeRow({ ...deps.dynamo, afterUpdate }, pk, out.entries).then(
        () => true,
        (err: Error) => (err.message === 'crash' ? false : Promise.reject(err)),
      );
      await new Promise((r) => setTimeout(r, random() * 5));
      if (ok && random() < 0.8)
        await deps.buckets.ackOutbox(
          'S',
          pk,
          out.entries.map((e) => e.field),
          clock,
        );
    };
    const flusher = (async () => {
      while (!stop) await Promise.all(ROWS.map(flush));
    })();
    const answers: Array<[string, number, number, number]> = [];
    const range = explicitRange('2023-05-01', '2023-05-31');
    const querier = (async () => {
      while (!stop) {
        for (const pk of ROWS) {
          const lo = done;
          const day = await readSeries(deps, { store: 'S', pk, metrics, range, granularity: 'day' });
          const total = await readSeries(deps, { store: 'S', pk, metrics, range: 'all', granularity: 'total' });
          const hi = started;
          answers.push([`${pk} day`, lo, Number(day.totals['ViewCount']), hi], [`${pk} total`, lo, Number(total.totals['ViewCount']), hi]);
        }
      }
    })();
    await applier;
    stop = true;
    await Promise.all([folder, flusher, querier]);
    expect(answers.length).toBeGreaterThan(20);
    expect(answers.filter(([, lo, v, hi]) => v < lo || v > hi)).toEqual([]);
    // Then everything folded and flushed: DynamoDB alone holds every count, once.
    await deps.buckets.seal('S', { now: clock + 1000, minAgeMs: 0 });
    await deps.buckets.foldSealed('S', { now: clock + 1000 });
    for (const pk of ROWS) {
      const out = await deps.buckets.readOutbox('S', pk);
      await writeRow(deps.dynamo, pk, out.entries);
      await deps.buckets.ackOutbox(
        'S',
        pk,
        out.entries.map((e) => e.field),
        clock + 2000,
      );
    }
    expect(await written(deps)).toEqual(Object.fromEntries(ROWS.map((pk) => [pk, [120n, 240n]])));
    expect(await views(deps)).toEqual(Object.fromEntries(ROWS.map((pk) => [pk, [240n, 240n]])));
  });
});
