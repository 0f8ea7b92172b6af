import { Counter, Histogram, type Registry } from 'prom-client';

/** `tally_http_request_duration_seconds{route,method,status_code}`, shared by the HTTP apps. */
export function createHttpDurationHistogram(registry: Registry): Histogram<'route' | 'method' | 'status_code'> {
  // A second app on the same registry (tests build several) shares the one histogram.
  const existing = registry.getSingleMetric('tally_http_request_duration_seconds');
  if (existing) return existing as Histogram<'route' | 'method' | 'status_code'>;
  return new Histogram({
    name: 'tally_http_request_duration_seconds',
    help: 'HTTP request duration by route template, method and status code.',
    labelNames: ['route', 'method', 'status_code'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
}

/** `tally_http_rate_limited_total{route}`: requests refused with 429 by a store's request rate limit (registerStoreRateLimit). */
export function createRateLimitedCounter(registry: Registry): Counter<'route'> {
  const existing = registry.getSingleMetric('tally_http_rate_limited_total');
  if (existing) return existing as Counter<'route'>;
  return new Counter({
    name: 'tally_http_rate_limited_total',
    help: 'Requests refused with 429 because their store was over its request rate limit, by route template.',
    labelNames: ['route'],
    registers: [registry],
  });
}

/**
 * `tally_key_lookups_throttled_total`: API keys answered 503 without a DynamoDB lookup (not cached as existing, and the
 * process's UNKNOWN_KEY_LOOKUPS_PER_SECOND spent), for the tenant directory's onUnknownKeyLookupRefused.
 */
export function createKeyLookupsThrottledCounter(registry: Registry): Counter {
  const existing = registry.getSingleMetric('tally_key_lookups_throttled_total');
  if (existing) return existing as Counter;
  return new Counter({
    name: 'tally_key_lookups_throttled_total',
    help: 'API keys answered 503 without a DynamoDB lookup: not cached as existing, and UNKNOWN_KEY_LOOKUPS_PER_SECOND was spent.',
    registers: [registry],
  });
}
