import { RANK_TTL_DAYS, TopTooLargeError, type TopHistory } from '@tally/buckets';
import { MAX_TOP_DAYS } from '@tally/contracts';
import { addDays, compareDates, dayKey, formatDate, localDate, toEpochDay, type LocalDate } from '@tally/key-layout';
import { readTotals, resolveMetrics, type QueryDeps } from './engine';
import { QueryError } from './errors';
import { daysOf, type DateRange, type QueryRange } from './ranges';
import { checkMetricName, entityOf, rankedEntitiesOf } from './rules-introspection';

/** Candidates fetched from the rankings per item asked: rankings order by doubles, the answer by exact values. */
const CANDIDATES_PER_ITEM = 2;

const DAY_MS = 86_400_000;

/**
 * The oldest day a top list reads, on `now`'s day in `tz`. A day's ranking zset lives d days (the retention of the
 * aggregator that counted in it) after the last apply that counted in it, so at least until the day's start + d
 * days (an hour less across a DST change, a minute less for an event inside the clock skew): on day T the day
 * T - (d - 1) may go at the end of T, while it is read. With a day's margin the oldest day read is T - (d - 2).
 * That holds for a day every apply of which kept it at least d days: each entry (d, since) of the history says that
 * every aggregator kept the rankings at least d days since `since`, which covers the days starting a day after it
 * or later: their first apply, at most the clock skew of 23 h before the day's start, came more than an hour after it
 * (an aggregator keeping them less long says so again every 5 minutes). A day before those may have expired under a
 * shorter retention (and been re-created by a late event, or be gone): its list would be silently short, so it is
 * not read. The oldest day read is the earliest any entry allows, and no earlier than the query API's own `days`
 * allow. `limited`: the history, not `days`, set it.
 */
export function oldestTopDay(history: TopHistory, days: number, now: number, tz: string): { oldest: LocalDate; limited: boolean } {
  const today = localDate(now, tz);
  const own = addDays(today, -(days - 2));
  let kept: LocalDate | undefined;
  for (const [d, since] of history) {
    const [byAge, whole] = [addDays(today, -(d - 2)), addDays(localDate(since + DAY_MS, tz), 1)];
    const from = compareDates(whole, byAge) > 0 ? whole : byAge;
    if (!kept || compareDates(from, kept) < 0) kept = from;
  }
  return kept && compareDates(kept, own) > 0 ? { oldest: kept, limited: true } : { oldest: own, limited: false };
}

export interface TopResult {
  /** The entity as the rules name it (`store` resolved). */
  entity: string;
  /** The dates ranked. */
  range: DateRange;
  /** Highest exact value first; ties by id. */
  items: Array<{ id: string; units: bigint }>;
  dynamoRequests: number;
}

/**
 * The highest entities by an unkeyed metric over at most MAX_TOP_DAYS days. The daily rankings, which the apply
 * step updates for every bucket (the open one included), give candidates; readTotals
 * gives their exact values (DynamoDB plus every count in Redis), which order the answer. So an entity counted a
 * moment ago, still in the open bucket, is in the list, and the list agrees with the totals at any moment.
 * The rankings are kept for a while only (TOP_HISTORY_DAYS): a range starting before the oldest day whose rankings
 * are whole (oldestTopDay), in the store's time zone (`timeZone`, at `now`), is refused (QueryError on `from`).
 * So is a range whose rankings hold more than `topMaxMembers` members in all (BucketStore.top's TopTooLargeError,
 * nothing written): unioning them would hold up the Redis every store shares, so the caller is told to narrow it.
 *
 * Candidates are the first `limit * CANDIDATES_PER_ITEM` members by ranking score, equal scores by id ascending
 * (BucketStore.top): a cut inside a tie takes its lowest ids, those the answer lists first, so the exact values
 * and the id order give the true top `limit` (a smaller limit is a prefix of a larger one's list), and the rows
 * read stay `limit * CANDIDATES_PER_ITEM` however many members tie. Past 2^53 units scores are inexact: a cut there
 * brings every member scored near it too (BucketStore.top), so the exact values still order the answer, and more
 * rows are read (refused past the configured maximum, like any query, on `limit`).
 */
