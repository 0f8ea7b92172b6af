import { randomUUID } from 'node:crypto';
import { EXACT_THRESHOLD } from '@tally/buckets';
import { seriesResponseSchema, totalsResponseSchema, UNIQUE_VISITORS } from '@tally/contracts';
import { formatDate, localDate, monthSk, parseMonthSk, TOTAL_SK, fromDayOfYear, dayOfYear } from '@tally/key-layout';
import { QUEUE, QUEUE_NAMES, queueShards, type RedisConnection } from '@tally/queues';
import { decimalToUnits, parseMetricName } from '@tally/schema';
import { Cluster } from 'ioredis';
import { sleep, waitFor, waitForQueuesIdle } from '@tally/testing';
import type { z } from 'zod';
import { diffCounts, scanCounters, type CounterTable, type CountsDiff, type DistinctTable, type ScannedTable } from './expected';
import type { Fleet } from './fleet';

/** KEYS matching `pattern`, on every master of a cluster. */
export async function keysEverywhere(r: RedisConnection, pattern: string): Promise<string[]> {
  if (!(r instanceof Cluster)) return r.keys(pattern);
  return (await Promise.all(r.nodes('master').map((node) => node.keys(pattern)))).flat();
}

/** What is still unwritten in Redis, per kind, over all stores. */
export async function backlog(fleet: Fleet) {
  const r = fleet.inspect;
  const out = { openBuckets: 0, sealed: 0, outboxes: 0, dirtyRows: 0 };
  for (const store of Object.keys(fleet.zones)) {
    const tag = `${fleet.prefix}:{${store}}:`;
    out.openBuckets += (await keysEverywhere(r, `${tag}r:*`)).length;
    out.sealed += await r.llen(`${tag}sealed`);
    out.outboxes += (await keysEverywhere(r, `${tag}o:*`)).length;
    out.dirtyRows += await r.zcard(`${tag}dirty`);
  }
  return out;
}

/**
 * Waits until every accepted batch is applied and every count is written: the events and dynamo-writes queues
 * idle (delayed retries included), no open or sealed bucket, no outbox, no dirty row. With `folded`, only until
 * every batch is applied and every bucket folded (flushes may still run).
 */
export async function waitForDrain(fleet: Fleet, opts: { timeoutMs?: number; folded?: boolean } = {}): Promise<void> {
  const deadline = Date.now() + (opts.timeoutMs ?? 120_000);
  const left = () => Math.max(1_000, deadline - Date.now());
  const events = queueShards(fleet.queues, QUEUE.events);
  const writes = queueShards(fleet.queues, QUEUE.dynamoWrites);
  await waitForQueuesIdle(events, { timeoutMs: left(), includeDelayed: true, intervalMs: 200 });
  await waitFor(
    async () => {
      const b = await backlog(fleet);
      if (b.openBuckets + b.sealed + (opts.folded ? 0 : b.outboxes + b.dirtyRows) > 0) return false;
      const counts = opts.folded ? [] : await Promise.all(writes.map((q) => q.getJobCounts('waiting', 'active', 'delayed', 'prioritized')));
      return counts.every((c) => Object.values(c).every((n) => n === 0));
    },
    { timeoutMs: left(), intervalMs: 250, message: opts.folded ? 'every bucket folded' : 'everything written' },
  );
  // Drained twice in a row: nothing was in flight between two looks.
  if (!opts.folded) await waitForQueuesIdle([...events, ...writes], { timeoutMs: left(), includeDelayed: true, intervalMs: 200 });
}

/** The jobs in the failed sets of every queue of the fleet (at most `max` a queue shard), with their reasons. */
export async function failedJobs(fleet: Fleet, max = 50): Promise<string[]> {
  const out: string[] = [];
  for (const name of QUEUE_NAMES)
    for (const q of queueShards(fleet.queues, name))
      for (const job of await q.getJobs(['failed'], 0, max - 1)) out.push(`${name} ${job.id}: ${job.failedReason}`);
  return out;
}

