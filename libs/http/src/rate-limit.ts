import { AsyncLocalStorage } from 'node:async_hooks';
import rateLimit, { type FastifyRateLimitStore } from '@fastify/rate-limit';
import { redisKeys } from '@tally/key-layout';
import type { FastifyInstance, FastifyRequest } from 'fastify';
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
  /** A monotonic clock in ms: when a lease's window ends and how old its count is. Default performance.now (tests inject one). */
  now?: (() => number) | undefined;
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
 * the limit in X-RateLimit-Limit (requests per window), X-RateLimit-Remaining (left in this window, over every replica,
 * as of the replica's last read of the count: see LeasedCounts) and X-RateLimit-Reset (seconds to the window's end; a
 * window's first answer: its length), so that a client can keep to it before its first 429 (the dashboard does); the
 * OpenAPI document names them on the 2xx and 429 of each route (and Retry-After on the 429). While Redis does not
 * answer the count, requests pass, and their answers carry no X-RateLimit-* (nothing was counted): the limit protects
 * the backends, and a request that needs Redis answers its own 503.
 */
export async function registerStoreRateLimit(app: FastifyInstance<any, any, any, any, any>, opts: StoreRateLimitOptions): Promise<void> {
  if (opts.perSecond <= 0) return;
  const refused = createRateLimitedCounter(opts.registry);
  const max = Math.max(1, Math.round(opts.perSecond * opts.windowSeconds));
  const headers = rateLimitHeaders(opts.settingName, opts.windowSeconds);
  // The store learns the request it counts from here (it is handed only the key): the limiter's hook runs within it.
  app.addHook('onRequest', (req, _reply, done) => {
    counting.run(req, done);
  });
  // A request the store could not count (Redis did not answer) passed uncounted: its answer tells no limit.
  app.addHook('onSend', (req, reply, payload, done) => {
    if (uncounted.has(req)) for (const name of Object.keys(headers)) reply.removeHeader(name);
    done(null, payload);
  });
  app.addHook('onRoute', (route) => {
    const response = route.schema?.response as Record<string, unknown> | undefined;
    if (!response) return;
    // A copy: a route's schema may be a module's constant, shared with apps that have no limit.
    const documented = Object.fromEntries(
      Object.entries(response).map(([status, schema]) => [
        status,
        (/^2/.test(status) || status === '429') && schema instanceof z.ZodType
          ? schema.meta({ headers: status === '429' ? { ...headers, ...retryAfterHeader } : headers })
          : schema,
      ]),
    );
    route.schema = { ...route.schema, response: documented };
  });
  await app.register(rateLimit, {
    store: LeasedCounts.for(opts.redis, redisKeys(opts.keyPrefix).queryRatePrefix, opts.now ?? (() => performance.now())),
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

/** The request the limiter's hook is counting, for the store (which is handed only the key). */
const counting = new AsyncLocalStorage<FastifyRequest>();
/** Requests the limit let through without counting them (the store's Redis did not answer): marked by the store. */
const uncounted = new WeakSet<FastifyRequest>();

const integerHeader = (description: string, minimum = 0) => ({ type: 'integer', minimum, description });

/** The 429's Retry-After as the OpenAPI document names it. */
const retryAfterHeader = {
  'retry-after': integerHeader('The seconds until the current window ends and the store may make requests again, rounded up', 1),
};

/** The X-RateLimit-* headers as the OpenAPI document names them (a response's `headers`, which @fastify/swagger reads). */
function rateLimitHeaders(settingName: string, windowSeconds: number) {
  const staleSeconds = windowSeconds * COUNT_REFRESH_SHARE;
  return {
    'x-ratelimit-limit': integerHeader(
      `The requests the store may make in each window of its rate limit (${settingName} × the window's length), over all its keys and every replica`,
    ),
    'x-ratelimit-remaining': integerHeader(
      `The requests the store may still make in the current window, over every replica (0 on a 429). The requests other replicas passed are counted as this replica last read the store's count, which it reads again (without delaying an answer) when an answer finds that read older than ${staleSeconds} s (an eighth of the window): on a replica answering the store steadily, they are at most that old, plus a Redis round trip; the first answer after a pause may count them as they were before it`,
    ),
    'x-ratelimit-reset': integerHeader(
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
  /** The window's count in Redis after this replica's last lease (the next lease is sized from it). */
  total: number;
  /** The window's count in Redis as this replica last read it (a lease or a refresh): X-RateLimit-Remaining's. */
  seen: number;
  /** When `seen` was read (the clock when its call was sent). */
  seenAt: number;
  /** A refresh of `seen` is on its way. */
  refreshing: boolean;
  /** No more to lease in this window: the count reached the limit. */
  spent: boolean;
  /** Requests of this replica waiting for a lease: the next lease covers them all, so a burst waits one call, not one each. */
  waiters: number;
  pending?: Promise<void> | undefined;
}

/** A lease of nothing yet, of a window taken to end `windowMs` from `now` until its first lease call answers. */
function newLease(now: number, windowMs: number): Lease {
  return {
    expiresAt: now + windowMs,
    granted: 0,
    used: 0,
    total: 0,
    seen: 0,
    seenAt: now,
    refreshing: false,
    spent: false,
    waiters: 0,
  };
}

/** The largest share of a window's limit one lease takes: a replica leaves at most this much of it unused. */
const MAX_LEASE_SHARE = 1 / 64;

/** An answer that finds its lease's count older than this share of the window has the count read again, for the next ones. */
const COUNT_REFRESH_SHARE = 1 / 8;

/**
 * @fastify/rate-limit's store for the per-store limit: the count of each store and window lives in Redis (one key, as
 * the library's own Redis store keeps it: INCRBY, PEXPIRE at the window's first count), and each replica leases
 * requests from it rather than counting each one: a lease is an eighth of what the replica last saw left in the
 * window, at most MAX_LEASE_SHARE of the limit and at least 1 (or the requests waiting for it, if more), so near the
 * limit (and for small limits) every request is counted in Redis as before, while a busy store far from it costs one
 * Redis call per many requests; a burst of one store's requests waits at most two calls. A lease is
 * never more than what is left, so no more than the limit pass; a store spread over R replicas can be refused up to
 * R leases early in a window (at most R × MAX_LEASE_SHARE of its limit). The count a replica answers with
 * (X-RateLimit-Remaining) is the window's as it last read it, less its own leased requests not used yet: an answer
 * that finds that read older than COUNT_REFRESH_SHARE of the window sends a GET of the count without waiting for it
 * (one at a time per store), so the answers after it count the other replicas' requests as of at most that long ago
 * (plus the GET's round trip) while the replica answers the store steadily; the GET changes no lease, so what passes
 * is the leases' alone. A lease's window ends at the lease call's sending plus the PTTL it answered, so no later than
 * in Redis; a lease call whose count shows the window it leased from gone in Redis (the count before it below what the
 * last one left: the key expired or was lost) starts the lease afresh, so the old window's count is not told for the
 * next one's. A request the store could not count (Redis did not answer) is marked `uncounted`.
 */
class LeasedCounts implements FastifyRateLimitStore {
  /** Each store's lease of the current window; expired ones are swept once the map has doubled since the last sweep. */
  private readonly leases = new Map<string, Lease>();
  private sweepAt = 10_000;

  private constructor(
    private readonly redis: Redis | Cluster,
    private readonly prefix: string,
    private readonly now: () => number,
  ) {
    // EVALSHA of the script, loaded once per connection (as ioredis does for a defined command).
    if (!('tallyRateLease' in redis)) redis.defineCommand('tallyRateLease', { numberOfKeys: 1, lua: LEASE_LUA });
  }

  /** The store class the plugin constructs (it passes only its options). */
  static for(redis: Redis | Cluster, prefix: string, now: () => number) {
    return class extends LeasedCounts {
      constructor() {
        super(redis, prefix, now);
      }
    };
  }

  incr(key: string, cb: (err: Error | null, res?: { current: number; ttl: number }) => void, timeWindow: number, max: number): void {
    const req = counting.getStore();
    this.take(key, timeWindow, max).then(
      (res) => cb(null, res),
      (err: Error) => {
        // The plugin lets the request pass (skipOnError) with made-up values: its answer must not tell them.
        if (req) uncounted.add(req);
        cb(err);
      },
    );
  }

  child(): FastifyRateLimitStore {
    return this;
  }

  private async take(key: string, windowMs: number, max: number): Promise<{ current: number; ttl: number }> {
    for (;;) {
      // A monotonic clock: the window's end is Redis's PTTL from the lease's answer, never the wall clock's.
      const now = this.now();
      let lease = this.leases.get(key);
      if (!lease || lease.expiresAt <= now) {
        if (this.leases.size >= this.sweepAt) this.sweep(now);
        lease = newLease(now, windowMs);
        this.leases.set(key, lease);
      }
      if (lease.used < lease.granted) {
        lease.used++;
        if (now - lease.seenAt >= windowMs * COUNT_REFRESH_SHARE) this.refresh(key, lease, now);
        // The store's count (X-RateLimit-Remaining is the limit less it): the window's in Redis as last read, less what
        // this replica leased and has not used yet (what other replicas leased counts as used).
        return { current: Math.min(lease.seen, max) - (lease.granted - lease.used), ttl: lease.expiresAt - now };
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
    const sentAt = this.now();
    const [total, ttl] = await leaseCall.call(this.redis, this.prefix + key, size, windowMs);
    if (total - size < lease.total) {
      // The count before this lease is below what the last one left: the window the lease counted in ended in Redis
      // (its key expired or was lost) and this call opened or joined the next one. Its lease starts afresh (its unused
      // requests were used up, or it would not have asked), so neither the old window's count nor a GET of it still
      // on its way (it answers to the old lease) is taken for the new window's.
      const fresh = newLease(sentAt, windowMs);
      if (this.leases.get(key) === lease) this.leases.set(key, fresh);
      lease = fresh;
    }
    const granted = Math.max(0, Math.min(size, max - (total - size)));
    lease.granted += granted;
    lease.total = total;
    lease.seen = Math.max(lease.seen, total);
    lease.seenAt = Math.max(lease.seenAt, sentAt);
    lease.spent = granted < size || total >= max;
    // From when the call was sent, not when its answer was read: Redis's PTTL was taken in between, so the lease ends no
    // later than the window does in Redis, and a request after that leases from the next window rather than passing
    // on this one's (uncounted there, and told this window's count).
    if (ttl > 0) lease.expiresAt = sentAt + ttl;
  }

  /**
   * Reads the window's count again for the lease's next answers, off the request path (not awaited; one at a time per
   * store). A count only grows within a window; one missing (the window just ended) or a failed read leaves the lease's.
   */
  private refresh(key: string, lease: Lease, now: number): void {
    if (lease.refreshing) return;
    lease.refreshing = true;
    this.redis
      .get(this.prefix + key)
      .then(
        (count) => {
          if (count !== null) lease.seen = Math.max(lease.seen, Number(count));
          lease.seenAt = Math.max(lease.seenAt, now);
        },
        () => {}, // Redis did not answer: the next answer tries again
      )
      .finally(() => (lease.refreshing = false));
  }
}
