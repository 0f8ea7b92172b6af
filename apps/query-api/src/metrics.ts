import { Counter, Histogram, type Registry } from 'prom-client';

export interface QueryApiMetrics {
  httpDuration: Histogram<'route' | 'method' | 'status_code'>;
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
    httpDuration: new Histogram({
      name: 'tally_http_request_duration_seconds',
      help: 'HTTP request duration by route template, method and status code.',
      labelNames: ['route', 'method', 'status_code'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    segmentCache,
  };
}
