import { Counter, Histogram, type CounterConfiguration, type HistogramConfiguration, type Registry } from 'prom-client';

// A second app on the same registry (tests build several) shares the one metric of each name.
const counter = <L extends string>(registry: Registry, cfg: CounterConfiguration<L>): Counter<L> =>
  (registry.getSingleMetric(cfg.name) as Counter<L> | undefined) ?? new Counter({ ...cfg, registers: [registry] });
const histogram = <L extends string>(registry: Registry, cfg: HistogramConfiguration<L>): Histogram<L> =>
  (registry.getSingleMetric(cfg.name) as Histogram<L> | undefined) ?? new Histogram({ ...cfg, registers: [registry] });

/** `tally_http_request_duration_seconds{route,method,status_code}`, shared by the HTTP apps. */
export const createHttpDurationHistogram = (registry: Registry) =>
  histogram(registry, {
    name: 'tally_http_request_duration_seconds',
    help: 'HTTP request duration by route template, method and status code.',
    labelNames: ['route', 'method', 'status_code'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  });

/**
 * `tally_http_unparsed_requests_total{status_code}`: requests Node's HTTP server refused before there was a route (400
 * malformed, 408 too slow, 417 an Expect other than 100-continue, 431 headers too large), which the duration histogram
 * never sees.
 */
export const createUnparsedCounter = (registry: Registry) =>
  counter(registry, {
    name: 'tally_http_unparsed_requests_total',
    help: 'Requests refused by the HTTP server before routing (400 malformed, 408 too slow, 417 unknown Expect, 431 headers too large), by status code.',
    labelNames: ['status_code'],
  });

/** `tally_http_rate_limited_total{route}`: requests refused with 429 by a store's request rate limit (registerStoreRateLimit). */
export const createRateLimitedCounter = (registry: Registry) =>
  counter(registry, {
    name: 'tally_http_rate_limited_total',
    help: 'Requests refused with 429 because their store was over its request rate limit, by route template.',
    labelNames: ['route'],
  });

/**
 * `tally_key_lookups_throttled_total`: API keys answered 503 without a DynamoDB lookup (not cached as existing, and the
 * process's UNKNOWN_KEY_LOOKUPS_PER_SECOND spent), for the tenant directory's onUnknownKeyLookupRefused.
 */
export const createKeyLookupsThrottledCounter = (registry: Registry) =>
  counter(registry, {
    name: 'tally_key_lookups_throttled_total',
    help: 'API keys answered 503 without a DynamoDB lookup: not cached as existing, and UNKNOWN_KEY_LOOKUPS_PER_SECOND was spent.',
  });
