export { QueryError } from './errors';
export { NAMED_RANGES, namedRange, explicitRange, daysOf, monthsOf, MAX_RANGE_DAYS, type NamedRange, type DateRange } from './ranges';
export { readSeries, readTotals, resolveMetrics, dayKeysOf, type Granularity, type QueryDeps, type SeriesPoint, type SeriesResult, type MetricRef } from './engine';
export { HistoryMemo } from './history-memo';
export { evaluateSegments, segmentSchema, segmentRuleSchema, type Segment, type SegmentRule, type SegmentResult, type SegmentEvaluation } from './segments';
