import rateLimit, { type FastifyRateLimitStore } from '@fastify/rate-limit';
import { redisKeys } from '@tally/key-layout';
import type { FastifyInstance } from 'fastify';
import type { Cluster, Redis } from 'ioredis';
import type { Registry } from 'prom-client';
import { z } from 'zod';
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
 * across the end of one window and the start of the next). Every request counts one, whatever it reads. Each replica
 * takes a store's requests from Redis in leases (LeasedCounts), so a busy store costs one Redis call per many requests,
 * not one per request. Over it the
 * request is 429 `TALLY_ERR_RATE_LIMITED` with Retry-After (the seconds left in the window), before its body is read,
 * and is counted in `tally_http_rate_limited_total{route}`. Every answer to a request it counted (the 429 too) tells
 * the limit in X-RateLimit-Limit (requests per window), X-RateLimit-Remaining (left in this window, over every replica)
 * and X-RateLimit-Reset (seconds to the window's end; a window's first answer: its length), so that a client can keep to
 * it before its first 429 (the dashboard does); the OpenAPI document names them on the 2xx and 429 of each route. While
 * Redis does not answer the count, requests pass: the limit protects the backends, and a request that needs Redis
 * answers its own 503.
 */
export async function registerStoreRateLimit(app: FastifyInstance<any, any, any, any, any>, opts: StoreRateLimitOptions): Promise<void> {
  if (opts.perSecond <= 0) return;
  const refused = createRateLimitedCounter(opts.registry);
  const max = Math.max(1, Math.round(opts.perSecond * opts.windowSeconds));
  const headers = rateLimitHeaders(opts.settingName);
  app.addHook('onRoute', (route) => {
    const response = route.schema?.response as Record<string, unknown> | undefined;
    if (!response) return;
    // A copy: a route's schema may be a module's constant, shared with apps that have no limit.
    const documented = Object.fromEntries(
      Object.entries(response).map(([status, schema]) => [
        status,
        (/^2/.test(status) || status === '429') && schema instanceof z.ZodType ? schema.meta({ headers }) : schema,
      ]),
    );
    route.schema = { ...route.schema, response: documented };
  });
  await app.register(rateLimit, {
    store: LeasedCounts.for(opts.redis, redisKeys(opts.keyPrefix).queryRatePrefix),
    keyGenerator: (req) => `{${principalOf(req).store}}`,
    max,
    timeWindow: opts.windowSeconds * 1_000,
    skipOnError: true,
    // X-RateLimit-* on every answer (three headers set: no measurable cost); the 429 carries its own Retry-After.
    addHeaders: { 'x-ratelimit-limit': true, 'x-ratelimit-remaining': true, 'x-ratelimit-reset': true, 'retry-after': false },
    addHeadersOnExceeding: { 'x-ratelimit-limit': true, 'x-ratelimit-remaining': true, 'x-ratelimit-reset': true },
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

/** The X-RateLimit-* headers as the OpenAPI document names them (a response's `headers`, which @fastify/swagger reads). */
function rateLimitHeaders(settingName: string) {
  const integer = (description: string) => ({ type: 'integer', minimum: 0, description });
  return {
    'x-ratelimit-limit': integer(
      `The requests the store may make in each window of its rate limit (${settingName} × the window's length), over all its keys and every replica`,
    ),
    'x-ratelimit-remaining': integer('The requests the store may still make in the current window (0 on a 429)'),
    'x-ratelimit-reset': integer(
      "The seconds until the current window ends and the count starts afresh, rounded up; on the first answer of a window, the window's length",
    ),
  };
}

/** A window's count as INCRBY left it, and the window's remaining ms (it starts at the window's first count). */
const LEASE_LUA = `local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if n == tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return {n, redis.call('PTTL', KEYS[1])}`;

/** Requests one replica may pass for a store in the current window: leased from the Redis count, `used` of them used. */
interface Lease {
  expiresAt: number;
  granted: number;
  used: number;
  /** The window's count in Redis after this replica's last lease. */
  total: number;
  /** No more to lease in this window: the count reached the limit. */
  spent: boolean;
  /** Requests of this replica waiting for a lease: the next lease covers them all, so a burst waits one call, not one each. */
  waiters: number;
  pending?: Promise<void> | undefined;
}

/** The largest share of a window's limit one lease takes: a replica leaves at most this much of it unused. */
const MAX_LEASE_SHARE = 1 / 64;

/**
 * @fastify/rate-limit's store for the per-store limit: the count of each store and window lives in Redis (one key, as
 * the library's own Redis store keeps it: INCRBY, PEXPIRE at the window's first count), and each replica leases
 * requests from it rather than counting each one: a lease is an eighth of what the replica last saw left in the
 * window, at most MAX_LEASE_SHARE of the limit and at least 1 (or the requests waiting for it, if more), so near the
 * limit (and for small limits) every request is counted in Redis as before, while a busy store far from it costs one
 * Redis call per many requests; a burst of one store's requests waits at most two calls. A lease is
 * never more than what is left, so no more than the limit pass; a store spread over R replicas can be refused up to
 * R leases early in a window (at most R × MAX_LEASE_SHARE of its limit).
 */
class LeasedCounts implements FastifyRateLimitStore {
  /** Each store's lease of the current window; expired ones are swept once the map has doubled since the last sweep. */
  private readonly leases = new Map<string, Lease>();
  private sweepAt = 10_000;

  private constructor(
    private readonly redis: Redis | Cluster,
    private readonly prefix: string,
  ) {
    // EVALSHA of the script, loaded once per connection (as ioredis does for a defined command).
    if (!('tallyRateLease' in redis)) redis.defineCommand('tallyRateLease', { numberOfKeys: 1, lua: LEASE_LUA });
  }

  /** The store class the plugin constructs (it passes only its options). */
  static for(redis: Redis | Cluster, prefix: string) {
    return class extends LeasedCounts {
      constructor() {
        super(redis, prefix);
      }
    };
  }

  incr(key: string, cb: (err: Error | null, res?: { current: number; ttl: number }) => void, timeWindow: number, max: number): void {
    this.take(key, timeWindow, max).then((res) => cb(null, res), cb);
  }

  child(): FastifyRateLimitStore {
    return this;
  }

  private async take(key: string, windowMs: number, max: number): Promise<{ current: number; ttl: number }> {
    for (;;) {
      // A monotonic clock: the window's end is Redis's PTTL from the lease's answer, never the wall clock's.
      const now = performance.now();
      let lease = this.leases.get(key);
      if (!lease || lease.expiresAt <= now) {
        if (this.leases.size >= this.sweepAt) this.sweep(now);
        lease = { expiresAt: now + windowMs, granted: 0, used: 0, total: 0, spent: false, waiters: 0 };
        this.leases.set(key, lease);
      }
      if (lease.used < lease.granted) {
        lease.used++;
        // The store's count (X-RateLimit-Remaining is the limit less it): the window's in Redis, less what this replica
        // leased and has not used yet (what other replicas leased counts as used).
        return { current: Math.min(lease.total, max) - (lease.granted - lease.used), ttl: lease.expiresAt - now };
      }
      if (lease.spent) return { current: max + 1, ttl: lease.expiresAt - now };
      lease.waiters++;
      try {
        lease.pending ??= this.lease(key, lease, windowMs, max).finally(() => (lease.pending = undefined));
        await lease.pending;
      } finally {
        lease.waiters--;
      }
    }
  }

  private sweep(now: number): void {
    for (const [k, l] of this.leases) if (l.expiresAt <= now && !l.pending) this.leases.delete(k);
    this.sweepAt = Math.max(10_000, 2 * this.leases.size);
  }

  private async lease(key: string, lease: Lease, windowMs: number, max: number): Promise<void> {
    const share = Math.min(Math.floor((max - lease.total) / 8), Math.floor(max * MAX_LEASE_SHARE));
    const size = Math.max(1, share, lease.waiters);
    const leaseCall = (this.redis as unknown as { tallyRateLease: (...args: Array<string | number>) => Promise<[number, number]> })
      .tallyRateLease;
    const [total, ttl] = await leaseCall.call(this.redis, this.prefix + key, size, windowMs);
    const granted = Math.max(0, Math.min(size, max - (total - size)));
    lease.granted += granted;
    lease.total = total;
    lease.spent = granted < size || total >= max;
    if (ttl > 0) lease.expiresAt = performance.now() + ttl;
  }
}
