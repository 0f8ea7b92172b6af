import { Counter, type Registry } from 'prom-client';

export interface QueryApiMetrics {
  segmentCache: Counter<'result'>;
}

export function createQueryApiMetrics(registry: Registry): QueryApiMetrics {
  const segmentCache = new Counter({
    name: 'tally_segment_cache_total',
    help: "Segment evaluations by visitor-history cache result: hit (the visitor's DynamoDB items were cached) or miss (read from DynamoDB).",
    labelNames: ['result'],
    registers: [registry],
  });
  for (const result of ['hit', 'miss']) segmentCache.inc({ result }, 0);
  return {
    segmentCache,
  };
}