/** Scans the table and compares every counter cell with `expected`, both ways; items without wm are mismatches too. */
export async function checkTable(fleet: Fleet, expected: CounterTable, maxSamples = 20): Promise<CountsDiff & { scanned: ScannedTable }> {
  const scanned = await scanCounters(fleet.dynamo, fleet.table);
  const problems = [...scanned.withoutWatermark.map((w) => `no wm on ${w}`), ...scanned.foreign.map((f) => `non-numeric attribute ${f}`)];
  return { ...diffCounts(expected, scanned.counters, maxSamples, problems), scanned };
}

export interface QueryCheck {
  /** Values compared. */
  compared: number;
  mismatches: string[];
}

/**
 * A getter of query API answers with the store's read key, parsed with their contract; retried while the API answers
 * 429/5xx or nothing or cuts the body short; undefined (and a line in `out.mismatches`, with the error or the body)
 * when no answer came, it is not JSON, or it is outside the contract.
 */
function queryApi(fleet: Fleet, url: string, out: QueryCheck) {
  return async <T>(store: string, path: string, schema: z.ZodType<T>): Promise<T | undefined> => {
    for (let attempt = 0; ; attempt++) {
      let res: Response | undefined;
      let body = '';
      let cut = false;
      try {
        res = await fetch(`${url}${path}`, {
          headers: { authorization: `Bearer ${fleet.keys[store]!.read}` },
          signal: AbortSignal.timeout(15_000),
        });
        body = await res.text();
      } catch (err) {
        // not up, reset, timed out, the body cut short: retry
        body = `(${(err as Error).message})`;
        cut = true;
      }
      if (res?.ok && !cut) {
        let json: unknown;
        try {
          json = JSON.parse(body);
        } catch (err) {
          out.mismatches.push(
            `GET ${path} (${store}) answered ${res.status} with no JSON (${(err as Error).message}): ${body.slice(0, 200)}`,
          );
          return undefined;
        }
        const parsed = schema.safeParse(json);
        if (parsed.success) return parsed.data;
        const issue = parsed.error.issues[0]!;
        out.mismatches.push(`GET ${path} (${store}) answered outside the contract: ${issue.path.join('.')}: ${issue.message}`);
        return undefined;
      }
      if (attempt >= 30 || (res && !res.ok && res.status !== 503 && res.status !== 429 && res.status < 500)) {
        out.mismatches.push(`GET ${path} (${store}) answered ${res ? res.status : 'nothing'} ${body}`);
        return undefined;
      }
      await sleep(500);
    }
  };
}

type Table<V> = ReadonlyMap<string, ReadonlyMap<string, ReadonlyMap<string, V>>>;

/** A store's first counted day in a row of the expected table (its smallest month row's smallest day), and today. */
function days(fleet: Fleet, store: string, row: ReadonlyMap<string, ReadonlyMap<string, unknown>> | undefined, now?: number) {
  const today = localDate(now ?? Date.now(), fleet.zones[store]!);
  for (const sk of [...(row?.keys() ?? [])].sort()) {
    const m = parseMonthSk(sk);
    const ds = [...(row!.get(sk)?.keys() ?? [])].filter((a) => a.startsWith('D')).map((a) => Number(a.slice(1, 4)));
    if (m && ds.length > 0) return { from: formatDate(fromDayOfYear(m.year, Math.min(...ds))), to: formatDate(today) };
  }
  return { from: formatDate(today), to: formatDate(today) };
}

/** The cell of a series point: `yyyy-mm-dd` is `D<doy>.<attr>` of its month row, `yyyy-mm` is `M<mm>.<attr>`. */
function periodCell(period: string, attr: string): [sk: string, attr: string] {
  const [y, mo, d] = period.split('-').map(Number) as [number, number, number | undefined];
  const day = d === undefined ? `M${String(mo).padStart(2, '0')}` : `D${String(dayOfYear(y, mo, d)).padStart(3, '0')}`;
  return [monthSk(y, mo), `${day}.${attr}`];
}

