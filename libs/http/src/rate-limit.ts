import rateLimit from '@fastify/rate-limit';
import type { FastifyInstance } from 'fastify';
import type { Cluster, Redis } from 'ioredis';
import type { Registry } from 'prom-client';
import { principalOf } from './auth';
import { createRateLimitedCounter } from './http-metrics';
import { HttpProblem } from './problem';

export interface StoreRateLimitOptions {
  /**
   * The Redis every replica of the app shares, a single Redis or a Cluster: each store's count is one key, so N
   * replicas share one budget rather than giving a store N of them.
   */
  redis: Redis | Cluster;
  /** KEY_PREFIX: the counts are `<prefix>:query-rate:{<store>}` keys. */
  keyPrefix: string;
  /** Requests per second one store may make, averaged over a window; 0 = no limit (nothing is registered). */
  perSecond: number;
  /** Length of a counting window in seconds: a store may make `perSecond × windowSeconds` requests in each. */
  windowSeconds: number;
  /** Counts the refused requests (`tally_http_rate_limited_total{route}`). */
  registry: Registry;
  /** The settings as the 429 names them, e.g. "QUERY_RATE_LIMIT_PER_SECOND". */
  settingName: string;
}

/**
 * A per-store request rate limit on every route registered after it in the scope it is registered in (register it
 * in the scope of the routes, after their auth hook: it counts by the store of the request's key, so a store cannot
 * multiply its budget by issuing keys, and a request without a valid key is refused before it counts). Built on
 * @fastify/rate-limit with its Redis store: fixed windows of `windowSeconds`, one Redis key per store and window (INCR
 * and PEXPIRE in one script), so a store makes at most `perSecond × windowSeconds` requests per window (twice that
 * across the end of one window and the start of the next). Every request counts one, whatever it reads. Over it the
 * request is 429 `TALLY_ERR_RATE_LIMITED` with Retry-After (the seconds left in the window), before its body is read,
 * and is counted in `tally_http_rate_limited_total{route}`. While Redis does not answer the count, requests pass: the
 * limit protects the backends, and a request that needs Redis answers its own 503.
 */
export async function registerStoreRateLimit(app: FastifyInstance<any, any, any, any, any>, opts: StoreRateLimitOptions): Promise<void> {
  if (opts.perSecond <= 0) return;
  const refused = createRateLimitedCounter(opts.registry);
  const max = Math.max(1, Math.round(opts.perSecond * opts.windowSeconds));
  await app.register(rateLimit, {
    redis: opts.redis,
    nameSpace: `${opts.keyPrefix}:query-rate:`,
    keyGenerator: (req) => `{${principalOf(req).store}}`,
    max,
    timeWindow: opts.windowSeconds * 1_000,
    skipOnError: true,
    // The 429 carries Retry-After itself; no X-RateLimit-* headers on other answers.
    addHeaders: { 'x-ratelimit-limit': false, 'x-ratelimit-remaining': false, 'x-ratelimit-reset': false, 'retry-after': false },
    addHeadersOnExceeding: { 'x-ratelimit-limit': false, 'x-ratelimit-remaining': false, 'x-ratelimit-reset': false },
    onExceeded: (req) => refused.inc({ route: req.routeOptions.url ?? 'unmatched' }),
    errorResponseBuilder: (req, ctx) => {
      const retryAfter = Math.max(1, Math.ceil(ctx.ttl / 1_000));
      const store = principalOf(req).store;
      return new HttpProblem(
        429,
        'TALLY_ERR_RATE_LIMITED',
        `store ${JSON.stringify(store)} is over its rate limit of ${opts.perSecond} requests per second (${max} per window of ${opts.windowSeconds} s, ${opts.settingName}), counted over every API key of the store; retry after ${retryAfter} s`,
        {
          extra: { requestsPerSecond: opts.perSecond, windowSeconds: opts.windowSeconds },
          headers: { 'retry-after': String(retryAfter) },
        },
      );
    },
  });
}
