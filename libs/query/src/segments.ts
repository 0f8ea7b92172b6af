import type { Segment, SegmentRule } from '@tally/contracts';
import { queryItems, mergeItems, type StoredItem } from '@tally/dynamo';
import { compareDates, dayAttr, monthAttr, monthSk, parseMonthSk, TOTAL_SK, totalAttr } from '@tally/key-layout';
import { formatMetricName, fromUnits, parseMetricName } from '@tally/schema';
import { distinctMetricsOf } from './distinct';
import type { QueryDeps } from './engine';
import { readTotals, resolveMetrics } from './engine';
import { clampToRetention, daysOf, namedRange, visitorHistoryStart } from './ranges';

interface SegmentResult {
  name: string;
  matched: boolean;
  rules: Array<SegmentRule & { actual: string; matched: boolean }>;
}

export interface SegmentEvaluation {
  segments: SegmentResult[];
  cache: 'hit' | 'miss';
  dynamoRequests: number;
}

/** An item as the Redis cache of a visitor's history holds it (JSON): counters as decimal strings, no sketches. */
type CachedItem = Omit<StoredItem, 'attrs' | 'blobs'> & { attrs: Record<string, string> };

/** A JSON number as JS prints it: the shortest decimal that reads back as the same double (`1e+21`, `5e-7` too). */
const NUMBER_TEXT = /^(-?)(\d+)(?:\.(\d+))?(?:e([+-]\d+))?$/;

/**
 * Compares a count of `units` of 10^-scale (exact, any size) with a rule's threshold, exactly: -1, 0 or 1. The
 * threshold (a JSON number, so a double) counts as the decimal JS prints for it, the shortest that reads back as the
 * same double: what the client wrote whenever that has at most 15 significant digits (90071992547409.92, not the
 * double's 90071992547409.921875). It may carry more decimals than the metric's scale, or be negative. Converting the
 * count to a double instead is inexact past 2^53 units: 2^53 + 1 equals 2^53 then.
 */
export function compareToThreshold(units: bigint, scale: number, threshold: number): -1 | 0 | 1 {
  const m = NUMBER_TEXT.exec(String(threshold));
  if (!m) throw new RangeError(`not a finite number: ${threshold}`);
  const frac = m[3] ?? '';
  const digits = BigInt(m[2]! + frac) * (m[1] === '-' ? -1n : 1n);
  const exp = Number(m[4] ?? 0) - frac.length; // threshold = digits × 10^exp
  // units × 10^-scale against digits × 10^exp, both multiplied by 10^k to be integers.
  const k = Math.max(scale, -exp);
  const a = units * 10n ** BigInt(k - scale);
  const b = digits * 10n ** BigInt(exp + k);
  return a < b ? -1 : a > b ? 1 : 0;
}

const matches = (c: -1 | 0 | 1, op: SegmentRule['op']) =>
  op === '>=' ? c >= 0 : op === '>' ? c > 0 : op === '=' ? c === 0 : op === '<=' ? c <= 0 : op === '<' ? c < 0 : c !== 0;

/**
 * Evaluates segment rules for one visitor row. The visitor's DynamoDB history (every item of the row) is
 * read once per session and cached in Redis with the watermarks it was read at; each call merges it with
 * exactly the Redis counts above those watermarks (one atomic snapshot that also returns the cache). The
 * writer drops the cache in the same step that deletes applied outbox entries, and a cache fill is refused
 * when the writer acked anything since the snapshot, so a stale cache can never hide a count. A rule on a distinct
 * count of the row (UniqueProducts) is read as a series of the row reads it, not from the cached history: the writer
 * forgets the sketches it wrote before the ack that bumps the cache version, so the cached items and the live
 * sketches could together miss members in between.
 */
