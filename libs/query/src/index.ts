export { QueryError } from './errors';
export {
  namedRange,
  explicitRange,
  resolveRange,
  clampToRetention,
  daysOf,
  monthsOf,
  MAX_RANGE_DAYS,
  type RangeQuery,
  type DateRange,
  type QueryRange,
} from './ranges';
export {
  readSeries,
  readTotals,
  resolveMetrics,
  dayKeysOf,
  type Granularity,
  type QueryDeps,
  type SeriesPoint,
  type SeriesResult,
  type MetricRef,
} from './engine';
export { coverOf, type Cell } from './cover';
export { readTop, type TopResult } from './top';
export {
  storeEntityOf,
  entityOf,
  rankedEntitiesOf,
  keyedByOf,
  plainMetricsOf,
  checkMetricName,
  ID_RULE,
  pathOfId,
  idOfRequest,
} from './rules-introspection';
export { HistoryMemo } from './history-memo';
export { evaluateSegments, type SegmentResult, type SegmentEvaluation } from './segments';