/** The ids of a store's entities of `kind` in `expected`, the highest `score` of their all-time item first (ties by id). */
function top<V>(expected: Table<V>, store: string, kind: string, n: number, score: (item?: ReadonlyMap<string, V>) => number | bigint) {
  const prefix = `${store}#${kind}#`;
  return [...expected.entries()]
    .filter(([pk]) => pk.startsWith(prefix))
    .map(([pk, row]) => ({ id: pk.slice(prefix.length), n: score(row.get(TOTAL_SK)) }))
    .sort((a, b) => (b.n > a.n ? 1 : b.n < a.n ? -1 : a.id.localeCompare(b.id)))
    .slice(0, n)
    .map((x) => x.id);
}

/**
 * Asks the query API what the table should hold and compares it with `expected` exactly: for every store its day
 * and month series from its first counted day to today and its all-time totals, the all-time totals of its most
 * counted products (`products`, default 10) and the day series of a few visitors (`visitors`, default 3). Live
 * answers (DynamoDB plus Redis) must be exact at any time once every accepted batch is applied, flushes in progress
 * or not. `now`: for the store's "today" (default Date.now()).
 */
export async function checkQueryApi(
  fleet: Fleet,
  url: string,
  expected: CounterTable,
  opts: { products?: number; visitors?: number; now?: number } = {},
): Promise<QueryCheck> {
  const rules = fleet.rules;
  const out: QueryCheck = { compared: 0, mismatches: [] };
  const get = queryApi(fleet, url, out);
  const attrOf = (metric: string) => {
    const { base, sub } = parseMetricName(metric);
    return rules.attrMetric(base, sub);
  };
  const compare = (what: string, metric: string, got: unknown, want = 0n) => {
    out.compared++;
    // A sum, not one event's value: it may pass the maximum of one value.
    const r =
      got == null ? undefined : decimalToUnits(typeof got === 'number' ? got : String(got), rules.scaleOf(parseMetricName(metric).base));
    const g = r === undefined ? 0n : r.ok ? BigInt(r.units) : undefined;
    if (g !== want) out.mismatches.push(`${what} ${metric}: query API ${JSON.stringify(got)}, table ${want}`);
  };

  const seriesCheck = async (store: string, entity: string, pk: string) => {
    const row = expected.get(pk);
    const { from, to } = days(fleet, store, row, opts.now);
    for (const granularity of ['day', 'month']) {
      const q = `entity=${encodeURIComponent(entity)}&from=${from}&to=${to}&granularity=${granularity}`;
      const series = await get(store, `/v1/series?${q}`, seriesResponseSchema);
      for (const p of series?.points ?? []) {
        for (const metric of series!.metrics) {
          const [sk, attr] = periodCell(p.period, attrOf(metric));
          compare(`${store} ${entity} ${granularity} ${p.period}`, metric, p.values[metric], row?.get(sk)?.get(attr));
        }
      }
    }
    const total = await get(store, `/v1/series?entity=${encodeURIComponent(entity)}&granularity=total&range=allTime`, seriesResponseSchema);
    const item = row?.get(TOTAL_SK);
    for (const metric of total?.metrics ?? [])
      compare(`${store} ${entity} all time`, metric, total!.totals[metric], item?.get(attrOf(metric)));
  };

  const views = rules.attrMetric('ViewCount');
  for (const store of Object.keys(fleet.zones)) {
    await seriesCheck(store, 'store', store);
    // The most counted products and a few busy visitors of the store.
    const products = top(expected, store, 'product', opts.products ?? 10, (item) => item?.get(views) ?? 0n);
    if (products.length > 0) {
      const totals = await get(store, `/v1/totals?entity=product&ids=${products.join(',')}&range=allTime`, totalsResponseSchema);
      for (const item of totals?.items ?? []) {
        const want = expected.get(`${store}#product#${item.id}`)?.get(TOTAL_SK);
        for (const metric of totals!.metrics)
          compare(`${store} product ${item.id} all time`, metric, item.values[metric], want?.get(attrOf(metric)));
      }
    }
    for (const v of top(expected, store, 'visitor', opts.visitors ?? 3, (item) => item?.get(views) ?? 0n))
      await seriesCheck(store, `visitor:${v}`, `${store}#visitor#${v}`);
  }
  return out;
}