export async function readTop(
  deps: QueryDeps,
  req: { store: string; entity: string; metric: string; range: QueryRange; limit: number; timeZone: string; now: number },
): Promise<TopResult> {
  const { rules } = deps;
  const { name: entity, spec } = entityOf(rules, req.entity, 'entity');
  if (!spec.rank)
    throw new QueryError('entity', `entity ${entity} keeps no rankings; ranked: ${rankedEntitiesOf(rules).join(', ') || 'none'}`);
  const asked = checkMetricName(rules, req.metric, 'metric');
  if (asked.sub !== undefined) throw new QueryError('metric', 'rankings cover unkeyed metrics only');
  // A distinct count (unique visitors) is a sketch per row and day, not a counter: the apply step ranks counters only.
  if (rules.distinctOf(entity).some((d) => d.metric === asked.base))
    throw new QueryError(
      'metric',
      `rankings cover counters only; ${asked.base} is a distinct count of ${entity}, read per id with /v1/totals or /v1/series`,
    );
  const [metric] = resolveMetrics(rules, [req.metric], 'metric');
  if (req.range === 'all')
    throw new QueryError('range', `top lists cover at most ${MAX_TOP_DAYS} days, not allTime (all-time counts per id: /v1/totals)`);
  const dayKeys = daysOf(req.range).map((d) => dayKey(d));
  if (dayKeys.length > MAX_TOP_DAYS)
    throw new QueryError('range', `the range covers ${dayKeys.length} days; top lists cover at most ${MAX_TOP_DAYS}`);
  const days = deps.topReach?.days ?? RANK_TTL_DAYS;
  const history = deps.topReach ? await deps.topReach.history() : new Map([[RANK_TTL_DAYS, 0]]);
  const { oldest, limited } = oldestTopDay(history, days, req.now, req.timeZone);
  if (compareDates(req.range.from, oldest) < 0) {
    const back = toEpochDay(localDate(req.now, req.timeZone)) - toEpochDay(oldest);
    const why = limited
      ? `the aggregators kept the daily rankings of earlier days less than ${days} days: their TOP_HISTORY_DAYS is or was lower, or was raised lately`
      : `the daily rankings are kept ${days} days`;
    throw new QueryError(
      'from',
      `top lists reach back ${back} days, to ${formatDate(oldest)} (${why}), not to ${formatDate(req.range.from)}`,
    );
  }

  let candidates: Array<{ member: string }>;
  try {
    candidates = await deps.buckets.top(req.store, entity, metric!.attr, dayKeys, req.limit * CANDIDATES_PER_ITEM, deps.topMaxMembers);
  } catch (err) {
    if (!(err instanceof TopTooLargeError)) throw err;
    throw new QueryError(
      'from',
      `the daily rankings of ${formatDate(req.range.from)} to ${formatDate(req.range.to)} hold ${err.members} ${entity} ids (summed over the days), more than the ${err.maxMembers} one top list ranks at once (TOP_MAX_MEMBERS): narrow the range (a later from, or a shorter named range)`,
    );
  }
  const ids = candidates.map((c) => c.member);
  if (ids.length === 0) return { entity, range: req.range, items: [], dynamoRequests: 0 };
  const exact = await readTotals(deps, {
    store: req.store,
    pks: ids.map((id) => rules.pkOf(req.store, entity, [id])),
    metrics: [metric!],
    range: req.range,
    costField: 'limit',
  });
  const items = exact.rows
    .map((row, i) => ({ id: ids[i]!, units: row.values[metric!.name]! }))
    .sort((a, b) => (a.units === b.units ? (a.id < b.id ? -1 : a.id > b.id ? 1 : 0) : a.units > b.units ? -1 : 1))
    .slice(0, req.limit);
  return { entity, range: req.range, items, dynamoRequests: exact.dynamoRequests };
}
