import { createKeyLookupsThrottledCounter } from '@tally/http';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BucketEraser, BucketStore, readTopHistory } from '@tally/buckets';
import { HistoryMemo } from '@tally/query';
import { loadConfigOrExit, queryApiEnv } from '@tally/config';
import { connectDynamo, createDynamoMeter } from '@tally/dynamo';
import { redisKeys } from '@tally/key-layout';
import { closeHttp, createLogger, createMetrics, installShutdown, logEmitterErrors, metricsOn } from '@tally/observability';
import { loadRulesOrExit } from '@tally/schema';
import {
  allQueues,
  closeConnection,
  closeQueues,
  createQueues,
  createRedisConnection,
  describeRedisTarget,
  storeWorkQueues,
} from '@tally/queues';
import { createTenantDirectory } from '@tally/tenants';
import { buildApp } from './app';
import { dashboardBuilt } from './dashboard';

// Composition root of the query API: series, totals, top lists and segments over DynamoDB plus Redis, the
// OpenAPI docs and the dashboard, on one port.
const config = loadConfigOrExit(queryApiEnv);
const log = createLogger({ name: 'query-api', level: config.LOG_LEVEL });
const rules = loadRulesOrExit(config.RULES_FILE, log);
const { registry } = createMetrics({ app: 'query-api' });
const meter = createDynamoMeter(registry);

// Queries fail fast while Redis is away (503 + Retry-After), rather than queueing behind a reconnect.
const redis = createRedisConnection(config, {
  enableOfflineQueue: false,
  maxRetriesPerRequest: 1,
  commandTimeout: config.QUERY_TIMEOUT_MS,
});
const redisErrors = logEmitterErrors(log, 'redis', [redis]);
const buckets = new BucketStore({ redis, rules, prefix: config.KEY_PREFIX });
// The seqs the sealers set, so that a query's snapshot after a seal names the new open bucket at once (a hint: while
// not subscribed, a snapshot retries once per seal). A connection of its own; ioredis subscribes again after a reconnect.
const epochRedis = createRedisConnection(config);
redisErrors.watch([epochRedis]);
buckets.followEpochs(epochRedis).catch((err: unknown) => log.warn({ err }, 'not following the sealers’ epochs'));
// The connection subscribes to the epoch channel only: every message is an announcement, counted after followEpochs'
// listener (registered first) has taken it in, so a test can wait for exactly that.
const epochAnnouncements = metricsOn(registry).counter(
  'tally_epoch_announcements_total',
  'Seal announcements received from the sealers (BucketStore.followEpochs), counted once taken in.',
);
epochRedis.on('message', () => epochAnnouncements.inc());
const dynamo = connectDynamo(config, { maxAttempts: 2, requestTimeoutMs: config.QUERY_TIMEOUT_MS });
const keysDynamo = connectDynamo(config, { maxAttempts: 1, requestTimeoutMs: config.KEY_LOOKUP_TIMEOUT_MS });
// Keys not cached as existing are looked up within a budget per process (UNKNOWN_KEY_LOOKUPS_PER_SECOND): made-up keys
// cannot drive one DynamoDB read each.
const keyLookupsThrottled = createKeyLookupsThrottledCounter(registry);
const directory = createTenantDirectory({
  dynamo: keysDynamo,
  table: config.DYNAMODB_TABLE,
  cacheTtlMs: config.KEY_CACHE_TTL_MS,
  log,
  unknownKeyLookupsPerSecond: config.UNKNOWN_KEY_LOOKUPS_PER_SECOND,
  onUnknownKeyLookupRefused: () => keyLookupsThrottled.inc(),
});
// The admin API: its own Redis connection (queue scans, key deletion, retention restamps scheduled on the maintenance
// queue) and DynamoDB client (Scans take longer than a query).
const adminRedis = createRedisConnection(config, { maxRetriesPerRequest: 1 });
const adminDynamo = connectDynamo(config);
const adminQueues = createQueues(adminRedis, { keyPrefix: config.KEY_PREFIX, shards: config.QUEUE_SHARDS });
redisErrors.watch([adminRedis, ...allQueues(adminQueues)]);
const admin = {
  db: { dynamo: adminDynamo, table: config.DYNAMODB_TABLE },
  erasure: {
    eraser: new BucketEraser({
      redis: adminRedis,
      buckets: new BucketStore({ redis: adminRedis, rules, prefix: config.KEY_PREFIX, shards: config.QUEUE_SHARDS }),
    }),
    ...storeWorkQueues(adminQueues),
    // At least the aggregators' window, which they publish: it is read at each deletion and erasure.
    tombstoneSeconds: config.DEDUPE_WINDOW_SECONDS,
    onWindowDiffers: (line: string) => log.warn(line),
    activeJobsTimeoutMs: config.ADMIN_JOBS_TIMEOUT_MS,
  },
  maintenance: adminQueues,
  operatorToken: config.ADMIN_OPERATOR_TOKEN,
};
// Unset: the repository's apps/dashboard/dist, from the sources (apps/query-api/src) or from the bundle (dist/query-api).
const dashboardDir =
  config.DASHBOARD_DIR ??
  [
    fileURLToPath(new URL('../../dashboard/dist', import.meta.url)),
    fileURLToPath(new URL('../../apps/dashboard/dist', import.meta.url)),
  ].find((dir) => existsSync(join(dir, 'index.html'))) ??
  fileURLToPath(new URL('../../dashboard/dist', import.meta.url));

