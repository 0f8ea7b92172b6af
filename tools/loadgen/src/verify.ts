import { randomUUID } from 'node:crypto';
import { EXACT_THRESHOLD } from '@tally/buckets';
import { seriesResponseSchema, totalsResponseSchema, UNIQUE_VISITORS } from '@tally/contracts';
import { formatDate, localDate, monthSk, parseMonthSk, TOTAL_SK, fromDayOfYear, dayOfYear } from '@tally/key-layout';
import { QUEUE, queueShards, type RedisConnection } from '@tally/queues';
import { decimalToUnits, parseMetricName } from '@tally/schema';
import { Cluster } from 'ioredis';
import { waitFor, waitForQueuesIdle } from '@tally/testing';
import type { z } from 'zod';
import {
  diffCounts,
  expectedCounts,
  scanCounters,
  type CounterTable,
  type CountsDiff,
  type DistinctTable,
  type ScannedTable,
  type StoreEvents,
} from './expected';
import type { Fleet } from './fleet';

/** What is still unwritten in Redis, per kind, over all stores. */
export interface Backlog {
  openBuckets: number;
  sealed: number;
  outboxes: number;
  dirtyRows: number;
}

/** KEYS matching `pattern`, on every master of a cluster. */
export async function keysEverywhere(r: RedisConnection, pattern: string): Promise<string[]> {
  if (!(r instanceof Cluster)) return r.keys(pattern);
  return (await Promise.all(r.nodes('master').map((node) => node.keys(pattern)))).flat();
}