/**
 * What a run without faults answers for the union of some cells: their exact count when every cell holds at most
 * EXACT_THRESHOLD members (the cells are exact sets then), else the Redis HLL estimate of the union (PFADD of every
 * member into a scratch key: a HyperLogLog's registers, and so its count, depend on its members only).
 */
async function noFaultAnswer(redis: RedisConnection, cells: ReadonlyArray<Set<string> | undefined>): Promise<number> {
  const union = new Set<string>();
  for (const c of cells) for (const m of c ?? []) union.add(m);
  if (cells.every((c) => (c?.size ?? 0) <= EXACT_THRESHOLD)) return union.size;
  const key = `chaos-check:{uv}:${randomUUID()}`;
  const members = [...union].map((m) => Buffer.from(m, 'latin1'));
  for (let i = 0; i < members.length; i += 5_000) await redis.pfadd(key, ...members.slice(i, i + 5_000));
  const n = await redis.pfcount(key);
  await redis.del(key);
  return n;
}

/**
 * Asks the query API for UniqueVisitors after the drain and compares each answer with what a run without faults
 * gives (noFaultAnswer): every store's day series from its first day to today, the series' union and all time,
 * and the all-time count of its products with the most visitors.
 */
export async function checkUniqueVisitors(
  fleet: Fleet,
  url: string,
  expected: DistinctTable,
  opts: { products?: number; now?: number } = {},
): Promise<QueryCheck> {
  const out: QueryCheck = { compared: 0, mismatches: [] };
  const rules = fleet.rules;
  const storeMetric = rules
    .distinctOf(Object.entries(rules.rules.entities).find(([, e]) => e.key.length === 0)?.[0] ?? 'store')
    .find((d) => d.metric === UNIQUE_VISITORS);
  if (!storeMetric) return out;
  const code = storeMetric.attrMetric;
  const get = queryApi(fleet, url, out);
  const compare = async (what: string, got: unknown, cells: ReadonlyArray<Set<string> | undefined>) => {
    out.compared++;
    const want = await noFaultAnswer(fleet.inspect, cells);
    if (got !== want) out.mismatches.push(`${what} ${UNIQUE_VISITORS}: query API ${JSON.stringify(got)}, a run without faults ${want}`);
  };
  for (const store of Object.keys(fleet.zones)) {
    const row = expected.get(store);
    const { from, to } = days(fleet, store, row, opts.now);
    const series = await get(store, `/v1/series?metrics=${UNIQUE_VISITORS}&from=${from}&to=${to}&granularity=day`, seriesResponseSchema);
    if (series) {
      const cells = series.points.map((p) => {
        const [sk, attr] = periodCell(p.period, code);
        return row?.get(sk)?.get(attr);
      });
      for (const [i, p] of series.points.entries()) await compare(`${store} day ${p.period}`, p.values[UNIQUE_VISITORS], [cells[i]]);
      await compare(`${store} ${from}..${to}`, series.totals[UNIQUE_VISITORS], cells);
    }
    const all = await get(store, `/v1/series?metrics=${UNIQUE_VISITORS}&range=allTime&granularity=total`, seriesResponseSchema);
    if (all) await compare(`${store} all time`, all.totals[UNIQUE_VISITORS], [row?.get(TOTAL_SK)?.get(code)]);
    const products = top(expected, store, 'product', opts.products ?? 10, (item) => item?.get(code)?.size ?? 0);
    if (products.length === 0) continue;
    const q = `entity=product&ids=${products.join(',')}&metrics=${UNIQUE_VISITORS}&range=allTime`;
    const totals = await get(store, `/v1/totals?${q}`, totalsResponseSchema);
    for (const item of totals?.items ?? []) {
      const cell = expected.get(`${store}#product#${item.id}`)?.get(TOTAL_SK)?.get(code);
      await compare(`${store} product ${item.id} all time`, item.values[UNIQUE_VISITORS], [cell]);
    }
  }
  return out;
}
