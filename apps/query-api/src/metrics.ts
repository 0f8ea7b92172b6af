import { metricsOn } from '@tally/observability';
import type { Counter, Registry } from 'prom-client';

export interface QueryApiMetrics {
  segmentCache: Counter<'result'>;
}

export function createQueryApiMetrics(registry: Registry): QueryApiMetrics {
  const segmentCache = metricsOn(registry).counter(
    'tally_segment_cache_total',
    "Segment evaluations by visitor-history cache result: hit (the visitor's DynamoDB items were cached) or miss (read from DynamoDB).",
    ['result'],
  );
  for (const result of ['hit', 'miss']) segmentCache.inc({ result }, 0);
  return { segmentCache };
}