export async function backlog(fleet: Fleet): Promise<Backlog> {
  const r = fleet.inspect;
  const out: Backlog = { openBuckets: 0, sealed: 0, outboxes: 0, dirtyRows: 0 };
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
 * idle (delayed retries included), no open or sealed bucket, no outbox, no dirty row.
 */
export async function waitForDrain(fleet: Fleet, opts: { timeoutMs?: number; onWait?: (b: Backlog) => void } = {}): Promise<void> {
  const deadline = Date.now() + (opts.timeoutMs ?? 120_000);
  const left = () => Math.max(1_000, deadline - Date.now());
  const events = queueShards(fleet.queues, QUEUE.events);
  const writes = queueShards(fleet.queues, QUEUE.dynamoWrites);
  await waitForQueuesIdle(events, { timeoutMs: left(), includeDelayed: true, intervalMs: 200 });
  let last: Backlog | undefined;
  await waitFor(
    async () => {
      const b = await backlog(fleet);
      last = b;
      opts.onWait?.(b);
      if (b.openBuckets + b.sealed + b.outboxes + b.dirtyRows > 0) return false;
      const counts = await Promise.all(writes.map((q) => q.getJobCounts('waiting', 'active', 'delayed', 'prioritized')));
      return counts.every((c) => Object.values(c).every((n) => n === 0));
    },
    { timeoutMs: left(), intervalMs: 250, message: `everything written (last backlog ${JSON.stringify(last)})` },
  );
  // Drained twice in a row: nothing was in flight between two looks.
  await waitForQueuesIdle([...events, ...writes], { timeoutMs: left(), includeDelayed: true, intervalMs: 200 });
}

export interface TableCheck extends CountsDiff {
  scanned: ScannedTable;
}

/** Scans the table and compares every counter cell with `expected`, both ways; items without wm are mismatches too. */
export async function checkTable(fleet: Fleet, expected: CounterTable, maxSamples = 20): Promise<TableCheck> {
  const scanned = await scanCounters(fleet.dynamo, fleet.table);
  const diff = diffCounts(expected, scanned.counters, maxSamples);
  for (const w of scanned.withoutWatermark) {
    diff.mismatches++;
    if (diff.samples.length < maxSamples) diff.samples.push(`no wm on ${w}`);
  }
  for (const f of scanned.foreign) {
    diff.mismatches++;
    if (diff.samples.length < maxSamples) diff.samples.push(`non-numeric attribute ${f}`);
  }
  return { ...diff, scanned };
}

/** Waits until everything is written (waitForDrain), then checkTable against the expected counts of `accepted`. */
export async function checkCounts(fleet: Fleet, accepted: Iterable<StoreEvents>, timeoutMs = 300_000): Promise<TableCheck> {
  await waitForDrain(fleet, { timeoutMs });
  return checkTable(fleet, expectedCounts(accepted, fleet.rules, fleet.zones));
}

export interface QueryCheckOptions {
  /** Products per store whose all-time totals are compared. Default 10 (the most counted). */
  products?: number;
  /** Visitors per store whose day series are compared. Default 3. */
  visitors?: number;
  /** Now, for the store's "today" (default Date.now()). */
  now?: number;
}

export interface QueryCheck {
  /** Values compared. */
  compared: number;
  mismatches: string[];
  requests: number;
}

/** A getter of query API answers with the store's read key, parsed with their contract; retried while the API answers
 * 429/5xx or nothing; undefined (and a line in `out.mismatches`) when no answer came or it is outside the contract. */
function queryApi(fleet: Fleet, url: string, out: { mismatches: string[]; requests?: number }) {
  return async <T>(store: string, path: string, schema: z.ZodType<T>): Promise<T | undefined> => {
    for (let attempt = 0; ; attempt++) {
      if (out.requests !== undefined) out.requests++;
      let res: Response | undefined;
      try {
        res = await fetch(`${url}${path}`, {
          headers: { authorization: `Bearer ${fleet.keys[store]!.read}` },
          signal: AbortSignal.timeout(15_000),
        });
        if (res.ok) {
          const parsed = schema.safeParse(await res.json());
          if (parsed.success) return parsed.data;
          const issue = parsed.error.issues[0]!;
          out.mismatches.push(`GET ${path} (${store}) answered outside the contract: ${issue.path.join('.')}: ${issue.message}`);
          return undefined;
        }
      } catch {
        // not up, reset, timed out: retry
      }
      if (attempt >= 30 || (res && res.status !== 503 && res.status !== 429 && res.status < 500)) {
        out.mismatches.push(`GET ${path} (${store}) answered ${res ? `${res.status} ${await res.text().catch(() => '')}` : 'nothing'}`);
        return undefined;
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  };
}

/** The first day of a row of the expected table: its smallest month row's smallest day attribute. */
function firstDay(row: ReadonlyMap<string, ReadonlyMap<string, unknown>> | undefined) {
  for (const sk of [...(row?.keys() ?? [])].sort()) {
    const m = parseMonthSk(sk);
    const days = [...(row!.get(sk)?.keys() ?? [])].filter((a) => a.startsWith('D')).map((a) => Number(a.slice(1, 4)));
    if (m && days.length > 0) return fromDayOfYear(m.year, Math.min(...days));
  }
  return undefined;
}

/** The day attribute of a series point `yyyy-mm-dd`: its month row and `D<doy>.<attr>`. */
function dayCell(period: string, attr: string): [sk: string, attr: string] {
  const [y, mo, d] = period.split('-').map(Number) as [number, number, number];
  return [monthSk(y, mo), `D${String(dayOfYear(y, mo, d)).padStart(3, '0')}.${attr}`];
}

/**
 * Asks the query API what the table should hold and compares it with `expected` exactly: for every store its day
 * and month series from its first counted day to today and its all-time totals, the all-time totals of its most
 * counted products and the day series of a few visitors. Live answers (DynamoDB plus Redis) must be exact at any
 * time once every accepted batch is applied, flushes in progress or not.
 */
export async function checkQueryApi(fleet: Fleet, url: string, expected: CounterTable, opts: QueryCheckOptions = {}): Promise<QueryCheck> {
  const rules = fleet.rules;
  const out: QueryCheck = { compared: 0, mismatches: [], requests: 0 };
  const get = queryApi(fleet, url, out);
  const units = (metric: string, v: unknown): bigint | undefined => {
    if (v === undefined || v === null) return 0n;
    // A sum, not one event's value: it may pass the maximum of one value.
    const r = decimalToUnits(typeof v === 'number' ? v : String(v), rules.scaleOf(parseMetricName(metric).base));
    return r.ok ? BigInt(r.units) : undefined;
  };
  const compare = (what: string, metric: string, got: unknown, want: bigint | undefined) => {
    out.compared++;
    const g = units(metric, got);
    const w = want ?? 0n;
    if (g !== w) out.mismatches.push(`${what} ${metric}: query API ${JSON.stringify(got)}, table ${w}`);
  };
  const attrOf = (metric: string) => {
    const { base, sub } = parseMetricName(metric);
    return rules.attrMetric(base, sub);
  };

  const seriesCheck = async (store: string, entity: string, pk: string) => {
    const row = expected.get(pk);
    const first = firstDay(row);
    const today = localDate(opts.now ?? Date.now(), fleet.zones[store]!);
    const from = formatDate(first ?? today);
    const to = formatDate(today);
    const q = `entity=${encodeURIComponent(entity)}&from=${from}&to=${to}`;
    const day = await get(store, `/v1/series?${q}&granularity=day`, seriesResponseSchema);
    if (day) {
      for (const p of day.points) {
        for (const metric of day.metrics) {
          const [sk, attr] = dayCell(p.period, attrOf(metric));
          compare(`${store} ${entity} day ${p.period}`, metric, p.values[metric], row?.get(sk)?.get(attr));
        }
      }
    }
    const month = await get(store, `/v1/series?${q}&granularity=month`, seriesResponseSchema);
    if (month) {
      for (const p of month.points) {
        const [y, mo] = p.period.split('-').map(Number) as [number, number];
        const item = row?.get(monthSk(y, mo));
        for (const metric of month.metrics) {
          compare(
            `${store} ${entity} month ${p.period}`,
            metric,
            p.values[metric],
            item?.get(`M${String(mo).padStart(2, '0')}.${attrOf(metric)}`),
          );
        }
      }
    }
    const total = await get(store, `/v1/series?entity=${encodeURIComponent(entity)}&granularity=total&range=allTime`, seriesResponseSchema);
    if (total) {
      const item = row?.get(TOTAL_SK);
      for (const metric of total.metrics) compare(`${store} ${entity} all time`, metric, total.totals[metric], item?.get(attrOf(metric)));
    }
  };

  for (const store of Object.keys(fleet.zones)) {
    await seriesCheck(store, 'store', store);
    // The most counted products and a few busy visitors of the store.
    const rank = (kind: string, attr: string) =>
      [...expected.entries()]
        .filter(([pk]) => pk.startsWith(`${store}#${kind}#`))
        .map(([pk, row]) => ({ id: pk.slice(`${store}#${kind}#`.length), n: row.get(TOTAL_SK)?.get(attr) ?? 0n }))
        .sort((a, b) => (b.n > a.n ? 1 : b.n < a.n ? -1 : a.id.localeCompare(b.id)));
    const products = rank('product', rules.attrMetric('ViewCount')).slice(0, opts.products ?? 10);
    if (products.length > 0) {
      const totals = await get(
        store,
        `/v1/totals?entity=product&ids=${products.map((p) => p.id).join(',')}&range=allTime`,
        totalsResponseSchema,
      );
      if (totals) {
        for (const item of totals.items) {
          const want = expected.get(`${store}#product#${item.id}`)?.get(TOTAL_SK);
          for (const metric of totals.metrics)
            compare(`${store} product ${item.id} all time`, metric, item.values[metric], want?.get(attrOf(metric)));
        }
      }
    }
    for (const v of rank('visitor', rules.attrMetric('ViewCount')).slice(0, opts.visitors ?? 3)) {
      await seriesCheck(store, `visitor:${v.id}`, `${store}#visitor#${v.id}`);
    }
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

export interface DistinctCheck {
  compared: number;
  mismatches: string[];
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
): Promise<DistinctCheck> {
  const out: DistinctCheck = { compared: 0, mismatches: [] };
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
    const today = localDate(opts.now ?? Date.now(), fleet.zones[store]!);
    const first = firstDay(row) ?? today;
    const range = `${formatDate(first)}..${formatDate(today)}`;
    const series = await get(
      store,
      `/v1/series?metrics=${UNIQUE_VISITORS}&from=${formatDate(first)}&to=${formatDate(today)}&granularity=day`,
      seriesResponseSchema,
    );
    if (series) {
      const cells = series.points.map((p) => {
        const [sk, attr] = dayCell(p.period, code);
        return row?.get(sk)?.get(attr);
      });
      for (const [i, p] of series.points.entries()) await compare(`${store} day ${p.period}`, p.values[UNIQUE_VISITORS], [cells[i]]);
      await compare(`${store} ${range}`, series.totals[UNIQUE_VISITORS], cells);
    }
    const all = await get(store, `/v1/series?metrics=${UNIQUE_VISITORS}&range=allTime&granularity=total`, seriesResponseSchema);
    if (all) await compare(`${store} all time`, all.totals[UNIQUE_VISITORS], [row?.get(TOTAL_SK)?.get(code)]);
    const products = [...expected.entries()]
      .filter(([pk]) => pk.startsWith(`${store}#product#`))
      .map(([pk, r]) => ({ id: pk.slice(`${store}#product#`.length), cell: r.get(TOTAL_SK)?.get(code) }))
      .sort((a, b) => (b.cell?.size ?? 0) - (a.cell?.size ?? 0) || a.id.localeCompare(b.id))
      .slice(0, opts.products ?? 10);
    if (products.length === 0) continue;
    const ids = products.map((p) => p.id).join(',');
    const totals = await get(store, `/v1/totals?entity=product&ids=${ids}&metrics=${UNIQUE_VISITORS}&range=allTime`, totalsResponseSchema);
    for (const [i, item] of (totals?.items ?? []).entries())
      await compare(`${store} product ${item.id} all time`, item.values[UNIQUE_VISITORS], [products[i]!.cell]);
  }
  return out;
}
