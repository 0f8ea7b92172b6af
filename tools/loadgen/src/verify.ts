import { randomUUID } from 'node:crypto';
import { EXACT_THRESHOLD } from '@tally/buckets';
import { seriesResponseSchema, totalsResponseSchema, UNIQUE_VISITORS } from '@tally/contracts';
import { addDays, formatDate, localDate, monthSk, parseDate, parseMonthSk, TOTAL_SK, fromDayOfYear, dayOfYear } from '@tally/key-layout';
import { plainMetricsOf, storeEntityOf } from '@tally/query';
import { QUEUE, QUEUE_NAMES, queueShards, type RedisConnection } from '@tally/queues';
import { decimalToUnits, parseMetricName } from '@tally/schema';
import { Cluster } from 'ioredis';
import { sleep, waitFor, waitForQueuesIdle } from '@tally/testing';
import type { z } from 'zod';
import { diffCounts, expectedCounts, expectedDistinct, scanCounters } from './expected';
import type { CounterTable, DistinctTable, StoreEvents } from './expected';
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
 * Waits until every accepted batch is applied and every count written: the queues idle (delayed retries included), no
 * open or sealed bucket, outbox or dirty row. With `folded`, only until every bucket is folded (flushes may still run).
 */
export async function waitForDrain(fleet: Fleet, opts: { timeoutMs?: number; folded?: boolean } = {}): Promise<void> {
  const deadline = Date.now() + (opts.timeoutMs ?? 120_000);
  const left = () => Math.max(1_000, deadline - Date.now());
  const events = queueShards(fleet.queues, QUEUE.events);
  const writes = queueShards(fleet.queues, QUEUE.dynamoWrites);
  await waitForQueuesIdle(events, { timeoutMs: left(), includeDelayed: true, intervalMs: 200 });
  await waitFor(
    async () => {
      // The queue first: backlog's KEYS scan every key, and would take Redis time from the flushes all the drain long.
      const counts = opts.folded ? [] : await Promise.all(writes.map((q) => q.getJobCounts('waiting', 'active', 'delayed', 'prioritized')));
      if (!counts.every((c) => Object.values(c).every((n) => n === 0))) return false;
      const b = await backlog(fleet);
      return b.openBuckets + b.sealed + (opts.folded ? 0 : b.outboxes + b.dirtyRows) === 0;
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
export async function checkTable(fleet: Fleet, expected: CounterTable, maxSamples = 20) {
  const scanned = await scanCounters(fleet.dynamo, fleet.table);
  const problems = [...scanned.withoutWatermark.map((w) => `no wm on ${w}`), ...scanned.foreign.map((f) => `non-numeric attribute ${f}`)];
  return { ...diffCounts(expected, scanned.counters, maxSamples, problems), scanned };
}

export interface QueryCheck {
  compared: number;
  /** Every difference, one line each: a value, or a point, item or metric the answer lacks or has beyond those asked. */
  mismatches: string[];
  /** checkUniqueVisitors: of `compared`, the distinct counts that are HyperLogLog estimates (see noFaultAnswer). */
  estimates?: number;
}

type Row<V> = ReadonlyMap<string, ReadonlyMap<string, V>>;

/**
 * Query API answers (with the store's read key) parsed with their contract, retried on 429/5xx or no answer; else
 * undefined and a line in `out.mismatches`. Metrics, points and ids are matched with those it must list (matchKeys).
 */
function queryApi(fleet: Fleet, url: string, out: QueryCheck, now?: number) {
  const get = async <T>(store: string, path: string, schema: z.ZodType<T>): Promise<T | undefined> => {
    const refuse = (why: string) => void out.mismatches.push(`GET ${path} (${store}) ${why}`);
    const headers = { authorization: `Bearer ${fleet.keys[store]!.read}` };
    for (let attempt = 0; ; attempt++) {
      let res: Response | undefined;
      let body: string | undefined;
      let error = '';
      try {
        res = await fetch(`${url}${path}`, { headers, signal: AbortSignal.timeout(15_000) });
        body = await res.text();
      } catch (err) {
        error = `(${(err as Error).message})`; // not up, reset, timed out, the body cut short: retried
      }
      if (res?.ok && body !== undefined) {
        let json: unknown;
        try {
          json = JSON.parse(body);
        } catch (err) {
          return refuse(`answered ${res.status} with no JSON (${(err as Error).message}): ${body.slice(0, 200)}`);
        }
        const parsed = schema.safeParse(json);
        const issue = parsed.error?.issues[0];
        return issue ? refuse(`answered outside the contract: ${issue.path.join('.')}: ${issue.message}`) : parsed.data;
      }
      if (attempt >= 30 || (res && !res.ok && res.status !== 503 && res.status !== 429 && res.status < 500))
        return refuse(`answered ${res ? res.status : 'nothing'} ${body ?? error}`);
      await sleep(500);
    }
  };
  /** The entries of `got` with the `expected` keys, in their order; a line in `out.mismatches` for each key missing, extra or twice. */
  const matchKeys = <T>(what: string, noun: string, expected: readonly string[], got: readonly T[], keyOf: (t: T) => string) => {
    const byKey = new Map<string, T>();
    for (const entry of got) {
      const key = keyOf(entry);
      if (byKey.has(key)) out.mismatches.push(`${what}: ${noun} ${key} answered twice`);
      else if (!expected.includes(key)) out.mismatches.push(`${what}: ${noun} ${key} answered, not expected`);
      else byKey.set(key, entry);
    }
    return expected.flatMap((key): Array<[string, T]> => {
      const entry = byKey.get(key);
      if (entry === undefined) out.mismatches.push(`${what}: ${noun} ${key} missing from the answer`);
      return entry === undefined ? [] : [[key, entry]];
    });
  };
  return {
    /** The series of `query` by `granularity` from the first counted day of `row` to today, or all time; `found`: the points it must have. */
    async series(store: string, what: string, query: string, metrics: readonly string[], granularity: Granularity, row?: Row<unknown>) {
      const { from, to } = days(fleet, store, row, now);
      const [label, range, periods] =
        granularity === 'total'
          ? [`${what} all time`, 'range=allTime', ['total']]
          : [`${what} ${granularity} ${from}..${to}`, `from=${from}&to=${to}`, periodsOf(from, to, granularity)];
      const series = await get(store, `/v1/series?${query}&${range}&granularity=${granularity}`, seriesResponseSchema);
      if (!series) return undefined;
      matchKeys(label, 'metric', metrics, series.metrics, (m) => m);
      return { ...series, from, to, periods, found: matchKeys(label, 'point', periods, series.points, (p) => p.period) };
    },
    /** The expected items of an answer of the all-time totals of a store's products `ids` (`query`: more of its query). */
    async totals(store: string, ids: readonly string[], metrics: readonly string[], query = '') {
      if (ids.length === 0) return [];
      const totals = await get(store, `/v1/totals?entity=product&ids=${ids.join(',')}${query}&range=allTime`, totalsResponseSchema);
      if (!totals) return [];
      matchKeys(`${store} product totals`, 'metric', metrics, totals.metrics, (m) => m);
      return matchKeys(`${store} product totals`, 'id', ids, totals.items, (x) => x.id);
    },
  };
}

type Granularity = 'day' | 'month' | 'total';
type Table<V> = ReadonlyMap<string, Row<V>>;

/** A store's first counted day in a row of the expected table (its smallest month row's smallest day), and today. */
function days(fleet: Fleet, store: string, row: Row<unknown> | undefined, now?: number) {
  const to = formatDate(localDate(now ?? Date.now(), fleet.zones[store]!));
  for (const sk of [...(row?.keys() ?? [])].sort()) {
    const m = parseMonthSk(sk);
    const ds = [...(row!.get(sk)?.keys() ?? [])].filter((a) => a.startsWith('D')).map((a) => Number(a.slice(1, 4)));
    if (m && ds.length > 0) return { from: formatDate(fromDayOfYear(m.year, Math.min(...ds))), to };
  }
  return { from: to, to };
}

/** Every period of a series from `from` to `to` (YYYY-MM-DD): each day, or each calendar month it touches (yyyy-mm). */
function periodsOf(from: string, to: string, granularity: 'day' | 'month'): string[] {
  const out: string[] = [];
  for (let d = parseDate(from)!; formatDate(d) <= to; d = addDays(d, 1)) {
    const period = granularity === 'day' ? formatDate(d) : formatDate(d).slice(0, 7);
    if (out.at(-1) !== period) out.push(period);
  }
  return out;
}

/** The cell of `row` a series point reads: `yyyy-mm-dd` is `D<doy>.<attr>` of its month row, `yyyy-mm` is `M<mm>.<attr>`. */
function periodCell<V>(row: Row<V> | undefined, period: string, attr: string): V | undefined {
  const [y, mo, d] = period.split('-').map(Number) as [number, number, number | undefined];
  const day = d === undefined ? `M${String(mo).padStart(2, '0')}` : `D${String(dayOfYear(y, mo, d)).padStart(3, '0')}`;
  return row?.get(monthSk(y, mo))?.get(`${day}.${attr}`);
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

type QueryOptions = { products?: number; visitors?: number; now?: number };
/** An answer's values by metric (a series point, a series' totals, a totals item), and those it says are estimates. */
type Answer = { values: Record<string, unknown>; estimated?: readonly string[] };
/** The sketch cells (their members) an answer of UniqueVisitors reads. */
type Cells = ReadonlyArray<Set<string> | undefined>;

/**
 * Compares the query API's answers with `expected` exactly: each store's day, month and all-time series, the all-time
 * totals of its most counted products (`products`, default 10) and the series of a few visitors (`visitors`, default 3).
 * Live answers (DynamoDB plus Redis) are exact once every accepted batch is applied, flushes in progress or not.
 */
export async function checkQueryApi(fleet: Fleet, url: string, expected: CounterTable, opts: QueryOptions = {}) {
  const rules = fleet.rules;
  const out: QueryCheck = { compared: 0, mismatches: [] };
  const api = queryApi(fleet, url, out, opts.now);
  /** Every metric the entity's answers must have, each with its value in `values` (a value missing is a mismatch). */
  const compareAll = (what: string, metrics: readonly string[], values: Answer['values'], want: (attr: string) => bigint | undefined) => {
    for (const metric of metrics) {
      const { base, sub } = parseMetricName(metric);
      const w = want(rules.attrMetric(base, sub)) ?? 0n;
      if (!Object.hasOwn(values, metric)) {
        out.mismatches.push(`${what} ${metric}: no value in the answer, table ${w}`);
        continue;
      }
      out.compared++;
      const got = values[metric];
      // A sum, not one event's value: it may pass the maximum of one value.
      const r = got == null ? undefined : decimalToUnits(typeof got === 'number' ? got : String(got), rules.scaleOf(base));
      const g = r === undefined ? 0n : r.ok ? BigInt(r.units) : undefined;
      if (g !== w) out.mismatches.push(`${what} ${metric}: query API ${JSON.stringify(got)}, table ${w}`);
    }
  };

  const seriesCheck = async (store: string, entity: string, entityName: string, pk: string) => {
    const row = expected.get(pk);
    const metrics = plainMetricsOf(rules, entityName);
    const [what, query] = [`${store} ${entity}`, `entity=${encodeURIComponent(entity)}`];
    for (const granularity of ['day', 'month'] as const)
      for (const [period, p] of (await api.series(store, what, query, metrics, granularity, row))?.found ?? [])
        compareAll(`${what} ${granularity} ${period}`, metrics, p.values, (attr) => periodCell(row, period, attr));
    const total = await api.series(store, what, query, metrics, 'total', row);
    if (total) compareAll(`${what} all time`, metrics, total.totals, (attr) => row?.get(TOTAL_SK)?.get(attr));
  };

  const views = rules.attrMetric('ViewCount');
  const byViews = (item?: ReadonlyMap<string, bigint>) => item?.get(views) ?? 0n;
  const productMetrics = plainMetricsOf(rules, 'product');
  for (const store of Object.keys(fleet.zones)) {
    await seriesCheck(store, 'store', storeEntityOf(rules) ?? 'store', store);
    // The most counted products and a few busy visitors of the store.
    for (const [id, item] of await api.totals(store, top(expected, store, 'product', opts.products ?? 10, byViews), productMetrics)) {
      const want = expected.get(`${store}#product#${id}`)?.get(TOTAL_SK);
      compareAll(`${store} product ${id} all time`, productMetrics, item.values, (attr) => want?.get(attr));
    }
    for (const v of top(expected, store, 'visitor', opts.visitors ?? 3, byViews))
      await seriesCheck(store, `visitor:${v}`, 'visitor', `${store}#visitor#${v}`);
  }
  return out;
}

/**
 * What a run without faults answers for the union of some cells: its exact count while every cell holds at most
 * EXACT_THRESHOLD members, else Redis's HyperLogLog estimate of it (whose registers depend on its members only).
 */
async function noFaultAnswer(redis: RedisConnection, cells: Cells): Promise<number> {
  const union = new Set(cells.flatMap((c) => [...(c ?? [])]));
  if (cells.every((c) => (c?.size ?? 0) <= EXACT_THRESHOLD)) return union.size;
  const key = `chaos-check:{uv}:${randomUUID()}`;
  const members = [...union].map((m) => Buffer.from(m, 'latin1'));
  for (let i = 0; i < members.length; i += 5_000) await redis.pfadd(key, ...members.slice(i, i + 5_000));
  const n = await redis.pfcount(key);
  await redis.del(key);
  return n;
}

/**
 * Compares the query API's UniqueVisitors (after the drain) with noFaultAnswer, and whether each says it is an estimate:
 * each store's day series, its union and all time, and the all-time count of its products with the most visitors.
 */
export async function checkUniqueVisitors(fleet: Fleet, url: string, expected: DistinctTable, opts: { now?: number } = {}) {
  const out: QueryCheck = { compared: 0, mismatches: [], estimates: 0 };
  const storeMetric = fleet.rules.distinctOf(storeEntityOf(fleet.rules) ?? 'store').find((d) => d.metric === UNIQUE_VISITORS);
  if (!storeMetric) return out;
  const code = storeMetric.attrMetric;
  const api = queryApi(fleet, url, out, opts.now);
  const compare = async (what: string, answer: Answer, cells: Cells) => {
    const estimate = cells.some((c) => (c?.size ?? 0) > EXACT_THRESHOLD);
    if (!Object.hasOwn(answer.values, UNIQUE_VISITORS))
      return void out.mismatches.push(`${what} ${UNIQUE_VISITORS}: no value in the answer`);
    out.compared++;
    if (estimate) out.estimates!++;
    const got = answer.values[UNIQUE_VISITORS];
    const want = await noFaultAnswer(fleet.inspect, cells);
    if (got !== want) out.mismatches.push(`${what} ${UNIQUE_VISITORS}: query API ${JSON.stringify(got)}, a run without faults ${want}`);
    const said = answer.estimated?.includes(UNIQUE_VISITORS) ?? false;
    if (said !== estimate)
      out.mismatches.push(
        `${what} ${UNIQUE_VISITORS}: the query API says ${said ? 'an estimate' : 'exact'}, a run without faults ${estimate ? `estimates (a sketch past ${EXACT_THRESHOLD})` : 'is exact'}`,
      );
  };
  const [uv, query] = [[UNIQUE_VISITORS], `metrics=${UNIQUE_VISITORS}`];
  for (const store of Object.keys(fleet.zones)) {
    const row = expected.get(store);
    const series = await api.series(store, store, query, uv, 'day', row);
    if (series) {
      for (const [period, p] of series.found) await compare(`${store} day ${period}`, p, [periodCell(row, period, code)]);
      // Every day's cell, those of days the answer lacks too: the union of the range is over all of them.
      const cells = series.periods.map((period) => periodCell(row, period, code));
      await compare(`${store} ${series.from}..${series.to}`, { values: series.totals, estimated: series.estimated }, cells);
    }
    const all = await api.series(store, store, query, uv, 'total', row);
    if (all) await compare(`${store} all time`, { values: all.totals, estimated: all.estimated }, [row?.get(TOTAL_SK)?.get(code)]);
    const products = top(expected, store, 'product', 10, (item) => item?.get(code)?.size ?? 0);
    for (const [id, item] of await api.totals(store, products, uv, `&metrics=${UNIQUE_VISITORS}`))
      await compare(`${store} product ${id} all time`, item, [expected.get(`${store}#product#${id}`)?.get(TOTAL_SK)?.get(code)]);
  }
  return out;
}

/** What `loadgen --fleet` and `--soak` (and the chaos run) check once everything is written: the lines to print, and whether all matched. */
export async function checkFleetCounts(fleet: Fleet, accepted: readonly StoreEvents[], maxSamples = 20) {
  const table = await checkTable(fleet, expectedCounts(accepted, fleet.rules, fleet.zones), maxSamples);
  const uv = await checkUniqueVisitors(fleet, fleet.app('query-api').url, expectedDistinct(accepted, fleet.rules, fleet.zones));
  const estimates = uv.estimates!;
  const lines = [
    `table has ${table.scanned.items} counter items, ${table.cells} cells compared, mismatches ${table.mismatches}`,
    ...table.samples.map((s) => `  ${s}`),
    `${UNIQUE_VISITORS} through the query API (${table.scanned.sketches} sketch attributes in the table): ${uv.compared} values ` +
      `compared, ${uv.compared - estimates} exact counts exactly and ${estimates} HyperLogLog estimates (a sketch read holds more ` +
      `than ${EXACT_THRESHOLD} visitors) with Redis's estimate of the expected visitors; mismatches ${uv.mismatches.length}`,
    ...uv.mismatches.slice(0, maxSamples).map((m) => `  ${m}`),
  ];
  return { ok: table.mismatches === 0 && uv.mismatches.length === 0, lines, table, uniqueVisitors: uv };
}
