export { QueryError } from './errors';
export { SnapshotContendedError } from '@tally/buckets';
export { namedRange, explicitRange, resolveRange, clampToRetention, retainedVisitorRange, retainedRange } from './ranges';
export { readSeries, readTotals, resolveMetrics, type Granularity, type QueryDeps, type SeriesPoint, type MetricRef } from './engine';
export { coverOf } from './cover';
export { readTop } from './top';
export {
  storeEntityOf,
  entityOf,
  rankedEntitiesOf,
  keyedByOf,
  plainMetricsOf,
  checkMetricName,
  checkCountedMetric,
  entitiesCounting,
  ID_RULE,
  pathOfId,
  idOfRequest,
  keyedByPath,
} from './rules-introspection';
export { HistoryMemo } from './history-memo';
export { evaluateSegments } from './segments';