let isShuttingDown = () => false;
const app = await buildApp({
  log,
  registry,
  // Stage "merge": every read route answers through @tally/query (engine.ts), which adds the counts still in Redis
  // to DynamoDB's items by their watermarks (libs/dynamo mergeItems).
  query: {
    buckets,
    dynamo: { client: dynamo, table: config.DYNAMODB_TABLE, meter },
    rules,
    historyMemo: new HistoryMemo(),
    maxItemsPerQuery: config.MAX_ITEMS_PER_QUERY,
    // Top lists reach back TOP_HISTORY_DAYS less 2 days, and no further than the aggregators' record of how long they
    // kept the rankings allows (a raised TOP_HISTORY_DAYS reaches further only as the longer-kept days accumulate).
    topReach: { days: config.TOP_HISTORY_DAYS, history: () => readTopHistory(redis, redisKeys(config.KEY_PREFIX).topHistory) },
    topMaxMembers: config.TOP_MAX_MEMBERS,
  },
  directory,
  limits: { maxEntitiesPerRequest: config.MAX_ENTITIES_PER_REQUEST, sessionIdleSeconds: config.SESSION_IDLE_SECONDS },
  dashboardDir,
  metricsToken: config.METRICS_TOKEN,
  ready: async () => redis.status === 'ready' && (await redis.ping()) === 'PONG',
  isClosing: () => isShuttingDown(),
  admin,
  // Each store's request rate on the /v1 read routes, counted in the query connection's Redis: shared by every replica.
  rateLimit: {
    redis,
    keyPrefix: config.KEY_PREFIX,
    perSecond: config.QUERY_RATE_LIMIT_PER_SECOND,
    windowSeconds: config.QUERY_RATE_WINDOW_SECONDS,
  },
});

// Commands are not queued while disconnected: give Redis a moment to connect before taking requests.
await new Promise<void>((resolve) => {
  if (redis.status === 'ready') return resolve();
  const timer = setTimeout(() => {
    log.warn({ redis: describeRedisTarget(config) }, 'Redis not reachable yet; answering 503 until it is');
    resolve();
  }, 5_000);
  redis.once('ready', () => {
    clearTimeout(timer);
    resolve();
  });
});

await app.listen({ host: config.HTTP_HOST, port: config.HTTP_PORT });
const address = app.server.address();
const port = typeof address === 'object' && address ? address.port : config.HTTP_PORT;
log.info(
  { port, table: config.DYNAMODB_TABLE, dashboard: dashboardBuilt(dashboardDir) ? dashboardDir : 'not built' },
  'query api listening',
);

isShuttingDown = installShutdown(log, [
  { name: 'http', run: () => closeHttp(app), timeoutMs: 10_000 },
  { name: 'redis', run: () => Promise.all([closeConnection(redis), closeConnection(epochRedis)]) },
  { name: 'admin', run: async () => (await closeQueues(adminQueues), await closeConnection(adminRedis)) },
  { name: 'dynamodb', run: async () => [dynamo, keysDynamo, adminDynamo].forEach((c) => c.destroy()) },
]);