export async function evaluateSegments(
  deps: QueryDeps,
  req: {
    store: string;
    pk: string;
    timeZone: string;
    now: number;
    segments: Segment[];
    cacheTtlSeconds: number;
    /** The store's visitor-history retention: months before it are never counted, whatever DynamoDB still holds. */
    historyMonths?: number | undefined;
    /** The day before which a lifted limit trimmed the store's visitor history: never counted either. */
    historyTrimmedBefore?: string | undefined;
  },
): Promise<SegmentEvaluation> {
  const refs = req.segments.map((seg) => seg.rules.map((r) => resolveMetrics(deps.rules, [formatMetricName(r.metric, r.key)])[0]!));
  const distinct = distinctMetricsOf(deps.rules, req.pk, refs.flat());
  const memoKey = `${req.store}\u0000${req.pk}`;
  const clock = Date.now();
  const known = deps.historyMemo?.get(memoKey, clock);
  const [snap] = await deps.buckets.snapshot(req.store, [req.pk], true, [known?.version]);
  let items: StoredItem[];
  let cache: 'hit' | 'miss' = 'hit';
  let dynamoRequests = 0;
  // Never at '0' (no version key): a row reads '0' again once its store is deleted (every key with it) and made again,
  // so a history memoised at '0' could be the deleted store's. A version set by an ack or an erasure is unique: one
  // that had expired restarts at the clock, above every one it had.
  const remember = (its: StoredItem[]) => {
    if (snap!.cacheVersion !== '0') deps.historyMemo?.set(memoKey, snap!.cacheVersion, its, clock + req.cacheTtlSeconds * 1000, clock);
  };
  if (snap!.cache === '=' && known) items = known.items;
  else if (snap!.cache !== undefined && snap!.cache !== '=') {
    items = (JSON.parse(snap!.cache) as CachedItem[]).map((c) => ({
      ...c,
      attrs: new Map(Object.entries(c.attrs).map(([k, v]) => [k, BigInt(v)])),
    }));
    remember(items);
  } else {
    cache = 'miss';
    const q = await queryItems(deps.dynamo, req.pk, 'M', TOTAL_SK);
    items = q.items.map(({ blobs: _, ...it }) => it); // sketches are not read from the history (below)
    dynamoRequests = q.requests;
    const json = JSON.stringify(
      items.map((it) => ({
        sk: it.sk,
        wm: it.wm,
        wp: it.wp,
        spilled: it.spilled,
        attrs: Object.fromEntries([...it.attrs].map(([k, v]) => [k, v.toString()])),
      })),
    );
    if (await deps.buckets.fillCache(req.store, req.pk, snap!.cacheVersion, json, req.cacheTtlSeconds)) remember(items);
  }
  if (cache === 'hit') void deps.buckets.touchCache(req.store, req.pk, req.cacheTtlSeconds).catch(() => undefined);
  const merged = mergeItems(items, snap!.entries);
  const start = visitorHistoryStart(req, req.timeZone, req.now);
  const startMonth = start && monthSk(start.year, start.month);

  // Distinct counts: per range, readTotals of the range's distinct metrics, as readSeries answers granularity total
  // (a range clamped to the retention, years from months); a range wholly before it counts 0, as the days do.
  const asked = Map.groupBy(
    req.segments
      .flatMap((s, i) => s.rules.map((r, j) => ({ range: r.range, metric: refs[i]![j]! })))
      .filter((r) => distinct.has(r.metric.attr)),
    (r) => r.range,
  );
  const distinctByRange = new Map<SegmentRule['range'], Record<string, bigint>>();
  await Promise.all(
    [...asked].map(async ([name, list]) => {
      const range = name === 'allTime' ? 'all' : namedRange(name, req.timeZone, req.now);
      if (start && range !== 'all' && compareDates(range.to, start) < 0) return;
      const metrics = [...new Map(list.map((r) => [r.metric.attr, r.metric])).values()];
      const r = await readTotals(deps, {
        store: req.store,
        pks: [req.pk],
        metrics,
        range: clampToRetention(range, req, req.timeZone, req.now),
        costField: 'segments',
        yearsFromMonths: start !== undefined,
      });
      dynamoRequests += r.dynamoRequests;
      distinctByRange.set(name, r.rows[0]!.values);
    }),
  );

  const segments = req.segments.map((seg, i) => {
    const rules = seg.rules.map((rule, j) => {
      const metric = refs[i]![j]!;
      let actual = 0n;
      if (distinct.has(metric.attr)) actual = distinctByRange.get(rule.range)?.[metric.name] ?? 0n;
      else if (rule.range === 'allTime' && !startMonth) actual = merged.get(TOTAL_SK)?.get(totalAttr(metric.attr)) ?? 0n;
      else if (rule.range === 'allTime') {
        // Under a retention (or after a lifted one), all time is the months kept: never TOTAL, which still holds the
        // expired ones.
        for (const [sk, attrs] of merged) {
          const m = parseMonthSk(sk);
          if (m && sk >= startMonth!) actual += attrs.get(monthAttr(m.month, metric.attr)) ?? 0n;
        }
      } else {
        for (const d of daysOf(namedRange(rule.range, req.timeZone, req.now))) {
          if (start && compareDates(d, start) < 0) continue; // an expired month (DynamoDB's TTL may not have run yet)
          actual += merged.get(monthSk(d.year, d.month))?.get(dayAttr(d.doy, metric.attr)) ?? 0n;
        }
      }
      const scale = deps.rules.scaleOf(parseMetricName(metric.name).base);
      return { ...rule, actual: fromUnits(actual, scale), matched: matches(compareToThreshold(actual, scale, rule.value), rule.op) };
    });
    const matched = seg.match === 'all' ? rules.every((r) => r.matched) : rules.some((r) => r.matched);
    return { name: seg.name, matched, rules };
  });
  return { segments, cache, dynamoRequests };
}
