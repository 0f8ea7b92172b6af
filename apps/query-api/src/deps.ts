import type { QueryDeps } from '@tally/query';
import type { RedisConnection } from '@tally/queues';
import type { TenantDirectory } from '@tally/tenants';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { AdminDeps } from './admin.route';
import type { QueryApiMetrics } from './metrics';

/** Everything buildApp needs; main.ts builds the real ones, tests their own. */
export interface QueryApiDeps {
  log: Logger;
  /** Prometheus registry of the app (the DynamoDB meter of `query.dynamo` should register here too). */
  registry: Registry;
  /** Bucket store, DynamoDB reader and rollup rules: what libs/query reads with. */
  query: QueryDeps;
  directory: TenantDirectory;
  limits: {
    /** Ids per totals request (MAX_ENTITIES_PER_REQUEST). */
    maxEntitiesPerRequest: number;
    /** TTL of a visitor's cached history (SESSION_IDLE_SECONDS). */
    sessionIdleSeconds: number;
  };
  /** The built dashboard (apps/dashboard/dist or DASHBOARD_DIR), served at `/` when it holds an index.html. */
  dashboardDir: string;
  /** METRICS_TOKEN: `/metrics` asks for it; unset = open. */
  metricsToken?: string | undefined;
  /** Whether the backing services answer (Redis, …), for /readyz. */
  ready: () => Promise<boolean>;
  /** Clock of the queries (named ranges end today in the store's time zone). Default Date.now. */
  now?: () => number;
  /** True once shutdown began: new requests get 503 and /readyz says not ready. */
  isClosing?: () => boolean;
  /** The admin API (/v1/admin, /v1/visitors, /v1/operator); absent = not served. */
  admin?: AdminDeps;
  /**
   * Each store's request rate limit on the /v1 read routes, counted in the Redis every replica shares
   * (QUERY_RATE_LIMIT_PER_SECOND per fixed window of QUERY_RATE_WINDOW_SECONDS); absent or 0 per second = none.
   */
  rateLimit?: {
    redis: RedisConnection;
    keyPrefix: string;
    perSecond: number;
    windowSeconds: number;
    /** The limit's monotonic clock (ms; default performance.now): tests inject one. */
    now?: () => number;
  };
}

/** What route handlers use. */
export interface RouteContext {
  query: QueryDeps;
  limits: QueryApiDeps['limits'];
  metrics: QueryApiMetrics;
  now: () => number;
}
